"""Keep ``data.dvc`` and the local DVC cache in step with a freshly built ``data/``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def project_root(start: Path) -> Path | None:
    """The nearest folder at or above ``start`` that holds a ``.dvc`` folder."""
    for folder in (start.resolve(), *start.resolve().parents):
        if (folder / ".dvc").is_dir():
            return folder
    return None


def dvc(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # The DVC of this interpreter's environment, whatever ``dvc`` is first on PATH.
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True)


def commit_data(data_dir: Path) -> str:
    """Record ``data_dir`` in its ``.dvc`` file and fill the local cache.

    On a fresh clone the cache is empty, so ``dvc status`` reports "not in cache" even for
    byte-identical data until it is committed: that is what this does. When the data
    differs from the recorded hash, the ``.dvc`` file changes and ``git diff`` shows it.
    Returns a one-line description; raises RuntimeError with DVC's message on failure.
    """
    data_dir = data_dir.resolve()
    root = project_root(data_dir.parent)
    if root is None:
        return f"{data_dir}: not inside a DVC project, not tracked"
    pointer = data_dir.with_name(data_dir.name + ".dvc")
    before = pointer.read_text() if pointer.exists() else None
    rel = data_dir.relative_to(root).as_posix()
    args = ["commit", "--force", "--quiet", pointer.relative_to(root).as_posix()] if before else ["add", "--quiet", rel]
    result = dvc(args, root)
    if result.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed in {root}: {result.stderr.strip() or result.stdout.strip()}")
    after = pointer.read_text()
    if before is None:
        return f"{rel}: now tracked by DVC in {pointer.name} (commit it to git)"
    if before == after:
        return f"{rel}: identical to {pointer.name}; local DVC cache filled"
    return f"{rel}: differs from the committed {pointer.name}, which now records the new hash (see git diff)"


def commit_pipeline(stages: list[str], root: Path = Path(".")) -> str:
    """Tell DVC that the outputs now on disk are the stages' results (``dvc commit``).

    The Prefect flow runs the same stage functions as ``dvc repro``; committing afterwards
    records that in dvc.lock (and the cache), so ``dvc repro`` right after a flow run has
    nothing to do. Only meaningful when the run used params.yaml as is: the caller checks.
    """
    if not (root / "dvc.yaml").exists():
        return "no dvc.yaml here: nothing recorded in DVC"
    result = dvc(["commit", "--force", "--quiet", *stages], root)
    if result.returncode != 0:
        raise RuntimeError(f"dvc commit failed in {root.resolve()}: {result.stderr.strip() or result.stdout.strip()}")
    return f"recorded in dvc.lock: {', '.join(stages)}"
