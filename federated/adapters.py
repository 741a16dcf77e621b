"""Low-rank adapters on the device's convolutions: what a device trains instead of the encoder's weights.

lamsc's own adapters rather than peft's LoRA: the codec is plain ``nn.Conv2d`` layers, which an adapter of a
few lines covers; the merged weight is exact for a convolution (a k x k conv to ``rank`` channels followed by
a 1 x 1 conv is itself a k x k conv), so the fine-tuned model is saved as an ordinary lamsc model with no new
module type; and peft would bring transformers and accelerate onto a device for two matrix products.

A frozen convolution W (out, in, k, k) becomes W x + (alpha / rank) · B(A(x)) with A a k x k convolution to
``rank`` channels (same stride and padding as W) and B a 1 x 1 convolution back to ``out`` channels, B zero at
the start so the adapted model begins as the base one (LoRA, Hu et al. 2021, arXiv 2106.09685).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lamsc.semcom.codec import GDN

ADAPTER_PREFIX = "adapter_"  # the adapters' parameter names: what the device trains and FedAvg averages


class AdaptedConv2d(nn.Module):
    """A frozen ``nn.Conv2d`` plus a trainable low-rank update of rank ``rank`` (see the module docstring).

    Input and output shapes are the convolution's own; ``merged()`` returns the plain convolution with the
    update folded into its weight.
    """

    def __init__(self, conv: nn.Conv2d, rank: int, alpha: float | None = None):
        super().__init__()
        if conv.groups != 1:
            raise ValueError("adapters cover ungrouped convolutions only")
        self.conv = conv.requires_grad_(False)
        self.scale = (alpha if alpha is not None else rank) / rank
        factory = {"device": conv.weight.device, "dtype": conv.weight.dtype}
        self.adapter_down = nn.Conv2d(conv.in_channels, rank, conv.kernel_size, conv.stride, conv.padding,
                                      conv.dilation, bias=False, **factory)
        self.adapter_up = nn.Conv2d(rank, conv.out_channels, 1, bias=False, **factory)
        nn.init.kaiming_uniform_(self.adapter_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.adapter_up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.scale * self.adapter_up(self.adapter_down(x))

    def delta(self) -> torch.Tensor:
        """The update as a weight (out, in, k, k): B · A, scaled."""
        return self.scale * torch.einsum("or,rikl->oikl", self.adapter_up.weight[:, :, 0, 0], self.adapter_down.weight)

    def merged(self) -> nn.Conv2d:
        conv = self.conv
        with torch.no_grad():
            conv.weight += self.delta()
        return conv.requires_grad_(True)


def add_adapters(module: nn.Module, rank: int, min_weights: int = 0) -> list[str]:
    """Wrap every ``nn.Conv2d`` in ``module`` with at least ``min_weights`` weights, GDN normalisers aside, in an
    ``AdaptedConv2d`` (in place) and freeze everything else in ``module``; return the wrapped convolutions' names."""
    module.requires_grad_(False)
    # GDN's 1x1 convolution acts on squared features as a normaliser that must stay positive: no update there
    normalisers = {f"{n}.norm" for n, m in module.named_modules() if isinstance(m, GDN)}
    wrapped = []
    for name, child in list(module.named_modules()):
        if (isinstance(child, nn.Conv2d) and child.weight.numel() >= min_weights and name not in normalisers
                and not name.split(".")[-1].startswith(ADAPTER_PREFIX)):
            parent, _, attr = name.rpartition(".")
            setattr(module.get_submodule(parent) if parent else module, attr, AdaptedConv2d(child, rank))
            wrapped.append(name)
    return wrapped


def merge_adapters(module: nn.Module) -> int:
    """Fold every ``AdaptedConv2d`` in ``module`` back into its plain convolution (in place); return how many."""
    count = 0
    for name, child in list(module.named_modules()):
        if isinstance(child, AdaptedConv2d):
            parent, _, attr = name.rpartition(".")
            setattr(module.get_submodule(parent) if parent else module, attr, child.merged())
            count += 1
    return count


def adapter_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' weights by parameter name: the device's trainable part."""
    return {n: p.detach() for n, p in module.named_parameters() if n.split(".")[-2].startswith(ADAPTER_PREFIX)}
