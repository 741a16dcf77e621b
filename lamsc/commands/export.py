"""``lamsc export``: a model (and optionally its SAM knowledge base) to a verified deploy bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from lamsc.commands.output import console, emit_json, print_table
from lamsc.export.bundle import Int8Options, SamExport, write_bundle
from lamsc.semcom.config import DEFAULT_MODEL
from lamsc.semcom.entropy import density_path, entropy_beside
from lamsc.semcom.images import bundled_photos, iter_images
from lamsc.semcom.model import load_model
from lamsc.semcom.sam_checkpoint import load_sam


def export(
    model: Optional[Path] = typer.Argument(None, metavar="MODEL", help="lamsc model (.safetensors with its "
                                           ".json); default: the shipped one."),
    out: Path = typer.Option(Path("lamsc-out/bundle"), help="Bundle folder to write."),
    precision: str = typer.Option("fp32", help="fp32 | fp16 | int8 (NNCF, calibrated on --images)."),
    sam_checkpoint: Optional[Path] = typer.Option(None, "--checkpoint",
                                                  help="SAM/MobileSAM checkpoint: also export the SKB encoder "
                                                  "and decoder graphs."),
    images: Optional[list[Path]] = typer.Option(None, help="Photographs to verify (and calibrate) on: "
                                                "files, folders or bundled photographs by name (chelsea); "
                                                "default: all the bundled ones."),
    int8_max_drop: Optional[float] = typer.Option(None, help="With int8: dB of link PSNR each codec graph may lose "
                                                  "on --images; NNCF's accuracy control keeps the layers that cost "
                                                  "most in float until it holds (minutes more)."),
    int8_for: str = typer.Option("tensorrt", help="With int8: tensorrt (signed int8 Q/DQ, what TensorRT takes) | "
                                 "onnxruntime (uint8 activations where NNCF chose them, ONNX Runtime's U8S8 "
                                 "form on x86; TensorRT refuses them)."),
    json_out: bool = typer.Option(False, "--json", help="Print the manifest as JSON on stdout."),
) -> None:
    """Export ONNX graphs (opset 17), verify each against PyTorch, write the manifest and the Jetson steps."""
    network = load_model(model)
    density = density_path(model or DEFAULT_MODEL)
    entropy = entropy_beside(model or DEFAULT_MODEL)
    sam = None
    if sam_checkpoint is not None:
        module, arch = load_sam(sam_checkpoint)
        sam = SamExport(module, f"{arch.describe()} from {sam_checkpoint.name}")
    photos = list(iter_images(images, bundled_names=True)) if images else bundled_photos()
    with console.status(f"exporting and verifying ({precision}) on {len(photos)} photographs"):
        bundle = write_bundle(network, out, precision, sam, images=photos,
                              int8=Int8Options(int8_for, None, int8_max_drop), entropy=entropy)
    if json_out:
        emit_json("export", bundle.manifest)
        return
    table = Table(title=f"bundle {out} ({precision})")
    # TensorRT column: the graph checked for what TensorRT 10 refuses (no engine is built here)
    trt = "TensorRT graph check"
    for col in ("graph", "file", "MB", "output", "max |err| / range", "SQNR dB", trt):
        table.add_column(col, justify="left" if col in ("graph", "file", "output", trt) else "right")
    for name, g in bundle.manifest["graphs"].items():
        for i, w in enumerate(g["verification"]["worst"]):
            table.add_row(name if i == 0 else "", g["file"] if i == 0 else "",
                          f"{g['bytes'] / 1e6:.2f}" if i == 0 else "",
                          w["output"], f"{w['relative']:.2e}", f"{w['sqnr_db']:.1f}",
                          ("ok" if not g["tensorrt_problems"] else "; ".join(g["tensorrt_problems"])) if i == 0 else "")
    print_table(table)
    console.print(f"verified on {len(photos)} photographs; tolerance per precision in manifest.json. "
                  f"On the device: {out}/JETSON.md")
    if entropy is None:
        console.print(f"no entropy model beside the model ({density.name}): the bundle has no digital mode; "
                      "fit one with `lamsc density fit` and export again")
    else:
        console.print(f"digital mode: the entropy model {density.name} travels in the bundle")
