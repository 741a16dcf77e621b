"""The named tensors of each graph an endpoint runs (lamsc.semcom.graphs), as plain data: what a bundle's
manifest records and every backend, with or without torch, feeds and reads."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str                          # numpy dtype name
    shape: tuple[int | str, ...]        # a str names a dynamic axis

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class GraphSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def dynamic_axes(self) -> dict:
        return {t.name: {i: a for i, a in enumerate(t.shape) if isinstance(a, str)} for t in self.inputs + self.outputs}

    def to_dict(self) -> dict:
        return {"inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs]}
