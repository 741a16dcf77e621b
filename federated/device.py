"""One device's side of federated split fine-tuning: its data, its front of the model, its resumable state.

A device keeps everything on its own disk (``state_dir``): the training plan, its images' SKB segments, its
trainer state (the one resumable loop, lamsc.semcom.loop.TrainingRun: front weights, adapters, optimiser,
batch sampler) and the step in flight. Each handler is called once per message and rebuilds the device from
that folder, as a Flower ClientApp is called on a device (stateless between messages); a step's forward is
therefore computed twice: whole and without gradients when the activations are sent, and only the encoder,
with gradients, when their gradients come back (activation recomputation, instead of holding the graph between
messages; ASI and the ASC mask network are frozen, so what they computed is kept from the first pass).

Handlers take and return content dicts (lamsc.federated.messages): nothing but activations, gradients and
parameters leaves as arrays; metrics are scalars.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lamsc.errors import UserError
from lamsc.federated.adapters import add_adapters, adapter_state
from lamsc.federated.partition import held_out
from lamsc.federated.split import EVAL_RATE, device_forward, device_loss, device_recompute, split_point, surrogate
from lamsc.semcom import metrics
from lamsc.semcom.images import NamedImage, iter_images
from lamsc.semcom.loop import TrainingRun
from lamsc.semcom.config import ModelConfig, pad_to_multiple
from lamsc.semcom.model import LamscModel
from lamsc.semcom.skb import build_segmenter
from lamsc.semcom.training import Batches, TrainingImage, prepare

STATE = "trainer_state.pt"
ROUND_STATE = "round_state.pt"   # the trainer state at the last round's end: a stopped round restarts from it
PENDING = "pending.pt"           # the step in flight: ASI maps, mask, levels, SNRs, loss; local only


def front_modules(model: LamscModel, split: str) -> nn.ModuleDict:
    """The device's part of ``model`` at ``split``, sharing its modules (what the device trains and saves)."""
    return nn.ModuleDict({m: getattr(model, m) for m in split_point(split).device_modules})


def adapted_model(plan: dict) -> LamscModel:
    """The model a plan describes with adapters of its rank on the encoder's convolutions (weights unset); of the
    device's part only the adapters train: ASI and the ASC mask network stay as the base model has them (they are
    not averaged, so a device training them would drift from the model the server merges)."""
    model = LamscModel(ModelConfig.from_json(plan["model"]))
    add_adapters(model.encoder, plan["rank"])
    model.asi.requires_grad_(False)
    model.mask_net.requires_grad_(False)
    return model


def load_client_images(data_dir: Path, classes: list[str]) -> list[NamedImage]:
    """A client's images; class folders get the class index of the federation's class list ``classes``."""
    images = []
    for i in iter_images([data_dir]):
        if i.category is not None:
            name = i.name.split("/")[0]
            if name not in classes:
                raise UserError(f"{data_dir} has class {name!r}, which the federation's classes {classes} lack")
            i = replace(i, category=classes.index(name))
        images.append(i)
    return images


