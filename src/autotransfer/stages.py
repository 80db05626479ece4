"""The pipeline's stages, in order: the one list that dvc.yaml and the Prefect flow follow.

Each stage is one function of the library that reads files and writes files; the CLI
subcommand of the same name (``autotransfer <stage>``) is what dvc.yaml runs, and the
Prefect task of the same name calls the same function. What each stage reads, writes and
depends on in params.yaml is declared here once: the Prefect tasks key their cache on it,
and a test checks dvc.yaml declares the same (for the default paths).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from autotransfer.config import Params, resolve_domain
from autotransfer.images import sha256_file

Paths = Callable[[Params], list[Path]]


def _reports(*names: str) -> Paths:
    return lambda p: [Path(p.reports.dir) / name for name in names]


def _model(*names: str) -> Paths:
    return lambda p: [Path(p.train.out) / name for name in names]


def _source_model(p: Params) -> list[Path]:
    return [Path(p.pretrain.out)]


def _both(*parts: Paths) -> Paths:
    return lambda p: [path for part in parts for path in part(p)]


@dataclass(frozen=True)
class Stage:
    name: str
    summary: str
    inputs: Paths
    outputs: Paths
    params: tuple[str, ...]  # params.yaml keys (sections or dotted keys) the stage depends on


STAGES: tuple[Stage, ...] = (
    Stage("validate", "scan the source and target domains and check them with Great Expectations",
          lambda p: [resolve_domain(p.data, p.data.source), resolve_domain(p.data, p.data.target)],
          _reports("validation.json", "validation.md", "manifest.csv"), ("data", "validation", "reports")),
    Stage("pretrain", "train the backbone on the source domain when no pretrained weights are given",
          _reports("manifest.csv"), _source_model, ("backbone", "pretrain")),
    Stage("similarity", "measure how far the target is from the source on cached features",
          _both(_reports("manifest.csv"), _source_model), _reports("similarity.json"), ("backbone", "similarity")),
    Stage("plan", "rank the transfer strategies and choose one, with reasons",
          _reports("validation.json", "similarity.json"), _reports("plan.json"), ("strategy",)),
    Stage("train", "train the chosen strategy",
          _both(_reports("manifest.csv", "plan.json"), _source_model),
          _both(_model("model.safetensors", "meta.json"), _reports("train.json", "train_history.csv")),
          ("train", "strategy.mode", "strategy.force", "strategy.top_k")),
    Stage("evaluate", "score the model on the target test split",
          _both(_reports("manifest.csv"), _model("model.safetensors", "meta.json")),
          _reports("metrics.json", "plots"), ()),
    Stage("register", "register the model in MLflow and promote it if it beats the champion",
          _both(_model("model.safetensors", "meta.json"), _reports("metrics.json")),
          _reports("registration.json"), ("registry",)),
)


def stage_names() -> list[str]:
    return [stage.name for stage in STAGES]


def stage(name: str) -> Stage:
    return next(s for s in STAGES if s.name == name)


def content_hash(paths: list[Path]) -> str:
    """sha256 over the files at ``paths`` (folders: every file below, by relative path); missing counts too."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"\0{path.as_posix()}\0".encode())
        files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
        for file in files:
            if not file.exists():
                digest.update(b"<missing>")
                continue
            digest.update(file.relative_to(path).as_posix().encode() if path.is_dir() else b"")
            digest.update(sha256_file(file).encode())
    return digest.hexdigest()


def params_slice(params: Params, keys: tuple[str, ...]) -> dict[str, Any]:
    raw = params.model_dump(mode="json")
    out = {}
    for key in keys:
        value: Any = raw
        for part in key.split("."):
            value = value[part]
        out[key] = value
    return out


def stage_key(name: str, params: Params, code_version: str) -> str:
    """What a stage's result depends on: its input files' contents, its params, the code."""
    spec = stage(name)
    payload = json.dumps({"stage": name, "params": params_slice(params, spec.params), "code": code_version,
                          "inputs": content_hash(spec.inputs(params))}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


@lru_cache(maxsize=1)
def code_version() -> str:
    """Hash of the library's source: a code change invalidates every cached stage (as dvc.yaml's src deps do)."""
    package = Path(__file__).parent
    return content_hash(sorted(package.glob("*.py")))


STAMPS = ".stages"


def _stamp_path(name: str, params: Params) -> Path:
    return Path(params.reports.dir) / STAMPS / f"{name}.json"


def write_stamp(name: str, params: Params, key: str) -> None:
    """Record which key produced the stage's outputs now on disk, and their hash."""
    from autotransfer.files import write_json

    write_json(_stamp_path(name, params), {"key": key, "outputs": content_hash(stage(name).outputs(params))})


def outputs_match(name: str, params: Params, key: str) -> bool:
    """True when the stage's outputs on disk are exactly those it wrote for ``key``.

    A cached result may only stand in for running the stage when this holds: otherwise
    the files were deleted, edited, or written by a run with other inputs or params.
    """
    path = _stamp_path(name, params)
    if not path.exists():
        return False
    try:
        stamp = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return stamp.get("key") == key and stamp.get("outputs") == content_hash(stage(name).outputs(params))
