"""How long a strategy trains: a budget in optimizer steps, chosen from the size of what it learns from.

A fixed number of epochs gives a target of 30 labeled images one optimizer step per
epoch, 10 in all: far from converged. The step rule (in the spirit of BiT-HyperRule,
Kolesnikov et al. 2020, which sets the schedule from the dataset size) gives every run at
least ``train.min_steps`` optimizer steps and at least ``train.min_epochs`` passes over
its labeled pool, whichever is longer:

    epochs = max(min_epochs, ceil(min_steps / steps_per_epoch))

A pool of 1,079 images at batch 64 (17 steps per epoch, the demo) gets 10 epochs, 170
steps; 100 images (2 steps per epoch) get 75 epochs, 150 steps; 30 images 150 epochs.
``train.epochs`` set to a number overrides the rule. The loop still counts epochs (its
checkpoints, resume and the race's rounds are per epoch); the budget says how many.
The evidence behind the constants is in docs/strategies.md ("Budgets").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autotransfer.config import TrainConfig


@dataclass(frozen=True)
class Budget:
    epochs: int
    steps_per_epoch: int
    pool: int  # labeled images per epoch (a strategy that trains on the source counts them)
    rule: str  # why this many

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch


CLOSED_FORM = "closed form: fitted to convergence, no optimizer steps"


def step_budget(cfg: TrainConfig, pool: int, closed_form: bool = False) -> Budget:
    """The budget of a run over ``pool`` labeled images per epoch (see the module docstring)."""
    if closed_form:
        return Budget(1, 0, pool, CLOSED_FORM)
    per_epoch = max(1, math.ceil(pool / cfg.batch_size))
    if cfg.epochs is not None:
        return Budget(cfg.epochs, per_epoch, pool, f"train.epochs={cfg.epochs}, set explicitly")
    epochs = max(cfg.min_epochs, math.ceil(cfg.min_steps / per_epoch))
    binding = "train.min_steps" if epochs > cfg.min_epochs else "train.min_epochs"
    return Budget(
        epochs,
        per_epoch,
        pool,
        f"step rule: {pool} labeled images at batch {cfg.batch_size} are {per_epoch} steps per epoch; "
        f"at least {cfg.min_steps} steps (train.min_steps) and {cfg.min_epochs} epochs (train.min_epochs) "
        f"give {epochs} epochs, {epochs * per_epoch} steps ({binding} decides)",
    )
