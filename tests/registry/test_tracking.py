"""Live tracking: one MLflow run per pipeline run, written while the stages run (real SQLite store)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from autotransfer.cli import main
from autotransfer.config import registered_model_name
from conftest import make_domain
from stage_helpers import tiny_params

pytestmark = pytest.mark.slow
STAGES = ("validate", "pretrain", "similarity", "plan", "train", "evaluate", "register")


def overrides(params) -> list[str]:
    return [f"-S{key}={value}" for key, value in {
        "data.root": params.data.root, "data.source": "src", "data.target": "tgt",
        "backbone.arch": "small_cnn", "backbone.weights": "null", "backbone.input_size": 32,
        "pretrain.out": params.pretrain.out, "pretrain.epochs": 2, "pretrain.batch_size": 8,
        "train.out": params.train.out, "train.floor": "false", "train.epochs": 3, "train.batch_size": 4, "train.patience": 0,
        "train.min_val_per_class": 1,  # 2 val images per class: let them choose, so there are val curves
        "reports.dir": params.reports.dir, "validation.state_dir": params.validation.state_dir,
        "data.decoded_cache": params.data.decoded_cache, "similarity.n_per_domain": 20,
        "similarity.max_labeled": 100, "similarity.probe_folds": 2, "similarity.cache_dir": params.similarity.cache_dir,
        "registry.tracking_uri": params.registry.tracking_uri, "registry.system_metrics_interval": 0.2,
        "strategy.force": "finetune_all",
    }.items()] + ["--no-progress"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Every stage through the CLI, as `dvc repro` runs them; when register started."""
    work = tmp_path_factory.mktemp("tracking")
    make_domain(work / "data", "src", seed=1)
    make_domain(work / "data", "tgt", seed=2)
    params = tiny_params(work / "data", work, registry={"tracking_uri": f"sqlite:///{work}/mlflow.db"})
    args = overrides(params)
    started = {}
    for stage in STAGES:
        started[stage] = time.time() * 1000
        assert main([stage, *args]) == 0, stage
    started["done"] = time.time() * 1000
    return params, args, started


def runs(params) -> list:
    client = MlflowClient(params.registry.tracking_uri)
    experiment = client.get_experiment_by_name(params.registry.experiment)
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


def test_one_run_holds_every_stage_epochs_live_datasets_system_metrics_and_the_model(pipeline):
    params, _, started = pipeline
    client = MlflowClient(params.registry.tracking_uri)
    # the runs the pipeline opened: the module's other tests add theirs, and xdist's worksteal may run them first
    every = [r for r in runs(params) if r.info.start_time <= started["done"]]
    parents = [r for r in every if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in every]
    run = parents[0]
    # the run was opened by the first stage and ended by register, which attached the model to it
    assert run.data.tags["opened_by"] == "validate" and run.info.status == "FINISHED"
    version = client.get_model_version(registered_model_name(params), run.data.tags["registered_version"])
    assert version.run_id == run.info.run_id
    # one val accuracy point per epoch, at the global step, written while train ran (before evaluate)
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert [m.step for m in history] == sorted(m.step for m in history) and len(history) == 3
    assert len({m.step for m in history}) == 3 and history[0].step > 1
    assert all(started["train"] < m.timestamp < started["evaluate"] for m in history)
    assert client.get_metric_history(run.info.run_id, "test_accuracy")
    # the datasets: the manifest's rows per context, with their digest and source
    inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"training", "validation", "test"}
    assert all(d.digest and Path(params.data.root).name in d.source for d in inputs.values())
    # CPU and memory while the stages ran
    assert any(key.startswith("system/cpu_utilization") for key in run.data.metrics), sorted(run.data.metrics)
    assert any(key.startswith("system/system_memory") for key in run.data.metrics)
    # pretraining has its own nested run with its curve
    nested = [r for r in every if r.data.tags.get("mlflow.parentRunId") == run.info.run_id]
    assert len(nested) == 1 and nested[0].info.run_name.startswith("pretrain ")
    assert len(client.get_metric_history(nested[0].info.run_id, "train_loss")) == 2


