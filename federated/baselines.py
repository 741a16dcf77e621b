"""Baselines on the same clients, data and budget as a federated split run (lamsc.federated.server.SplitPlan):

- ``none``: the base model, not fine-tuned;
- ``local``: each client fine-tunes the same parts (encoder adapters, decoder, heads) on its own images only;
- ``centralised``: those parts fine-tuned on every client's images in one place (the upper bound), each
  step on as many crops as all clients together take in a federated step;
- ``fedavg``: full-model FedAvg (McMahan et al. 2017): each device trains the whole model for a round's steps,
  the models are averaged after each round; its device compute per round is measured as it trains, on the
  cores a federated run gives each device (lamsc.federated.simulation.DEVICE_CPUS).

Every method takes the plan's rounds x local steps, in the one training loop (lamsc.semcom.loop.TrainingRun)
with the centralised recipe's loss (lamsc.semcom.training.link_loss, ASC on), and is scored on each client's
held-out images through the whole link at the plan's SNR with the same noise as the federated run.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from lamsc.federated.adapters import add_adapters, merge_adapters
from lamsc.federated.aggregation import fedavg
from lamsc.federated.device import eval_inputs, load_client_images, score
from lamsc.federated.partition import held_out
from lamsc.federated.server import SplitPlan
from lamsc.federated.simulation import DEVICE_CPUS
from lamsc.federated.split import EVAL_RATE, device_forward, eval_generator, server_forward, split_point
from lamsc.semcom.distributed import intra_op_threads
from lamsc.semcom.loop import TrainingRun
from lamsc.semcom.model import LamscModel
from lamsc.semcom.skb import build_segmenter
from lamsc.semcom.training import Batches, TrainConfig, TrainingImage, link_loss, prepare

METHODS = ("none", "local", "centralised", "fedavg")


def client_sets(folders: list[Path], plan: SplitPlan, k: int) -> list[tuple[list[TrainingImage], list[TrainingImage]]]:
    """Each client's (training, held-out) images, segmented, as a device holds them."""
    segmenter = build_segmenter(plan.sam_checkpoint)
    out = []
    for f in folders:
        train, test = held_out(load_client_images(Path(f), plan.classes))
        out.append((prepare(train, segmenter, k), prepare(test, segmenter, k)))
    return out


def held_out_scores(model: LamscModel, tests: list[list[TrainingImage]], plan: SplitPlan) -> dict[str, dict]:
    """Per client, the held-out metrics of ``model`` through the whole link (as SplitServer.evaluate scores)."""
    model.eval()
    out = {}
    with torch.no_grad():
        for c, images in enumerate(tests):
            outputs, kept = {}, []
            for n, item in enumerate(images):
                x, masks = eval_inputs(item, model.config.segments)
                snr = torch.tensor([plan.eval_snr])
                smashed, _ = device_forward(model, x, masks, snr, rate=EVAL_RATE)
                kept.append(float(smashed["mask"].mean()))
                result = server_forward(model, smashed, snr, plan.channel, eval_generator(plan.seed, c, n))
                outputs.update({f"{n}.{key}": v for key, v in result.items()})
            out[str(c)] = score(images, outputs, kept, model.config)
    return out


