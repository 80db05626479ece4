"""Progress: a bar on a terminal, and log lines everywhere else.

Stages run under Prefect and under ``dvc repro`` with bars off; a long step must still say
what it does. ``Progress`` drives a tqdm bar when one is shown (an interactive terminal,
``progress`` not false) and otherwise logs a line on the ``autotransfer.progress`` logger
about every 10 s (``LOG_EVERY_S``): what, how far, how fast, the time left, and the latest
figures (``set_postfix``: loss, val accuracy). The CLI prints that logger to stderr; the
Prefect tasks forward it to the run's log (tasks/stages.py).
"""

from __future__ import annotations

import logging
import time
from types import TracebackType
from typing import Any

from tqdm.auto import tqdm

log = logging.getLogger("autotransfer.progress")
LOG_EVERY_S = 9.0  # lines come at the first update after this: about every 10 s with steps of < 1 s
QUIET_FIRST_S = 1.0  # a job younger than this does not speak unannounced: it is likely done before it matters
# When the last progress line of this process was written, by any Progress: a stage made of many
# short jobs (decode, features, fit) still says something every LOG_EVERY_S seconds.
_last_line = [time.monotonic()]


def bar_disabled(progress: bool | None, n: int, threshold: int = 2000) -> bool | None:
    """tqdm's ``disable``: ``progress`` None means automatic (a bar on a terminal, for big jobs)."""
    if progress is None:
        return None if n > threshold else True  # None: tqdm shows the bar only on a terminal
    return not progress


class Progress:
    """``total`` units of work called ``desc``; ``scale`` images per unit give the img/s of a line.

    ``announce``: log a first line at once (training: the run says it started); otherwise the
    first line comes once ``LOG_EVERY_S`` seconds passed without any progress line of the process,
    so short jobs in a row stay quiet until together they take that long. ``silent``: neither
    bar nor lines (a distributed run's other ranks).
    """

    def __init__(
        self,
        desc: str,
        total: int,
        unit: str,
        progress: bool | None,
        initial: int = 0,
        scale: int | None = None,
        announce: bool = False,
        bar_threshold: int = 2000,
        silent: bool = False,
    ) -> None:
        self.desc, self.total, self.unit, self.scale = desc, total, unit, scale
        self.done = self.start_done = initial
        self.bar = tqdm(
            total=total,
            initial=initial,
            desc=desc,
            unit=unit,
            disable=True if silent else bar_disabled(progress, total, bar_threshold),
        )
        self.logs = bool(self.bar.disable) and total > 0 and not silent
        self.postfix: dict[str, Any] = {}
        self.started, self.last = time.monotonic(), _last_line[0]
        self.logged = False
        if self.logs and announce:
            self._line(self.started)

    def update(self, n: int = 1) -> None:
        self.bar.update(n)
        self.done += n
        now = time.monotonic()
        if self.logs and now - max(self.last, _last_line[0]) >= LOG_EVERY_S and now - self.started >= QUIET_FIRST_S:
            self._line(now)

    def set_postfix(self, **values: Any) -> None:
        self.bar.set_postfix(values)
        self.postfix = values

    def close(self) -> None:
        self.bar.close()
        if self.logs and self.logged:
            now = _last_line[0] = time.monotonic()
            figures = "".join(f", {key} {value}" for key, value in self.postfix.items())
            log.info("%s: done, %d %ss in %.0f s%s", self.desc, self.done, self.unit, now - self.started, figures)

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def _line(self, now: float) -> None:
        self.last, self.logged, _last_line[0] = now, True, now
        elapsed, moved = now - self.started, self.done - self.start_done
        parts = [f"{self.desc}: {self.done}/{self.total} {self.unit}s ({100 * self.done / self.total:.0f}%)"]
        if moved and elapsed > 0:
            rate = moved / elapsed
            parts.append(f"{rate * self.scale:.1f} img/s" if self.scale else f"{rate:.1f} {self.unit}/s")
            parts.append(f"ETA {_duration((self.total - self.done) / rate)}")
        parts += [f"{key} {value}" for key, value in self.postfix.items()]
        log.info(", ".join(parts))


def _duration(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 60}m{whole % 60:02d}s" if whole >= 60 else f"{whole}s"
