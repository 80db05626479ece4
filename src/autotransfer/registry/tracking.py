"""Live tracking: one MLflow run per pipeline run, written to while the stages run.

The run is opened when a pipeline run starts (the flow opens a new one; under `dvc repro`
the first stage that runs opens one) and its id is kept in ``reports/tracking.json``, so
every later stage, in this process or another, attaches to it while it is RUNNING. The
stages write what they know as they go: the datasets (``mlflow.log_input``: the manifest
rows of each split, digest = their data hash, source = the data root), each epoch's
metrics as the epoch ends (step = the global optimizer step), each race candidate and the
source pretraining as nested runs with their own curves, and CPU, memory (GPU through
nvidia-ml-py when there is one) while a stage runs. A stage that fails ends the run FAILED
with the error; ``register`` attaches the model and its version and ends it FINISHED.

Tracking never stops training: a store that cannot be written is reported once and the
stage goes on untracked (``register`` still writes the whole run at the end). With
``registry.live_tracking: false`` every call here does nothing.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
from mlflow import MlflowClient
from mlflow.data.pandas_dataset import from_pandas
from mlflow.entities import DatasetInput, InputTag, Metric, RunStatus
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from autotransfer.artifacts import (
    MANIFEST_CSV,
    TRACKING_JSON,
    TRAIN_HISTORY_CSV,
    MetricsReport,
    Report,
    TrainReport,
    ValidationReport,
)
from autotransfer.config import Params
from autotransfer.engine.listeners import listening
from autotransfer.errors import RegistryError
from autotransfer.io.data import data_hash, read_manifest
from autotransfer.io.files import write_json
from autotransfer.registry.store import connect, ensure_experiment, mlflow_environment, utc_now, without_secret

log = logging.getLogger(__name__)
NOT_LOGGED = ("epoch", "phase")  # history columns that are the step, not metrics


class Tracker:
    """The pipeline run's live writer; inert (every method a no-op) when ``run_id`` is None."""

    def __init__(self, params: Params, uri: str | None = None, run_id: str | None = None) -> None:
        self.params, self.uri, self.run_id = params, uri, run_id
        self.client = MlflowClient(tracking_uri=uri) if uri else None
        self._children: dict[str, str] = {}
        self._logged: set[tuple[str, int]] = set()  # (label, epoch) already on a run
        self.steps_per_epoch: dict[str, int] = {}

    @property
    def active(self) -> bool:
        return self.run_id is not None

    def _safely(self, what: str, action: Callable[[MlflowClient, str], object]) -> None:
        if self.client is None or self.run_id is None:
            return
        try:
            with mlflow_environment(str(self.uri), self.params.registry):
                action(self.client, self.run_id)
        except Exception as exc:  # a tracking hiccup must not cost the training; register writes the run later
            log.warning(
                "live tracking off for the rest of this stage: %s failed (%s: %s)", what, type(exc).__name__, exc
            )
            self.client = None

    # ----------------------------------------------------------------- what the stages write

    def log_epoch(self, label: str, record: dict[str, Any], step: int, on_parent: bool) -> None:
        """One epoch of ``label``: on the pipeline run (``on_parent``) or on the label's nested run."""
        key = (label if not on_parent else "", int(record["epoch"]))
        if key in self._logged:
            return
        self._logged.add(key)

        def write(client: MlflowClient, run_id: str) -> None:
            target = run_id if on_parent else self._child(client, run_id, label)
            client.log_batch(target, metrics=_metrics(record, step))

        self._safely(f"logging epoch {record['epoch']} of {label}", write)

    def log_history(self, label: str, history: list[dict[str, Any]], steps_per_epoch: int) -> None:
        """The epochs of ``label`` not logged live (run before a resume) onto the pipeline run."""
        for record in history:
            self.log_epoch(label, record, int(record["epoch"]) * steps_per_epoch, on_parent=True)

    def log_metrics(self, metrics: dict[str, float | None]) -> None:
        values = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        stamp = int(time.time() * 1000)
        self._safely(
            "logging metrics",
            lambda client, run_id: client.log_batch(
                run_id, metrics=[Metric(k, v, stamp, 0) for k, v in values.items()]
            ),
        )

    def set_tags(self, tags: dict[str, Any]) -> None:
        def write(client: MlflowClient, run_id: str) -> None:
            for key, value in tags.items():
                client.set_tag(run_id, key, str(value))

        self._safely("setting tags", write)

    def log_dataset(self, rows: pd.DataFrame, name: str, context: str) -> None:
        """Manifest rows as an MLflow dataset input of the run (digest: their data hash)."""
        if rows.empty:
            return

        def write(client: MlflowClient, run_id: str) -> None:
            table = rows[["path", "domain", "split", "label", "usage", "sha256"]].reset_index(drop=True)
            dataset = from_pandas(
                table, source=str(Path(self.params.data.root).resolve()), name=name, digest=data_hash(rows)[:16]
            )
            # what mlflow.log_input writes, without making this run the process's active run
            tags = [InputTag(MLFLOW_DATASET_CONTEXT, context)]
            client.log_inputs(run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags)])

        self._safely(f"logging the {context} dataset", write)

    def end_children(self, status: str = "FINISHED") -> None:
        """The nested runs (pretraining, race candidates) are over."""

        def write(client: MlflowClient, run_id: str) -> None:
            for child in self._children.values():
                client.set_terminated(child, status)

        self._safely(f"ending the nested runs {status}", write)

    def end(self, status: str, error: str | None = None) -> None:
        def write(client: MlflowClient, run_id: str) -> None:
            if error:
                client.set_tag(run_id, "error", error[:5000])
            for child in self._children.values():
                client.set_terminated(child, status)
            client.set_terminated(run_id, status)

        self._safely(f"ending the run {status}", write)

    def _child(self, client: MlflowClient, parent: str, label: str) -> str:
        if label not in self._children:
            found = client.search_runs(
                [client.get_run(parent).info.experiment_id],
                f"tags.mlflow.parentRunId = '{parent}' and tags.candidate = '{label}'",
            )
            self._children[label] = (
                found[0].info.run_id
                if found
                else client.create_run(
                    client.get_run(parent).info.experiment_id,
                    run_name=label,
                    tags={"mlflow.parentRunId": parent, "candidate": label},
                ).info.run_id
            )
        return self._children[label]


