"""``lamsc compress``: a lamsc model to a budget on a target (prune, distil, quantise, plan)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from lamsc.commands.output import console, emit_json, print_table, progress
from lamsc.errors import UserError
from lamsc.semcom.images import bundled_photos, iter_images
from lamsc.semcom.model import load_model
from lamsc.semcom.segmenter import build_segmenter


def compress(
    checkpoint: Optional[Path] = typer.Argument(None, help="lamsc model (.safetensors with its .json); "
                                                "default: the shipped one."),
    budget: str = typer.Option(..., help="Limits per image, e.g. latency-ms=60,params=400k,energy-mj=300,"
                               "bytes=2M,macs=5G."),
    target: str = typer.Option("cpu", help="cpu | gpu (measured here) | orin-nano | orin-nano-super | orin-nx | "
                               "agx-orin | xavier-nx (cost model calibrated on published latencies)."),
    out: Path = typer.Option(Path("lamsc-out/compressed"), help="Folder for the chosen model, its bundle and "
                             "the report."),
    ratios: str = typer.Option("0,0.25,0.4,0.55", help="Prune ratios to try (0 = the teacher, always tried)."),
    precisions: str = typer.Option("fp32,int8", help="Precisions to try; fp16 is added on GPU/Jetson targets."),
    steps: int = typer.Option(1000, help="Distillation steps per compressed candidate (the default codec at 55% "
                              "pruning needed about 1000 to stay within 0.5 dB; about 1 s a step on 2 CPU cores)."),
    data: Optional[list[Path]] = typer.Option(None, help="Photograph folders to distil on; default: the bundled "
                                              "photographs."),
    images: Optional[list[Path]] = typer.Option(None, help="Photographs to score on; default: the bundled ones."),
    snr: float = typer.Option(10.0, help="AWGN SNR (dB) at which candidates are scored."),
    int8_max_drop: float = typer.Option(0.1, help="dB of link PSNR each int8 graph may lose on the calibration "
                                        "photographs: NNCF's accuracy control keeps the layers that cost most in "
                                        "float until it holds."),
    max_rate_increase: float = typer.Option(0.05, help="How much more than the teacher a candidate may send (mean "
                                            "payload bits per photograph; 0.05 = 5%): PSNR bought with bits is not "
                                            "kept quality."),
    sam: Optional[Path] = typer.Option(None, "--sam", help="Compress this SAM/MobileSAM checkpoint's image encoder "
                                       "(the SKB) instead of the codec: pruned, resized and ResNet-18 student "
                                       "candidates."),
    students: str = typer.Option("768", help="With --sam: ResNet-18 student input sizes to try ('' for none)."),
    resize: str = typer.Option("448", help="With --sam on MobileSAM: input sizes at which the teacher's own "
                               "TinyViT runs, its neck fine-tuned ('' for none; 448 takes about a fifth of 1024's time)."),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
) -> None:
    """Search prune ratios and precisions, distil each pruned model from the original, cost each on the target,
    score each over the link, and keep the best within budget (or exit 2 naming the closest)."""
    if sam is not None:
        results = run_compress_skb(sam, budget, target, out, ratios, students, steps, data, images, precisions,
                                   resize)
    else:
        results = run_compress(checkpoint, budget, target, out, ratios, precisions, steps, data, images, snr,
                               int8_max_drop=int8_max_drop, max_rate_increase=max_rate_increase)
    if json_out:
        emit_json("compress", results)
    else:
        report(results, out)
    if results["chosen"] is None:
        raise UserError(results["shortfall"])


CALIBRATION_PHOTOS = 16  # of the distillation photographs, for int8: more add accuracy-control time, not range


def run_compress(checkpoint, budget: str, target: str, out: Path, ratios: str = "0,0.25,0.4,0.55",
                 precisions: str = "fp32,int8", steps: int = 1000, data=None, images=None, snr: float = 10.0,
                 photos=None, int8_max_drop: float = 0.1, max_rate_increase: float = 0.05) -> dict:
    """The compress job; ``photos`` (NamedImages) replaces both --data and --images when given."""
    from lamsc.compress import report as compress_report
    from lamsc.compress.budget import Budget
    from lamsc.compress.cost import Target
    from lamsc.compress.distill import DistillConfig
    from lamsc.compress.plan import PlanConfig, plan_codec
    from lamsc.semcom.training import prepare

    limits, where = Budget.parse(budget), Target(target)
    if max_rate_increase < 0:
        raise UserError(f"--max-rate-increase {max_rate_increase:g} is negative: give how much more than the teacher "
                        "a candidate may send, e.g. 0.05 for 5%")
    cfg = PlanConfig(ratios=_floats(ratios, "--ratios"), precisions=_words(precisions),
                     distill=DistillConfig(steps=steps), snr_db=snr, int8_max_drop=int8_max_drop,
                     max_rate_increase=max_rate_increase)
    teacher = load_model(checkpoint)
    segmenter = build_segmenter(None)
    train_photos = photos or (list(iter_images(data)) if data else bundled_photos())
    evaluation = photos or (list(iter_images(images)) if images else bundled_photos())
    console.print(f"budget: {limits.describe()} on {where.name}; {len(cfg.ratios)} prune ratios x "
                  f"{', '.join(cfg.precisions)}; distil on {len(train_photos)}, score on {len(evaluation)} photographs")
    with progress() as bar:
        task = bar.add_task("SKB segments for distillation", total=len(train_photos))
        prepared = prepare(train_photos, segmenter, teacher.config.segments, None, lambda: bar.advance(task))
        say = _reporter(bar)
        plan = plan_codec(teacher, limits, where, prepared, evaluation, segmenter, cfg, out / "candidates", say,
                          calibration=train_photos[:CALIBRATION_PHOTOS])
    extra = {"checkpoint": str(checkpoint) if checkpoint else "shipped default",
             "distilled_on": [str(d) for d in data] if data else "bundled photographs",
             "budget_text": plan.budget.describe(), "plan": dataclasses.asdict(cfg)}
    if plan.chosen is not None:
        chosen = load_model(plan.chosen.model)
        chosen.config = dataclasses.replace(chosen.config, trained={
            **chosen.config.trained, "compressed": {"from": extra["checkpoint"], "candidate": plan.chosen.name,
                                                    "budget": plan.budget.to_dict(), "target": where.name}})
        extra["model"] = str(chosen.save(out / "model"))
        if (out / "bundle").exists():
            shutil.rmtree(out / "bundle")
        shutil.copytree(plan.chosen.bundle, out / "bundle")
        extra["bundle"] = str(out / "bundle")
    return compress_report.write(plan, out, extra)


def run_compress_skb(sam_checkpoint: Path, budget: str, target: str, out: Path, ratios: str, students: str,
                     steps: int, data=None, images=None, precisions: str = "fp32,int8",
                     resize: str = "448") -> dict:
    from lamsc.compress import report as compress_report
    from lamsc.compress.budget import Budget
    from lamsc.compress.cost import Target
    from lamsc.compress.skb import SkbPlanConfig, plan_skb
    from lamsc.semcom.sam_checkpoint import load_sam

    limits, where = Budget.parse(budget), Target(target)
    cfg = SkbPlanConfig(ratios=_floats(ratios, "--ratios"),
                        students=_sizes(students, "--students"), resized=_sizes(resize, "--resize"),
                        precisions=_words(precisions))
    cfg.distill.steps = steps
    teacher, arch = load_sam(sam_checkpoint)
    train_photos = list(iter_images(data)) if data else bundled_photos()
    evaluation = list(iter_images(images)) if images else bundled_photos()
    console.print(f"SKB {arch.describe()}: budget {limits.describe()} on {where.name}; distil on "
                  f"{len(train_photos)}, score on {len(evaluation)} photographs")
    with progress() as bar:
        plan = plan_skb(teacher, arch, limits, where, train_photos, evaluation, cfg, out / "candidates",
                        _reporter(bar, "cosine"))
    extra = {"checkpoint": str(sam_checkpoint), "part": "skb", "budget_text": plan.budget.describe(),
             "distilled_on": [str(d) for d in data] if data else "bundled photographs",
             "plan": dataclasses.asdict(cfg)}
    if plan.chosen is not None:
        for suffix in (".safetensors", ".json"):
            shutil.copy(plan.chosen.model.with_suffix(suffix), (out / "skb").with_suffix(suffix))
        shutil.copy(plan.chosen.bundle, out / "skb_encoder.onnx")  # the encoder at the chosen precision
        extra["model"] = str((out / "skb").with_suffix(".safetensors"))
        extra["onnx"] = str(out / "skb_encoder.onnx")
    return compress_report.write(plan, out, extra)


def _reporter(bar, figure: str = "psnr_gap_db"):
    """Messages as lines; distillation steps as one progress bar per candidate."""
    task = None

    def say(message, step=None):
        nonlocal task
        if message is not None:
            console.print(message)
            if task is not None:
                bar.remove_task(task)
                task = None
            return
        s, n, logs = step
        if task is None:
            task = bar.add_task("distil", total=n)
        bar.update(task, completed=s, description=f"distil loss={logs['loss']:.4g} {figure}={logs[figure]:+.3f}")

    return say


def report(results: dict, out: Path) -> None:
    table = Table(title=f"lamsc compress: {results['budget_text']} on {results['target']}")
    for col in results["table"]["header"]:
        table.add_column(col, justify="left" if col in ("candidate", "") else "right")
    for row in results["table"]["rows"]:
        table.add_row(*row)
    print_table(table, 150)
    for c in results["candidates"]:
        if c["rejected"]:
            console.print(f"{c['name']} rejected: {c['rejected']}")
    e = results["cost_model_error"]
    if e:
        console.print(f"cost model vs measured latency: median |error| {e['median_abs']:.0%}, worst {e['max_abs']:.0%}")
    else:  # estimated: say by what, and how well it reproduces published latencies
        console.print(f"latency and energy: {results['teacher']['cost']['how']}")
    if results["chosen"]:
        t, c = results["teacher"], results["chosen"]
        quality = (f"cosine {c['quality']['cosine']:.4f}, mask IoU {c['quality']['iou']:.3f}"
                   if results.get("part") == "skb" else
                   f"PSNR {c['quality']['psnr']:.2f} vs {t['quality']['psnr']:.2f} dB, sending "
                   f"{c['quality']['bits_x_teacher']:.3f}x its bits")
        console.print(f"chosen {c['name']}: {c['cost']['latency_ms']:.1f} ms vs {t['cost']['latency_ms']:.1f} ms, "
                      f"{quality} -> {results['model']}")
    console.print(f"report: {out / 'report.md'}, {out / 'pareto.png'}, {out / 'compress.json'}")


def _floats(text: str, flag: str) -> tuple[float, ...]:
    values = tuple(sorted({0.0, *_floats_raw(text, flag)}))
    if any(not 0 <= v < 1 for v in values):
        raise UserError(f"{flag}: prune ratios must be in [0, 1)")
    return values


def _floats_raw(text: str, flag: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{flag} {text!r} is not a comma-separated list of numbers") from None


def _sizes(text: str, flag: str) -> tuple[int, ...]:
    """Whole-pixel input sizes; --resize ones checked here, before the teacher's slow embeddings."""
    from lamsc.semcom.skb_student import check_resize

    values = _floats_raw(text, flag)
    if any(v != int(v) or v <= 0 for v in values):
        raise UserError(f"{flag} {text!r}: input sizes are positive whole numbers of pixels, e.g. 448,512")
    if flag == "--resize":
        for v in values:
            check_resize(int(v))
    return tuple(int(v) for v in values)


def _words(text: str) -> tuple[str, ...]:
    words = tuple(w.strip() for w in text.split(",") if w.strip())
    bad = [w for w in words if w not in ("fp32", "fp16", "int8")]
    if bad or not words:
        raise UserError(f"--precisions {text!r}: choose from fp32, fp16, int8")
    return words
