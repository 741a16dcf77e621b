"""``lamsc kb build|add|merge|query|info|train``: the receiver's knowledge bases (lamsc.retrieval)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from lamsc.commands.output import console, emit_json, print_table, progress
from lamsc.retrieval.jobs import (BaseInfo, BuildConfig, MergeConfig, QueryConfig, add_to_base, base_info, build_base,
                                  merge_bases, query_bases)
from lamsc.retrieval.merge import NEAR_DUPLICATE, MergePolicy
from lamsc.retrieval.refine import NEAREST
from lamsc.retrieval.training import VIEWS_PER_SCENE, FusionJob, train_fusion
from lamsc.semcom.images import bundled_photos, iter_images
from lamsc.semcom.model import load_model

kb = typer.Typer(help="Knowledge bases at the receiver: build, grow, merge, look up, inspect; train the fusion "
                 "network.", no_args_is_help=True)

JSON = typer.Option(False, "--json", help="Print JSON on stdout instead of the table.")


def show(info: BaseInfo, json_out: bool, what: str) -> None:
    if json_out:
        emit_json(f"kb {what}", info.to_dict())
        return
    m = info.memory
    console.print(f"{info.folder}: {info.kind} base {info.name!r}, {info.entries} entries, revision {info.revision}"
                  + (f", {info.added} new" if info.added is not None and what != "info" else ""))
    console.print(f"content hash {info.content_hash[:16]}…; memory: keys {m['keys'] / 1e6:.2f} MB, index "
                  f"{m['index'] / 1e6:.2f} MB; content on disk {m['content'] / 1e6:.2f} MB"
                  + (f"; {info.seconds:.2f} s" if info.seconds is not None else ""))
    if info.parents:
        console.print("merged from " + ", ".join(p[:16] + "…" for p in info.parents))
    labels = ", ".join(f"{k or '(none)'} {v}" for k, v in list(info.labels.items())[:12])
    console.print(f"labels: {labels}{' …' if len(info.labels) > 12 else ''}")


@kb.command()
def build(folder: Path = typer.Argument(..., help="Folder for the new base."),
          images: list[Path] = typer.Argument(..., help="Images or folders: the content, as it was delivered."),
          kind: str = typer.Option("local", help="local (this link's) | global (shared across devices)."),
          name: Optional[str] = typer.Option(None, help="The base's name (default: the folder's)."),
          label: Optional[str] = typer.Option(None, help="Label of every entry (default: class folder, else name)."),
          source: Optional[str] = typer.Option(None, help="The link or device that delivered them."),
          json_out: bool = JSON) -> None:
    """Make a knowledge base of images, keyed and indexed, with its manifest."""
    show(build_base(BuildConfig(folder, images, kind, name, label, source)), json_out, "build")


@kb.command()
def add(folder: Path = typer.Argument(..., help="An existing base."),
        images: list[Path] = typer.Argument(..., help="Images or folders to add."),
        label: Optional[str] = typer.Option(None, help="Label of every entry (default: class folder, else name)."),
        source: Optional[str] = typer.Option(None, help="The link or device that delivered them."),
        json_out: bool = JSON) -> None:
    """Add images to a base (ones it holds are skipped); its revision goes up."""
    show(add_to_base(BuildConfig(folder, images, label=label, source=source)), json_out, "add")


@kb.command()
def merge(bases: list[Path] = typer.Argument(..., help="Bases to merge; the order does not matter."),
          out: Path = typer.Option(..., help="Folder for the merged base."),
          cap: Optional[int] = typer.Option(None, help="Keep at most this many entries, the newest."),
          max_age: Optional[float] = typer.Option(None, help="Drop entries this many seconds older than the newest."),
          near_duplicate: float = typer.Option(NEAR_DUPLICATE, help="Key distance under which two entries of one "
                                               "label are one (the newer kept); 0: exact duplicates only."),
          kind: str = typer.Option("global", help="Kind of the merged base: local | global."),
          name: Optional[str] = typer.Option(None, help="The merged base's name (default: the --out folder's)."),
          json_out: bool = JSON) -> None:
    """Merge bases (a device's local base pushed to the global one) by the stated policy."""
    show(merge_bases(MergeConfig(bases, out, MergePolicy(cap, max_age, near_duplicate), kind, name)), json_out,
         "merge")


@kb.command()
def query(images: list[Path] = typer.Argument(..., help="Images to look up (as a receiver decoded them)."),
          kb_dirs: list[Path] = typer.Option(..., "--kb", help="A base folder (repeatable)."),
          k: int = typer.Option(NEAREST, min=1, help="Entries registered: the nearest by key over all bases."),
          fusion: Optional[Path] = typer.Option(None, help="Fusion network whose threshold applies "
                                                "(default: shipped)."),
          json_out: bool = JSON) -> None:
    """The nearest entries to each image, with key distance, registration agreement, sharpness and score."""
    rows = query_bases(QueryConfig(kb_dirs, images, k, fusion))
    if json_out:
        emit_json("kb query", {"images": rows})
        return
    table = Table(title=f"nearest entries (used when score >= {rows[0]['threshold']:.3f})")
    numbers = ("distance", "agreement", "sharpness", "score")
    for col in ("image", "base", "label", "id", *numbers, "used"):
        table.add_column(col, justify="right" if col in numbers else "left")
    for row in rows:
        for e in row["entries"]:
            table.add_row(row["image"], e["base"], e["label"], e["id"], f"{e['distance']:.3f}",
                          f"{e['agreement']:.3f}", f"{e['sharpness']:.2f}", f"{e['score']:.3f}",
                          "yes" if e["used"] else "")
    print_table(table)


@kb.command()
def info(folder: Path = typer.Argument(..., help="A base folder."), json_out: bool = JSON) -> None:
    """What a base holds; every file is checked against its manifest."""
    show(base_info(folder), json_out, "info")


@kb.command()
def train(photos: list[Path] = typer.Argument(..., help="Photographs, one scene each, to train on."),
          calibration: list[Path] = typer.Option(..., "--calibration", help="Other photographs (repeatable) the "
                                                 "acceptance threshold is set on."),
          bundled: bool = typer.Option(False, help="Add scikit-image's bundled photographs to train on."),
          model: Optional[Path] = typer.Option(None, help="The codec, frozen (default: the shipped model)."),
          steps: int = typer.Option(1500, help="Optimiser steps."),
          views: int = typer.Option(VIEWS_PER_SCENE, help="Views sent per scene."),
          out: Path = typer.Option(Path("lamsc-out/fusion"), help="Folder for the network; an existing run resumes."),
          json_out: bool = JSON) -> None:
    """Train the fusion network on scene sequences with the codec frozen, and set its threshold."""
    train_on = list(iter_images(photos)) + (bundled_photos() if bundled else [])
    job = FusionJob(train_on, list(iter_images(calibration)), load_model(model), views, steps, out=out)
    with progress() as bar:
        task = bar.add_task("fusion", total=steps)
        result = train_fusion(job, lambda s, total, logs: bar.update(task, completed=s, description=(
            f"fusion PSNR {logs['psnr_before']:.2f} -> {logs['psnr_after']:.2f} dB")))
    if json_out:
        emit_json("kb train", {"network": str(result.network), "final": result.final, "config": result.config.trained,
                               "threshold": result.config.threshold})
        return
    console.print(f"fusion network: {result.network}; threshold {result.config.threshold:.3f}; last step: "
                  + ", ".join(f"{k}={v:.4g}" for k, v in result.final.items() if isinstance(v, float)))
