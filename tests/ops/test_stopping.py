"""The stop-signal handling itself, with real signals sent to this test process."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from autotransfer import uninterrupted
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
        with handling():
            with uninterrupted.whole():
                os.kill(os.getpid(), signal.SIGINT)
                with uninterrupted.whole():  # nested: the outermost block's end raises
                    os.kill(os.getpid(), signal.SIGINT)
                finished.append("register")  # the step ran to its end
            finished.append("after")  # not reached: the stop is raised as the step ends
    assert finished == ["register"] and stopped.value.exit_code == 130


def test_a_stop_during_a_step_that_fails_is_still_raised_as_it_ends():
    # the step's own error (a store that refused the write, caught by the caller as a tracking hiccup)
    # must not swallow the stop: training would go on to the next stage boundary
    with pytest.raises(RunStopped) as stopped:
        with handling():
            with uninterrupted.whole():
                os.kill(os.getpid(), signal.SIGTERM)
                raise OSError("the store refused the write")
    assert isinstance(stopped.value.__context__, OSError) and not uninterrupted.inside()


def test_a_run_that_hangs_after_the_signal_is_ended_by_the_watchdog(tmp_path):
    # a child that ignores the stop (swallows RunStopped) and a grandchild it started
    script = tmp_path / "hang.py"
    script.write_text(
        "import subprocess, sys, time\n"
        "from autotransfer.ops.stopping import StopSignals, RunStopped\n"
        "signals = StopSignals(grace=1.0).install()\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "try:\n"
        "    print(child.pid, flush=True)  # in the try: the signal may land before print returns\n"
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


def test_a_repeated_signal_during_the_interpreter_exit_does_not_kill_it(tmp_path):
    # CPython puts SIG_DFL back for Python handlers as it finalizes, then tears down modules (torch's take
    # a while): a second SIGTERM then (``timeout`` and a supervisor both forwarding it) killed the command
    # with -15 instead of the 143 the first one chose
    marker = tmp_path / "finalizing"
    script = tmp_path / "slow_exit.py"
    script.write_text(
        "import sys, time\n"
        "from pathlib import Path\n"
        "from autotransfer.ops.stopping import RunStopped, handling\n"
        "class SlowTeardown:\n"
        "    def __del__(self):\n"
        f"        Path({str(marker)!r}).touch()\n"
        "        time.sleep(2)\n"
        "teardown = SlowTeardown()  # a module global: deleted while the interpreter finalizes\n"
        "def main():\n"
        "    with handling(process_wide=True):\n"
        "        try:\n"
        "            print('ready', flush=True)\n"
        "            time.sleep(60)\n"
        "        except RunStopped as exc:\n"
        "            return exc.exit_code\n"
        "    return 0\n"
        "sys.exit(main())\n"
    )
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    while not marker.exists():
        assert process.poll() is None and time.monotonic() < deadline, process.returncode
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 143
