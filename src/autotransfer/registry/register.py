"""Register a pipeline run: log it, register the model, decide on the champion.

``register`` logs the pipeline run (params, per-epoch metrics, reports, plots, lineage
tags), logs the trained model as a pyfunc that takes raw images, registers it as a new
version with alias ``challenger``, re-scores the current ``champion`` on the same target
test split and moves ``champion`` only when the challenger wins by ``registry.min_delta``.
Every decision is written as version tags and to ``reports/registration.json``.

Safety: the champion alias moves in one call, last; anything failing before it leaves
the champion as it was. A version is keyed by the sha256 of its weights, so re-running
after a failure (or re-running an unchanged pipeline) never registers a duplicate.
Registrations on the same store are serialised by a file lock (next to a SQLite store,
or per tracking URI on this machine for a server).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.entities.model_registry import ModelVersion

from autotransfer.analysis.metrics import classification_metrics
from autotransfer.artifacts import (
    META_FILE,
    METRICS_JSON,
    MODEL_FILE,
    PLAN_JSON,
    PLOTS_DIR,
    REGISTRATION_JSON,
    SIMILARITY_JSON,
    TRAIN_HISTORY_CSV,
    TRAIN_JSON,
    VALIDATION_JSON,
    VALIDATION_MD,
    HealthReport,
    MetricsReport,
    RegistrationReport,
    TargetModelMeta,
    TrainReport,
    read_report,
)
from autotransfer.config import Params, model_params_hash, registered_model_name
from autotransfer.errors import RegistryError, StageInputError
from autotransfer.io.data import class_names, data_hash, domain_rows, read_manifest
from autotransfer.io.files import write_report
from autotransfer.io.git import git_commit
from autotransfer.io.images import sha256_file
from autotransfer.models.weights import load_trained_model
from autotransfer.registry.integrity import record as record_files
from autotransfer.registry.integrity import verified_copy
from autotransfer.registry.promotion import decide, health_veto
from autotransfer.registry.pyfunc import MODEL_CODE, REQUIREMENTS, SIGNATURE, encode_images
from autotransfer.registry.store import (
    CHALLENGER,
    CHAMPION,
    alias_version,
    connect,
    ensure_experiment,
    mlflow_prints_nothing,
    set_version_tags,
    utc_now,
    without_secret,
)
from autotransfer.registry.tracking import current_run
from autotransfer.registry.versions import class_set_tag, find_version, other_target

PACKAGE = Path(__file__).resolve().parents[1]  # src/autotransfer: the model carries its code
RUN_ARTIFACTS = (
    PLAN_JSON,
    SIMILARITY_JSON,
    VALIDATION_JSON,
    VALIDATION_MD,
    METRICS_JSON,
    TRAIN_JSON,
    TRAIN_HISTORY_CSV,
)


# --------------------------------------------------------------------------- register


@dataclass(frozen=True)
class RunInputs:
    model_dir: Path
    model_hash: str
    meta: TargetModelMeta
    metrics: MetricsReport
    test_paths: list[Path]
    test_truth: np.ndarray
    classes: tuple[str, ...]
    data_hash: str
    health: HealthReport | None  # train.json's label-free checks (None: no train.json)


def read_inputs(params: Params) -> RunInputs:
    model_dir, reports = Path(params.train.out), Path(params.reports.dir)
    trained = load_trained_model(model_dir)  # raises StageInputError when there is no model
    model_hash = sha256_file(model_dir / MODEL_FILE)
    metrics_path = reports / METRICS_JSON
    metrics = read_report(metrics_path, MetricsReport, "evaluate")
    if metrics.model_sha256 != model_hash:
        raise StageInputError(
            f"{metrics_path} scores another model than {model_dir}/model.safetensors; rerun `autotransfer evaluate`"
        )
    manifest = read_manifest(reports)
    target = params.data.target
    test = domain_rows(manifest, target, ("test",)).sort_values("path")
    if test.empty:
        raise StageInputError(f"target {target!r} has no readable test images to score on")
    return RunInputs(
        model_dir,
        model_hash,
        trained.meta,
        metrics,
        [Path(p) for p in test["path"]],
        test["label"].to_numpy(dtype=object),
        class_names(manifest, target),
        data_hash(manifest),
        read_report(train_path, TrainReport, "train").health if (train_path := reports / TRAIN_JSON).exists() else None,
    )


# Test images sent to the served model per call: the base64 of a whole large test split at once
# would be held in memory twice (the frame and the model's decoded batch).
SCORE_BATCH = 256


def score_model(client: MlflowClient, model_uri: str, inputs: RunInputs, metric: str) -> float:
    """Load ``model_uri`` as served (its files checked first) and score it on the current target test
    split, ``SCORE_BATCH`` images a call."""
    with tempfile.TemporaryDirectory() as tmp:
        model = mlflow.pyfunc.load_model(str(verified_copy(client, model_uri, Path(tmp))))
    paths = inputs.test_paths
    batch = min(SCORE_BATCH, model.unwrap_python_model().limits.max_images)  # within what the version serves
    answers = pd.concat(
        [model.predict(encode_images(paths[start : start + batch])) for start in range(0, len(paths), batch)],
        ignore_index=True,
    )
    failed = answers["error"][answers["error"] != ""] if "error" in answers else pd.Series(dtype=object)
    if len(failed):
        raise RegistryError(f"{model_uri} labeled {len(failed)} test image(s) not at all: {failed.iloc[0]}")
    predicted = answers["label"].to_numpy(dtype=object)
    return float(classification_metrics(inputs.test_truth, predicted, inputs.classes)[metric])


def _judge(
    params: Params,
    client: MlflowClient,
    name: str,
    number: str,
    champion: ModelVersion | None,
    champion_number: str | None,
    inputs: RunInputs,
) -> tuple[bool, str, float, float | None]:
    """Promote or not, why, and both scores (the champion's None where it was not scored)."""
    metric = params.registry.metric
    # The challenger is scored as loaded back from the registry: a version that does not load never wins.
    challenger_score = score_model(client, f"models:/{name}/{number}", inputs, metric)
    champion_score: float | None
    elsewhere = other_target(champion, params.data.target, inputs.classes) if champion is not None else None
    if champion_number == number:
        promote, reason, champion_score = False, f"version {number} is already the champion", challenger_score
    elif elsewhere:
        promote, champion_score = False, None
        reason = (
            f"champion v{champion_number} {elsewhere}: models of different targets never compete, and this "
            f"run leaves it in place (registry.model_name with {{target}} gives each target its own champion)"
        )
    else:
        champion_score = (
            score_model(client, f"models:/{name}/{champion_number}", inputs, metric)
            if champion_number is not None
            else None
        )
        decision = decide(metric, challenger_score, champion_score, champion_number, params.registry.min_delta)
        promote, reason = decision.promote, decision.reason
        health = inputs.health
        veto = health_veto(health.collapsed, health.gates_promotion, health.verdict) if health else None
        if promote and veto:
            promote, reason = False, veto
    return promote, reason, challenger_score, champion_score


def register(params: Params) -> RegistrationReport:
    started = time.perf_counter()
    config = params.registry
    name = registered_model_name(params)
    inputs = read_inputs(params)
    with connect(config) as (uri, client):
        version = find_version(client, name, inputs.model_hash)
        already = version is not None
        if version is None:
            version = _log_and_register(params, client, uri, inputs)
        number = str(version.version)
        if already:
            _close_live_run(params, client, uri, number)
        client.set_registered_model_alias(name, CHALLENGER, number)
        champion = alias_version(client, name, CHAMPION)
        champion_number = str(champion.version) if champion is not None else None
        metric = config.metric
        promote, reason, challenger_score, champion_score = _judge(
            params, client, name, number, champion, champion_number, inputs
        )
        record = {
            "decision": "promoted" if promote else "kept",
            "reason": reason,
            "metric": metric,
            "challenger_score": f"{challenger_score:.6f}",
            "champion_version": champion_number or "",
            "champion_score": "" if champion_score is None else f"{champion_score:.6f}",
            "min_delta": str(config.min_delta),
            "test_set_hash": inputs.metrics.test_set_hash,
            "decided_at": utc_now(),
        }
        if promote:
            record["previous_champion"] = champion_number or ""
        if champion_number != number:  # the champion keeps the record of how it won
            set_version_tags(client, name, number, record)
        if promote:
            client.set_registered_model_alias(name, CHAMPION, number)  # the one atomic switch
        # Last, after the decision and the alias: the tags by which a later run finds these data and params
        # already trained and skips (already_trained). A register stopped before this point
        # leaves a version no run skips on, so the next run decides on it.
        set_version_tags(
            client, name, number, {"data_hash": inputs.data_hash, "params_hash": model_params_hash(params)}
        )
        champion_now = alias_version(client, name, CHAMPION)
        experiment_id = client.get_run(version.run_id).info.experiment_id if version.run_id else None
    report = RegistrationReport.model_validate(
        {
            "tracking_uri": without_secret(uri),
            "model_name": name,
            "version": number,
            "model_uri": f"models:/{name}/{number}",
            "run_id": version.run_id,
            "already_registered": already,
            **{key: record[key] for key in ("decision", "reason", "metric", "test_set_hash")},
            "min_delta": config.min_delta,
            "challenger_score": challenger_score,
            "champion_before": champion_number,
            "champion_score": champion_score,
            "champion": str(champion_now.version) if champion_now is not None else None,
            "model_sha256": inputs.model_hash,
            "data_hash": inputs.data_hash,
            "seconds": round(time.perf_counter() - started, 2),
            "experiment_id": experiment_id,
        }
    )
    write_report(Path(params.reports.dir) / REGISTRATION_JSON, report)
    return report


def attach_report(params: Params, run_id: str, path: Path) -> None:
    """``reports/report.html`` onto the run that holds the registered version."""
    with connect(params.registry, exclusive=False) as (_, client):
        client.log_artifact(run_id, str(path), artifact_path="reports")


def _close_live_run(params: Params, client: MlflowClient, uri: str, number: str) -> None:
    """The pipeline run trained weights already registered: it says which version, and ends."""
    live = current_run(params, uri) if params.registry.live_tracking else None
    if live:
        client.set_tag(live, "registered_version", f"{number} (these weights were registered before)")
        client.set_terminated(live, "FINISHED")


# A class set longer than this is tagged by its hash (MLflow caps a tag value at 5,000 characters).
def _log_and_register(params: Params, client: MlflowClient, uri: str, inputs: RunInputs) -> ModelVersion:
    reports = Path(params.reports.dir)
    meta = inputs.meta
    tags = {
        "strategy": meta.strategy,
        "candidate": meta.candidate,
        "backbone": meta.arch,
        "source": params.data.source or "",
        "target": params.data.target,
        "classes": class_set_tag(inputs.classes),
        "dvc_data_md5": _dvc_md5(params.data.root),
        "git_commit": git_commit(),
        "test_set_hash": inputs.metrics.test_set_hash,
        "model_sha256": inputs.model_hash,
    }
    experiment_id = ensure_experiment(client, uri, params.registry.experiment)
    live = current_run(params, uri) if params.registry.live_tracking else None  # the pipeline run, if open
    run_name = f"{meta.strategy}-{params.data.target}"
    with (
        mlflow.start_run(run_id=live, tags={**tags, "mlflow.runName": run_name})
        if live
        else mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags)
    ) as run:
        run_id = run.info.run_id
        logged = params.model_dump(mode="json")
        if logged["registry"]["tracking_uri"]:  # a token in the URI is not a parameter to keep
            logged["registry"]["tracking_uri"] = without_secret(logged["registry"]["tracking_uri"])
        mlflow.log_params(_flatten(logged))
        if not client.get_metric_history(run_id, "val_accuracy"):  # not written live
            _log_history(client, run_id, reports / TRAIN_HISTORY_CSV)
        mlflow.log_metrics(
            {
                f"test_{key}": value
                for key, value in (("accuracy", inputs.metrics.accuracy), ("macro_f1", inputs.metrics.macro_f1))
                if value is not None
            }
        )
        for name in RUN_ARTIFACTS:
            if (reports / name).exists():
                mlflow.log_artifact(str(reports / name), artifact_path="reports")
        if (reports / PLOTS_DIR).is_dir():
            mlflow.log_artifacts(str(reports / PLOTS_DIR), artifact_path="reports/plots")
        with tempfile.TemporaryDirectory() as tmp:
            model_files = Path(tmp) / "model"
            model_files.mkdir()
            for name in (MODEL_FILE, META_FILE):
                shutil.copy2(inputs.model_dir / name, model_files / name)
            model_code = Path(tmp) / "image_classifier.py"
            model_code.write_text(MODEL_CODE)
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(model_code),  # code, not a pickle
                artifacts={"model": str(model_files)},
                code_paths=[str(PACKAGE)],  # the model carries its preprocessing code
                signature=SIGNATURE,
                model_config=params.registry.serving.model_dump(),  # the served version's limits
                input_example=encode_images(inputs.test_paths[:1]),
                pip_requirements=[f"{name}=={metadata.version(name)}" for name in REQUIREMENTS],
                metadata={
                    "class_names": list(meta.head_classes),
                    "input_size": meta.input_size,
                    "normalization": meta.normalization.model_dump(),
                    "input": "column 'image': base64 image files",
                },
            )
    name = registered_model_name(params)
    with mlflow_prints_nothing():
        # Not yet data_hash / params_hash: register writes them after its decision.
        version = mlflow.register_model(info.model_uri, name, tags=tags)
    with tempfile.TemporaryDirectory() as tmp:  # the files as the store holds them, hashed (registry/integrity.py)
        record_files(client, name, str(version.version), f"models:/{name}/{version.version}", Path(tmp))
    client.set_tag(run_id, "registered_version", str(version.version))
    return client.get_model_version(name, version.version)


def _log_history(client: MlflowClient, run_id: str, history_csv: Path) -> None:
    if not history_csv.exists() or history_csv.stat().st_size == 0:
        return
    history = pd.read_csv(history_csv)
    stamp = int(time.time() * 1000)
    metrics = [
        Metric(column, float(value), stamp, int(row["epoch"]))
        for _, row in history.iterrows()
        for column, value in row.items()
        if column not in ("epoch", "phase") and isinstance(value, (int, float)) and np.isfinite(value)
    ]
    for start in range(0, len(metrics), 1000):  # MLflow's per-request limit
        client.log_batch(run_id, metrics=metrics[start : start + 1000])


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in tree.items():
        if (
            isinstance(value, dict)
            and value
            and all(isinstance(k, str) for k in value)
            and key != "augment_per_strategy"
        ):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return flat


def _dvc_md5(root: str) -> str:
    pointer = Path(f"{root.rstrip('/')}.dvc")
    try:
        outs = yaml.safe_load(pointer.read_text())["outs"]
        return str(outs[0]["md5"])
    except (OSError, KeyError, IndexError, TypeError, yaml.YAMLError):
        return "untracked"
