"""The server's side of federated split fine-tuning: the back of the model, the rounds, FedAvg, the ledger.

Per step, every device sends its smashed activations (``train.forward``); the server puts them through the
channel, the decoder and the heads as one batch, sends each device its outputs (``train.loss``), takes their
gradients, back-propagates and steps its back once on all devices' activations (one server model, the
synchronous form of SplitFed's server side, Thapa et al. 2022), and sends each device the gradients of its
activations (``train.backward``). After the last step of a round the devices' adapters are averaged (FedAvg,
weighted by examples) and every device scores its held-out images through the whole link at a fixed SNR.

The server steps in the one resumable training loop (lamsc.semcom.loop.TrainingRun); its checkpoint at each
round's end holds its back, the averaged adapters and the report so far, and the model a run writes is an
ordinary lamsc model with the adapters merged into the encoder.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from lamsc.federated.adapters import adapter_state, add_adapters, merge_adapters
from lamsc.federated.aggregation import fedavg
from lamsc.federated.device import front_modules
from lamsc.federated.messages import (ARRAY_KINDS, EVAL_FORWARD, EVAL_SCORE, TRAIN_BACKWARD, TRAIN_FORWARD,
                                      TRAIN_LOSS, array_bytes, described)
from lamsc.federated.split import (DIFFERENTIABLE, FINE_TUNE_LR, draw_snr, eval_generator, server_forward, split_point,
                                   surrogate)
from lamsc.semcom.loop import TrainingRun
from lamsc.semcom.model import LamscModel

# exchange(action, {client: content}) -> {client: reply content}: one Flower send_and_receive
Exchange = Callable[[str, dict[int, dict]], dict[int, dict]]


@dataclass
class SplitPlan:
    """What every device is told before round 1 and the server trains by; round-trips through JSON."""

    model: str                   # the base model's config JSON (lamsc.semcom.model.ModelConfig)
    split: str = "transmitter"
    rank: int = 4                # adapter rank on the encoder's convolutions
    rounds: int = 20             # x 10 steps: +1 dB on two thermal cameras (benchmarks/results/federated_split.md)
    local_steps: int = 10        # steps per round; every device takes each one
    batch: int = 4               # crops per device per step
    crop: int = 96
    lr: float = FINE_TUNE_LR
    device_lr: float | None = None  # the device's adapters' peak learning rate (None: ``lr``)
    importance_weight: float = 1.0
    channel: str = "awgn"
    eval_snr: float = 10.0       # dB, the fixed SNR of the held-out metrics
    seed: int = 0
    classes: list[str] = field(default_factory=list)
    sam_checkpoint: str | None = None

    @property
    def steps(self) -> int:
        return self.rounds * self.local_steps

    @property
    def front_lr(self) -> float:
        """The device part's peak learning rate: a new head trained from scratch on the server wants a larger
        one than the adapters of a converged encoder, whose drift between averagings it sets."""
        return self.lr if self.device_lr is None else self.device_lr

    def device_plan(self) -> dict:
        """The plan as a device reads it: the fields, with the total steps and the device part's rate derived."""
        return {**asdict(self), "steps": self.steps, "front_lr": self.front_lr}