class Device:
    """A device rebuilt from ``state_dir`` with its images in ``data_dir`` (plan: ``write_plan``). ``partition``:
    the device's index in the federation; its crops, flips and draws come from the plan's seed plus it, so
    that no two devices draw the same sequence (as the local baseline's clients do not)."""

    _prepared: dict[str, tuple[list, list]] = {}  # per process: a device's segmented images, by state folder

    def __init__(self, state_dir: Path, data_dir: Path, partition: int = 0):
        self.dir, self.data_dir = Path(state_dir), Path(data_dir)
        plan_file = self.dir / "plan.json"
        if not plan_file.is_file():
            raise UserError(f"{self.dir} holds no federated plan; the server sends it with round 1's first step")
        self.plan = json.loads(plan_file.read_text())
        self.model = adapted_model(self.plan)
        self.front = front_modules(self.model, self.plan["split"])
        self.train_images, self.test_images = self._images()
        k = self.model.config.segments
        seed = self.plan["seed"] + partition
        self.batches = Batches(self.train_images, k, self.plan["crop"], self.plan["batch"], seed)
        self.run = TrainingRun(self.dir / STATE, self.front, torch.Generator().manual_seed(seed),
                               self.batches.rng, every=1, precision="fp32")
        self.lr = self.plan["front_lr"]
        self.optimizer = torch.optim.Adam([p for p in self.front.parameters() if p.requires_grad], lr=self.lr)
        if self.run.resumed_optimizer is not None:
            self.optimizer.load_state_dict(self.run.resumed_optimizer)
            self.run.resumed_optimizer = None

    @staticmethod
    def write_plan(state_dir: Path, plan: dict) -> None:
        Path(state_dir).mkdir(parents=True, exist_ok=True)
        (Path(state_dir) / "plan.json").write_text(json.dumps(plan))

    def _images(self) -> tuple[list[TrainingImage], list[TrainingImage]]:
        key = str(self.dir.resolve())
        if key not in self._prepared:
            train, test = held_out(load_client_images(self.data_dir, self.plan["classes"]))
            segmenter = build_segmenter(self.plan.get("sam_checkpoint"))
            k = self.model.config.segments
            self._prepared[key] = (prepare(train, segmenter, k), prepare(test, segmenter, k))
        return self._prepared[key]

    def batch(self) -> dict:
        return self.batches.next()

    # -- training: three messages per step ----------------------------------------------------------------
    def receive_parameters(self, parameters: dict) -> None:
        """Take the server's parameters (the whole front before round 1, the averaged adapters after each
        round) as this device's state, and keep that state as the round's starting point."""
        unexpected = self.front.load_state_dict(parameters, strict=False).unexpected_keys
        if unexpected:
            raise UserError(f"the server sent parameters this device's model lacks ({unexpected[:3]}); "
                            "run the same lamsc version and split on both sides")
        self.run.save(self.optimizer)
        shutil.copyfile(self.dir / STATE, self.dir / ROUND_STATE)

    def forward(self, control: dict, parameters: dict | None = None) -> dict:
        """A step's activations: load the round's parameters if sent, draw the step's batch, run the front
        without gradients at the SNRs in ``control``; the batch is drawn again at ``backward``."""
        step = control["step"]
        if control.get("round_start") and self.run.state["step"] != step:
            self._restart_round(step)
        if parameters:
            self.receive_parameters(parameters)
        start = time.perf_counter()
        batch = self.batch()
        snr = torch.tensor(control["snr"], dtype=torch.float32)
        with torch.no_grad():
            smashed, kept = device_forward(self.model, batch["x"], batch["masks"], snr)
        seconds = time.perf_counter() - start
        torch.save({"step": step, "snr": snr, **kept}, self.dir / PENDING)
        return {"activations": smashed, "metrics": {"device_seconds": seconds, "examples": len(self.train_images)}}

    def loss(self, control: dict, activations: dict) -> dict:
        """The loss of the server's outputs on the step's batch (which stays here); their gradients go up."""
        pending = self._pending(control["step"])
        start = time.perf_counter()
        batch = self.batch()
        outputs = {k: v.requires_grad_() for k, v in activations.items()}
        loss, logs = device_loss(outputs, batch, pending, self.plan["importance_weight"])
        grads = torch.autograd.grad(loss, list(outputs.values()))
        pending["loss"] = float(loss.detach())
        torch.save(pending, self.dir / PENDING)
        return {"gradients": dict(zip(outputs, grads)),
                "metrics": {"loss": pending["loss"], **logs, "device_seconds": time.perf_counter() - start}}

    def backward(self, control: dict, gradients: dict) -> dict:
        """Back-propagate the smashed activations' gradients through the encoder (recomputed; ASI's map and
        the mask are kept from ``forward``) and step the adapters, in the one training loop; at a round's end
        return the adapters for FedAvg."""
        pending = self._pending(control["step"])
        stamps = {}

        def step():
            batch = self.batch()
            smashed = device_recompute(self.model, batch["x"], pending, pending["snr"])
            return surrogate(smashed, gradients, pending["loss"]), {}

        start = time.perf_counter()
        self.run.train(self.plan["steps"], step, self.optimizer, self.lr, until=control["step"] + 1,
                       after_step=lambda: stamps.update(done=time.perf_counter()))
        out = {"metrics": {"device_seconds": stamps.get("done", start) - start}}
        if control.get("round_end"):
            out["parameters"] = adapter_state(self.front)
            out["metrics"]["examples"] = len(self.train_images)
        return out

    def _pending(self, step: int) -> dict:
        path = self.dir / PENDING
        pending = torch.load(path, weights_only=True) if path.is_file() else None
        if pending is None or pending["step"] != step:
            raise UserError(f"{self.dir}: no forward pass for step {step} is in flight; restart the round")
        return pending

    def _restart_round(self, step: int) -> None:
        """A round stopped part-way restarts from the device's state at the last round's end."""
        saved = self.dir / ROUND_STATE
        if saved.is_file():
            shutil.copyfile(saved, self.dir / STATE)
        self.__init__(self.dir, self.data_dir)
        if self.run.state["step"] != step:
            raise UserError(f"{self.dir} is at step {self.run.state['step']}, the server at {step}; "
                            "start the device's state folder anew")

    # -- held-out evaluation: two messages ----------------------------------------------------------------
    def evaluate_forward(self, control: dict, parameters: dict | None = None) -> dict:
        """Activations of every held-out image (padded to multiples of 8) at the SNR in ``control``, after
        taking the round's ``parameters`` if sent."""
        if parameters:
            self.receive_parameters(parameters)
        smashed_all, kept = {}, []
        snr = torch.tensor([float(control["snr"])])
        with torch.no_grad():
            for n, (x, masks) in enumerate(eval_inputs(i, self.model.config.segments) for i in self.test_images):
                smashed, _ = device_forward(self.model, x, masks, snr, rate=EVAL_RATE)
                smashed_all.update({f"{n}.{k}": v for k, v in smashed.items()})
                kept.append(float(smashed["mask"].mean()))
        torch.save({"kept": kept}, self.dir / "pending_eval.pt")
        return {"activations": smashed_all}

    def evaluate_score(self, control: dict, activations: dict) -> dict:
        """Held-out metrics of the server's outputs: mean PSNR (dB), MS-SSIM, kept fraction, and the heads'
        accuracy and mIoU where the images carry labels."""
        kept = torch.load(self.dir / "pending_eval.pt", weights_only=True)["kept"]
        return {"metrics": score(self.test_images, activations, kept, self.model.config)}