def _metrics(record: dict[str, Any], step: int) -> list[Metric]:
    stamp = int(time.time() * 1000)
    return [Metric("epoch", float(record["epoch"]), stamp, step)] + [
        Metric(key, float(value), stamp, step)
        for key, value in record.items()
        if key not in NOT_LOGGED and isinstance(value, int | float) and math.isfinite(float(value))
    ]


# --------------------------------------------------------------------------- the pipeline run


def _pointer(params: Params) -> Path:
    return Path(params.reports.dir) / TRACKING_JSON


def current_run(params: Params, uri: str) -> str | None:
    """The pipeline run's id from reports/tracking.json, if it is on ``uri`` and still RUNNING."""
    import json

    try:
        pointer = json.loads(_pointer(params).read_text())
    except (OSError, ValueError):
        return None
    if pointer.get("tracking_uri") != without_secret(uri) or not pointer.get("run_id"):
        return None
    try:
        run = MlflowClient(tracking_uri=uri).get_run(pointer["run_id"])
    except Exception:  # deleted, another store: a new run is opened
        return None
    return run.info.run_id if run.info.status == RunStatus.to_string(RunStatus.RUNNING) else None


def attach(params: Params, stage: str, fresh: bool = False) -> Tracker:
    """The pipeline run this stage writes to (a new one when ``fresh`` or none is RUNNING)."""
    if not params.registry.live_tracking:
        return Tracker(params)
    try:
        with connect(params.registry, exclusive=False) as (uri, client):
            run_id = None if fresh else current_run(params, uri)
            if run_id is None:
                experiment = ensure_experiment(client, uri, params.registry.experiment)
                run_id = client.create_run(
                    experiment,
                    run_name=f"{params.data.target} {utc_now()}",
                    tags={
                        "source": params.data.source or "",
                        "target": params.data.target,
                        "opened_by": stage,
                    },
                ).info.run_id
                write_json(
                    _pointer(params),
                    {"tracking_uri": without_secret(uri), "run_id": run_id, "opened_by": stage, "opened_at": utc_now()},
                )
    except (RegistryError, OSError) as exc:
        log.warning("live tracking off for %s: %s", stage, exc)
        return Tracker(params)
    return Tracker(params, uri, run_id)


def begin(params: Params, tags: dict[str, str] | None = None) -> Tracker:
    """A new pipeline run (what the flow does when it starts)."""
    tracker = attach(params, "flow", fresh=True)
    tracker.set_tags(tags or {})
    return tracker


