"""The report base classes, how a report is read back, and the file names stages exchange."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

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


def fmt_score(value: float | None) -> str:
    """An accuracy or other score as reports print it: three decimals, or n/a when it was not measured."""
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
