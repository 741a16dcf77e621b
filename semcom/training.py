"""Training in the paper's three steps, resumable:

1. ``asi``   — the ASI attention learns segment importance from experience (MSE to per-segment targets);
2. ``codec`` — encoder, decoder (and task heads) across SNRs, with random ASC depths (nested dropout),
               so that one model serves the whole SNR range and truncated features;
3. ``asc``   — the mask network jointly with the codec: each image's depth map, as the link sends it (its
               block mean), is shifted to a random fraction sent (``lamsc.semcom.asc.sent_depth``), so the
               network learns where to send at every rate, and
               a rate term pulls its own mean depth logit to ``rate_target``'s, what it sends when no budget
               is set.

The stages train in the one resumable loop (semcom.loop): every ``checkpoint_every`` steps and at each
stage's end the model (safetensors + JSON) and the trainer state (stage, step, weights, optimiser, RNG,
crop sampler, history) are written to the output folder; running again with the same folder resumes.
Under ``torchrun --nproc_per_node N`` the same calls train data-parallel (semcom.distributed): each rank
draws its own batch, so a step sees N x ``batch`` crops, and rank 0 writes the folder.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from lamsc.errors import UserError
from lamsc.semcom import metrics
from lamsc.semcom.asc import random_levels
from lamsc.semcom.asi import default_targets, importance_targets, read_importance_map
from lamsc.semcom.channels import Channel, analog_real
from lamsc.semcom.distributed import broadcast, current, main_first, process_group, rank_seed
from lamsc.semcom.images import NamedImage, bundled_photos, iter_images
from lamsc.semcom.loop import PRECISIONS, TrainingRun, autocast_bf16
from lamsc.semcom.config import ModelConfig
from lamsc.semcom.model import LamscModel
from lamsc.semcom.segmenter import Segmenter
from lamsc.semcom.skb import build_segmenter
from lamsc.semcom.synthetic import SHAPE_CLASSES, make_shapes
from lamsc.semcom.transmission import segment_masks

STAGES = ("asi", "codec", "asc")
MODEL_PARTS = ("asi", "encoder", "mask_net", "decoder", "classifier", "segmenter_head")  # LamscModel's children


@dataclass
class TrainConfig:
    """A training recipe; presets below, every field settable."""

    steps: dict = field(default_factory=lambda: {"asi": 200, "codec": 1200, "asc": 600})
    crop: int = 128
    batch: int = 8
    lr: float = 3e-4             # 1e-3 stalls this un-normalised codec at a blurry mean
    rate_target: float = 0.5    # mean fraction of features ASC keeps on its own; per image and position it varies
    rate_weight: float = 0.01   # weight of the squared gap between ASC's mean depth logit and rate_target's
    # ASC stage: each image's kept fraction drawn uniformly from these; None: ASC's own (split fine-tuning)
    rates: tuple[float, float] | None = (0.15, 0.75)
    importance_weight: float = 1.0  # distortion weight of important pixels: 1 + this * ASI map
    distortion: str = "mse"     # mse | psnr: what the link stages minimise (reconstruction_loss)
    channel: str = "awgn"       # the training channel; the SNR is drawn per image from the model's range
    checkpoint_every: int = 250
    seed: int = 0
    precision: str = "auto"     # auto | fp32 | bf16: bf16 autocast where it is faster (semcom.loop.autocast_bf16)
    scales: tuple[float, ...] = (1.0,)  # each photograph also cropped at these sizes (more detail per pixel)
    minutes: float | None = None  # wall-clock budget: steps scaled to fill it on this device (fit_to_budget)
    parts: tuple[str, ...] | None = None  # the only MODEL_PARTS trained, the rest fixed (stage_parameters); None: all


# The shipped default's last steps (benchmarks/results/default_model.md, steps 7 and 8), from a trained model
# (--init): encoder and decoder on the block-mean depth maps the link sends, at kept fractions in 0.15-1.0, the
# mask network fixed; its 13,000 steps take about 70 minutes on 2 cores with AVX-512 BF16.
REFINE = TrainConfig(steps={"asi": 0, "codec": 0, "asc": 13000}, lr=1.0e-4, rate_target=0.25, rates=(0.15, 1.0),
                     scales=(1.0, 0.75, 0.5), parts=("encoder", "decoder"), seed=3)

PRESETS = {
    # CPU-sized: real photographs, about an hour on 2 idle cores.
    "default": TrainConfig(),
    # The shipped default's recipe: a wall-clock budget on one GPU, steps in these proportions.
    "gpu": TrainConfig(steps={"asi": 300, "codec": 20000, "asc": 8000}, crop=192, batch=32, rate_target=0.25,
                       checkpoint_every=1000, scales=(1.0, 0.75, 0.5), minutes=6.0),
    "refine": REFINE,
    # The same step in a wall-clock budget on one GPU (steps fitted to it), at the gpu preset's crops and batch.
    "gpu-refine": replace(REFINE, steps={"asi": 0, "codec": 0, "asc": 20000}, crop=192, batch=32, seed=0,
                          checkpoint_every=1000, minutes=8.0),
    # Seconds on a CPU: for tests and smoke runs, not for quality.
    "tiny": TrainConfig(steps={"asi": 5, "codec": 10, "asc": 10}, crop=64, batch=4, checkpoint_every=5),
}


@dataclass
class TrainingImage:
    pixels: np.ndarray          # (H, W, 3) uint8
    masks: np.ndarray           # (H, W) uint8 bit field: bit k set where segment k covers the pixel
    importance: np.ndarray | None = None  # (H, W) float experience map
    category: int = -1
    label: np.ndarray | None = None


def prepare(images: list[NamedImage], segmenter: Segmenter, k: int, importance_dir: Path | None = None,
            progress=None, cache: Path | None = None) -> list[TrainingImage]:
    """Segment every image once (the SKB is the slow part) and keep its k largest masks as a bit field.

    ``cache``: an .npz of bit fields by segmenter, k and a hash of the pixels; images found there are not
    segmented again (a resumed run, a second run on the same photographs), new ones are added to it.
    """
    if k > 8:
        raise ValueError("the training cache packs at most 8 segments per image")
    known = dict(np.load(cache)) if cache is not None and cache.is_file() else {}
    added = False
    out = []
    for item in images:
        key = segments_key(item.pixels, segmenter.name, k)
        if key in known:
            bitfield = known[key]
        elif k == 0:  # no segments enter the model (no ASI): nothing to segment
            bitfield = np.zeros(item.pixels.shape[:2], np.uint8)
        else:
            masks = segment_masks(segmenter.segment(item.pixels), k).astype(bool)
            bitfield = np.zeros(masks.shape[1:], np.uint8)
            for i, m in enumerate(masks):
                bitfield |= m.astype(np.uint8) << i
            known[key], added = bitfield, True
        imp = None
        if importance_dir is not None and (importance_dir / f"{item.name}.png").is_file():
            imp = read_importance_map(importance_dir / f"{item.name}.png", item.pixels.shape[:2])
        out.append(TrainingImage(item.pixels, bitfield, imp, -1 if item.category is None else item.category,
                                 item.label))
        if progress is not None:
            progress()
    if cache is not None and added:
        tmp = cache.with_name(cache.name + ".tmp.npz")
        np.savez_compressed(tmp, **known)
        os.replace(tmp, cache)  # a run stopped while saving keeps the last whole cache
    return out


def segments_key(pixels: np.ndarray, segmenter: str, k: int) -> str:
    """The cache key of an image's k largest segments by ``segmenter``: a hash of all three."""
    digest = hashlib.blake2b(np.ascontiguousarray(pixels).data, digest_size=16)
    digest.update(f"{pixels.shape}|{segmenter}|{k}".encode())
    return digest.hexdigest()


