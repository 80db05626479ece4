"""Faults survived, bad input refused, nothing lost: the promises of RELIABILITY.md, each on real parts.

Faults are real where they can be (SIGKILL, a stopped `mlflow server`, two flows at once,
a pickle with a payload); a full disk is injected (as root, permissions do not stop writes).
"""

from __future__ import annotations

import errno
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow import MlflowClient
from PIL import Image

from autotransfer.cli import main
from autotransfer.config import ConfigError, Params, params_from_dict
from autotransfer.errors import RegistryError
from autotransfer.errors import TrainingError
from conftest import make_domain, write_image
from flows.retrain import retrain
from registry_helpers import demo_params
from servers import free_port, stop, wait_http
from stage_helpers import tiny_params
from tasks.stages import ValidationFailed

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def write_params(params: Params, path: Path) -> Path:
    path.write_text(yaml.safe_dump(params.model_dump(mode="json")))
    return path


def versions(params: Params) -> list:
    return MlflowClient(params.registry.tracking_uri).search_model_versions("name = 'autotransfer-digits'")


def champion_of(params: Params) -> str:
    return str(MlflowClient(params.registry.tracking_uri).get_model_version_by_alias("autotransfer-digits", "champion").version)


def cli_env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


# --------------------------------------------------------------------------- bad input through the whole flow


def _truncate(root: Path) -> Path:
    path = root / "tgt/train/a/00.png"
    path.write_bytes(path.read_bytes()[:40])
    return path


def _zero_bytes(root: Path) -> Path:
    path = root / "tgt/train/a/00.png"
    path.write_bytes(b"")
    return path


def _text_as_png(root: Path) -> Path:
    path = root / "tgt/test/b/notes.png"
    path.write_text("not a picture\n")
    return path


def _non_image(root: Path) -> Path:
    path = root / "src/train/a/labels.csv"
    path.write_text("a,b\n")
    return path


def _empty_class(root: Path) -> Path:
    path = root / "tgt/train/c"
    path.mkdir()
    return path


def _single_class(root: Path) -> Path:
    shutil.rmtree(root / "tgt")
    make_domain(root, "tgt", classes=("only",), seed=2)
    return root / "tgt/train"


def _unknown_eval_class(root: Path) -> Path:
    return write_image(root / "tgt/test/z/00.png", seed=778)


def _leak(root: Path) -> Path:
    path = root / "tgt/test/a/leaked.png"
    path.write_bytes((root / "tgt/train/a/01.png").read_bytes())
    return path


def _too_small(root: Path) -> Path:
    return write_image(root / "src/train/a/tiny.png", seed=999, size=4)


def _bomb(root: Path) -> Path:
    path = root / "src/train/a/bomb.png"
    Image.new("1", (5000, 5000)).save(path)  # 25 Mpx > validation.max_pixels
    return path


def _escaping_symlink(root: Path) -> Path:
    outside = write_image(root.parent / "elsewhere" / "secret.png", seed=31337)
    link = root / "tgt/train/b/link.png"
    link.symlink_to(outside)
    return link


def _missing_split(root: Path) -> Path:
    shutil.rmtree(root / "src/val")
    return root / "src/val"


def _missing_domain(root: Path) -> Path:
    shutil.rmtree(root / "tgt")
    return root / "tgt/train"


BAD_INPUTS = {
    "truncated image": _truncate, "zero-byte file": _zero_bytes, "text named .png": _text_as_png,
    "non-image file": _non_image, "empty class folder": _empty_class, "single class": _single_class,
    "val/test class not in train": _unknown_eval_class, "leakage train/test": _leak, "image too small": _too_small,
    "decompression bomb": _bomb, "symlink escaping the root": _escaping_symlink, "missing split": _missing_split,
    "missing domain": _missing_domain,
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_the_flow_at_validation_and_nothing_is_trained_or_registered(case, data_root, tmp_path,
                                                                                    prefect_harness):
    # given a valid data root spoiled in one way
    offender = BAD_INPUTS[case](data_root)
    params = tiny_params(data_root, tmp_path / "work", registry={"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"})
    before = sorted((p.as_posix(), p.stat().st_size) for p in data_root.rglob("*") if p.is_file())
    # when the retrain flow runs on it
    state = retrain(params_file=str(write_params(params, tmp_path / "params.yaml")), return_state=True)
    # then it fails at validation, naming the offending file or folder in the report
    assert state.is_failed()
    with pytest.raises(ValidationFailed):
        state.result()
    assert offender.as_posix() in (Path(params.reports.dir) / "validation.md").read_text()
    # and nothing was trained or registered, and the data is as it was
    assert not Path(params.pretrain.out).exists() and not Path(params.train.out).exists()
    assert versions(params) == []
    # the run's MLflow run says it failed, and why
    client = MlflowClient(params.registry.tracking_uri)
    [run] = client.search_runs([client.get_experiment_by_name(params.registry.experiment).experiment_id])
    assert run.info.status == "FAILED" and "data validation failed" in run.data.tags["error"]
    assert sorted((p.as_posix(), p.stat().st_size) for p in data_root.rglob("*") if p.is_file()) == before


# --------------------------------------------------------------------------- security


def test_malicious_pickle_as_backbone_weights_is_refused_and_never_runs(data_root, tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"state_dict": Payload()}))
    params = tiny_params(data_root, tmp_path / "work")
    file = write_params(params, tmp_path / "params.yaml")
    assert main(["validate", "--params", str(file), "--no-progress"]) == 0
    code = main(["similarity", "--params", str(file), "--no-progress", "-S", f"backbone.weights={evil}"])
    assert code == 1 and str(evil) in capsys.readouterr().err
    assert not marker.exists()


