"""``lamsc demo``: the main job on the shipped default, end to end on the bundled photographs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from PIL import Image

from lamsc.commands.output import console
from lamsc.commands.segment import report, segment_images
from lamsc.semcom.images import bundled_photos
from lamsc.semcom.overlay import contact_sheet
from lamsc.semcom.segmenter import build_segmenter


def demo(
    out: Path = typer.Option(Path("lamsc-out/demo"), help="Folder for everything the demo writes."),
    checkpoint: Optional[Path] = typer.Option(None, help="SAM/MobileSAM checkpoint for the SKB; "
                                              "default: the weight-free fallback."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON on stdout instead of tables."),
) -> None:
    """Segment the bundled photographs with the SKB and write their overlays and an overview PNG."""
    segmenter = build_segmenter(checkpoint)
    results = segment_images(segmenter, bundled_photos(), out / "segments")
    sheet = contact_sheet([Image.open(r["overlay"]) for r in results],
                          [f"{r['image']}: {r['count']} segments" for r in results], out / "overview.png")
    report(segmenter, None, results, json_out, title="SKB segments of the bundled photographs")
    console.print(f"overview: {sheet}")
