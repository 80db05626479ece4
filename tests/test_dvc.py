"""Real DVC in a temporary git repo made from this checkout's files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def sh(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """The project's files (tracked and new, not ignored) in a fresh git repo: like a clean clone."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, text=True, check=True).stdout.split("\0")
    target = tmp_path / "clone"
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    sh(["git", "init", "-q"], target)
    sh(["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"], target)
    sh(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "clone"], target)
    return target


def md5(path: Path) -> str:
    """DVC's md5 of a file, or of a folder (``.dir``: the md5 of its sorted file list), .dvcignore'd files left out."""
    if not path.is_dir():
        return hashlib.md5(path.read_bytes()).hexdigest()
    entries = [{"md5": md5(f), "relpath": f.relative_to(path).as_posix()} for f in sorted(path.rglob("*"))
               if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc"]
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"


def test_committed_lock_matches_the_code_and_params():
    """dvc.lock must be refreshed (`dvc repro`, then commit it) whenever a stage's code or params change."""
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    stale = []
    for name, stage in lock.items():
        for dep in stage.get("deps", []):
            path = REPO / dep["path"]
            if dep["path"].startswith("src/") and (not path.exists() or md5(path) != dep["md5"]):
                stale.append(f"{name}: {dep['path']} changed")
        for key, value in stage.get("params", {}).get("params.yaml", {}).items():
            node = params
            for part in key.split("."):
                node = node[part]
            if node != value:
                stale.append(f"{name}: params {key} changed")
    assert not stale, "dvc.lock is stale; run `dvc repro` and commit dvc.lock: " + "; ".join(stale)


SMALL = {  # the demo pipeline shrunk to seconds: same stages, smaller model and budget
    "backbone": {"arch": "small_cnn", "weights": None, "input_size": 32},
    "pretrain": {"epochs": 1},
    "similarity": {"n_per_domain": 50, "max_labeled": 200},
    "train": {"epochs": 2, "floor": False},  # the floor would write the same baseline for any train.seed
    "data": {"labeled_per_class": 20},
    "strategy": {"dann_below_per_class": 20},  # the small row's own choice: the pipeline is tested, not that rule
}


def shrink_params(clone: Path) -> None:
    params = yaml.safe_load((clone / "params.yaml").read_text())
    for section, values in SMALL.items():
        params[section].update(values)
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "small params"], clone)


def ran_stages(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


@pytest.mark.slow
@pytest.mark.scaleout
def test_fresh_clone_rebuilds_the_data_byte_for_byte_and_reproduces(clone: Path, s3_stack, tmp_path: Path):
    committed = (clone / "data.dvc").read_text()
    # given a fresh clone (no data, empty DVC cache)
    assert not (clone / "data").exists()
    # when the demo data is built
    sh(["autotransfer", "demo-data", "--no-progress"], clone)
    # then data.dvc is byte-identical (git diff is empty) and DVC finds the data in its cache
    assert (clone / "data.dvc").read_text() == committed
    assert sh(["git", "diff", "--stat"], clone).stdout == ""
    status = sh([sys.executable, "-m", "dvc", "status", "data.dvc"], clone).stdout
    assert "up to date" in status, status
    # and `dvc repro` runs every stage through the CLI, registering in the clone's mlflow/
    shrink_params(clone)
    first = sh([sys.executable, "-m", "dvc", "repro"], clone).stdout
    assert ran_stages(first) == list(yaml.safe_load((clone / "dvc.yaml").read_text())["stages"])
    assert (clone / "mlflow" / "mlflow.db").exists()
    assert json.loads((clone / "reports" / "registration.json").read_text())["champion"] == "1"
    # after which nothing is left to do
    assert "up to date" in sh([sys.executable, "-m", "dvc", "status"], clone).stdout
    assert ran_stages(sh([sys.executable, "-m", "dvc", "repro"], clone).stdout) == []
    # the team's S3 remote (keys only in the git-ignored .dvc/config.local) takes a push ...
    sh(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "reproduced"], clone)
    s3_stack.configure_dvc_remote(clone)
    assert s3_stack.secret_key not in (clone / ".dvc/config").read_text()
    assert s3_stack.secret_key in (clone / ".dvc/config.local").read_text()
    assert sh(["git", "status", "--porcelain"], clone).stdout == ""
    sh([sys.executable, "-m", "dvc", "push"], clone)
    # ... and a fresh clone (no data, empty cache) pulls data/ byte for byte, already reproduced
    fresh = tmp_path / "fresh"
    sh(["git", "clone", "-q", str(clone), str(fresh)], tmp_path)
    s3_stack.configure_dvc_remote(fresh)
    sh([sys.executable, "-m", "dvc", "pull"], fresh)
    pushed = {p.relative_to(clone): p.read_bytes() for p in sorted((clone / "data").rglob("*")) if p.is_file()}
    pulled = {p.relative_to(fresh): p.read_bytes() for p in sorted((fresh / "data").rglob("*")) if p.is_file()}
    assert len(pushed) > 1000 and pulled == pushed
    assert "up to date" in sh([sys.executable, "-m", "dvc", "status"], fresh).stdout
    assert ran_stages(sh([sys.executable, "-m", "dvc", "repro"], fresh).stdout) == []
    # train.epochs is the plan's budget too: changing it makes plan and train stale, nothing before them
    committed_params = (clone / "params.yaml").read_text()
    params = yaml.safe_load(committed_params)
    params["train"]["epochs"] = 1
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stale = json.loads(sh([sys.executable, "-m", "dvc", "status", "--json"], clone).stdout)
    assert set(stale) == {"plan", "train"}, stale
    (clone / "params.yaml").write_text(committed_params)
    # an experiment with another train.seed runs in the same clone: train and what follows it, nothing before
    sh(["git", "config", "user.email", "t@t"], clone)  # `dvc exp run` commits
    sh(["git", "config", "user.name", "t"], clone)
    exp = sh([sys.executable, "-m", "dvc", "exp", "run", "-S", "train.seed=1"], clone).stdout
    assert ran_stages(exp) == ["train", "evaluate", "register"]
    assert "train.seed" in sh([sys.executable, "-m", "dvc", "exp", "show", "--csv"], clone).stdout
    # the plots compare the two runs: the curves, the test confusion matrix and the PNGs, HEAD's and this one's
    plots = json.loads(sh([sys.executable, "-m", "dvc", "plots", "diff", "HEAD", "--json"], clone).stdout)["data"]
    assert set(plots) == {"training curves", "confusion matrix (target test)", "reports/plots/confusion_matrix.png",
                          "reports/plots/training_curves.png", "reports/plots/feature_map.png"}
    for name in ("training curves", "confusion matrix (target test)"):
        assert set(plots[name][0]["revisions"]) == {"HEAD", "workspace"}, name
    confusion = plots["confusion matrix (target test)"][0]["content"]["data"]["values"]
    assert {row["rev"] for row in confusion} == {"HEAD", "workspace"}
    assert len(confusion) == 2 * len(pd.read_csv(clone / "reports/predictions.csv"))
    assert all(len(plots[name]) == 2 for name in plots if name.endswith(".png"))
    # metrics are DVC metrics
    assert "accuracy" in sh([sys.executable, "-m", "dvc", "metrics", "show"], clone).stdout


