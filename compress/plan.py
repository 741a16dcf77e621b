"""Planning: search prune ratios and precisions, cost and score every candidate, pick the best in budget.

Each codec candidate is the model pruned at one ratio (lamsc.compress.prune), distilled from the
uncompressed teacher (lamsc.compress.distill), exported to a verified bundle at one precision
(lamsc.export.bundle; int8 through NNCF), then
- costed on the target (lamsc.compress.cost: ONNX Runtime measured here, or the cost model), and
- scored end to end, as deployed: the bundle's graphs in ONNX Runtime, the payload through AWGN at
  ``snr_db``, PSNR and SSIM of the reconstruction against the photograph.
The teacher itself is candidate ``prune-0.00-fp32``, costed and scored in the same run. The choice follows
lamsc.compress.choice's rule with PSNR as the figure and one requirement (``codec_rule``): the highest PSNR
among the candidates within budget that send at most ``max_rate_increase`` more payload bits per photograph
than the teacher (the ASC depth decides how much is sent, and a compressed model that sends more buys PSNR
with bandwidth); with none, the plan says which came closest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lamsc.compress.budget import Budget, Cost
from lamsc.compress.calibration import BYTES
from lamsc.compress.choice import Choice, Requirement, Rule
from lamsc.compress.cost import Target, cost_of, count_work, measure_onnx
from lamsc.compress.distill import DistillConfig, distil_codec
from lamsc.compress.prune import count_parameters, prune_codec
from lamsc.errors import UserError
from lamsc.export.bundle import Int8Options, write_bundle
from lamsc.runtime.backends import OnnxRuntimeBackend
from lamsc.semcom.backend import Backend
from lamsc.semcom.channels import Channel
from lamsc.semcom.graphs import model_graphs
from lamsc.semcom.images import NamedImage
from lamsc.semcom.metrics import mean_defined
from lamsc.semcom.config import DOWNSAMPLING
from lamsc.semcom.model import LamscModel
from lamsc.semcom.segmenter import CachedSegmenter, Segmenter
from lamsc.semcom.training import TrainingImage
from lamsc.semcom.transmission import Receiver, Transmitter, transmit


@dataclass
class PlanConfig:
    ratios: tuple[float, ...] = (0.0, 0.25, 0.4, 0.55)
    precisions: tuple[str, ...] = ("fp32", "int8")
    distill: DistillConfig = field(default_factory=DistillConfig)
    snr_db: float = 10.0
    size: int = 512             # latency is measured on a size x size image
    repeats: int = 7
    int8_max_drop: float | None = 0.1  # dB of noise-free link PSNR each int8 graph may lose (NNCF accuracy control)
    # How much more than the teacher a candidate may send (mean payload bits per photograph). Measured on the
    # default codec: pruned and distilled students sent 2-5% more on average, +77% or -26% on single photographs.
    max_rate_increase: float | None = 0.05


@dataclass
class Candidate:
    name: str
    ratio: float
    precision: str
    cost: Cost | None = None
    quality: dict = field(default_factory=dict)   # psnr, ssim (dB, 0..1), bits per image, per-image lists
    cost_model_check: dict = field(default_factory=dict)
    bundle: Path | None = None
    model: Path | None = None
    rejected: str = ""          # why it could not be built (e.g. int8 verification failed)
    workload: dict = field(default_factory=dict, repr=False)  # files, feeds, MACs, params: what is costed

    def to_dict(self) -> dict:
        return {"name": self.name, "ratio": self.ratio, "precision": self.precision,
                "cost": self.cost.to_dict() if self.cost else None, "quality": self.quality,
                "cost_model_check": self.cost_model_check, "bundle": str(self.bundle) if self.bundle else None,
                "model": str(self.model) if self.model else None, "rejected": self.rejected}


@dataclass
class Plan:
    """Every candidate of one planning run (the teacher first), costed and scored, and the choice among them."""

    budget: Budget              # absolute limits: relative ones resolved against the teacher's cost
    target: Target
    candidates: list[Candidate]
    choice: Choice
    metric: str = "psnr"        # the quality figure the plan maximises (psnr for the codec, cosine for the SKB)
    max_rate_increase: float | None = None  # codec: how much more than the teacher a candidate may send

    @property
    def chosen(self) -> Candidate | None:
        return self.choice.chosen

    @property
    def closest(self) -> Candidate | None:
        return self.choice.closest

    @property
    def shortfall(self) -> str:
        """With nothing chosen: why, in one line, naming the closest candidate; "" otherwise."""
        return self.choice.shortfall

    @property
    def teacher(self) -> Candidate:
        return self.candidates[0]

    def pareto(self) -> list[Candidate]:
        """Candidates no other beats on both latency and quality (lamsc.compress.choice.pareto_front)."""
        return self.choice.front

    def __repr__(self) -> str:
        chosen = self.chosen.name if self.chosen else None
        return (f"Plan(target={self.target.name!r}, budget={self.budget.describe()!r}, candidates="
                f"{[c.name for c in self.candidates]}, chosen={chosen!r}"
                + (f", shortfall={self.shortfall!r}" if chosen is None else "") + ")")


def candidate_precisions(cfg, target: Target) -> tuple[str, ...]:
    """The precisions asked for in ``cfg``, fp32 first and always (the teacher's fp32 is what relative
    budgets and quality are measured against), fp16 added where the target runs it natively (GPUs and
    Jetsons, not this CPU's ONNX Runtime)."""
    asked = {"fp32", *cfg.precisions} | ({"fp16"} if target.name != "cpu" else set())
    return tuple(p for p in ("fp32", "fp16", "int8") if p in asked)


def plan_codec(teacher: LamscModel, budget: Budget, target: Target, train: list[TrainingImage],
               evaluation: list[NamedImage], segmenter: Segmenter, cfg: PlanConfig, work: Path,
               progress=None, calibration: list[NamedImage] | None = None) -> Plan:
    """Build, cost and score every candidate under ``work``; choose one.

    ``calibration`` photographs (default: ``evaluation``) are what int8 candidates are calibrated and
    accuracy-controlled on; photographs apart from those they are scored on keep the score honest.
    """
    say = progress or (lambda *a, **k: None)
    if 0.0 not in cfg.ratios:
        raise ValueError("the ratios must include 0.0: the teacher is costed and scored as a candidate")
    say("checking that the budget is within reach")
    pruned = pruned_within_reach(teacher, budget, target, cfg, evaluation, work)
    # every candidate is verified and scored on the same SKB segments, each photograph segmented once
    segmenter = CachedSegmenter(segmenter)
    candidates = []
    for ratio in sorted(cfg.ratios):
        folder = work / f"prune-{ratio:.2f}"
        student = teacher
        if ratio > 0:
            say(f"pruning {ratio:.0%} and distilling ({cfg.distill.steps} steps)")
            student = distil_codec(teacher, pruned[ratio], train, cfg.distill, folder / "distill",
                                   progress=lambda s, n, logs: say(None, step=(s, n, logs)))
        model_file = student.save(folder / "model")
        for precision in candidate_precisions(cfg, target):
            c = Candidate(f"prune-{ratio:.2f}-{precision}", ratio, precision, model=model_file)
            say(f"{c.name}: export, verify, cost and score")
            try:
                evaluate(c, student, target, evaluation, segmenter, cfg, folder / f"bundle-{precision}", calibration)
            except UserError as e:  # an export the verification refuses is a rejected candidate, not a crash
                c.rejected = str(e)
            candidates.append(c)
    if candidates[0].rejected:
        raise UserError(f"the uncompressed model could not be exported: {candidates[0].rejected}")
    built = [c for c in candidates if not c.rejected]
    say(f"costing {len(built)} candidates on {target.name}")
    cost_all(built, target, cfg.repeats)
    budget = budget.resolve(candidates[0].cost)
    for c in built:
        c.quality["bits_x_teacher"] = round(c.quality["bits"] / candidates[0].quality["bits"], 4)
    rule = codec_rule(cfg.max_rate_increase)
    return Plan(budget, target, candidates, rule.choose(built, budget), rule.metric, cfg.max_rate_increase)


def codec_rule(max_rate_increase: float | None) -> Rule:
    """The codec's choice rule: the highest PSNR (dB) within budget, sending at most ``max_rate_increase``
    (a fraction: 0.05 = 5%) more mean payload bits per photograph than the teacher; None: no limit on bits."""
    if max_rate_increase is None:
        return Rule("psnr")

    def explain(in_budget: list[Candidate], best: Candidate, budget: Budget) -> str:
        rates = ", ".join(f"{c.name} {c.quality['bits_x_teacher']:.2f}x" for c in in_budget)
        return (f"every candidate within budget sends over {max_rate_increase:.0%} more bits than the "
                f"teacher ({rates}); distil longer (--steps) or allow more (--max-rate-increase)")

    return Rule("psnr", (Requirement("bits_x_teacher", 1 + max_rate_increase, at_most=True,
                                     label=f"sends > +{max_rate_increase:.0%}"),), explain)


def evaluate(c: Candidate, model: LamscModel, target: Target, evaluation: list[NamedImage], segmenter: Segmenter,
             cfg: PlanConfig, bundle_dir: Path, calibration: list[NamedImage] | None = None) -> None:
    """Export ``model`` at the candidate's precision, then cost and score it (fills ``c`` in)."""
    int8 = Int8Options("onnxruntime" if target.name == "cpu" else "tensorrt", calibration, cfg.int8_max_drop)
    bundle = write_bundle(model, bundle_dir, c.precision, segmenter=segmenter, images=evaluation, int8=int8)
    c.bundle = bundle_dir
    c.workload = workload(model, cfg, [bundle.path("transmitter"), bundle.path("receiver")])
    c.quality = link_quality(OnnxRuntimeBackend(bundle), evaluation, segmenter, cfg.snr_db)


def workload(model: LamscModel, cfg: PlanConfig, files: list[Path] | None = None) -> dict:
    """What is costed: the transmitter and receiver graph ``files``, their feeds for a ``cfg.size`` square
    image with everything sent (the receiver's largest workload), their work and the model's parameters."""
    graphs = model_graphs(model)
    tx_in = graphs["transmitter"].example(cfg.size, cfg.size)
    side = cfg.size // DOWNSAMPLING
    rx_in = (torch.randn(1, model.config.channels, side, side),
             torch.full((1, side, side), model.config.num_levels, dtype=torch.long), tx_in[2])
    return {"files": files or [],
            "feeds": [{t.name: x.numpy() for t, x in zip(graphs[g].spec().inputs, inputs)}
                      for g, inputs in (("transmitter", tx_in), ("receiver", rx_in))],
            "work": count_work(graphs["transmitter"], tx_in) + count_work(graphs["receiver"], rx_in),
            "params": count_parameters(model)}


# How much a precision may speed a model up over fp32 (its weights' width), and a further factor for timing noise
# and for what the width misses (the calibrated Jetson model expects int8 up to about 5x fp32 on compute-bound
# layers): together they keep a latency or energy floor a bound, never an estimate.
PRECISION_GAIN_BOUND = {p: BYTES["fp32"] / BYTES[p] for p in BYTES}
FLOOR_MARGIN = 2.0


def pruned_within_reach(teacher: LamscModel, budget: Budget, target: Target, cfg: PlanConfig,
                        images: list[NamedImage], work: Path) -> dict[float, LamscModel]:
    """Each ratio's pruned model (undistilled), after checking that some candidate can meet ``budget``.

    Runs before any distillation. A candidate's parameters, MACs and bytes are its pruned model's
    (distillation changes no shape); its latency and energy are at least the teacher's, measured (or
    estimated) here at fp32, scaled by the candidate's share of the teacher's MACs and divided by
    PRECISION_GAIN_BOUND and FLOOR_MARGIN. Raises UserError when every candidate's floor is over budget.
    """
    bundle = write_bundle(teacher, work / "teacher-fp32", "fp32", images=images[:1])
    teacher_load = workload(teacher, cfg, [bundle.path("transmitter"), bundle.path("receiver")])
    # a floor needs the teacher's latency roughly (FLOOR_MARGIN covers the noise): at most 3 timed rounds
    rounds = min(3, cfg.repeats)
    measured = measure_onnx([(teacher_load["files"], teacher_load["feeds"])], target, rounds, 1)[0] \
        if target.measured else None
    teacher_cost, _ = cost_of(teacher_load["files"], teacher_load["work"], teacher_load["params"], "fp32", target,
                              measured)
    limits = budget.resolve(teacher_cost)
    pruned, floors = {}, []
    for ratio in sorted(cfg.ratios):
        model = prune_codec(teacher, ratio) if ratio > 0 else teacher
        pruned[ratio] = model
        load = workload(model, cfg)
        share = load["work"].macs / teacher_load["work"].macs
        for precision in candidate_precisions(cfg, target):
            scale = share / PRECISION_GAIN_BOUND[precision] / FLOOR_MARGIN
            floors.append((f"prune-{ratio:.2f}-{precision}",
                           Cost(teacher_cost.latency_ms * scale, teacher_cost.energy_mj * scale, load["params"],
                                load["params"] * BYTES[precision], load["work"].macs, "lower bound")))
    if any(limits.meets(floor) for _, floor in floors):
        return pruned
    name, floor = min(floors, key=lambda f: limits.excess(f[1]))
    raise UserError(f"no candidate can meet the budget ({limits.describe()}): the nearest, {name}, costs at least "
                    f"{floor.describe()} (a bound from the original's {teacher_cost.latency_ms:.1f} ms); relax the "
                    "budget or add a larger prune ratio (--ratios)")


def cost_all(candidates: list[Candidate], target: Target, repeats: int) -> None:
    """Cost every candidate; on measured targets all are timed in one interleaved pass."""
    measured = (measure_onnx([(c.workload["files"], c.workload["feeds"]) for c in candidates], target, repeats)
                if target.measured else [None] * len(candidates))
    for c, m in zip(candidates, measured):
        w = c.workload
        c.cost, c.cost_model_check = cost_of(w["files"], w["work"], w["params"], c.precision, target, m)


def link_quality(backend: Backend, evaluation: list[NamedImage], segmenter: Segmenter, snr_db: float) -> dict:
    """Mean PSNR/SSIM of the whole link (transmitter graph, payload, AWGN, receiver graph) per photograph."""
    tx, rx = Transmitter(backend, segmenter, snr_db=snr_db), Receiver(backend)
    psnr, ssim, bits = [], [], []
    for i, item in enumerate(evaluation):
        result = transmit(item.pixels, tx, rx, Channel("awgn", snr_db), seed=i)
        psnr.append(result.psnr)
        ssim.append(result.ssim)
        bits.append(result.bits)
    # SSIM is undefined (NaN) on images under its window: the mean is over those it is defined on
    return {"psnr": float(np.mean(psnr)), "ssim": mean_defined(ssim), "bits": float(np.mean(bits)),
            "snr_db": snr_db, "per_image_psnr": [round(p, 3) for p in psnr], "per_image_bits": bits,
            "images": [i.name for i in evaluation]}