def eval_inputs(item: TrainingImage, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A held-out image (1, 3, H', W') in [0, 1] and its k SKB masks (1, k, H', W'), padded to multiples of 8."""
    x = torch.from_numpy(item.pixels).permute(2, 0, 1)[None].float() / 255.0
    masks = torch.from_numpy(((item.masks[None] >> np.arange(k)[:, None, None]) & 1).astype(np.float32))[None]
    return pad_to_multiple(x), pad_to_multiple(masks, mode="constant")


def score(images: list[TrainingImage], outputs: dict, kept: list[float], config: ModelConfig) -> dict:
    """Mean held-out metrics over ``images`` from ``outputs`` keyed ``"<n>.image"`` (and ``"<n>.class_logits"``,
    ``"<n>.seg_logits"``), each cropped to its image's size."""
    psnr, msssim, correct, labelled, ious = [], [], 0, 0, []
    for n, item in enumerate(images):
        h, w = item.pixels.shape[:2]
        x = torch.from_numpy(item.pixels).permute(2, 0, 1)[None].float() / 255.0
        y = outputs[f"{n}.image"][..., :h, :w].float()
        psnr.append(float(metrics.psnr(y, x)[0]))
        msssim.append(float(metrics.ms_ssim(y, x)[0]))
        if item.category >= 0 and f"{n}.class_logits" in outputs:
            labelled += 1
            correct += int(outputs[f"{n}.class_logits"].argmax(1)[0]) == item.category
        if item.label is not None and f"{n}.seg_logits" in outputs:
            ious.append(mean_iou(outputs[f"{n}.seg_logits"][0, :, :h, :w].argmax(0),
                                 torch.from_numpy(item.label).long(), config.seg_classes))
    out = {"psnr": float(np.mean(psnr)), "ms_ssim": metrics.mean_defined(msssim), "kept": float(np.mean(kept)),
           "images": len(images)}
    if labelled:
        out["accuracy"] = 100.0 * correct / labelled
    if ious:
        out["miou"] = metrics.mean_defined(ious)
    return out


def mean_iou(pred: torch.Tensor, label: torch.Tensor, classes: int) -> float:
    """Mean intersection over union (%) over the classes present in ``label`` or ``pred`` (255 = void)."""
    valid = label != 255
    ious = []
    for c in range(classes):
        p, t = (pred == c) & valid, (label == c) & valid
        union = int((p | t).sum())
        if union:
            ious.append(int((p & t).sum()) / union)
    return 100.0 * float(np.mean(ious)) if ious else float("nan")
