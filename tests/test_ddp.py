"""Data-parallel training under torchrun: two gloo processes on the CPU, launched once by the fixture
below, which runs this file as torchrun's script (``worker``); the tests read what the ranks wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lamsc.errors import UserError
from lamsc.semcom import distributed
from lamsc.semcom.distributed import Ranks, process_group, rank_device, rank_seed
from lamsc.semcom.loop import MAX_GRAD_NORM, TrainingRun

WORLD = 2
LR = 0.1
# the codec run: a checkpoint at the end of asi (2) and at codec step 5; the stopped run dies drawing the
# batch of codec step 6, so it resumes mid-stage, from codec step 5
STEPS = "asi=2,codec=6,asc=2"
STOP_AT_BATCH = 2 + 6


def _toy_data() -> tuple[torch.nn.ModuleDict, torch.Tensor]:
    """The toy model (head ``b`` trains on rank 1's batch only) and each rank's batch: (WORLD, 3, 5) float64."""
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"a": torch.nn.Linear(4, 1), "b": torch.nn.Linear(4, 1)}).double()
    batches = torch.randn(WORLD, 3, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 4
    return model, batches


def _toy_loss(model, rows: torch.Tensor, with_b: bool) -> torch.Tensor:
    loss = (model["a"](rows[:, :4])[:, 0] - rows[:, 4]).pow(2).mean()
    return loss + model["b"](rows[:, :4]).pow(2).mean() if with_b else loss


def worker(out: Path) -> None:
    """One torchrun process: a toy step, the codec trained straight and stopped then resumed through
    ``lamsc train``, and the budget fitted with a clock that runs 3x fast on rank 1."""
    import torch.distributed as dist

    from lamsc.cli import main
    from lamsc.semcom import training
    from lamsc.semcom.fallback import FallbackSegmenter
    from lamsc.semcom.config import ModelConfig
    from lamsc.semcom.model import LamscModel
    from lamsc.semcom.synthetic import make_shapes

    rank = int(os.environ["RANK"])
    with process_group("cpu") as (ranks, device):
        assert (ranks.rank, ranks.world, device.type) == (rank, WORLD, "cpu")
        model, batches = _toy_data()
        run = TrainingRun(out / "toy" / "state.pt", model, torch.Generator().manual_seed(rank), every=10)
        run.train(1, lambda: (_toy_loss(model, batches[rank], rank == 1), {"rank": float(rank)}),
                  torch.optim.SGD(model.parameters(), lr=LR), LR)
        torch.save({"model": model.state_dict(), "history": run.state["history"]}, out / f"toy_rank{rank}.pt")
    assert not dist.is_initialized()

    train = training.train

    def recording(model, *args, **kwargs):  # each rank's own weights after the run
        state = train(model, *args, **kwargs)
        torch.save(model.state_dict(), Path(args[2]) / f"weights_rank{rank}.pt")
        return state

    training.train = recording
    argv = ["train", "--synthetic", "6", "--preset", "tiny", "--steps", STEPS, "--width", "16", "--device", "cpu",
            "--precision", "fp32", "--json", "--out"]
    assert main(argv + [str(out / "straight")]) == 0
    assert not dist.is_initialized()  # the command's group ends with it

    drawn, next_batch = [0], training.Batches.next

    def stop(self, device):  # Ctrl-C reaches every process torchrun started
        drawn[0] += 1
        if drawn[0] == STOP_AT_BATCH:
            raise KeyboardInterrupt
        return next_batch(self, device)

    training.Batches.next = stop
    assert main(argv + [str(out / "resumed")]) == 130  # stopped, as Ctrl-C stops it
    training.Batches.next = next_batch
    assert not dist.is_initialized()
    assert main(argv + [str(out / "resumed")]) == 0

    with process_group("cpu"):
        if rank == 1:
            clock = training.time.perf_counter
            training.time.perf_counter = lambda: 3 * clock()
        training.PROBE_STEPS = 2
        images = training.prepare(make_shapes(2), FallbackSegmenter(), 8)
        cfg = training.TrainConfig(crop=32, batch=2, minutes=0.05)
        steps = training.fit_to_budget(LamscModel(ModelConfig(width=16)), training.Batches(images, 8, 32, 2, 0), cfg,
                                       torch.device("cpu"))
        (out / f"budget_rank{rank}.json").write_text(json.dumps(steps))


# the module's fixtures are built once, on one worker (pytest -n 2 --dist loadgroup)
pytestmark = pytest.mark.xdist_group("ddp")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                           str(WORLD), __file__, str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return out, done.stdout


def test_a_step_on_two_processes_is_one_step_on_both_batches(two_ranks):
    """Both ranks hold the weights one process gets from the mean loss over both batches (clipped, SGD),
    a head only rank 1's loss reaches included; the history's loss and logs are the ranks' means."""
    out, _ = two_ranks
    model, batches = _toy_data()
    loss = (_toy_loss(model, batches[0], False) + _toy_loss(model, batches[1], True)) / 2
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
    assert torch.cat([p.grad.flatten() for p in model.parameters()]).norm() == pytest.approx(MAX_GRAD_NORM)
    torch.optim.SGD(model.parameters(), lr=LR).step()
    ranks = [torch.load(out / f"toy_rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for name, reference in model.state_dict().items():
        assert torch.equal(ranks[0]["model"][name], ranks[1]["model"][name]), name
        torch.testing.assert_close(ranks[0]["model"][name], reference, rtol=1e-12, atol=1e-12)
    (row,) = ranks[0]["history"]
    assert row["loss"] == pytest.approx(float(loss.detach()), rel=1e-12) and row["rank"] == 0.5


def test_codec_on_two_processes_stopped_and_resumed_is_the_straight_run(two_ranks):
    out, _ = two_ranks
    straight, resumed = out / "straight", out / "resumed"
    weights = {(run, r): torch.load(run / f"weights_rank{r}.pt", weights_only=True)
               for run in (straight, resumed) for r in range(WORLD)}
    for name, value in weights[straight, 0].items():
        for key in weights:
            assert torch.equal(weights[key][name], value), (key, name)
    state = torch.load(resumed / "trainer_state.pt", weights_only=True)
    assert state["history"] == torch.load(straight / "trainer_state.pt", weights_only=True)["history"]
    assert [h["step"] for h in state["history"]] == [1, 2] + [1, 2, 3, 4, 5, 6] + [1, 2]
    # every rank's own random states, and they differ: each rank drew its own crops and noise
    assert state["world"] == WORLD and len(state["ranks"]) == WORLD
    assert not torch.equal(state["ranks"][0]["rng"], state["ranks"][1]["rng"])
    assert state["ranks"][0]["crops"] != state["ranks"][1]["crops"]
    assert torch.equal(state["rng"], state["ranks"][0]["rng"])


def test_rank_0_alone_prints_and_writes(two_ranks):
    out, stdout = two_ranks
    decoder = json.JSONDecoder()
    documents, rest = [], stdout.strip()
    while rest:
        doc, end = decoder.raw_decode(rest)
        documents.append(doc)
        rest = rest[end:].strip()
    assert [d["name"] for d in documents] == ["train", "train"]  # the straight and the resumed command
    assert sorted(p.name for p in (out / "straight").iterdir()) == sorted(
        ["curves.png", "history.json", "model.json", "model.safetensors", "recipe.json", "segments.npz",
         "trainer_state.pt", "weights_rank0.pt", "weights_rank1.pt"])


def test_the_budget_gives_every_rank_rank_0s_steps(two_ranks):
    out, _ = two_ranks
    steps = [json.loads((out / f"budget_rank{r}.json").read_text()) for r in range(WORLD)]
    assert steps[0] == steps[1] and steps[0]["codec"] > 1


def test_a_run_of_two_processes_resumes_on_two_only(two_ranks, tmp_path):
    out, _ = two_ranks
    (tmp_path / "state.pt").write_bytes((out / "toy" / "state.pt").read_bytes())
    model, _ = _toy_data()
    with pytest.raises(UserError, match=r"run of 2 process\(es\), not 1: resume it with torchrun --nproc_per_node 2"):
        TrainingRun(tmp_path / "state.pt", model, torch.Generator())


def test_torchrun_environment_errors_say_what_to_fix(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_USE_AGENT_STORE"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.launched() == Ranks() and distributed.current() == Ranks()
    with process_group("cpu") as (ranks, device):  # no torchrun: one process of one
        assert ranks == Ranks() and device == torch.device("cpu")
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(UserError, match="not process ranks: launch with torchrun"):
        distributed.launched()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(UserError, match="RANK=2 of WORLD_SIZE=2 is no process"):
        distributed.launched()
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(UserError, match="cannot start .*MASTER_ADDR.*launch with torchrun"):
        with process_group("cpu"):
            pass
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert rank_device("cuda", Ranks(0, 2, 0)) == torch.device("cuda", 0)
    with pytest.raises(UserError, match="LOCAL_RANK names .*cuda:0.*pass --device cuda"):
        rank_device("cuda:1", Ranks(0, 2, 0))
    with pytest.raises(UserError, match="which has 1 GPU.*--nproc_per_node 1"):
        rank_device("auto", Ranks(1, 2, 1))


def test_rank_seeds_keep_rank_0_and_part_the_others():
    assert rank_seed(7, 0) == 7
    seeds = {rank_seed(7, r) for r in range(1, 5)} | {rank_seed(8, 1)}
    assert len(seeds) == 5 and 7 not in seeds and all(0 <= s < 2 ** 63 for s in seeds)


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
