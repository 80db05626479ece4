"""The plan stage: read what validate and similarity measured, apply the rules, write ``reports/plan.json``."""

from __future__ import annotations

from pathlib import Path

from autotransfer.analysis.planning import decide, explain
from autotransfer.analysis.signals import PlanInputs, read_signals
from autotransfer.artifacts import (
    PLAN_JSON,
    SIMILARITY_JSON,
    VALIDATION_JSON,
    BudgetReport,
    PlanReport,
    SimilarityReport,
    TimeFitReport,
    ValidationReport,
    read_report,
)
from autotransfer.catalog import KINDS
from autotransfer.config import Params
from autotransfer.errors import StageInputError
from autotransfer.io.files import write_report
from autotransfer.models.backbones import resolutions
from autotransfer.transfer.budget import RESOLUTIONS, Budget, fit_time_budget, step_budget
from autotransfer.transfer.strategies import strategy_class


def plan_inputs(validation: ValidationReport, similarity: SimilarityReport) -> PlanInputs:
    """validate's counts and every signal's reading (analysis/signals.py), as the rules read them."""
    usage = validation.target_usage
    target_classes = validation.domains["target"].classes
    source = validation.domains.get("source")  # None: source-free
    source_classes = set(source.classes) if source is not None else set()
    return PlanInputs(
        labeled_per_class={c: int(usage.labeled_per_class.get(c, 0)) for c in target_classes},
        unlabeled_target=usage.unlabeled,  # the unlabeled/ folder and capped-away train images
        target_classes_in_source=source is not None and set(target_classes) <= source_classes,
        source_head=similarity.backbone.source_head_classes is not None,
        labeled_source=source is not None,
        readings=read_signals(validation, similarity),
    )


def make_plan(params: Params, progress: bool | None = None) -> PlanReport:
    """The plan stage (``progress`` unused: it reads two reports and decides in milliseconds)."""
    reports = Path(params.reports.dir)
    validation = read_report(reports / VALIDATION_JSON, ValidationReport, "validate")
    similarity = read_report(reports / SIMILARITY_JSON, SimilarityReport, "similarity")
    for name, report, stage in (
        (validation.domains["target"].name, VALIDATION_JSON, "validate"),
        (similarity.target, SIMILARITY_JSON, "similarity"),
    ):
        if name != params.data.target:
            raise StageInputError(
                f"{reports / report}: made for target {name!r}, not {params.data.target!r}; "
                f"rerun `autotransfer {stage}` (or `dvc repro`)"
            )
    inputs = plan_inputs(validation, similarity)
    decision = decide(inputs, params.strategy)
    reason = explain(decision, inputs, params.data.target)
    force = params.strategy.force
    plan = PlanReport(
        **dict(decision),
        mode=params.strategy.mode,
        target=params.data.target,
        source=params.data.source,
        forced=force is not None,
        inputs=inputs.to_json(),
        reason=reason,
    )
    if force is not None:
        plan = plan.model_copy(
            update={
                "rules_choice": plan.chosen,
                "chosen": force,
                "components": list(KINDS[force].components),
                "reason": f"Forced by strategy.force={force!r} (the rules would have chosen {plan.chosen}). " + reason,
            }
        )
    plan = plan.model_copy(update={"budget": planned_budget(params, validation, plan.chosen)})
    write_report(reports / PLAN_JSON, plan)
    return plan


def planned_budget(params: Params, validation: ValidationReport, strategy: str) -> BudgetReport:
    """The budget train will give ``strategy`` (transfer/budget.py), from validate's counts.

    The labeled pool is the target's labeled train images, plus its val images when val is
    too small to choose on (they train then), plus the source's train images for a strategy
    that trains on the source.
    """
    usage, cfg = validation.target_usage, params.train
    classes = validation.domains["target"].classes
    val = {c: usage.labeled_val_per_class.get(c, 0) for c in classes}
    labeled = sum(usage.labeled_per_class.values())
    scored = 0 if min(val.values(), default=0) < cfg.min_val_per_class else sum(val.values())  # else val trains
    pool = labeled - scored
    kind = strategy_class(strategy)  # its traits, from the one place the trainer reads them too
    if kind.needs.labeled_source and "source" in validation.domains:
        pool += validation.domains["source"].images.get("train", 0)
    budget = step_budget(cfg, pool, closed_form=kind.closed_form)
    report = BudgetReport(
        epochs=budget.epochs,
        steps=budget.steps,
        steps_per_epoch=budget.steps_per_epoch,
        pool=budget.pool,
        rule=f"{strategy}: {budget.rule}",
    )
    if cfg.time_budget is None:
        return report
    return within_time(params, validation, strategy, budget, report, val=scored)


def within_time(
    params: Params, validation: ValidationReport, strategy: str, budget: Budget, report: BudgetReport, val: int
) -> BudgetReport:
    """``report`` refitted to ``train.time_budget``: resolution first, then epochs (transfer/budget.py)."""
    from autotransfer.engine.warmup import Workload, epoch_seconds

    if params.strategy.mode == "race":
        raise StageInputError(
            "train.time_budget: not supported with strategy.mode=race (successive halving sets the race's "
            "schedule); set strategy.mode=rules or train.time_budget=null"
        )
    seconds = float(params.train.time_budget or 0)
    work = Workload(
        classes=len(validation.domains["target"].classes),
        pool=budget.pool,
        val=val,
        source_classes=len(validation.domains["source"].classes) if "source" in validation.domains else 0,
    )
    sizes = resolutions(params.backbone, RESOLUTIONS)
    fit = fit_time_budget(
        budget, seconds, sizes, lambda size: epoch_seconds(params, strategy, work, size, budget.epochs)
    )
    closed = strategy_class(strategy).closed_form
    return report.model_copy(
        update={
            "epochs": budget.epochs if closed else fit.epochs,
            "steps": budget.steps if closed else fit.epochs * budget.steps_per_epoch,
            "input_size": fit.input_size,
            "time_fit": TimeFitReport(
                seconds=seconds,
                estimated_seconds=fit.estimated_seconds,
                seconds_per_epoch={t.input_size: t.seconds_per_epoch for t in fit.measured},
                rule=fit.rule,
            ),
        }
    )
