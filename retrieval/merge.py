"""Merging knowledge bases, by a stated policy: a device's local base pushed into the global one.

``merge(bases, policy)`` takes the union of the bases' entries and then, in this order:

1. exact duplicates (the same id: the same pixels) become one entry; of their labels, sources and times the
   newest time wins, ties broken by the smallest (label, source);
2. stale entries go: those delivered more than ``policy.max_age`` seconds before the newest entry of the union;
3. near duplicates go: entries are visited newest first (ties by id), and one whose key lies within
   ``policy.near_duplicate`` (squared L2 distance of unit keys; 0.02 is cos 0.99) of a kept entry of the same
   label is dropped, so of two near-identical views the newer stays;
4. the size cap: the newest ``policy.cap`` entries stay (ties by id).

Every step is a function of the union alone, and a base's files are sorted by id, so merging the same bases
in any order gives the same base, byte for byte. The result's revision is
one more than the highest of its inputs; its parents are their content hashes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import faiss
import numpy as np

from lamsc.errors import UserError
from lamsc.retrieval.base import KnowledgeBase

NEAR_DUPLICATE = 0.02  # squared L2 between unit keys: cos similarity 0.99


@dataclass(frozen=True)
class MergePolicy:
    """``cap``: most entries kept (None: no cap); ``max_age``: seconds before the newest entry past which an
    entry is stale (None: none is); ``near_duplicate``: key distance under which two entries of one label are
    one (0: exact duplicates only)."""

    cap: int | None = None
    max_age: float | None = None
    near_duplicate: float = NEAR_DUPLICATE

    def __post_init__(self):
        if self.cap is not None and self.cap < 1:
            raise UserError(f"merge cap {self.cap}: keep at least 1 entry (--cap)")
        if self.max_age is not None and self.max_age < 0:
            raise UserError(f"merge max age {self.max_age}: give a non-negative number of seconds (--max-age)")
        if self.near_duplicate < 0:
            raise UserError("near-duplicate distance must be non-negative (--near-duplicate)")


def merge(bases: list[KnowledgeBase], policy: MergePolicy = MergePolicy(), name: str | None = None,
          kind: str = "global") -> KnowledgeBase:
    """One base of ``kind`` (default global) and ``name`` (default the first base's by name order) from
    ``bases`` by ``policy``; the order of ``bases`` does not matter. Raises UserError for no bases."""
    if not bases:
        raise UserError("nothing to merge: give at least one knowledge base")
    rows = {}
    for base in bases:
        for i, key, label, source, t, blob in base.rows():
            row = (i, key, label, source, t, blob)
            old = rows.get(i)
            if old is None or (-t, label, source) < (-old[4], old[2], old[3]):
                rows[i] = row
    kept = sorted(rows.values(), key=lambda r: (-r[4], r[0]))  # newest first, ties by id
    if policy.max_age is not None and kept:
        newest = kept[0][4]
        kept = [r for r in kept if newest - r[4] <= policy.max_age]
    if policy.near_duplicate > 0:
        kept = drop_near_duplicates(kept, policy.near_duplicate)
    if policy.cap is not None:
        kept = kept[: policy.cap]
    out = KnowledgeBase(name or sorted(b.name for b in bases)[0], kind)
    out.set_rows(kept)
    out.revision = max(b.revision for b in bases) + 1
    out.parents = sorted({b.content_hash for b in bases})
    return out


def drop_near_duplicates(rows: list[tuple], distance: float) -> list[tuple]:
    """``rows`` (newest first) without those whose key is within ``distance`` of an earlier kept row's of the
    same label."""
    if not rows:
        return rows
    keys = np.stack([r[1] for r in rows]).astype(np.float32)
    labels = [r[2] for r in rows]
    index = faiss.IndexFlatL2(keys.shape[1])  # exact: the same neighbours whatever the order came in
    index.add(keys)
    limits, _, near = index.range_search(keys, distance)
    kept = np.zeros(len(rows), bool)
    for j in range(len(rows)):
        neighbours = near[limits[j]: limits[j + 1]]
        kept[j] = not any(kept[i] and labels[i] == labels[j] for i in neighbours if i < j)
    return [r for r, k in zip(rows, kept) if k]


def policy_dict(policy: MergePolicy) -> dict:
    return asdict(policy)
