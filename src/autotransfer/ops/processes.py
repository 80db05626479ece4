"""The team stack's process plumbing: free ports, health waits, private files, stopping a process group."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import requests

HOST = "127.0.0.1"  # every server of the stack binds here, never a public interface


class StackError(RuntimeError):
    pass


def wait_http(url: str, process: subprocess.Popen, timeout: float = 120, name: str | None = None) -> None:
    """Wait until ``url`` answers 2xx; fail at once if ``process`` exits, else after ``timeout``."""
    name = name or str(process.args)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StackError(f"{name} exited with status {process.returncode}")
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise StackError(f"{name} did not answer {url} within {timeout:.0f} s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def postgres_bin(tool: str) -> Path:
    """``initdb``/``pg_ctl``/... from PATH, else Debian's /usr/lib/postgresql/<newest>/bin."""
    found = shutil.which(tool)
    if found:
        return Path(found)
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"), key=lambda p: int(p.split("/")[4]))
    if not candidates:
        raise StackError(
            f"PostgreSQL's {tool} was not found (PATH or /usr/lib/postgresql/*/bin): "
            "install it, e.g. `apt-get install postgresql`"
        )
    return Path(candidates[-1])


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` created 0600: a secret in it is never readable by others, even for a moment."""
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
        file.write(text)


def terminate_group(pid: int, timeout: float = 20) -> bool:
    """SIGTERM the process group (servers spawn workers), SIGKILL what is left after ``timeout``."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            break
        reap(pid)
        time.sleep(0.2)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    reap(pid)
    return True


def wait_gone(pid: int, timeout: float = 20) -> None:
    """Wait until ``pid`` has exited (a zombie counts as exited: its parent, not us, reaps it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        except PermissionError:  # alive, owned by the postgres user
            pass
        with contextlib.suppress(OSError):
            if "zombie" in Path(f"/proc/{pid}/status").read_text():
                return
        time.sleep(0.05)


def reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def init_cluster(data: Path, password: str, password_file: Path, as_postgres: list[str]) -> None:
    """A new PostgreSQL cluster in ``data`` whose superuser needs ``password`` (the file is removed after)."""
    data.mkdir(parents=True, exist_ok=True)
    # Password authentication (scram-sha-256) for every connection, the local socket too:
    # with "trust" any local user could connect as the superuser and run commands as the
    # cluster's owner (COPY ... TO PROGRAM) or rewrite the registry.
    write_private(password_file, password + "\n")
    if as_postgres:
        shutil.chown(data, "postgres", "postgres")
        shutil.chown(password_file, "postgres", "postgres")
    try:
        made = subprocess.run(
            [
                *as_postgres,
                str(postgres_bin("initdb")),
                "-D",
                str(data),
                "-A",
                "scram-sha-256",
                "-U",
                "postgres",
                f"--pwfile={password_file}",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
        )
    finally:
        password_file.unlink(missing_ok=True)
    if made.returncode != 0:  # e.g. the postgres user cannot reach a folder inside a 0700 one
        raise StackError(f"initdb {data} failed: {made.stderr.strip()}")
