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

The acceptance rule is set on held-out photographs (``calibrate``): views of each scene cross the link at 0, 10
and 20 dB and are registered against an entry of their own scene from the same camera point and one from another
camera point, and against the entries of every other scene. For each sharpness weight w of
``SHARPNESS_WEIGHTS`` the threshold on the score (agreement + w x peak-to-sidelobe ratio, lamsc.retrieval.align)
is ``THRESHOLD_MARGIN`` above the best score any other scene reached, so on those views retrieval leaves the
receiver's output as it was; the weight kept is the one whose threshold accepts the most own-scene pairs.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lamsc.errors import UserError
from lamsc.retrieval.align import align_all, composite, score
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
THRESHOLD_MARGIN = 0.02  # above the best score of another scene's entry
VIEWS_PER_SCENE = 24     # views sent per training scene
SHARPNESS_WEIGHTS = (0.0, 0.025, 0.05, 0.1)  # candidates for w in the score agreement + w x sharpness
CALIBRATION_VIEWS = 3    # views sent per calibration scene and SNR
CALIBRATION_SNRS = (0.0, 10.0, 20.0)


def delivered(view: np.ndarray, quality: int = REFERENCE_QUALITY) -> np.ndarray:
    """``view`` (H, W, 3) uint8 as a digital link delivers it: a JPEG round trip at ``quality``."""
    buf = io.BytesIO()
    Image.fromarray(view).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


@dataclass
class Example:
    """One view sent (``target``), what arrived (``decoded``), both (H, W, 3) uint8, at ``snr_db``; the entry
    registered onto it (``reference`` float in [0, 1], ``coverage``) and their best score (agreement + w x
    sharpness, at the weight the examples were made with)."""

    target: np.ndarray
    decoded: np.ndarray
    reference: np.ndarray  # the entries registered and composited
    coverage: np.ndarray
    snr_db: float
    score: float
    other_scene: bool = False  # paired with another scene's entries: a wrong match


