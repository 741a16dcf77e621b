"""What crosses between a device and the server: Flower messages, their kinds of content, and their bytes.

A message's content is a dict of records: ``activations``, ``gradients`` and ``parameters`` (tensors by
name: the only arrays any message carries), ``control`` (step numbers, the SNRs the channel will apply, the
training plan) and ``metrics`` (held-out scores, examples, compute seconds). Message types are Flower's
``<category>.<action>`` (flwr >= 1.17): the split exchange is its own set of actions.
"""

from __future__ import annotations

import json

import numpy as np
import torch

HELLO = "query.hello"                 # -> partition id and examples
TRAIN_FORWARD = "train.forward"       # control (+ parameters at a round's start) -> smashed activations
TRAIN_LOSS = "train.loss"             # the server's output activations -> their gradients, loss
TRAIN_BACKWARD = "train.backward"     # the smashed activations' gradients -> (at a round's end) parameters
EVAL_FORWARD = "evaluate.forward"     # control -> smashed activations of the held-out images
EVAL_SCORE = "evaluate.score"         # output activations -> held-out metrics
ACTIONS = (HELLO, TRAIN_FORWARD, TRAIN_LOSS, TRAIN_BACKWARD, EVAL_FORWARD, EVAL_SCORE)
ARRAY_KINDS = ("activations", "gradients", "parameters")
SCALAR_KINDS = ("control", "metrics")


def wire(t: torch.Tensor) -> np.ndarray:
    """A tensor as it travels: floats as float32, integer levels as uint8 (at most 255 levels)."""
    t = t.detach().cpu()
    t = t.to(torch.float32) if t.is_floating_point() else t.to(torch.uint8)
    return np.ascontiguousarray(t.numpy())


def to_records(content: dict):
    """A content dict -> Flower's RecordDict (arrays in ArrayRecords, the rest in Config/MetricRecords;
    non-scalar control values travel as JSON text)."""
    from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

    records = RecordDict()
    for kind, values in content.items():
        if kind in ARRAY_KINDS:
            record = ArrayRecord()
            for name, t in values.items():
                record[name] = Array(wire(t))
            records[kind] = record
        elif kind == "control":
            records[kind] = ConfigRecord({k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v)
                                          for k, v in values.items()})
        elif kind == "metrics":
            records[kind] = MetricRecord({k: float(v) for k, v in values.items()})
        else:
            raise ValueError(f"a message carries {', '.join(ARRAY_KINDS + SCALAR_KINDS)}, not {kind!r}")
    return records


def from_records(records) -> dict:
    """Flower's RecordDict -> a content dict (tensors: float32 or int64; control JSON text decoded)."""
    out = {}
    for kind, record in records.items():
        if kind in ARRAY_KINDS:
            out[kind] = {}
            for name, array in record.items():
                a = array.numpy()
                out[kind][name] = (torch.from_numpy(a.copy()).long() if a.dtype == np.uint8
                                   else torch.from_numpy(a.copy()))
        elif kind == "control":
            out[kind] = {k: _decoded(v) for k, v in record.items()}
        else:
            out[kind] = dict(record)
    return out


def _decoded(v):
    if isinstance(v, str) and v[:1] in "[{":
        return json.loads(v)
    return v


def array_bytes(content: dict) -> dict[str, int]:
    """Bytes of each array kind in ``content`` as they travel (``wire``): activations, gradients, parameters."""
    return {kind: sum(wire(t).nbytes for t in content.get(kind, {}).values()) for kind in ARRAY_KINDS}


def described(content: dict) -> dict:
    """What a message carries, without its values: array kinds with each array's shape and dtype, and the names
    of the scalar entries; the server keeps one per reply so a run shows what left the devices."""
    return {kind: ({n: [list(t.shape), str(wire(t).dtype)] for n, t in values.items()} if kind in ARRAY_KINDS
                   else sorted(values)) for kind, values in content.items()}
