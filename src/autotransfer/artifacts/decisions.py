"""What plan and train write: the decision, the budget, what trained and why."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from autotransfer.artifacts.base import (
    Open,
    Part,
    Report,
    fmt_score,
)
from autotransfer.artifacts.data import (
    NormalizationSpec,
)

# ------------------------------------------------------------------ plan


class PlanCell(Part):
    labeled: str
    similarity: str
    similarity_basis: str


class PlanSignals(Part):
    used: list[str]  # compared with a threshold by the rules
    reported_only: list[str]  # measured and shown, never deciding alone
    unavailable: dict[str, str]  # signal -> why it could not be measured
    after_training: str | None = None  # what checks the trained model when no target labels can


class CandidateSpec(Part):
    strategy: str
    backbone_lr_mult: float | None = None


class Comparison(Part):
    """One threshold test the plan's rules ran (analysis/signals.py ``Test``)."""

    signal: str
    value: int | float | None
    threshold_key: str  # strategy.<key> in params.yaml
    threshold: int | float
    test: str  # ">= 0.5"
    outcome: bool
    meaning: str  # what the outcome means ("similar" / "not similar")


class PlanDecision(Part):
    """What the rules decided (analysis/planning.py ``decide``); plan.json holds it with the run's facts."""

    cell: PlanCell
    signals: PlanSignals | None = None  # None: plans written before it was recorded
    ranking: list[str]
    chosen: str
    components: list[str] = Field(default_factory=list)  # the terms the chosen adaptation strategy adds to the loss
    runner_up: str | None
    candidates: list[CandidateSpec]
    excluded: dict[str, str]  # strategy -> why it cannot run or the rules rule it out
    adjustments: list[str]  # what moved the table's order, and why
    comparisons: list[Comparison]


class TimeFitReport(Part):
    """How ``train.time_budget`` was met (transfer/budget.py ``fit_time_budget``)."""

    seconds: float  # the budget
    estimated_seconds: float  # the chosen resolution and epochs, from the warm-up
    seconds_per_epoch: dict[int, float]  # measured on this machine: input size -> seconds
    rule: str


class BudgetReport(Part):
    """How long the written strategy trained, and why that long (transfer/budget.py)."""

    epochs: int
    steps: int
    steps_per_epoch: int
    pool: int  # labeled images per epoch
    rule: str
    input_size: int | None = None  # set by a time budget: the resolution train uses (else backbone.input_size)
    time_fit: TimeFitReport | None = None

    def line(self) -> str:
        timed = (
            f"\ntime budget: {self.time_fit.rule}; trains {self.epochs} epochs ({self.steps} steps) "
            f"at {self.input_size} px"
            if self.time_fit
            else ""
        )
        return f"budget: {self.rule}{timed}"


class PlanReport(Report, PlanDecision):
    """plan.json: the rules' decision, with the run it was made for and the inputs it read."""

    mode: str
    target: str
    source: str | None
    forced: bool
    inputs: dict[str, Any]  # the facts and every signal's value the rules read (analysis/planning.py)
    reason: str
    rules_choice: str | None = None  # what the rules chose when strategy.force overrode them
    budget: BudgetReport | None = None  # the chosen strategy's budget, as train will set it (None: older plans)

    def summary(self) -> str:
        return (
            f"strategy: {self.chosen} (runner-up: {self.runner_up}; ranking: {', '.join(self.ranking)})\n{self.reason}"
            + (f"\n{self.budget.line()}" if self.budget else "")
        )


# ------------------------------------------------------------------ train


class RaceRow(Part):
    round: int | str
    candidate: str
    budget_epochs: int
    epochs_trained: int
    val_accuracy: float | None
    # what the rising slot compared: val projected to the next round's end (None: no next round, or the slot off)
    projected_val: float | None = None
    went_on: bool | None = None  # None: the last round or the final run
    seconds: float


class FloorRow(Part):
    model: str  # linear_probe | logistic_pixels
    val_accuracy: float | None
    seconds: float


