"""Training (three stages, resumable) and transmission through the command line, on tiny models."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from lamsc.cli import main
from lamsc.errors import UserError
from lamsc.semcom.channels import Channel
from lamsc.semcom.fallback import FallbackSegmenter
from lamsc.semcom.loop import MAX_GRAD_NORM, TrainingRun, autocast_bf16, learning_rate
from lamsc.semcom.config import ModelConfig, cbr
from lamsc.semcom.model import LamscModel
from lamsc.semcom.payload import unpack
from lamsc.semcom.synthetic import SHAPE_CLASSES, make_shapes
from lamsc.semcom.training import PRESETS, TrainConfig, prepare, train
from lamsc.semcom.transmission import Receiver, Transmitter, transmit


# the module's fixtures are built once, on one worker (pytest -n 2 --dist loadgroup)
pytestmark = pytest.mark.xdist_group("training")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    status = main(["train", "--preset", "tiny", "--synthetic", "12", "--width", "16", "--out", str(out)])
    assert status == 0
    return out


def test_training_writes_model_curves_and_a_finished_state(trained):
    assert (trained / "model.safetensors").is_file() and (trained / "curves.png").is_file()
    state = torch.load(trained / "trainer_state.pt", weights_only=True)
    assert state["stage"] == "done"
    steps = PRESETS["tiny"].steps
    assert [h["stage"] for h in state["history"]] == sum(([s] * n for s, n in steps.items()), [])
    config = json.loads((trained / "model.json").read_text())
    assert config["classes"] == list(SHAPE_CLASSES) and config["seg_classes"] == 4


def test_training_resumes_where_it_stopped(tmp_path):
    images = prepare(make_shapes(6), FallbackSegmenter(), 8)
    cfg = TrainConfig(steps={"asi": 2, "codec": 4, "asc": 2}, crop=32, batch=2, checkpoint_every=2)

    def stop_at_codec_3(stage, step, total, logs):
        if stage == "codec" and step == 3:
            raise KeyboardInterrupt

    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        train(LamscModel(ModelConfig(width=16)), images, cfg, tmp_path, stop_at_codec_3)
    saved = torch.load(tmp_path / "trainer_state.pt", weights_only=True)
    assert (saved["stage"], saved["step"]) == ("codec", 2)
    resumed = LamscModel(ModelConfig(width=16))
    state = train(resumed, images, cfg, tmp_path)
    assert state["stage"] == "done"
    assert [(h["stage"], h["step"]) for h in state["history"]] == \
        [("asi", 1), ("asi", 2), ("codec", 1), ("codec", 2), ("codec", 3), ("codec", 4), ("asc", 1), ("asc", 2)]
    # the same run uninterrupted: the same crops, noise and weights, bit for bit
    torch.manual_seed(0)
    whole = LamscModel(ModelConfig(width=16))
    uninterrupted = train(whole, images, cfg, tmp_path / "whole")
    assert [h["loss"] for h in uninterrupted["history"]] == [h["loss"] for h in state["history"]]
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.gpu
def test_training_runs_on_a_gpu(tmp_path):
    images = prepare(make_shapes(4), FallbackSegmenter(), 8)
    cfg = TrainConfig(steps={"asi": 2, "codec": 3, "asc": 2}, crop=32, batch=2, checkpoint_every=2)
    model = LamscModel(ModelConfig(width=16))
    state = train(model, images, cfg, tmp_path, device="cuda")
    assert state["stage"] == "done" and all(np.isfinite(h["loss"]) for h in state["history"])
    assert next(model.parameters()).device.type == "cpu"  # handed back where it was built


def test_transmit_reports_the_real_payload(trained):
    model = LamscModel.load(trained / "model")
    image = make_shapes(1, size=64, seed=9)[0].pixels
    tx, rx = Transmitter(model, FallbackSegmenter()), Receiver(model)
    sent = tx.send(image, snr_db=10.0)
    assert unpack(sent.payload).height == 64
    result = transmit(image, tx, rx, Channel("awgn", 10.0), seed=0)
    assert result.bits == 8 * len(sent.payload)
    assert result.cbr == pytest.approx(cbr(result.channel_uses, 64, 64))
    assert result.reconstruction.image.shape == image.shape
    assert result.reconstruction.class_probs.shape == (3,)
    assert result.reconstruction.seg_map.shape == (64, 64)
    assert np.isfinite(result.psnr)


def test_one_snr_per_link(trained, caplog):
    """The transmitter encodes for the channel's SNR; its own, where given and different, is a stated mismatch."""
    from lamsc.errors import UserError

    model = LamscModel.load(trained / "model")
    image = make_shapes(1, size=64, seed=9)[0].pixels
    with pytest.raises(UserError, match="no SNR to encode for"):
        Transmitter(model, FallbackSegmenter()).send(image)
    follows = transmit(image, Transmitter(model, FallbackSegmenter()), Receiver(model), Channel("digital-qpsk", 3.0))
    assert unpack(Transmitter(model, FallbackSegmenter(), snr_db=3.0).send(image).payload).snr_db == 3.0
    assert not caplog.records and follows.bits > 0
    transmit(image, Transmitter(model, FallbackSegmenter(), snr_db=20.0), Receiver(model), Channel("awgn", 0.0))
    assert "encodes for 20 dB over a 0 dB channel" in caplog.text


