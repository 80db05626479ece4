"""The train stage: execute the plan (rules: its choice; race: successive halving), write the model.

Outputs, written only when training finished (a failure leaves no final model):
``models/target/model.safetensors`` + ``meta.json``, ``reports/train_history.csv`` (a DVC
plot source) and ``reports/train.json`` (the strategy actually trained, the race table
when there was one, timings). Checkpoints live in ``models/target/runs/<candidate>/``.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from autotransfer.analysis.health import prediction_health
from autotransfer.analysis.metrics import evaluate_head, predict_logits
from autotransfer.artifacts import (
    META_FILE,
    MODEL_FILE,
    PLAN_JSON,
    RUNS_DIR,
    TRAIN_HISTORY_CSV,
    TRAIN_JSON,
    BudgetReport,
    FloorReport,
    FloorRow,
    HealthReport,
    NormalizationSpec,
    PlanReport,
    RaceRow,
    SelectionReport,
    TargetModelMeta,
    TrainReport,
    read_report,
)
from autotransfer.config import Params
from autotransfer.engine.ddp import current_world
from autotransfer.engine.loop import fit
from autotransfer.engine.race import race, race_candidates
from autotransfer.engine.state import FitResult
from autotransfer.errors import StageInputError
from autotransfer.io.data import (
    TrainData,
    decoded_cache,
    domain_rows,
    load_images,
    load_train_data,
    read_manifest,
    sample_rows,
)
from autotransfer.io.files import output_lock, write_report, write_safetensors, write_text
from autotransfer.io.images import Interpolation
from autotransfer.io.store import TensorStore, concat
from autotransfer.models.weights import backbone_input
from autotransfer.ops.launch import launch
from autotransfer.stages.pipeline import code_version
from autotransfer.transfer.budget import Budget, step_budget
from autotransfer.transfer.floor import PIXEL_NORMALIZATION, fit_logistic_pixels
from autotransfer.transfer.strategies import Candidate, strategy_class

HISTORY_COLUMNS = [
    "epoch",
    "phase",
    "train_loss",
    "train_accuracy",
    "val_accuracy",
    "lr",
    "seconds",
    "images_per_second",
    "domain_accuracy",
    "lambda",
]


def read_plan(params: Params) -> PlanReport:
    path = Path(params.reports.dir) / PLAN_JSON
    plan = read_report(path, PlanReport, "plan")
    if plan.target != params.data.target:
        raise StageInputError(
            f"{path}: made for target {plan.target!r}, not {params.data.target!r}; "
            "rerun `autotransfer plan` (or `dvc repro`)"
        )
    return plan


def train_stage(params: Params, progress: bool | None = None) -> TrainReport:
    """Train what the plan says into ``train.out``, one writer at a time (under torchrun: its launcher holds it)."""
    if current_world().distributed:
        return _train(params, progress)
    with output_lock(params.train.out, "train.out"):
        if params.train.distributed > 1:
            return launch(params, params.train.distributed)  # torchrun runs train_stage on each rank
        return _train(params, progress)


def _train(params: Params, progress: bool | None) -> TrainReport:
    plan = read_plan(params)
    world = current_world()
    forced = params.strategy.force
    out = Path(params.train.out)
    code = code_version("train")
    started = time.perf_counter()
    race_table: list[RaceRow] = []
    race_note = None
    timed = plan.budget if plan.budget is not None and plan.budget.time_fit is not None else None
    if timed is not None and timed.input_size is not None:  # train.time_budget chose the resolution
        params = params.model_copy(
            update={"backbone": params.backbone.model_copy(update={"input_size": timed.input_size})}
        )
    spec = backbone_input(params)
    racing = params.strategy.mode == "race" and forced is None
    candidates = race_candidates(params, plan.candidates) if racing else [Candidate(forced or plan.chosen)]
    with_source = any(strategy_class(c.strategy).needs.labeled_source for c in candidates)
    data = load_train_data(params, with_source, spec, progress)
    val_images = len(data.val)
    data, selection = selection_rule(params, data)

    def budget_of(candidate: Candidate) -> Budget:
        kind = strategy_class(candidate.strategy)
        budget = step_budget(params.train, kind.pool_size(data), kind.closed_form)
        if timed is not None and candidate.strategy == plan.chosen and not kind.closed_form:
            return Budget(timed.epochs, budget.steps_per_epoch, budget.pool, budget.rule)  # the why: time_fit
        return budget

    def fit_candidate(candidate: Candidate, stop_after: int | None = None, epochs: int | None = None) -> FitResult:
        epochs = epochs or budget_of(candidate).epochs
        return fit(params, candidate, data, out / RUNS_DIR / candidate.label, epochs, progress, stop_after, code)

    race_budget = step_budget(params.train, len(data.train))  # one schedule for every racer
    race_epochs = race_budget.epochs
    if racing and selection.rule != "val":
        race_note = f"race skipped: {selection.note}; the rules' choice is trained"
        result = fit_candidate(Candidate(plan.chosen))
    elif racing:
        result, race_table = race(
            params, candidates, data, lambda c, stop: fit_candidate(c, stop, race_epochs), race_epochs
        )
    else:
        # Rules or forced: the strategy with the hyperparameters of params.yaml (the plan's
        # candidate variants are what race mode tries).
        result = fit_candidate(candidates[0])
    budget = budget_of(result.candidate)
    if race_table:
        rule = f"race mode: every candidate {race_epochs} epochs ({race_budget.rule})"
        budget = Budget(race_epochs, budget.steps_per_epoch, budget.pool, rule)

    trained, floor = result, None
    if params.train.floor:
        result, floor = apply_floor(params, result, data, fit_candidate, selection)
    health = label_free_health(params, result, data, trained.history, progress, val_images)
    report = _report(
        params,
        plan,
        trained,
        result,
        race_table,
        race_note,
        race_epochs,
        floor,
        health,
        budget,
        spec.size if timed is not None else None,
        timed,
        selection,
        round(time.perf_counter() - started, 1),
    )
    if world.is_main:  # every rank holds the same model; one writes it
        write_model(result, params, data, out, spec.interpolation)
        reports = Path(params.reports.dir)
        reports.mkdir(parents=True, exist_ok=True)
        write_text(reports / TRAIN_HISTORY_CSV, history_csv(trained.history))
        write_report(reports / TRAIN_JSON, report)
    return report


def _report(
    params: Params,
    plan: PlanReport,
    trained: FitResult,
    result: FitResult,
    race_table: list[RaceRow],
    race_note: str | None,
    race_epochs: int,
    floor: FloorReport | None,
    health: HealthReport | None,
    budget: Budget,
    input_size: int | None,
    timed: BudgetReport | None,
    selection: SelectionReport,
    seconds: float,
) -> TrainReport:
    """train.json: what trained (``trained``), what was written (``result``: the floor may have replaced it), why."""
    return TrainReport(
        strategy=result.candidate.strategy,
        candidate=result.candidate.label,
        backbone_lr_mult=result.candidate.backbone_lr_mult,
        mode="forced" if params.strategy.force else params.strategy.mode,
        plan_choice=plan.chosen,
        epochs_run=trained.epochs_run,
        best_epoch=trained.best_epoch,
        resumed_from_epoch=trained.resumed_from,
        val_accuracy=result.val_accuracy,
        seconds=seconds,
        seconds_per_epoch=_mean([h["seconds"] for h in trained.history]),
        images_per_second=_mean([h["images_per_second"] for h in trained.history]),
        race=race_table,
        race_note=race_note,
        race_cost_epochs=sum(row.epochs_trained for row in race_table) if race_table else None,
        oracle_cost_epochs=len({row.candidate for row in race_table}) * race_epochs if race_table else None,
        processes=current_world().size if current_world().distributed else None,
        floor=floor,
        health=health,
        budget=BudgetReport(
            epochs=budget.epochs,
            steps=budget.steps,
            steps_per_epoch=budget.steps_per_epoch,
            pool=budget.pool,
            rule=budget.rule,
            input_size=input_size,
            time_fit=timed.time_fit if timed is not None else None,
        ),
        selection=selection,
        fit=trained.fit_note,
    )


def selection_rule(params: Params, data: TrainData) -> tuple[TrainData, SelectionReport]:
    """Whether val can choose (early stopping, floor, race, the probe's L2 strength); if not, it trains.

    A val split with fewer than ``train.min_val_per_class`` images in a class scores a
    model within a few points only by luck: with 1 image per class, one image is 10 points
    of a 10-class val accuracy. Below that, nothing is chosen on it: the last epoch is
    kept, the floor and the race are skipped (the plan's rules choose), the probe's L2
    strength is cross-validated on the labeled pool, and the val images train.
    """
    need, smallest = params.train.min_val_per_class, data.smallest_val_class()
    if smallest >= need:
        note = f"on target val ({len(data.val)} images, {smallest} or more per class)"
        return data, SelectionReport(rule="val", val_smallest_class=smallest, min_val_per_class=need, note=note)
    if len(data.val):
        why = f"target val has {smallest} labeled images in its smallest class (train.min_val_per_class={need})"
    else:
        why = "no labeled target val images"
    note = (
        f"{why}: nothing is chosen on val; the plan's rules choose the strategy, the last epoch is kept, "
        "the probe's L2 strength is cross-validated on the labeled pool"
        + (f", and the {len(data.val)} val images train with train" if len(data.val) else "")
    )
    folded = data.with_val_in_train() if len(data.val) else data
    return folded, SelectionReport(rule="no_val", val_smallest_class=smallest, min_val_per_class=need, note=note)


def apply_floor(
    params: Params,
    result: FitResult,
    data: TrainData,
    fit_candidate: Callable[[Candidate], FitResult],
    selection: SelectionReport,
) -> tuple[FitResult, FloorReport]:
    """The trained model, or the best floor model when the trained one is not better on target val."""
    label = result.candidate.label

    def report(rows: list[FloorRow], used: str | None, note: str) -> FloorReport:
        return FloorReport(rows=rows, trained=label, trained_val_accuracy=result.val_accuracy, used=used, note=note)

    if selection.rule != "val" or len(data.train) == 0 or result.val_accuracy is None:
        note = (
            "skipped: no labeled target train images to fit the baselines on"
            if len(data.train) == 0
            else f"skipped: {selection.note.split(': nothing')[0]}, too few to compare models on"
        )
        return result, report([], None, note)
    contenders: list[FitResult] = []
    rows: list[FloorRow] = []
    started = time.perf_counter()
    if result.candidate != Candidate("linear_probe"):  # a trained linear probe is the floor's probe itself
        probe = fit_candidate(Candidate("linear_probe"))
        contenders.append(probe)
        rows.append(FloorRow(model="linear_probe", val_accuracy=probe.val_accuracy, seconds=_since(started)))
    started = time.perf_counter()
    pixels = fit_logistic_pixels(data, params.train)
    cpu = torch.device("cpu")
    pixel_val = evaluate_head(pixels, data.val, PIXEL_NORMALIZATION, data.classes, data.classes, cpu)
    contenders.append(
        FitResult(Candidate("logistic_pixels"), pixels, PIXEL_NORMALIZATION, data.classes, [], 0, pixel_val, 0, 0.0)
    )
    rows.append(FloorRow(model="logistic_pixels", val_accuracy=pixel_val, seconds=_since(started)))
    best = max(contenders, key=lambda c: c.val_accuracy if c.val_accuracy is not None else -1.0)
    best_val = best.val_accuracy if best.val_accuracy is not None else -1.0
    shown = ", ".join(f"{row.model} {row.val_accuracy:.3f}" for row in rows if row.val_accuracy is not None)
    if result.val_accuracy > best_val:
        note = f"{label} (val {result.val_accuracy:.3f}) beats the floor ({shown})"
        return result, report(rows, None, note)
    used = best.candidate.label
    # A tie says val cannot tell the two apart (often both perfect on it); the simpler model is kept, and the
    # report says so: on val crops that overlapped the training crops this kept the probe where fine-tuning
    # was better on test (BENCHMARKS.md §11).
    tied = result.val_accuracy == best_val
    tie = f": a tie on {len(data.val)} val images, which cannot tell them apart" if tied else ""
    note = (
        f"{label} (val {result.val_accuracy:.3f}) is not better than the floor ({shown}){tie}: "
        f"the {used} model is what is written, evaluated and registered"
    )
    return best, report(rows, used, note)


def label_free_health(
    params: Params,
    result: FitResult,
    data: TrainData,
    history: list[dict[str, Any]],
    progress: bool | None,
    val_images: int,
) -> HealthReport:
    """The written model's predictions on target images, no labels read (see analysis/health.py)."""
    cfg = params.train.health
    pool = concat([data.unlabeled.images, data.train.images])
    draws = torch.Generator().manual_seed(params.train.seed)  # its own: the global RNG stays as training left it
    index = torch.randperm(len(pool), generator=draws)[: cfg.sample].sort().values
    device = next(result.model.parameters()).device
    images = TensorStore(pool[index]) if len(index) else TensorStore(torch.zeros(0, 3, 1, 1, dtype=torch.uint8))
    logits = predict_logits(result.model, images, result.normalization, device)
    health = prediction_health(
        torch.softmax(logits, 1).numpy(), result.head_classes, cfg.collapse_classes, cfg.collapse_share
    )
    last = history[-1] if history else {}
    source_val = None
    if data.source_classes is not None and result.head_classes == data.source_classes:
        manifest, source = read_manifest(params.reports.dir), params.data.source
        rows = sample_rows(domain_rows(manifest, source, ("val",)), cfg.sample, params.train.seed)
        spec = backbone_input(params)
        source_images = load_images(
            rows,
            data.source_classes,
            spec.size,
            progress,
            "source val",
            spec.interpolation,
            decoded_cache(params),
            spec.background,
        )
        source_val = evaluate_head(
            result.model, source_images, result.normalization, result.head_classes, data.source_classes, device
        )
    return HealthReport(
        **health,
        gates_promotion=val_images == 0,
        domain_accuracy=last.get("domain_accuracy"),
        source_val_accuracy=source_val,
    )


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 2)


def write_model(result: FitResult, params: Params, data: TrainData, out: Path, interpolation: Interpolation) -> None:
    write_safetensors(out / MODEL_FILE, result.model.state_dict())
    meta = TargetModelMeta(
        arch=result.model.arch,
        strategy=result.candidate.strategy,
        candidate=result.candidate.label,
        head_classes=list(result.head_classes),
        target_classes=list(data.classes),
        input_size=result.model.input_size,
        interpolation=interpolation,
        background=list(data.train.background),
        bottleneck=result.model.bottleneck,
        normalization=NormalizationSpec(**result.normalization.to_spec()),
        best_epoch=result.best_epoch,
        epochs_run=result.epochs_run,
        val_accuracy=result.val_accuracy,
        target=params.data.target,
        train_data_hash=data.train.content_hash(),
    )
    write_report(out / META_FILE, meta)


def history_csv(history: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in HISTORY_COLUMNS})
    return buffer.getvalue()


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None