@pytest.mark.parametrize("key", ["reports.dir", "train.out", "pretrain.out", "similarity.cache_dir", "demo.out"])
def test_parent_steps_in_output_paths_are_refused(key):
    section, name = key.split(".")
    with pytest.raises(ConfigError, match=rf"{key}: .*'\.\.' is not allowed"):
        params_from_dict({section: {name: "../outside/here"}})


def test_every_server_command_binds_to_loopback():
    import re

    from flows import deploy

    assert deploy.LOCAL_API.startswith("http://127.0.0.1:")
    texts = {name: (REPO / name).read_text() for name in ("README.md", "mlflow/README.md", "Makefile")}
    commands = re.compile(r"(mlflow (?:server|ui|models serve)|prefect server start)[^\n]*")
    found = 0
    for name, text in texts.items():
        for match in commands.finditer(text):
            line = match.group(0)
            if "--host" in line or "-h " in line:
                found += 1
                assert "127.0.0.1" in line, f"{name}: {line}"
    assert found >= 3
    # and the commands the tests and `make serve` run pass --host 127.0.0.1 explicitly
    for path in (REPO / "flows/deploy.py", REPO / "tests/registry/test_register.py", REPO / "src/autotransfer/ops/stack.py"):
        assert '"--host"' in path.read_text(), path


PARAM_KEYS = [f"{section}.{key}" for section, model in Params.model_fields.items()
              for key in model.annotation.model_fields]
BAD_VALUES = st.one_of(st.text(max_size=5), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                       st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                            max_size=2), st.none(), st.booleans())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(PARAM_KEYS + ["train.learning_rate", "nosuchsection.x", "data.targett"]),
       value=BAD_VALUES)
def test_params_fuzz_gives_a_config_error_naming_the_key_never_a_deep_traceback(key, value):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    section, name = key.split(".")
    raw.setdefault(section, {})[name] = value
    try:
        params_from_dict(raw)
    except ConfigError as exc:
        assert key in str(exc) or section in str(exc)
    # anything accepted is a valid Params: strict and frozen, the stages may trust it


# --------------------------------------------------------------------------- faults in training


def test_full_disk_while_checkpointing_is_a_clear_error_and_the_previous_checkpoint_survives(
        data_root, tmp_path, monkeypatch):
    from autotransfer.engine import checkpoint as checkpoints
    from autotransfer.stages.pipeline import PLAN, PRETRAIN, SIMILARITY, TRAIN, VALIDATE

    params = tiny_params(data_root, tmp_path, train={"epochs": 3, "batch_size": 4, "patience": 0},
                         strategy={"force": "scratch"})
    VALIDATE.run(params, progress=False)
    PRETRAIN.run(params, progress=False)
    SIMILARITY.run(params, progress=False)
    PLAN.run(params)
    checkpoint = Path(params.train.out) / "runs/scratch/checkpoint.pt"
    real_save, calls = torch.save, []

    def save_then_fill_the_disk(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) >= 2:  # the second checkpoint hits a full disk half-way
            Path(path).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpoints.torch, "save", save_then_fill_the_disk)
    with pytest.raises(TrainingError, match=r"cannot write checkpoint .*checkpoint\.pt.*No space left"):
        TRAIN.run(params, progress=False)
    # the epoch-1 checkpoint is whole, no temp file is left, no final model was written
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1
    assert not list(checkpoint.parent.glob("*.tmp"))
    assert not (Path(params.train.out) / "model.safetensors").exists()