@pytest.mark.parametrize("channel", ["awgn", "rayleigh", "digital-qpsk"])
def test_transmit_command(trained, tmp_path, capsys, channel):
    from PIL import Image

    Image.fromarray(make_shapes(1, size=64, seed=3)[0].pixels).save(tmp_path / "s.png")
    status = main(["transmit", str(tmp_path / "s.png"), "--model", str(trained / "model"), "--channel", channel,
                   "--snr", "30", "--baseline", "webp", "--out", str(tmp_path / "o"), "--json"])
    assert status == 0
    doc = json.loads(capsys.readouterr().out)["results"]
    (row,) = doc["images"]
    assert row["lamsc"]["bits"] > 0 and not row["lamsc"]["lost"]  # 30 dB: even uncoded QPSK is clean
    assert row["class"] in SHAPE_CLASSES
    assert row["baselines"][0]["name"] == "webp+ldpc" and row["baselines"][0]["link"] == "digital"
    assert (tmp_path / "o" / "s_link.png").is_file()


def test_transmitter_payload_is_the_reference_payload(trained):
    from lamsc.semcom.config import pad_to_multiple
    from lamsc.semcom.payload import Features, pack
    from lamsc.semcom.transmission import image_input, segment_masks, transmit_power

    model = LamscModel.load(trained / "model")
    image = make_shapes(1, size=72, seed=5)[0].pixels
    masks = segment_masks(FallbackSegmenter().segment(image), model.config.segments)
    for asc in (True, False):
        tx = Transmitter(model, FallbackSegmenter(), asc=asc, snr_db=7.0)
        sent = tx.send(image)
        assert tx.pack_backend == "reference"  # no GPU here; on one, the CUDA kernel must give the same bytes
        # Encode again with the model itself and write the payload with the payload module's own packer; the
        # unit-power step is the radio's, on the host in float32 (transmit_power), as the transmitter sends it;
        # in the memory order the PyTorch backend runs (channels-last), which decides float rounding
        nhwc = model.to(memory_format=torch.channels_last)
        image_nhwc = pad_to_multiple(torch.from_numpy(image_input(image))).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            enc = nhwc.encode(image_nhwc, torch.from_numpy(masks)[None].contiguous(memory_format=torch.channels_last),
                              torch.tensor([7.0]), asc=asc)
        levels = enc["levels"].numpy()
        z = transmit_power(enc["features"].numpy(), levels, model.config.num_levels)[0]
        features = Features(z, levels[0], 8)
        assert pack(features, 72, 72, 8, asc=asc, snr_db=7.0) == sent.payload


