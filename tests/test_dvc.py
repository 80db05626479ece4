"""Real DVC in a temporary git repo made from this checkout's files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def sh(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """The project's files (tracked and new, not ignored) in a fresh git repo: like a clean clone."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, text=True, check=True).stdout.split("\0")
    target = tmp_path / "clone"
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    sh(["git", "init", "-q"], target)
    sh(["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"], target)
    sh(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "clone"], target)
    return target


@pytest.mark.slow
def test_demo_data_rebuild_matches_data_dvc_and_pipeline_is_up_to_date(clone: Path):
    committed = (clone / "data.dvc").read_text()
    # given a fresh clone (no data, empty DVC cache)
    assert not (clone / "data").exists()
    # when the demo data is built
    sh(["autotransfer", "demo-data", "--no-progress"], clone)
    # then data.dvc is byte-identical (git diff is empty) and DVC finds the data in its cache
    assert (clone / "data.dvc").read_text() == committed
    assert sh(["git", "diff", "--stat"], clone).stdout == ""
    status = sh([sys.executable, "-m", "dvc", "status", "data.dvc"], clone).stdout
    assert "up to date" in status, status
    # and once the stages have run, the committed dvc.lock matches code, params and outputs
    sh(["autotransfer", "validate", "--no-progress"], clone)
    status = sh([sys.executable, "-m", "dvc", "status"], clone).stdout
    assert "up to date" in status, f"dvc.lock is stale: run `dvc repro` and commit dvc.lock\n{status}"
    assert "didn't change" in sh([sys.executable, "-m", "dvc", "repro"], clone).stdout


@pytest.mark.slow
def test_changed_data_shows_in_git_diff(clone: Path):
    sh(["autotransfer", "demo-data", "--no-progress", "-S", "demo.seed=1"], clone)
    assert "data.dvc" in sh(["git", "diff", "--stat"], clone).stdout
