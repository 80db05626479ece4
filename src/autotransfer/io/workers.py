"""Worker processes (torch ``DataLoader``) that decode images and read training batches ahead.

Two jobs, one mechanism (``data.workers``; 0 keeps everything in the calling process):

- ``decode_blocks`` decodes files in parallel, in order, a block at a time: what missing
  decoded-cache entries are built from (the in-memory path decodes in the calling process).
- ``PrefetchStore`` wraps a store whose reads the training loop announces an epoch ahead:
  the workers read those batches (from the decoded cache's file) while the step computes,
  and hand them over through pinned memory on CUDA.

The workers draw no random numbers: the order and every augmentation draw stay in the main
process on its generator, so a run trains the same, bit for bit, with any number of
workers. They start with ``forkserver``, not ``fork``: the flow's process has threads
(Prefect's API client, loggers), and forking a process with threads can deadlock.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import multiprocessing.context
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from autotransfer.io.store import ImageStore, TensorStore

START_METHOD = "forkserver"
# The fork server imports these once; each worker forked from it then starts in well under a second.
_PRELOAD = ["torch", "autotransfer.io.data", "autotransfer.io.workers"]


def _context() -> multiprocessing.context.BaseContext:
    context = multiprocessing.get_context(START_METHOD)
    context.set_forkserver_preload(_PRELOAD)
    return context


class _Decoded(Dataset[np.ndarray]):
    def __init__(self, decode: Callable[[int], np.ndarray], count: int) -> None:
        self.decode, self.count = decode, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> np.ndarray:
        return self.decode(i)


def _stack(items: list[np.ndarray]) -> np.ndarray:
    return np.stack(items)


def decode_blocks(decode: Callable[[int], np.ndarray], count: int, block: int, workers: int) -> Iterator[np.ndarray]:
    """``decode(i)`` for i in ``range(count)``, in order, ``block`` images at a time.

    With workers, ``decode`` must pickle (a top-level callable object, not a closure).
    """
    if workers <= 0 or count <= block:  # one block: starting workers would cost more than it saves
        for start in range(0, count, block):
            yield np.stack([decode(i) for i in range(start, min(count, start + block))])
        return
    loader = DataLoader(
        _Decoded(decode, count),
        batch_size=block,
        shuffle=False,
        num_workers=min(workers, -(-count // block)),
        collate_fn=_stack,
        multiprocessing_context=_context(),
        generator=torch.Generator(),  # its seed draw must not consume the global RNG
    )
    yield from loader


class _Rows(Dataset[torch.Tensor]):
    def __init__(self, store: ImageStore) -> None:
        self.store = store

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, positions: np.ndarray) -> torch.Tensor:
        return self.store.rows(positions)


class _Announced:
    """The sampler: the epoch's batches of positions, set by ``announce`` before each pass."""

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class PrefetchStore(ImageStore):
    """``store``, with the reads announced for an epoch made ahead by persistent worker processes.

    A read that is not the next announced batch (any other index) goes to ``store`` directly,
    so what a caller gets never depends on the prefetching.
    """

    def __init__(self, store: ImageStore, workers: int, prefetch: int, pin: bool) -> None:
        self.store, self.side = store, store.side
        self._sampler = _Announced()
        self._loader = DataLoader(
            _Rows(store),
            batch_size=None,
            sampler=self._sampler,
            num_workers=workers,
            persistent_workers=True,
            prefetch_factor=prefetch,
            pin_memory=pin,
            multiprocessing_context=_context(),
            # DataLoader draws its workers' base seed from this; from the global RNG by default, which
            # would shift every later draw (dropout) of the run
            generator=torch.Generator(),
        )
        self._iterator: Iterator[torch.Tensor] | None = None
        self._expected: collections.deque[np.ndarray] = collections.deque()

    def __len__(self) -> int:
        return len(self.store)

    def has_colour(self) -> bool:
        return self.store.has_colour()

    def announce(self, batches: Sequence[torch.Tensor]) -> None:
        """The positions the next reads will ask for, in order (one epoch's batches)."""
        self._sampler.batches = [b.cpu().numpy().reshape(-1).astype(np.int64) for b in batches]
        self._expected = collections.deque(self._sampler.batches)
        self._iterator = iter(self._loader)

    def rows(self, positions: np.ndarray) -> torch.Tensor:
        if self._iterator is not None and self._expected and np.array_equal(positions, self._expected[0]):
            self._expected.popleft()
            return next(self._iterator)
        return self.store.rows(positions)

    def close(self) -> None:
        shutdown: Any = getattr(self._iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        self._iterator, self._expected = None, collections.deque()


@contextlib.contextmanager
def prefetching(store: ImageStore, workers: int, prefetch: int, pin: bool) -> Iterator[ImageStore]:
    """``store`` read ahead by ``workers`` processes; unchanged for in-memory stores or 0 workers."""
    if workers <= 0 or isinstance(store, TensorStore) or len(store) == 0:
        yield store
        return
    ahead = PrefetchStore(store, workers, prefetch, pin)
    try:
        yield ahead
    finally:
        ahead.close()
