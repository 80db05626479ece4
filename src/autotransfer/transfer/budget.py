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
from collections.abc import Callable
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


# Square sides the time budget may step down through (the configured size is always tried first).
RESOLUTIONS: tuple[int, ...] = (512, 448, 384, 320, 288, 256, 224, 192, 160, 128, 112, 96, 80, 64, 48, 32)


@dataclass(frozen=True)
class Timed:
    """One warm-up measurement: seconds one epoch of the budget takes at ``input_size``."""

    input_size: int
    seconds_per_epoch: float


@dataclass(frozen=True)
class TimeFit:
    """The resolution and epochs a ``train.time_budget`` allows, and the measurements behind them."""

    input_size: int
    epochs: int
    estimated_seconds: float
    measured: tuple[Timed, ...]
    rule: str


def fit_time_budget(budget: Budget, seconds: float, sizes: tuple[int, ...], measure: Callable[[int], float]) -> TimeFit:
    """The largest of ``sizes`` (descending; the first is the configured one) whose budget fits in ``seconds``.

    The step rule's steps are what a small target needs to converge, so the resolution
    gives way first. ``measure(size)`` is seconds per epoch from a warm-up of the
    strategy's own steps. It is taken at the configured size; if the budget does not fit
    there, at the smallest size; then the sizes between are searched by bisection, each
    step a measurement (cost grows with the size; a model of how fast was tried and, on a
    CPU, overestimated the middle sizes twofold). Only when even the smallest size does not
    fit are epochs cut, to what fits (at least one).
    """
    measured: dict[int, float] = {}

    def timed(size: int) -> float:
        if size not in measured:
            measured[size] = measure(size)
        return measured[size]

    def result(size: int, epochs: int, how: str) -> TimeFit:
        cost = epochs * timed(size)
        table = tuple(Timed(s, round(t, 4)) for s, t in sorted(measured.items(), reverse=True))
        return TimeFit(size, epochs, round(cost, 1), table, f"train.time_budget={seconds:g} s: {how}")

    top, epochs = sizes[0], budget.epochs
    if epochs * timed(top) <= seconds:
        return result(top, epochs, f"{epochs} epochs at {top} px take about {epochs * timed(top):.0f} s: fits")
    if len(sizes) == 1:
        cut = max(1, int(seconds // timed(top)))
        return result(top, cut, f"{top} px is the only size this backbone takes; epochs cut {epochs} -> {cut} to fit")
    if epochs * timed(sizes[-1]) > seconds:
        low, cut = sizes[-1], max(1, int(seconds // timed(sizes[-1])))
        why = f"even {low} px takes {epochs * timed(low):.0f} s for {epochs} epochs"
        return result(low, cut, why + f"; epochs cut {epochs} -> {cut} to fit")
    too_slow, fits = 0, len(sizes) - 1  # indices into sizes: measured not to fit / to fit
    while fits - too_slow > 1:
        middle = (too_slow + fits) // 2
        if epochs * timed(sizes[middle]) <= seconds:
            fits = middle
        else:
            too_slow = middle
    size = sizes[fits]
    why = (
        f"{epochs} epochs at {top} px would take about {epochs * timed(top):.0f} s; "
        f"{size} px is the largest size that fits ({epochs * timed(size):.0f} s)"
    )
    return result(size, epochs, why)
