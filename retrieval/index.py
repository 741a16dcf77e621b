"""Nearest-neighbour search over a base's keys with faiss: exact (flat) for small bases, IVF past a size.

Keys are unit vectors (lamsc.retrieval.keys), searched by squared L2 distance. Up to ``FLAT_LIMIT`` entries the
index is ``IndexFlatL2``: exact, built at once, and its search grows with the base (one core of this workplace's
shared CPU: 6.5 ms median at 10k entries, 125 ms at 100k; benchmarks/results/kb_retrieval.md). Past it,
``IndexIVFFlat`` with about 4 sqrt(N) lists, ``NPROBE`` of them searched: 0.37 ms at 10k (recall@1 0.99 against
the flat index) and 2.3 ms at 100k (recall@1 1.0), for a build (k-means) of 1 s and 59 s.
"""

from __future__ import annotations

import math

import faiss
import numpy as np

FLAT_LIMIT = 10_000  # entries; past it an IVF index (exact search stays within the 10 ms budget up to here)
NPROBE = 16          # IVF lists searched per query


def build_index(keys: np.ndarray, kind: str = "auto") -> faiss.Index:
    """A faiss index over ``keys`` (N, D) float32: ``kind`` "flat", "ivf", or "auto" (flat up to FLAT_LIMIT).

    An IVF index is trained on the keys themselves (k-means, faiss's seed), so the same keys build the same
    index. Raises ValueError for an unknown kind."""
    keys = np.ascontiguousarray(keys, np.float32)
    n, d = keys.shape
    kind = ("flat" if n <= FLAT_LIMIT else "ivf") if kind == "auto" else kind
    if kind == "flat":
        index = faiss.IndexFlatL2(d)
    elif kind == "ivf":
        lists = max(1, min(int(4 * math.sqrt(n)), n // 39))  # faiss wants about 39 training points per list
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, lists)
        index.train(keys)
        index.nprobe = min(NPROBE, lists)
    else:
        raise ValueError(f"unknown index kind {kind!r}; choose auto, flat or ivf")
    if n:
        index.add(keys)
    return index


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest entries to each query (Q, D) -> (distances (Q, k) squared L2, ids (Q, k) int64),
    nearest first; -1 ids (and inf distances) where the index holds fewer than k entries."""
    queries = np.ascontiguousarray(np.atleast_2d(queries), np.float32)
    if index.ntotal == 0:
        return np.full((len(queries), k), np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
    dist, ids = index.search(queries, k)
    dist[ids < 0] = np.inf
    return dist, ids


def index_bytes(index: faiss.Index) -> int:
    """The index's size serialised, bytes: what it holds in memory, give or take faiss's own bookkeeping."""
    return int(faiss.serialize_index(index).size)