def test_fine_tuning_starts_from_the_given_weights(trained, tmp_path):
    out = tmp_path / "ft"
    status = main(["train", "--synthetic", "12", "--preset", "tiny", "--steps", "asi=0,codec=1,asc=0",
                   "--init", str(trained / "model"), "--out", str(out)])
    assert status == 0
    start, tuned = LamscModel.load(trained / "model"), LamscModel.load(out / "model")
    assert tuned.config.trained["init"] == f"{trained.name}/model"  # no path of this machine
    assert torch.equal(start.asi.mlp[0].weight, tuned.asi.mlp[0].weight)  # ASI had no steps: untouched
    assert not torch.equal(start.decoder.out.weight, tuned.decoder.out.weight)  # one codec step moved it


def test_the_refine_preset_trains_encoder_and_decoder_of_the_given_model(trained, tmp_path, capsys):
    """The shipped default's last step as one command: from --init, only the encoder and decoder move."""
    out = tmp_path / "refine"
    status = main(["train", "--synthetic", "12", "--preset", "refine", "--steps", "asc=1", "--init",
                   str(trained / "model"), "--seed", "5", "--lr", "5e-5", "--out", str(out)])
    assert status == 0
    start, tuned = LamscModel.load(trained / "model"), LamscModel.load(out / "model")
    moved = {k.split(".")[0] for k, v in tuned.state_dict().items() if not torch.equal(v, start.state_dict()[k])}
    assert moved == {"encoder", "decoder"}
    recipe = tuned.config.trained["recipe"]
    assert tuned.config.trained["preset"] == "refine" and recipe["rates"] == [0.15, 1.0]
    assert (recipe["seed"], recipe["lr"]) == (5, 5e-5)  # the command line's, over the preset's 3 and 1e-4
    assert json.loads((out / "recipe.json").read_text())["lr"] == 5e-5  # what a resumed run continues with
    capsys.readouterr()
    # without a model to start from, the mask network and ASI would stay at their random start
    assert main(["train", "--synthetic", "4", "--preset", "refine", "--out", str(tmp_path / "new")]) == 2
    assert "give the model to fine-tune with --init" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()  # refused before anything was segmented or written


