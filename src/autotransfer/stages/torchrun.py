"""Entry point of each torchrun rank: ``python -m autotransfer.stages.torchrun PARAMS.yaml`` (see ops.launch)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from autotransfer.config import load_params
from autotransfer.engine.ddp import current_world
from autotransfer.ops.launch import die_with_parent
from autotransfer.stages.pipeline import TRAIN


def main(argv: list[str] | None = None) -> None:
    die_with_parent()  # of the torchrun agent
    args = sys.argv[1:] if argv is None else argv
    params = load_params(Path(args[0]), [])
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        world = current_world()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        logging.basicConfig(
            level=logging.INFO if world.is_main else logging.WARNING,
            format=f"[rank {world.rank}] %(levelname)s %(name)s: %(message)s",
        )
        TRAIN.run(params, progress=None if world.is_main else False)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
