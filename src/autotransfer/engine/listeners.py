"""Epoch listeners: how live tracking hears the training loop without the loop knowing about it.

The loop calls every listener on the main rank after each epoch with (candidate label, the
epoch's history row, the global optimizer step). Imports nothing, so code that registers a
listener (registry.tracking) does not depend on the training code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

EpochListener = Callable[[str, dict[str, Any], int], None]
_listeners: list[EpochListener] = []


@contextlib.contextmanager
def listening(listener: EpochListener) -> Iterator[None]:
    """``listener`` hears every epoch that ends inside this block, in any training run."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def epoch_ended(label: str, record: dict[str, Any], step: int) -> None:
    for listener in list(_listeners):
        listener(label, record, step)
