"""Process-group helpers: the same code runs single-process or under ``torchrun``."""

from __future__ import annotations

import gc
import os

import torch
import torch.distributed as dist

from tailmix._validation import ParameterError, check_number


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def init_from_env() -> bool:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); return whether
    this process is part of a multi-process run."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not is_distributed():
        backend = "gloo"
        if torch.cuda.is_available():
            # NCCL for CUDA tensors, gloo for CPU ones (a run may ask for device 'cpu').
            backend = "cpu:gloo,cuda:nccl"
            if local_rank() < torch.cuda.device_count():
                torch.cuda.set_device(local_rank())
        dist.init_process_group(backend=backend)
    return True


def destroy() -> None:
    """Leave the process group, if this process joined one.

    Release what still holds the group (a DistributedDataParallel wrapper) first: freed
    after the group, it aborts the process at exit.
    """
    if is_distributed():
        gc.collect()
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if is_distributed():
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_buffers(module: torch.nn.Module, *, src: int = 0) -> None:
    """Copy the buffers of ``module`` (BatchNorm running statistics) from rank ``src`` to
    every process. DDP syncs them before each forward, so after the last step of an epoch
    each process still holds the statistics of its own last batch."""
    if is_distributed():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=src)


def barrier() -> None:
    """Wait until every process gets here.

    A CPU collective, so it never touches an accelerator: with the CUDA group as well, a
    run on device 'cpu' may have more processes than GPUs.
    """
    if is_distributed():
        dist.all_reduce(torch.zeros(1))


def shard(sequence: torch.Tensor, *, rank: int, world_size: int) -> torch.Tensor:
    """This process's share of a sequence that every process holds in full.

    The sequence is padded to a multiple of ``world_size`` by repeating its start, and
    process ``rank`` keeps positions ``rank, rank + world_size, ...`` (the rule of
    :meth:`tailmix.samplers.AnchorSampler.epoch_indices`): the shares take disjoint
    positions, are equally long, and together hold the whole sequence.

    Parameters
    ----------
    sequence : Tensor
        Shape ``(N, ...)`` with ``N >= 1``, the same on every process.
    rank : int
        This process's rank, in ``[0, world_size)``.
    world_size : int
        Number of processes, ``>= 1``.

    Returns
    -------
    Tensor
        ``ceil(N / world_size)`` rows of ``sequence``.

    >>> shard(torch.arange(5), rank=1, world_size=2).tolist()
    [1, 3, 0]
    """
    world_size = check_number("world_size", world_size, low=1, integer=True)
    rank = check_number("rank", rank, low=0, high=world_size - 1, integer=True)
    if sequence.dim() == 0 or sequence.shape[0] == 0:
        raise ParameterError("sequence", "a tensor with at least one row",
                             f"shape {tuple(sequence.shape)}")
    if world_size == 1:
        return sequence
    total = -(-sequence.shape[0] // world_size) * world_size
    if total > sequence.shape[0]:
        repeats = -(-total // sequence.shape[0])
        sequence = sequence.repeat(repeats, *([1] * (sequence.dim() - 1)))[:total]
    return sequence[rank::world_size]
