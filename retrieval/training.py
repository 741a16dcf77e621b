"""Training the fusion network with the codec frozen, and setting the receiver's acceptance threshold.

Examples come from scene sequences of real photographs (lamsc.retrieval.scenes): per scene, the first views are
the base's entries, as a link delivers content it keeps (digitally, JPEG at ``REFERENCE_QUALITY``), and later views
cross the codec's link (lamsc.semcom.transmission.transmit: the real Transmitter, channel and Receiver) at an
SNR drawn uniformly from the codec's range; a share of them is paired with another scene's entry instead, so the
network also sees a wrong match it must leave alone. The entries are registered onto what arrived and composited
(lamsc.retrieval.align) as at the receiver, and the network learns, by MSE against the view that was sent, to
turn the pair into the sent view. It learns on pairs like those the receiver fuses: a view paired with its own
scene's entries only when the best of their agreements reaches the threshold (the receiver fuses no others, and
a network also taught on the misregistered pairs below it learns to distrust every reference at low SNR), a
view paired with another scene's at any agreement (so that the rare wrong match that passes the threshold is
left alone). Its composite holds every registered entry, where the receiver's holds only those at the
threshold. It trains in lamsc.semcom.loop.TrainingRun (resumable, checkpointed); the codec is only run, never
trained.

The threshold is set on views of other scenes: each decoded view is registered against the entries of scenes
it does not show, and the threshold is ``THRESHOLD_MARGIN`` above the best agreement any of them reached, so
on those views retrieval leaves the receiver's output as it was.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lamsc.errors import UserError
from lamsc.retrieval.align import align_all, composite
from lamsc.retrieval.fusion import FusionConfig, FusionNet
from lamsc.retrieval.scenes import View, scene_image, scene_views
from lamsc.semcom.channels import Channel
from lamsc.semcom.fallback import FallbackSegmenter
from lamsc.semcom.images import NamedImage
from lamsc.semcom.loop import TrainingRun
from lamsc.semcom.model import LamscModel
from lamsc.semcom.transmission import Receiver, Transmitter, transmit

REFERENCE_QUALITY = 90   # JPEG quality of the content a link keeps (a digital delivery, CRC-checked)
OTHER_SCENE_SHARE = 0.2  # of training views paired with another scene's entry: the network learns to leave those
ENTRIES_PER_VIEW = 2     # earlier views registered and composited onto each sent view, as the Retriever does
THRESHOLD_MARGIN = 0.02  # above the best agreement of another scene's entry
VIEWS_PER_SCENE = 24     # views sent per training scene


def delivered(view: np.ndarray, quality: int = REFERENCE_QUALITY) -> np.ndarray:
    """``view`` (H, W, 3) uint8 as a digital link delivers it: a JPEG round trip at ``quality``."""
    buf = io.BytesIO()
    Image.fromarray(view).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


@dataclass
class Example:
    """One view sent (``target``), what arrived (``decoded``), both (H, W, 3) uint8, at ``snr_db``; the entry
    registered onto it (``reference`` float in [0, 1], ``coverage``) and the agreement."""

    target: np.ndarray
    decoded: np.ndarray
    reference: np.ndarray  # the entries registered and composited
    coverage: np.ndarray
    snr_db: float
    agreement: float
    other_scene: bool = False  # paired with another scene's entries: a wrong match


def link_examples(views: list[View], entries: list[list[np.ndarray]], codec: LamscModel, snrs: list[float],
                  seed: int = 0, other_scene: list[bool] | None = None) -> list[Example]:
    """Each of ``views`` across the codec's link at the matching SNR of ``snrs`` (AWGN, noise seed ``seed`` +
    i), with the matching entries of ``entries`` ((H, W, 3) uint8 each) registered onto what arrived and
    composited (lamsc.retrieval.align.composite), whatever their agreement; a view no entry overlaps enough is
    left out. ``other_scene``: per view, whether its entries show another scene (default: none do)."""
    tx, rx = Transmitter(codec, FallbackSegmenter()), Receiver(codec)
    other_scene = other_scene or [False] * len(views)
    out = []
    for i, (view, group, snr, wrong) in enumerate(zip(views, entries, snrs, other_scene, strict=True)):
        decoded = transmit(view.pixels, tx, rx, Channel("awgn", float(snr)), seed + i).reconstruction.image
        aligned = [a for a in align_all(decoded, group) if a.agreement > -1.0]
        if not aligned:
            continue
        reference, coverage = composite(decoded, aligned)
        out.append(Example(view.pixels, decoded, reference, coverage, float(snr), max(a.agreement for a in aligned),
                           wrong))
    return out


def scenes_of(photos: list[NamedImage]) -> dict[str, np.ndarray]:
    return {p.name: scene_image(p.pixels) for p in photos}


@dataclass
class FusionJob:
    """Train a fusion network on scene sequences of ``photos`` (NamedImages; one scene each) with ``codec``
    frozen: ``views`` later views per scene, ``steps`` optimiser steps of ``batch`` crops of ``crop`` pixels
    at learning rate ``lr``; the threshold is set on ``calibration`` (other photographs, scenes of their own).
    Files go to ``out`` (an ``out`` that holds a run resumes it). Bad values raise UserError when made."""

    photos: list[NamedImage]
    calibration: list[NamedImage]
    codec: LamscModel
    views: int = VIEWS_PER_SCENE
    steps: int = 1500
    batch: int = 8
    crop: int = 64
    lr: float = 2e-3
    seed: int = 0
    out: Path = Path("lamsc-out/fusion")
    config: FusionConfig = field(default_factory=FusionConfig)

    def __post_init__(self):
        if len(self.photos) < 2 or len(self.calibration) < 2:
            raise UserError("fusion training needs at least 2 photographs to train on and 2 to calibrate on")
        if self.crop % 2 or self.crop > 128 or self.steps < 1 or self.batch < 1:
            raise UserError("give an even --crop up to 128 and at least one step of one crop")


@dataclass(repr=False)
class FusionResult:
    network: Path        # the trained network's .safetensors (its .json beside it)
    config: FusionConfig
    final: dict          # the last history row (step, loss, PSNR before and after fusion)

    def __repr__(self) -> str:
        return f"FusionResult({self.network}, threshold {self.config.threshold:.3f})"


def make_examples(photos: list[NamedImage], codec: LamscModel, views: int, seed: int) -> list[Example]:
    """Per photograph: its first ENTRIES_PER_VIEW views kept as entries, ``views`` later ones sent at uniform
    SNRs, each paired with those entries or, for OTHER_SCENE_SHARE of them, with another scene's (what a wrong
    match looks like)."""
    rng = np.random.default_rng(seed)
    scenes = scenes_of(photos)
    others = list(scenes.values())
    sent, firsts, snrs = [], {}, []
    lo, hi = codec.config.snr_range
    for name, scene in scenes.items():
        vs = scene_views(scene, name, views + ENTRIES_PER_VIEW, rng, others=others)
        firsts[name] = [delivered(v.pixels) for v in vs[:ENTRIES_PER_VIEW]]
        sent += vs[ENTRIES_PER_VIEW:]
        snrs += list(rng.uniform(lo, hi, views))
    names = list(firsts)
    entries, wrongs = [], []
    for view in sent:
        other = [n for n in names if n != view.scene]
        wrong = bool(other) and rng.random() < OTHER_SCENE_SHARE
        entries.append(firsts[other[int(rng.integers(len(other)))]] if wrong else firsts[view.scene])
        wrongs.append(wrong)
    return link_examples(sent, entries, codec, snrs, seed, wrongs)


def fused_at(examples: list[Example], threshold: float) -> list[Example]:
    """The examples the receiver would fuse at ``threshold``, and every wrong match: a view with its own scene's
    entries when their best agreement reaches the threshold, a view with another scene's whatever it reached."""
    return [e for e in examples if e.other_scene or e.agreement >= threshold]


