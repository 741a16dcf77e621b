"""Structured pruning of the SKB image encoders: SAM's ViT and MobileSAM's TinyViT.

Both keep their residual width, patch embedding and neck (the mask decoder reads the neck's 256 x 64 x 64
embedding), and lose attention heads and MLP width, as SlimSAM and Torch-Pruning's ViT examples do.

- SAM ViT: with the residual width kept, each block's heads and MLP width are groups of their own
  (qkv rows and proj columns of a head; lin1 rows and lin2 columns), removed with Torch-Pruning's layer
  functions. Its dependency graph is not used here: tracing through SAM's window partitioning builds index
  maps over every token position (a 2-block model had not finished grouping after 15 minutes), and the
  relative positional embeddings defeat its detection (Torch-Pruning #337, SlimSAM #10). Those
  embeddings are per head size and shared by the heads, so removing whole heads leaves them intact.
- TinyViT: its ``qkv`` is laid out head by head (q, k, v of head 0, then head 1, ...) and each head has
  its own row of attention biases, which the dependency graph cannot index (a plain pruner fails in its
  importance estimation). Heads are therefore removed here with Torch-Pruning's layer functions (the
  head's qkv rows, its columns of ``proj``, its bias row), and the MLP and MBConv hidden widths through
  the dependency graph with every attention layer left out of it.

Each module's head count (``num_heads`` and the sizes derived from it) is set after pruning, so the model
runs and its shape is recorded (lamsc.semcom.architecture) for saving.
"""

from __future__ import annotations

import copy

import torch
import torch_pruning as tp
from torch import nn

from lamsc.semcom.sam_architecture import SamArchitecture


def prune_sam_encoder(sam: nn.Module, arch: SamArchitecture, ratio: float) -> nn.Module:
    """A copy of ``sam`` whose image encoder has about ``ratio`` of its heads and MLP width removed."""
    if not 0 <= ratio < 1:
        raise ValueError(f"pruning ratio {ratio} is not in [0, 1)")
    sam = copy.deepcopy(sam).eval().requires_grad_(True)  # traced through autograd: never frozen
    if ratio > 0:
        (_prune_tiny_vit if arch.family == "mobilesam" else _prune_vit)(sam.image_encoder, ratio)
    sam.eval()  # TinyViT caches its attention biases per head when switched to eval
    return sam


def _example(encoder: nn.Module) -> torch.Tensor:
    return torch.randn(1, 3, encoder.img_size, encoder.img_size)


def _prune_vit(encoder: nn.Module, ratio: float) -> None:
    for block in encoder.blocks:
        _prune_heads_qkv_major(block.attn, ratio)
        lin1, lin2 = block.mlp.lin1, block.mlp.lin2
        score = lin1.weight.detach().pow(2).sum(1) + lin1.bias.detach().pow(2) + lin2.weight.detach().pow(2).sum(0)
        drop = sorted(score.argsort()[: int(lin1.out_features * ratio)].tolist())
        tp.prune_linear_out_channels(lin1, drop)
        tp.prune_linear_in_channels(lin2, drop)


def _prune_heads_qkv_major(attn: nn.Module, ratio: float) -> None:
    """Remove the least important heads of a SAM ViT ``Attention`` (qkv rows: q heads, k heads, v heads).

    The relative positional embeddings are per head size and shared by all heads: they stay as they are.
    """
    keep_n = max(1, round(attn.num_heads * (1 - ratio)))
    if keep_n == attn.num_heads:
        return
    dim_in = attn.qkv.in_features
    head_dim = attn.qkv.out_features // (3 * attn.num_heads)
    rows = attn.qkv.weight.detach().view(3, attn.num_heads, head_dim, dim_in)
    cols = attn.proj.weight.detach().view(attn.proj.out_features, attn.num_heads, head_dim)
    score = rows.pow(2).sum((0, 2, 3)) + cols.pow(2).sum((0, 2))
    drop = sorted(score.argsort()[: attn.num_heads - keep_n].tolist())
    n = attn.num_heads
    tp.prune_linear_out_channels(attn.qkv, [(part * n + h) * head_dim + i for part in range(3) for h in drop
                                            for i in range(head_dim)])
    tp.prune_linear_in_channels(attn.proj, [h * head_dim + i for h in drop for i in range(head_dim)])
    attn.num_heads = keep_n


def _prune_tiny_vit(encoder: nn.Module, ratio: float) -> None:
    attns = [m for m in encoder.modules() if type(m).__name__ == "Attention" and hasattr(m, "attention_biases")]
    for a in attns:
        _prune_heads_head_major(a, ratio)
    blocks = [m for m in encoder.modules() if hasattr(m, "mlp") and hasattr(m, "attn")]
    ignored = [encoder.patch_embed, encoder.neck] + attns + [b.mlp.fc2 for b in blocks]
    ignored += [m.conv3 for m in encoder.modules() if type(m).__name__ == "MBConv"]
    ignored += [m for m in encoder.modules() if type(m).__name__ == "PatchMerging"]
    # Parameters outside known layer types: per-head biases (already pruned with their heads) and the neck's
    # LayerNorm2d. Their channel dimension is named (0) rather than guessed, and they are left alone.
    loose = ([a.attention_biases for a in attns] + list(encoder.neck[1].parameters())
             + list(encoder.neck[3].parameters()))
    pruner = tp.pruner.BasePruner(
        encoder, _example(encoder), importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=ratio, ignored_layers=ignored + loose, round_to=8,
        unwrapped_parameters=[(p, 0) for p in loose])
    pruner.step()


def _prune_heads_head_major(attn: nn.Module, ratio: float) -> None:
    """Remove the least important heads of a TinyViT ``Attention`` (qkv rows laid out head by head)."""
    keep_n = max(1, round(attn.num_heads * (1 - ratio)))
    if keep_n == attn.num_heads:
        return
    per_head = 2 * attn.key_dim + attn.d
    rows = attn.qkv.weight.detach().view(attn.num_heads, per_head, -1)
    cols = attn.proj.weight.detach().view(attn.proj.out_features, attn.num_heads, attn.d)
    score = rows.pow(2).sum((1, 2)) + cols.pow(2).sum((0, 2))  # group L2 of everything the head owns
    drop = sorted(score.argsort()[: attn.num_heads - keep_n].tolist())
    tp.prune_linear_out_channels(attn.qkv, [h * per_head + i for h in drop for i in range(per_head)])
    tp.prune_linear_in_channels(attn.proj, [h * attn.d + i for h in drop for i in range(attn.d)])
    keep = [h for h in range(attn.num_heads) if h not in drop]
    attn.attention_biases = nn.Parameter(attn.attention_biases.detach()[keep].clone())
    attn.num_heads = keep_n
    attn.nh_kd = attn.key_dim * keep_n
    attn.dh = attn.d * keep_n
