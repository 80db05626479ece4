"""Small, precise optimizer utilities (after timm's ``param_groups_weight_decay``)."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn


def weight_decay_groups(modules: Iterable[nn.Module], weight_decay: float, **extra: float) -> list[dict]:
    """Two param groups: decayed weights, and biases/norm parameters without weight decay.

    Decaying a BatchNorm scale or a bias pulls it towards zero for no regularisation
    benefit; frozen parameters (requires_grad False) are left out entirely, so weight decay
    can never move them.
    """
    decay, no_decay, seen = [], [], set()
    for module in modules:
        for param in module.parameters():
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay, **extra},
              {"params": no_decay, "weight_decay": 0.0, **extra}]
    return [group for group in groups if group["params"]]