def test_gpu_train_sh_refines_a_given_model_with_the_gpu_refine_preset(tmp_path):
    """benchmarks/gpu_train.sh with INIT, on the CPU for one step: the gpu-refine preset from the given model,
    written in float16 as the shipped default is."""
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for k, item in enumerate(make_shapes(3)):
        Image.fromarray(item.pixels).save(photos / f"{k}.png")
    torch.manual_seed(0)
    LamscModel(ModelConfig(width=16)).save(tmp_path / "start model")  # photographs: a model without task heads
    env = {**os.environ, "INIT": str(tmp_path / "start model"), "STEPS": "asc=1", "DEVICE": "cpu",
           "PYTHON": sys.executable}
    script = Path(__file__).parents[1] / "benchmarks" / "gpu_train.sh"
    run = subprocess.run(["sh", str(script), str(photos), str(tmp_path / "out")], env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    refined = LamscModel.load(tmp_path / "out" / "lamsc-default")
    trained = refined.config.trained
    assert trained["preset"] == "gpu-refine" and trained["init"] == f"{tmp_path.name}/start model"
    start = LamscModel.load(tmp_path / "start model").mask_net.state_dict()  # the mask network stays fixed
    assert all(torch.equal(v.float(), start[k].half().float()) for k, v in refined.mask_net.state_dict().items())


def test_training_only_the_named_parts_leaves_the_rest_as_it_was(tmp_path):
    from lamsc.semcom.training import TrainJob

    torch.manual_seed(0)
    model = LamscModel(ModelConfig(width=16))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    images = prepare(make_shapes(4), FallbackSegmenter(), 8)
    cfg = TrainConfig(steps={"asi": 2, "codec": 2, "asc": 2}, crop=32, batch=2, checkpoint_every=2,
                      parts=("decoder",))
    state = train(model, images, cfg, tmp_path / "decoder")
    moved = {k.split(".")[0] for k, v in model.state_dict().items() if not torch.equal(v, start[k])}
    assert moved == {"decoder"} and state["steps"] == {"asi": 0, "codec": 2, "asc": 2}  # no ASI stage
    assert all(p.requires_grad for p in model.parameters())  # the model comes back trainable
    start = {k: v.clone() for k, v in model.state_dict().items()}
    state = train(model, images, replace(cfg, parts=("mask_net",)), tmp_path / "mask")
    moved = {k.split(".")[0] for k, v in model.state_dict().items() if not torch.equal(v, start[k])}
    assert moved == {"mask_net"} and state["steps"] == {"asi": 0, "codec": 0, "asc": 2}
    with pytest.raises(UserError, match="no stage with steps trains classifier"):
        train(model, images, replace(cfg, parts=("classifier",)), tmp_path / "none")  # a model without heads
    with pytest.raises(UserError, match="trains nothing"):
        TrainJob(recipe=replace(TrainConfig(), parts=()))
    with pytest.raises(UserError, match="no model part coder; the parts are asi, encoder"):
        TrainJob(recipe=replace(TrainConfig(), parts=("coder",)))
    with pytest.raises(UserError, match="no model part coder"):
        TrainJob(parts=("coder",))  # the job's override, as `lamsc train --train-part` passes it
    with pytest.raises(UserError, match="give the model to fine-tune with --init"):
        TrainJob(parts=("decoder",))  # a new model's encoder and ASC would stay random
    with pytest.raises(UserError, match="--reinit mask_net starts it afresh but only decoder train"):
        TrainJob(init="m", reinit=("mask_net",), parts=("decoder",))
    with pytest.raises(UserError, match="learning rate 3.0: give one between 0 and 1"):
        TrainJob(lr=3.0)
    with pytest.raises(UserError, match="seed -1: give a seed of 0 or more"):
        TrainJob(seed=-1)


def test_curves_plot_long_histories(tmp_path):
    from lamsc.semcom.training import plot_curves

    history = [{"stage": "asi", "step": i, "loss": 1.0 / i} for i in range(1, 40)]
    history += [{"stage": s, "step": i, "loss": 1.0 / i, "psnr": 10 + i / 10, "kept": 0.5}
                for s in ("codec", "asc") for i in range(1, 80)]
    plot_curves(history, tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 10_000



# -- the one resumable training loop (semcom.loop), as the codec and the distillations use it ------------

def _params_equal(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def _stop_after(*where):
    """A progress callback that stops the run, as Ctrl-C does, once it reports ``where``: (step,) from the
    loop and the distillations, (stage, step) from ``train``."""
    def progress(*args):
        if args[:len(where)] == where:
            raise KeyboardInterrupt
    return progress


CLIP = 0.05  # below most gradient norms of the tiny codec run: clipping acts on most steps, not all


def _tiny_codec_run(out, progress=None):
    torch.manual_seed(0)
    model = LamscModel(ModelConfig(width=16))
    cfg = TrainConfig(steps={"asi": 2, "codec": 4, "asc": 4}, crop=32, batch=2, checkpoint_every=2)
    return model, train(model, prepare(make_shapes(4), FallbackSegmenter(), 8), cfg, out, progress)


@pytest.fixture(scope="module")
def straight_codec_run(tmp_path_factory):
    from lamsc.semcom import loop

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "MAX_GRAD_NORM", CLIP)
        return _tiny_codec_run(tmp_path_factory.mktemp("straight"))


@pytest.mark.parametrize("stop", [("codec", 2), ("codec", 4), ("asc", 2)])
def test_codec_training_stopped_and_resumed_is_the_straight_run(straight_codec_run, tmp_path, monkeypatch, stop):
    """Stopped after a checkpoint (mid-stage or at a stage's end) and resumed: the same weights, bit for bit,
    with gradients clipped (by the norm of the parameters the stage trains: gradients left on the others
    are not in the checkpoint)."""
    from lamsc.semcom import loop

    monkeypatch.setattr(loop, "MAX_GRAD_NORM", CLIP)
    straight, whole = straight_codec_run
    with pytest.raises(KeyboardInterrupt):
        _tiny_codec_run(tmp_path, _stop_after(*stop))
    saved = torch.load(tmp_path / "trainer_state.pt", weights_only=True)
    assert (saved["stage"], saved["step"]) == stop  # progress hears of a step after its checkpoint
    resumed, state = _tiny_codec_run(tmp_path)
    assert state["history"] == whole["history"]
    _params_equal(straight, resumed)
    _params_equal(straight, LamscModel.load(tmp_path / "model"))  # the exported model is the trained one


def test_codec_distillation_in_two_halves_is_the_straight_run(tmp_path):
    from lamsc.compress.distill import DistillConfig, distil_codec
    from lamsc.compress.prune import prune_codec
    from lamsc.semcom.training import TrainingImage

    rng = np.random.default_rng(0)
    images = [TrainingImage((rng.random((48, 48, 3)) * 255).astype(np.uint8),
                            np.tile(np.uint8([1, 2]), (48, 24))) for _ in range(3)]
    torch.manual_seed(0)
    teacher = LamscModel(ModelConfig(channels=8, width=16, num_levels=4, segments=2))
    cfg = DistillConfig(steps=6, crop=32, batch=2, checkpoint_every=3)
    straight = distil_codec(teacher, prune_codec(teacher, 0.5), images, cfg, tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        distil_codec(teacher, prune_codec(teacher, 0.5), images, cfg, tmp_path / "b", _stop_after(3))
    resumed = distil_codec(teacher, prune_codec(teacher, 0.5), images, cfg, tmp_path / "b")
    _params_equal(straight, resumed)
    history = [torch.load(tmp_path / d / "distill_state.pt", weights_only=True)["history"] for d in "ab"]
    assert history[0] == history[1] and [h["step"] for h in history[0]] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("from_teacher", [False, True])  # True: learning-rate warm-up, batch norm kept
def test_encoder_distillation_in_two_halves_is_the_straight_run(tmp_path, from_teacher):
    from lamsc.compress.distill import DistillConfig, distil_encoder

    g = torch.Generator().manual_seed(0)
    inputs = [torch.randn(1, 3, 8, 8, generator=g) for _ in range(4)]
    targets = [torch.randn(1, 4, 8, 8, generator=g) for _ in range(4)]
    cfg = DistillConfig(steps=40, batch=2, lr=0.01, checkpoint_every=20)

    def run(folder, progress=None):
        torch.manual_seed(1)
        student = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4))
        return distil_encoder(student, inputs, targets, cfg, tmp_path / folder, progress, from_teacher,
                              validation=(inputs[:2], targets[:2]))

    straight = run("a")
    with pytest.raises(KeyboardInterrupt):
        run("b", _stop_after(20))
    _params_equal(straight, run("b"))
    a, b = (torch.load(tmp_path / d / "distill_state.pt", weights_only=True) for d in "ab")
    assert a["history"] == b["history"] and a["validation"] == b["validation"] and a["best"] == b["best"]


class _Toy:
    """A TrainingRun of a linear model: noise from the run's generator, batches from its numpy sampler, and a
    loss whose gradients are always clipped."""

    def __init__(self, folder, total=6, **run):
        torch.manual_seed(0)
        self.model, self.total, self.autocast = torch.nn.Linear(4, 1), total, []
        data = torch.randn(16, 5, generator=torch.Generator().manual_seed(1))
        gen, sampler = torch.Generator().manual_seed(2), np.random.default_rng(3)
        self.run = TrainingRun(folder / "state.pt", self.model, gen, sampler, **{"every": 2, **run})

        def step():
            self.autocast.append(torch.is_autocast_enabled("cpu"))
            rows = data[sampler.integers(16, size=4)]
            noisy = rows[:, :4] + 0.1 * torch.randn(4, 4, generator=gen)
            return 100 * (self.model(noisy)[:, 0].float() - rows[:, 4]).pow(2).mean(), {}

        self.step = step

    def train(self, progress=None, warmup=0):
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=0.1)
        self.run.train(self.total, self.step, self.optimizer, 0.1, warmup, progress)
        return self


