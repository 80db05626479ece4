"""The nightly deployment against a real `prefect server start` on 127.0.0.1 and a real worker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows import deploy as deploy_module
from registry_helpers import demo_params
from test_flows import params_file, versions
from servers import free_port, stop, wait_http

REPO = Path(__file__).resolve().parents[1]


def test_prefect_yaml_declares_the_deployment_flows_deploy_creates():
    declared = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    assert len(declared) == 1
    entry = declared[0]
    assert entry["name"] == deploy_module.DEPLOYMENT and entry["entrypoint"] == deploy_module.ENTRYPOINT
    assert entry["work_pool"]["name"] == deploy_module.POOL
    assert entry["schedules"] == [{"cron": deploy_module.CRON, "timezone": deploy_module.TIMEZONE}]
    assert (REPO / entry["entrypoint"].split(":")[0]).exists()


@pytest.fixture
def prefect_server(tmp_path):
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    process = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{port}/api"
    try:
        wait_http(f"{api}/health", process)
        yield api, env
    finally:
        stop(process)


@pytest.mark.slow
def test_nightly_deployment_has_its_cron_and_a_triggered_run_completes_on_a_worker(demo_root, tmp_path,
                                                                                    prefect_server):
    api, env = prefect_server
    params = demo_params(demo_root, tmp_path / "work")
    file = params_file(params, tmp_path / "params.yaml")
    with temporary_settings({PREFECT_API_URL: api}):
        # given the deployment, created on the server
        deployment_id = deploy_module.deploy(parameters={"params_file": file, "force": False})
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment(deployment_id)
            assert deployment.work_pool_name == deploy_module.POOL
            [schedule] = deployment.schedules
            assert schedule.schedule.cron == deploy_module.CRON and schedule.schedule.timezone == "UTC"
            assert schedule.active
        # when a run is triggered and a process worker polls the pool
        flow_run = run_deployment(f"retrain/{deploy_module.DEPLOYMENT}", timeout=0)
        worker_env = {**env, "PREFECT_API_URL": api,
                      "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"}
        worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", deploy_module.POOL],
                                  env=worker_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 400
            with get_client(sync_client=True) as client:
                while True:
                    state = client.read_flow_run(flow_run.id).state
                    if state is not None and state.is_final():
                        break
                    assert time.monotonic() < deadline, f"flow run still {state}"
                    time.sleep(2)
        finally:
            stop(worker)
    # then it completed: the model is registered in the run's store
    assert state.is_completed(), state
    assert len(versions(params)) == 1
