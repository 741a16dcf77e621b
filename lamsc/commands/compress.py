"""``lamsc compress``: a lamsc model to a budget on a target (prune, distil, quantise, plan).

The flags become a lamsc.compress.CompressConfig; lamsc.compress.compress_to_budget does the work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from lamsc.commands.output import console, emit_json, print_table, progress
from lamsc.compress import CompressConfig, CompressResult, compress_to_budget
from lamsc.compress.plan import PlanConfig
from lamsc.compress.skb import SkbPlanConfig
from lamsc.errors import UserError


def compress(
    model: Optional[Path] = typer.Argument(None, metavar="MODEL", help="lamsc model (.safetensors with its "
                                           ".json); default: the shipped one."),
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
                               "TinyViT runs, its neck fine-tuned ('' for none; 448 takes about a fifth of "
                               "1024's time)."),
    repeats: Optional[int] = typer.Option(None, help="Timed rounds per candidate on cpu/gpu, after warm-up rounds; "
                                          f"the median is kept (default: {PlanConfig.repeats} for the codec, "
                                          f"{SkbPlanConfig.repeats} for --sam)."),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
) -> None:
    """Search prune ratios and precisions, distil each pruned model from the original, cost each on the target,
    score each over the link, and keep the best within budget (or exit 2 naming the closest)."""
    config = CompressConfig(budget=budget, target=target, model=model, sam=sam, out=out,
                            ratios=_numbers(ratios, "--ratios"), precisions=_words(precisions), steps=steps,
                            data=data, images=images, snr_db=snr, int8_max_drop=int8_max_drop,
                            max_rate_increase=max_rate_increase, students=_numbers(students, "--students"),
                            resize=_numbers(resize, "--resize"), repeats=repeats)
    result = compress_with_progress(config)
    if json_out:
        emit_json("compress", result.results)
    else:
        report(result.results, out)
    if result.chosen is None:
        raise UserError(result.shortfall)


def compress_with_progress(config: CompressConfig) -> CompressResult:
    """``compress_to_budget`` with its messages on the console and its steps as progress bars."""
    with progress() as bar:
        return compress_to_budget(config, _reporter(bar, "psnr_gap_db" if config.part == "codec" else "cosine"))


def _reporter(bar, figure: str = "psnr_gap_db"):
    """Messages as lines; the steps after each (distillation steps, photographs segmented) as a progress bar."""
    task, last = None, ""

    def say(message, step=None):
        nonlocal task, last
        if message is not None:
            console.print(message)
            last = message
            if task is not None:
                bar.remove_task(task)
                task = None
            return
        s, n, logs = step
        if task is None:
            task = bar.add_task("distil" if logs else last, total=n)
        if logs:
            bar.update(task, completed=s, description=f"distil loss={logs['loss']:.4g} {figure}={logs[figure]:+.3f}")
        else:
            bar.update(task, completed=s)

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


def _numbers(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"{flag} {text!r} is not a comma-separated list of numbers") from None


def _words(text: str) -> tuple[str, ...]:
    return tuple(w.strip() for w in text.split(",") if w.strip())
