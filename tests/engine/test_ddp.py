"""Data-parallel training: torch DDP under torchrun, 2 processes on CPU (gloo)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from mlflow import MlflowClient

from autotransfer.config import params_from_dict
from autotransfer.registry.register import register
from autotransfer.stages.pipeline import TRAIN
from autotransfer.errors import TrainingError
from stage_helpers import plan_ready
from conftest import make_domain
from registry_helpers import demo_params, run_pipeline

pytestmark = [pytest.mark.slow, pytest.mark.scaleout]


def test_two_processes_train_one_model_as_accurate_as_one_process_and_register_it_once(small_demo_root, tmp_path):
    # given the same small demo pipeline, trained by one process and by two (DDP, gloo)
    run_pipeline(demo_params(small_demo_root, tmp_path / "one", train={"epochs": 3, "patience": 0}))
    double = run_pipeline(demo_params(small_demo_root, tmp_path / "two", train={"epochs": 3, "patience": 0,
                                                                            "distributed": 2}))
    # when the two-process model is registered
    decision = register(double).to_json()
    # then both runs finished, the DDP report says 2 processes, and the accuracies agree
    # within seed noise (one image of the 539-image test split is 0.19 pt)
    report = json.loads((tmp_path / "two/reports/train.json").read_text())
    assert report["processes"] == 2 and report["epochs_run"] == 3
    accuracy = {name: json.loads((tmp_path / name / "reports/metrics.json").read_text())["accuracy"]
                for name in ("one", "two")}
    assert accuracy["two"] > 0.5 and abs(accuracy["two"] - accuracy["one"]) < 0.05, accuracy
    # and exactly one version exists: the ranks wrote one model and never registered
    client = MlflowClient(double.registry.tracking_uri)
    versions = client.search_model_versions("name = 'autotransfer-digits'")
    assert len(versions) == 1 and str(decision["version"]) == str(versions[0].version)
    assert not list((tmp_path / "two/reports").glob(".distributed-*"))  # the ranks' params file is gone


def _progressive_config(tmp_path: Path, out: str) -> dict:
    root = tmp_path / "big"
    if not root.exists():
        make_domain(root, "src", n_train=60, seed=1)
        make_domain(root, "tgt", n_train=60, seed=2)
    return {
        "data": {"root": str(root), "source": "src", "target": "tgt"},
        "backbone": {"arch": "small_cnn", "weights": None, "input_size": 32},
        "pretrain": {"out": str(tmp_path / "models/source"), "epochs": 1, "batch_size": 8},
        "similarity": {"n_per_domain": 20, "probe_folds": 2, "cache_dir": str(tmp_path / "cache")},
        "reports": {"dir": str(tmp_path / out / "reports")},
        "strategy": {"force": "progressive"},
        "registry": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"},  # not the checkout's store
        "train": {"epochs": 6, "phase_epochs": 3, "batch_size": 4, "patience": 0, "distributed": 2, "floor": False,
                  "out": str(tmp_path / out / "model")},
    }


def test_a_ddp_run_killed_mid_phase_resumes_to_the_same_model(tmp_path):
    exe = Path(sys.executable).with_name("autotransfer")

    def params_file(name: str) -> Path:
        config = _progressive_config(tmp_path, name)
        plan_ready(params_from_dict(config))
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    # given an uninterrupted 2-process run as the reference
    subprocess.run([str(exe), "train", "--params", str(params_file("reference")), "--no-progress"], check=True,
                   capture_output=True)
    # when another 2-process run is SIGKILLed (torchrun and both ranks) after its first checkpoint
    killed = params_file("killed")
    process = subprocess.Popen([str(exe), "train", "--params", str(killed), "--no-progress"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    checkpoint = tmp_path / "killed/model/runs/progressive/checkpoint.pt"
    deadline = time.time() + 180
    while not checkpoint.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = torch.load(checkpoint, weights_only=True)["epoch"]
    assert 1 <= killed_at < 6 and not (tmp_path / "killed/model/model.safetensors").exists()
    # and the same command runs again
    out = subprocess.run([str(exe), "train", "--params", str(killed), "--no-progress"], check=True,
                         capture_output=True, text=True).stdout
    # then it resumed under DDP and ends byte-identical to the uninterrupted run
    assert f"resumed from epoch {killed_at}" in out and "2 processes" in out
    assert (tmp_path / "killed/model/model.safetensors").read_bytes() == \
        (tmp_path / "reference/model/model.safetensors").read_bytes()


def test_a_failing_rank_fails_the_stage_and_writes_no_model(tmp_path):
    # given a 2-process run whose learning rate makes the loss explode
    config = _progressive_config(tmp_path, "bad")
    config["strategy"] = {"force": "scratch"}
    config["train"].update({"lr": 1e12, "epochs": 2})
    params = plan_ready(params_from_dict(config))
    # when it trains, then it fails with a clear error and leaves no model or report behind
    with pytest.raises(TrainingError, match="train.distributed=2: torchrun exited"):
        TRAIN.run(params, progress=False)
    assert not (tmp_path / "bad/model/model.safetensors").exists()
    assert not (tmp_path / "bad/reports/train.json").exists()
