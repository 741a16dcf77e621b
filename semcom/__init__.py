"""lamsc.semcom: the model, what happens to one image.

Images in (files, folders, class folders, VOC layout, bundled photographs); the SAM knowledge base (SKB)
segmenters; ASI attention, the SNR-conditioned codec and the ASC mask (``LamscModel``); the payload;
channels; the digital mode's entropy coding (``DigitalMode``); ``Transmitter`` / ``Receiver``; training; the baselines (separation, ideal, SoftCast); metrics.
"""

from lamsc.semcom.baseline import BASELINES, run_baseline
from lamsc.semcom.channels import CHANNELS, Channel
from lamsc.semcom.entropy import DigitalMode, EntropyModel, load_entropy_model
from lamsc.semcom.entropy_fit import fit_entropy_model
from lamsc.semcom.fallback import FallbackOptions, FallbackSegmenter
from lamsc.semcom.images import NamedImage, bundled_photos, iter_images, load_image, load_voc
from lamsc.semcom.model import LamscModel, ModelConfig, load_model
from lamsc.semcom.payload import PayloadError, pack, unpack
from lamsc.semcom.sam_architecture import MODEL_TYPES, SamArchitecture
from lamsc.semcom.sam_checkpoint import load_sam
from lamsc.semcom.segmenter import MaskGenerationOptions, SamSegmenter, Segmenter, build_segmenter
from lamsc.semcom.segments import Segments
from lamsc.semcom.transmission import Receiver, Reconstruction, Transmitter, transmit

__all__ = [
    "BASELINES",
    "CHANNELS",
    "MODEL_TYPES",
    "Channel",
    "DigitalMode",
    "EntropyModel",
    "FallbackOptions",
    "FallbackSegmenter",
    "LamscModel",
    "MaskGenerationOptions",
    "ModelConfig",
    "NamedImage",
    "PayloadError",
    "Receiver",
    "Reconstruction",
    "SamArchitecture",
    "SamSegmenter",
    "Segmenter",
    "Segments",
    "Transmitter",
    "build_segmenter",
    "bundled_photos",
    "fit_entropy_model",
    "iter_images",
    "load_entropy_model",
    "load_image",
    "load_model",
    "load_sam",
    "load_voc",
    "pack",
    "run_baseline",
    "transmit",
    "unpack",
]
