"""Optimizers, their param groups and LR schedules (after timm's ``param_groups_weight_decay``)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from autotransfer.config import TrainConfig


def decay_exempt(model: nn.Module) -> frozenset[int]:
    """Parameters a model names as never to be decayed (timm's ``no_weight_decay()``: ViT's
    ``cls_token`` and ``pos_embed``, Swin's position tables), as parameter ids.

    They are 2-D or 3-D, so the ``ndim <= 1`` rule misses them; decaying a position
    embedding pulls it towards zero and erases what the network knows about where a patch is.
    """
    exempt: set[int] = set()
    for module in model.modules():
        declared = getattr(module, "no_weight_decay", None)
        if not callable(declared):
            continue
        names = set(declared())
        exempt.update(id(p) for name, p in module.named_parameters() if name in names)
    return frozenset(exempt)


def weight_decay_groups(
    modules: Iterable[nn.Module], weight_decay: float, exempt: frozenset[int] = frozenset(), **extra: float
) -> list[dict[str, Any]]:
    """Two param groups: decayed weights, and biases/norm parameters without weight decay.

    Decaying a BatchNorm scale or a bias pulls it towards zero for no regularisation
    benefit; nor is anything in ``exempt`` (see :func:`decay_exempt`) decayed. Frozen
    parameters (requires_grad False) are left out entirely, so weight decay can never move them.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in modules:
        for name, param in module.named_parameters():
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            skip = param.ndim <= 1 or name.endswith(".bias") or id(param) in exempt
            (no_decay if skip else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay, **extra},
        {"params": no_decay, "weight_decay": 0.0, **extra},
    ]
    return [group for group in groups if group["params"]]


def make_optimizer(groups: list[dict[str, Any]], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups)
    return torch.optim.SGD(groups, momentum=0.9, nesterov=True)


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, cfg: TrainConfig) -> LambdaLR:
    """Linear warm-up then cosine (or one-cycle's shape) over ``total_steps``: one per phase."""
    warmup = max(1, int(cfg.warmup * total_steps)) if cfg.warmup > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        if cfg.schedule == "onecycle":
            return max(0.0, 1.0 - progress) ** 2  # one-cycle's annealing half
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return LambdaLR(optimizer, factor)


def dann_annealing(optimizer: torch.optim.Optimizer, total_steps: int) -> LambdaLR:
    """Ganin & Lempitsky's lr·(1+10p)^−0.75, p the share of all training steps done."""
    return LambdaLR(optimizer, lambda step: (1 + 10 * (step / max(1, total_steps))) ** -0.75)


def plain_cosine(optimizer: torch.optim.Optimizer, total_steps: int) -> LambdaLR:
    """Cosine from the base LR to 0 over ``total_steps``, no warm-up (the pretrain stage's)."""
    return LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total_steps)))
