"""Starting and stopping real servers on 127.0.0.1 in tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

from autotransfer.ops.processes import free_port, wait_http

__all__ = ["free_port", "running", "stop", "wait_http"]


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an unreaped child has stopped running)."""
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
