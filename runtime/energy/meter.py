"""The energy-meter contract: a window around a piece of work, read as joules with the name of its source."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class Reading:
    """One window's energy (J) over its wall-clock length (s).

    ``source`` names the backend and what it summed ("zeus nvml: NVIDIA H200 (CUDA 0 = NVML 0)",
    "zeus rapl: package-0", "jetson rails via tegrastats: VIN", "model estimate: ..."); ``estimate`` is True
    only for the declared power model, which measures nothing.
    """

    joules: float
    seconds: float
    source: str
    estimate: bool

    @property
    def watts(self) -> float:
        return self.joules / self.seconds if self.seconds > 0 else 0.0


class Window:
    """What ``with meter.measure() as w`` yields; ``w.reading`` is set when the block ends. ``opened`` and
    ``closed`` are its edges on ``time.perf_counter`` (s), the span the meter integrates."""

    reading: Reading | None = None
    opened: float = 0.0
    closed: float = 0.0


class EnergyMeter:
    """Base: subclasses give ``start() -> state`` and ``stop(state, t0, t1) -> joules`` and set ``source``.

    The measurement opens its window (``t0``, ``time.perf_counter`` s) once ``start`` has returned and closes it
    (``t1``) before ``stop`` is called; a meter that samples power integrates over exactly [t0, t1], so the
    reading's watts are its joules over the same span. Meters with their own clock (Zeus) may ignore them.

    ``min_window_s``: the shortest window the counter resolves (NVML updates every 20-100 ms); the profiler
    repeats work until a window is at least that long.
    """

    source = ""
    estimate = False
    min_window_s = 0.25

    def measure(self) -> _Measurement:
        return _Measurement(self)

    def start(self):
        raise NotImplementedError

    def stop(self, state, t0: float, t1: float) -> float:
        raise NotImplementedError


class _Measurement:
    def __init__(self, meter: EnergyMeter):
        self.meter, self.window = meter, Window()

    def __enter__(self) -> Window:
        self.state = self.meter.start()  # a meter may take a while to start (tegrastats): time from once it has
        self.window.opened = time.perf_counter()
        return self.window

    def __exit__(self, *exc) -> None:
        w = self.window
        w.closed = time.perf_counter()
        joules = self.meter.stop(self.state, w.opened, w.closed)
        w.reading = Reading(joules, w.closed - w.opened, self.meter.source, self.meter.estimate)


def held_energy(samples: list[tuple[float, float]], t0: float, t1: float) -> float:
    """Joules over [t0, t1] from (time s, power W) readings of a sampling service: each reading holds until
    the next; the one in force at t0 is the last before it, else the first of the window.

    Raises ValueError when no reading falls in or before the window.
    """
    before = [p for t, p in samples if t <= t0]
    inside = [(t, p) for t, p in samples if t0 < t <= t1]
    if not before and not inside:
        raise ValueError("no power reading in or before the window")
    steps = [(t0, before[-1] if before else inside[0][1])] + inside + [(t1, 0.0)]
    return sum(p * (b - a) for (a, p), (b, _) in zip(steps, steps[1:]))
