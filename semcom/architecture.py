"""The shape of a pruned network, recorded so that it loads from safetensors + JSON without pickles.

Pruning (lamsc.compress) changes layer widths and head counts, so a pruned model no longer matches the
builder that made it. ``record`` lists, per module, the plain attributes (``out_channels``, ``num_heads``,
``scale``, ...) that differ from a freshly built model; ``apply`` takes a fresh model from the same builder,
sets those attributes and gives every parameter and buffer the shape stored in the weights file, after
which ``load_state_dict(strict=True)`` fills it. The record is JSON: it goes into the model's config file.
"""

from __future__ import annotations

import torch
from torch import nn

_PLAIN = (bool, int, float, str, tuple, list, type(None))


def _attributes(module: nn.Module) -> dict:
    return {k: v for k, v in vars(module).items()
            if not k.startswith("_") and k != "training" and isinstance(v, _PLAIN) and _jsonable(v)}


def _jsonable(v) -> bool:
    if isinstance(v, (tuple, list)):
        return all(isinstance(x, (bool, int, float, str)) for x in v)
    return True


def record(pruned: nn.Module, fresh: nn.Module) -> dict[str, dict]:
    """{module name: {attribute: value}} for every plain attribute of ``pruned`` that differs from ``fresh``."""
    fresh_modules = dict(fresh.named_modules())
    out = {}
    for name, module in pruned.named_modules():
        base = fresh_modules.get(name)
        if base is None:
            raise ValueError(f"module {name!r} is not in the freshly built model; pruning must not add modules")
        built = _attributes(base)
        changed = {k: list(v) if isinstance(v, tuple) else v for k, v in _attributes(module).items()
                   if built.get(k, object()) != v}
        if changed:
            out[name] = changed
    return out


def apply(model: nn.Module, architecture: dict[str, dict], state: dict[str, torch.Tensor]) -> nn.Module:
    """Reshape a freshly built ``model`` to the recorded architecture and the shapes in ``state``."""
    modules = dict(model.named_modules())
    for name, attrs in architecture.items():
        module = modules[name]
        for k, v in attrs.items():
            setattr(module, k, tuple(v) if isinstance(getattr(module, k, None), tuple) else v)
    for name, module in modules.items():
        prefix = f"{name}." if name else ""
        for pname, p in list(module._parameters.items()):
            saved = state.get(prefix + pname)
            if p is not None and saved is not None and saved.shape != p.shape:
                module._parameters[pname] = nn.Parameter(torch.empty(saved.shape, dtype=p.dtype),
                                                         requires_grad=p.requires_grad)
        for bname, b in list(module._buffers.items()):
            saved = state.get(prefix + bname)
            if b is not None and saved is not None and saved.shape != b.shape:
                module._buffers[bname] = torch.empty(saved.shape, dtype=saved.dtype)
    return model