def calibrate(photos: list[NamedImage], codec: LamscModel, seed: int) -> dict:
    """The best agreement of another scene's entry on views of ``photos`` sent at 0, 10 and 20 dB -> the
    threshold and what it was set on."""
    rng = np.random.default_rng(seed + 1)
    scenes = scenes_of(photos)
    names = list(scenes)
    views = {n: scene_views(s, n, 2, rng) for n, s in scenes.items()}
    sent, entries, snrs = [], [], []
    for i, n in enumerate(names):
        for snr in (0.0, 10.0, 20.0):
            for other in names[:i] + names[i + 1:]:
                sent.append(views[n][1])
                entries.append(delivered(views[other][0].pixels))
                snrs.append(snr)
    tx, rx = Transmitter(codec, FallbackSegmenter()), Receiver(codec)
    decoded, others = {}, {}
    for k, (view, entry, snr) in enumerate(zip(sent, entries, snrs)):
        key = (view.scene, snr)
        if key not in decoded:
            decoded[key] = transmit(view.pixels, tx, rx, Channel("awgn", snr), seed + k).reconstruction.image
        others.setdefault(key, []).append(entry)
    # registration alone: each decoded view transformed once, and no light matched (no agreement reaches inf)
    worst = max((a.agreement for key, group in others.items() for a in align_all(decoded[key], group, np.inf)),
                default=-1.0)
    return {"threshold": round(min(worst + THRESHOLD_MARGIN, 0.999), 4), "best_other_scene_agreement": worst,
            "pairs": len(sent), "scenes": len(names), "margin": THRESHOLD_MARGIN}


