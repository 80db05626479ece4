"""Start the train stage under ``torchrun`` (torch DDP: gloo on CPU, NCCL on CUDA).

``train.distributed: N`` (or ``autotransfer train --nproc N``) makes the train stage run
``torchrun --standalone --nproc-per-node N -m autotransfer.stages.torchrun PARAMS``; every
rank runs the same train stage on its shard of each global batch, and only rank 0 logs,
writes checkpoints and the final model. The caller (CLI, flow task, ``dvc repro``) then
reads the report rank 0 wrote, so registration happens once, in the caller's process.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from autotransfer.artifacts import TRAIN_JSON, TrainReport, read_report
from autotransfer.config import Params
from autotransfer.errors import TrainingError

log = logging.getLogger(__name__)
RANK_ENTRY_POINT = "autotransfer.stages.torchrun"


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies.

    torchrun starts the ranks in their own sessions: without this, killing the training
    (or the agent) leaves orphan ranks that keep training and writing checkpoints.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before the call
        os._exit(1)


def launch(params: Params, nproc: int) -> TrainReport:
    """Run the train stage under ``torchrun`` with ``nproc`` processes; return rank 0's report."""
    reports = Path(params.reports.dir)
    reports.mkdir(parents=True, exist_ok=True)
    report_path = reports / TRAIN_JSON
    report_path.unlink(missing_ok=True)  # a stale report must not pass for this run's
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=reports, prefix=".distributed-", delete=False) as f:
        yaml.safe_dump(params.model_dump(mode="json"), f, sort_keys=False)
        params_file = f.name
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        RANK_ENTRY_POINT,
        params_file,
    ]
    env = dict(os.environ)
    # torchrun defaults each rank to 1 thread; share the cores instead.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    log.info("train: %d processes (torchrun)", nproc)
    try:
        completed = subprocess.run(command, env=env, preexec_fn=die_with_parent)
    finally:
        Path(params_file).unlink(missing_ok=True)
    if completed.returncode != 0 or not report_path.exists():
        raise TrainingError(
            f"train.distributed={nproc}: torchrun exited with status {completed.returncode}; "
            "no model written (see the ranks' output above)"
        )
    return read_report(report_path, TrainReport, "train")
