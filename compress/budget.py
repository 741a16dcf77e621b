"""What a user asks for: a ``Budget`` (limits on cost) and what a candidate costs (``Cost``).

A budget is written the way the command line takes it: ``latency-ms=120,params=400k,energy-mj=50``.
Counts take k/M/G suffixes; a value ending in % is relative to the uncompressed model measured in the same
run (``latency-ms=50%``: half its latency). Every limit is an upper bound; a candidate meets the budget
when it is under all of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from lamsc.errors import UserError

# budget key -> Cost field, and the unit printed beside it
LIMITS = {"latency-ms": ("latency_ms", "ms"), "energy-mj": ("energy_mj", "mJ"), "params": ("params", ""),
          "bytes": ("bytes", "B"), "macs": ("macs", "")}
_SUFFIX = {"k": 1e3, "M": 1e6, "G": 1e9}


@dataclass
class Cost:
    """What one model costs per image on one target. ``how`` says whether latency and energy were
    measured on the target or estimated by the cost model, and with which energy source."""

    latency_ms: float
    energy_mj: float
    params: int
    bytes: int
    macs: int
    how: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["latency_ms"], d["energy_mj"] = round(self.latency_ms, 3), round(self.energy_mj, 3)
        return d

    def describe(self) -> str:
        return (f"{self.latency_ms:.1f} ms, {self.energy_mj:.1f} mJ, {_count(self.params)} params, "
                f"{_count(self.bytes)}B, {_count(self.macs)} MACs")


@dataclass(frozen=True)
class Budget:
    limits: dict[str, float]  # Cost field -> upper bound
    relative: dict[str, float] = field(default_factory=dict)  # Cost field -> fraction of the teacher's cost

    def resolve(self, teacher: Cost) -> "Budget":
        """Absolute limits, with relative ones taken as fractions of the teacher's measured cost."""
        return Budget({**self.limits, **{k: f * getattr(teacher, k) for k, f in self.relative.items()}},
                      dict(self.relative))

    @classmethod
    def parse(cls, text: str) -> "Budget":
        limits, relative = {}, {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, _, value = part.partition("=")
            if key not in LIMITS or not value:
                raise UserError(f"budget term {part!r} is not KEY=VALUE with KEY one of {', '.join(LIMITS)}; "
                                "e.g. --budget latency-ms=120,params=400k")
            if value.endswith("%"):
                relative[LIMITS[key][0]] = _number(value[:-1], part) / 100
            else:
                limits[LIMITS[key][0]] = _number(value, part)
        if not limits and not relative:
            raise UserError("the budget is empty; give at least one limit, e.g. --budget latency-ms=120")
        return cls(limits, relative)

    def violations(self, cost: Cost) -> dict[str, float]:
        """{field: cost / limit} for each limit the cost exceeds."""
        return {k: getattr(cost, k) / v for k, v in self.limits.items() if getattr(cost, k) > v}

    def meets(self, cost: Cost) -> bool:
        return not self.violations(cost)

    def excess(self, cost: Cost) -> float:
        """How far over budget: the largest cost/limit ratio (<= 1 means within budget)."""
        return max(getattr(cost, k) / v for k, v in self.limits.items())

    def describe(self) -> str:
        names = {f: k for k, (f, _) in LIMITS.items()}
        terms = [f"{names[k]} <= {_count(v)}" + (f" ({self.relative[k]:.0%} of the original)" if k in self.relative
                                                 else "") for k, v in self.limits.items()]
        terms += [f"{names[k]} <= {f:.0%} of the original" for k, f in self.relative.items() if k not in self.limits]
        return ", ".join(terms)

    def to_dict(self) -> dict:
        return dict(self.limits)


def _number(value: str, part: str) -> float:
    scale = _SUFFIX.get(value[-1], 1.0)
    try:
        number = float(value[:-1] if value[-1] in _SUFFIX else value) * scale
    except ValueError:
        raise UserError(f"budget term {part!r}: {value!r} is not a number (k/M/G suffixes allowed)") from None
    if number <= 0:
        raise UserError(f"budget term {part!r} must be positive")
    return number


def _count(x: float) -> str:
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.3g}"
