"""A deploy bundle on disk, read and checked: its manifest, each graph's hash, the model config and graph specs
it records. Torch-free: this is what a deployment opens (lamsc.export.bundle writes bundles)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from lamsc.errors import UserError
from lamsc.semcom.config import ModelConfig
from lamsc.semcom.entropy import EntropyModel
from lamsc.semcom.graph_specs import GraphSpec, TensorSpec

FORMAT, FORMAT_VERSION = "lamsc-bundle", 2  # 2: the transmitter outputs unmasked features and ASI's map
PRECISIONS = ("fp32", "fp16", "int8")


class BundleError(UserError):
    """A bundle that is incomplete, altered or from an incompatible lamsc."""


@dataclass
class Bundle:
    root: Path
    manifest: dict

    @property
    def graphs(self) -> list[str]:
        return list(self.manifest["graphs"])

    @property
    def precision(self) -> str:
        return self.manifest["precision"]

    @property
    def config(self) -> ModelConfig:
        return ModelConfig.from_json(json.dumps(self.manifest["model"]))

    @property
    def skb(self) -> dict:
        return self.manifest["skb"]

    def path(self, graph: str) -> Path:
        return self.root / self.manifest["graphs"][graph]["file"]

    def entropy_model(self) -> EntropyModel | None:
        """The digital mode's entropy model the bundle carries (lamsc.semcom.entropy.EntropyModel), or None
        when it was exported without one (its model had no density beside it)."""
        entry = self.manifest.get("entropy")
        return EntropyModel.load(self.root / entry["file"]) if entry else None

    def tensorrt_problems(self) -> list[str]:
        """What export found in the graphs that TensorRT cannot build, as "graph: problem"."""
        return [f"{name}: {p}" for name, g in self.manifest["graphs"].items() for p in g.get("tensorrt_problems", [])]

    def spec(self, graph: str) -> GraphSpec:
        g = self.manifest["graphs"][graph]
        tensors = {k: tuple(TensorSpec(t["name"], t["dtype"], tuple(t["shape"])) for t in g[k])
                   for k in ("inputs", "outputs")}
        return GraphSpec(graph, tensors["inputs"], tensors["outputs"])


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_bundle(root: str | Path) -> Bundle:
    """Read and check a bundle: its manifest, and the hash of every graph (and entropy model) against it."""
    root = Path(root)
    path = root / "manifest.json"
    if not path.is_file():
        raise BundleError(f"{root} is not a lamsc bundle (no manifest.json); make one with `lamsc export`")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{path} is not valid JSON ({e}); export the bundle again") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
        raise BundleError(f"{path} is not a version-{FORMAT_VERSION} lamsc bundle; export it again with this lamsc")
    files = [*manifest["graphs"].values(), *([manifest["entropy"]] if manifest.get("entropy") else [])]
    for g in files:
        f = root / g["file"]
        if not f.is_file():
            raise BundleError(f"bundle {root} lacks {g['file']} named in its manifest; copy the whole folder")
        if sha256(f) != g["sha256"]:
            raise BundleError(f"{f} does not match its manifest (sha256 differs): it was changed or damaged; "
                              "copy the bundle again or re-export it")
    return Bundle(root, manifest)