def rescaled(image: TrainingImage, scale: float) -> TrainingImage:
    """The image resized by ``scale``: pixels by area averaging (Lanczos), masks, labels and the experience
    map by nearest neighbour, so segments stay bit fields and labels stay classes."""
    if scale == 1.0:
        return image
    h, w = image.masks.shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))

    def nearest(a):
        if a is None:
            return None
        mode = "F" if a.dtype.kind == "f" else None
        return np.asarray(Image.fromarray(a.astype(np.float32) if mode else a, mode).resize(size, Image.NEAREST)
                          ).astype(a.dtype)

    pixels = np.asarray(Image.fromarray(image.pixels).resize(size, Image.LANCZOS))
    return TrainingImage(pixels, nearest(image.masks), nearest(image.importance), image.category,
                         nearest(image.label))


class Batches:
    """Random crops (with flips) of the prepared images, at each of ``scales``, as tensors."""

    def __init__(self, images: list[TrainingImage], k: int, crop: int, batch: int, seed: int,
                 scales: tuple[float, ...] = (1.0,)):
        if not images:
            raise UserError("no training images; pass --data with image folders, --bundled or --synthetic N")
        images = [rescaled(i, s) for s in scales for i in images]
        self.images, self.k, self.crop, self.batch = images, k, crop, batch
        self.rng = np.random.default_rng(seed)

    def next(self, device: torch.device | str = "cpu") -> dict:
        """One batch: images ``x`` (B, 3, S, S) in [0, 1] and segment ``masks`` (B, K, S, S) on ``device``;
        experience maps, categories and labels on the CPU (``to_device`` moves them)."""
        xs, ms, imps, cats, labels = [], [], [], [], []
        for _ in range(self.batch):
            item = self.images[self.rng.integers(len(self.images))]
            h, w = item.masks.shape
            s = self.crop
            pad_h, pad_w = max(0, s - h), max(0, s - w)
            y, x = self.rng.integers(0, max(h - s, 0) + 1), self.rng.integers(0, max(w - s, 0) + 1)

            def cut(a, fill=0):
                a = a[y:y + s, x:x + s]
                if pad_h or pad_w:
                    a = np.pad(a, [(0, pad_h), (0, pad_w)] + [(0, 0)] * (a.ndim - 2), constant_values=fill)
                return a

            flip = self.rng.random() < 0.5
            f = (lambda a: a[:, ::-1]) if flip else (lambda a: a)
            xs.append(f(cut(item.pixels)))
            ms.append(f(cut(item.masks)))
            imps.append(f(cut(item.importance)) if item.importance is not None else None)
            labels.append(f(cut(item.label, 255)) if item.label is not None else np.full((s, s), 255, np.uint8))
            cats.append(item.category)
        # crops cross to the device as bytes and become floats and masks there: a quarter of the copy, and
        # no per-pixel work on the CPU that feeds a GPU
        x = torch.from_numpy(np.stack(xs)).to(device).permute(0, 3, 1, 2).float() / 255.0
        bits = torch.from_numpy(np.stack(ms)).to(device).long()
        masks = ((bits[:, None] >> torch.arange(self.k, device=device).view(1, -1, 1, 1)) & 1).float()
        has_imp = torch.tensor([i is not None for i in imps])
        imp = torch.stack([torch.from_numpy(i.copy()) if i is not None else torch.zeros(s, s) for i in imps])[:, None]
        return {"x": x, "masks": masks, "importance": imp, "has_importance": has_imp,
                "category": torch.tensor(cats), "label": torch.from_numpy(np.stack(labels).copy()).long()}


