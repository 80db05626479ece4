"""The measured signals the plan reads: one class each, the only place a signal is named.

A signal reads one number from validate's and similarity's reports (``read``: its value and
the sample it was measured on), says why it is missing when it is (``unavailable``), and says
how the plan compares it (``tests``: a threshold from the ``strategy`` params and the role the
outcome plays in the rules, ``analysis.planning``). A signal without tests is reported in
plan.json and decides nothing. ``SIGNALS`` is their order: plan.json lists them in it, and for a
role the first measured signal decides (zero-shot accuracy before the LogME gain).

Adding a signal: one class here (or anywhere, added to ``SIGNALS``) and, when the plan compares
it, its threshold in ``StrategyConfig`` (docs/extending.md, "A signal").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

from autotransfer.artifacts import Comparison, Open, SimilarityReport, ValidationReport
from autotransfer.config import StrategyConfig
from autotransfer.requirements import DataFacts

# What a test's outcome does in the rules (analysis/planning.py):
# - "similar": the first measured signal with this role decides whether the target counts as similar;
# - "weak_features": true moves the frozen-backbone strategies last (and, for a source model, scratch
#   first with many labels).
Role = Literal["similar", "weak_features"]


@dataclass(frozen=True)
class Reading:
    """A signal's measurement on one target."""

    value: float | None  # None: not measured (``Signal.unavailable`` says why)
    n: int | None = None  # the images it was measured on (per domain for a distance between two); None: not measured


@dataclass(frozen=True)
class Threshold:
    """How the plan compares a signal: ``value <op> strategy.<key>``, and what a true outcome means."""

    key: str  # a StrategyConfig field; a signal added outside the library may give ``default`` instead
    op: Literal[">=", "<"]
    meaning: str
    role: Role | None = None  # None: a test the rules run themselves (how many labels)
    default: float | None = None

    def threshold(self, cfg: StrategyConfig) -> float:
        value: float | None = getattr(cfg, self.key, self.default)
        if value is None:
            raise AttributeError(f"strategy.{self.key}: no such param and no default threshold")
        return value

    def compare(self, label: str, value: float | None, cfg: StrategyConfig) -> Comparison:
        threshold = self.threshold(cfg)
        outcome = value is not None and (value >= threshold if self.op == ">=" else value < threshold)
        return Comparison(
            signal=label,
            value=value,
            threshold_key=f"strategy.{self.key}",
            threshold=threshold,
            test=f"{self.op} {threshold}",
            outcome=outcome,
            meaning=self.meaning if outcome else f"not {self.meaning}",
        )


@dataclass(frozen=True)
class PlanInputs:
    """What the rules read: facts about the data (validate's counts) and every signal's reading."""

    labeled_per_class: dict[str, int]  # target classes -> labeled images (train + val, after the cap)
    unlabeled_target: int
    target_classes_in_source: bool
    source_head: bool  # the backbone comes with a head trained on the source's classes
    labeled_source: bool = True  # False: data.source is null (source-free: the pretraining data is the source)
    readings: Mapping[str, Reading] = field(default_factory=dict)  # signal name -> reading (analysis/signals.py)

    @property
    def min_labeled(self) -> int:
        return min(self.labeled_per_class.values(), default=0)

    def value(self, signal: str) -> float | None:
        """The signal's measured value (None: not measured, or not a signal this plan read)."""
        reading = self.readings.get(signal)
        return None if reading is None else reading.value

    def facts(self) -> DataFacts:
        """The facts each strategy's ``Needs`` is checked against (train checks the same on its data)."""
        return DataFacts(
            labeled_min_per_class=self.min_labeled,
            labeled_target=sum(self.labeled_per_class.values()),
            unlabeled_target=self.unlabeled_target,
            labeled_source=self.labeled_source,
            target_classes_in_source=self.labeled_source and self.target_classes_in_source,
        )

    def to_json(self) -> dict[str, Any]:
        """plan.json's ``inputs``: the facts, then each signal's value by name."""
        facts = {k: v for k, v in asdict(self).items() if k != "readings"}
        return {**facts, **{name: reading.value for name, reading in self.readings.items()}}


