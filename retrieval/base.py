"""A knowledge base: entries of (semantic key, content), faiss-indexed, kept in a folder with a manifest.

    BASE/
      manifest.json   format, version, kind (local | global), key recipe, entry count, revision, parents,
                      each file's SHA-256, and the base's content hash
      keys.npy        (N, KEY_DIM) float32 keys, one per entry (lamsc.retrieval.keys)
      content.bin     the entries' content (the image each stands for), one after another, raw: height and
                      width (uint16, little-endian), then the RGB pixels, uint8, row by row
      entries.json    per entry: id, label, source, time, and where its content lies in content.bin

An entry's ``id`` is the SHA-256 (first 16 hex digits) of its content's pixels and shape, so the same image
is the same entry wherever it was added. Entries are kept sorted by id, so the files of a base depend on its
set of entries only, never on the order they came in (lamsc.retrieval.merge relies on it). ``time`` is when
the content was delivered (seconds, the caller's clock); ``source`` the link or device that delivered it;
``label`` what it shows (a scene or class name), which retrieval-assisted task outputs vote with.

Opening a base checks the manifest's format and version, the key recipe against this lamsc's, and every
file's hash; a damaged, foreign or mismatched base is refused in one line (UserError). Content stays on disk
(memory-mapped) and is read per retrieved entry, so a base's memory is its keys and its index; kept raw, an
entry is read without decoding (a PNG of 128 x 128 pixels costs about 2 ms to decode on one core).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lamsc.errors import UserError
from lamsc.retrieval.index import build_index, index_bytes, search
from lamsc.retrieval.keys import KEY_DIM, KEY_KIND, image_keys

FORMAT, FORMAT_VERSION = "lamsc-kb", 1
KINDS = ("local", "global")
FILES = ("keys.npy", "content.bin", "entries.json")


def entry_id(image: np.ndarray) -> str:
    """The id of the content ``image`` (H, W, 3) uint8: SHA-256 of its shape and pixels, 16 hex digits."""
    h = hashlib.sha256(str(image.shape).encode())
    h.update(np.ascontiguousarray(image, np.uint8).tobytes())
    return h.hexdigest()[:16]


def raw_bytes(image: np.ndarray) -> bytes:
    """``image`` (H, W, 3) uint8 as content.bin holds it: H and W as little-endian uint16, then the pixels."""
    h, w = image.shape[:2]
    return struct.pack("<HH", h, w) + np.ascontiguousarray(image, np.uint8).tobytes()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Hit:
    """One retrieved entry: its position in the base, id, squared key distance (0..4), label and source."""

    position: int
    id: str
    distance: float
    label: str
    source: str
    time: float


@dataclass(repr=False)
class KnowledgeBase:
    """Entries sorted by id: ``ids``, ``keys`` (N, KEY_DIM) float32, ``labels``, ``sources``, ``times`` and
    each entry's content (``content(i)``); ``kind`` local or global; ``revision`` counts the changes that made it;
    ``parents``: content hashes of the bases it was merged from. Build with ``KnowledgeBase.build``, grow with
    ``add``, combine with lamsc.retrieval.merge.merge, keep with ``save`` and ``KnowledgeBase.open``."""

    name: str
    kind: str
    ids: list[str] = field(default_factory=list)
    keys: np.ndarray = field(default_factory=lambda: np.zeros((0, KEY_DIM), np.float32))
    labels: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    blobs: list = field(default_factory=list)  # per entry: its raw_bytes (or a memory-mapped slice of them)
    revision: int = 0
    parents: list[str] = field(default_factory=list)
    root: Path | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise UserError(f"unknown knowledge base kind {self.kind!r}; choose local or global")
        self._index = None

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"KnowledgeBase({self.name!r}, {self.kind}, {len(self)} entries, revision {self.revision})"

    # -- building -------------------------------------------------------------------------------------
    @classmethod
    def build(cls, name: str, kind: str, images: list[np.ndarray], labels: list[str] | None = None,
              sources: list[str] | None = None, times: list[float] | None = None) -> "KnowledgeBase":
        """A base of ``images`` (each (H, W, 3) uint8, H, W >= 16: content delivered well) keyed by
        lamsc.retrieval.keys; labels, sources and times per image (default "", ``name``, 0)."""
        base = cls(name, kind)
        base.add(images, labels, sources, times)
        base.revision = 1
        return base

    def add(self, images: list[np.ndarray], labels: list[str] | None = None, sources: list[str] | None = None,
            times: list[float] | None = None) -> int:
        """Add ``images`` as entries (an image already in the base is skipped); returns how many were new.
        The revision goes up by one when any was."""
        n = len(images)
        labels = list(labels) if labels is not None else [""] * n
        sources = list(sources) if sources is not None else [self.name] * n
        times = list(times) if times is not None else [0.0] * n
        if not (len(labels) == len(sources) == len(times) == n):
            raise ValueError("give one label, source and time per image")
        rows, seen = [], set(self.ids)
        for img, label, src, t in zip(images, labels, sources, times):
            if (img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or min(img.shape[:2]) < 16
                    or max(img.shape[:2]) > 65535):
                raise UserError(f"knowledge base content must be RGB uint8 images of 16 to 65535 pixels a side, "
                                f"not {img.dtype} {img.shape}")
            i = entry_id(img)
            if i not in seen:
                seen.add(i)
                rows.append((i, img, label, src, float(t)))
        if not rows:
            return 0
        keys = np.concatenate([image_keys(img[None]) for _, img, *_ in rows])  # sizes may differ per image
        self.set_rows([*self.rows(), *((i, k, lab, s, t, raw_bytes(img))
                                    for (i, img, lab, s, t), k in zip(rows, keys))])
        self.revision += 1
        return len(rows)

    def rows(self):
        """The entries as (id, key, label, source, time, raw content) tuples, sorted by id."""
        return zip(self.ids, self.keys, self.labels, self.sources, self.times, self.blobs)

    def set_rows(self, rows) -> None:
        """Replace the entries by ``rows`` (id, key, label, source, time, raw content), kept sorted by id."""
        rows = sorted(rows, key=lambda r: r[0])
        self.ids = [r[0] for r in rows]
        self.keys = np.stack([r[1] for r in rows]).astype(np.float32) if rows else np.zeros((0, KEY_DIM), np.float32)
        self.labels, self.sources = [r[2] for r in rows], [r[3] for r in rows]
        self.times, self.blobs = [float(r[4]) for r in rows], [r[5] for r in rows]
        self._index = None

    # -- looking up -----------------------------------------------------------------------------------
    @property
    def index(self):
        """The faiss index over the keys (lamsc.retrieval.index.build_index), built on first use."""
        if self._index is None:
            self._index = build_index(self.keys)
        return self._index

    def query(self, keys: np.ndarray, k: int = 4) -> list[list[Hit]]:
        """The ``k`` nearest entries to each key (Q, KEY_DIM) (or one (KEY_DIM,)), nearest first."""
        dist, pos = search(self.index, keys, k)
        return [[Hit(int(p), self.ids[p], float(d), self.labels[p], self.sources[p], self.times[p])
                 for d, p in zip(drow, prow) if p >= 0] for drow, prow in zip(dist, pos)]

    def content(self, position: int) -> np.ndarray:
        """The image entry ``position`` stands for, (H, W, 3) uint8."""
        blob = self.blobs[position]
        data = np.frombuffer(blob, np.uint8) if isinstance(blob, bytes) else blob
        h, w = struct.unpack("<HH", bytes(data[:4]))
        return np.asarray(data[4:]).reshape(h, w, 3)

    def memory_bytes(self) -> dict:
        """What the base holds in memory, bytes: ``keys``, ``index``; and ``content`` (on disk once saved)."""
        return {"keys": int(self.keys.nbytes), "index": index_bytes(self.index),
                "content": int(sum(len(b) for b in self.blobs))}

    # -- files ----------------------------------------------------------------------------------------
    def files(self) -> dict[str, bytes]:
        """The base's files but the manifest, as bytes: they depend on its set of entries alone."""
        buf = io.BytesIO()
        np.save(buf, self.keys, allow_pickle=False)
        offsets = np.cumsum([0] + [len(b) for b in self.blobs]).tolist()
        entries = {"id": self.ids, "label": self.labels, "source": self.sources, "time": self.times,
                   "offset": offsets[:-1], "length": [len(b) for b in self.blobs]}
        return {"keys.npy": buf.getvalue(), "content.bin": b"".join(bytes(b) for b in self.blobs),
                "entries.json": json.dumps(entries, separators=(",", ":")).encode()}

    def manifest(self, hashes: dict[str, str] | None = None) -> dict:
        hashes = hashes or {name: sha256(data) for name, data in self.files().items()}
        return {"format": FORMAT, "version": FORMAT_VERSION, "name": self.name, "kind": self.kind,
                "key": {"kind": KEY_KIND, "dim": KEY_DIM}, "entries": len(self), "revision": self.revision,
                "parents": sorted(self.parents), "files": {n: {"sha256": hashes[n]} for n in FILES},
                "content_hash": content_hash(hashes)}

    @property
    def content_hash(self) -> str:
        """SHA-256 over the files' hashes: the same for the same entries, whoever built them in whatever order."""
        return self.manifest()["content_hash"]

    def save(self, folder: str | Path) -> Path:
        """Write the base to ``folder`` (created; files of a base already there replaced) -> the folder."""
        root = Path(folder)
        root.mkdir(parents=True, exist_ok=True)
        files = self.files()
        for name, data in files.items():
            # a new file, not the old one rewritten: entries opened from it are memory-mapped slices of it
            (root / f".{name}.part").write_bytes(data)
            os.replace(root / f".{name}.part", root / name)
        manifest = self.manifest({n: sha256(d) for n, d in files.items()})
        (root / "manifest.json").write_text(json.dumps(manifest, indent=2))  # last: a base half-written has none
        content, at = memoryview(files["content.bin"]), 0
        blobs = []
        for b in self.blobs:  # from now on the entries are what was written, whatever they were read from
            blobs.append(content[at: at + len(b)])
            at += len(b)
        self.blobs, self.root = blobs, root
        return root

    @classmethod
    def open(cls, folder: str | Path) -> "KnowledgeBase":
        """Read and check the base in ``folder``. Raises UserError, in one line naming the fix, for a folder
        that is not a base, a base of another format version or key recipe, or a file that does not match its
        manifest's hash (damaged or replaced)."""
        root = Path(folder)
        manifest = read_manifest(root)
        data = {}
        for name in FILES:
            path = root / name
            if not path.is_file():
                raise UserError(f"knowledge base {root} is missing {name}; copy the whole folder again")
            data[name] = np.memmap(path, np.uint8, "r") if path.stat().st_size else b""
            if sha256(memoryview(data[name])) != manifest["files"][name]["sha256"]:
                raise UserError(f"knowledge base {root} is damaged: {name} does not match the hash in its manifest; "
                                "copy it again or rebuild it with `lamsc kb build`")
        try:
            keys = np.load(io.BytesIO(bytes(data["keys.npy"])), allow_pickle=False)
            e = json.loads(bytes(data["entries.json"]))
            content = data["content.bin"]
            blobs = [content[o: o + n] for o, n in zip(e["offset"], e["length"])]
            base = cls(manifest["name"], manifest["kind"], list(e["id"]), keys.astype(np.float32), list(e["label"]),
                       list(e["source"]), [float(t) for t in e["time"]], blobs, int(manifest["revision"]),
                       list(manifest["parents"]), root)
        except (ValueError, KeyError, TypeError) as err:
            raise UserError(f"knowledge base {root} does not read as one ({type(err).__name__}: {err}); "
                            "rebuild it with `lamsc kb build`") from None
        if keys.shape != (len(base.ids), KEY_DIM) or len(blobs) != len(base.ids):
            raise UserError(f"knowledge base {root} has {keys.shape[0]} keys for {len(base.ids)} entries; "
                            "rebuild it with `lamsc kb build`")
        return base


def content_hash(hashes: dict[str, str]) -> str:
    return sha256("".join(hashes[n] for n in FILES).encode())


def read_manifest(root: Path) -> dict:
    """The checked manifest of the base in ``root`` (UserError if it is none, or of another format or key)."""
    path = root / "manifest.json"
    if not path.is_file():
        raise UserError(f"{root} is not a knowledge base (no manifest.json); make one with `lamsc kb build`")
    try:
        manifest = json.loads(path.read_text())
        fmt, version, key = manifest["format"], manifest["version"], manifest["key"]
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path} is damaged ({type(err).__name__}: {err}); copy the base again") from None
    if fmt != FORMAT or version != FORMAT_VERSION:
        raise UserError(f"{root} is a {fmt} version {version} folder, not a {FORMAT} version {FORMAT_VERSION} "
                        "knowledge base; rebuild it with this lamsc's `lamsc kb build`")
    if key != {"kind": KEY_KIND, "dim": KEY_DIM}:
        raise UserError(f"knowledge base {root} is keyed by {key.get('kind')} ({key.get('dim')} values), this "
                        f"lamsc keys by {KEY_KIND} ({KEY_DIM}): rebuild it with `lamsc kb build`")
    return manifest
