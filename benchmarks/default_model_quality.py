"""A model's link quality on the bundled photographs: ASC at a channel budget, ASC's own choice, and everything
sent, over AWGN at 0, 10 and 20 dB (fallback SKB, channel noise seeded by the photograph's index).

    python benchmarks/default_model_quality.py [MODEL] [--cbr 0.0208333]

Prints one line per SNR and link: mean PSNR, CBR and kept fraction over the photographs.
"""

from __future__ import annotations

import argparse

import numpy as np

from lamsc.semcom.channels import Channel
from lamsc.semcom.fallback import FallbackSegmenter
from lamsc.semcom.images import bundled_photos
from lamsc.semcom.model import load_model
from lamsc.semcom.segmenter import CachedSegmenter
from lamsc.semcom.transmission import Receiver, Transmitter, transmit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=None, help="default: the shipped model")
    parser.add_argument("--cbr", type=float, default=1 / 48)
    args = parser.parse_args()
    model = load_model(args.model)
    segmenter = CachedSegmenter(FallbackSegmenter())
    photos, rx = bundled_photos(), Receiver(model)
    print("SNR dB | link | CBR | kept | PSNR dB")
    for snr in (0.0, 10.0, 20.0):
        links = {f"ASC at CBR {args.cbr:.4f}": Transmitter(model, segmenter, cbr=args.cbr),
                 "ASC, its own choice": Transmitter(model, segmenter)}
        if snr == 10.0:
            links["everything sent"] = Transmitter(model, segmenter, asc=False)
        for name, tx in links.items():
            rs = [transmit(p.pixels, tx, rx, Channel("awgn", snr), seed=k) for k, p in enumerate(photos)]
            print(f"{snr:g} | {name} | {np.mean([r.cbr for r in rs]):.4f} | "
                  f"{np.mean([r.kept_ratio for r in rs]):.2f} | {np.mean([r.psnr for r in rs]):.2f}", flush=True)


if __name__ == "__main__":
    main()
