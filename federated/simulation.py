"""``federate``: federated split fine-tuning of a lamsc model in Flower's simulation, as one Python call.

N virtual devices, each with its own image folder, run the ClientApp in Flower's simulation runtime (Ray
actors on this machine); the ServerApp runs the split server in this process. What a run writes in ``out``:
the fine-tuned model (``model.safetensors`` + ``model.json``, an ordinary lamsc model), ``report.json``,
``report.csv`` and ``report.png`` (per round: each client's held-out metrics, bytes up and down by kind, device
seconds), the server's resumable state, and each device's folder (``client-i``: its plan, state and segments).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from lamsc.errors import UserError
from lamsc.federated.apps import client_app, server_app
from lamsc.federated.partition import partition_by_content, write_folder
from lamsc.federated.report import write_report
from lamsc.federated.server import SplitPlan, SplitServer
from lamsc.federated.split import split_point
from lamsc.semcom.images import class_names, iter_images
from lamsc.semcom.model import LamscModel, load_model


# The CPU cores each virtual device gets, and its torch threads (whatever OMP_NUM_THREADS says); the full-model
# FedAvg baseline times its devices on as many, so that device compute compares like with like.
DEVICE_CPUS = 1


@dataclass
class FederateConfig:
    """A federated split fine-tuning run (``lamsc federate``).

    ``data``: one folder per client (images, class folders or a VOC layout), or one folder that is dealt out to
    ``clients`` by content (lamsc.federated.partition.partition_by_content). ``model``: the lamsc model to
    fine-tune (None: the shipped default). Every 4th image of a client is held out for its metrics. The rest are
    SplitPlan's fields. An ``out`` that holds a run resumes it. Bad values raise UserError when made.
    """

    data: list[Path | str] = field(default_factory=list)
    clients: int | None = None
    rounds: int = SplitPlan.rounds
    local_steps: int = SplitPlan.local_steps
    split: str = SplitPlan.split
    model: Path | str | None = None
    out: Path | str = Path("lamsc-out/federate")
    rank: int = SplitPlan.rank
    batch: int = SplitPlan.batch
    crop: int = SplitPlan.crop
    lr: float = SplitPlan.lr
    device_lr: float | None = SplitPlan.device_lr
    eval_snr: float = SplitPlan.eval_snr
    seed: int = SplitPlan.seed
    sam_checkpoint: Path | str | None = None

    def __post_init__(self):
        split_point(self.split)
        if not self.data:
            raise UserError("no client data; pass --data DIR once per client, or one DIR with --clients N")
        for d in self.data:
            if not Path(d).is_dir():
                raise UserError(f"client folder not found: {d}; give one image folder per client")
        if self.clients is None:
            self.clients = len(self.data)
        if len(self.data) not in (1, self.clients) or self.clients < 1:
            raise UserError(f"{len(self.data)} folders for {self.clients} clients; give one folder per client, "
                            "or one folder to deal out")
        for name, value in (("rounds", self.rounds), ("local_steps", self.local_steps), ("rank", self.rank),
                            ("batch", self.batch)):
            if value < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, not {value}")
        if self.crop % 8:
            raise UserError(f"--crop {self.crop} is not a multiple of 8; the encoder downsamples by 8")


@dataclass(repr=False)
class FederateResult:
    model: Path                   # the fine-tuned model's .safetensors (its .json beside it)
    report: dict[str, Path]       # json, csv, png
    rows: list[dict]              # one per evaluated round (0 = before fine-tuning)
    crossed: dict                 # per message type, what a device's reply carried (kinds, shapes)

    def __repr__(self) -> str:
        first, last = (_mean_psnr(self.rows[0]), _mean_psnr(self.rows[-1])) if self.rows else (0.0, 0.0)
        return f"FederateResult({self.model}, held-out PSNR {first:.2f} -> {last:.2f} dB)"


def _mean_psnr(row: dict) -> float:
    return sum(c["psnr"] for c in row["clients"].values()) / len(row["clients"])


def client_folders(config: FederateConfig) -> list[Path]:
    """One folder per client: the given ones, or one folder dealt out into ``out/data/client-i``."""
    if len(config.data) == config.clients:
        return [Path(d) for d in config.data]
    images = list(iter_images([config.data[0]]))
    root = Path(config.out) / "data"
    return [write_folder(part, root / f"client-{i}") if not (root / f"client-{i}").is_dir() else root / f"client-{i}"
            for i, part in enumerate(partition_by_content(images, config.clients))]


def with_classifier(base: LamscModel, classes: list[str], seed: int) -> LamscModel:
    """``base`` with a new classification head for ``classes`` (drawn from ``seed``), every other weight kept."""
    torch.manual_seed(seed)
    model = LamscModel(replace(base.config, classes=list(classes)))
    missing = model.load_state_dict(base.state_dict(), strict=False).missing_keys
    assert all(k.startswith("classifier.") for k in missing), missing
    return model


def federate(config: FederateConfig, until_round: int | None = None, progress=None) -> FederateResult:
    """Run (or resume) ``config`` in Flower's simulation; stop after ``until_round`` rounds if given (running
    again with the same ``out`` continues). ``progress(step, total, logs)`` follows every server step.
    Raises UserError for the errors of FederateConfig, a model that cannot be loaded, or class folders whose
    classes differ from the model's heads."""
    from flwr.simulation import run_simulation

    out = Path(config.out)
    base = load_model(config.model)
    folders = client_folders(config)
    classes = sorted({n for f in folders for n in class_names(f)}) if all(class_names(f) for f in folders) else []
    if classes and base.config.classes and classes != base.config.classes:
        raise UserError(f"the clients' classes {classes} are not the model's {base.config.classes}")
    if classes and not base.config.classes:  # a new classification head, trained on the server
        base = with_classifier(base, classes, config.seed)
    plan = SplitPlan(base.config.to_json(), config.split, config.rank, config.rounds, config.local_steps, config.batch,
                     config.crop, config.lr, config.device_lr, eval_snr=config.eval_snr, seed=config.seed,
                     classes=base.config.classes,
                     sam_checkpoint=str(config.sam_checkpoint) if config.sam_checkpoint else None)
    result: dict = {}
    server = server_app(lambda context: SplitServer(base, plan, out), config.clients, until_round, progress, result)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    run_simulation(server, client_app(folders, out, DEVICE_CPUS), num_supernodes=config.clients,
                   backend_config={"client_resources": {"num_cpus": DEVICE_CPUS, "num_gpus": 0.0}})
    if "state" not in result:
        raise RuntimeError("the Flower simulation ended before the server finished; see its log above")
    state = result["state"]
    report = write_report(state["rows"], out, {"plan": plan.device_plan(), "crossed": state["crossed"],
                                               "clients": [str(f) for f in folders]})
    return FederateResult(result["model"], report, state["rows"], state["crossed"])