def stage_parameters(model: LamscModel, stage: str, parts: tuple[str, ...] | None = None) -> list:
    """The parameters ``stage`` trains (``stage_names``). With ``parts`` the gradient of every other parameter
    is turned off, so back-propagation stops where the trained parts begin (a frozen encoder costs a forward
    pass only); a stage that trains none of them gets an empty list, and ``train`` skips it."""
    names = set(stage_names(model, stage, parts))
    if parts is not None:
        for n, p in model.named_parameters():
            p.requires_grad_(n in names)
    return [p for n, p in model.named_parameters() if n in names]


def stage_names(model: LamscModel, stage: str, parts: tuple[str, ...] | None = None) -> list[str]:
    """The names of the parameters ``stage`` trains: ASI's attention (stem and MLP) in "asi"; in "codec" every
    other parameter but the mask network's (of part "asi": its spatial refinement), which "asc" adds; with
    ``parts`` (MODEL_PARTS) only those of these parts."""
    if stage == "asi":
        names = [n for n, _ in model.named_parameters() if n.startswith(("asi.stem", "asi.mlp"))]
    else:
        names = [n for n, _ in model.named_parameters()
                 if not n.startswith(("asi.stem", "asi.mlp")) and (stage == "asc" or not n.startswith("mask_net"))]
    return names if parts is None else [n for n in names if n.split(".")[0] in parts]


def asi_loss(model: LamscModel, batch: dict) -> tuple[torch.Tensor, dict]:
    weights = model.asi.segment_weights(batch["x"], batch["masks"])
    targets = default_targets(batch["x"], batch["masks"])
    given = batch["has_importance"]
    if given.any():  # experience, where the data carries it, overrides the default rule
        targets[given] = importance_targets(batch["importance"][given], batch["masks"][given])
    valid = batch["masks"].flatten(2).amax(2) > 0
    return F.mse_loss(weights[valid].float(), targets[valid].float()), {}


