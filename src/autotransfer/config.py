"""params.yaml as one strict, frozen pydantic model.

Every knob of the pipeline lives in params.yaml; DVC reads the same file by key, and the
CLI and the flows override it with ``section.key=value`` strings. A mistyped or unknown
key is an error that names its dotted path: silently ignoring ``train.lr`` when the user
meant ``train.learning_rate`` is how experiments go wrong without anyone noticing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

DEFAULT_PARAMS_FILE = Path("params.yaml")


class ConfigError(ValueError):
    """A params file or override that does not fit the schema; the message names the key."""


class Section(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")


class DataConfig(Section):
    root: str = Field("data", description="Folder holding one sub-folder per domain.")
    source: str = Field("synth-digits", description="Source domain: a folder name under root, or a path.")
    target: str = Field("digits", description="Target domain: a folder name under root, or a path.")
    labeled_per_class: int | None = Field(
        None,
        ge=0,
        description="Cap on labeled target images per class (train and val together); "
        "the rest of the target train split is treated as unlabeled. null: no cap.",
    )
    seed: int = Field(0, description="Seed of the deterministic choice of which target images keep labels.")


class ValidationConfig(Section):
    min_images_per_class: int = Field(5, ge=1, description="Minimum readable images per class in a train split.")
    min_eval_images_per_class: int = Field(1, ge=0, description="Minimum readable images per class in val and test.")
    min_side: int = Field(8, ge=1, description="Smallest accepted image width or height, in pixels.")
    max_side: int = Field(4096, ge=1, description="Largest accepted image width or height, in pixels.")
    max_pixels: int = Field(
        4096 * 4096,
        ge=1,
        description="Images with more pixels are rejected before decoding (decompression bombs).",
    )
    max_listed: int = Field(10, ge=1, description="How many offending files the console summary lists per check.")


class DemoConfig(Section):
    out: str = Field("data", description="Where `autotransfer demo-data` writes the demo domains.")
    image_size: int = Field(32, ge=8, le=256, description="Side of the demo images, in pixels.")
    synth_per_class: int = Field(300, ge=10, description="Rendered synth-digits images per class.")
    seed: int = 0


class ReportsConfig(Section):
    dir: str = Field("reports", description="Where stages write their reports.")


# The names of src/autotransfer/backbones.py's registry (kept here so that loading params
# does not import torch; a test checks the two agree).
ArchName = Literal["small_cnn", "resnet18", "resnet34", "resnet50", "mobilenet_v3_small",
                   "mobilenet_v3_large", "efficientnet_b0", "vit_b_16"]
StrategyName = Literal["linear_probe", "finetune_top", "progressive", "finetune_all", "scratch", "dann", "source_only"]


class BackboneConfig(Section):
    arch: ArchName = "resnet18"
    weights: str | None = Field(
        None,
        description="null: the pretrain stage's source model (models/source); a .safetensors/.pt file; "
        "or torchvision weights ('imagenet' or an enum name) from the torch hub cache.",
    )
    input_size: int = Field(32, ge=16, le=512, description="Images are resized to this square size.")


class PretrainConfig(Section):
    out: str = Field("models/source", description="Where the source model and its metadata go.")
    epochs: int = Field(6, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.05, gt=0, description="SGD learning rate (cosine schedule).")
    weight_decay: float = Field(5e-4, ge=0)
    augment: bool = Field(True, description="Random rotation, scale and shift while pretraining.")
    seed: int = 0


class SimilarityConfig(Section):
    n_per_domain: int = Field(500, ge=10, description="Images per domain for PAD, MMD and Fréchet (fixed so values compare).")
    max_labeled: int = Field(2000, ge=10, description="Cap on labeled target images for LogME and the probe.")
    probe_folds: int = Field(5, ge=2)
    batch_size: int = Field(256, ge=1)
    cache_dir: str = Field(".cache/features", description="On-disk feature cache, keyed by content hashes.")
    seed: int = 0


class StrategyConfig(Section):
    mode: Literal["rules", "race"] = "rules"
    force: StrategyName | None = Field(None, description="Skip the selection and use this strategy.")
    none_below_per_class: int = Field(
        2, ge=1, description="Fewer labeled target images per class than this counts as 'none'.")
    large_from_per_class: int = Field(100, ge=1, description="At least this many labeled per class counts as 'large'.")
    similar_zero_shot: float = Field(
        0.5, ge=0, le=1, description="Zero-shot source-head accuracy from which the target counts as similar.")
    similar_logme_gain: float = Field(
        0.15, description="Without a zero-shot score: LogME gain over random features from which it counts as similar.")
    min_transfer_gain: float = Field(
        0.05, description="Below this LogME gain over random features the backbone is not worth freezing.")
    top_k: int = Field(3, ge=1, description="Candidates raced in race mode.")


class Params(Section):
    data: DataConfig = DataConfig()
    validation: ValidationConfig = ValidationConfig()
    demo: DemoConfig = DemoConfig()
    reports: ReportsConfig = ReportsConfig()
    backbone: BackboneConfig = BackboneConfig()
    pretrain: PretrainConfig = PretrainConfig()
    similarity: SimilarityConfig = SimilarityConfig()
    strategy: StrategyConfig = StrategyConfig()


def load_params(path: str | Path | None = DEFAULT_PARAMS_FILE, overrides: Iterable[str] = ()) -> Params:
    """Read ``path`` (a missing default file means all defaults), apply ``key=value`` overrides."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        if path.exists():
            source = str(path)
            try:
                loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
            except yaml.YAMLError as exc:
                raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
            if loaded is None:
                loaded = {}
            if not isinstance(loaded, dict):
                raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(loaded).__name__}")
            raw = loaded
        elif path != DEFAULT_PARAMS_FILE:
            raise ConfigError(f"{path}: params file not found")
    for override in overrides:
        apply_override(raw, override)
        source += f" + {override}"
    return params_from_dict(raw, source=source)


def params_from_dict(raw: Mapping[str, Any], source: str = "params") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = [describe_error(err) for err in exc.errors()]
        raise ConfigError(f"{source}: invalid parameters:\n  " + "\n  ".join(lines)) from None


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Set ``a.b.c=value`` in ``raw``; the value is parsed as YAML (``1``, ``0.5``, ``null``, ``[a, b]``)."""
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {override!r}: expected KEY=VALUE, e.g. data.target=digits-m")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {override!r}: value is not valid YAML: {exc}") from exc
    node = raw
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(parts[: depth + 1])}: is a value, not a section (override {override!r})")
        node = child
    node[parts[-1]] = value


def describe_error(err: Mapping[str, Any]) -> str:
    """One pydantic error as ``dotted.key: problem (got value)``, with the allowed keys for typos."""
    loc = tuple(str(part) for part in err["loc"])
    key = ".".join(loc)
    if err["type"] == "extra_forbidden":
        allowed = sorted(_section_fields(loc[:-1]))
        return f"{key}: unknown key (allowed here: {', '.join(allowed)})"
    value = err.get("input")
    return f"{key}: {err['msg']} (got {value!r} of type {type(value).__name__})"


def _section_fields(loc: tuple[str, ...]) -> Iterable[str]:
    model: type[BaseModel] = Params
    for part in loc:
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return model.model_fields.keys()


def resolve_domain(data: DataConfig, name: str) -> Path:
    """A domain is a folder name under ``data.root`` or, for a user's own folders, a path."""
    candidate = Path(name)
    if candidate.is_absolute() or len(candidate.parts) > 1:
        return candidate
    return Path(data.root) / name
