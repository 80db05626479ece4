"""Atomic writes: a temp file next to the target, then a rename.

A crash, a full disk or a kill never leaves a half-written report, model or checkpoint
behind: readers see the previous version or the new one, whole.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotransfer.errors import OutputError

if TYPE_CHECKING:
    from autotransfer.artifacts import Report


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` then rename ``tmp`` over ``path``; on failure remove ``tmp`` and re-raise.

    Each call has its own temp name: two writers of one path (two runs sharing ``train.out``
    or a cache) never write into the same file; the last rename wins, whole.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:16]}.tmp")
    try:
        write(tmp)
        tmp.replace(path)
    except OSError as exc:  # a full disk, a read-only folder: named, not a raw OSError from deep inside
        tmp.unlink(missing_ok=True)
        raise OutputError(path, exc.strerror or str(exc)) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_safetensors(path: Path, tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    contiguous = {name: tensor.contiguous() for name, tensor in tensors.items()}
    write_atomic(path, lambda tmp: save_file(contiguous, str(tmp), metadata=metadata))


def write_text(path: Path, text: str) -> None:
    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")

    write_atomic(path, write)


def write_json(path: Path, payload: Any) -> None:
    write_text(path, json.dumps(payload, indent=2) + "\n")


def write_report(path: Path, report: Report) -> None:
    """A stage's report (``artifacts``), as JSON with its fields in declaration order."""
    write_json(path, report.to_json())


# How long a stage waits for another process writing the same output folder (a full training run).
OUTPUT_LOCK_WAIT_S = 6 * 3600


@contextmanager
def output_lock(folder: str | Path, key: str, wait_s: float = OUTPUT_LOCK_WAIT_S) -> Iterator[None]:
    """One writer at a time for an output folder (``key`` names its param, e.g. ``train.out``).

    Two runs with different ``reports.dir`` (two flows, ``dvc repro`` beside a flow, two stage
    commands) can still name one ``train.out``: without this their checkpoints and models
    interleave. The lock lives in the temp folder, keyed by the folder's resolved path, so it
    adds no file to a DVC output; a second writer waits, says so, and fails naming ``key``
    after ``wait_s``.
    """
    import hashlib
    import logging
    import tempfile

    from filelock import FileLock, Timeout

    resolved = str(Path(folder).resolve())
    name = f"autotransfer-output-{hashlib.sha256(resolved.encode()).hexdigest()[:16]}.lock"
    lock = FileLock(str(Path(tempfile.gettempdir()) / name))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        logging.getLogger("autotransfer").warning(
            "another process is writing %s (%s); waiting for it to finish", resolved, key
        )
        try:
            lock.acquire(timeout=wait_s)
        except Timeout:
            raise OutputError(Path(folder), f"another process held it ({key}) for {wait_s:.0f} s") from None
    try:
        yield
    finally:
        lock.release()
