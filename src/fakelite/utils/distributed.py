"""Multi-process training and evaluation under `torchrun` (torch.distributed), CPU first.

`torchrun --nproc_per_node N -m fakelite train ...` starts N processes with RANK / WORLD_SIZE / LOCAL_RANK /
MASTER_ADDR / MASTER_PORT in their environment; `init_from_env()` turns that into an initialised process group
(gloo on CPU; nccl only when the caller asks for a CUDA device and NCCL is available). Without those variables,
or with WORLD_SIZE=1, nothing is initialised and everything runs as a single process.

The gathers here use plain tensors (no pickling of objects between processes).
"""

from __future__ import annotations

import atexit
import datetime
import logging
import os

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger("fakelite.distributed")


def env_world_size() -> int:
    """WORLD_SIZE set by torchrun (1 when absent or unparsable)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank_world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) when not distributed."""
    if is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env(backend: str | None = None, device: str = "cpu", timeout_s: float = 600.0) -> tuple[int, int]:
    """Initialise the default process group from torchrun's environment; returns (rank, world).

    Idempotent; a no-op when WORLD_SIZE is absent or 1. backend: None picks gloo, or nccl when `device` is a CUDA
    device, CUDA is available and NCCL is built in (the training loop itself runs on CPU, so fit() asks for gloo).
    """
    if is_initialized():
        return rank_world()
    world = env_world_size()
    if world <= 1:
        return 0, 1
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={world} but {', '.join(missing)} not set: launch with torchrun")
    if backend is None:
        use_cuda = device.startswith("cuda") and torch.cuda.is_available() and dist.is_nccl_available()
        backend = "nccl" if use_cuda else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    atexit.register(cleanup)
    rank, world = rank_world()
    log.info("process group up: rank %d of %d (%s)", rank, world, backend)
    return rank, world


def cleanup() -> None:
    """Destroy the process group (safe to call when none exists)."""
    if is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def all_reduce_sum(values: list[float]) -> list[float]:
    """Sum a few scalars over ranks (float64); identity when not distributed."""
    if not is_initialized():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_gather_array(a: np.ndarray) -> list[np.ndarray]:
    """Gather a 1-D array of any length from every rank (padded to the longest, then trimmed); rank order."""
    if not is_initialized():
        return [a]
    world = dist.get_world_size()
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))
    n = torch.tensor([t.numel()], dtype=torch.int64)
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(world)]
    dist.all_gather(sizes, n)
    m = int(max(s.item() for s in sizes))
    padded = torch.zeros(m, dtype=torch.float64)
    padded[: t.numel()] = t
    bufs = [torch.zeros(m, dtype=torch.float64) for _ in range(world)]
    dist.all_gather(bufs, padded)
    return [b[: int(s.item())].numpy() for b, s in zip(bufs, sizes, strict=True)]


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy `module`'s buffers (BatchNorm running statistics) from rank `src` to every rank, so that evaluation
    on each rank uses the same model (DDP keeps parameters in sync; BN statistics are per rank)."""
    if not is_initialized():
        return
    for b in module.buffers():
        dist.broadcast(b.data, src)


def shard(n: int, rank: int, world: int) -> list[int]:
    """Indices 0..n-1 of rank's share (strided, no padding: each item is evaluated exactly once)."""
    return list(range(rank, n, world))