def train_fusion(job: FusionJob, progress=None) -> FusionResult:
    """Train (or resume) the fusion network as ``job`` says and set its threshold; write it (fusion.safetensors
    and fusion.json) and the run's checkpoint to ``job.out``. ``progress(step, total, logs)`` follows steps."""
    torch.manual_seed(job.seed)
    codec = job.codec.eval()
    for p in codec.parameters():
        p.requires_grad_(False)  # frozen: only run
    out = Path(job.out)
    cal = calibrate(job.calibration, codec, job.seed)
    made = make_examples(job.photos, codec, job.views, job.seed)
    examples = fused_at(made, cal["threshold"])
    if not any(not e.other_scene for e in examples):
        raise UserError(f"none of the {len(made)} views sent registers with its scene's entries at the threshold "
                        f"{cal['threshold']:.3f}; give more photographs or views (--views)")
    config = FusionConfig(**{**asdict(job.config), "snr_range": tuple(codec.config.snr_range),
                             "threshold": cal["threshold"]})
    net = FusionNet(config)
    stack = lambda f: torch.from_numpy(np.stack([f(e) for e in examples]).astype(np.float32))
    target = stack(lambda e: e.target / 255.0).permute(0, 3, 1, 2)
    decoded = stack(lambda e: e.decoded / 255.0).permute(0, 3, 1, 2)
    reference = stack(lambda e: e.reference).permute(0, 3, 1, 2)
    coverage = stack(lambda e: e.coverage)[:, None]
    snr = torch.tensor([e.snr_db for e in examples], dtype=torch.float32)
    gen = torch.Generator().manual_seed(job.seed)
    H, W = target.shape[-2:]

    def step():
        i = torch.randint(len(examples), (job.batch,), generator=gen)
        y = int(torch.randint((H - job.crop) // 2 + 1, (1,), generator=gen)) * 2
        x = int(torch.randint((W - job.crop) // 2 + 1, (1,), generator=gen)) * 2
        cut = lambda t: t[i, :, y: y + job.crop, x: x + job.crop]
        d, t = cut(decoded), cut(target)
        refined = net(d, cut(reference), cut(coverage), snr[i])
        loss = torch.nn.functional.mse_loss(refined, t)
        before = torch.nn.functional.mse_loss(d, t).detach()
        return loss, {"psnr_before": float(-10 * torch.log10(before)), "psnr_after": float(-10 * torch.log10(loss.detach()))}

    weights = out / "fusion.safetensors"

    def on_checkpoint():
        net.config.trained = {"photos": len(job.photos), "views_per_scene": job.views, "views_sent": len(made),
                              "examples": len(examples),
                              "examples_rule": "own scene at the threshold, other scenes all",
                              "steps": job.steps, "batch": job.batch, "crop": job.crop, "lr": job.lr,
                              "reference": f"jpeg q{REFERENCE_QUALITY}", "entries_per_view": ENTRIES_PER_VIEW,
                              "other_scene_share": OTHER_SCENE_SHARE, "calibration": cal,
                              "codec": codec.config.trained.get("preset", "custom")}
        net.save(weights)

    run = TrainingRun(out / "trainer.pt", net, gen, on_checkpoint=on_checkpoint, every=250, device="cpu",
                      precision="fp32", weights=weights)
    run.train(job.steps, step, torch.optim.Adam(net.parameters(), lr=job.lr), job.lr, warmup=50, progress=progress)
    history = run.state["history"]
    return FusionResult(weights, net.config, history[-1] if history else {})
