"""Compressing the SKB image encoder: pruned and student candidates, distilled, costed and scored.

Models: the teacher itself; the teacher pruned at each ratio (lamsc.compress.prune_sam); MobileSAM's
TinyViT at each reduced input size (lamsc.semcom.skb_student.ResizedTinyViT); a ResNet-18 student
(NanoSAM's route) at each input size. Every compressed model is distilled from the teacher's embeddings
on the photographs (lamsc.compress.distill; pruned models are fine-tuned from the teacher's weights at
``finetune_lr``, a resized TinyViT's neck alone at ``neck_lr``, students trained from random init at the
distillation lr) and exported to ONNX
(the ``skb_encoder`` graph, fixed 1024 x 1024). Each model at each precision is a candidate: fp32, int8
(NNCF QDQ calibrated on the training photographs, lamsc.export.quantise) and fp16 where the target has
it. Candidates are timed in ONNX Runtime in one interleaved pass with the teacher, and scored as deployed:
the embeddings come from the candidate's ONNX file. Quality against the teacher on the scoring photographs:
- embedding cosine: mean over the 64 x 64 positions of the cosine along the 256 channels;
- mask IoU: SAM's mask decoder on a grid of point prompts, once on the teacher's embedding and once on
  the candidate's; the mask the teacher ranks best per prompt, IoU of the two binary masks, mean.
The choice follows lamsc.compress.choice's rule with embedding cosine as the figure and the floors
MIN_COSINE and MIN_IOU as requirements (``SKB_RULE``).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lamsc.compress.budget import Budget
from lamsc.compress.choice import Requirement, Rule
from lamsc.compress.cost import Target, count_work
from lamsc.compress.distill import DistillConfig, distil_encoder, embedding_cosine, teacher_embeddings
from lamsc.compress.plan import Candidate, Plan, candidate_precisions, cost_all
from lamsc.compress.prune import count_parameters
from lamsc.compress.prune_sam import prune_sam_encoder
from lamsc.export.onnx_export import export_onnx, session, to_fp16
from lamsc.export.quantise import quantise_onnx
from lamsc.export.samples import skb_image
from lamsc.semcom.architecture import record
from lamsc.semcom.graphs import SkbEncoderGraph
from lamsc.semcom.images import NamedImage
from lamsc.semcom.sam_architecture import SamArchitecture, build_sam
from lamsc.semcom.segmenter import SAM_INPUT_SIDE
from lamsc.semcom.skb_student import ResizedTinyViT, ResNetStudent, save_skb

MIN_COSINE, MIN_IOU = 0.95, 0.8  # quality floors a compressed SKB must keep against its teacher


def _floors_unmet(in_budget: list[Candidate], best: Candidate, budget: Budget) -> str:
    q = best.quality
    return (f"no candidate within the budget ({budget.describe()}) keeps embedding cosine >= {MIN_COSINE} "
            f"and mask IoU >= {MIN_IOU}; the best within it is {best.name} (cosine {q['cosine']:.4f}, "
            f"IoU {q['iou']:.3f}) at {best.cost.describe()}; distil longer (--steps), on more "
            "photographs (--data), or relax the budget")


# The highest embedding cosine against the teacher among the candidates within budget that keep both floors.
SKB_RULE = Rule("cosine", (Requirement("cosine", MIN_COSINE, label=f"cosine < {MIN_COSINE}"),
                           Requirement("iou", MIN_IOU, label=f"IoU < {MIN_IOU}")), _floors_unmet)


@dataclass
class SkbPlanConfig:
    ratios: tuple[float, ...] = (0.0, 0.5)
    students: tuple[int, ...] = (768,)     # ResNet-18 students by input size; () for none
    resized: tuple[int, ...] = (448,)      # TinyViT input sizes (MobileSAM only); () for none
    finetune_lr: float = 1e-5              # pruned models, from the teacher's weights (3e-5 lost cosine)
    neck_lr: float = 3e-4                  # a resized TinyViT's neck, fine-tuned alone (1e-3 lost cosine at first)
    precisions: tuple[str, ...] = ("fp32", "int8")
    calibration: int = 16                  # training photographs int8 is calibrated on
    distill: DistillConfig = field(default_factory=lambda: DistillConfig(steps=300, batch=2, lr=1e-3))
    prompts_per_side: int = 4
    repeats: int = 5


def sam_inputs(sam, photos: list[NamedImage]) -> list[torch.Tensor]:
    mean, std = sam.pixel_mean.view(-1), sam.pixel_std.view(-1)
    return [(skb_image(p.pixels, SAM_INPUT_SIDE, mean) - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1) for p in photos]


def plan_skb(teacher, arch: SamArchitecture, budget: Budget, target: Target, train: list[NamedImage],
             evaluation: list[NamedImage], cfg: SkbPlanConfig, work: Path, progress=None) -> Plan:
    say = progress or (lambda *a, **k: None)
    teacher = teacher.eval()
    train_x, eval_x = sam_inputs(teacher, train), sam_inputs(teacher, evaluation)
    # The teacher is the slow part: its embeddings are computed once, for every student and for scoring.
    train_emb = teacher_embeddings(teacher.image_encoder, train_x)
    teacher_emb = teacher_embeddings(teacher.image_encoder, eval_x)
    # Every tenth training photograph is held out to pick each model's best distillation checkpoint
    # (the scoring photographs never are); with fewer than ten, the last state is kept.
    held = set(range(9, len(train_x), 10))
    fit = ([x for i, x in enumerate(train_x) if i not in held], [y for i, y in enumerate(train_emb) if i not in held])
    val = ([train_x[i] for i in sorted(held)], [train_emb[i] for i in sorted(held)]) if held else None
    base = {k: v for k, v in dataclasses.asdict(arch).items() if k != "variant"}
    step = lambda s, n, logs: say(None, step=(s, n, logs))  # noqa: E731
    finetune = dataclasses.replace(cfg.distill, lr=cfg.finetune_lr)
    models = [("teacher", 0.0, teacher, {"kind": "pruned", "architecture": {}})]
    for ratio in sorted(r for r in cfg.ratios if r > 0):
        name = f"prune-{ratio:.2f}"
        say(f"{name}: pruning heads and MLP width, fine-tuning ({cfg.distill.steps} steps)")
        pruned = prune_sam_encoder(teacher, arch, ratio)
        shape = record(pruned, build_sam(arch))
        distil_encoder(pruned.image_encoder, *fit, finetune, work / name, step, from_teacher=True, validation=val)
        models.append((name, ratio, pruned, {"kind": "pruned", "architecture": shape}))
    if cfg.resized and arch.family != "mobilesam":
        say(f"--resize skipped: {arch.describe()} is a ViT with position embeddings fixed to 64 x 64")
    for size in cfg.resized if arch.family == "mobilesam" else ():
        name = f"tinyvit-{size}"
        say(f"{name}: the teacher's TinyViT at {size} x {size}, fine-tuning ({cfg.distill.steps} steps)")
        encoder = ResizedTinyViT(copy.deepcopy(teacher.image_encoder), size)
        resized = _with_encoder(teacher, encoder)
        finetune_neck(encoder, fit, val, dataclasses.replace(cfg.distill, lr=cfg.neck_lr), work / name, step)
        models.append((name, 0.0, resized, {"kind": "resized", "architecture": {}, **encoder.settings()}))
    for size in cfg.students:
        name = f"resnet18-{size}"
        say(f"{name}: distilling a ResNet-18 student ({cfg.distill.steps} steps)")
        student = ResNetStudent("resnet18", size)
        sam = _with_encoder(teacher, student)
        distil_encoder(student, *fit, cfg.distill, work / name, step, validation=val)
        models.append((name, 0.0, sam, {"kind": "student", **student.settings()}))
    raw = [_raw(teacher, x) for x in train_x[: cfg.calibration]]
    eval_raw = [_raw(teacher, x) for x in eval_x]
    reference = reference_masks(teacher, teacher_emb, cfg.prompts_per_side)
    tensorrt = target.name != "cpu"
    candidates = []
    for name, ratio, sam, encoder in models:
        say(f"{name}: export, quantise and score")
        model = save_skb(sam, base, encoder, work / name / "skb", {"teacher": arch.describe(),
                                                                   "distill": dataclasses.asdict(cfg.distill)})
        fp32 = _export(sam, work / name / "skb_encoder.onnx")
        encoder_work = count_work(sam.image_encoder, (torch.zeros(1, 3, SAM_INPUT_SIDE, SAM_INPUT_SIDE),))
        for precision in candidate_precisions(cfg, target):
            c = Candidate(f"{name}-{precision}", ratio, precision, model=model)
            c.bundle = _at_precision(fp32, precision, raw, transformer=encoder["kind"] != "student", tensorrt=tensorrt)
            embeddings = onnx_embeddings(c.bundle, eval_raw)
            c.quality = skb_quality(embeddings, teacher, teacher_emb, cfg.prompts_per_side, reference)
            c.quality["images"] = [p.name for p in evaluation]
            c.workload = {"files": [c.bundle], "feeds": [{"image": raw[0]}], "work": encoder_work,
                          "params": count_parameters(sam.image_encoder)}
            candidates.append(c)
    say(f"costing {len(candidates)} candidates on {target.name}")
    cost_all(candidates, target, cfg.repeats)
    budget = budget.resolve(candidates[0].cost)
    return Plan(budget, target, candidates, SKB_RULE.choose(candidates, budget), SKB_RULE.metric)


def finetune_neck(encoder: ResizedTinyViT, fit, validation, cfg: DistillConfig, out: Path, progress=None) -> None:
    """Fine-tune a resized TinyViT's neck alone (in place) towards the teacher's embeddings ``fit`` =
    (images, embeddings), on its trunk's features computed once. The trunk stays the teacher's, rescaled:
    fine-tuning the whole network lost cosine (0.943 -> 0.890 in 50 steps), the neck alone gained (0.947 ->
    0.958 in 600 steps of batch 2 at 3e-4; random-weight MobileSAM at 448, neck on a 48 x 48 grid)."""
    encoder.eval()

    @torch.no_grad()
    def features(pair):
        images, embeddings = pair
        return [encoder.trunk(x) for x in images], embeddings

    fit_features = features(fit)
    val_features = features(validation) if validation else None
    distil_encoder(encoder.neck(), *fit_features, cfg, out, progress, from_teacher=True, validation=val_features)


def _with_encoder(sam, encoder):
    out = copy.deepcopy(sam)
    out.image_encoder = encoder
    return out


def _raw(sam, x: torch.Tensor) -> np.ndarray:
    """The skb_encoder graph's input (RGB 0..255, normalised inside) for a normalised image."""
    return (x * sam.pixel_std.view(1, 3, 1, 1) + sam.pixel_mean.view(1, 3, 1, 1)).numpy()


