"""lamsc: large-AI-model-based semantic communication of images, made to run on the edge.

Stages, one subpackage each, each importing only those below it (docs/architecture.md):
``lamsc.compress`` > ``lamsc.runtime`` > ``lamsc.export`` > ``lamsc.semcom`` (the model) > ``lamsc.kernels``.
The ``lamsc`` command (``lamsc.cli``) wraps the Python calls named here, each a small config in and a result
out; they load on first use, so ``import lamsc`` stays light:

- transmit: ``transmit(image, Transmitter(model, segmenter), Receiver(model), Channel("awgn", 10.0))``
- digital mode: ``Transmitter(model, segmenter, digital=DigitalMode(load_entropy_model("m.safetensors"), 0.5))``,
  ``Receiver(model, entropy=...)``; fit the entropy model with ``fit_entropy_model`` (``lamsc density fit``)
- train: ``train_model(TrainJob(data=["photos/"]))``
- compress: ``compress_to_budget(CompressConfig(budget="latency-ms=60%"))``
- export: ``write_bundle(model, "bundle/", "int8")``
- profile: ``profile_link(ProfileConfig("bundle/", energy="auto"))``
- knowledge bases: ``build_base(BuildConfig("kb/", ["photos/"]))``; ``Receiver(model, refine=Retriever.open(["kb/"]))``
- federate: ``federate(FederateConfig(data=["client0/", "client1/"], rounds=20))`` (needs ``lamsc[fl]``)
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version as _version

from lamsc.errors import UserError

try:
    __version__ = _version("lamsc")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

# name -> the module that defines it
_API = {
    **dict.fromkeys(("Transmitter", "Receiver", "transmit", "LinkResult"), "lamsc.semcom.transmission"),
    "Channel": "lamsc.semcom.channels",
    **dict.fromkeys(("DigitalMode", "EntropyModel", "load_entropy_model"), "lamsc.semcom.entropy"),
    "fit_entropy_model": "lamsc.semcom.entropy_fit",
    **dict.fromkeys(("load_model", "LamscModel"), "lamsc.semcom.model"),
    "ModelConfig": "lamsc.semcom.config",
    **dict.fromkeys(("load_image", "bundled_photos", "iter_images"), "lamsc.semcom.images"),
    "build_segmenter": "lamsc.semcom.skb",
    "SamSegmenter": "lamsc.semcom.sam_segmenter",
    "FallbackSegmenter": "lamsc.semcom.fallback",
    **dict.fromkeys(("TrainJob", "TrainResult", "TrainConfig", "train_model"), "lamsc.semcom.training"),
    **dict.fromkeys(("CompressConfig", "CompressResult", "compress_to_budget"), "lamsc.compress.to_budget"),
    **dict.fromkeys(("write_bundle", "Int8Options", "SamExport"), "lamsc.export.bundle"),
    **dict.fromkeys(("load_bundle", "Bundle"), "lamsc.export.manifest"),
    **dict.fromkeys(("ProfileConfig", "ProfileResult", "profile_link"), "lamsc.runtime.profiler"),
    "KnowledgeBase": "lamsc.retrieval.base",
    "Retriever": "lamsc.retrieval.refine",
    **dict.fromkeys(("BuildConfig", "MergeConfig", "QueryConfig", "BaseInfo", "build_base", "add_to_base",
                     "merge_bases", "query_bases", "base_info"), "lamsc.retrieval.jobs"),
    **dict.fromkeys(("FederateConfig", "FederateResult", "federate"), "lamsc.federated.simulation"),
}

__all__ = ["UserError", "__version__", *_API]


STAGES = ("semcom", "compress", "export", "runtime", "kernels", "retrieval", "federated")


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(_API[name]), name)
    if name in STAGES:  # lamsc.runtime.backends... after a bare `import lamsc`
        return import_module(f"lamsc.{name}")
    raise AttributeError(f"module 'lamsc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API, *STAGES])
