"""The retrain flow under a real (throwaway) Prefect server: tasks, caching, skipping, failing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from autotransfer.stages.pipeline import STAGES, stage_names
from flows.retrain import retrain
from registry_helpers import demo_params
from tasks.stages import STAGE_TASKS, ValidationFailed

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def params_file(params, path: Path) -> str:
    path.write_text(yaml.safe_dump(params.model_dump(mode="json")))
    return str(path)


def versions(params) -> list:
    return MlflowClient(params.registry.tracking_uri).search_model_versions("name = 'autotransfer-digits'")


def pipeline_runs(params) -> list:
    """The flow's MLflow runs (not the nested ones), oldest first."""
    client = MlflowClient(params.registry.tracking_uri)
    experiment = client.get_experiment_by_name(params.registry.experiment)
    return [r for r in client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
            if "mlflow.parentRunId" not in r.data.tags]


def flow_run_logs(flow_run_id: str) -> list[str]:
    """Every log line Prefect's server holds for one flow run (its tasks' included)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        found = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200)
    return [entry.message for entry in found]


def test_the_flow_dvc_yaml_and_the_stage_list_agree():
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert list(STAGE_TASKS) == stage_names() == list(dvc)
    # and each stage declares the same inputs, outputs and params as its dvc.yaml stage
    from autotransfer.config import Params

    defaults = Params()
    for spec in STAGES:
        entry = dvc[spec.name]
        deps = [d for d in entry.get("deps", []) if not d.startswith("src/")]
        for path in spec.inputs(defaults):
            assert any(path == Path(d) or Path(d) in path.parents for d in deps), (spec.name, path)
        outs = [next(iter(o)) if isinstance(o, dict) else o
                for kind in ("outs", "metrics", "plots") for o in entry.get(kind, [])]
        assert sorted(Path(o) for o in outs) == sorted(spec.outputs(defaults)), spec.name
        assert tuple(entry.get("params", [])) == spec.params, spec.name


def test_full_run_registers_an_unchanged_rerun_skips_changed_params_retrain(small_demo_root, tmp_path, prefect_harness):
    params = demo_params(small_demo_root, tmp_path / "work")
    file = params_file(params, tmp_path / "params.yaml")
    # when the flow runs on fresh data
    first = retrain(params_file=file)
    # then every stage ran and the model is registered as champion
    assert not first["skipped"] and list(first)[1:] == [*stage_names(), "dvc"]
    assert first["register"]["decision"] == "promoted" and len(versions(params)) == 1
    # in one MLflow run, opened by the flow, written while it trained, the model attached to it
    (run,) = pipeline_runs(params)
    client = MlflowClient(params.registry.tracking_uri)
    assert run.info.status == "FINISHED" and run.data.tags["opened_by"] == "flow" and run.data.tags["prefect_flow_run"]
    assert run.data.tags["registered_version"] == "1" and versions(params)[0].run_id == run.info.run_id
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert len(history) == first["train"]["epochs_run"]
    assert {i.tags[0].value for i in run.inputs.dataset_inputs} == {"training", "validation", "test"}
    # and the run said what it did in Prefect's log: the library's training progress, no MLflow chatter
    logs = flow_run_logs(run.data.tags["prefect_flow_run"])
    assert any(line.startswith("train ") and " steps (" in line for line in logs), logs
    assert not any("system metrics" in line for line in logs)
    model = Path(params.train.out) / "model.safetensors"
    mtime = model.stat().st_mtime_ns
    # when it runs again with the same data and params, it says so and does not retrain
    second = retrain(params_file=file)
    assert second["skipped"] and "unchanged since v1 was trained and promoted" in second["reason"]
    skipped = pipeline_runs(params)[-1]
    assert skipped.info.status == "FINISHED" and "unchanged since v1" in skipped.data.tags["skipped"]
    assert model.stat().st_mtime_ns == mtime and len(versions(params)) == 1
    # forced, the unchanged stages are cache hits (no retraining) and no duplicate version appears
    forced = retrain(params_file=file, force=True)
    assert not forced["skipped"] and forced["register"]["version"] == "1"
    assert model.stat().st_mtime_ns == mtime and len(versions(params)) == 1
    # a deleted output is not papered over by the cache: the stage runs again
    model.unlink()
    retrain(params_file=file, force=True)
    assert model.exists()
    # changed model params retrain without force: a new version
    changed = retrain(params_file=file, overrides=["train.epochs=1"])
    assert not changed["skipped"] and changed["train"]["epochs_run"] == 1
    assert len(versions(params)) == 2
    # --no-register: it trains and evaluates, writes report.html, and leaves MLflow alone
    tracked = len(pipeline_runs(params))
    dry = retrain(params_file=file, overrides=["train.epochs=3"], register_model=False)
    assert not dry["skipped"] and "register" not in dry and dry["train"]["epochs_run"] == 3
    assert dry["evaluate"]["accuracy"] is not None and "not recorded" in dry["dvc"]
    assert len(versions(params)) == 2 and len(pipeline_runs(params)) == tracked
    reports = Path(params.reports.dir)
    assert "Not registered" in (reports / "report.html").read_text() and not (reports / "registration.json").exists()


def test_invalid_data_fails_at_validation_and_nothing_is_trained_or_registered(small_demo_root, tmp_path,
                                                                               prefect_harness):
    # given the demo data with one truncated target image
    import shutil

    root = tmp_path / "data"
    for domain in ("synth-digits", "digits"):
        shutil.copytree(small_demo_root / domain, root / domain)
    broken = next((root / "digits" / "train" / "3").glob("*.png"))
    broken.write_bytes(broken.read_bytes()[:60])
    params = demo_params(small_demo_root, tmp_path / "work", data={"root": str(root)})
    file = params_file(params, tmp_path / "params.yaml")
    # when the flow runs, it ends Failed at validation with the report attached
    state = retrain(params_file=file, return_state=True)
    assert state.is_failed()
    with pytest.raises(ValidationFailed, match="data validation failed"):
        state.result()
    # and nothing downstream ran: no model, no registry
    assert not Path(params.train.out).exists() and not Path(params.pretrain.out).exists()
    assert versions(params) == []
    assert broken.name in (Path(params.reports.dir) / "validation.md").read_text()
    # and the flow's MLflow run ended FAILED, saying why
    (run,) = pipeline_runs(params)
    assert run.info.status == "FAILED" and "data validation failed" in run.data.tags["error"]
