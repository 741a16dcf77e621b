"""FedAvg over the devices' parts of the model: the client-side aggregation of SplitFed.

SplitFed (Thapa et al., "SplitFed: When Federated Learning Meets Split Learning", AAAI 2022) averages the
client-side models after each round, weighted by each client's number of examples, as FedAvg does
(McMahan et al. 2017); in lamsc the client-side parts are the devices' adapters (lamsc.federated.adapters).
"""

from __future__ import annotations

import torch

from lamsc.errors import UserError


def fedavg(parts: list[dict[str, torch.Tensor]], weights: list[float]) -> dict[str, torch.Tensor]:
    """sum_k w_k p_k / sum_k w_k for every tensor name, accumulated in float64 and returned in each tensor's
    dtype. ``parts``: one dict per client with the same names and shapes; ``weights``: its examples (> 0).
    Raises UserError for no parts, mismatched names or shapes, or weights that do not sum above zero."""
    if not parts:
        raise UserError("no client returned its part of the model this round; check that the clients run")
    if len(parts) != len(weights) or sum(weights) <= 0 or min(weights) < 0:
        raise UserError(f"FedAvg needs one non-negative weight per client part and a positive total, got {weights}")
    names = set(parts[0])
    for p in parts[1:]:
        if set(p) != names or any(p[n].shape != parts[0][n].shape for n in names):
            raise UserError("clients returned different model parts; every client must run the same split and rank")
    total = float(sum(weights))
    return {n: (sum(p[n].double() * (w / total) for p, w in zip(parts, weights))).to(parts[0][n].dtype)
            for n in parts[0]}
