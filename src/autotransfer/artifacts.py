"""Every file a stage writes for another to read: its name, and a pydantic model of its contents.

Reports are written and read only through these models (``io.files.write_report`` /
``read_report``),
so a stage that renames or drops a field fails where it writes, and a reader of an old or
hand-edited file gets an error that names the file and the field, never a silent None.
Each report has a ``summary()``: the one text the CLI prints, the Prefect task logs and the
flow's decision artifact shows.

Field order is the order of the keys in the JSON files: dumps keep it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from autotransfer.errors import StageInputError

# reports/ (params.reports.dir)
VALIDATION_JSON = "validation.json"
VALIDATION_MD = "validation.md"
MANIFEST_CSV = "manifest.csv"
SIMILARITY_JSON = "similarity.json"
PLAN_JSON = "plan.json"
TRAIN_JSON = "train.json"
TRAIN_HISTORY_CSV = "train_history.csv"
METRICS_JSON = "metrics.json"
PREDICTIONS_CSV = "predictions.csv"  # path, actual, predicted: one row per target test image
PLOTS_DIR = "plots"
REGISTRATION_JSON = "registration.json"
REPORT_HTML = "report.html"  # the run on one self-contained page (stages/report.py)
TRACKING_JSON = "tracking.json"  # the live MLflow run every stage of a pipeline run writes to
# models/source (params.pretrain.out) and models/target (params.train.out)
MODEL_FILE = "model.safetensors"
META_FILE = "meta.json"
CHECKPOINT_FILE = "checkpoint.pt"
RUNS_DIR = "runs"  # models/target/runs/<candidate>/checkpoint.pt


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


class Report(BaseModel):
    """A stage's JSON output. Unknown fields are refused: a renamed field is an error, not a None."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def summary(self) -> str:
        raise NotImplementedError

    def failed(self) -> str | None:
        """Why the pipeline must stop after this report (only a failed validation says so), else None."""
        return None

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class Part(BaseModel):
    """A nested part of a report."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Open(BaseModel):
    """A nested part whose keys vary (e.g. one per measure): declared fields are required, others kept."""

    model_config = ConfigDict(extra="allow", frozen=True)

    def get(self, key: str) -> Any:
        """An undeclared field (None when absent)."""
        return (self.model_extra or {}).get(key)


R = TypeVar("R", bound=Report)


def read_report(path: Path, model: type[R], made_by: str) -> R:
    """``path`` parsed as ``model``; missing or malformed is a StageInputError naming the file and the field."""
    if not path.exists():
        raise StageInputError(f"{path}: not found; run `autotransfer {made_by}` first")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StageInputError(f"{path}: not readable JSON ({exc}); rerun `autotransfer {made_by}`") from None
    return parse_report(raw, model, str(path), made_by)


def parse_report(raw: Any, model: type[R], where: str, made_by: str) -> R:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()[:5]
        )
        raise StageInputError(
            f"{where}: does not match what `autotransfer {made_by}` writes ({problems}); rerun `autotransfer {made_by}`"
        ) from None


# ------------------------------------------------------------------ validate


class DomainSummary(Part):
    name: str
    path: str
    classes: list[str]
    images: dict[str, int]
    colour_images: int


class FileCounts(Part):
    total: int
    readable: int
    unreadable: int
    modes: dict[str, int]
    converted_to_rgb: int
    formats: dict[str, int]
    duplicates_within_a_split: int
    ignored: int  # hidden and system files and folders (io.manifest.is_ignored)
    in_class_subfolders: int  # labeled images below a sub-folder of their class folder


class TargetUsage(Part):
    labeled_per_class_cap: int | None
    labeled_per_class: dict[str, int]  # train + val
    labeled_val_per_class: dict[str, int] = {}  # val alone ({}: a report from before it was recorded)
    unlabeled: int
    test: int


class CheckResult(Open):
    id: str
    description: str
    severity: str
    success: bool
    unexpected_count: int
    offending: list[dict[str, Any]]


class ValidationReport(Report):
    success: bool
    failed_checks: list[str]
    warnings: list[str]
    domains: dict[str, DomainSummary]  # "source", "target"
    files: FileCounts
    target_usage: TargetUsage
    checks: list[CheckResult]
    ignored: list[str]  # their paths

    def summary(self) -> str:
        return (
            f"validation {'passed' if self.success else 'FAILED'}: {self.files.readable}/{self.files.total} "
            f"files readable, {sum(c.success for c in self.checks)}/{len(self.checks)} checks passed"
        )

    def failure(self) -> str:
        """What a failed run ends with: the tracker's note and the flow's error both start with it."""
        return f"data validation failed ({', '.join(self.failed_checks)})"

    def failed(self) -> str | None:
        return None if self.success else self.failure()


# ------------------------------------------------------------------ pretrain


class NormalizationSpec(Part):
    mean: list[float]
    std: list[float]


class PretrainSkipped(Report):
    skipped: bool
    reason: str

    def summary(self) -> str:
        return f"pretrain skipped: {self.reason}"


class SourceEpoch(Part):
    epoch: int
    loss: float
    val_accuracy: float | None


class SourceModelMeta(Report):
    """models/source/meta.json. No timings: the same data and params must give the same bytes (DVC)."""

    skipped: bool
    arch: str
    classes: list[str]
    input_size: int
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    normalization: NormalizationSpec
    source_domain: str
    data_hash: str
    epochs: int
    train_images: int
    val_accuracy: float | None
    history: list[SourceEpoch]

    def summary(self) -> str:
        return (
            f"pretrained {self.arch} on {self.source_domain} ({self.train_images} images, {self.epochs} epochs): "
            f"source val accuracy {_fmt(self.val_accuracy)}"
        )


def read_source_meta(path: Path) -> PretrainSkipped | SourceModelMeta:
    if not path.exists():
        raise StageInputError(f"{path}: not found; run `autotransfer pretrain` first")
    raw = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(raw, dict) and raw.get("skipped") is True:
        return parse_report(raw, PretrainSkipped, str(path), "pretrain")
    return parse_report(raw, SourceModelMeta, str(path), "pretrain")


# ------------------------------------------------------------------ similarity


def source_name(source: str | None) -> str:
    """A source domain as reports name it (none: the backbone's own pretraining data)."""
    return source if source is not None else "(the backbone's pretraining data)"


class BackboneInfo(Part):
    arch: str
    weights: str
    input_size: int
    feature_dim: int
    source_head_classes: list[str] | None


class Measure(Open):
    seconds: float


class DomainDistances(Part):
    pad: Measure
    mmd2_rbf: Measure
    frechet: Measure


class Transfer(Open):
    """pretrained / random_init / gain / n / seconds, or value None and a reason."""


class ZeroShot(Open):
    value: float | None


class SimilarityReport(Report):
    source: str | None  # None: source-free (the backbone's pretraining data is the source)
    target: str
    backbone: BackboneInfo
    samples: dict[str, Any]
    domain: DomainDistances  # each {"value": None, "reason": ...} without a source
    # The symmetric KL of the target's BatchNorm input statistics from the pretrained ones (no source needed).
    pretraining_shift: Measure | None = None  # None: reports written before it was measured
    transferability: dict[str, Transfer]  # "logme", "probe_accuracy"
    zero_shot: ZeroShot
    cost: dict[str, float | int]

    @property
    def pad(self) -> float | None:
        value = self.domain.pad.get("pad")
        return None if value is None else float(value)

    def summary(self) -> str:
        d = self.domain
        lines = [f"{source_name(self.source)} -> {self.target} ({self.backbone.arch}, {self.backbone.weights})"]
        if self.pad is not None:
            lines.append(
                f"  PAD {self.pad:.3f} at {d.pad.get('n_per_domain')} images per domain; "
                f"MMD² {d.mmd2_rbf.get('mmd2'):.4f}; Fréchet {d.frechet.get('value'):.2f}"
            )
        else:
            lines.append(f"  PAD, MMD², Fréchet: n/a ({d.pad.get('reason')})")
        shift = self.pretraining_shift
        if shift is not None:
            lines.append(
                f"  shift from the pretraining statistics (BatchNorm, symmetric KL): {_fmt(shift.get('value'))}"
                + (
                    f" (early layers {shift.get('early'):.3f}, late {shift.get('late'):.3f})"
                    if shift.get("value") is not None
                    else f" ({shift.get('reason')})"
                )
            )
        zero = self.zero_shot
        lines.append(
            f"  zero-shot source-head accuracy: {_fmt(zero.value)}"
            + (f" ({zero.get('reason')})" if zero.value is None else f" on {zero.get('n')} labeled target images")
        )
        for name, entry in self.transferability.items():
            e = entry.model_extra or {}
            if e.get("pretrained") is None:
                lines.append(f"  {name}: n/a ({e.get('reason')})")
            else:
                lines.append(
                    f"  {name}: {e['pretrained']:.3f} pretrained vs {e['random_init']:.3f} random init "
                    f"(gain {e['gain']:+.3f}, n={e['n']})"
                    + ("; exact log-evidence, not comparable with published LogME scores" if "method" in e else "")
                )
        return "\n".join(lines)


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
    components: list[str] = []  # the terms the chosen adaptation strategy adds to the loss
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
            f"-> val {_fmt(row.val_accuracy)}"
            + ("" if row.projected_val is None else f", projected {_fmt(row.projected_val)}")
            + ("" if row.went_on is None else ", goes on" if row.went_on else ", cut")
            + f" ({row.seconds} s)"
            for row in self.race
        ]
        if self.race_note:
            lines.append(f"  {self.race_note}")
        resumed = f", resumed from epoch {self.resumed_from_epoch}" if self.resumed_from_epoch else ""
        lines.append(
            f"trained {self.candidate} ({self.mode}): {self.epochs_run} epochs{resumed}, "
            f"best epoch {self.best_epoch}, target val accuracy {_fmt(self.val_accuracy)}, "
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
    background: list[int] = [0, 0, 0]  # RGB under transparent pixels; black: models before it was recorded
    bottleneck: int = 0
    normalization: NormalizationSpec
    best_epoch: int
    epochs_run: int
    val_accuracy: float | None
    target: str
    train_data_hash: str


# ------------------------------------------------------------------ evaluate


class ClassScores(Part):
    precision: float
    recall: float
    f1: float
    support: int


class Plots(Part):
    confusion_matrix: str
    training_curves: str | None
    feature_map: str | None


class MetricsReport(Report):
    target: str
    strategy: str
    candidate: str | None
    test_set_hash: str
    model_sha256: str
    accuracy: float | None
    macro_f1: float | None
    n: int
    per_class: dict[str, ClassScores]
    plots: Plots

    def summary(self) -> str:
        return (
            f"{self.strategy} on {self.target} test ({self.n} images): accuracy {_fmt(self.accuracy)}, "
            f"macro-F1 {_fmt(self.macro_f1)}\nplots: " + ", ".join(p for p in self.plots.model_dump().values() if p)
        )


# ------------------------------------------------------------------ register


class RegistrationReport(Report):
    tracking_uri: str
    model_name: str
    version: str
    model_uri: str
    run_id: str
    already_registered: bool
    decision: str
    reason: str
    metric: str
    test_set_hash: str
    min_delta: float
    challenger_score: float
    champion_before: str | None
    champion_score: float | None
    champion: str | None
    model_sha256: str
    data_hash: str
    seconds: float
    experiment_id: str | None = None  # None: registrations written before it was recorded

    def summary(self) -> str:
        again = " (already registered)" if self.already_registered else ""
        return (
            f"{self.model_name} version {self.version}{again} at {self.tracking_uri}: "
            f"{self.decision}; champion is now v{self.champion}\n{self.reason}"
        )