def _export(sam, path: Path) -> Path:
    graph = SkbEncoderGraph(sam).eval()
    export_onnx(graph, graph.spec(), graph.example(), path)
    return path


def _at_precision(fp32: Path, precision: str, calibration: list[np.ndarray], transformer: bool,
                  tensorrt: bool) -> Path:
    if precision == "fp32":
        return fp32
    out = fp32.with_name(f"{fp32.stem}_{precision}.onnx")
    if precision == "fp16":
        return to_fp16(fp32, out)
    return quantise_onnx(fp32, out, [{"image": x} for x in calibration], transformer=transformer,
                         tensorrt=tensorrt)


def onnx_embeddings(path: Path, images: list[np.ndarray]) -> list[torch.Tensor]:
    """The embeddings an skb_encoder ONNX file gives in ONNX Runtime: what a deployed candidate computes
    (every precision keeps float32 inputs and outputs)."""
    run = session(path, ["CPUExecutionProvider"]).run
    return [torch.from_numpy(run(None, {"image": x})[0]) for x in images]


@torch.no_grad()
def reference_masks(teacher, teacher_emb: list[torch.Tensor], per_side: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The teacher's masks that candidates are scored against: per image, for each of ``per_side``² point
    prompts on a grid, the index of the multimask output the teacher rates best and that mask (bool,
    prompts x 256 x 256). Computed once per plan: the mask decoder is most of a candidate's scoring time."""
    out = []
    for t_emb in teacher_emb:
        masks, iou = _decode(teacher, t_emb, per_side)
        best = iou.argmax(1)
        out.append((best, masks[torch.arange(len(best)), best] > 0))
    return out


@torch.no_grad()
def skb_quality(embeddings: list[torch.Tensor], teacher, teacher_emb: list[torch.Tensor], per_side: int,
                reference: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> dict:
    """Cosine and mask IoU of a candidate's ``embeddings`` against the teacher's, image by image;
    ``reference``: ``reference_masks(teacher, teacher_emb, per_side)``, computed here when None."""
    reference = reference if reference is not None else reference_masks(teacher, teacher_emb, per_side)
    cosines, ious = [], []
    for emb, t_emb, (best, a) in zip(embeddings, teacher_emb, reference, strict=True):
        cosines.append(embedding_cosine(emb, t_emb))
        s_masks, _ = _decode(teacher, emb, per_side)
        b = s_masks[torch.arange(len(best)), best] > 0
        union = (a | b).flatten(1).sum(1)
        iou = torch.where(union > 0, (a & b).flatten(1).sum(1) / union.clamp(min=1),
                          torch.ones_like(union, dtype=torch.float))
        ious.append(float(iou.float().mean()))
    return {"cosine": float(np.mean(cosines)), "iou": float(np.mean(ious)),
            "per_image_cosine": [round(c, 4) for c in cosines]}


def _decode(sam, embedding: torch.Tensor, per_side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's mask decoder on ``embedding`` for a ``per_side`` x ``per_side`` grid of single-point prompts:
    (masks: prompts x 3 x 256 x 256 logits, predicted IoU: prompts x 3)."""
    points = (torch.arange(per_side) + 0.5) / per_side * SAM_INPUT_SIDE
    grid = torch.stack(torch.meshgrid(points, points, indexing="xy"), -1).reshape(-1, 1, 2)
    labels = torch.ones(grid.shape[0], 1, dtype=torch.long)
    sparse, dense = sam.prompt_encoder(points=(grid, labels), boxes=None, masks=None)
    return sam.mask_decoder(embedding, sam.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output=True)