def test_exploding_gradients_stop_with_the_step_number(data_root, tmp_path):
    from autotransfer.stages.pipeline import PLAN, PRETRAIN, SIMILARITY, TRAIN, VALIDATE

    params = tiny_params(data_root, tmp_path, train={"epochs": 3, "batch_size": 4, "lr": 1e30, "warmup": 0},
                         strategy={"force": "scratch"})
    VALIDATE.run(params, progress=False)
    PRETRAIN.run(params, progress=False)
    SIMILARITY.run(params, progress=False)
    PLAN.run(params)
    with pytest.raises(TrainingError, match=r"non-finite loss .* at epoch \d+, step \d+"):
        TRAIN.run(params, progress=False)
    assert not (Path(params.train.out) / "model.safetensors").exists()


# --------------------------------------------------------------------------- faults in the flow


@pytest.mark.slow
def test_sigkilled_flow_resumes_from_its_checkpoint_and_registers_once(small_demo_root, tmp_path, prefect_api):
    # given a flow whose training takes long enough to be killed mid-way
    params = demo_params(small_demo_root, tmp_path / "work", strategy={"force": "finetune_all"},
                         train={"epochs": 6, "batch_size": 8, "patience": 0})
    file = write_params(params, tmp_path / "params.yaml")
    run = [str(BIN / "autotransfer"), "run", "--params", str(file)]
    # on the session's Prefect server (a killed run's temporary server: test_stop_signals)
    env = {**cli_env(), "PREFECT_API_URL": prefect_api}
    process = subprocess.Popen(run, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    checkpoint = Path(params.train.out) / "runs/finetune_all/checkpoint.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists():
        assert process.poll() is None and time.monotonic() < deadline, "the flow ended before a checkpoint"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = torch.load(checkpoint, weights_only=True)["epoch"]
    assert killed_at < 6 and not (Path(params.train.out) / "model.safetensors").exists()
    # when the flow is run again, it resumes and finishes
    rerun = subprocess.run(run, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    report = yaml.safe_load((Path(params.reports.dir) / "train.json").read_text())
    assert report["resumed_from_epoch"] == killed_at and report["epochs_run"] == 6
    # and exactly one version is registered
    assert len(versions(params)) == 1


@pytest.mark.slow
def test_tracking_server_down_at_register_retries_fails_clearly_then_registers_once(small_demo_root, tmp_path,
                                                                                   prefect_harness):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
              "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
              "--artifacts-destination", str(tmp_path / "server-artifacts")]

    def start() -> subprocess.Popen:
        process = subprocess.Popen(server, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(f"{uri}/health", process)
        return process

    params = demo_params(small_demo_root, tmp_path / "work", store=uri,
                         registry={"request_retries": 0, "task_retries": 2, "retry_delay": 0.5})
    file = str(write_params(params, tmp_path / "params.yaml"))
    process = start()
    try:
        # given a champion registered through the server
        assert retrain(params_file=file)["register"]["champion"] == "1"
        # when the server is down at the next registration
        stop(process)
        state = retrain(params_file=file, overrides=["train.epochs=1"], return_state=True)
        # then the register task retried, and the flow failed naming the URI
        assert state.is_failed()
        with pytest.raises(RegistryError, match=f"{uri}.*unreachable"):
            state.result()
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            failed = [r for r in client.read_task_runs() if r.name.startswith("register") and r.state.is_failed()]
        assert [r.run_count for r in failed] == [3]  # 1 try + 2 retries
        # and the model files are kept for the retry
        assert (Path(params.train.out) / "model.safetensors").exists()
        # when the server is back, re-running registers exactly once, and the champion was untouched meanwhile
        process = start()
        assert champion_of(params) == "1"
        again = retrain(params_file=file, overrides=["train.epochs=1"])
        assert again["register"]["version"] == "2" and len(versions(params)) == 2
        assert retrain(params_file=file, overrides=["train.epochs=1"])["skipped"]  # that run is done
        assert len(versions(params)) == 2
    finally:
        stop(process)


@pytest.mark.slow
def test_two_flows_at_once_on_the_same_stores_both_finish_and_the_registry_stays_consistent(small_demo_root, tmp_path,
                                                                                           prefect_api):
    params = demo_params(small_demo_root, tmp_path / "work")
    file = write_params(params, tmp_path / "params.yaml")
    run = [str(BIN / "autotransfer"), "run", "--params", str(file)]
    env = {**cli_env(), "PREFECT_API_URL": prefect_api}  # two runs on one Prefect server, as a team's
    processes = [subprocess.Popen(run, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    # one of them trained and registered; the other waited, then found nothing new
    assert sum("not retraining" in o for o in outputs) == 1
    client = MlflowClient(params.registry.tracking_uri)
    assert len(versions(params)) == 1 and champion_of(params) == "1"
    assert {k: str(v) for k, v in client.get_registered_model("autotransfer-digits").aliases.items()} == {
        "champion": "1", "challenger": "1"}
