"""Multi-process training with torch DDP, launched by ``torchrun`` (gloo on CPU, NCCL on CUDA).

``train.distributed: N`` (or ``autotransfer train --nproc N``) makes the train stage start
``torchrun --standalone --nproc-per-node N -m autotransfer.distributed PARAMS``; every rank
runs the same train stage on its shard of each global batch, and only rank 0 logs, writes
checkpoints and the final model. The caller (CLI, flow task, ``dvc repro``) then reads the
report rank 0 wrote, so registration happens once, in the caller's process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from torch import nn

from autotransfer.config import Params, load_params

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def current_world() -> World:
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def wrap(module: nn.Module, world: World, device: torch.device) -> nn.Module:
    """DDP over ``module``'s trainable parameters (re-wrap when the trainable set changes)."""
    if not world.distributed or not any(p.requires_grad for p in module.parameters()):
        return module
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)


def sync_buffers(module: nn.Module, world: World) -> None:
    """Rank 0's BatchNorm statistics everywhere, so every rank validates the same model.

    DDP broadcasts buffers at each forward, but the last forward of an epoch leaves each
    rank with statistics of its own shard; differing val scores would split early stopping.
    """
    if world.distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer, 0)


def all_finite(loss: torch.Tensor, world: World) -> bool:
    """True when the loss is finite on every rank (a rank that stopped alone would hang the rest)."""
    if not world.distributed:
        return bool(torch.isfinite(loss))
    flag = torch.tensor([0.0 if torch.isfinite(loss) else 1.0], device=loss.device)
    dist.all_reduce(flag)
    return flag.item() == 0.0


@contextlib.contextmanager
def main_first(world: World) -> Iterator[None]:
    """Rank 0 runs the block first (e.g. fills an on-disk cache); the others then read it."""
    if world.distributed and not world.is_main:
        dist.barrier()
    yield
    if world.distributed and world.is_main:
        dist.barrier()


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies.

    torchrun starts the ranks in their own sessions: without this, killing the training
    (or the agent) leaves orphan ranks that keep training and writing checkpoints.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before the call
        os._exit(1)


def launch(params: Params, nproc: int) -> dict:
    """Run the train stage under ``torchrun`` with ``nproc`` processes; return rank 0's report."""
    from autotransfer.train_stage import REPORT_FILE

    reports = Path(params.reports.dir)
    reports.mkdir(parents=True, exist_ok=True)
    report_path = reports / REPORT_FILE
    report_path.unlink(missing_ok=True)  # a stale report must not pass for this run's
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=reports, prefix=".distributed-", delete=False) as f:
        yaml.safe_dump(params.model_dump(mode="json"), f, sort_keys=False)
        params_file = f.name
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "autotransfer.distributed", params_file]
    env = dict(os.environ)
    # torchrun defaults each rank to 1 thread; share the cores instead.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    log.info("train: %d processes (torchrun, %s)", nproc, "nccl" if torch.cuda.is_available() else "gloo")
    try:
        completed = subprocess.run(command, env=env, preexec_fn=die_with_parent)
    finally:
        Path(params_file).unlink(missing_ok=True)
    if completed.returncode != 0 or not report_path.exists():
        from autotransfer.training import TrainingError

        raise TrainingError(f"train.distributed={nproc}: torchrun exited with status {completed.returncode}; "
                            "no model written (see the ranks' output above)")
    return json.loads(report_path.read_text())


def main(argv: list[str] | None = None) -> None:
    """Entry point of each torchrun rank: ``python -m autotransfer.distributed PARAMS.yaml``."""
    from autotransfer.train_stage import train_stage

    die_with_parent()  # of the torchrun agent
    args = sys.argv[1:] if argv is None else argv
    params = load_params(Path(args[0]), [])
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        world = current_world()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        logging.basicConfig(level=logging.INFO if world.is_main else logging.WARNING,
                            format=f"[rank {world.rank}] %(levelname)s %(name)s: %(message)s")
        train_stage(params, progress=None if world.is_main else False)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