def test_an_interrupted_checkpoint_leaves_the_last_one_to_resume_from(tmp_path, monkeypatch):
    straight = _Toy(tmp_path / "a").train()
    save = torch.save

    def torn(obj, f):  # half the bytes written, then the power fails
        save(obj, f)
        f.truncate(f.tell() // 2)
        raise KeyboardInterrupt

    def fail_from_step_3(step, total, logs):
        if step == 3:
            monkeypatch.setattr(torch, "save", torn)

    with pytest.raises(KeyboardInterrupt):
        _Toy(tmp_path / "b").train(fail_from_step_3)  # step 4's checkpoint is torn
    monkeypatch.setattr(torch, "save", save)
    assert (tmp_path / "b" / "state.pt.tmp").is_file()
    assert torch.load(tmp_path / "b" / "state.pt", weights_only=True)["step"] == 2
    resumed = _Toy(tmp_path / "b")
    assert resumed.run.state["step"] == 2 and resumed.train().run.state["step"] == 6
    _params_equal(straight.model, resumed.model)
    assert resumed.run.state["history"] == straight.run.state["history"]


def test_the_loop_clips_gradients_and_schedules_the_learning_rate(tmp_path, monkeypatch):
    norms, rates = [], []
    clip = torch.nn.utils.clip_grad_norm_

    def spy(parameters, max_norm):  # (norm before, norm after) of each step's clipping
        parameters = list(parameters)
        before = clip(parameters, max_norm)
        norms.append((float(before), float(torch.cat([p.grad.flatten() for p in parameters]).norm())))
        return before

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    toy = _Toy(tmp_path)
    toy.train(lambda *_: rates.append(toy.optimizer.param_groups[0]["lr"]), warmup=2)
    assert len(norms) == 6 and all(b > MAX_GRAD_NORM and a == pytest.approx(MAX_GRAD_NORM) for b, a in norms)
    assert rates == [learning_rate(0.1, s, 6, warmup=2) for s in range(6)]
    assert rates[:3] == [0.05, pytest.approx(0.05 * (1 + np.cos(np.pi / 6))), pytest.approx(0.075)]
    assert learning_rate(0.1, 0, 6) == 0.1 and learning_rate(0.1, 6, 6) == 0.0


def test_a_run_resumes_on_its_own_device_type_only(tmp_path):
    _Toy(tmp_path, total=2).train()
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    torch.save({**state, "device": "cuda"}, tmp_path / "state.pt")
    with pytest.raises(UserError, match="begun on cuda.*--device cuda"):
        _Toy(tmp_path)


def test_a_run_of_another_model_is_refused_in_one_line(tmp_path):
    _Toy(tmp_path, total=2).train()
    with pytest.raises(UserError, match="run of another model.*new --out") as e:
        TrainingRun(tmp_path / "state.pt", torch.nn.Linear(6, 1), torch.Generator())
    assert "\n" not in str(e.value)


def test_a_checkpoint_without_weights_resumes_from_the_exported_model(tmp_path):
    from safetensors.torch import save_file

    straight = _Toy(tmp_path / "a").train()
    with pytest.raises(KeyboardInterrupt):
        _Toy(tmp_path / "b").train(_stop_after(2))
    state = torch.load(tmp_path / "b" / "state.pt", weights_only=True)
    save_file(state.pop("model"), str(tmp_path / "b" / "w.safetensors"))
    torch.save(state, tmp_path / "b" / "state.pt")
    _params_equal(straight.model, _Toy(tmp_path / "b", weights=tmp_path / "b" / "w.safetensors").train().model)


@pytest.mark.parametrize("precision,device,bf16", [("bf16", "cpu", True), ("fp32", "cpu", False),
                                                   ("auto", "cuda", False), ("bf16", "cuda", True)])
def test_precision_picks_the_autocast(precision, device, bf16):
    assert autocast_bf16(precision, torch.device(device)) == bf16


def test_auto_precision_is_bf16_on_cpus_that_compute_in_it_and_others_are_refused(tmp_path, monkeypatch):
    from lamsc.semcom import loop

    for native in (True, False):
        monkeypatch.setattr(loop, "cpu_has_bf16", lambda: native)
        assert _Toy(tmp_path / str(native), total=2, precision="auto").train().autocast == [native, native]
    with pytest.raises(UserError, match="unknown training precision 'fp16'"):
        _Toy(tmp_path, precision="fp16")


def test_distillation_channel_adds_each_images_noise_at_its_own_snr():
    from lamsc.compress.distill import _through_channel

    z, mask, snr = torch.zeros(3, 8, 32, 32), torch.ones(3, 8, 32, 32), torch.tensor([0.0, 10.0, 20.0])
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    rx = _through_channel(z, mask, snr, gen, state)
    assert torch.equal(rx, _through_channel(z, mask, snr, gen, state))  # teacher and student: one draw
    power = rx.pow(2).flatten(1).mean(1)  # per real value: the symbol's noise variance 10^(-SNR/10)
    torch.testing.assert_close(power, 10 ** (-snr / 10), rtol=0.05, atol=0)
    assert torch.equal(_through_channel(z, torch.zeros_like(mask), snr, gen, state), z)


def test_psnr_distortion_is_the_mean_psnr_gradient_at_mse_scale():
    from lamsc.semcom.training import ROUNDING_MSE, reconstruction_loss

    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 16, 16, generator=g)
    noise = torch.randn(4, 3, 16, 16, generator=g) * torch.tensor([0.02, 0.05, 0.1, 0.2]).view(4, 1, 1, 1)
    integrated = torch.rand(4, 1, 16, 16, generator=g)
    batch = {"x": x, "category": torch.full((4,), -1), "label": torch.full((4, 16, 16), 255)}
    y = (x + noise).requires_grad_()
    mse, _ = reconstruction_loss({"image": y}, batch, integrated, 1.0, "mse")
    value, _ = reconstruction_loss({"image": y}, batch, integrated, 1.0, "psnr")
    (grad,) = torch.autograd.grad(value, y)

    # float64 reference: each crop's weighted squared error, and the mean of their PSNRs
    y64, w = y.detach().double().requires_grad_(), 1.0 + integrated.double()
    per = ((y64 - x.double()) ** 2 * w).flatten(1).mean(1) / w.flatten(1).mean(1)
    (-10 * torch.log10(per + ROUNDING_MSE)).mean().backward()
    scale = per.mean().detach() * np.log(10) / 10  # d mean(log e) = d(-mean PSNR) x ln(10) / 10
    torch.testing.assert_close(grad.double(), -y64.grad * scale, rtol=1e-4, atol=1e-12)
    torch.testing.assert_close(value.double(), per.mean().detach(), rtol=1e-5, atol=0)
    assert not torch.isclose(value, mse)  # per-crop weights, not the batch's: a different number
    y0 = x.clone().requires_grad_()
    reconstruction_loss({"image": y0}, batch, integrated, 1.0, "psnr")[0].backward()
    assert torch.isfinite(y0.grad).all()  # a crop that comes back exact (a flat one) has a finite gradient
    with pytest.raises(ValueError, match="unknown distortion 'l1'; known: mse, psnr"):
        reconstruction_loss({"image": y}, batch, integrated, 1.0, "l1")
    with pytest.raises(UserError, match="unknown distortion 'l1'"):
        from lamsc.semcom.training import TrainJob
        TrainJob(recipe=replace(TrainConfig(), distortion="l1"))
    with pytest.raises(UserError, match="unknown distortion 'l1'"):
        TrainJob(distortion="l1")  # the job's override, as `lamsc train --distortion` passes it