def link_loss(model: LamscModel, batch: dict, stage: str, cfg: TrainConfig, gen: torch.Generator):
    x, masks = batch["x"], batch["masks"]
    b, device = x.shape[0], x.device
    lo, hi = model.config.snr_range
    snr = lo + (hi - lo) * torch.rand(b, generator=gen, device=gen.device).to(device)
    levels = rate = None
    if stage == "codec":
        h, w = x.shape[-2] // 8, x.shape[-1] // 8
        levels = random_levels((b, h, w), model.config.num_levels, device=gen.device, generator=gen).to(device)
    elif stage == "asc" and cfg.rates is not None:
        r0, r1 = cfg.rates
        rate = (r0 + (r1 - r0) * torch.rand(b, generator=gen, device=gen.device)).to(device)
    enc = model.encode(x, masks, snr, asc=stage == "asc", levels=levels, rate=rate)
    z, mask = enc["z"], enc["mask"]
    noisy = analog_real(z.reshape(b, -1).float(), Channel(cfg.channel, lo), gen, snr_db=snr).view_as(z) * mask
    out = model.decode(noisy, enc["levels"], snr)
    loss, psnr = reconstruction_loss(out, batch, enc["integrated"], cfg.importance_weight, cfg.distortion)
    kept = mask.mean()
    logs = {}
    if stage == "asc":
        # in logit space, where the pull never vanishes: ASC's median position keeps about rate_target
        own = enc["depth_logits"].float().mean()
        loss = loss + cfg.rate_weight * (own - math.log(cfg.rate_target / (1 - cfg.rate_target))) ** 2
        logs["own_kept"] = float(enc["depth"].detach().float().mean())
    return loss, {"psnr": psnr, "kept": float(kept.detach()), **logs}


HEAD_WEIGHT = 0.01  # each task head's cross-entropy beside the image distortion


DISTORTIONS = ("mse", "psnr")
ROUNDING_MSE = 1 / (12 * 255**2)  # squared error of rounding to 8 bits (uniform, step 1/255)


def reconstruction_loss(out: dict, batch: dict, integrated: torch.Tensor, importance_weight: float,
                        distortion: str = "mse") -> tuple[torch.Tensor, float]:
    """The receiver's outputs ``out`` (image (B, 3, H, W), head logits) against ``batch`` (x, category, label):
    squared error weighted by 1 + ``importance_weight`` x the ASI segment map ``integrated`` (B, 1, H, W), plus
    ``HEAD_WEIGHT`` x each head's cross-entropy where the batch has labels. Returns the loss and the PSNR in dB.

    ``distortion``: ``"mse"``, the batch's weighted squared error; ``"psnr"``, the same value but the gradient
    of the batch's mean PSNR, -10 log10 of each crop's weighted squared error (plus ``ROUNDING_MSE``), scaled
    to MSE's magnitude (each crop's error divided by its own and multiplied by the batch mean). Under MSE a
    crop sent at 0 dB pulls about twice as hard as one at 20 dB (the shipped default scores 24.2 and 27.9 dB
    there); under PSNR every crop counts by its change in dB, the figure the link is scored by, and a crop
    that already comes back well pulls hardest: on data with flat regions (a plain wallpaper decoded at 40-60
    dB) those crops take the gradient, and MSE is the better choice. ValueError for another name."""
    if distortion not in DISTORTIONS:
        raise ValueError(f"unknown distortion {distortion!r}; known: {', '.join(DISTORTIONS)}")
    x = batch["x"]
    # weight by the segment map (integrated), not the refined one, so ASI cannot game the loss
    weight = 1.0 + importance_weight * integrated.detach().float()
    if distortion == "mse":
        loss = ((out["image"].float() - x).pow(2) * weight).mean() / weight.mean()
    else:
        per = ((out["image"].float() - x).pow(2) * weight).flatten(1).mean(1) / weight.flatten(1).mean(1)
        mean = per.mean().detach()
        # floored at 8-bit rounding's own error: a flat crop (a black border) can come back exact, log 0
        log = (per + ROUNDING_MSE).log()
        loss = mean + mean * (log - log.detach()).mean()  # value: the mean error; gradient: mean x d mean(log)
    if "class_logits" in out and (batch["category"] >= 0).any():
        sel = batch["category"] >= 0
        loss = loss + HEAD_WEIGHT * F.cross_entropy(out["class_logits"][sel].float(), batch["category"][sel])
    if "seg_logits" in out and (batch["label"] != 255).any():
        loss = loss + HEAD_WEIGHT * F.cross_entropy(out["seg_logits"].float(), batch["label"], ignore_index=255)
    return loss, float(metrics.psnr(out["image"].detach().float(), x).mean())


