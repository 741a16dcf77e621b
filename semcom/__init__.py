"""lamsc.semcom: the model, what happens to one image.

So far: images in (files, folders, VOC layout, bundled photographs), the SAM knowledge base (SKB)
segmenters, overlays, and the quality/rate metrics.
"""

from lamsc.semcom.fallback import FallbackOptions, FallbackSegmenter
from lamsc.semcom.images import NamedImage, bundled_photos, iter_images, load_image, load_voc
from lamsc.semcom.sam_checkpoint import MODEL_TYPES, SamArchitecture, load_sam
from lamsc.semcom.segmenter import MaskGenerationOptions, SamSegmenter, Segmenter, build_segmenter
from lamsc.semcom.segments import Segments

__all__ = [
    "MODEL_TYPES",
    "FallbackOptions",
    "FallbackSegmenter",
    "MaskGenerationOptions",
    "NamedImage",
    "SamArchitecture",
    "SamSegmenter",
    "Segmenter",
    "Segments",
    "build_segmenter",
    "bundled_photos",
    "iter_images",
    "load_image",
    "load_sam",
    "load_voc",
]
