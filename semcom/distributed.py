"""Training on several processes, as ``torchrun --nproc_per_node N`` starts them (data-parallel).

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK in each process it starts; ``process_group`` reads them, joins
the group (NCCL on GPUs, gloo on CPUs) and puts the process on its device (cuda:LOCAL_RANK). The one training
loop (semcom.loop.TrainingRun) then averages the gradients over the group after each backward pass, so every
rank steps the same weights by the gradient of the global batch (N x the recipe's batch). Each rank draws its
own crops and channel noise (``rank_seed``); rank 0 alone writes files. Without torchrun every function here
is the single-process no-op.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from lamsc.errors import UserError
from lamsc.semcom.segmenter import torch_device

T = TypeVar("T")
_started = 0  # process groups this process has started, in order: the same count on every rank


@dataclass(frozen=True)
class Ranks:
    """This process's place in the group: ``rank`` of ``world`` processes, ``local`` on its machine."""

    rank: int = 0
    world: int = 1
    local: int = 0

    @property
    def main(self) -> bool:
        """Whether this process writes files and reports (rank 0)."""
        return self.rank == 0


def launched() -> Ranks:
    """The ranks torchrun gave this process (WORLD_SIZE, RANK, LOCAL_RANK), or one process of one.

    Raises UserError for values that are not ranks (not integers, or RANK outside 0..WORLD_SIZE-1)."""
    env = os.environ
    if "WORLD_SIZE" not in env:
        return Ranks()
    try:
        world = int(env["WORLD_SIZE"])
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise UserError(f"WORLD_SIZE={env['WORLD_SIZE']!r}, RANK={env.get('RANK')!r}, LOCAL_RANK="
                        f"{env.get('LOCAL_RANK')!r} are not process ranks: launch with torchrun --nproc_per_node N, "
                        "or unset them") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise UserError(f"RANK={rank} of WORLD_SIZE={world} is no process of the group: launch with torchrun "
                        "--nproc_per_node N, or unset WORLD_SIZE")
    return Ranks(rank, world, local)


def current() -> Ranks:
    """The ranks of the process group this process is in, or one process of one where there is none."""
    if not (dist.is_available() and dist.is_initialized()):
        return Ranks()
    return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def rank_device(device: str | torch.device, ranks: Ranks) -> torch.device:
    """Where rank ``ranks`` computes when ``device`` (auto | cpu | cuda | cuda:N) is asked for: each process
    of a group takes the GPU of its LOCAL_RANK. Raises UserError for a GPU index that is not the process's
    own, for more processes on this machine than it has GPUs, and for CUDA where there is none."""
    resolved = torch_device(str(device))
    if ranks.world == 1 or resolved.type != "cuda":
        return resolved
    if resolved.index is not None and resolved.index != ranks.local:
        raise UserError(f"--device {resolved} under torchrun: each process takes the GPU its LOCAL_RANK names "
                        f"(this one cuda:{ranks.local}); pass --device cuda")
    count = torch.cuda.device_count()
    if ranks.local >= count:
        raise UserError(f"torchrun started process {ranks.local} on this machine, which has {count} GPU(s): "
                        f"give --nproc_per_node {count} or fewer")
    return torch.device("cuda", ranks.local)


