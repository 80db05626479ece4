"""Checkpoints: which run a checkpoint belongs to, what it holds, atomic saves, safe loads.

A checkpoint holds the model (only the state training can change), the optimizer's
param groups and state, the scheduler, the phase, the best weights, the history and the
data-order generator, so a run killed after epoch k and started again continues exactly
where an uninterrupted run would be.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autotransfer.errors import OutputError, TrainingError
from autotransfer.io.files import write_atomic
from autotransfer.models.backbones import TransferModel
from autotransfer.transfer.strategies import Phase

log = logging.getLogger(__name__)
CHECKPOINT_FORMAT = 4  # bump when the checkpoint's contents change: older ones are not resumed


def run_key(parts: dict[str, Any]) -> str:
    """What makes two runs "the same run": resume only a checkpoint with this key."""
    return hashlib.sha256(json.dumps({"format": CHECKPOINT_FORMAT, **parts}, sort_keys=True).encode()).hexdigest()


def save_atomic(payload: dict[str, Any], path: Path) -> None:
    try:  # the previous checkpoint stays intact until the new one is whole
        write_atomic(path, lambda tmp: torch.save(payload, tmp))
    except OutputError as exc:
        raise TrainingError(f"cannot write checkpoint {path}: {exc.reason}") from exc


def load_checkpoint(path: Path | None, key: str) -> dict[str, Any] | None:
    if path is None or not path.exists():
        return None
    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or corrupted: start over rather than use it
        log.warning("checkpoint %s is unreadable (%s); starting from scratch", path, exc)
        return None
    if state.get("run_key") != key:
        log.info("checkpoint %s belongs to another run (params or data changed); starting from scratch", path)
        return None
    return state


def changing_state_keys(model: TransferModel, plan: list[Phase]) -> set[str] | None:
    """The state entries training can change: those of the groups trainable in some phase (None: all).

    A group frozen throughout keeps its initial weights and, in eval mode, its BatchNorm
    statistics; the run key pins those initial weights. So checkpoints and the best-epoch
    copy carry only the rest: for a linear probe, the head instead of the whole backbone
    (docs/strategies.md says what writing the backbone every epoch cost).
    """
    trainable = set().union(*(phase.trainable for phase in plan))
    groups = model.layer_groups()
    if all(name in trainable for name, _ in groups):
        return None
    ids = {
        id(t)
        for name, modules in groups
        if name in trainable
        for module in modules
        for t in (*module.parameters(), *module.buffers())
    }
    return {k for k, v in model.state_dict(keep_vars=True).items() if id(v) in ids}


def state_subset(model: nn.Module, keys: set[str] | None) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if keys is None or k in keys}


def load_subset(model: nn.Module, subset: dict[str, torch.Tensor]) -> None:
    full = model.state_dict()
    full.update(subset)
    model.load_state_dict(full)  # strict: every key is still checked
