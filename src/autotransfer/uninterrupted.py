"""Blocks that a stop signal must not cut in two.

The stop handler (``ops/stopping.py``) raises ``RunStopped`` in the main thread wherever it
is. In the middle of a write to a store that holds a lock, that leaves the lock held: MLflow
on SQLite keeps the interrupted transaction's database lock, and the run's next write to the
store (the one that ends its MLflow run KILLED) then waits on it until the stop's grace runs
out and the watchdog kills the process, leaving the flow run RUNNING. Such a write runs in
``whole()``: a stop signal that arrives inside it is raised as the outermost block ends.

A block that outlasts the grace is still ended by the watchdog. This module imports nothing
of the library, so every layer can use it (the registry does, and may not import ops).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

_depth = 0  # of the main thread's blocks: signal handlers run in the main thread only
_pending: Callable[[], None] | None = None


def inside() -> bool:
    """Whether the main thread is inside a ``whole()`` block."""
    return _depth > 0


def after_block(action: Callable[[], None]) -> None:
    """Run ``action`` (raising the stop a signal brought) as the outermost ``whole()`` block ends."""
    global _pending
    _pending = action


@contextlib.contextmanager
def whole() -> Iterator[None]:
    """The block runs to its end before a stop signal that arrives during it takes effect."""
    global _depth, _pending
    if threading.current_thread() is not threading.main_thread():
        yield  # no signal is handled in this thread: nothing to defer
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _pending is not None:
            action, _pending = _pending, None
            action()  # raises the stop, in place of an error the block raised: the run is stopping
