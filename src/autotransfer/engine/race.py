"""Successive halving between candidates on the target val split (``strategy.mode: race``)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from autotransfer.artifacts import RaceRow
from autotransfer.config import Params
from autotransfer.engine.loop import FitResult
from autotransfer.io.data import TrainData
from autotransfer.transfer.strategies import Candidate

# fit(candidate, stop_after) -> the candidate's run, resumed from its checkpoint
Fit = Callable[[Candidate, int | None], FitResult]


def race(params: Params, candidates: list[Candidate], data: TrainData, fit: Fit) -> tuple[FitResult, list[RaceRow]]:
    """Successive halving on the target val split; the winner's run continues to the full budget.

    Every round trains under the full run's schedule and stops early, so the winner's
    checkpoint is an exact prefix of its full run and is resumed, not retrained.
    """
    epochs, cfg = params.train.epochs, params.train.race
    steps_per_epoch = max(1, math.ceil(len(data.train) / params.train.batch_size))
    budget = min(epochs, max(math.ceil(epochs * cfg.budget_fraction), math.ceil(cfg.min_round_steps / steps_per_epoch)))
    alive = list(candidates)
    table: list[RaceRow] = []
    trained = {c.label: 0 for c in candidates}
    round_number = 0
    while True:
        round_number += 1
        scores = {}
        for candidate in alive:
            started = time.perf_counter()
            result = fit(candidate, budget)
            scores[candidate.label] = result.val_accuracy if result.val_accuracy is not None else -math.inf
            table.append(_row(round_number, candidate, budget, result, trained, started))
            trained[candidate.label] = result.epochs_run
        alive.sort(key=lambda c: scores[c.label], reverse=True)  # stable: ties keep the plan's order
        if budget >= epochs:
            break
        alive = alive[: max(1, math.ceil(len(alive) * cfg.keep))]
        if len(alive) == 1:
            break
        budget = min(epochs, budget * 2)
    winner = alive[0]
    started = time.perf_counter()
    result = fit(winner, None)
    table.append(_row("final", winner, epochs, result, trained, started))
    return result, table


def _row(
    round_: int | str, candidate: Candidate, budget: int, result: FitResult, trained: dict[str, int], started: float
) -> RaceRow:
    return RaceRow(
        round=round_,
        candidate=candidate.label,
        budget_epochs=budget,
        epochs_trained=result.epochs_run - trained[candidate.label],
        val_accuracy=result.val_accuracy,
        seconds=round(time.perf_counter() - started, 2),
    )


__all__ = ["Fit", "race"]
