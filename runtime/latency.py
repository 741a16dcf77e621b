"""Latency statistics: warm up, repeat, report median, p90 and p99 (never a single timing)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np


@dataclass
class Latency:
    median_ms: float
    p90_ms: float
    p99_ms: float
    samples: int

    @classmethod
    def timing(cls, fn, repeats: int, warmup: int = 1) -> "Latency":
        """``fn()`` run ``warmup`` times, then timed ``repeats`` times on the host clock."""
        for _ in range(warmup):
            fn()
        seconds = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            seconds.append(time.perf_counter() - t0)
        return cls.of(seconds)

    @classmethod
    def of(cls, seconds: list[float]) -> "Latency":
        ms = np.asarray(seconds, np.float64) * 1e3
        return cls(float(np.median(ms)), float(np.percentile(ms, 90)), float(np.percentile(ms, 99)), len(ms))

    def to_dict(self) -> dict:
        return {"median_ms": round(self.median_ms, 3), "p90_ms": round(self.p90_ms, 3),
                "p99_ms": round(self.p99_ms, 3), "samples": self.samples}


def stage_latencies(runs: list[dict[str, float]]) -> dict[str, Latency]:
    """Per-stage statistics over repeated runs, each a {stage: seconds} dict, plus their total."""
    stages = list(runs[0])
    out = {s: Latency.of([r[s] for r in runs]) for s in stages}
    out["total"] = Latency.of([sum(r.values()) for r in runs])
    return out
