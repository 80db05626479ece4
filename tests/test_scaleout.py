"""Team-scale engines on 127.0.0.1: MLflow on PostgreSQL + S3, Prefect on PostgreSQL with a worker.

The stack is conftest's session fixture ``team`` (autotransfer.ops.stack: what `make stack-up`
starts), stopped at the end of the session even when a test fails. The DVC remote on the
same S3 server: test_dvc; 2-process DDP training: test_distributed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
import yaml
from mlflow import MlflowClient

from autotransfer.io.data import domain_rows, load_images, read_manifest
from autotransfer.models.weights import load_trained_model
from autotransfer.registry.register import register
from autotransfer.analysis.metrics import predict_names
from autotransfer.ops.processes import StackError, free_port, postgres_bin
from autotransfer.ops.stack import MLFLOW_BUCKET, POOL, Stack
from registry_helpers import demo_params, run_pipeline
from servers import running
from test_flows import params_file

pytestmark = [pytest.mark.slow, pytest.mark.scaleout]
REPO = Path(__file__).resolve().parents[1]


def psql(stack: Stack, database: str, query: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(f"{stack.postgres_url}/{database}", password=stack.db_password) as connection:
        return connection.execute(query).fetchall()


def s3_keys(stack: Stack, bucket: str) -> list[str]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=stack.s3_endpoint, aws_access_key_id=stack.access_key,
                      aws_secret_access_key=stack.secret_key, region_name="us-east-1")
    return [item["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for item in page.get("Contents", [])]


def client_env(stack: Stack) -> dict[str, str]:
    """What a team member's shell has: the tracking URI, and no S3 credentials at all."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_S3"))}
    return {**env, "MLFLOW_TRACKING_URI": stack.mlflow_uri}


