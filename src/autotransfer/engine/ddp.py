"""What the loop needs of torch DDP: who am I, wrap a module, agree on buffers and on stopping.

``ops.launch`` starts the ranks under ``torchrun``; ``stages.torchrun`` is each rank's entry
point. Every rank trains on its shard of each global batch; only rank 0 writes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def current_world() -> World:
    """The process group's rank and size (one process: rank 0 of 1)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def wrap(module: nn.Module, world: World, device: torch.device) -> nn.Module:
    """DDP over ``module``'s trainable parameters (re-wrap when the trainable set changes)."""
    if not world.distributed or not any(p.requires_grad for p in module.parameters()):
        return module
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)


def sync_buffers(module: nn.Module, world: World) -> None:
    """Rank 0's BatchNorm statistics everywhere, so every rank validates the same model.

    DDP broadcasts buffers at each forward, but the last forward of an epoch leaves each
    rank with statistics of its own shard; differing val scores would split early stopping.
    """
    if world.distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer, 0)


def all_finite(loss: torch.Tensor, world: World) -> bool:
    """True when the loss is finite on every rank (a rank that stopped alone would hang the rest)."""
    if not world.distributed:
        return bool(torch.isfinite(loss))
    flag = torch.tensor([0.0 if torch.isfinite(loss) else 1.0], device=loss.device)
    dist.all_reduce(flag)
    return flag.item() == 0.0


@contextlib.contextmanager
def main_first(world: World) -> Iterator[None]:
    """Rank 0 runs the block first (e.g. fills an on-disk cache); the others then read it."""
    if world.distributed and not world.is_main:
        dist.barrier()
    yield
    if world.distributed and world.is_main:
        dist.barrier()