class Signal:
    """One measured quantity the plan reads (see the module docstring)."""

    name: ClassVar[str]  # its key in plan.json's inputs
    label: ClassVar[str]  # how plan.json's comparisons name it
    basis: ClassVar[str] = ""  # how plan.json's cell names it when it decides the similarity verdict
    tests: ClassVar[tuple[Threshold, ...]] = ()  # none: reported only

    def read(self, validation: ValidationReport, similarity: SimilarityReport) -> Reading:
        raise NotImplementedError

    def unavailable(self, inputs: PlanInputs) -> str | None:
        """Why it is missing, for plan.json's ``signals.unavailable`` (None: not listed there)."""
        return None


def _measured(part: Open | None, key: str, n: int | None) -> Reading:
    """similarity.json's entry ``part`` read as a value (under ``key``) on ``n`` images."""
    value = None if part is None else part.get(key)
    return Reading(None if value is None else float(value), None if value is None else n)


def _labeled_n(part: Open | None) -> int | None:
    n = None if part is None else part.get("n")
    return None if n is None else int(n)


class ZeroShot(Signal):
    name = "zero_shot"
    label = "zero-shot source-head accuracy on the labeled target"
    basis = "zero-shot source-head accuracy"
    tests = (Threshold("similar_zero_shot", ">=", "similar", "similar"),)

    def read(self, validation: ValidationReport, similarity: SimilarityReport) -> Reading:
        return Reading(similarity.zero_shot.value, _labeled_n(similarity.zero_shot))

    def unavailable(self, inputs: PlanInputs) -> str | None:
        if not inputs.source_head:
            return (
                "no head for the source's classes: the backbone's own pretraining images (e.g. ImageNet) are not at "
                "hand, so similarity rests on how well its features transfer to the target (LogME gain over random)"
            )
        return "the target has classes the source head does not predict"


class ProbeGain(Signal):
    name = "probe_gain"
    label = "cross-validated probe accuracy gain of pretrained over random features"

    def read(self, validation: ValidationReport, similarity: SimilarityReport) -> Reading:
        part = similarity.transferability.get("probe_accuracy")
        return _measured(part, "gain", _labeled_n(part))


class LogmeGain(Signal):
    name = "logme_gain"
    label = "LogME gain of pretrained over random features"
    basis = "LogME transfer gain"
    # LogME, not probe accuracy, for weak features: with many labels a probe on random conv
    # features is already strong (docs/strategies.md), so the probe gain vanishes while LogME's does not.
    tests = (
        Threshold("similar_logme_gain", ">=", "similar", "similar"),
        Threshold("min_transfer_gain", "<", "barely better than random features", "weak_features"),
    )

    def read(self, validation: ValidationReport, similarity: SimilarityReport) -> Reading:
        part = similarity.transferability.get("logme")
        return _measured(part, "gain", _labeled_n(part))

    def unavailable(self, inputs: PlanInputs) -> str | None:
        return "no labeled target images to score features on"


class _DomainDistance(Signal):
    measure: ClassVar[str]  # its entry in similarity.json's ``domain``

    def read(self, validation: ValidationReport, similarity: SimilarityReport) -> Reading:
        # n: images per domain (both samples are drawn to the same size)
        return _measured(getattr(similarity.domain, self.measure), self.name, similarity.samples.target)

    def unavailable(self, inputs: PlanInputs) -> str | None:
        return None if inputs.labeled_source else "no source domain to compare the target with (data.source is null)"


class Pad(_DomainDistance):
    name, measure = "pad", "pad"
    label = "proxy A-distance between source and target features"


class Mmd2(_DomainDistance):
    name, measure = "mmd2", "mmd2_rbf"
    label = "squared MMD (RBF) between source and target features"


class PretrainingShift(Signal):
    name = "pretraining_shift"
    label = "BatchNorm statistics of the target against the pretrained ones (symmetric KL)"

    def read(self, validation: ValidationReport, similarity: SimilarityReport) -> Reading:
        return _measured(similarity.pretraining_shift, "value", similarity.samples.target)


SIGNALS: tuple[Signal, ...] = (ZeroShot(), ProbeGain(), LogmeGain(), Pad(), Mmd2(), PretrainingShift())


def registered() -> tuple[Signal, ...]:
    """``SIGNALS`` as it is when called (a signal added to it after import counts)."""
    return SIGNALS


def read_signals(
    validation: ValidationReport, similarity: SimilarityReport, signals: tuple[Signal, ...] | None = None
) -> dict[str, Reading]:
    """Every signal's reading, by name, in ``signals``' order (default: ``SIGNALS``)."""
    return {signal.name: signal.read(validation, similarity) for signal in signals or registered()}