def test_mlflow_on_postgres_and_s3_registers_promotes_and_serves_the_champion(team, small_demo_root, tmp_path,
                                                                             monkeypatch):
    for name in [k for k in os.environ if k.startswith(("AWS_", "MLFLOW_S3"))]:
        monkeypatch.delenv(name)  # the client never holds S3 credentials
    # given a trained pipeline whose registry is the team's MLflow server (its own model name: the nightly
    # deployment test trains the same weights on this stack, and the same weights are never registered twice)
    params = run_pipeline(demo_params(small_demo_root, tmp_path / "work", store=team.mlflow_uri,
                                      registry={"model_name": "team-champion"}))
    # when it registers
    decision = register(params).to_json()
    # then the version is the champion, recorded in PostgreSQL, its files in the S3 bucket
    assert decision["champion"] == str(decision["version"]) and decision["decision"] == "promoted", decision
    assert psql(team, "mlflow", "select name, version from model_versions where name = 'team-champion'") == [
        ("team-champion", 1)]
    keys = s3_keys(team, MLFLOW_BUCKET)
    assert any(k.endswith("model.safetensors") for k in keys) and any(k.endswith("MLmodel") for k in keys)
    champion = MlflowClient(team.mlflow_uri).get_model_version_by_alias("team-champion", "champion")
    assert str(champion.version) == str(decision["version"])
    # and `predict` loads models:/team-champion@champion (the name from params) back through the server,
    # without S3 keys
    image = next((small_demo_root / "digits/test/7").glob("*.png"))
    out = subprocess.run([str(Path(sys.executable).with_name("autotransfer")), "predict", "--json",
                          "-S", "registry.model_name=team-champion", str(image)],
                         cwd=tmp_path, env=client_env(team), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    [prediction] = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    # ... and answers what the trained model answers in memory (a 2-epoch model need not be right about a 7)
    memory = load_trained_model(params.train.out)
    rows = domain_rows(read_manifest(params.reports.dir), "digits", ("test",))
    raw = load_images(rows[rows["path"] == str(image)], (), memory.model.input_size)
    [expected] = predict_names(memory.model, raw, memory.normalization, memory.head_classes, torch.device("cpu"))
    assert prediction["label"] == expected, prediction


def test_prefect_on_postgres_runs_the_nightly_deployment_on_a_worker(team, small_demo_root, tmp_path, request):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from flows import deploy as deploy_module

    assert POOL == deploy_module.POOL
    params = demo_params(small_demo_root, tmp_path / "work", store=team.mlflow_uri)
    file = params_file(params, tmp_path / "params.yaml")
    with temporary_settings({PREFECT_API_URL: team.prefect_api, PREFECT_API_AUTH_STRING: team.prefect_auth}):
        # given the deployment on the team's server, with its cron
        deployment_id = deploy_module.deploy(parameters={"params_file": file, "force": False})
        request.addfinalizer(lambda: _delete_deployment(team, deployment_id))  # its data trigger ends with it
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment(deployment_id)
            [schedule] = deployment.schedules
            assert deployment.work_pool_name == POOL
            assert schedule.schedule.cron == deploy_module.CRON and schedule.schedule.timezone == "UTC"
        # when a run is triggered, the stack's worker picks it up
        flow_run = run_deployment(f"retrain/{deploy_module.DEPLOYMENT}", timeout=0)
        deadline = time.monotonic() + 400
        with get_client(sync_client=True) as client:
            while True:
                state = client.read_flow_run(flow_run.id).state
                if state is not None and state.is_final():
                    break
                assert time.monotonic() < deadline, f"flow run still {state}"
                time.sleep(2)
    # then it completed, the run lives in PostgreSQL and its model in the team's registry
    assert state.is_completed(), state
    assert psql(team, "prefect", f"select state_type from flow_run where id = '{flow_run.id}'") == [("COMPLETED",)]
    versions = MlflowClient(team.mlflow_uri).search_model_versions("name = 'autotransfer-digits'")
    assert any(v.tags.get("data_hash") for v in versions)
    # and someone on the host without the stack's password can neither list nor start runs (the
    # deployment takes a params file: a run started with another one trains and writes anywhere)
    import requests

    deployment_runs = f"{team.prefect_api}/deployments/{deployment_id}/create_flow_run"
    for auth in (None, ("autotransfer", "guess")):
        assert requests.post(f"{team.prefect_api}/flow_runs/filter", json={}, auth=auth, timeout=10).status_code == 401
        assert requests.post(deployment_runs, json={"parameters": {"params_file": "/etc/passwd"}}, auth=auth,
                             timeout=10).status_code == 401
    user, password = team.prefect_auth.split(":", 1)
    assert requests.post(f"{team.prefect_api}/flow_runs/filter", json={}, auth=(user, password),
                         timeout=10).status_code == 200
    assert (team.root / "env").stat().st_mode & 0o777 == 0o600


def test_a_deployment_run_cancelled_through_the_worker_stops_and_registers_nothing(team, small_demo_root, tmp_path,
                                                                                 request):
    import psutil
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from flows import deploy as deploy_module

    # given a deployment run training on the stack's worker (its own model name: nothing else registers it)
    from safetensors.torch import save_file

    from autotransfer.models.backbones import TransferModel

    weights = tmp_path / "small_cnn.safetensors"  # a start model: pretrain is skipped, train is what is tested
    save_file(TransferModel("small_cnn", 10, 32).state_dict(), str(weights))
    params = demo_params(small_demo_root, tmp_path / "work", store=team.mlflow_uri, strategy={"force": "finetune_all"},
                         train={"epochs": 400, "batch_size": 8, "patience": 0}, backbone={"weights": str(weights)},
                         registry={"model_name": "cancelled-run"})
    file = params_file(params, tmp_path / "params.yaml")
    checkpoint = Path(params.train.out) / "runs/finetune_all/checkpoint.pt"
    worker = psutil.Process(team.pids["worker"])
    with temporary_settings({PREFECT_API_URL: team.prefect_api, PREFECT_API_AUTH_STRING: team.prefect_auth}):
        deployment_id = deploy_module.deploy(parameters={"params_file": file, "force": True}, name="cancel-test")
        request.addfinalizer(lambda: _delete_deployment(team, deployment_id))
        flow_run = run_deployment("retrain/cancel-test", timeout=0)
        deadline = time.monotonic() + 400
        while not checkpoint.exists():
            assert time.monotonic() < deadline, "no checkpoint"
            time.sleep(0.2)
        children = worker.children(recursive=True)
        assert children, "the worker runs the flow in a process of its own"
        # when it is cancelled as a user would
        started = time.monotonic()
        cancel = subprocess.run([sys.executable, "-m", "prefect", "flow-run", "cancel", str(flow_run.id)],
                                env={**os.environ, "PREFECT_API_URL": team.prefect_api,
                                                   "PREFECT_API_AUTH_STRING": team.prefect_auth}, capture_output=True,
                                text=True, timeout=60)
        assert cancel.returncode == 0, cancel.stderr
        with get_client(sync_client=True) as client:
            while True:
                state = client.read_flow_run(flow_run.id).state
                if state is not None and state.is_final():
                    break
                assert time.monotonic() < started + 60, f"flow run still {state}"
                time.sleep(0.5)
    _, alive = psutil.wait_procs(children, timeout=30)
    print(f"\ncancelled through the worker: {state.type.value} after {time.monotonic() - started:.1f} s; "
          f"processes left {len(alive)} of {len(children)}")
    # then the run is Cancelled, its flow process is gone, nothing was registered, the checkpoint is whole
    assert state.is_cancelled(), state
    assert alive == []
    assert MlflowClient(team.mlflow_uri).search_model_versions("name = 'cancelled-run'") == []
    assert not (Path(params.train.out) / "model.safetensors").exists()
    assert torch.load(checkpoint, weights_only=True)["epoch"] >= 1


def _delete_deployment(team, deployment_id) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: team.prefect_api, PREFECT_API_AUTH_STRING: team.prefect_auth}), \
            get_client(sync_client=True) as client:
        client.delete_deployment(deployment_id)