class SplitServer:
    """The server of a run in ``out`` from the base model ``base`` (resumed if ``out`` holds one)."""

    def __init__(self, base: LamscModel, plan: SplitPlan, out: Path):
        self.plan, self.out = plan, Path(out)
        split = split_point(plan.split)
        self.model = LamscModel(base.config)
        self.model.load_state_dict(base.state_dict())
        torch.manual_seed(plan.seed)  # the adapters' initial draw: the same on resuming
        add_adapters(self.model.encoder, plan.rank)
        self.front = front_modules(self.model, plan.split)
        self.back = nn.ModuleDict({m: getattr(self.model, m) for m in split.server_modules
                                   if getattr(self.model, m) is not None})
        self.generator = torch.Generator().manual_seed(plan.seed)
        self.run = TrainingRun(self.out / "server" / "trainer_state.pt", self.back, self.generator,
                               on_checkpoint=self.write_model, every=plan.local_steps, precision="fp32",
                               state={"round": 0, "adapters": adapter_state(self.front), "rows": [], "crossed": {}})
        self.optimizer = torch.optim.Adam(self.back.parameters(), lr=plan.lr)
        self.pending = None
        self.round_log: dict[int, dict] = {}

    # -- the run ------------------------------------------------------------------------------------------
    def serve(self, exchange: Exchange, clients: list[int], until_round: int | None = None,
              progress: Callable[[int, int, dict], object] | None = None) -> dict:
        """Train over ``clients`` (their ids in ``exchange``) to the plan's last round, or only to
        ``until_round``; return the server's state (rows: one report row per evaluated round)."""
        self.exchange, self.clients = exchange, clients
        state = self.run.state
        self._open_round()
        if not state["rows"]:  # round 0: the base model on every device's held-out images
            self.evaluate(first=True)
            self.run.save()
        until = self.plan.steps if until_round is None else min(until_round, self.plan.rounds) * self.plan.local_steps
        self.run.train(self.plan.steps, self.step, self.optimizer, self.plan.lr, progress=progress, until=until,
                       after_step=self.after_step)
        return state

    def _open_round(self) -> None:
        self.round_log = {c: {"bytes_up": dict.fromkeys(ARRAY_KINDS, 0), "bytes_down": dict.fromkeys(ARRAY_KINDS, 0),
                              "device_seconds": 0.0} for c in self.clients}
        self.server_seconds = 0.0

    def send(self, action: str, contents: dict[int, dict]) -> dict[int, dict]:
        """One exchange, with every array's bytes counted each way and what each reply carried recorded."""
        replies = self.exchange(action, contents)
        crossed = self.run.state["crossed"]
        for c in contents:
            for kind, n in array_bytes(contents[c]).items():
                self.round_log[c]["bytes_down"][kind] += n
            for kind, n in array_bytes(replies[c]).items():
                self.round_log[c]["bytes_up"][kind] += n
            self.round_log[c]["device_seconds"] += replies[c].get("metrics", {}).get("device_seconds", 0.0)
            for kind, what in described(replies[c]).items():  # every kind any reply of this type carried
                crossed.setdefault(action, {}).setdefault(kind, what)
        return replies

    def step(self):
        start = time.perf_counter()
        plan, state, k = self.plan, self.run.state, len(self.clients)
        s = state["step"]
        snr = draw_snr(self.model, plan.batch * k, self.generator)
        rows = snr.view(k, plan.batch)
        control = {"step": s, "round_start": s % plan.local_steps == 0}
        replies = self.send(TRAIN_FORWARD, {c: {"control": {**control, "snr": rows[i].tolist()}}
                                            for i, c in enumerate(self.clients)})
        leaves = {c: {n: (t.requires_grad_() if n in DIFFERENTIABLE else t)
                      for n, t in replies[c]["activations"].items()}
                  for c in self.clients}
        smashed = {n: torch.cat([leaves[c][n] for c in self.clients]) for n in leaves[self.clients[0]]}
        outputs = server_forward(self.model, smashed, snr, plan.channel, self.generator)
        parts = {c: {n: o[i * plan.batch:(i + 1) * plan.batch] for n, o in outputs.items()}
                 for i, c in enumerate(self.clients)}
        self.server_seconds += time.perf_counter() - start
        replies = self.send(TRAIN_LOSS, {c: {"control": {"step": s}, "activations": parts[c]} for c in self.clients})
        start = time.perf_counter()
        # the mean of the devices' losses: each device's gradients are scaled by 1/k here and back by k below
        loss = sum(surrogate(parts[c], replies[c]["gradients"], replies[c]["metrics"]["loss"])
                   for c in self.clients) / k
        self.pending = leaves
        self.server_seconds += time.perf_counter() - start
        return loss, {"psnr": sum(replies[c]["metrics"]["psnr"] for c in self.clients) / k}

    def after_step(self) -> dict:
        plan, state, k = self.plan, self.run.state, len(self.clients)
        s = state["step"] - 1
        last = (s + 1) % plan.local_steps == 0
        grads = {c: {n: self.pending[c][n].grad * k for n in DIFFERENTIABLE} for c in self.clients}
        replies = self.send(TRAIN_BACKWARD, {c: {"control": {"step": s, "round_end": last}, "gradients": grads[c]}
                                             for c in self.clients})
        self.pending = None
        if last:
            parts = [replies[c]["parameters"] for c in self.clients]
            state["adapters"] = fedavg(parts, [replies[c]["metrics"]["examples"] for c in self.clients])
            state["round"] = (s + 1) // plan.local_steps
            self.evaluate()
        return {}

    def evaluate(self, first: bool = False) -> None:
        """Every device's held-out metrics through the whole link at ``eval_snr`` (fixed noise), after giving
        it the whole front (before round 1) or the averaged adapters; one report row."""
        plan, state = self.plan, self.run.state
        params = ({n: p.detach() for n, p in self.front.state_dict().items()} if first else state["adapters"])
        control = {"snr": plan.eval_snr}
        if first:
            control["plan"] = plan.device_plan()
        replies = self.send(EVAL_FORWARD, {c: {"control": control, "parameters": params} for c in self.clients})
        if not first:
            self.front.load_state_dict(state["adapters"], strict=False)
        start = time.perf_counter()
        outputs = {}
        with torch.no_grad():
            for c in self.clients:
                acts = replies[c]["activations"]
                outputs[c] = {}
                for n in sorted({key.split(".")[0] for key in acts}, key=int):
                    smashed = {name: acts[f"{n}.{name}"] for name in split_point(plan.split).smashed}
                    out = server_forward(self.model, smashed, torch.tensor([plan.eval_snr]), plan.channel,
                                         eval_generator(plan.seed, c, int(n)))
                    outputs[c].update({f"{n}.{key}": v for key, v in out.items()})
        self.server_seconds += time.perf_counter() - start
        scores = self.send(EVAL_SCORE, {c: {"control": {}, "activations": outputs[c]} for c in self.clients})
        state["rows"].append({"round": state["round"], "server_seconds": self.server_seconds, "clients": {
            str(c): {**scores[c]["metrics"], **self.round_log[c]} for c in self.clients}})
        self._open_round()

    # -- the model users take -----------------------------------------------------------------------------
    def merged_model(self) -> LamscModel:
        """The base model with the averaged adapters merged into its encoder and the trained back."""
        model = copy.deepcopy(self.model)
        front = front_modules(model, self.plan.split)
        front.load_state_dict(self.run.state["adapters"], strict=False)
        merge_adapters(model.encoder)
        plain = LamscModel(model.config)
        plain.load_state_dict(model.state_dict())
        return plain.eval()

    def write_model(self) -> Path:
        model = self.merged_model()
        model.config.trained = {**model.config.trained, "federated": {
            "split": self.plan.split, "rank": self.plan.rank, "rounds": self.run.state["round"],
            "local_steps": self.plan.local_steps, "clients": len(self.clients), "method": "federated split (SplitFed)"}}
        path = model.save(self.out / "model")
        (self.out / "plan.json").write_text(json.dumps(asdict(self.plan), indent=2))
        return path
