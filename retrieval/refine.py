"""Retrieval at the receiver: the Refiner (lamsc.semcom.transmission) that looks each decoded image up in the
local and global knowledge bases and, when one of their entries is the same scene, fuses it in.

For each decoded image: its key (lamsc.retrieval.keys) -> the ``k`` nearest entries over all bases (faiss,
``k`` from each, the nearest ``k`` of those kept) -> each entry's content registered onto the decoded image
(lamsc.retrieval.align) -> the entries whose score (agreement plus the fusion network's sharpness weight times
the peak-to-sidelobe ratio) reaches its ``threshold`` (both set on held-out views: see
lamsc.retrieval.training). If any does, they are composited into one reference (at each pixel
the one that agrees best with what arrived: lamsc.retrieval.align.composite), the fusion network refines the
image with it and the kNN label (the label most of the accepted entries carry, best score breaking ties)
becomes a task output; otherwise the receiver's output is returned as it was, the same object, bit for bit.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from lamsc.errors import UserError
from lamsc.retrieval.align import align_all, composite
from lamsc.retrieval.base import KnowledgeBase
from lamsc.retrieval.fusion import FusionNet
from lamsc.retrieval.keys import image_key
from lamsc.semcom.transmission import Reconstruction

NEAREST = 4  # entries registered per decoded image: the nearest by key over all bases


class Retriever:
    """A Refiner over ``bases`` (local and global KnowledgeBases) with ``fusion`` (default: the shipped network).

    ``threshold`` overrides the fusion network's own; ``k``: entries registered, the nearest by key over all
    bases. ``last`` holds what the last call
    did: timings in seconds (``key``, ``search``, ``fetch``, ``align``, ``fuse``), the best score (``score``) and
    that entry's agreement, whether it was used, and the image as decoded (``decoded``), before retrieval."""

    def __init__(self, bases: list[KnowledgeBase], fusion: FusionNet | None = None, threshold: float | None = None,
                 k: int = NEAREST):
        if not bases:
            raise UserError("retrieval needs at least one knowledge base (--kb DIR)")
        self.bases, self.k = list(bases), k
        self.fusion = fusion if fusion is not None else FusionNet.load()
        self.threshold = self.fusion.config.threshold if threshold is None else float(threshold)
        self.last: dict = {}

    @classmethod
    def open(cls, folders: list[str | Path], fusion: str | Path | None = None) -> "Retriever":
        """A Retriever over the bases in ``folders`` (each checked as KnowledgeBase.open does) and the fusion
        network at ``fusion`` (None: the shipped one)."""
        return cls([KnowledgeBase.open(f) for f in folders], FusionNet.load(fusion))

    def candidates(self, image: np.ndarray, accept: float | None = None) -> tuple[list[tuple], dict]:
        """The entries nearest ``image`` (H, W, 3) uint8 in every base, each registered onto it:
        [(score, Aligned, base, Hit)], best score first, with the seconds each step took; the light is
        matched on those whose score reaches ``accept`` (None: the threshold), the rest have no image."""
        t0 = time.perf_counter()
        key = image_key(image)
        t1 = time.perf_counter()
        hits = sorted(((base, hit) for base in self.bases for hit in base.query(key, self.k)[0]),
                      key=lambda bh: bh[1].distance)[: self.k]
        t2 = time.perf_counter()
        contents = [base.content(hit.position) for base, hit in hits]
        t3 = time.perf_counter()
        aligned = align_all(image, contents, self.threshold if accept is None else accept,
                            self.fusion.config.sharpness_weight)
        found = [(a.score, a, base, hit) for (base, hit), a in zip(hits, aligned)]
        found.sort(key=lambda f: -f[0])
        seconds = {"key": t1 - t0, "search": t2 - t1, "fetch": t3 - t2, "align": time.perf_counter() - t3}
        return found, seconds

    def __call__(self, rec: Reconstruction, snr_db: float) -> Reconstruction:
        found, seconds = self.candidates(rec.image)
        best = found[0][0] if found else -1.0
        self.last = {"score": best, "agreement": found[0][1].agreement if found else -1.0, "used": False,
                     "seconds": seconds, "decoded": rec.image}
        accepted = [f for f in found if f[1].image is not None]  # light-matched: at or above the threshold
        if not accepted:
            return rec
        t0 = time.perf_counter()
        reference, coverage = composite(rec.image, [a for _, a, _, _ in accepted])
        refined = self.fuse(rec.image, reference, coverage, snr_db)
        seconds["fuse"] = time.perf_counter() - t0
        votes = Counter(hit.label for _, _, _, hit in accepted if hit.label)
        label = max(votes, key=lambda lab: (votes[lab], lab == accepted[0][3].label)) if votes else ""
        self.last["used"] = True
        return replace(rec, image=refined, retrieved={
            "label": label, "score": round(best, 4), "agreement": round(found[0][1].agreement, 4),
            "shift": list(found[0][1].shift),
            "entries": [{"base": base.name, "kind": base.kind, "id": hit.id, "label": hit.label,
                         "distance": round(hit.distance, 4), "agreement": round(a.agreement, 4),
                         "sharpness": round(a.sharpness, 2), "score": round(score, 4)}
                        for score, a, base, hit in accepted]})

    @torch.inference_mode()
    def fuse(self, decoded: np.ndarray, reference: np.ndarray, coverage: np.ndarray, snr_db: float) -> np.ndarray:
        """decoded (H, W, 3) uint8, reference (H, W, 3) float in [0, 1] and coverage (H, W) -> (H, W, 3) uint8."""
        h, w = decoded.shape[:2]
        pad = (0, w % 2, 0, h % 2)  # the network halves the resolution

        def t(a):
            x = torch.from_numpy(np.ascontiguousarray(a, np.float32))
            x = x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]
            return torch.nn.functional.pad(x, pad, mode="replicate")

        out = self.fusion(t(decoded / 255.0), t(reference), t(coverage), torch.tensor([float(snr_db)]))
        return (out[0, :, :h, :w].permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
