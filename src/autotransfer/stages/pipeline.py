"""The pipeline's stages, in order: the one list that dvc.yaml and the Prefect flow follow.

Each stage is one ``Stage`` object: the function of the library that runs it (params in, its
typed report out; it reads files and writes files), and what it reads, writes and depends on.
The CLI subcommand of the same name (``autotransfer <stage>``) is what dvc.yaml runs, the
Prefect task of the same name runs the same ``Stage.run``, and bench and the tests run it too
(``TRAIN.run(params)``, ``stages_before(TRAIN, params)``). What each stage reads, writes,
depends on in params.yaml and which of the library's code it runs is declared here once:
the Prefect tasks key their cache on it, the train stage keys its checkpoints on its code,
and a test checks dvc.yaml declares the same (for the default paths).

``code``: the files and folders (recursively, ``*.py``) below src/autotransfer/ whose
edits change what the stage writes. ``config/`` is in none of them: what it contributes
is the params' values, which every key already holds, so editing a description (or
``errors.py``'s messages, ``uninterrupted.py``, the CLI, or ``ops/stack.py``) invalidates nothing.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, cast

from autotransfer.artifacts import (
    MANIFEST_CSV,
    META_FILE,
    METRICS_JSON,
    MODEL_FILE,
    PLAN_JSON,
    PLOTS_DIR,
    PREDICTIONS_CSV,
    REGISTRATION_JSON,
    REPORT_HTML,
    SIMILARITY_JSON,
    TRAIN_HISTORY_CSV,
    TRAIN_JSON,
    VALIDATION_JSON,
    VALIDATION_MD,
    MetricsReport,
    PlanReport,
    PretrainSkipped,
    RegistrationReport,
    Report,
    SimilarityReport,
    SourceModelMeta,
    TrainReport,
    ValidationReport,
)
from autotransfer.config import Params, resolve_domain
from autotransfer.io.images import sha256_file

PACKAGE = Path(__file__).resolve().parents[1]  # src/autotransfer

Paths = Callable[[Params], list[Path]]


def _reports(*names: str) -> Paths:
    return lambda p: [Path(p.reports.dir) / name for name in names]


def _model(*names: str) -> Paths:
    return lambda p: [Path(p.train.out) / name for name in names]


def _source_model(p: Params) -> list[Path]:
    return [Path(p.pretrain.out)]


def _both(*parts: Paths) -> Paths:
    return lambda p: [path for part in parts for path in part(p)]


R = TypeVar("R", bound=Report, covariant=True)


class StageRun(Protocol[R]):
    """What runs a stage: params in, its typed report out (the report it also wrote to disk)."""

    def __call__(self, params: Params, progress: bool | None = None) -> R: ...


@dataclass(frozen=True)
class Stage(Generic[R]):
    """One step of the pipeline: what it reads and writes, what it depends on, and what runs it.

    ``run(params, progress)`` is the one way the CLI, the Prefect tasks, bench and tests run a
    stage: params in, the stage's typed report out. Code that needs one stage's report names
    its constant (``TRAIN.run(params).strategy`` is a ``TrainReport``); code that runs them all
    iterates ``STAGES``.
    """

    name: str  # the CLI subcommand, the Prefect task and the dvc.yaml stage of the same name
    summary: str
    inputs: Paths
    outputs: Paths
    params: tuple[str, ...]  # params.yaml keys (sections or dotted keys) the stage depends on
    code: tuple[str, ...]  # below src/autotransfer/: files, or folders taken recursively
    run: StageRun[R]
    # True: it talks to a service (the registry): never cached (retried instead), written whole once
    # begun, and left out of a run that does not register.
    service: bool = False

    @property
    def cached(self) -> bool:
        return not self.service


# The code that decides a trained model's weights: the loop, the strategies (and what each
# needs from the data: its catalog row), the models, the data, and the metric that selects the best epoch.
TRAINING = ("engine", "transfer", "catalog.py", "requirements.py", "models", "io", "analysis/metrics.py")


# What runs each stage: its module's function, imported when the stage runs and not here. So
# listing the stages (``autotransfer --help``, dvc.yaml's check) imports neither torch nor
# mlflow, and the stages that import this module (train keys its checkpoints on its code
# version) form no import cycle with it. tests/stages/test_pipeline.py checks each function
# exists and returns the report its wrapper says.
def _function(module: str, name: str) -> Callable[..., Any]:
    function: Callable[..., Any] = getattr(importlib.import_module(f"autotransfer.stages.{module}"), name)
    return function


def _validate(params: Params, progress: bool | None = None) -> ValidationReport:
    return cast(ValidationReport, _function("validate", "run")(params, progress))


def _pretrain(params: Params, progress: bool | None = None) -> PretrainSkipped | SourceModelMeta:
    return cast(PretrainSkipped | SourceModelMeta, _function("pretrain", "pretrain")(params, progress))


def _similarity(params: Params, progress: bool | None = None) -> SimilarityReport:
    return cast(SimilarityReport, _function("similarity", "measure_similarity")(params, progress))


def _plan(params: Params, progress: bool | None = None) -> PlanReport:
    return cast(PlanReport, _function("plan", "make_plan")(params, progress))


def _train(params: Params, progress: bool | None = None) -> TrainReport:
    return cast(TrainReport, _function("train", "train_stage")(params, progress))


def _evaluate(params: Params, progress: bool | None = None) -> MetricsReport:
    return cast(MetricsReport, _function("evaluate", "evaluate")(params, progress))


def _register(params: Params, progress: bool | None = None) -> RegistrationReport:
    return cast(RegistrationReport, _function("register", "register")(params, progress))


VALIDATE = Stage(
    "validate",
    "scan the source and target domains and check them with Great Expectations",
    lambda p: [resolve_domain(p.data, name) for name in (p.data.source, p.data.target) if name is not None],
    _reports(VALIDATION_JSON, VALIDATION_MD, MANIFEST_CSV),
    ("data", "validation", "reports"),
    ("stages/validate.py", "stages/validate_checks.py", "io", "artifacts"),
    _validate,
)
PRETRAIN = Stage(
    "pretrain",
    "train the backbone on the source domain when no pretrained weights are given",
    _reports(MANIFEST_CSV),
    _source_model,
    ("backbone", "pretrain", "data.alpha_background"),
    ("stages/pretrain.py", *TRAINING, "artifacts"),
    _pretrain,
)
SIMILARITY = Stage(
    "similarity",
    "measure how far the target is from the source on cached features",
    _both(_reports(MANIFEST_CSV), _source_model),
    _reports(SIMILARITY_JSON),
    ("backbone", "similarity", "data.alpha_background"),
    ("stages/similarity.py", "analysis/similarity.py", "analysis/metrics.py", "models", "io", "artifacts"),
    _similarity,
)
PLAN = Stage(
    "plan",
    "rank the transfer strategies and choose one, with reasons",
    _reports(VALIDATION_JSON, SIMILARITY_JSON),
    _reports(PLAN_JSON),
    (
        "strategy",
        "backbone",
        "train.epochs",
        "train.min_steps",
        "train.min_epochs",
        "train.batch_size",
        "train.min_val_per_class",
        "train.time_budget",
        "train.device",
    ),
    # TRAINING too: a time budget is fitted by timing the strategy's own steps (engine/warmup.py)
    (
        "stages/plan.py",
        "analysis/planning.py",
        "analysis/preferences.py",
        "analysis/signals.py",
        *TRAINING,
        "artifacts",
    ),
    _plan,
)
TRAIN = Stage(
    "train",
    "train the chosen strategy",
    _both(_reports(MANIFEST_CSV, PLAN_JSON), _source_model),
    _both(_model(MODEL_FILE, META_FILE), _reports(TRAIN_JSON, TRAIN_HISTORY_CSV)),
    ("train", "strategy.mode", "strategy.force", "strategy.top_k", "data.alpha_background"),
    ("stages/train.py", "stages/torchrun.py", "ops/launch.py", *TRAINING, "analysis/health.py", "artifacts"),
    _train,
)
EVALUATE = Stage(
    "evaluate",
    "score the model on the target test split",
    _both(_reports(MANIFEST_CSV), _model(MODEL_FILE, META_FILE)),
    _reports(METRICS_JSON, PREDICTIONS_CSV, PLOTS_DIR),
    (),
    ("stages/evaluate.py", "analysis/metrics.py", "models", "io", "artifacts"),
    _evaluate,
)
REGISTER = Stage(
    "register",
    "register the model in MLflow and promote it if it beats the champion",
    _both(_model(MODEL_FILE, META_FILE), _reports(METRICS_JSON, TRAIN_JSON)),  # train.json: its health
    _reports(REGISTRATION_JSON, REPORT_HTML),
    ("registry",),
    (
        "stages/register.py",
        "stages/report.py",
        "stages/report_html.py",
        "registry",
        "serving",
        "analysis/metrics.py",
        "engine/listeners.py",  # registry/tracking's hook into training; names no training code
        "models",
        "io",
        "artifacts",
    ),
    _register,
    service=True,
)

# The order dvc.yaml and the flow follow.
STAGES: tuple[Stage[Report], ...] = (VALIDATE, PRETRAIN, SIMILARITY, PLAN, TRAIN, EVALUATE, REGISTER)


def stages_before(last: Stage[Report], params: Params, progress: bool | None = None) -> list[Report]:
    """Run every stage before ``last``, in order (e.g. ``stages_before(TRAIN, params)``: what train reads)."""
    return [stage.run(params, progress) for stage in STAGES[: STAGES.index(last)]]


def stage_names() -> list[str]:
    return [stage.name for stage in STAGES]


def stage(name: str) -> Stage[Report]:
    return next(s for s in STAGES if s.name == name)


def content_hash(paths: list[Path]) -> str:
    """sha256 over the files at ``paths`` (folders: every file below, by relative path); missing counts too."""
    digest = hashlib.sha256()
    for path in paths:
        # Names as the file system's bytes: one that is not UTF-8 hashes too (str.encode refuses it).
        digest.update(b"\0" + os.fsencode(path.as_posix()) + b"\0")
        files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
        for file in files:
            if not file.exists():
                digest.update(b"<missing>")
                continue
            digest.update(os.fsencode(file.relative_to(path).as_posix()) if path.is_dir() else b"")
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


def stage_key(name: str, params: Params) -> str:
    """What a stage's result depends on: its input files' contents, its params, its code."""
    spec = stage(name)
    payload = json.dumps(
        {
            "stage": name,
            "params": params_slice(params, spec.params),
            "code": code_version(name),
            "inputs": content_hash(spec.inputs(params)),
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def code_files(name: str) -> list[Path]:
    """The ``*.py`` files of the stage's declared code, sorted (folders recursively)."""
    files: set[Path] = set()
    for entry in stage(name).code:
        path = PACKAGE / entry
        if path.is_dir():
            files |= set(path.rglob("*.py"))
        elif path.is_file():
            files.add(path)
        else:
            raise FileNotFoundError(f"stage {name!r} declares code {entry!r}, which is not in {PACKAGE}")
    return sorted(files)


@cache
def code_version(name: str) -> str:
    """Hash of the code the stage runs (paths relative to the package, and contents)."""
    digest = hashlib.sha256()
    for file in code_files(name):
        digest.update(f"\0{file.relative_to(PACKAGE).as_posix()}\0{sha256_file(file)}".encode())
    return digest.hexdigest()


STAMPS = ".stages"


def _stamp_path(name: str, params: Params) -> Path:
    return Path(params.reports.dir) / STAMPS / f"{name}.json"


def write_stamp(name: str, params: Params, key: str) -> None:
    """Record which key produced the stage's outputs now on disk, and their hash."""
    from autotransfer.io.files import write_json

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
