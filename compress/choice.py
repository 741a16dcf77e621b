"""One rule for choosing a compressed candidate under a Budget, and the Pareto front it chooses from.

Both planners, the codec's (lamsc.compress.plan) and the SKB image encoder's (lamsc.compress.skb), build,
cost and score their candidates their own way, then choose here by one rule (``Rule.choose``):

1. A candidate is *eligible* when its cost meets every limit of the budget and its quality keeps every
   ``Requirement`` the planner sets (the codec: send at most ``max_rate_increase`` more payload bits than the
   teacher; the SKB encoder: embedding cosine and mask IoU floors against the teacher).
2. The chosen candidate is the eligible one with the highest quality figure ``Rule.metric`` (PSNR in dB for
   the codec, embedding cosine for the SKB encoder). Equal figures go to the lower latency, and equal both
   to the earlier candidate (the planners list less compressed candidates first).
3. With none eligible nothing is chosen, and ``Choice.shortfall`` says why in one line, naming the candidate
   that came closest (``Choice.closest``):
   - some candidates meet the budget but fail a requirement: the closest is the one rule 2 picks among them
     without the requirements, and the planner's ``Rule.explain`` says what failed;
   - none meets the budget: the closest is the one least over it (the smallest largest cost/limit ratio,
     ``Budget.excess``).

Candidates without a cost (rejected: their export failed verification) take no part: they are never
chosen, closest, or on the front. Candidates are anything with ``name``, ``cost`` (a Cost) and ``quality``
(a dict of figures), such as lamsc.compress.plan.Candidate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

from lamsc.compress.budget import Budget, Cost

OVER_BUDGET_ADVICE = "relax the budget or try larger --ratios"


class Scored(Protocol):
    name: str
    cost: Cost | None
    quality: dict


@dataclass(frozen=True)
class Requirement:
    """A bound one quality figure of an eligible candidate must keep, besides the budget."""

    key: str                # the quality figure bounded, e.g. "cosine" or "bits_x_teacher"
    limit: float
    at_most: bool = False   # True: the figure must be <= limit; False: >= limit
    label: str = ""         # what the report's table says of a candidate that fails it, e.g. "sends > +5%"

    def kept_by(self, candidate: Scored) -> bool:
        value = candidate.quality[self.key]
        return value <= self.limit if self.at_most else value >= self.limit

    def describe_failure(self) -> str:
        return self.label or f"{self.key} {'>' if self.at_most else '<'} {self.limit:g}"


@dataclass(frozen=True)
class Verdict:
    """Where one costed candidate stands under the rule."""

    over: dict[str, float]      # {Cost field: cost / limit} for each budget limit it exceeds
    fails: tuple[str, ...]      # the labels of the requirements it does not keep

    @property
    def in_budget(self) -> bool:
        return not self.over

    @property
    def eligible(self) -> bool:
        return not self.over and not self.fails

    def describe(self) -> str:
        """The report's "in budget" cell: "yes", "no" (over budget), or the requirements it fails."""
        return "no" if self.over else (", ".join(self.fails) or "yes")


@dataclass
class Choice:
    """What ``Rule.choose`` decided, and why."""

    chosen: Scored | None           # the eligible candidate with the best quality; None when none is eligible
    closest: Scored | None          # with nothing chosen, the candidate that came closest (rule 3); with one
                                    # chosen, the one least loaded by the budget (the smallest Budget.excess)
    shortfall: str                  # with nothing chosen, why, in one line; "" when one is chosen
    front: list = field(default_factory=list)      # the Pareto front on latency and quality, in input order
    verdicts: dict[str, Verdict] = field(default_factory=dict)  # candidate name -> verdict (costed ones)


def pareto_front(candidates: Sequence[Scored], metric: str) -> list:
    """Costed candidates that no other beats on both latency and ``metric``: none other has latency <= and
    quality >= with at least one of the two strictly better. Equal candidates are all on the front."""
    ok = [c for c in candidates if c.cost is not None]
    return [c for c in ok if not any(
        o.cost.latency_ms <= c.cost.latency_ms and o.quality[metric] >= c.quality[metric]
        and (o.cost.latency_ms < c.cost.latency_ms or o.quality[metric] > c.quality[metric]) for o in ok)]


Explain = Callable[[list, Scored, Budget], str]


@dataclass(frozen=True)
class Rule:
    """How a planner chooses (see the module docstring): maximise ``metric`` among the candidates within
    budget that keep every requirement.

    ``explain(in_budget, best, budget)`` words the shortfall when candidates meet the budget but none keeps
    the requirements: ``in_budget`` are those candidates, ``best`` is the one ``best`` picks among them. The
    default names ``best`` and the requirements it fails.
    """

    metric: str
    requirements: tuple[Requirement, ...] = ()
    explain: Explain | None = None

    def verdict(self, candidate: Scored, budget: Budget) -> Verdict:
        return Verdict(budget.violations(candidate.cost),
                       tuple(r.describe_failure() for r in self.requirements if not r.kept_by(candidate)))

    def best(self, candidates: Sequence[Scored]) -> Scored:
        """The highest ``metric``, then the lowest latency, then the first."""
        return max(candidates, key=lambda c: (c.quality[self.metric], -c.cost.latency_ms))

    def choose(self, candidates: Sequence[Scored], budget: Budget) -> Choice:
        """Choose among ``candidates`` under ``budget`` (absolute limits: resolve relative ones first)."""
        costed = [c for c in candidates if c.cost is not None]
        verdicts = {c.name: self.verdict(c, budget) for c in costed}
        front = pareto_front(costed, self.metric)
        eligible = [c for c in costed if verdicts[c.name].eligible]
        if eligible:
            return Choice(self.best(eligible), min(costed, key=lambda c: budget.excess(c.cost)), "", front, verdicts)
        if not costed:
            return Choice(None, None, "no candidate could be built and costed", front, verdicts)
        in_budget = [c for c in costed if verdicts[c.name].in_budget]
        if in_budget:
            closest = self.best(in_budget)
            why = (self.explain(in_budget, closest, budget) if self.explain else
                   f"no candidate within the budget ({budget.describe()}) keeps every requirement; the best within "
                   f"it is {closest.name} ({verdicts[closest.name].describe()}) at {closest.cost.describe()}")
            return Choice(None, closest, why, front, verdicts)
        closest = min(costed, key=lambda c: budget.excess(c.cost))
        return Choice(None, closest, f"no candidate meets the budget ({budget.describe()}); closest is {closest.name} "
                                     f"at {closest.cost.describe()}; {OVER_BUDGET_ADVICE}", front, verdicts)
