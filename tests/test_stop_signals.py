"""Stop signals during training: `autotransfer run` (the Prefect flow) and a stage command.

Real processes, real signals: the run is started in its own session, as a terminal starts
a command; the signal goes to that whole group (Ctrl-C) or to the main process only
(`kill`, systemd, a supervisor), once or twice. Each case prints what the closing note of
the issue reports: seconds to exit, exit code, the flow run's final state, versions
registered, processes left.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml
from mlflow import MlflowClient

from autotransfer.config import Params
from registry_helpers import demo_params

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
GRACE_S = 10


def write_params(params: Params, path: Path) -> Path:
    path.write_text(yaml.safe_dump(params.model_dump(mode="json")))
    return path


def run_env(prefect_home: Path) -> dict[str, str]:
    # a Prefect home of its own: the temporary server's database is read back below
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    return {**env, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PREFECT_HOME": str(prefect_home)}


def versions(params: Params) -> int:
    return len(MlflowClient(params.registry.tracking_uri).search_model_versions("name = 'autotransfer'"))


def flow_runs(prefect_home: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(prefect_home / "prefect.db") as db:
        return db.execute(
            "select flow_run.state_type, flow_run.state_name, flow_run_state.message from flow_run "
            "join flow_run_state on flow_run.state_id = flow_run_state.id order by flow_run.created").fetchall()


def training_params(demo_root: Path, work: Path, workers: int = 0) -> Params:
    # long enough to be signalled mid-way: ~1 s per epoch, 40 epochs
    return demo_params(demo_root, work, strategy={"force": "finetune_all"}, data={"workers": workers},
                       train={"epochs": 40, "batch_size": 8, "patience": 0})


def start_and_signal(command: list[str], env: dict[str, str], checkpoint: Path, sig: signal.Signals,
                     group: bool, times: int, cwd: Path | None = None) -> dict:
    """Start ``command``, wait for its first checkpoint, send ``sig``; what happened, as numbers."""
    log = tempfile.TemporaryFile("w+")  # not a pipe: a full pipe would stall the run before its checkpoint
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True, cwd=cwd)

    def output() -> str:
        log.seek(0)
        return log.read()

    seen: dict[int, psutil.Process] = {}
    deadline = time.monotonic() + 400
    while not checkpoint.exists():
        assert process.poll() is None, output()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint"
        for child in psutil.Process(process.pid).children(recursive=True):
            seen.setdefault(child.pid, child)
        time.sleep(0.05)
    for child in psutil.Process(process.pid).children(recursive=True):
        seen.setdefault(child.pid, child)
    epoch_at_signal = torch.load(checkpoint, weights_only=True)["epoch"]
    sent = time.monotonic()
    for i in range(times):
        if group:
            os.killpg(process.pid, sig)
        else:
            process.send_signal(sig)
        if i + 1 < times:
            time.sleep(0.3)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        for child in seen.values():
            child.kill()
        pytest.fail(f"still running 60 s after {sig.name}")
    seconds = time.monotonic() - sent
    time.sleep(1)  # what dies with its parent has had its chance
    left = [p.pid for p in seen.values() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    return {"seconds": seconds, "code": process.returncode, "left": left, "output": output(),
            "epoch_at_signal": epoch_at_signal, "children": len(seen)}


@pytest.mark.parametrize(("sig", "group", "times", "workers"), [
    (signal.SIGINT, True, 1, 2),  # Ctrl-C in a terminal, reaching the data workers too
    (signal.SIGTERM, False, 1, 0),  # kill, systemd, a Prefect worker's cancel
    (signal.SIGTERM, False, 2, 0),  # `timeout` forwarding it, plus a supervisor
    (signal.SIGTERM, True, 2, 2),  # Kubernetes / systemd sending to the whole group, twice
], ids=["SIGINT-group", "SIGTERM-once", "SIGTERM-twice", "SIGTERM-group-twice"])
def test_a_signalled_run_stops_in_order_registers_nothing_and_leaves_no_process(demo_root, tmp_path, sig, group,
                                                                               times, workers):
    params = training_params(demo_root, tmp_path / "work", workers)
    file = write_params(params, tmp_path / "params.yaml")
    home = tmp_path / "prefect"
    checkpoint = Path(params.train.out) / "runs/finetune_all/checkpoint.pt"
    # given a retrain flow in its training stage, when the signal arrives
    result = start_and_signal([str(BIN / "autotransfer"), "run", "--params", str(file)], run_env(home),
                              checkpoint, sig, group, times)
    print(f"\n{sig.name} x{times} to {'the group' if group else 'the main process'}: exit {result['code']} after "
          f"{result['seconds']:.1f} s; flow run {flow_runs(home)[-1][:2]}; versions {versions(params)}; "
          f"processes left {len(result['left'])} of {result['children']}")
    # then it exits with 128 + the signal, within the grace, saying why
    assert result["code"] == 128 + sig, result["output"][-3000:]
    assert result["seconds"] < GRACE_S + 5, result["output"][-3000:]
    assert f"stopped by {sig.name}" in result["output"]
    # the flow run is Cancelled with the reason, nothing was registered, no process survives
    state_type, _, message = flow_runs(home)[-1]
    assert state_type == "CANCELLED" and f"stopped by {sig.name} during train" in message
    assert versions(params) == 0 and not (Path(params.train.out) / "model.safetensors").exists()
    assert result["left"] == []
    # and the last checkpoint is whole: it loads
    assert torch.load(checkpoint, weights_only=True)["epoch"] >= result["epoch_at_signal"]


def test_the_rerun_after_a_ctrl_c_resumes_and_registers_once(demo_root, tmp_path):
    params = demo_params(demo_root, tmp_path / "work", strategy={"force": "finetune_all"},
                         train={"epochs": 8, "batch_size": 8, "patience": 0})
    file = write_params(params, tmp_path / "params.yaml")
    home = tmp_path / "prefect"
    checkpoint = Path(params.train.out) / "runs/finetune_all/checkpoint.pt"
    command = [str(BIN / "autotransfer"), "run", "--params", str(file)]
    first = start_and_signal(command, run_env(home), checkpoint, signal.SIGINT, True, 1)
    assert first["code"] == 130
    stopped_at = torch.load(checkpoint, weights_only=True)["epoch"]
    rerun = subprocess.run(command, env=run_env(home), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    report = yaml.safe_load((Path(params.reports.dir) / "train.json").read_text())
    assert report["resumed_from_epoch"] == stopped_at and report["epochs_run"] == 8
    assert versions(params) == 1
    assert [row[0] for row in flow_runs(home)] == ["CANCELLED", "COMPLETED"]


def test_a_signalled_stage_command_exits_143_and_leaves_nothing_running(demo_root, tmp_path):
    from autotransfer.cli import main

    params = training_params(demo_root, tmp_path / "work")
    file = write_params(params, tmp_path / "params.yaml")
    for stage in ("validate", "pretrain", "similarity", "plan"):
        assert main([stage, "--params", str(file), "--no-progress"]) == 0
    checkpoint = Path(params.train.out) / "runs/finetune_all/checkpoint.pt"
    result = start_and_signal([str(BIN / "autotransfer"), "train", "--params", str(file), "--no-progress"],
                              run_env(tmp_path / "prefect"), checkpoint, signal.SIGTERM, False, 1)
    assert result["code"] == 143 and "stopped by SIGTERM" in result["output"], result["output"][-3000:]
    assert result["left"] == [] and not (Path(params.train.out) / "model.safetensors").exists()


def test_a_sigkilled_run_leaves_no_temporary_server_behind(demo_root, tmp_path):
    params = training_params(demo_root, tmp_path / "work")
    file = write_params(params, tmp_path / "params.yaml")
    checkpoint = Path(params.train.out) / "runs/finetune_all/checkpoint.pt"
    # SIGKILL to the main process only: nothing of it can run, the kernel ends its children
    result = start_and_signal([str(BIN / "autotransfer"), "run", "--params", str(file)],
                              run_env(tmp_path / "prefect"), checkpoint, signal.SIGKILL, False, 1)
    assert result["code"] == -signal.SIGKILL
    assert result["children"] >= 1 and result["left"] == []
