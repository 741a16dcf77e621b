"""Compress a model to a budget on a target, as one Python call: ``compress_to_budget(CompressConfig(...))``.

What ``lamsc compress`` does, without the command line: load the model, plan (build, cost and score every
candidate, choose one; lamsc.compress.plan for the codec, lamsc.compress.skb for the SKB image encoder),
write the chosen model beside its deployable form, and write the report (lamsc.compress.report). ::

    from lamsc.compress import CompressConfig, compress_to_budget

    result = compress_to_budget(CompressConfig(budget="latency-ms=60%", target="cpu", ratios=(0.5,), steps=40))
    result.chosen           # the chosen Candidate, or None (then result.shortfall says why)
    result.paths["model"]   # the chosen model, written under CompressConfig.out

Files under ``out``: ``compress.json``, ``report.md``, ``pareto.png``, ``candidates/`` (every candidate),
and with a choice the codec's ``model.safetensors`` + ``model.json`` and ``bundle/``, or the SKB's
``skb.safetensors`` + ``skb.json`` and ``skb_encoder.onnx``.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence, Union

from lamsc.compress import report
from lamsc.compress.budget import Budget
from lamsc.compress.cost import Target
from lamsc.compress.distill import DistillConfig
from lamsc.compress.plan import Candidate, Plan, PlanConfig, plan_codec
from lamsc.compress.skb import SkbPlanConfig, plan_skb
from lamsc.errors import UserError
from lamsc.semcom.images import NamedImage, bundled_photos, iter_images
from lamsc.semcom.model import LamscModel, load_model
from lamsc.semcom.sam_checkpoint import load_sam
from lamsc.semcom.skb import build_segmenter
from lamsc.semcom.skb_student import check_resize
from lamsc.semcom.training import prepare

CALIBRATION_PHOTOS = 16  # of the distillation photographs, for int8: more add accuracy-control time, not range
PRECISIONS = ("fp32", "fp16", "int8")

Photos = Sequence[Union[str, Path, NamedImage]]
# progress(message, step=None): a line to show (message), or with message None a step (done, total, logs) of
# the work under way: per photograph segmented for distillation (logs {}), or per distillation step (logs
# with "loss", and "psnr_gap_db" for the codec or "cosine" for the SKB encoder).
Progress = Callable[..., None]


@dataclass
class CompressConfig:
    """What to compress, to which budget, on which target, trying which candidates.

    The codec (a lamsc model) is compressed unless ``sam`` names a SAM/MobileSAM checkpoint, whose image
    encoder (the SKB) is compressed instead. Values are checked on construction (``UserError`` with the
    command-line flag's name on a bad one), before any work.
    """

    budget: Union[Budget, str]  # limits per image, e.g. "latency-ms=60,params=400k" (lamsc.compress.budget)
    target: Union[Target, str] = "cpu"  # cpu | gpu (measured here) | a Jetson profile (cost model)
    model: Union[Path, str, LamscModel, None] = None  # the codec: a file (.safetensors + .json), a model in
    #                                                   memory, or None for the shipped default
    sam: Union[Path, str, None] = None  # compress this SAM/MobileSAM checkpoint's image encoder instead
    out: Union[Path, str] = Path("lamsc-out/compressed")  # folder for the chosen model and the report
    ratios: Sequence[float] = (0.0, 0.25, 0.4, 0.55)  # prune ratios in [0, 1); 0 (the original) always added
    precisions: Sequence[str] = ("fp32", "int8")  # of fp32, fp16, int8; fp32 always, fp16 added on GPU/Jetson
    steps: int = 1000           # distillation steps per compressed candidate
    data: Photos | None = None  # photographs to distil and calibrate int8 on (files, folders or NamedImages);
    #                             None: the bundled photographs
    images: Photos | None = None  # photographs to score on, likewise; None: the bundled photographs
    snr_db: float = 10.0        # codec: AWGN SNR (dB) at which candidates are scored
    int8_max_drop: float | None = 0.1  # codec: dB of link PSNR each int8 graph may lose (NNCF accuracy control)
    max_rate_increase: float | None = 0.05  # codec: how much more than the teacher a candidate may send
    #                                         (mean payload bits per photograph, 0.05 = 5%); None: no limit
    students: Sequence[int] = (768,)  # SKB: ResNet-18 student input sizes (pixels); () for none
    resize: Sequence[int] = (448,)    # SKB on MobileSAM: input sizes for the teacher's own TinyViT; () for none
    repeats: int | None = None  # timed rounds per candidate on a measured target (the median is kept), after
    #                             the warm-up rounds; None: the planner's (PlanConfig, SkbPlanConfig)

    def __post_init__(self):
        if self.sam is not None and self.model is not None:
            raise UserError("give a lamsc model to compress or --sam with a SAM checkpoint, not both")
        self.budget = self.budget if isinstance(self.budget, Budget) else Budget.parse(self.budget)
        self.target = self.target if isinstance(self.target, Target) else Target(self.target)
        self.out = Path(self.out)
        self.ratios = tuple(sorted({0.0, *(float(r) for r in self.ratios)}))
        if any(not 0 <= r < 1 for r in self.ratios):
            raise UserError("--ratios: prune ratios must be in [0, 1)")
        self.precisions = tuple(self.precisions)
        if not self.precisions or any(p not in PRECISIONS for p in self.precisions):
            raise UserError(f"--precisions {','.join(self.precisions)!r}: choose from {', '.join(PRECISIONS)}")
        if self.repeats is not None and self.repeats < 1:
            raise UserError(f"--repeats {self.repeats}: give how many timed rounds per candidate, 1 or more")
        if self.steps < 0:
            raise UserError(f"--steps {self.steps}: give how many distillation steps, 0 or more")
        if self.max_rate_increase is not None and self.max_rate_increase < 0:
            raise UserError(f"--max-rate-increase {self.max_rate_increase:g} is negative: give how much more than "
                            "the teacher a candidate may send, e.g. 0.05 for 5%")
        if self.sam is not None:  # checked here, before the teacher's slow embeddings
            self.students = _sizes(self.students, "--students")
            self.resize = _sizes(self.resize, "--resize")
            for size in self.resize:
                check_resize(size)

    @property
    def part(self) -> str:
        """What is compressed: "codec" or "skb"."""
        return "codec" if self.sam is None else "skb"

    def __repr__(self) -> str:
        """Field by field, with a model in memory and photographs in memory named rather than printed."""
        def shown(name, value):
            if isinstance(value, LamscModel):
                return "<LamscModel in memory>"
            if name in ("data", "images") and value:
                return [v.name if isinstance(v, NamedImage) else str(v) for v in value]
            if isinstance(value, Budget):
                return value.describe()
            return value.name if isinstance(value, Target) else value

        fields = ", ".join(f"{f.name}={shown(f.name, getattr(self, f.name))!r}" for f in dataclasses.fields(self))
        return f"CompressConfig({fields})"


@dataclass(repr=False)
class CompressResult:
    """What ``compress_to_budget`` found and wrote.

    ``plan`` holds every candidate (cost per image: latency ms, energy mJ, params, bytes, MACs; quality: PSNR
    dB / SSIM / bits for the codec, embedding cosine / mask IoU for the SKB) and the choice. ``pareto`` is the
    Pareto front on latency and quality, fastest first, one dict per candidate. ``paths`` names the files
    written: "json" (compress.json), "report" (report.md), "candidates" (folder), and with a choice "model"
    plus "bundle" (codec bundle folder) or "onnx" (SKB encoder). ``figures`` names the plots: "pareto".
    ``results`` is what compress.json holds under "results" (JSON-ready).
    """

    plan: Plan
    pareto: list[dict]
    paths: dict[str, Path]
    figures: dict[str, Path]
    results: dict = field(default_factory=dict)

    @property
    def chosen(self) -> Candidate | None:
        return self.plan.chosen

    @property
    def shortfall(self) -> str:
        """With nothing chosen: why, in one line, naming the closest candidate; "" otherwise."""
        return self.plan.shortfall

    def __repr__(self) -> str:
        p, q = self.plan, self.plan.metric
        head = f"CompressResult(target={p.target.name!r}, budget={p.budget.describe()!r}, "
        teacher = p.teacher
        if p.chosen is None:
            middle = f"chosen=None, shortfall={p.shortfall!r}, "
        else:
            c = p.chosen
            middle = (f"chosen={c.name!r}, latency_ms={c.cost.latency_ms:.1f} (teacher {teacher.cost.latency_ms:.1f}), "
                      f"{q}={c.quality[q]:.4g} (teacher {teacher.quality[q]:.4g}), ")
        return (head + middle + f"candidates={len(p.candidates)}, pareto={[r['candidate'] for r in self.pareto]}, "
                f"out={str(self.paths['json'].parent)!r})")


def compress_to_budget(config: CompressConfig, progress: Progress | None = None) -> CompressResult:
    """Compress ``config``'s model to its budget on its target; write the chosen model and the report.

    Every candidate is built under ``config.out / "candidates"`` (distillation resumes from what is there),
    costed per image on the target (latency ms and energy mJ measured on cpu/gpu, else the cost model;
    params, bytes, MACs) and scored (codec: the whole link's PSNR in dB at ``snr_db``; SKB: embedding cosine
    and mask IoU against the original). The choice: the best quality within the budget that keeps the
    planner's requirements (lamsc.compress.choice). With nothing chosen the report is still written and the
    result's ``chosen`` is None, ``shortfall`` saying why.

    ``progress(message, step=None)`` is told what happens (see ``Progress``); None: nothing is said.

    Raises UserError when the model or photographs cannot be read, when no candidate can meet the budget
    (checked before any distillation, from lower bounds on each candidate's cost), or when the uncompressed
    model cannot be exported.
    """
    say = progress or (lambda *a, **k: None)
    train_photos = _photos(config.data)
    evaluation = _photos(config.images)
    run = _compress_codec if config.sam is None else _compress_skb
    plan, extra = run(config, train_photos, evaluation, say)
    out = config.out
    results = report.write(plan, out, extra)
    paths = {"json": out / "compress.json", "report": out / "report.md", "candidates": out / "candidates",
             **{k: Path(results[k]) for k in ("model", "bundle", "onnx") if k in results}}
    front = sorted(plan.pareto(), key=lambda c: c.cost.latency_ms)
    pareto = [{"candidate": c.name, "precision": c.precision,
               **{k: v for k, v in c.cost.to_dict().items() if k != "how"},
               plan.metric: c.quality[plan.metric], "chosen": c is plan.chosen} for c in front]
    return CompressResult(plan, pareto, paths, {"pareto": out / "pareto.png"}, results)


def _compress_codec(config: CompressConfig, train_photos: list[NamedImage], evaluation: list[NamedImage],
                    say: Progress) -> tuple[Plan, dict]:
    cfg = PlanConfig(ratios=config.ratios, precisions=config.precisions, distill=DistillConfig(steps=config.steps),
                     snr_db=config.snr_db, int8_max_drop=config.int8_max_drop,
                     max_rate_increase=config.max_rate_increase)
    if config.repeats is not None:
        cfg = dataclasses.replace(cfg, repeats=config.repeats)
    teacher = config.model if isinstance(config.model, LamscModel) else load_model(config.model)
    source = ("a model given in memory" if isinstance(config.model, LamscModel) else
              str(config.model) if config.model else "shipped default")
    segmenter = build_segmenter(None)
    say(f"budget: {config.budget.describe()} on {config.target.name}; {len(cfg.ratios)} prune ratios x "
        f"{', '.join(cfg.precisions)}; distil on {len(train_photos)}, score on {len(evaluation)} photographs")
    say("SKB segments for distillation")
    done = iter(range(1, len(train_photos) + 1))
    prepared = prepare(train_photos, segmenter, teacher.config.segments, None,
                       lambda: say(None, step=(next(done), len(train_photos), {})))
    plan = plan_codec(teacher, config.budget, config.target, prepared, evaluation, segmenter, cfg,
                      config.out / "candidates", say, calibration=train_photos[:CALIBRATION_PHOTOS])
    extra = {"checkpoint": source, "distilled_on": _described(config.data), "budget_text": plan.budget.describe(),
             "plan": dataclasses.asdict(cfg)}
    if plan.chosen is not None:
        chosen = load_model(plan.chosen.model)
        chosen.config = dataclasses.replace(chosen.config, trained={
            **chosen.config.trained, "compressed": {"from": source, "candidate": plan.chosen.name,
                                                    "budget": plan.budget.to_dict(), "target": config.target.name}})
        extra["model"] = str(chosen.save(config.out / "model"))
        bundle = config.out / "bundle"
        if bundle.exists():
            shutil.rmtree(bundle)
        shutil.copytree(plan.chosen.bundle, bundle)
        extra["bundle"] = str(bundle)
    return plan, extra


def _compress_skb(config: CompressConfig, train_photos: list[NamedImage], evaluation: list[NamedImage],
                  say: Progress) -> tuple[Plan, dict]:
    cfg = SkbPlanConfig(ratios=config.ratios, students=config.students, resized=config.resize,
                        precisions=config.precisions)
    cfg = dataclasses.replace(cfg, distill=dataclasses.replace(cfg.distill, steps=config.steps))
    if config.repeats is not None:
        cfg = dataclasses.replace(cfg, repeats=config.repeats)
    teacher, arch = load_sam(config.sam)
    say(f"SKB {arch.describe()}: budget {config.budget.describe()} on {config.target.name}; distil on "
        f"{len(train_photos)}, score on {len(evaluation)} photographs")
    out = config.out
    plan = plan_skb(teacher, arch, config.budget, config.target, train_photos, evaluation, cfg, out / "candidates",
                    say)
    extra = {"checkpoint": str(config.sam), "part": "skb", "budget_text": plan.budget.describe(),
             "distilled_on": _described(config.data), "plan": dataclasses.asdict(cfg)}
    if plan.chosen is not None:
        for suffix in (".safetensors", ".json"):
            shutil.copy(plan.chosen.model.with_suffix(suffix), (out / "skb").with_suffix(suffix))
        shutil.copy(plan.chosen.bundle, out / "skb_encoder.onnx")  # the encoder at the chosen precision
        extra["model"] = str((out / "skb").with_suffix(".safetensors"))
        extra["onnx"] = str(out / "skb_encoder.onnx")
    return plan, extra


def _photos(given: Photos | None) -> list[NamedImage]:
    """The photographs ``given`` (in order; a folder stands for all of its own), or the bundled ones."""
    if not given:
        return bundled_photos()
    out = []
    for p in given:
        out.extend([p] if isinstance(p, NamedImage) else iter_images([p]))
    return out


def _described(given: Photos | None):
    """What compress.json says the candidates were distilled on."""
    if not given:
        return "bundled photographs"
    return [p.name if isinstance(p, NamedImage) else str(p) for p in given]


def _sizes(values: Sequence[float], flag: str) -> tuple[int, ...]:
    """Whole-pixel input sizes."""
    if any(v != int(v) or v <= 0 for v in values):
        raise UserError(f"{flag} {','.join(f'{v:g}' for v in values)!r}: input sizes are positive whole numbers "
                        "of pixels, e.g. 448,512")
    return tuple(int(v) for v in values)