def _cancel(team, flow_run_ids) -> None:
    for flow_run_id in flow_run_ids:
        subprocess.run([sys.executable, "-m", "prefect", "flow-run", "cancel", str(flow_run_id)],
                       env={**os.environ, "PREFECT_API_URL": team.prefect_api,
                                                   "PREFECT_API_AUTH_STRING": team.prefect_auth}, capture_output=True, timeout=60)


def test_a_data_change_event_starts_exactly_one_run_and_a_second_one_queues(team, small_demo_root, tmp_path, request):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings
    from safetensors.torch import save_file

    from autotransfer.models.backbones import TransferModel
    from flows import deploy as deploy_module

    weights = tmp_path / "small_cnn.safetensors"  # long enough to still run when the second event comes
    save_file(TransferModel("small_cnn", 10, 32).state_dict(), str(weights))
    params = demo_params(small_demo_root, tmp_path / "work", store=team.mlflow_uri, strategy={"force": "finetune_all"},
                         train={"epochs": 400, "batch_size": 8, "patience": 0}, backbone={"weights": str(weights)},
                         registry={"model_name": "event-run"})
    file = params_file(params, tmp_path / "params.yaml")
    pointer, state = tmp_path / "eventdata.dvc", tmp_path / "state.json"
    env = {**os.environ, "PREFECT_API_URL": team.prefect_api,
                                                   "PREFECT_API_AUTH_STRING": team.prefect_auth}

    def data_changes_to(md5: str) -> str:
        pointer.write_text(yaml.safe_dump({"outs": [{"md5": f"{md5}.dir", "path": "data"}]}))
        out = subprocess.run([sys.executable, "-m", "flows.events", "--once", "--data-dvc", str(pointer),
                              "--state", str(state)], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout

    with temporary_settings({PREFECT_API_URL: team.prefect_api, PREFECT_API_AUTH_STRING: team.prefect_auth}), \
            get_client(sync_client=True) as client:
        # given the deployment with its trigger on this data's events, and the data's md5 recorded
        deployment_id = deploy_module.deploy(parameters={"params_file": file, "force": True}, name="event-test",
                                             data_resource="autotransfer.data.eventdata")
        request.addfinalizer(lambda: _delete_deployment(team, deployment_id))
        deployment = client.read_deployment(deployment_id)
        assert deployment.global_concurrency_limit.limit == 1
        assert deployment.concurrency_options.collision_strategy.value == "ENQUEUE"
        assert "recorded" in data_changes_to("a" * 32)

        def flow_runs() -> list:  # the runs events started (not the cron's coming nights)
            return sorted((r for r in client.read_flow_runs(deployment_filter=DeploymentFilter(
                id=DeploymentFilterId(any_=[deployment_id]))) if not r.auto_scheduled), key=lambda r: r.created)

        def wait_for(n: int) -> list:
            deadline = time.monotonic() + 120
            while len(runs := flow_runs()) < n:
                assert time.monotonic() < deadline, f"{len(runs)} flow runs, expected {n}"
                time.sleep(1)
            return runs

        # when the data changes, one event is emitted and exactly one flow run starts
        try:
            assert "autotransfer.data.changed" in data_changes_to("b" * 32)
            wait_for(1)
            time.sleep(10)  # time for a second (wrong) one to appear
            assert len(flow_runs()) == 1
            # an unchanged data.dvc emits nothing
            assert "recorded" not in data_changes_to("b" * 32) and len(flow_runs()) == 1
            # a second change while the first still runs queues its run behind it
            deadline = time.monotonic() + 300
            while flow_runs()[0].state.type.value != "RUNNING":
                assert time.monotonic() < deadline, flow_runs()[0].state
                time.sleep(1)
            data_changes_to("c" * 32)
            first, second = wait_for(2)
            seen = set()
            for _ in range(30):
                first, second = flow_runs()
                running = [r for r in (first, second) if r.state.type.value == "RUNNING"]
                assert len(running) <= 1, "two runs at once despite the concurrency limit"
                seen.add(second.state.name)
                if "AwaitingConcurrencySlot" in seen:
                    break
                time.sleep(1)
            print(f"\nevent runs: {[(r.name, r.state.name) for r in flow_runs()]}")
            assert "AwaitingConcurrencySlot" in seen, seen
        finally:
            _cancel(team, [r.id for r in flow_runs()])
        deadline = time.monotonic() + 120
        while not all(r.state.is_final() for r in flow_runs()):
            assert time.monotonic() < deadline, [r.state for r in flow_runs()]
            time.sleep(1)


def bare_stack() -> Stack:
    """A stack not started, in a folder the postgres user can reach (skips without PostgreSQL)."""
    try:
        postgres_bin("initdb")
    except StackError as exc:
        pytest.skip(str(exc))
    root = Path(tempfile.mkdtemp(prefix="autotransfer-stack-"))
    root.chmod(0o755)
    return Stack(root, ports={name: free_port() for name in ("postgres", "s3", "mlflow", "prefect")})


def test_the_stacks_database_refuses_a_local_user_without_its_password(tmp_path):
    stack = bare_stack()
    root = stack.root
    marker = Path(tempfile.mkdtemp()) / "ran-as-postgres"
    marker.parent.chmod(0o777)
    try:
        stack.start_postgres()
        # given another local user on the host, over TCP and over the cluster's socket
        attack = f"COPY (SELECT 1) TO PROGRAM 'touch {marker}'"
        for host in ("127.0.0.1", str(root / "postgres")):
            as_nobody = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
            tried = subprocess.run([*as_nobody, str(postgres_bin("psql")), "-h", host, "-p", str(stack.ports["postgres"]),
                                    "-U", "postgres", "-d", "postgres", "-w", "-c", attack],
                                   capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
            # then the connection is refused (TCP: for want of the password; the socket: it lies in
            # the cluster's 0700 folder) and the command never ran
            refusal = "password" if host == "127.0.0.1" else "Permission denied"
            assert tried.returncode != 0 and refusal in tried.stderr, (host, tried.stderr)
            assert not marker.exists()
        # and no process's command line carries the password (it travels as PGPASSWORD only)
        import psutil

        assert not any(stack.db_password in " ".join(proc.info["cmdline"] or [])
                       for proc in psutil.process_iter(["cmdline"]))
        # and the stack itself connects with it (state.json, 0600), and made its databases
        assert (root / "state.json").stat().st_mode & 0o777 == 0o600
        assert json.loads((root / "state.json").read_text())["db_password"] == stack.db_password
        assert {"mlflow", "prefect"} <= {row[0] for row in psql(stack, "postgres", "select datname from pg_database")}
        assert not (root / "postgres.password").exists()
    finally:
        stack.down()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(marker.parent, ignore_errors=True)


def test_stack_down_stops_every_server(tmp_path):
    stack = bare_stack()
    root = stack.root
    # given a stack without MLflow/Prefect (the quick part)
    try:
        stack.start_postgres()
        stack.start_s3()
        pids = dict(stack.pids)
    finally:
        # when it goes down
        stopped = stack.down()
    # then both servers are gone and the state says nothing runs
    assert set(stopped) == {"postgres", "s3"}
    for pid in pids.values():
        assert not running(pid)
    assert Stack.load(root).pids == {}
    shutil.rmtree(root, ignore_errors=True)
    with pytest.raises(Exception):
        psql(stack, "postgres", "select 1")


def test_the_stacks_s3_server_accepts_only_its_own_key_and_keeps_motos_control_api_shut(s3_stack):
    import boto3
    import requests
    from botocore.exceptions import ClientError

    def client(key_id: str, secret: str):
        return boto3.client("s3", endpoint_url=s3_stack.s3_endpoint, aws_access_key_id=key_id,
                            aws_secret_access_key=secret, region_name="us-east-1")

    # given an object written with the stack's key (created by the server's IAM at start, kept in state.json 0600)
    own = client(s3_stack.access_key, s3_stack.secret_key)
    own.put_object(Bucket=MLFLOW_BUCKET, Key="models/m-1/artifacts/code.py", Body=b"registered")
    state = json.loads(s3_stack.state_file.read_text())
    assert state["secret_key"] == s3_stack.secret_key and s3_stack.state_file.stat().st_mode & 0o777 == 0o600
    # when another local user tries to replace it: made-up keys, the right key id with a guessed secret, unsigned
    for key_id, secret, refusal in (("AKIAANYONE", "guess", "InvalidAccessKeyId"),
                                    (s3_stack.access_key, "guess", "SignatureDoesNotMatch")):
        with pytest.raises(ClientError) as refused:
            client(key_id, secret).put_object(Bucket=MLFLOW_BUCKET, Key="models/m-1/artifacts/code.py", Body=b"evil")
        assert refused.value.response["Error"]["Code"] == refusal
    unsigned = requests.put(f"{s3_stack.s3_endpoint}/{MLFLOW_BUCKET}/models/m-1/artifacts/code.py", data=b"evil",
                            timeout=10)
    assert unsigned.status_code == 403
    # or goes round S3 through moto's control API (its dump holds every secret key; its reset wipes the buckets)
    dump = requests.get(f"{s3_stack.s3_endpoint}/moto-api/data.json", timeout=10)
    reset = requests.post(f"{s3_stack.s3_endpoint}/moto-api/reset", timeout=10)
    assert dump.status_code == reset.status_code == 403 and s3_stack.secret_key not in dump.text
    # then every attempt was refused and the object is the registered one
    assert own.get_object(Bucket=MLFLOW_BUCKET, Key="models/m-1/artifacts/code.py")["Body"].read() == b"registered"
    own.delete_object(Bucket=MLFLOW_BUCKET, Key="models/m-1/artifacts/code.py")


def test_every_server_of_the_stack_listens_on_loopback_only(team):
    import psutil

    # given the running stack: PostgreSQL, S3, MLflow, Prefect and the worker, with every child they started
    listening = []
    for name, pid in team.pids.items():
        parent = psutil.Process(pid)
        for process in (parent, *parent.children(recursive=True)):
            listening += [(name, c.laddr.ip, c.laddr.port) for c in process.net_connections(kind="inet")
                          if c.status == psutil.CONN_LISTEN]
    # then each server listens, and on 127.0.0.1 only: nothing on 0.0.0.0, ::, or a routable address
    assert {"postgres", "s3", "mlflow", "prefect"} <= {name for name, _, _ in listening}, listening
    assert all(ip == "127.0.0.1" for _, ip, _ in listening), listening
