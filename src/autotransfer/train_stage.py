"""The train stage: execute the plan (rules: its choice; race: successive halving), write the model.

Outputs, written only when training finished (a failure leaves no final model):
``models/target/model.safetensors`` + ``meta.json``, ``reports/train_history.csv`` (a DVC
plot source) and ``reports/train.json`` (the strategy actually trained, the race table
when there was one, timings). Checkpoints live in ``models/target/runs/<candidate>/``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from pathlib import Path
from typing import Any

from autotransfer.config import Params
from autotransfer.data import StageInputError
from autotransfer.distributed import current_world, launch
from autotransfer.files import write_json, write_safetensors, write_text
from autotransfer.training import Candidate, FitResult, TrainData, TrainingError, fit, load_train_data

MODEL_FILE = "model.safetensors"
META_FILE = "meta.json"
HISTORY_FILE = "train_history.csv"
REPORT_FILE = "train.json"


def read_plan(params: Params) -> dict[str, Any]:
    path = Path(params.reports.dir) / "plan.json"
    if not path.exists():
        raise StageInputError(f"{path}: not found; run `autotransfer plan` first")
    plan = json.loads(path.read_text())
    if plan["target"] != params.data.target:
        raise StageInputError(f"{path}: made for target {plan['target']!r}, not {params.data.target!r}; "
                              "rerun `autotransfer plan` (or `dvc repro`)")
    return plan


def train_stage(params: Params, progress: bool | None = None) -> dict[str, Any]:
    plan = read_plan(params)
    world = current_world()
    if params.train.distributed > 1 and not world.distributed:
        return launch(params, params.train.distributed)  # torchrun runs this function on each rank
    forced = params.strategy.force
    out = Path(params.train.out)
    epochs = params.train.epochs
    started = time.perf_counter()
    race_table: list[dict[str, Any]] = []
    race_note = None
    if params.strategy.mode == "race" and forced is None:
        candidates = [Candidate(**c) for c in plan["candidates"][: params.strategy.top_k]]
        data = load_train_data(params, "dann" if any(c.strategy == "dann" for c in candidates) else "",
                               progress)
        if len(data.val) == 0:
            race_note = "race skipped: no labeled target val images to score candidates on; the rules' choice is trained"
            result = _fit(params, Candidate(plan["chosen"]), data, out, epochs, progress)
        else:
            result, race_table = race(params, candidates, data, out, progress)
    else:
        strategy = forced or plan["chosen"]
        data = load_train_data(params, strategy, progress)
        # Rules or forced: the strategy with the hyperparameters of params.yaml (the plan's
        # candidate variants are what race mode tries).
        result = _fit(params, Candidate(strategy), data, out, epochs, progress)

    report = {
        "strategy": result.candidate.strategy,
        "candidate": result.candidate.label,
        "backbone_lr_mult": result.candidate.backbone_lr_mult,
        "mode": "forced" if forced else params.strategy.mode,
        "plan_choice": plan["chosen"],
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "resumed_from_epoch": result.resumed_from,
        "val_accuracy": result.val_accuracy,
        "seconds": round(time.perf_counter() - started, 1),
        "seconds_per_epoch": _mean([h["seconds"] for h in result.history]),
        "images_per_second": _mean([h["images_per_second"] for h in result.history]),
        "race": race_table,
        "race_note": race_note,
    }
    if race_table:
        full = len({row["candidate"] for row in race_table}) * epochs
        report["race_cost_epochs"] = sum(row["epochs_trained"] for row in race_table)
        report["oracle_cost_epochs"] = full
    if world.distributed:
        report["processes"] = world.size
    if world.is_main:  # every rank holds the same model; one writes it
        write_model(result, params, data, out)
        reports = Path(params.reports.dir)
        reports.mkdir(parents=True, exist_ok=True)
        write_text(reports / HISTORY_FILE, history_csv(result.history))
        write_json(reports / REPORT_FILE, report)
    return report


def _fit(params: Params, candidate: Candidate, data: TrainData, out: Path, epochs: int,
         progress: bool | None, stop_after: int | None = None) -> FitResult:
    return fit(params, candidate, data, out / "runs" / candidate.label, epochs, progress, stop_after)


def race(params: Params, candidates: list[Candidate], data: TrainData, out: Path,
         progress: bool | None) -> tuple[FitResult, list[dict[str, Any]]]:
    """Successive halving on the target val split; the winner's run continues to the full budget.

    Every round trains under the full run's schedule and stops early, so the winner's
    checkpoint is an exact prefix of its full run and is resumed, not retrained.
    """
    epochs, cfg = params.train.epochs, params.train.race
    steps_per_epoch = max(1, math.ceil(len(data.train) / params.train.batch_size))
    budget = min(epochs, max(math.ceil(epochs * cfg.budget_fraction), math.ceil(cfg.min_round_steps / steps_per_epoch)))
    alive = list(candidates)
    table: list[dict[str, Any]] = []
    trained = {c.label: 0 for c in candidates}
    round_number = 0
    while True:
        round_number += 1
        scores = {}
        for candidate in alive:
            started = time.perf_counter()
            result = _fit(params, candidate, data, out, epochs, progress, stop_after=budget)
            scores[candidate.label] = result.val_accuracy if result.val_accuracy is not None else -math.inf
            table.append({"round": round_number, "candidate": candidate.label, "budget_epochs": budget,
                          "epochs_trained": result.epochs_run - trained[candidate.label],
                          "val_accuracy": result.val_accuracy, "seconds": round(time.perf_counter() - started, 2)})
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
    result = _fit(params, winner, data, out, epochs, progress)
    table.append({"round": "final", "candidate": winner.label, "budget_epochs": epochs,
                  "epochs_trained": result.epochs_run - trained[winner.label], "val_accuracy": result.val_accuracy,
                  "seconds": round(time.perf_counter() - started, 2)})
    return result, table


def write_model(result: FitResult, params: Params, data: TrainData, out: Path) -> None:
    write_safetensors(out / MODEL_FILE, result.model.state_dict())
    meta = {
        "arch": result.model.arch,
        "strategy": result.candidate.strategy,
        "candidate": result.candidate.label,
        "head_classes": list(result.head_classes),
        "target_classes": list(data.classes),
        "input_size": result.model.input_size,
        "bottleneck": result.model.bottleneck,
        "normalization": {"mean": list(result.normalization.mean), "std": list(result.normalization.std)},
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "val_accuracy": result.val_accuracy,
        "target": params.data.target,
        "train_data_hash": data.train.content_hash(),
    }
    write_json(out / META_FILE, meta)


def history_csv(history: list[dict[str, Any]]) -> str:
    columns = ["epoch", "phase", "train_loss", "train_accuracy", "val_accuracy", "lr", "seconds",
               "images_per_second", "domain_accuracy", "lambda"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return buffer.getvalue()


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


__all__ = ["train_stage", "race", "TrainingError"]