def to_device(batch: dict, device: torch.device) -> dict:
    """A batch on ``device``, images in channels-last order (what oneDNN and cuDNN convolve fastest)."""
    out = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    out["x"] = out["x"].contiguous(memory_format=torch.channels_last)
    return out


PROBE_STEPS = 10  # link steps timed by fit_to_budget, after as many unmeasured warm-up steps


def fit_to_budget(model: LamscModel, batches: Batches, cfg: TrainConfig, device: torch.device) -> dict[str, int]:
    """Steps per stage, in the proportions of ``cfg.steps``, that fill ``cfg.minutes`` of wall-clock time on
    ``device``: a copy of ``model`` trains ``PROBE_STEPS`` link steps to warm up and as many timed (the
    batch sampler is put back where it was, so the run draws the crops it would have drawn), and the rest
    of the budget is divided by the time of one step. An ASI step is counted as a tenth of a link step (it
    runs the small attention network alone). In a process group every rank probes (the machine is as busy
    as in the run) and takes rank 0's counts, so all ranks step alike."""
    start = time.perf_counter()
    probe = copy.deepcopy(model).to(device, memory_format=torch.channels_last).train()
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    sampler = batches.rng.bit_generator.state
    optimizer = torch.optim.Adam(stage_parameters(probe, "asc", cfg.parts), lr=cfg.lr)
    bf16 = autocast_bf16(cfg.precision, device)

    def timed(probe: LamscModel, optimizer: torch.optim.Optimizer, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss, _ = link_loss(probe, to_device(batches.next(device), device), "asc", cfg, gen)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        float(loss.detach())  # waits for the device
        return time.perf_counter() - t0

    timed(probe, optimizer, PROBE_STEPS)
    per_step = timed(probe, optimizer, PROBE_STEPS) / PROBE_STEPS
    batches.rng.bit_generator.state = sampler
    del probe, optimizer
    left = 0.95 * cfg.minutes * 60 - (time.perf_counter() - start)  # 5% for checkpoints and the curves
    weighted = sum(n * (0.1 if stage == "asi" else 1.0) for stage, n in cfg.steps.items())
    scale = max(left, 0.0) / (per_step * weighted)
    return broadcast({stage: max(1, round(n * scale)) if n else 0 for stage, n in cfg.steps.items()})


def train(model: LamscModel, images: list[TrainingImage], cfg: TrainConfig, out: Path, progress=None,
          device: str | torch.device = "cpu") -> dict:
    """Run (or resume) the three stages on ``device``; write the model, state and curves into ``out``.

    ``progress(stage, step, total, logs)`` follows every step. Returns the trainer state (stage "done",
    history). Under torchrun (semcom.distributed.process_group) every process calls this with the same
    arguments: each trains on its own device (cuda:LOCAL_RANK for "cuda") with its own crops and noise,
    gradients are averaged, and rank 0 alone writes ``out`` and calls ``progress``. Raises UserError for a
    precision the recipe names but this library does not know, for no images, for a run in ``out`` begun on
    another device type or by another number of processes, and for a device torchrun's ranks cannot take.
    """
    with process_group(device) as (ranks, device):
        if not ranks.main:
            progress = None
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed crop sizes: let cuDNN pick its fastest convolutions once
        seed = rank_seed(cfg.seed, ranks.rank)  # each rank its own crops and noise: the global batch is N x batch
        gen = torch.Generator(device=device).manual_seed(seed)
        batches = Batches(images, model.config.segments, cfg.crop, cfg.batch, seed, cfg.scales)
        run = TrainingRun(out / "trainer_state.pt", model, gen, batches.rng, lambda: model.save(out / "model"),
                          cfg.checkpoint_every, device, cfg.precision,
                          {"stage": STAGES[0]}, out / "model.safetensors")
        state = run.state
        if cfg.parts is not None:  # a stage that trains none of the parts does not run
            asked = any(cfg.steps.values())
            cfg = replace(cfg, steps={stage: n if stage_names(model, stage, cfg.parts) else 0
                                      for stage, n in cfg.steps.items()})
            if asked and not any(cfg.steps.values()):
                raise UserError(f"no stage with steps trains {', '.join(cfg.parts)}: this model has no such part "
                                "or the stages that train it have no steps")
        if "steps" not in state:  # decided once, when the run begins; a resumed run keeps them
            state["steps"] = fit_to_budget(model, batches, cfg, device) if cfg.minutes else dict(cfg.steps)
            if not model.config.segments:  # no segments (the plain JSCC ablation): no ASI weights to learn
                state["steps"]["asi"] = 0
        if model.config.trained.get("recipe"):
            model.config.trained["recipe"]["steps"] = dict(state["steps"])  # what ran, also when fitted to minutes
        start = STAGES.index(state["stage"]) if state["stage"] in STAGES else len(STAGES)
        model.to(device, memory_format=torch.channels_last)
        try:
            for index in range(start, len(STAGES)):
                stage = STAGES[index]

                def step():
                    batch = to_device(batches.next(device), device)
                    if stage == "asi":
                        return asi_loss(model, batch)
                    return link_loss(model, batch, stage, cfg, gen)

                def report(step, total, logs):
                    progress(stage, step, total, logs)

                model.train()
                # a fresh optimiser per stage, its learning rate decayed along a cosine within the stage
                parameters = stage_parameters(model, stage, cfg.parts)
                if parameters:
                    run.train(state["steps"].get(stage, 0), step, torch.optim.Adam(parameters, lr=cfg.lr), cfg.lr,
                              progress=report if progress is not None else None, tags={"stage": stage})
                state.update(stage=STAGES[index + 1] if index + 1 < len(STAGES) else "done", step=0)
            if start < len(STAGES):  # the finished state: running the folder again only plots
                run.save()
        finally:  # the caller's model comes back where it was built, whether the run ended or stopped
            model.to("cpu", memory_format=torch.contiguous_format).eval().requires_grad_(True)
        if ranks.main:
            plot_curves(state["history"], out / "curves.png")
            (out / "history.json").write_text(json.dumps(state["history"]))
        return state


def plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    offset = 0
    for stage in STAGES:
        rows = [h for h in history if h["stage"] == stage]
        if not rows:
            continue
        for ax, key in ((ax1, "loss"), (ax2, "psnr")):
            if key in rows[0]:
                values = _smooth([r[key] for r in rows])
                ax.plot(offset + len(rows) - len(values) + np.arange(len(values)), values, label=stage,
                        color=f"C{STAGES.index(stage)}")
        offset += len(rows)
    ax1.set(xlabel="step", ylabel="loss", yscale="log", title="training loss")
    ax2.set(xlabel="step", ylabel="PSNR (dB)", title="training PSNR (random SNR)")
    ax1.legend()
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _smooth(values: list[float], window: int = 25) -> np.ndarray:
    v = np.asarray(values, float)
    if len(v) < window:
        return v
    return np.convolve(v, np.ones(window) / window, mode="valid")


def save_recipe(cfg: TrainConfig, path: Path) -> None:
    path.write_text(json.dumps(asdict(cfg), indent=2))


def new_model(config: ModelConfig, seed: int = 0) -> LamscModel:
    torch.manual_seed(seed)
    return LamscModel(config)


@dataclass
class TrainJob:
    """A model to train from image folders: what ``lamsc train`` does, as one Python call (``train_model``).

    ``data``: image folders, class folders or VOC layouts; ``bundled`` adds scikit-image's photographs and
    ``synthetic`` that many labelled shapes. Classification and segmentation heads follow the labels found.
    ``recipe``: a preset name of PRESETS or a TrainConfig; ``steps`` overrides steps per stage
    (e.g. {"codec": 500}). Bad values raise UserError when the job is made. ``sam_checkpoint``: the SKB that
    segments the images (None: the fallback).
    ``channels``, ``width``, ``segments`` and ``num_levels`` shape a new model (``segments=0, num_levels=1``:
    lamsc's codec with ASI and ASC off, the plain Deep JSCC ablation); ``init`` (a lamsc model to fine-tune, same
    heads) brings its own. ``device``: auto | cpu | cuda[:N]. An ``out`` folder that holds a run resumes it.
    """

    data: list[Path | str] = field(default_factory=list)
    bundled: bool = False
    synthetic: int = 0
    recipe: str | TrainConfig = "default"
    steps: dict = field(default_factory=dict)
    precision: str | None = None          # overrides the recipe's: auto | fp32 | bf16
    distortion: str | None = None         # overrides the recipe's: mse | psnr (reconstruction_loss)
    minutes: float | None = None          # overrides the recipe's wall-clock budget (steps fitted to it; 0: none)
    parts: tuple[str, ...] = ()           # overrides the recipe's: the only parts trained
    seed: int | None = None               # overrides the recipe's: crops, SNRs, noise and a new model's weights
    lr: float | None = None               # overrides the recipe's peak learning rate (cosine to 0 over each stage)
    out: Path | str = Path("lamsc-out/train")
    sam_checkpoint: Path | str | None = None  # SKB for the segments; None: the fallback segmenter
    importance: Path | str | None = None  # folder of experience maps <image>.png for the ASI stage
    init: Path | str | None = None
    reinit: tuple[str, ...] = ()          # parts of ``init`` that start afresh (e.g. "mask_net" to re-learn ASC)
    channels: int = ModelConfig.channels
    width: int = ModelConfig.width
    segments: int = ModelConfig.segments      # K segments into ASI; 0: no ASI (the plain Deep JSCC ablation)
    num_levels: int = ModelConfig.num_levels  # ASC depth levels; 1: every feature always sent (ASC off)
    device: str = "auto"

    def __post_init__(self):  # what can be wrong is refused here, before any image is read or segmented
        if isinstance(self.recipe, str) and self.recipe not in PRESETS:
            raise UserError(f"unknown preset {self.recipe!r}; choose one of {', '.join(PRESETS)}")
        unknown = set(self.steps) - set(STAGES)
        if unknown:
            raise UserError(f"steps for {', '.join(sorted(unknown))}: the stages are {', '.join(STAGES)}")
        distortion = self.distortion or (None if isinstance(self.recipe, str) else self.recipe.distortion)
        if distortion not in (None, *DISTORTIONS):
            raise UserError(f"unknown distortion {distortion!r}; choose one of {', '.join(DISTORTIONS)}")
        if self.precision not in (None, *PRECISIONS):
            raise UserError(f"unknown training precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.minutes is not None and not self.minutes >= 0:
            raise UserError(f"a training budget of {self.minutes} minutes: give a positive number of minutes, or 0 "
                            "for none (the recipe's steps as given)")
        if self.seed is not None and self.seed < 0:
            raise UserError(f"seed {self.seed}: give a seed of 0 or more")
        if self.lr is not None and not 0 < self.lr < 1:
            raise UserError(f"learning rate {self.lr}: give one between 0 and 1 (the recipes use 1e-4 to 3e-4)")
        if self.reinit and self.init is None:
            raise UserError("--reinit names parts of a model to fine-tune: give the model with --init")
        parts = self.recipe_config.parts
        if parts is not None and not parts:
            raise UserError("a recipe with parts=() trains nothing: name the parts to train, or None for all")
        unknown = (set(self.reinit) | set(parts or ()) | set(self.parts)) - set(MODEL_PARTS)
        if unknown:
            raise UserError(f"no model part {', '.join(sorted(unknown))}; the parts are {', '.join(MODEL_PARTS)}")
        trained = self.parts or parts
        if trained and self.init is None:
            raise UserError(f"training only {', '.join(trained)} leaves the rest of a new model at its random "
                            "start: give the model to fine-tune with --init (TrainJob(init=...))")
        fixed = set(self.reinit) - set(trained or MODEL_PARTS)
        if fixed:
            raise UserError(f"--reinit {', '.join(sorted(fixed))} starts it afresh but only {', '.join(trained)} "
                            "train: add it to the trained parts (--train-part) or leave it out of --reinit")
        if not 0 <= self.segments <= 8:
            raise UserError(f"{self.segments} segments: give 0 (no ASI) to 8 (the training cache packs at most 8)")
        if self.num_levels < 1 or self.channels % self.num_levels:
            raise UserError(f"{self.num_levels} ASC depth levels for {self.channels} channels: give a divisor of "
                            "the channels (1: ASC off, every feature sent)")
        if self.importance is not None and not Path(self.importance).is_dir():
            raise UserError(f"importance folder {self.importance} not found; give the folder of <image>.png maps")

    @property
    def recipe_config(self) -> TrainConfig:
        """``recipe`` as a TrainConfig (the preset's, by name), before this job's overrides."""
        return PRESETS[self.recipe] if isinstance(self.recipe, str) else self.recipe


@dataclass(repr=False)
class TrainResult:
    model: Path                 # the trained model's .safetensors (its .json beside it)
    curves: Path                # curves.png: loss and PSNR per stage
    config: ModelConfig
    final: dict                 # per stage, its last history row (loss, PSNR in dB, kept fraction...), or None

    def __repr__(self) -> str:
        codec = self.final.get("asc") or self.final.get("codec") or {}
        psnr = f", PSNR {codec['psnr']:.2f} dB" if "psnr" in codec else ""
        return f"TrainResult({self.model}{psnr})"


def train_model(job: TrainJob, progress=None, segmented=None) -> TrainResult:
    """Train (or resume) a model as ``job`` says; write it, its trainer state and curves to ``job.out``.

    ``progress(stage, step, total, logs)`` follows every step; ``segmented()`` is called per image as the SKB
    segments it. Under ``torchrun --nproc_per_node N`` every process makes the same call: rank 0 segments
    (the others read its ``segments.npz``), reports and writes; see ``train``. Raises UserError for no images,
    an ``init`` model with other heads, and the errors of ``train`` (a TrainJob refuses bad values when it is
    made).
    """
    with process_group(job.device) as (ranks, device):  # one group for segmenting and training
        return _train_model(job, progress if ranks.main else None, segmented if ranks.main else None, device)


def _train_model(job: TrainJob, progress, segmented, device: torch.device) -> TrainResult:
    preset, cfg = job.recipe if isinstance(job.recipe, str) else "custom", job.recipe_config
    cfg = replace(cfg, steps={**cfg.steps, **job.steps}, **({"precision": job.precision} if job.precision else {}),
                  **({"distortion": job.distortion} if job.distortion else {}),
                  **({"minutes": job.minutes} if job.minutes is not None else {}),
                  **({"parts": tuple(job.parts)} if job.parts else {}),
                  **({"seed": job.seed} if job.seed is not None else {}),
                  **({"lr": job.lr} if job.lr is not None else {}))
    images = list(iter_images([Path(d) for d in job.data])) if job.data else []
    if job.bundled:
        images += bundled_photos()
    classes: list[str] = []
    seg_classes = 0
    if job.synthetic:
        images += make_shapes(job.synthetic, seed=cfg.seed)
        classes, seg_classes = list(SHAPE_CLASSES), len(SHAPE_CLASSES) + 1
    if not images:
        raise UserError("no training images; pass --data DIR, --bundled or --synthetic N")
    if any(i.label is not None for i in images) and not job.synthetic:
        seg_classes = 21  # VOC: background + 20 classes
    if any(i.category is not None for i in images) and not job.synthetic:
        classes = sorted({i.name.split("/")[0] for i in images if i.category is not None})
    segmenter = build_segmenter(job.sam_checkpoint)
    config = ModelConfig(channels=job.channels, width=job.width, segments=job.segments, num_levels=job.num_levels,
                         classes=classes, seg_classes=seg_classes,
                         trained={"preset": preset, "images": len(images), "segmenter": segmenter.name,
                                  "data": [Path(d).name for d in job.data] + (["bundled"] if job.bundled else [])
                                  + ([f"synthetic:{job.synthetic}"] if job.synthetic else []), "recipe": asdict(cfg)})
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    prepared = main_first(lambda: prepare(images, segmenter, config.segments,
                                          Path(job.importance) if job.importance else None, segmented,
                                          cache=out / "segments.npz"))
    if job.init is not None:
        start = LamscModel.load(job.init)
        if (start.config.classes, start.config.seg_classes) != (classes, seg_classes):
            raise UserError(f"{job.init} has heads for {start.config.classes or 'no'} classes / "
                            f"{start.config.seg_classes} segmentation classes, unlike this data; fine-tune on data "
                            "with the same labels")
        # the model's folder and name, as "data" records folder names: no path of the machine it trained on
        config = replace(start.config, trained={**config.trained, "init": "/".join(Path(job.init).parts[-2:]),
                                                "init_trained": start.config.trained,
                                                **({"reinit": list(job.reinit)} if job.reinit else {})})
        model = new_model(config, cfg.seed)
        fresh = {k: v for k, v in model.state_dict().items() if k.split(".")[0] in job.reinit}
        model.load_state_dict({**start.state_dict(), **fresh})
    else:
        model = new_model(config, cfg.seed)
    if current().main:
        save_recipe(cfg, out / "recipe.json")
    state = train(model, prepared, cfg, out, progress, device=device)
    final = {s: next((h for h in reversed(state["history"]) if h["stage"] == s), None) for s in STAGES}
    return TrainResult(out / "model.safetensors", out / "curves.png", config, final)