def fine_tune(model: LamscModel, images: list[TrainingImage], plan: SplitPlan, steps: int, batch: int, out: Path,
              parameters, seed: int, timer: list | None = None, start: int = 0) -> None:
    """``steps`` steps of the centralised recipe's loss on ``images`` over ``parameters``, in the one loop,
    from step ``start`` of the plan's learning-rate schedule (the device part's parameters at its peak rate,
    SplitPlan.front_lr); ``timer`` collects each step's compute seconds (checkpoint writes excluded)."""
    # ASC at its own rate with no rate term: what a device's split step computes (lamsc.federated.split)
    cfg = replace(TrainConfig(), crop=plan.crop, batch=batch, lr=plan.lr, importance_weight=plan.importance_weight,
                  rates=None, rate_weight=0.0,
                  channel=plan.channel, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    batches = Batches(images, model.config.segments, plan.crop, batch, seed)
    run = TrainingRun(out / "trainer_state.pt", model, gen, batches.rng, every=steps, precision="fp32")
    front = {id(p) for m in split_point(plan.split).device_modules for p in getattr(model, m).parameters()}
    groups = [{"params": [p for p in parameters if (id(p) in front) == on_device], "peak_lr": lr}
              for on_device, lr in ((True, plan.front_lr), (False, plan.lr))]
    run.state["step"] = max(run.state["step"], start)
    started = {}

    def step():
        started.setdefault("t", time.perf_counter())
        return link_loss(model, batches.next(), "asc", cfg, gen)

    def done():
        if timer is not None:
            timer.append(time.perf_counter() - started.pop("t"))
        started.pop("t", None)

    model.train()
    optimizer = torch.optim.Adam([g for g in groups if g["params"]], lr=plan.lr)
    run.train(plan.rounds * plan.local_steps, step, optimizer, plan.lr, until=start + steps, after_step=done)


def adapted_parts(model: LamscModel, rank: int) -> list:
    """Adapters on ``model``'s encoder (added in place) and its decoder and heads: what split fine-tuning trains."""
    add_adapters(model.encoder, rank)
    return [p for n, p in model.named_parameters()
            if ".adapter_" in n or not n.startswith(("asi", "encoder", "mask_net"))]


def run_baselines(base: LamscModel, folders: list[Path], plan: SplitPlan, out: Path,
                  methods: tuple[str, ...] = METHODS) -> dict:
    """Train and score each of ``methods`` on ``folders`` under ``plan``; write ``baselines.json`` in ``out``.
    Returns {method: {"clients": held-out metrics per client, ...}}; fedavg also reports its device seconds
    and parameter bytes per round and client."""
    out = Path(out)
    sets = client_sets(folders, plan, base.config.segments)
    tests = [t for _, t in sets]
    steps = plan.rounds * plan.local_steps
    results = {}
    if "none" in methods:
        results["none"] = {"clients": held_out_scores(copy.deepcopy(base), tests, plan)}
    if "local" in methods:
        scores = {}
        for c, (train, _) in enumerate(sets):
            torch.manual_seed(plan.seed)
            model = copy.deepcopy(base)
            fine_tune(model, train, plan, steps, plan.batch, out / "local" / f"client-{c}",
                      adapted_parts(model, plan.rank), plan.seed + c)
            merge_adapters(model.encoder)
            scores[str(c)] = held_out_scores(model, tests, plan)[str(c)]
        results["local"] = {"clients": scores}
    if "centralised" in methods:
        torch.manual_seed(plan.seed)
        model = copy.deepcopy(base)
        pooled = [i for train, _ in sets for i in train]
        fine_tune(model, pooled, plan, steps, plan.batch * len(sets), out / "centralised",
                  adapted_parts(model, plan.rank), plan.seed)
        merge_adapters(model.encoder)
        results["centralised"] = {"clients": held_out_scores(model, tests, plan)}
    if "fedavg" in methods:
        results["fedavg"] = full_model_fedavg(base, sets, plan, out / "fedavg")
    out.mkdir(parents=True, exist_ok=True)
    (out / "baselines.json").write_text(json.dumps(results, indent=2))
    return results


def full_model_fedavg(base: LamscModel, sets: list, plan: SplitPlan, out: Path) -> dict:
    """Each device trains the whole model for a round's steps; the models are averaged (by examples) after
    each round. Returns the held-out scores, and per client the device seconds and parameter bytes per round."""
    global_state = {k: v.clone() for k, v in base.state_dict().items()}
    seconds = {str(c): [] for c in range(len(sets))}
    models = [copy.deepcopy(base) for _ in sets]
    for r in range(plan.rounds):
        states = []
        for c, (train, _) in enumerate(sets):
            model = models[c]
            model.load_state_dict(global_state)
            timer: list[float] = []
            with intra_op_threads(DEVICE_CPUS):  # a device's cores, as the federated run's devices have them
                fine_tune(model, train, plan, plan.local_steps, plan.batch, out / f"client-{c}" / f"round-{r}",
                          list(model.parameters()), plan.seed + c + 1000 * r, timer, start=r * plan.local_steps)
            seconds[str(c)].append(sum(timer))
            states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        global_state = fedavg(states, [len(train) for train, _ in sets])
    final = copy.deepcopy(base)
    final.load_state_dict(global_state)
    param_bytes = sum(v.numel() * 4 for v in base.state_dict().values() if v.is_floating_point())
    return {"clients": held_out_scores(final, [t for _, t in sets], plan), "device_seconds_per_round": seconds,
            "parameter_bytes_per_round": {"up": param_bytes, "down": param_bytes}}