class HealthReport(Open):
    """Label-free checks of the written model on target images (analysis/health.py), and what they gate."""

    n: int
    collapsed: bool | None
    verdict: str
    gates_promotion: bool  # no labeled target val: these checks are all that stands before promotion
    domain_accuracy: float | None = None  # dann's / dann_mcc_pl's domain classifier, last epoch (0.5: domains confused)
    source_val_accuracy: float | None = None  # a source-head model on the source's val split

    def line(self) -> str:
        parts = [self.verdict]
        if self.get("mean_entropy") is not None:
            parts.append(f"mean prediction entropy {self.get('mean_entropy'):.2f} of 1")
        if self.domain_accuracy is not None:
            parts.append(f"domain classifier accuracy {self.domain_accuracy:.3f}")
        if self.source_val_accuracy is not None:
            parts.append(f"source val accuracy {self.source_val_accuracy:.3f}")
        gate = (
            "no labeled target val, so a collapsed model is registered but never promoted"
            if self.gates_promotion
            else "reported only: target val labels checked the model"
        )
        return f"health: {'; '.join(parts)} — {gate}"


class FloorReport(Part):
    """The cheap baselines the trained model was compared with on the target val split."""

    rows: list[FloorRow]
    trained: str  # the trained candidate
    trained_val_accuracy: float | None
    used: str | None  # the floor model written instead of the trained one; None: the trained one
    note: str


class SelectionReport(Part):
    """Which rule chose among epochs, candidates and the floor: the val split, or rules that need none."""

    rule: str  # val | no_val
    val_smallest_class: int  # labeled val images in the smallest target class (before any fold)
    min_val_per_class: int
    note: str


class TrainReport(Report):
    strategy: str
    candidate: str
    backbone_lr_mult: float | None
    mode: str
    plan_choice: str
    epochs_run: int
    best_epoch: int
    resumed_from_epoch: int
    val_accuracy: float | None
    seconds: float
    seconds_per_epoch: float | None
    images_per_second: float | None
    race: list[RaceRow]
    race_note: str | None
    race_cost_epochs: int | None = None
    oracle_cost_epochs: int | None = None
    processes: int | None = None
    floor: FloorReport | None = None  # None: train.floor off (or a report from before the floor)
    health: HealthReport | None = None  # None: a report from before the label-free checks
    budget: BudgetReport | None = None  # None: a report from before step budgets
    selection: SelectionReport | None = None
    fit: str | None = None  # how a closed-form strategy was fitted (the converged probe)

    def summary(self) -> str:
        lines = [
            f"  race round {row.round}: {row.candidate} {row.budget_epochs} epochs "
            f"-> val {fmt_score(row.val_accuracy)}"
            + ("" if row.projected_val is None else f", projected {fmt_score(row.projected_val)}")
            + ("" if row.went_on is None else ", goes on" if row.went_on else ", cut")
            + f" ({row.seconds} s)"
            for row in self.race
        ]
        if self.race_note:
            lines.append(f"  {self.race_note}")
        resumed = f", resumed from epoch {self.resumed_from_epoch}" if self.resumed_from_epoch else ""
        lines.append(
            f"trained {self.candidate} ({self.mode}): {self.epochs_run} epochs{resumed}, "
            f"best epoch {self.best_epoch}, target val accuracy {fmt_score(self.val_accuracy)}, "
            f"{self.seconds} s ({self.images_per_second} img/s"
            + (f", {self.processes} processes)" if self.processes else ")")
        )
        if self.budget:
            lines.append(self.budget.line())
        if self.fit:
            lines.append(f"fit: {self.fit}")
        if self.selection:
            lines.append(f"selection: {self.selection.note}")
        if self.floor:
            lines.append(f"floor: {self.floor.note}")
        if self.health:
            lines.append(self.health.line())
        return "\n".join(lines)


class TargetModelMeta(Report):
    """models/target/meta.json: what a trained model needs to be loaded and fed."""

    arch: str
    strategy: str
    candidate: str
    head_classes: list[str]
    target_classes: list[str]
    input_size: int
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"  # bilinear: models before it was recorded
    background: list[int] = Field(
        default_factory=lambda: [0, 0, 0]
    )  # RGB under transparent pixels; black: models before it was recorded
    bottleneck: int = 0
    normalization: NormalizationSpec
    best_epoch: int
    epochs_run: int
    val_accuracy: float | None
    target: str
    train_data_hash: str