def test_a_failing_stage_ends_its_run_failed_with_the_error_and_the_next_run_starts_fresh(pipeline):
    params, args, _ = pipeline
    before = {r.info.run_id for r in runs(params)}
    model = Path(params.train.out) / "model.safetensors"
    kept = model.read_bytes()
    model.unlink()  # a broken rerun: evaluate finds no model
    try:
        assert main(["evaluate", *args]) == 1
    finally:
        model.write_bytes(kept)
    failed = [r for r in runs(params) if r.info.run_id not in before]
    assert len(failed) == 1 and failed[0].info.status == "FAILED"
    assert failed[0].data.tags["opened_by"] == "evaluate" and "evaluate:" in failed[0].data.tags["error"]


def test_race_candidates_are_nested_runs_with_their_curves(pipeline):
    params, args, _ = pipeline
    before = {r.info.run_id for r in runs(params)}
    race = [a for a in args if not a.startswith("-Sstrategy.force")]
    assert main(["train", *race, "-Sstrategy.mode=race", "-Sstrategy.top_k=2", "-Strain.epochs=2"]) == 0
    new = [r for r in runs(params) if r.info.run_id not in before]
    parent = next(r for r in new if "mlflow.parentRunId" not in r.data.tags)
    children = [r for r in new if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2 and {r.data.tags["candidate"] for r in children} == {r.info.run_name for r in children}
    client = MlflowClient(params.registry.tracking_uri)
    assert all(client.get_metric_history(r.info.run_id, "val_accuracy") for r in children)
    assert {client.get_run(r.info.run_id).info.status for r in children} == {"FINISHED"}  # ended with train
    # the pipeline run gets the winner's whole curve
    winner = parent.data.tags["candidate"]
    assert len(client.get_metric_history(parent.info.run_id, "val_accuracy")) == 2, winner
    assert parent.info.status == "RUNNING"  # evaluate and register would follow


def test_live_tracking_off_writes_nothing_before_register(tmp_path, pipeline):
    params, args, _ = pipeline
    count = len(runs(params))
    assert main(["plan", *args, "-Sregistry.live_tracking=false"]) == 0
    assert len(runs(params)) == count


STOP_WHILE_LOGGING = """
import faulthandler, os, random, signal, sys, threading, time
from mlflow import MlflowClient
from autotransfer.config import Params
from autotransfer.ops.stopping import RunStopped, handling
from autotransfer.registry.tracking import Tracker

uri = sys.argv[1]
client = MlflowClient(uri)
experiment = client.create_experiment("stops")
random.seed(0)
for trial in range(8):
    run_id = client.create_run(experiment).info.run_id
    tracker = Tracker(Params(), uri, run_id)
    # the signal lands at a random point of a loop that is nearly all MLflow writes, as the stop of
    # `autotransfer run` lands right after an epoch's checkpoint, while the epoch is being logged
    timer = threading.Timer(random.uniform(0.005, 0.05), os.kill, (os.getpid(), signal.SIGTERM))
    epochs = 0
    try:
        with handling():
            timer.start()
            while True:
                tracker.log_epoch("model", {"epoch": epochs, "train_loss": 0.5}, epochs, on_parent=True)
                epochs += 1
    except RunStopped:
        pass
    timer.join()
    faulthandler.dump_traceback_later(15, exit=True)  # a store left locked: say where, and end
    started = time.monotonic()
    tracker.end("KILLED", "stopped by SIGTERM during train")
    faulthandler.cancel_dump_traceback_later()
    status = client.get_run(run_id).info.status
    print(trial, epochs, round(time.monotonic() - started, 2), status, flush=True)
"""


def test_a_stop_signal_during_a_live_tracking_write_leaves_the_store_writable(tmp_path):
    # A SIGTERM that cut an MLflow write to SQLite in two left the database locked; the write that ends the
    # run KILLED then waited until the stop's watchdog killed the process at 10 s, with the flow run left
    # RUNNING (seen in CI, under load: tests/test_stop_signals.py). Writes now run whole.
    script = tmp_path / "stop_while_logging.py"
    script.write_text(STOP_WHILE_LOGGING)
    result = subprocess.run([sys.executable, str(script), f"sqlite:///{tmp_path}/mlflow.db"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = [line.split() for line in result.stdout.splitlines()]
    assert len(trials) == 8, result.stdout
    for trial, epochs, seconds, status in trials:
        assert status == "KILLED" and float(seconds) < 5, trials  # ended at once, the run marked as stopped
    assert sum(int(epochs) for _, epochs, _, _ in trials) > 0  # the signal came while it wrote
