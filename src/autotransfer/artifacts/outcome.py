"""What evaluate and register write: the scores on the test split and the registry's decision."""

from __future__ import annotations

from autotransfer.artifacts.base import (
    Part,
    Report,
    fmt_score,
)

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
            f"{self.strategy} on {self.target} test ({self.n} images): accuracy {fmt_score(self.accuracy)}, "
            f"macro-F1 {fmt_score(self.macro_f1)}\nplots: "
            + ", ".join(p for p in self.plots.model_dump().values() if p)
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
