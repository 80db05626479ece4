"""What validate, pretrain and similarity write: the data checked, the source model, the measures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from autotransfer.artifacts.base import (
    Open,
    Part,
    Report,
    fmt_score,
    parse_report,
)
from autotransfer.errors import StageInputError

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
    labeled_val_per_class: dict[str, int] = Field(
        default_factory=dict
    )  # val alone ({}: a report from before it was recorded)
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
            f"source val accuracy {fmt_score(self.val_accuracy)}"
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


class SimilaritySamples(Part):
    """How many images each measure saw: the domain measures' equal samples, the labeled target's."""

    source: int  # 0: source-free
    target: int
    labeled_target: int
    target_classes: list[str]


class SimilarityCost(Part):
    feature_seconds: float
    cache_hits: int
    cache_misses: int


class SimilarityReport(Report):
    source: str | None  # None: source-free (the backbone's pretraining data is the source)
    target: str
    backbone: BackboneInfo
    samples: SimilaritySamples
    domain: DomainDistances  # each {"value": None, "reason": ...} without a source
    # The symmetric KL of the target's BatchNorm input statistics from the pretrained ones (no source needed).
    pretraining_shift: Measure | None = None  # None: reports written before it was measured
    transferability: dict[str, Transfer]  # "logme", "probe_accuracy"
    zero_shot: ZeroShot
    cost: SimilarityCost

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
                f"  shift from the pretraining statistics (BatchNorm, symmetric KL): {fmt_score(shift.get('value'))}"
                + (
                    f" (early layers {shift.get('early'):.3f}, late {shift.get('late'):.3f})"
                    if shift.get("value") is not None
                    else f" ({shift.get('reason')})"
                )
            )
        zero = self.zero_shot
        lines.append(
            f"  zero-shot source-head accuracy: {fmt_score(zero.value)}"
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
