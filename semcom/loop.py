"""The one resumable training loop: the codec's stages (semcom.training) and the distilled students
(compress.distill) all train in it. The caller supplies its step (batch in, loss and logs out) and its
state; the loop owns the learning-rate schedule, autocast, the optimiser step with gradient clipping,
checkpoints, resuming and progress.

A checkpoint is one file: step, history, the model's weights, the optimiser's state, the state of the
run's torch generator and of its batch sampler, and the caller's own entries. It is written to a
temporary file that is then renamed over the last one, so a run stopped at any moment (even while
saving) resumes from its last complete checkpoint, and a resumed run is the straight run, bit for bit.

Under torchrun (a process group, semcom.distributed) the same loop trains data-parallel: each step
all-reduces the gradients (the mean over ranks) before clipping, so every rank clips and steps the same
weights; rank 0 writes the checkpoint, which holds every rank's random states, and every rank resumes from it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file

from lamsc.errors import UserError
from lamsc.semcom import distributed
from lamsc.semcom.codec import project_constraints

PRECISIONS = ("auto", "fp32", "bf16")
MAX_GRAD_NORM = 1.0  # every lamsc model trains with gradients clipped to this global L2 norm


class TrainingRun:
    """A resumable training run whose checkpoint is the file ``path``; resumed from it on construction.

    ``model``: the module trained, its weights restored on resume. ``generator``: the run's torch random
    generator (noise, SNRs, picks); ``sampler``: the numpy generator of its batch sampler, if it has one.
    ``on_checkpoint``: called before each checkpoint is written: writes the model where users take it
    from, and records into ``state`` whatever else the caller keeps at checkpoints.
    ``every``: steps between checkpoints. ``device``: where the run computes. ``precision``: "fp32",
    "bf16" (autocast) or "auto" (``autocast_bf16``). ``state``: the caller's initial entries beside
    ``step`` and ``history``; all of ``state`` is saved and restored. ``weights``: the safetensors file
    ``on_checkpoint`` writes, read on resuming a checkpoint file that holds no weights of its own.

    In a process group (torchrun), ``generator`` and ``sampler`` are this rank's; ``on_checkpoint`` runs and
    the checkpoint is written on rank 0 only, and every rank resumes its own random states from it.

    Raises UserError for an unknown precision, for a checkpoint begun on another device type (a CUDA
    generator's state does not fit a CPU generator), and for one begun by another number of processes.
    """

    def __init__(self, path: Path, model: torch.nn.Module, generator: torch.Generator,
                 sampler: np.random.Generator | None = None, on_checkpoint: Callable[[], object] | None = None,
                 every: int = 100, device: str | torch.device = "cpu", precision: str = "fp32",
                 state: dict | None = None, weights: Path | None = None):
        self.path, self.model, self.generator, self.sampler = Path(path), model, generator, sampler
        self.on_checkpoint, self.every, self.device = on_checkpoint, every, torch.device(device)
        self.bf16 = autocast_bf16(precision, self.device)
        self.ranks = distributed.current()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.state = {"step": 0, "history": [], **(state or {})}
        self.resumed_optimizer = None  # the saved optimiser state, for the next ``train``
        if self.path.is_file():
            self._resume(weights)
        self.state["device"] = self.device.type

    def _resume(self, weights: Path | None) -> None:
        saved = torch.load(self.path, map_location="cpu", weights_only=True)
        begun = saved.get("device", self.device.type)
        if begun != self.device.type:
            raise UserError(f"{self.path.parent} holds a run begun on {begun}, whose random state "
                            f"{self.device.type} cannot take: resume it with --device {begun}, or start a new --out")
        world = saved.pop("world", 1)
        if world != self.ranks.world:
            launch = f"torchrun --nproc_per_node {world}" if world > 1 else "one process (without torchrun)"
            raise UserError(f"{self.path.parent} holds a run of {world} process(es), not {self.ranks.world}: "
                            f"resume it with {launch}, or start a new --out")
        state = saved.pop("model") if "model" in saved else load_file(str(weights)) if weights is not None else None
        if state is not None:
            try:
                self.model.load_state_dict(state)
            except RuntimeError:  # torch lists every mismatched tensor: one line says what to do
                raise UserError(f"{self.path.parent} holds a run of another model (its weights do not fit this "
                                "one): start a new --out, or delete that folder") from None
        self.resumed_optimizer = saved.pop("optimizer", None)
        rng, crops = saved.pop("rng", None), saved.pop("crops", None)
        per_rank = saved.pop("ranks", None)
        if per_rank is not None:
            rng, crops = per_rank[self.ranks.rank]["rng"], per_rank[self.ranks.rank].get("crops")
        if rng is not None:
            self.generator.set_state(rng)
        if crops is not None and self.sampler is not None:
            self.sampler.bit_generator.state = crops
        self.state = saved

    def train(self, total: int, step: Callable[[], tuple[torch.Tensor, dict]], optimizer: torch.optim.Optimizer,
              lr: float, warmup: int = 0, progress: Callable[[int, int, dict], object] | None = None,
              tags: dict | None = None, until: int | None = None,
              after_step: Callable[[], dict | None] | None = None) -> None:
        """Optimiser steps from ``state["step"]`` up to ``total`` (none if it is already there), or only up to
        ``until`` while the schedule still runs to ``total`` (a federated device steps once per message).

        Each step sets the learning rate (``learning_rate`` from ``lr``, or from a parameter group's own
        ``peak_lr`` where it has one), calls ``step()`` under the run's autocast for a
        scalar loss and a dict of float logs, back-propagates, clips the gradients of the optimiser's
        parameters to ``MAX_GRAD_NORM`` and steps the optimiser; appends ``{**tags, "step", "loss", **logs}``
        to the history; ``after_step()`` runs after the optimiser step and before the history row and the
        checkpoint, and may return logs for the row (a split-learning server sends the activations' gradients
        back and averages the devices' parts there, so a checkpoint holds them); checkpoints every ``every``
        steps and at ``total``; then calls
        ``progress(step, total, {"loss", **logs})``, after the checkpoint, so a progress callback that stops
        the run (KeyboardInterrupt) loses no step that is already saved. ``optimizer`` takes the resumed
        optimiser state, if the checkpoint held one.

        In a process group every rank starts from rank 0's weights, and after each backward pass the
        gradients and the step's loss and logs are averaged over the ranks (``step()`` returns the same log
        keys on every rank); the history rows hold those means. ``progress`` runs on every rank.
        """
        if self.resumed_optimizer is not None:
            peaks = [group.get("peak_lr") for group in optimizer.param_groups]
            optimizer.load_state_dict(self.resumed_optimizer)
            for group, peak in zip(optimizer.param_groups, peaks):  # the caller's rates, not the saved ones
                group["peak_lr"] = peak
            self.resumed_optimizer = None
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        state = self.state
        if self.ranks.world > 1:
            distributed.broadcast_module(self.model)  # the same start on every rank, however each built it
        while state["step"] < min(total, total if until is None else until):
            for group in optimizer.param_groups:
                peak = group.get("peak_lr")
                group["lr"] = learning_rate(lr if peak is None else peak, state["step"], total, warmup)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                loss, logs = step()
            optimizer.zero_grad()
            loss.backward()
            logs = {"loss": float(loss.detach()), **logs}
            if self.ranks.world > 1:  # the gradient of the global batch, on every rank, before it is clipped
                logs = dict(zip(logs, distributed.average_gradients(parameters, list(logs.values()))))
            torch.nn.utils.clip_grad_norm_(parameters, MAX_GRAD_NORM)
            optimizer.step()
            project_constraints(self.model)
            state["step"] += 1
            logs = {**logs, **((after_step() if after_step is not None else None) or {})}
            state["history"].append({**(tags or {}), "step": state["step"], **logs})
            if state["step"] % self.every == 0 or state["step"] == total:
                self.save(optimizer)
            if progress is not None:
                progress(state["step"], total, logs)

    def save(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """``on_checkpoint``, then the checkpoint (with ``optimizer``'s state, if given), atomically. In a
        process group every rank calls it (it gathers their random states) and rank 0 writes."""
        randomness = {"rng": self.generator.get_state()}
        if self.sampler is not None:
            randomness["crops"] = self.sampler.bit_generator.state
        every_rank = distributed.all_gather(randomness)
        if not self.ranks.main:
            return
        if self.on_checkpoint is not None:
            self.on_checkpoint()
        saved = {**self.state, "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                 **randomness}
        if self.ranks.world > 1:
            saved.update(world=self.ranks.world, ranks=every_rank)
        if optimizer is not None:
            saved["optimizer"] = optimizer.state_dict()
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as f:
            torch.save(saved, f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them the checkpoint
        os.replace(tmp, self.path)


def learning_rate(lr: float, step: int, total: int, warmup: int = 0) -> float:
    """The learning rate at ``step`` (0-based) of ``total``: ``lr`` decayed along a half cosine to 0 at
    ``total``, and over the first ``warmup`` steps also scaled by (step + 1) / warmup."""
    rate = lr * 0.5 * (1 + math.cos(math.pi * step / total))
    if step < warmup:
        rate *= (step + 1) / warmup
    return rate


def autocast_bf16(precision: str, device: torch.device) -> bool:
    """Whether training at ``precision`` ("auto", "fp32" or "bf16") on ``device`` runs under bf16 autocast.

    "auto" is bf16 on a CPU that computes in bf16 (2.6x the crops per second of fp32 at the same training
    PSNR, benchmarks/results/train_throughput.md) and fp32 elsewhere, GPUs included (an H200 trains the
    codec 0.9x as fast in bf16, benchmarks/results/gpu_h200/). Raises UserError for another precision.
    """
    if precision not in PRECISIONS:
        raise UserError(f"unknown training precision {precision!r}; choose auto, fp32 or bf16")
    return precision == "bf16" or (precision == "auto" and device.type == "cpu" and cpu_has_bf16())


def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bf16 itself (AVX-512 BF16 or AMX, read from /proc/cpuinfo; elsewhere, no).
    Without it, bf16 autocast is emulated and slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
