"""What a process needs to rebuild an endpoint on its own: a small, picklable description of the deployment.

The link runs the transmitter and the receiver in separate processes (spawned, so that neither inherits
the other's CUDA context or threads); each builds its side from this description.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lamsc.errors import UserError
from lamsc.export.manifest import Bundle, load_bundle
from lamsc.runtime.backends import Backend, is_bundle, open_backend
from lamsc.semcom.config import DEFAULT_MODEL, ModelConfig
from lamsc.semcom.entropy import EntropyModel, entropy_beside
from lamsc.semcom.segmenter import MaskGenerationOptions, Segmenter
from lamsc.semcom.skb import build_segmenter


@dataclass(frozen=True)
class Deployment:
    source: str | None = None        # a bundle folder, a model checkpoint (.safetensors), or None: the default
    backend: str = "torch"           # torch | onnxruntime | tensorrt
    sam_checkpoint: str | None = None  # SKB for a checkpoint (bundles carry their own SKB graphs)
    device: str = "auto"

    def __post_init__(self) -> None:
        check_source(self.source)

    @property
    def is_bundle(self) -> bool:
        return is_bundle(self.source)

    def entropy_model(self) -> EntropyModel | None:
        """The digital mode's entropy model: the one a bundle carries, or the one beside a checkpoint (the
        shipped model's for None); None where there is none. UserError for one fitted for another model."""
        if self.is_bundle:
            return load_bundle(self.source).entropy_model()
        return entropy_beside(self.source or DEFAULT_MODEL)

    def open(self) -> tuple[Backend, ModelConfig, Segmenter]:
        """Build the backend, the model config and the SKB segmenter this deployment runs."""
        # a folder can only be a bundle; load_bundle says what is missing
        if self.source and Path(self.source).is_dir():
            bundle = load_bundle(self.source)
            if self.backend == "torch":
                raise UserError(f"{self.source} is an exported bundle: run it with --backend onnxruntime or "
                                "tensorrt, or pass the checkpoint it was exported from for torch")
            backend = open_backend(self.backend, bundle=bundle)
            return backend, bundle.config, bundle_segmenter(bundle, backend, self.sam_checkpoint)
        if self.backend != "torch":
            raise UserError(f"--backend {self.backend} runs an exported bundle; export one with "
                            f"`lamsc export {self.source + ' ' if self.source else ''}--out BUNDLE` and profile that")
        from lamsc.semcom.model import load_model  # a checkpoint runs on torch; a bundle needs none

        model = load_model(self.source)
        return (open_backend("torch", model=model, device=self.device), model.config,
                build_segmenter(self.sam_checkpoint))


def check_source(source: str | Path | None) -> None:
    """UserError where ``source``, a bundle folder or a model file (with or without its suffix), names nothing on
    disk: such a name could have meant either, so the message offers both."""
    if source is not None and not (Path(source).exists() or Path(source).with_suffix(".safetensors").exists()):
        raise UserError(f"{source} not found: give an exported bundle folder (`lamsc export` makes one) or a lamsc "
                        "model (.safetensors with its .json beside it)")


def bundle_segmenter(bundle: Bundle, backend: Backend, sam_checkpoint: str | None) -> Segmenter:
    if bundle.skb["kind"] == "sam":
        try:  # SAM's own mask generation (segment_anything) post-processes the SKB graphs' masks in torch
            from lamsc.runtime.skb import graph_segmenter
        except ModuleNotFoundError as e:
            raise UserError(f"{bundle.root} segments with SAM graphs, whose mask generation (segment_anything) needs "
                            f"torch, missing here ({e.name}): install JetPack's torch and segment-anything, or "
                            "export the bundle with the fallback SKB") from None
        options = MaskGenerationOptions.from_dict(bundle.skb["mask_generation"])
        return graph_segmenter(backend, options, bundle.skb.get("source", ""))
    return build_segmenter(sam_checkpoint)


def describe(source: str | Path | None) -> str:
    return str(source) if source else "the shipped default model"