@contextmanager
def intra_op_threads(count: int) -> Iterator[None]:
    """torch's intra-op threads set to ``count`` for the ``with`` block; the caller's setting comes back after
    it, however it ends."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def process_group(device: str | torch.device = "cpu") -> Iterator[tuple[Ranks, torch.device]]:
    """Join the group torchrun launched this process into, for the time of the ``with`` block; yields this
    process's ranks and its device (``rank_device``). NCCL on CUDA devices, gloo on CPUs. A group that is
    already there is used and kept; one this call started is destroyed when the block ends, however it ends.
    Without torchrun: one process of one, on ``device``.

    Raises UserError where torch has no distributed support, or the group cannot start (WORLD_SIZE set
    without the rest of torchrun's environment)."""
    ranks = launched()
    if ranks.world > 1 and not dist.is_available():
        raise UserError(f"WORLD_SIZE={ranks.world}, but this torch build has no torch.distributed: install a "
                        "torch with distributed support, or run one process")
    if ranks.world == 1 or dist.is_initialized():
        ranks = current()
        yield ranks, rank_device(device, ranks)
        return
    resolved = rank_device(device, ranks)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)  # NCCL and torch.device("cuda") then mean this rank's GPU
    global _started
    try:
        store, rank, world = next(dist.rendezvous("env://"))
    except ValueError as e:  # torch's env:// rendezvous names the variable it misses
        raise UserError(f"WORLD_SIZE={ranks.world} is set, but the process group cannot start ({e}): launch "
                        "with torchrun --nproc_per_node N, or unset WORLD_SIZE") from None
    # each group its own keys in torchrun's store: a group started after another ended (a stopped run, then
    # its resumption, in one process) would otherwise read the ended group's addresses
    _started += 1
    dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo",
                            store=dist.PrefixStore(f"lamsc/{_started}", store), rank=rank, world_size=world)
    try:
        yield ranks, resolved
    finally:
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s crops and noise in a run seeded ``seed`` (non-negative): ``seed`` itself on
    rank 0 (a run of one process draws what a plain run draws), an independent stream on every other rank."""
    if rank == 0:
        return seed
    return int(np.random.SeedSequence((seed, rank)).generate_state(1, np.uint64)[0] >> np.uint64(1))


def average_gradients(parameters: Sequence[torch.Tensor], values: Sequence[float] = ()) -> list[float]:
    """Replace each parameter's gradient by its mean over the group's ranks, in one all-reduce per dtype,
    and return ``values`` (floats: the step's loss and logs) averaged over the ranks too.

    A rank whose step left a parameter without a gradient counts as zero for it; a parameter no rank
    has a gradient for keeps none (the optimiser skips it, as it does on one process). Every rank must
    pass the same parameters and as many values."""
    world = dist.get_world_size()
    device = parameters[0].device if parameters else torch.device("cpu")
    # per parameter, whether this rank has a gradient; then the values: summed in float64, one small reduce
    flags = torch.tensor([p.grad is not None for p in parameters] + list(values), dtype=torch.float64,
                         device=device)
    dist.all_reduce(flags)
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for p in parameters:
        by_dtype.setdefault(p.dtype, []).append(p)
    for dtype, group in by_dtype.items():
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().flatten()
                          for p in group])
        dist.all_reduce(flat)
        flat /= world
        offset = 0
        for p in group:
            n = p.numel()
            grad = p.grad if p.grad is not None else torch.empty_like(p)  # keeps the parameter's memory format
            p.grad = grad.copy_(flat[offset:offset + n].view_as(p))
            offset += n
    for p, had in zip(parameters, flags[:len(parameters)].tolist()):
        if not had:
            p.grad = None
    return (flags[len(parameters):] / world).tolist()


def broadcast_module(module: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (a no-op on one process)."""
    if current().world == 1:
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, 0)


def broadcast(obj: T) -> T:
    """Rank 0's ``obj`` (anything picklable) on every rank; ``obj`` itself on one process."""
    if current().world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, 0)
    return box[0]


def all_gather(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order, on every rank; ``[obj]`` on one process."""
    world = current().world
    if world == 1:
        return [obj]
    out: list = [None] * world
    dist.all_gather_object(out, obj)
    return out


def main_first(work: Callable[[], T]) -> T:
    """``work()`` on rank 0, then on the other ranks: what rank 0 writes (a cache), they read."""
    ranks = current()
    if ranks.world > 1 and not ranks.main:
        dist.barrier()
    result = work()
    if ranks.world > 1 and ranks.main:
        dist.barrier()
    return result