def link_examples(views: list[View], entries: list[list[np.ndarray]], codec: LamscModel, snrs: list[float],
                  seed: int = 0, other_scene: list[bool] | None = None,
                  sharpness_weight: float = 0.0) -> list[Example]:
    """Each of ``views`` across the codec's link at the matching SNR of ``snrs`` (AWGN, noise seed ``seed`` +
    i), with the matching entries of ``entries`` ((H, W, 3) uint8 each) registered onto what arrived and
    composited (lamsc.retrieval.align.composite), whatever their score (at ``sharpness_weight``); a view no entry
    overlaps enough is left out. ``other_scene``: per view, whether its entries show another scene (default:
    none do)."""
    tx, rx = Transmitter(codec, FallbackSegmenter()), Receiver(codec)
    other_scene = other_scene or [False] * len(views)
    out = []
    for i, (view, group, snr, wrong) in enumerate(zip(views, entries, snrs, other_scene, strict=True)):
        decoded = transmit(view.pixels, tx, rx, Channel("awgn", float(snr)), seed + i).reconstruction.image
        aligned = [a for a in align_all(decoded, group, -np.inf, sharpness_weight) if a.agreement > -1.0]
        if not aligned:
            continue
        reference, coverage = composite(decoded, aligned)
        out.append(Example(view.pixels, decoded, reference, coverage, float(snr), max(a.score for a in aligned),
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


def make_examples(photos: list[NamedImage], codec: LamscModel, views: int, seed: int,
                  sharpness_weight: float = 0.0) -> list[Example]:
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
    return link_examples(sent, entries, codec, snrs, seed, wrongs, sharpness_weight)


def fused_at(examples: list[Example], threshold: float) -> list[Example]:
    """The examples the receiver would fuse at ``threshold``, and every wrong match: a view with its own scene's
    entries when their best score reaches the threshold, a view with another scene's whatever it reached."""
    return [e for e in examples if e.other_scene or e.score >= threshold]


def calibrate(photos: list[NamedImage], codec: LamscModel, seed: int) -> dict:
    """The acceptance rule from views of ``photos`` (held out from training, one scene each) sent at
    CALIBRATION_SNRS: per sharpness weight, the threshold THRESHOLD_MARGIN above the best score of another scene's
    entry; the weight whose threshold accepts the most own-scene pairs (the smallest on a tie) -> the threshold,
    the weight and what they were set on."""
    rng = np.random.default_rng(seed + 1)
    scenes = scenes_of(photos)
    names = list(scenes)
    per_snr = CALIBRATION_VIEWS * len(CALIBRATION_SNRS)
    own, sent = {}, []
    for n, scene in scenes.items():
        views = scene_views(scene, n, 1 + per_snr, rng)
        elsewhere = scene_views(scene, n, 1, rng)[0]  # the same scene from another camera point
        own[n] = [delivered(views[0].pixels), delivered(elsewhere.pixels)]
        sent += [(n, v, snr) for v, snr in zip(views[1:], [s for s in CALIBRATION_SNRS
                                                            for _ in range(CALIBRATION_VIEWS)])]
    tx, rx = Transmitter(codec, FallbackSegmenter()), Receiver(codec)
    right, wrong = [], []  # (agreement, sharpness) of each pair
    for k, (n, view, snr) in enumerate(sent):
        decoded = transmit(view.pixels, tx, rx, Channel("awgn", snr), seed + k).reconstruction.image
        mine = len(own[n])
        entries = own[n] + [own[m][0] for m in names if m != n]
        aligned = align_all(decoded, entries, np.inf)  # registration alone: no light matched (no score reaches inf)
        right += [(a.agreement, a.sharpness) for a in aligned[:mine] if a.agreement > -1.0]
        wrong += [(a.agreement, a.sharpness) for a in aligned[mine:] if a.agreement > -1.0]
    if not wrong:
        raise UserError("no calibration view registered with another scene's entry: give more calibration "
                        "photographs")
    threshold, weight, accepted = acceptance_rule(right, wrong)
    return {"threshold": round(threshold, 4), "sharpness_weight": weight, "own_scene_accepted": accepted,
            "own_scene_pairs": len(right), "other_scene_pairs": len(wrong), "scenes": len(names),
            "snrs": list(CALIBRATION_SNRS), "margin": THRESHOLD_MARGIN,
            "best_other_scene_score": round(threshold - THRESHOLD_MARGIN, 4)}


def acceptance_rule(right: list[tuple[float, float]], wrong: list[tuple[float, float]],
                    weights: tuple[float, ...] = SHARPNESS_WEIGHTS) -> tuple[float, float, int]:
    """(agreement, sharpness) of own-scene pairs ``right`` and other-scene pairs ``wrong`` (at least one) -> the
    threshold, the weight w of ``weights`` and the own-scene pairs it accepts: per w the threshold is
    THRESHOLD_MARGIN above the best score agreement + w x sharpness of ``wrong``; the w accepting the most of
    ``right`` wins, the smallest on a tie."""
    rules = []
    for w in weights:
        threshold = max(score(a, p, w) for a, p in wrong) + THRESHOLD_MARGIN
        rules.append((sum(score(a, p, w) >= threshold for a, p in right), -w, threshold))  # -w: the smaller on a tie
    accepted, minus_w, threshold = max(rules)
    return threshold, -minus_w, accepted


def train_fusion(job: FusionJob, progress=None) -> FusionResult:
    """Train (or resume) the fusion network as ``job`` says and set its threshold; write it (fusion.safetensors
    and fusion.json) and the run's checkpoint to ``job.out``. ``progress(step, total, logs)`` follows steps."""
    torch.manual_seed(job.seed)
    codec = job.codec.eval()
    for p in codec.parameters():
        p.requires_grad_(False)  # frozen: only run
    out = Path(job.out)
    cal = calibrate(job.calibration, codec, job.seed)
    made = make_examples(job.photos, codec, job.views, job.seed, cal["sharpness_weight"])
    examples = fused_at(made, cal["threshold"])
    if not any(not e.other_scene for e in examples):
        raise UserError(f"none of the {len(made)} views sent registers with its scene's entries at the threshold "
                        f"{cal['threshold']:.3f}; give more photographs or views (--views)")
    config = FusionConfig(**{**asdict(job.config), "snr_range": tuple(codec.config.snr_range),
                             "threshold": cal["threshold"], "sharpness_weight": cal["sharpness_weight"]})
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
        return loss, {"psnr_before": float(-10 * torch.log10(before)),
                      "psnr_after": float(-10 * torch.log10(loss.detach()))}

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
