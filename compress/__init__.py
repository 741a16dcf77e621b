"""lamsc.compress: prune (torch-pruning), distil, quantise (NNCF), and plan a model to a budget.

to_budget.py  compress_to_budget(CompressConfig) -> CompressResult: the whole job as one Python call
budget.py   Budget (limits per image, absolute or relative to the original) and Cost
cost.py     Target (cpu / gpu measured, Jetson profiles estimated), MACs, ONNX Runtime timing, the cost model
prune.py    the codec through Torch-Pruning's dependency graph (sub-pixel upsampling handled)
prune_sam.py  SKB image encoders: SAM ViT and MobileSAM TinyViT heads and MLP widths
distill.py  output distillation of the codec, feature distillation of SKB encoders (semcom.loop: resumable)
quantise.py NNCF int8 of a PyTorch module (fake-quantised); the exported graphs' int8 is lamsc.export.quantise
choice.py   the one choice rule under a budget (requirements, ties, why nothing was chosen), the Pareto front
plan.py     codec candidates: build, cost, score;  skb.py: the same for the SKB encoder
report.py   compress.json, report.md, pareto.png

Imports are lazy where they are heavy (NNCF), so importing lamsc.compress stays cheap.
"""

from lamsc.compress.budget import Budget, Cost
from lamsc.compress.choice import Choice, Requirement, Rule, pareto_front
from lamsc.compress.cost import Target
from lamsc.compress.plan import Plan, PlanConfig, plan_codec
from lamsc.compress.prune import prune_codec
from lamsc.compress.prune_sam import prune_sam_encoder
from lamsc.compress.skb import SkbPlanConfig, plan_skb
from lamsc.compress.to_budget import CompressConfig, CompressResult, compress_to_budget

__all__ = ["Budget", "Choice", "CompressConfig", "CompressResult", "Cost", "Plan", "PlanConfig", "Requirement",
           "Rule", "SkbPlanConfig", "Target", "compress_to_budget", "pareto_front", "plan_codec", "plan_skb",
           "prune_codec", "prune_sam_encoder"]
