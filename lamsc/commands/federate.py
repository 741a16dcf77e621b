"""``lamsc federate``: federated split fine-tuning in Flower's simulation, one folder per client."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lamsc.commands.output import console, emit_json, number, progress
from lamsc.federated import FederateConfig, federate as run_federated
from lamsc.federated.split import SPLIT_POINTS


def federate(
    data: list[Path] = typer.Option([], "--data", help="A client's image folder (repeat once per client), or one "
                                    "folder to deal out to --clients by content."),
    clients: Optional[int] = typer.Option(None, help="Clients (default: one per --data folder)."),
    rounds: int = typer.Option(FederateConfig.rounds, help="Rounds; the devices' adapters are averaged after each."),
    local_steps: int = typer.Option(FederateConfig.local_steps, help="Split training steps per round."),
    split: str = typer.Option(FederateConfig.split, help=f"Where the model is cut: {', '.join(SPLIT_POINTS)}."),
    model: Optional[Path] = typer.Option(None, help="lamsc model to fine-tune (default: the shipped one)."),
    out: Path = typer.Option(FederateConfig.out, help="Folder for the model, report and states; an existing run "
                             "is resumed."),
    rank: int = typer.Option(FederateConfig.rank, help="Adapter rank on the device's convolutions."),
    batch: int = typer.Option(FederateConfig.batch, help="Crops per device per step."),
    crop: int = typer.Option(FederateConfig.crop, help="Crop side in pixels (a multiple of 8)."),
    lr: float = typer.Option(FederateConfig.lr, help="Peak learning rate (cosine schedule) of the server's part."),
    device_lr: Optional[float] = typer.Option(None, help="Peak learning rate of the devices' adapters (default: "
                                              "--lr)."),
    eval_snr: float = typer.Option(FederateConfig.eval_snr, help="SNR (dB) of the held-out metrics."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
) -> None:
    """Fine-tune a model by federated split learning on Flower; no image leaves its client."""
    config = FederateConfig(data, clients, rounds, local_steps, split, model, out, rank, batch, crop, lr, device_lr,
                            eval_snr=eval_snr)
    with progress() as bar:
        task = bar.add_task("split steps", total=config.rounds * config.local_steps)
        result = run_federated(config, progress=lambda step, total, logs: bar.update(
            task, completed=step, description=f"split steps psnr={logs.get('psnr', float('nan')):.2f}"))
    if json_out:
        emit_json("federate", {"model": str(result.model), "report": {k: str(v) for k, v in result.report.items()},
                               "rounds": result.rows, "crossed": result.crossed})
        return
    console.print(f"model: {result.model}  report: {result.report['json']} {result.report['png']}")
    for row in result.rows:
        cells = ", ".join(f"client {c}: {number(r['psnr'], '.2f')} dB" for c, r in row["clients"].items())
        console.print(f"  round {row['round']}: {cells}")