@pytest.mark.slow
def test_changed_data_shows_in_git_diff(clone: Path):
    sh(["autotransfer", "demo-data", "--no-progress", "-S", "demo.seed=1"], clone)
    assert "data.dvc" in sh(["git", "diff", "--stat"], clone).stdout


@pytest.mark.slow
def test_ctrl_c_under_dvc_repro_stops_the_stage_and_the_next_repro_resumes(clone: Path, small_demo_root: Path):
    import signal

    from test_stop_signals import start_and_signal

    from safetensors.torch import save_file

    from autotransfer.models.backbones import TransferModel

    shutil.copytree(small_demo_root, clone / "data")  # building the demo data: the fresh-clone test
    weights = clone.parent / "small_cnn.safetensors"  # a start model: pretrain is skipped, train is what is tested
    save_file(TransferModel("small_cnn", 10, 32).state_dict(), str(weights))
    params = yaml.safe_load((clone / "params.yaml").read_text())
    for section, values in {**SMALL, "train": {"epochs": 12, "batch_size": 8, "patience": 0, "floor": False},
                            "strategy": {"force": "finetune_all"},
                            "backbone": {**SMALL["backbone"], "weights": str(weights)}}.items():
        params[section].update(values)
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "long training"], clone)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    checkpoint = clone / "models/target/runs/finetune_all/checkpoint.pt"
    # given `dvc repro` in its training stage, when Ctrl-C reaches the terminal's group
    result = start_and_signal([sys.executable, "-m", "dvc", "repro"], env, checkpoint, signal.SIGINT, True, 1,
                              cwd=clone)
    print(f"\ndvc repro, SIGINT to the group: exit {result['code']} after {result['seconds']:.1f} s; "
          f"processes left {len(result['left'])} of {result['children']}")
    # then dvc and the stage end, nothing of them runs on, no model is written or registered
    assert result["code"] != 0 and result["left"] == [], result["output"][-3000:]
    assert "stopped by SIGINT" in result["output"]
    assert not (clone / "models/target/model.safetensors").exists()
    assert not (clone / "reports/registration.json").exists()
    stopped_at = torch.load(checkpoint, weights_only=True)["epoch"]
    # and the next `dvc repro` resumes the training from its checkpoint
    rerun = sh([sys.executable, "-m", "dvc", "repro"], clone).stdout
    assert ran_stages(rerun)[0] == "train"
    report = json.loads((clone / "reports/train.json").read_text())
    assert report["resumed_from_epoch"] == stopped_at and report["epochs_run"] == 12
