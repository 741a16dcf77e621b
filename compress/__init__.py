"""lamsc.compress: prune (torch-pruning), quantise (NNCF), distil, and plan a model to a budget.

This stage is being built (issue: compress a checkpoint to a target budget); it exports nothing yet.
"""

__all__: list[str] = []