@contextlib.contextmanager
def stage(params: Params, name: str, system_metrics: bool = True) -> Iterator[Tracker]:
    """Attach ``name`` to the pipeline run; its system metrics while it runs; FAILED if it fails."""
    tracker = attach(params, name)
    monitor = _system_monitor(params, tracker) if system_metrics else None
    started = time.perf_counter()
    try:
        yield tracker
    except Exception as exc:
        tracker.end("FAILED", f"{name}: {type(exc).__name__}: {exc}")
        raise
    except BaseException as exc:  # a stop signal (ops.stopping.RunStopped), Ctrl-C: the run was killed
        tracker.end("KILLED", f"{exc or type(exc).__name__} during {name}")
        raise
    else:
        tracker.log_metrics({f"stage_seconds_{name}": time.perf_counter() - started})
        tracker.end_children()
    finally:
        if monitor is not None:
            with contextlib.suppress(Exception):
                monitor.finish()


R = TypeVar("R", bound=Report)


@dataclass
class TrackedStage:
    """A stage running inside ``tracked``: ``ran(report)`` hands its report over (what it adds to the run)."""

    name: str
    tracker: Tracker
    report: Report | None = None

    def ran(self, report: R) -> R:
        """``report`` is the stage's: a failed one (validation) ends the run FAILED, saying why."""
        self.report = report
        failure = report.failed()
        if failure is not None:
            self.tracker.end("FAILED", f"{self.name}: {failure}")
        return report


@contextlib.contextmanager
def tracked(params: Params, name: str) -> Iterator[TrackedStage]:
    """Run stage ``name`` inside this block (the CLI command's, or the flow's task's): it is tracked live."""
    with stage(params, name) as tracker, listening(_epoch_listener(params, name, tracker)):
        running = TrackedStage(name, tracker)
        yield running
    if running.report is not None:
        _after(params, running.report, tracker)


def _epoch_listener(params: Params, name: str, tracker: Tracker) -> Callable[[str, dict[str, Any], int], None]:
    """Where an epoch goes: pretraining and race candidates to nested runs; the one model trained to the run."""
    racing = name == "train" and params.strategy.mode == "race" and params.strategy.force is None
    first: list[str] = []

    def listener(label: str, record: dict[str, Any], step: int) -> None:
        if name == "pretrain":
            tracker.log_epoch(f"pretrain {label}", record, step, on_parent=False)
            return
        first[:] = first or [label]
        tracker.steps_per_epoch[label] = max(1, step // max(1, int(record["epoch"])))
        tracker.log_epoch(label, record, step, on_parent=not racing and label == first[0])

    return listener


def _after(params: Params, report: Report, tracker: Tracker) -> None:
    """What a finished stage adds, by its report: the datasets (validate), the whole curve (train),
    the test scores (evaluate)."""
    if not tracker.active:
        return
    reports = Path(params.reports.dir)
    if isinstance(report, ValidationReport) and (reports / MANIFEST_CSV).exists():
        manifest = read_manifest(reports)  # class names as text ("NA" is a class, not a missing value)
        pair = f"{params.data.source or 'pretraining'}+{params.data.target}"
        for context, usages in (("training", ("train", "unlabeled")), ("validation", ("val",)), ("test", ("test",))):
            tracker.log_dataset(manifest[manifest["usage"].isin(usages)], f"{pair} {context}", context)
    elif isinstance(report, TrainReport):
        tracker.set_tags({"strategy": report.strategy, "candidate": report.candidate, "train_mode": report.mode})
        if (reports / TRAIN_HISTORY_CSV).stat().st_size:  # epochs run before a resume, or a race's winner
            history = pd.read_csv(reports / TRAIN_HISTORY_CSV).to_dict("records")
            tracker.log_history(report.candidate, history, tracker.steps_per_epoch.get(report.candidate, 1))
    elif isinstance(report, MetricsReport):
        tracker.log_metrics({"test_accuracy": report.accuracy, "test_macro_f1": report.macro_f1})


def _system_monitor(params: Params, tracker: Tracker) -> Any:
    if not tracker.active:
        return None
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    try:
        with mlflow_environment(str(tracker.uri), params.registry):  # it reads the run: whole, as every MLflow call
            monitor = SystemMetricsMonitor(
                tracker.run_id,
                sampling_interval=params.registry.system_metrics_interval,
                resume_logging=True,
                tracking_uri=tracker.uri,
            )
            monitor.start()
    except Exception as exc:
        log.warning("no system metrics: %s", exc)
        return None
    return monitor
