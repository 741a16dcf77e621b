"""lamsc.semcom: the model, what happens to one image.

Images in (files, folders, class folders, VOC layout, bundled photographs); the SAM knowledge base (SKB)
segmenters; ASI attention, the SNR-conditioned codec and the ASC mask (``LamscModel``); the payload;
channels; the digital mode's entropy coding (``DigitalMode``); ``Transmitter`` / ``Receiver``; training; the
baselines (separation, ideal, SoftCast); metrics. Names load on first use: the deployment runtime imports only
what needs no torch.
"""

from lamsc.lazy import lazy_exports

_EXPORTS = {
    "BASELINES": "baseline", "run_baseline": "baseline", "CHANNELS": "channels", "Channel": "channels",
    "DigitalMode": "entropy", "EntropyModel": "entropy", "load_entropy_model": "entropy",
    "fit_entropy_model": "entropy_fit", "FallbackOptions": "fallback", "FallbackSegmenter": "fallback",
    "NamedImage": "images", "bundled_photos": "images", "iter_images": "images", "load_image": "images",
    "load_voc": "images", "LamscModel": "model", "ModelConfig": "config", "load_model": "model",
    "PayloadError": "payload", "pack": "payload", "unpack": "payload", "MODEL_TYPES": "sam_architecture",
    "SamArchitecture": "sam_architecture", "load_sam": "sam_checkpoint", "MaskGenerationOptions": "segmenter",
    "SamSegmenter": "sam_segmenter", "Segmenter": "segmenter", "build_segmenter": "skb", "Segments": "segments",
    "Receiver": "transmission", "Reconstruction": "transmission", "Transmitter": "transmission",
    "transmit": "transmission",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
