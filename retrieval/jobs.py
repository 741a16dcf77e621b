"""What ``lamsc kb build|add|merge|query|info`` do, as Python calls: a small config in, a result out.

- ``build_base(BuildConfig(folder, images, kind))``: a new base of images (content delivered well) in ``folder``;
- ``add_to_base(BuildConfig(folder, images))``: more entries in an existing base (its kind kept);
- ``merge_bases(MergeConfig(bases, out, policy))``: one base from several (lamsc.retrieval.merge);
- ``query_bases(QueryConfig(bases, images, k))``: the nearest entries to each image, with their agreement;
- ``base_info(folder)``: what a base holds, checked.

Images are named as lamsc.semcom.images.iter_images names them; an entry's label is ``label`` when given,
else the class folder an image came from, else its name.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

from lamsc.errors import UserError
from lamsc.retrieval.base import KnowledgeBase, read_manifest
from lamsc.retrieval.merge import MergePolicy, merge
from lamsc.retrieval.refine import NEAREST, Retriever
from lamsc.retrieval.fusion import FusionNet
from lamsc.semcom.images import NamedImage, iter_images

Images = Sequence[Union[str, Path, NamedImage]]


def named(images: Images) -> list[NamedImage]:
    out = [i for i in images if isinstance(i, NamedImage)]
    out += list(iter_images([i for i in images if not isinstance(i, NamedImage)]))
    if not out:
        raise UserError("no images given; name image files or folders")
    return out


def label_of(item: NamedImage, label: str | None) -> str:
    return label if label is not None else item.name.split("/")[0]


@dataclass
class BaseInfo:
    """A base as saved: ``folder``, ``name``, ``kind``, ``entries``, ``revision``, ``content_hash``, ``parents``,
    ``memory`` in bytes (keys, index; content, which stays on disk), ``labels`` (entries per label), and for
    build/add/merge ``added`` (new entries) and ``seconds`` (the whole call, index build included)."""

    folder: str
    name: str
    kind: str
    entries: int
    revision: int
    content_hash: str
    parents: list[str]
    memory: dict
    labels: dict
    added: int | None = None
    seconds: float | None = None

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def of(cls, base: KnowledgeBase, added: int | None = None, seconds: float | None = None) -> "BaseInfo":
        labels: dict[str, int] = {}
        for lab in base.labels:
            labels[lab] = labels.get(lab, 0) + 1
        return cls(str(base.root), base.name, base.kind, len(base), base.revision, base.content_hash,
                   base.parents, base.memory_bytes(), dict(sorted(labels.items())), added, seconds)


@dataclass
class BuildConfig:
    """``folder`` to write; ``images`` (files, folders or NamedImages): the content; ``kind`` local or global;
    ``name`` (default: the folder's name); ``label`` for every entry (default: per image, see the module);
    ``source``: the link or device that delivered them (default: the base's name); ``time``: when, seconds
    (default: now)."""

    folder: Union[str, Path]
    images: Images
    kind: str = "local"
    name: str | None = None
    label: str | None = None
    source: str | None = None
    time: float | None = None


def build_base(config: BuildConfig) -> BaseInfo:
    """Make a new base in ``config.folder``. Raises UserError if a base is already there (add to it, or merge)."""
    t0 = time.perf_counter()
    folder = Path(config.folder)
    if (folder / "manifest.json").exists():
        raise UserError(f"{folder} already holds a knowledge base; add to it with `lamsc kb add`, or choose "
                        "another folder")
    items = named(config.images)
    name = config.name or folder.name
    stamp = time.time() if config.time is None else config.time
    base = KnowledgeBase.build(name, config.kind, [i.pixels for i in items], [label_of(i, config.label) for i in items],
                               [config.source or name] * len(items), [stamp] * len(items))
    base.save(folder)
    base.index  # built here, so the time reported includes it
    return BaseInfo.of(base, len(base), time.perf_counter() - t0)


def add_to_base(config: BuildConfig) -> BaseInfo:
    """Add ``config.images`` to the base in ``config.folder`` (checked on opening); images it holds are skipped."""
    t0 = time.perf_counter()
    base = KnowledgeBase.open(config.folder)
    items = named(config.images)
    stamp = time.time() if config.time is None else config.time
    added = base.add([i.pixels for i in items], [label_of(i, config.label) for i in items],
                     [config.source or base.name] * len(items), [stamp] * len(items))
    base.save(config.folder)
    base.index
    return BaseInfo.of(base, added, time.perf_counter() - t0)


@dataclass
class MergeConfig:
    """``bases``: folders to merge (any order: the result is the same); ``out``: the merged base's folder;
    ``policy``: lamsc.retrieval.merge.MergePolicy; ``kind`` of the result; ``name`` (default: out's name)."""

    bases: Sequence[Union[str, Path]]
    out: Union[str, Path]
    policy: MergePolicy = field(default_factory=MergePolicy)
    kind: str = "global"
    name: str | None = None


def merge_bases(config: MergeConfig) -> BaseInfo:
    t0 = time.perf_counter()
    bases = [KnowledgeBase.open(b) for b in config.bases]
    merged = merge(bases, config.policy, config.name or Path(config.out).name, config.kind)
    merged.save(config.out)
    merged.index
    return BaseInfo.of(merged, len(merged), time.perf_counter() - t0)


@dataclass
class QueryConfig:
    """``bases``: folders; ``images``: what to look up (files, folders or NamedImages, as a receiver decoded
    them); ``k``: entries registered (the nearest over all bases); ``fusion``: the network whose threshold
    says which entries would be used
    (None: the shipped one)."""

    bases: Sequence[Union[str, Path]]
    images: Images
    k: int = NEAREST
    fusion: Union[str, Path, None] = None


def query_bases(config: QueryConfig) -> list[dict]:
    """Per image: its nearest entries in every base (base, id, label, key distance, registration agreement,
    sharpness and score, whether retrieval would use it) and the seconds each step took."""
    retriever = Retriever([KnowledgeBase.open(b) for b in config.bases], FusionNet.load(config.fusion), k=config.k)
    rows = []
    for item in named(config.images):
        found, seconds = retriever.candidates(item.pixels)
        rows.append({"image": item.name, "threshold": retriever.threshold, "seconds": seconds, "entries": [
            {"base": base.name, "kind": base.kind, "id": hit.id, "label": hit.label, "distance": round(hit.distance, 4),
             "agreement": round(a.agreement, 4), "sharpness": round(a.sharpness, 2), "score": round(score, 4),
             "used": bool(score >= retriever.threshold)}
            for score, a, base, hit in found]})
    return rows


def base_info(folder: Union[str, Path]) -> BaseInfo:
    """What the base in ``folder`` holds; opening it checks every file (UserError when damaged or foreign)."""
    read_manifest(Path(folder))
    return BaseInfo.of(KnowledgeBase.open(folder))
