"""Stop signals: SIGINT and SIGTERM end a run promptly, in order, and within a bounded grace.

The first SIGINT or SIGTERM raises ``RunStopped`` in the main thread at once (training
stops between two operations; the last checkpoint is whole, since checkpoints are written
to a temporary file and renamed). It is a ``BaseException``: no ``except Exception``, and
no task retry, turns it into something else. Repeated signals (Ctrl-C hit twice, a
supervisor forwarding the one ``timeout`` sent) change nothing: the run is already
stopping. If it has not ended ``grace`` seconds after the first signal, a watchdog kills
every process the run started and exits with 128 + the signal number.

A step that must finish whole (writing a model version to the registry, any MLflow call:
``autotransfer/uninterrupted.py`` says why) runs in ``uninterrupted.whole()``: a signal inside
it stops the run right after it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType

import psutil

from autotransfer import uninterrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACE_S = 10.0
_installed: StopSignals | None = None


class RunStopped(BaseException):
    """A stop signal arrived; the run ends without doing anything more."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _exits_with_us(process: psutil.Process) -> bool:
    """multiprocessing's resource tracker ignores SIGTERM and ends when this process does (and must
    outlive it, to clean up shared memory)."""
    try:
        return "multiprocessing.resource_tracker" in " ".join(process.cmdline())
    except psutil.Error:
        return True


def kill_descendants(timeout: float = 3.0) -> None:
    """SIGTERM every process this one started (and theirs), then SIGKILL what is left after ``timeout``."""
    try:
        children = [p for p in psutil.Process().children(recursive=True) if not _exits_with_us(p)]
    except psutil.Error:
        return
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=timeout)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()
    psutil.wait_procs(alive, timeout=timeout)


class StopSignals:
    """The process's SIGINT/SIGTERM handling while a run is under way (install it in the main thread)."""

    def __init__(self, grace: float = GRACE_S) -> None:
        self.grace = grace
        self.received: int | None = None
        self._raised = False
        self._over = False

    def install(self) -> StopSignals:
        global _installed
        for sig in SIGNALS:
            signal.signal(sig, self._handle)
        _installed = self
        return self

    def reinstall(self) -> None:
        """Take the signals back from code that replaced the handlers (Prefect's flow engine does for SIGTERM)."""
        if threading.current_thread() is threading.main_thread():
            self.install()

    def disarm(self) -> None:
        """The run is over: a stop signal's watchdog, if one is running, ends nothing."""
        self._over = True

    def check(self) -> None:
        """Raise ``RunStopped`` if a signal arrived and nothing has raised it yet (a stage boundary)."""
        if self.received is not None and not self._raised and not uninterrupted.inside():
            self._raised = True
            raise RunStopped(self.received)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            return  # already stopping: the watchdog bounds how long that takes
        self.received = signum
        threading.Thread(target=self._watchdog, name="stop-watchdog", daemon=True).start()
        if uninterrupted.inside():
            uninterrupted.after_block(self.check)
        else:
            self.check()

    def _watchdog(self) -> None:
        time.sleep(self.grace)
        if self._over:
            return
        assert self.received is not None
        name = signal.Signals(self.received).name
        print(f"autotransfer: still running {self.grace:g} s after {name}; ending by force", file=sys.stderr)
        kill_descendants()
        os._exit(128 + self.received)


@contextlib.contextmanager
def handling(process_wide: bool = False) -> Iterator[StopSignals]:
    """The handling already installed, else new handling for this block.

    ``process_wide`` (a command's own process, which ends with it) keeps it installed to the
    end: a repeated signal during the exit still finds it. Otherwise the previous handlers
    come back after the block and its watchdog is disarmed, so a caller's process (a
    notebook, a test session, a Prefect worker's flow process) keeps its own handling.
    """
    global _installed
    if _installed is not None:
        _installed.reinstall()
        yield _installed
        return
    if threading.current_thread() is not threading.main_thread():
        yield StopSignals()  # signals reach the main thread only: nothing to handle here
        return
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    signals = StopSignals().install()
    try:
        yield signals
    finally:
        if process_wide and signals.received is not None:
            # the command is ending because of a signal: ignore further ones. CPython puts SIG_DFL
            # back for Python handlers early in its exit (SIG_IGN it leaves), and a repeated signal
            # during the module teardown that follows would kill it with -signum, not 128 + signum;
            # the watchdog still bounds the exit
            for sig in SIGNALS:
                signal.signal(sig, signal.SIG_IGN)
        if not process_wide:
            signals.disarm()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            _installed = None
