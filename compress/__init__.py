"""lamsc.compress: prune (torch-pruning), distil, quantise (NNCF), and plan a model to a budget.

to_budget.py  compress_to_budget(CompressConfig) -> CompressResult: the whole job as one Python call
budget.py   Budget (limits per image, absolute or relative to the original) and Cost
cost.py     Target (cpu / gpu measured, Jetson profiles estimated), MACs, ONNX Runtime timing, the cost model
prune.py    the codec through Torch-Pruning's dependency graph (sub-pixel upsampling handled)
prune_sam.py  SKB image encoders: SAM ViT and MobileSAM TinyViT heads and MLP widths
distill.py  output distillation of the codec, feature distillation of SKB encoders (semcom.loop: resumable)
choice.py   the one choice rule under a budget (requirements, ties, why nothing was chosen), the Pareto front
plan.py     codec candidates: build, cost, score (int8 ones quantised by NNCF as exported, lamsc.export.quantise);
            skb.py: the same for the SKB encoder
report.py   compress.json, report.md, pareto.png

Imports are lazy where they are heavy (NNCF), so importing lamsc.compress stays cheap.
"""

from lamsc.lazy import lazy_exports

_EXPORTS = {
    "Budget": "budget", "Cost": "budget", "Choice": "choice", "Requirement": "choice", "Rule": "choice",
    "pareto_front": "choice", "Target": "cost", "Plan": "plan", "PlanConfig": "plan", "plan_codec": "plan",
    "prune_codec": "prune", "prune_sam_encoder": "prune_sam", "SkbPlanConfig": "skb", "plan_skb": "skb",
    "CompressConfig": "to_budget", "CompressResult": "to_budget", "compress_to_budget": "to_budget",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
