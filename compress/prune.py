"""Structured pruning of the codec with Torch-Pruning's dependency graph.

What may change width: every hidden width of the encoder, the mask network and the decoder, with the
layers coupled to it (residual blocks, FiLM scale/shift rows, the next stage's input). What may not:
the C feature maps that are sent (the payload format and the ASC levels depend on them), the 3 output
colours, the mask network's depth output, the task heads' outputs and ASI (small, and shared with
training). The decoder's sub-pixel upsampling couples output channel c with conv channels 4c..4c+3,
which the dependency graph cannot see through PixelShuffle: ``SubPixelPruner`` tells it.

Importance is the group L2 magnitude (Torch-Pruning's ``GroupMagnitudeImportance``): no data needed,
and distillation (lamsc.compress.distill) then recovers what pruning lost.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import torch
import torch_pruning as tp
from torch import nn

from lamsc.semcom import architecture
from lamsc.semcom.codec import SubPixelUpsample
from lamsc.semcom.model import LamscModel


class SubPixelPruner(tp.pruner.function.BasePruningFunc):
    """Prunes ``SubPixelUpsample``: output channel c is conv channels 4c..4c+3 before PixelShuffle(2)."""

    TARGET_MODULES = SubPixelUpsample

    def prune_out_channels(self, layer: SubPixelUpsample, idxs):
        conv = layer[0]
        tp.prune_conv_out_channels(conv, [4 * i + j for i in idxs for j in range(4)])
        return layer

    def prune_in_channels(self, layer: SubPixelUpsample, idxs):
        tp.prune_conv_in_channels(layer[0], idxs)
        return layer

    def get_out_channels(self, layer: SubPixelUpsample):
        return layer[0].out_channels // 4

    def get_in_channels(self, layer: SubPixelUpsample):
        return layer[0].in_channels


def _codec_forward(model: LamscModel, inputs):
    image, masks, snr = inputs
    enc = model.encode(image, masks, snr)
    out = model.decode(enc["z"], enc["levels"], snr)
    return [enc["depth"], *out.values()]


def fixed_layers(model: LamscModel) -> list[nn.Module]:
    """Layers whose outputs define an interface and keep their width."""
    fixed = [model.asi, model.encoder.out, model.mask_net.conv2, model.decoder.out]
    if model.classifier is not None:
        fixed.append(model.classifier.net[-1])
    if model.segmenter_head is not None:
        fixed.append(model.segmenter_head.net[-1])
    return fixed


def prune_codec(model: LamscModel, ratio: float, round_to: int = 4) -> LamscModel:
    """A copy of ``model`` with about ``ratio`` of every prunable width removed (0 <= ratio < 1).

    Widths are rounded to multiples of ``round_to`` (vector units like them). The copy's config records
    the new widths, so it saves and loads as any lamsc model does.
    """
    if not 0 <= ratio < 1:
        raise ValueError(f"pruning ratio {ratio} is not in [0, 1)")
    # The dependency graph is traced through autograd: a frozen copy (of a teacher already used for
    # distillation) would hide every dependency.
    pruned = copy.deepcopy(model).eval().requires_grad_(True)
    if ratio > 0:
        k = model.config.segments
        example = (torch.rand(1, 3, 64, 64), (torch.rand(1, k, 64, 64) > 0.5).float(), torch.tensor([10.0]))
        pruner = tp.pruner.BasePruner(
            pruned, example, importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=ratio,
            ignored_layers=fixed_layers(pruned), round_to=round_to, forward_fn=_codec_forward,
            customized_pruners={SubPixelUpsample: SubPixelPruner()},
            root_module_types=[nn.Conv2d, SubPixelUpsample])  # FiLM rows follow their feature maps
        pruner.step()
    fresh = LamscModel(replace(model.config, architecture={}))
    pruned.config = replace(model.config, architecture=architecture.record(pruned, fresh))
    return pruned


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
