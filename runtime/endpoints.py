"""The edge transmitter and receiver: the same steps as lamsc.semcom's, with the networks on a backend.

``EdgeTransmitter.send`` and ``EdgeReceiver.receive``/``receive_features`` keep the interface of
lamsc.semcom.transmission's Transmitter and Receiver, so ``transmit`` and the link run on either.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from lamsc.runtime.backends import Backend
from lamsc.semcom.asc import depth_levels, levels_to_mask
from lamsc.semcom.model import ModelConfig, power_normalise
from lamsc.semcom.payload import Unpacked
from lamsc.semcom.segmenter import Segmenter
from lamsc.semcom.transmission import (Receiver, Reconstruction, Sent, assumed_snr, model_inputs, pack_features,
                                      reconstruction)


class EdgeTransmitter:
    """Segment (SKB), run the transmitter graph, pack with the ASC kernel (CUDA when the features are on a
    GPU, else the reference). ``seconds`` of each send: segment, encode, pack."""

    def __init__(self, backend: Backend, config: ModelConfig, segmenter: Segmenter, snr_db: float | None = None,
                 asc: bool = True):
        self.backend, self.config, self.segmenter, self.snr_db, self.asc = backend, config, segmenter, snr_db, asc
        self.pack_device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def send(self, image: np.ndarray, snr_db: float | None = None) -> Sent:
        """As lamsc.semcom.transmission.Transmitter.send."""
        snr_db = assumed_snr(self.snr_db, snr_db)
        t0 = time.perf_counter()
        segments = self.segmenter.segment(image)
        t1 = time.perf_counter()
        x, masks = model_inputs(image, segments, self.config.segments)
        out = self.backend.run("transmitter", {"image": x.numpy(), "masks": masks.numpy(),
                                               "snr_db": np.array([snr_db], np.float32)})
        self.backend.synchronize()
        t2 = time.perf_counter()
        z = transmit_power(out["z"], out["depth"], self.config.num_levels)[0].to(self.pack_device)
        depth = torch.from_numpy(out["depth"][0, 0]).to(self.pack_device) if self.asc else None
        sent = pack_features(z, depth, self.config, image.shape[:2], snr_db, segments,
                             np.zeros(image.shape[:2], np.float32))
        sent.seconds = {"segment": t1 - t0, "encode": t2 - t1, "pack": time.perf_counter() - t2}
        if self.backend.gpu_seconds is not None:
            sent.gpu_seconds = {"encode": self.backend.gpu_seconds}
        return sent


def transmit_power(z: np.ndarray, depth: np.ndarray, num_levels: int) -> torch.Tensor:
    """The transmitter graph's kept features at unit average power, in float32, as the radio sends them.

    The graph ends in the same normalisation, but in a reduced precision its reduction and scale are
    themselves quantised: the default codec's int8 transmitter sent -0.6 to +1.8 dB off unit power, which
    over a channel whose noise is set for unit power is free SNR (or lost SNR). For a float graph this
    changes nothing beyond rounding.
    """
    levels = depth_levels(torch.from_numpy(depth[:, 0]), num_levels)
    return power_normalise(torch.from_numpy(z), levels_to_mask(levels, z.shape[1], num_levels))


class EdgeReceiver(Receiver):
    """Unpack a payload (or take the analog link's features) and run the receiver graph; a damaged payload
    is a reported loss, as in lamsc.semcom's Receiver, whose ``receive`` this inherits. ``gpu_seconds``:
    the last receiver graph's time on the GPU by CUDA events, None off a GPU."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.gpu_seconds = None

    def receive_features(self, unpacked: Unpacked, snr_db: float) -> Reconstruction:
        f = unpacked.features
        out = self.backend.run("receiver", {"z": f.values[None], "levels": f.levels[None].astype(np.int64),
                                            "snr_db": np.array([snr_db], np.float32)})
        self.gpu_seconds = self.backend.gpu_seconds
        return reconstruction(out, unpacked.height, unpacked.width)

