"""Train and eval modes for partly frozen models, and mixed precision by device."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn


def autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA, nothing on the CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def set_train_mode(model: nn.Module, frozen: list[nn.Module]) -> None:
    model.train()
    for module in frozen:
        module.eval()  # frozen BatchNorm keeps its running statistics
