"""The temporary Prefect server of a run without PREFECT_API_URL, owned by the run.

Prefect starts one on demand (``SubprocessASGIServer``) in the run's process group, so a
Ctrl-C kills it at once, while the run still needs it to record how it ended, and it
outlives a SIGKILLed run. ``owned_temporary_server`` starts it first instead, from the
main thread: in its own session (signals sent to the terminal's group do not reach it)
and with the kernel told to kill it when the run's process dies. Prefect's own code then
finds this instance (it is the class's default-port singleton) and uses it; the run stops
it last, after the flow's final state and logs are sent. It waits at least
``MIN_STARTUP_SECONDS`` for the server to answer (more if
PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS says so).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import prefect
from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_SERVER_EPHEMERAL_ENABLED,
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
    get_current_settings,
)

from autotransfer.ops.launch import die_with_parent

# Prefect gives its temporary server 20 s, which a fresh database's migrations on a busy
# 2-core machine overrun; the run then fails before its first stage. Failing late costs nothing.
MIN_STARTUP_SECONDS = 120


class OwnedTemporaryServer(SubprocessASGIServer):
    def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
        # Prefect 3.9's own command and environment for its temporary server
        server_env = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        return subprocess.Popen(
            args=[
                sys.executable,
                "-m",
                "uvicorn",
                "--app-dir",
                str(prefect.__module_path__.parent),
                "--factory",
                "prefect.server.api.server:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "error",
                "--lifespan",
                "on",
            ],
            env={**os.environ, **server_env, **get_current_settings().to_environment_variables(exclude_unset=True)},
            start_new_session=True,
            preexec_fn=die_with_parent,
        )

    def stop(self) -> None:
        """Prefect waits up to 5 s for a graceful shutdown; by now its logs are sent, so wait 2 s."""
        process = self.server_process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                process.kill()
        super().stop()


def _flush_to_server() -> None:
    """Send what Prefect's background workers still hold (the final state's logs and events)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):
            worker.drain_all(timeout=5)


@contextlib.contextmanager
def owned_temporary_server() -> Iterator[OwnedTemporaryServer | None]:
    """The run's temporary server (None when PREFECT_API_URL names a real one), stopped at the end."""
    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        yield None
        return
    existing = SubprocessASGIServer._instances.get(None)
    if existing is not None and not isinstance(existing, OwnedTemporaryServer):
        yield None  # Prefect already started its own in this process (a test harness): leave it be
        return
    server = OwnedTemporaryServer()
    server.start(timeout=max(MIN_STARTUP_SECONDS, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()))
    try:
        yield server
    finally:
        _flush_to_server()
        server.stop()
