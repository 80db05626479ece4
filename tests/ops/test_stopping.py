"""The stop-signal handling itself, with real signals sent to this test process."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from autotransfer.ops.stopping import RunStopped, handling


def test_the_first_signal_stops_the_block_and_the_old_handlers_come_back():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(RunStopped) as stopped:
        with handling():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # never reached: the handler raises at once
    assert stopped.value.signum == signal.SIGTERM and stopped.value.exit_code == 143
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_repeated_signals_raise_once_and_a_deferred_step_finishes_first():
    finished = []
    with pytest.raises(RunStopped) as stopped:
        with handling() as signals:
            with signals.deferred():
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)
                finished.append("register")  # the step ran to its end
            finished.append("after")  # not reached: the stop is raised as the step ends
    assert finished == ["register"] and stopped.value.exit_code == 130


def test_a_run_that_hangs_after_the_signal_is_ended_by_the_watchdog(tmp_path):
    # a child that ignores the stop (swallows RunStopped) and a grandchild it started
    script = tmp_path / "hang.py"
    script.write_text(
        "import subprocess, sys, time\n"
        "from autotransfer.ops.stopping import StopSignals, RunStopped\n"
        "signals = StopSignals(grace=1.0).install()\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(child.pid, flush=True)\n"
        "try:\n"
        "    time.sleep(60)\n"
        "except RunStopped:\n"
        "    time.sleep(60)  # a teardown that never ends\n"
    )
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    grandchild = int(process.stdout.readline())
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 143
    assert "ending by force" in process.stderr.read()
    assert gone(grandchild)


def gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False
