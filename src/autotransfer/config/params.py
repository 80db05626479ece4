"""The whole of params.yaml (``Params``), how it is read and overridden, and what names a run."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError, model_validator

from autotransfer.config.sections import (
    BackboneConfig,
    DataConfig,
    DemoConfig,
    PretrainConfig,
    RegistryConfig,
    ReportsConfig,
    Section,
    SimilarityConfig,
    StrategyConfig,
    ValidationConfig,
)
from autotransfer.config.training import TrainConfig
from autotransfer.errors import ConfigError

DEFAULT_PARAMS_FILE = Path("params.yaml")


class Params(Section):
    data: DataConfig = DataConfig()
    validation: ValidationConfig = ValidationConfig()
    demo: DemoConfig = DemoConfig()
    reports: ReportsConfig = ReportsConfig()
    backbone: BackboneConfig = BackboneConfig()
    pretrain: PretrainConfig = PretrainConfig()
    similarity: SimilarityConfig = SimilarityConfig()
    strategy: StrategyConfig = StrategyConfig()
    train: TrainConfig = TrainConfig()
    registry: RegistryConfig = RegistryConfig()

    @model_validator(mode="after")
    def _pretraining_needs_a_source(self) -> Params:
        if self.data.source is None and self.backbone.weights is None:
            raise ValueError(
                "backbone.weights=null trains the backbone on data.source, and data.source is null: "
                "set data.source to a labeled folder, or backbone.weights to imagenet"
            )
        return self


# The sections that decide what model a run trains (not where files go, nor how it is registered).
MODEL_SECTIONS = ("data", "backbone", "pretrain", "similarity", "strategy", "train")


def model_params_hash(params: Params) -> str:
    import hashlib
    import json

    raw = params.model_dump(mode="json")
    for section, key in (("pretrain", "out"), ("train", "out"), ("similarity", "cache_dir"), ("data", "root")):
        raw[section].pop(key)  # paths: the same run elsewhere trains the same model
    payload = json.dumps({name: raw[name] for name in MODEL_SECTIONS}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


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
            except UnicodeDecodeError as exc:
                raise ConfigError(f"{path}: not UTF-8 text ({exc}); save it as UTF-8") from exc
            except yaml.YAMLError as exc:
                raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
            if loaded is None:
                # A truncated file (a full disk, an editor crash) must not become a run on every default.
                raise ConfigError(
                    f"{path}: empty (no sections); write the parameters, or remove the file to run on the defaults"
                )
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


def registered_model_name(params: Params) -> str:
    """``registry.model_name`` with ``{target}`` replaced by the target folder's name (characters
    MLflow's ``models:/<name>@alias`` URIs cannot carry become ``-``)."""
    folder = Path(params.data.target.rstrip("/\\")).name or "target"
    return params.registry.model_name.replace("{target}", re.sub(r"[^A-Za-z0-9_.-]", "-", folder))


def resolve_domain(data: DataConfig, name: str) -> Path:
    """A domain is a folder name under ``data.root`` or, for a user's own folders, a path."""
    candidate = Path(name)
    if candidate.is_absolute() or len(candidate.parts) > 1:
        return candidate
    return Path(data.root) / name
