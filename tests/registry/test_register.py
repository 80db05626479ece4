"""Tracking, registry and promotion against a real MLflow SQLite store (and, marked slow, a
real `mlflow server` and `mlflow models serve` on 127.0.0.1)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import torch
import yaml
from mlflow import MlflowClient

from autotransfer.cli import main
from autotransfer.errors import StageInputError
from autotransfer.io.data import domain_rows, read_manifest
from autotransfer.models.weights import load_trained_model
from autotransfer.registry.promotion import decide
from autotransfer.errors import RegistryError
from autotransfer.registry.people import promote, rollback
from autotransfer.registry.pyfunc import load_predictor
from autotransfer.registry.register import register
from autotransfer.registry.versions import class_set_tag, other_target
from mlflow.entities.model_registry import ModelVersion, ModelVersionTag
from autotransfer.analysis.metrics import predict_names
from registry_helpers import demo_params, run_pipeline, variant
from servers import free_port, stop, wait_http

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(small_demo_root, tmp_path_factory):
    """One trained pipeline on the demo task; tests copy it (``variant``) into their own folders."""
    work = tmp_path_factory.mktemp("trained") / "work"
    return run_pipeline(demo_params(small_demo_root, work))


def store_of(params) -> MlflowClient:
    return MlflowClient(params.registry.tracking_uri)


# --------------------------------------------------------------------------- decisions


def test_decide_promotes_the_first_model_and_only_a_clear_winner():
    assert decide("accuracy", 0.5, None, None, 0.01).promote
    assert decide("accuracy", 0.91, 0.90, "3", 0.01).promote
    kept = decide("accuracy", 0.905, 0.90, "3", 0.01)
    assert not kept.promote and "v3" in kept.reason and "min_delta 0.01" in kept.reason
    assert not decide("accuracy", 0.80, 0.90, "3", 0.0).promote


# --------------------------------------------------------------------------- register


def test_first_registration_becomes_champion_with_lineage_tags_params_metrics_and_reports(trained, tmp_path):
    # given a trained and evaluated pipeline and an empty store
    params = variant(trained, tmp_path / "a")
    # when it is registered
    report = register(params).to_json()
    # then version 1 is champion and challenger, with its decision and lineage recorded
    client = store_of(params)
    assert report["decision"] == "promoted" and report["champion"] == report["version"] == "1"
    assert "first model" in report["reason"]
    assert str(client.get_model_version_by_alias("autotransfer-digits", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("autotransfer-digits", "challenger").version) == "1"
    tags = client.get_model_version("autotransfer-digits", "1").tags
    metrics = json.loads((Path(params.reports.dir) / "metrics.json").read_text())
    assert tags["test_set_hash"] == metrics["test_set_hash"] == report["test_set_hash"]
    assert tags["model_sha256"] == metrics["model_sha256"]
    assert tags["strategy"] == metrics["strategy"] and tags["backbone"] == "small_cnn"
    assert len(tags["data_hash"]) == 64 and tags["git_commit"]
    assert tags["decision"] == "promoted" and float(tags["challenger_score"]) == pytest.approx(metrics["accuracy"])
    # and the run holds params, per-epoch metrics, the test score and the reports
    run = client.get_run(report["run_id"])
    assert run.data.params["data.target"] == "digits" and run.data.params["train.epochs"] == "2"
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["accuracy"])
    assert len(client.get_metric_history(report["run_id"], "train_loss")) == 2
    artifacts = {a.path for a in client.list_artifacts(report["run_id"], "reports")}
    assert {"reports/plan.json", "reports/similarity.json", "reports/validation.json",
            "reports/metrics.json", "reports/plots"} <= artifacts
    assert json.loads((Path(params.reports.dir) / "registration.json").read_text())["version"] == "1"


def test_worse_challenger_is_kept_out_better_one_takes_over_rollback_and_promote(trained, tmp_path):
    # given a bad model (always class '0') as the first champion
    bad = variant(trained, tmp_path / "bad", constant_class=0)
    good = variant(trained, tmp_path / "good")
    worse = variant(trained, tmp_path / "worse", constant_class=1)
    assert register(bad).to_json()["champion"] == "1"
    # when the real model arrives it wins on the same test split and takes over
    second = register(good).to_json()
    assert second["decision"] == "promoted" and second["champion"] == "2"
    assert second["challenger_score"] > second["champion_score"] + 0.3
    # when another bad model arrives it is registered as challenger but the champion stays
    third = register(worse).to_json()
    client = store_of(good)
    assert third["decision"] == "kept" and third["champion"] == "2" and third["version"] == "3"
    assert str(client.get_model_version_by_alias("autotransfer-digits", "challenger").version) == "3"
    assert client.get_model_version("autotransfer-digits", "3").tags["decision"] == "kept"
    # rollback gives the champion back to the version v2 replaced
    assert rollback(good)["champion"] == "1"
    assert str(client.get_model_version_by_alias("autotransfer-digits", "champion").version) == "1"
    with pytest.raises(RegistryError, match="nothing to roll back"):
        rollback(good)  # v1 replaced nobody
    # and people can promote a version by hand, which is itself undoable
    assert promote(good, "2")["champion"] == "2"
    assert rollback(good)["champion"] == "1"


def test_a_collapsed_model_without_target_labels_is_registered_but_never_promoted(small_demo_root, trained, tmp_path):
    # given a target without labels (dann from the labeled source) and a collapse rule that any
    # model meets (its 2 most predicted classes take at least 1 % of its target predictions)
    params = run_pipeline(demo_params(small_demo_root, tmp_path / "work", data={"labeled_per_class": 0},
                                      train={"epochs": 1, "health": {"collapse_share": 0.01}}))
    health = json.loads((Path(params.reports.dir) / "train.json").read_text())["health"]
    assert health["gates_promotion"] and health["collapsed"] and health["n"] > 0
    assert 0 <= health["domain_accuracy"] <= 1 and 0 <= health["source_val_accuracy"] <= 1
    # when it is registered into an empty store, where a first model is always promoted
    report = register(params)
    # then it is a version with its reason, and there is still no champion
    assert report.version == "1" and report.decision == "kept" and report.champion is None
    assert report.reason.startswith("not promoted: with no labeled target val") and "collapsed" in report.reason
    client = store_of(params)
    assert client.get_model_version("autotransfer-digits", "1").tags["reason"] == report.reason
    # and where target val labels checked the model, the same checks are only reported
    checked = json.loads((Path(trained.reports.dir) / "train.json").read_text())["health"]
    assert checked["gates_promotion"] is False and checked["collapsed"] is False


def test_each_target_has_its_own_champion_and_a_shared_name_never_crosses_targets(trained, small_demo_root, tmp_path):
    # given a champion for digits, and a model trained on another target (digits-m) in the same store
    digits = variant(trained, tmp_path / "a")
    assert register(digits).decision == "promoted"
    other = run_pipeline(demo_params(small_demo_root, tmp_path / "m", store=digits.registry.tracking_uri,
                                     data={"target": "digits-m"}))
    # when it registers under the default name, it gets its own model and becomes its champion
    report = register(other)
    assert report.model_name == "autotransfer-digits-m" and report.decision == "promoted"
    client = store_of(digits)
    assert str(client.get_model_version_by_alias("autotransfer-digits", "champion").version) == "1"
    assert client.get_model_version("autotransfer-digits-m", "1").tags["target"] == "digits-m"
    # and under one shared name, the digits champion is neither re-scored nor replaced
    assert register(variant(trained, tmp_path / "b", registry={"model_name": "shared"})).decision == "promoted"
    crossed = register(other.model_copy(update={"registry": other.registry.model_copy(update={"model_name": "shared"})}))
    assert crossed.decision == "kept" and crossed.champion == "1" and crossed.champion_score is None
    assert "is a model of target 'digits', not of 'digits-m'" in crossed.reason
    assert str(client.get_model_version_by_alias("shared", "champion").version) == "1"
    assert json.loads(client.get_model_version("shared", "1").tags["classes"]) == [str(i) for i in range(10)]


def test_a_champion_is_another_targets_by_its_target_tag_or_a_disjoint_class_set():
    def version(**tags):
        return ModelVersion("m", "1", 0, tags=[ModelVersionTag(key, value) for key, value in tags.items()])

    assert other_target(version(target="digits"), "digits", ("0", "1")) is None
    assert "target 'photos'" in other_target(version(target="photos"), "digits", ("0", "1"))
    # a version registered before class sets were tagged: by target alone
    assert other_target(version(target="digits"), "digits", ("cat",)) is None
    # a target that gained a class is still that target; one with none of the champion's classes is not
    assert other_target(version(target="digits", classes=class_set_tag(("0", "1"))), "digits", ("0", "1", "2")) is None
    assert "none of target" in other_target(version(target="digits", classes='["0", "1"]'), "digits", ("cat", "dog"))
    long = tuple(f"class-{i:04d}" for i in range(200))
    assert class_set_tag(long).startswith("200 classes, sha256 ") and len(class_set_tag(long)) < 100


def test_rerunning_register_adds_no_duplicate_version(trained, tmp_path):
    params = variant(trained, tmp_path / "a")
    first = register(params).to_json()
    again = register(params).to_json()
    assert again["already_registered"] and again["version"] == first["version"] == "1"
    assert len(store_of(params).search_model_versions("name = 'autotransfer-digits'")) == 1
    assert again["reason"] == "version 1 is already the champion"
    # and the champion's record of how it won is not overwritten
    assert "first model" in store_of(params).get_model_version("autotransfer-digits", "1").tags["reason"]


def test_a_register_stopped_before_its_decision_is_finished_by_the_next_run_not_skipped(trained, tmp_path,
                                                                                        monkeypatch):
    from autotransfer.io.data import data_hash
    from autotransfer.registry import register as registering
    from autotransfer.registry.versions import already_trained

    params = variant(trained, tmp_path / "a")
    data = data_hash(read_manifest(params.reports.dir))
    # given a register that dies after the version is registered, before the champion decision
    # (a fault injected where the tracking server, an OOM kill or the stop watchdog can end it)
    def dies(*args, **kwargs):
        raise RegistryError("the tracking server went away")

    with monkeypatch.context() as patched:
        patched.setattr(registering, "score_model", dies)
        with pytest.raises(RegistryError, match="went away"):
            register(params)
    [half] = store_of(params).search_model_versions("name = 'autotransfer-digits'")
    assert "decision" not in half.tags
    # then a scheduled run does not take these data and params for trained-and-decided
    assert already_trained(params, data) is None
    # and the next register decides on that same version and says so; only then do runs skip
    again = register(params)
    assert again.already_registered and again.version == "1" and again.decision == "promoted"
    assert store_of(params).get_model_version("autotransfer-digits", "1").tags["decision"] == "promoted"
    assert already_trained(params, data) == {"version": "1", "decision": "promoted", "champion": "1"}


def test_register_scores_the_served_model_a_batch_at_a_time_with_the_same_result(trained, tmp_path, monkeypatch):
    from autotransfer.registry import register as registering

    # given a batch of 7 test images per call to the served model (256 by default)
    params = variant(trained, tmp_path / "a")
    sent, encode = [], registering.encode_images
    monkeypatch.setattr(registering, "SCORE_BATCH", 7)
    monkeypatch.setattr(registering, "encode_images", lambda paths: sent.append(len(paths)) or encode(paths))
    # when registered, then no call held more than a batch, every image was scored once,
    # and the score is evaluate's
    report = register(params)
    tests = len(domain_rows(read_manifest(params.reports.dir), "digits", ("test",)))
    assert sent[0] == 1  # the logged model's input example
    assert max(sent) == 7 and sum(sent[1:]) == tests
    assert report.challenger_score == pytest.approx(json.loads((Path(params.reports.dir) / "metrics.json")
                                                               .read_text())["accuracy"])


def test_metrics_of_another_model_are_refused(trained, tmp_path):
    register(variant(trained, tmp_path / "a"))
    other = variant(trained, tmp_path / "b")
    from safetensors.torch import load_file, save_file

    tensors = load_file(Path(other.train.out) / "model.safetensors")
    tensors["head.bias"] += 1.0
    save_file(tensors, str(Path(other.train.out) / "model.safetensors"))  # retrained, not re-evaluated
    with pytest.raises(StageInputError, match="rerun `autotransfer evaluate`"):
        register(other)
    assert len(store_of(other).search_model_versions("name = 'autotransfer-digits'")) == 1


def test_unreachable_tracking_server_names_the_uri_and_keeps_the_model(trained, tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    params = variant(trained, tmp_path / "a")
    params = params.model_copy(update={"registry": params.registry.model_copy(
        update={"tracking_uri": uri, "request_retries": 0})})
    before = (Path(params.train.out) / "model.safetensors").read_bytes()
    with pytest.raises(RegistryError, match=f"{uri}.*unreachable.*rerun `autotransfer register`"):
        register(params)
    assert (Path(params.train.out) / "model.safetensors").read_bytes() == before
    assert not (Path(params.reports.dir) / "registration.json").exists()


# --------------------------------------------------------------------------- predict


def test_predict_through_the_champion_alias_matches_the_in_memory_model(trained, tmp_path, capsys):
    params = variant(trained, tmp_path / "a")
    register(params)
    manifest = read_manifest(params.reports.dir)
    paths = [Path(p) for p in domain_rows(manifest, "digits", ("test",))["path"].tolist()[:40]]
    # given the model in memory, scored the way evaluate scores it
    memory = load_trained_model(params.train.out)
    from autotransfer.io.data import load_images

    images = load_images(domain_rows(manifest, "digits", ("test",)).iloc[:40], (), memory.model.input_size)
    expected = predict_names(memory.model, images, memory.normalization, memory.head_classes, torch.device("cpu"))
    # when the registered champion labels the same raw files
    served = load_predictor("models:/autotransfer-digits@champion", params)(paths)
    # then the labels are identical, and the probabilities are probabilities
    assert [p.label for p in served] == list(expected)
    assert all(0.0 < p.probability <= 1.0 for p in served)
    # and its top 3 are the model folder's, through the pyfunc's top_k param
    top3 = load_predictor("models:/autotransfer-digits@champion", params)(paths[:5], 3)
    local = load_predictor(params.train.out, params)(paths[:5], 3)
    assert [[lab for lab, _ in p.top] for p in top3] == [[lab for lab, _ in p.top] for p in local]
    assert all(len(p.top) == 3 for p in top3)
    # and loading the version unpickles nothing: with pickle refused, it loads and labels the same
    import pickle

    def refuse(*args, **kwargs):
        raise AssertionError("a registered model was unpickled")

    with pytest.MonkeyPatch.context() as patch:
        for name in ("load", "loads", "Unpickler"):
            patch.setattr(pickle, name, refuse)
        again = load_predictor("models:/autotransfer-digits@champion", params)(paths[:5])
    assert [p.label for p in again] == list(expected[:5])
    # and the CLI prints one line per image
    code = main(["predict", "-S", f"registry.tracking_uri={params.registry.tracking_uri}", str(paths[0]),
                 str(paths[1])])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and len(lines) == 2
    assert lines[0].split("\t")[:2] == [str(paths[0]), expected[0]]


def test_a_version_whose_stored_files_were_changed_is_refused_before_its_code_runs(trained, tmp_path, capsys):
    # given a registered champion, checked
    params = variant(trained, tmp_path / "a")
    register(params)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json")))
    args = ["--params", str(tmp_path / "params.yaml")]
    assert main(["verify", *args]) == 0 and "files are the ones registered" in capsys.readouterr().out
    image = str(domain_rows(read_manifest(params.reports.dir), "digits", ("test",))["path"].iloc[0])
    # when someone who can write the artifact store (not the registry's database) replaces its code
    stored = list((tmp_path / "artifacts").rglob("image_classifier.py"))  # next to the store's mlflow.db
    assert stored, "the version's code in the local artifact store"
    marker = tmp_path / "their-code-ran"
    for code in stored:
        code.write_text(f"open({str(marker)!r}, 'w').write('x')\n" + code.read_text())
    # then predict and the check refuse the version by name, and its code never ran
    assert main(["predict", image, *args]) == 1
    assert "its stored files are not the ones registered" in capsys.readouterr().err
    assert main(["verify", *args]) == 1 and not marker.exists()
    # and so does the champion re-score of the next registration: nothing is promoted over it
    with pytest.raises(RegistryError, match="not the ones registered"):
        register(variant(trained, tmp_path / "b", constant_class=3, registry={
            "tracking_uri": params.registry.tracking_uri}))
    assert not marker.exists()


def test_predict_refuses_a_broken_image_by_name(trained, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    code = main(["predict", "--model", trained.train.out, str(broken)])
    assert code == 1 and str(broken) in capsys.readouterr().err


# --------------------------------------------------------------------------- concurrency


def test_two_registrations_racing_on_one_store_leave_a_consistent_registry(trained, tmp_path):
    # given two different models and one empty store
    a = variant(trained, tmp_path / "a", constant_class=0)
    b = variant(trained, tmp_path / "b")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    # when both register at the same time, in two processes
    procs = [subprocess.Popen([sys.executable, "-m", "autotransfer.cli", "register", "--no-progress",
                               *_overrides(p)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for p in (a, b)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(outputs)
    # then there are two versions, one champion, and it is the better model whatever the order
    client = store_of(a)
    versions = client.search_model_versions("name = 'autotransfer-digits'")
    assert sorted(str(v.version) for v in versions) == ["1", "2"]
    good_hash = json.loads((Path(b.reports.dir) / "metrics.json").read_text())["model_sha256"]
    champion = client.get_model_version_by_alias("autotransfer-digits", "champion")
    assert champion.tags["model_sha256"] == good_hash
    assert all(v.tags.get("decision") in ("promoted", "kept") for v in versions)


def _overrides(params) -> list[str]:
    raw = params.model_dump(mode="json")
    pairs = {"data.root": raw["data"]["root"], "data.source": "synth-digits", "data.target": "digits",
             "data.labeled_per_class": 20, "strategy.dann_below_per_class": 20,
             "reports.dir": raw["reports"]["dir"], "train.out": raw["train"]["out"],
             "registry.tracking_uri": raw["registry"]["tracking_uri"]}
    return [arg for key, value in pairs.items() for arg in ("-S", f"{key}={json.dumps(value)}")]


# --------------------------------------------------------------------------- real servers


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", process)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


def test_registration_and_predict_through_a_real_tracking_server(trained, tmp_path, mlflow_server):
    params = variant(trained, tmp_path / "a")
    params = params.model_copy(update={"registry": params.registry.model_copy(update={"tracking_uri": mlflow_server})})
    report = register(params).to_json()
    assert report["champion"] == "1" and report["tracking_uri"] == mlflow_server
    # the artifacts went to the server's destination, not to a local folder
    assert any((tmp_path / "server-artifacts").rglob("model.safetensors"))
    path = Path(read_manifest(params.reports.dir).query("domain == 'digits' and split == 'test'")["path"].iloc[0])
    served = load_predictor("models:/autotransfer-digits@champion", params)([path])[0]
    assert served.label == load_predictor(params.train.out, params)([path])[0].label


def test_a_token_in_the_tracking_uri_is_written_and_printed_nowhere(trained, tmp_path, mlflow_server, capsys):
    # given a tracking URI with credentials in it (https://user:token@host is how many servers are reached)
    secret = "s3cret-token"
    uri = mlflow_server.replace("http://", f"http://alice:{secret}@")
    params = variant(trained, tmp_path / "a")
    params = params.model_copy(update={"registry": params.registry.model_copy(update={"tracking_uri": uri})})
    # when registered and summarised
    report = register(params)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json")))
    assert main(["summary", "--params", str(tmp_path / "params.yaml")]) == 0
    # then the product says the URI with the token masked, and wrote the token nowhere
    assert report.tracking_uri == mlflow_server.replace("http://", "http://alice:***@")
    written = [p for p in Path(params.reports.dir).rglob("*") if p.is_file() and p.suffix in (".json", ".html", ".md")]
    assert written and not [p for p in written if secret in p.read_text(errors="replace")]
    run = MlflowClient(mlflow_server).get_run(report.run_id)
    assert secret not in json.dumps(run.data.params) and secret not in json.dumps(run.data.tags)
    assert secret not in capsys.readouterr().out
    # and an unreachable server's error names it without the token
    down = f"http://alice:{secret}@127.0.0.1:{free_port()}"
    unreachable = params.model_copy(update={"registry": params.registry.model_copy(
        update={"tracking_uri": down, "request_retries": 0})})
    with pytest.raises(RegistryError) as error:
        register(unreachable)
    assert "alice:***@" in str(error.value) and secret not in str(error.value)


def test_mlflow_models_serve_answers_invocations_with_labels_for_raw_images(trained, tmp_path):
    # given a version registered with at most 3 images per request and 4,000 bytes per image
    params = variant(trained, tmp_path / "a", registry={"serving": {"max_images": 3, "max_image_bytes": 4000}})
    register(params)
    port = free_port()
    # mlflow runs `uvicorn` by name: the venv's bin must be on PATH, as under `make`
    env = {**os.environ, "MLFLOW_TRACKING_URI": params.registry.tracking_uri,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "--env-manager", "local", "-m",
         "models:/autotransfer-digits@champion", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", process, timeout=120)
        rows = domain_rows(read_manifest(params.reports.dir), "digits", ("test",)).iloc[:3]
        payload = {"dataframe_split": {"columns": ["image"], "data": [
            [base64.b64encode(Path(p).read_bytes()).decode()] for p in rows["path"]]}}
        answer = requests.post(f"http://127.0.0.1:{port}/invocations", json=payload, timeout=60)
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        expected = load_predictor(params.train.out, params)([Path(p) for p in rows["path"]])
        assert [p["label"] for p in predictions] == [p.label for p in expected]
        # the top_k param adds the runner-up labels
        payload["params"] = {"top_k": 2}
        answer = requests.post(f"http://127.0.0.1:{port}/invocations", json=payload, timeout=60)
        assert answer.status_code == 200, answer.text
        assert [p["label_2"] for p in answer.json()["predictions"]] == [p.top[1][0] for p in
                                                                         load_predictor(params.train.out, params)(
                                                                             [Path(x) for x in rows["path"]], 2)]
        # a broken image, one too large and one past the request's limit each cost their own row,
        # with the reason; the good ones are labeled as alone; no traceback reaches the client
        good = payload["dataframe_split"]["data"][0]
        big = [base64.b64encode(b"\x89PNG" + bytes(5000)).decode()]
        mixed = {"dataframe_split": {"columns": ["image"], "data": [good, ["bm90IGFuIGltYWdl"], big, good]}}
        answer = requests.post(f"http://127.0.0.1:{port}/invocations", json=mixed, timeout=60)
        assert answer.status_code == 200, answer.text
        rows = answer.json()["predictions"]
        assert rows[0]["label"] == expected[0].label and not rows[0].get("error")
        assert "image 1: not a readable image" in rows[1]["error"] and not rows[1]["label"]
        assert "image 2: 5004 bytes, more than the 4000" in rows[2]["error"]
        assert "image 3: past the 3 images one request may hold" in rows[3]["error"]
        assert "Traceback" not in answer.text
    finally:
        stop(process)


def test_registering_leaves_no_tracking_uri_behind_in_the_environment(trained, tmp_path, monkeypatch):
    # given no $MLFLOW_TRACKING_URI, a registration to a store chosen by params
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    register(variant(trained, tmp_path / "a"))
    # then the next process (or the next params with tracking_uri null) does not inherit that store
    assert "MLFLOW_TRACKING_URI" not in os.environ
