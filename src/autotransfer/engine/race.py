"""Successive halving between candidates on the target val split (``strategy.mode: race``).

After each round the best ``train.race.keep`` share goes on, by val accuracy, except the
last place kept when ``train.race.rising_slot`` is on: it goes to the candidate whose val,
projected linearly from the round's second half to the next round's end, is highest. A
model trained from scratch starts slow and overtakes; ranking by val alone cuts it after
the first round (docs/strategies.md). The number kept, hence the compute, is the same.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from autotransfer.artifacts import CandidateSpec, RaceRow
from autotransfer.config import Params
from autotransfer.engine.state import FitResult
from autotransfer.io.data import TrainData
from autotransfer.transfer.strategies import Candidate

# fit(candidate, stop_after) -> the candidate's run, resumed from its checkpoint
Fit = Callable[[Candidate, int | None], FitResult]


def race_candidates(params: Params, planned: Sequence[CandidateSpec]) -> list[Candidate]:
    """The plan's first ``strategy.top_k`` candidates: who enters the race."""
    return [Candidate(c.strategy, c.backbone_lr_mult) for c in planned[: params.strategy.top_k]]


def race(
    params: Params, candidates: list[Candidate], data: TrainData, fit: Fit, epochs: int
) -> tuple[FitResult, list[RaceRow]]:
    """Successive halving on the target val split; the winner's run continues to the full ``epochs``.

    Every round trains under the full run's schedule and stops early, so the winner's
    checkpoint is an exact prefix of its full run and is resumed, not retrained. Every
    candidate gets the same ``epochs`` (the step budget of the labeled target pool).
    """
    cfg = params.train.race
    steps_per_epoch = max(1, math.ceil(len(data.train) / params.train.batch_size))
    budget = min(epochs, max(math.ceil(epochs * cfg.budget_fraction), math.ceil(cfg.min_round_steps / steps_per_epoch)))
    alive = list(candidates)
    table: list[RaceRow] = []
    trained = {c.label: 0 for c in candidates}
    round_number = 0
    while True:
        round_number += 1
        scores, rises, runs = {}, {}, {}
        for candidate in alive:
            started = time.perf_counter()
            result = fit(candidate, budget)
            runs[candidate.label] = result, round(time.perf_counter() - started, 2)
            scores[candidate.label] = result.val_accuracy if result.val_accuracy is not None else -math.inf
            rises[candidate.label] = val_rise(result.history, budget)
        ranked = sorted(alive, key=lambda c: scores[c.label], reverse=True)  # stable: ties keep the plan's order
        last = budget >= epochs
        ahead = min(epochs, budget * 2) - budget  # the next round's extra epochs
        keep = math.ceil(len(alive) * cfg.keep)
        going = ranked[:1] if last else survivors(ranked, scores, rises, keep, ahead, cfg.rising_slot)
        shown = not last and rising_slot_applies(cfg.rising_slot, keep, len(alive))
        for candidate in alive:
            result, seconds = runs[candidate.label]
            val = result.val_accuracy
            projection = projected_val(val, rises[candidate.label], ahead) if shown and val is not None else None
            went_on = None if last else candidate in going
            table.append(_row(round_number, candidate, budget, result, trained, seconds, projection, went_on))
            trained[candidate.label] = result.epochs_run
        alive = going
        if last or len(alive) == 1:
            break
        budget += ahead
    winner = alive[0]
    started = time.perf_counter()
    result = fit(winner, None)
    table.append(_row("final", winner, epochs, result, trained, round(time.perf_counter() - started, 2), None, None))
    return result, table


def projected_val(val: float, rise: float, epochs_ahead: int) -> float:
    """Val projected to the next round's end: a falling curve projects flat, and at most 1."""
    return min(1.0, val + max(0.0, rise) * epochs_ahead)


def rising_slot_applies(rising_slot: bool, keep: int, candidates: int) -> bool:
    """Whether the last place kept is the rising slot: on, two or more places, fewer than the candidates."""
    return rising_slot and 2 <= keep < candidates


def survivors(
    ranked: list[Candidate],
    scores: dict[str, float],
    rises: dict[str, float],
    keep: int,
    epochs_ahead: int,
    rising_slot: bool,
) -> list[Candidate]:
    """The ``keep`` candidates that go on; ``ranked`` is best val first.

    With ``rising_slot`` and two or more places, the last place goes to the rest's best
    projected val (val + rise per epoch x the next round's extra epochs, at most 1); ties
    go to the better val, then the plan's order. A single place always goes to the best val.
    """
    keep = max(1, keep)
    if not rising_slot_applies(rising_slot, keep, len(ranked)):
        return ranked[:keep]

    rest = ranked[keep - 1 :]
    best = max(rest, key=lambda c: projected_val(scores[c.label], rises[c.label], epochs_ahead))
    return [*ranked[: keep - 1], best]  # max keeps the first of equals


def val_rise(history: list[dict[str, Any]], budget: int) -> float:
    """Val accuracy gained per epoch over the round's second half (epochs budget//2 .. budget).

    0 when the round is too short to have a second half, when val is missing, or when the
    run stopped early (patience: it has levelled off).
    """
    start = budget // 2
    if start < 1 or len(history) < budget:
        return 0.0
    first, last = history[start - 1].get("val_accuracy"), history[budget - 1].get("val_accuracy")
    if first is None or last is None:
        return 0.0
    return (last - first) / (budget - start)


def _row(
    round_: int | str,
    candidate: Candidate,
    budget: int,
    result: FitResult,
    trained: dict[str, int],
    seconds: float,
    projected: float | None,
    went_on: bool | None,
) -> RaceRow:
    return RaceRow(
        round=round_,
        candidate=candidate.label,
        budget_epochs=budget,
        epochs_trained=result.epochs_run - trained[candidate.label],
        val_accuracy=result.val_accuracy,
        projected_val=None if projected is None else round(projected, 4),
        went_on=went_on,
        seconds=seconds,
    )


__all__ = ["Fit", "projected_val", "race", "race_candidates", "survivors", "val_rise"]
