"""The nightly retraining deployment, on a ``process`` work pool; new data triggers it too.

    python -m flows.deploy                # deploy to the Prefect API in PREFECT_API_URL
    python -m flows.deploy --serve        # local: start `prefect server` on 127.0.0.1 (if none
                                          # answers), deploy, then run a worker until Ctrl-C
                                          # (what `make serve` does)

Besides its cron, the deployment runs on each ``autotransfer.data.changed`` event
(``python -m flows.events`` emits one when data.dvc changes), one run at a time: a run that
arrives while one is running waits in the queue (state AwaitingConcurrencySlot).

prefect.yaml declares the deployment (for ``prefect deploy --all`` too); this module reads
its settings from there. A team points this at its own server by exporting PREFECT_API_URL (and
PREFECT_API_KEY for Prefect Cloud) before running either.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.events import DeploymentEventTrigger
from prefect.exceptions import ObjectAlreadyExists
from prefect.schedules import Cron

from flows.events import DATA_CHANGED, RESOURCE_PREFIX
from flows.retrain import retrain

PROJECT = Path(__file__).resolve().parents[1]
# prefect.yaml is the one declaration of the deployment (`prefect deploy --all` reads it); this
# module deploys the same one from Python, reading its name, entrypoint, pool, schedule, trigger
# and concurrency limit from there.
DECLARED: dict[str, Any] = yaml.safe_load((PROJECT / "prefect.yaml").read_text())["deployments"][0]
POOL: str = DECLARED["work_pool"]["name"]
DEPLOYMENT: str = DECLARED["name"]
ENTRYPOINT: str = DECLARED["entrypoint"]
CRON: str = DECLARED["schedules"][0]["cron"]  # every night at 02:00
TIMEZONE: str = DECLARED["schedules"][0]["timezone"]
TRIGGER: str = DECLARED["triggers"][0]["name"]
CONCURRENCY: int = DECLARED["concurrency_limit"]["limit"]  # a second run queues, not waits hours on the lock
LOCAL_API = "http://127.0.0.1:4200/api"


def data_trigger(resource: str = f"{RESOURCE_PREFIX}*") -> DeploymentEventTrigger:
    """One retrain run per ``autotransfer.data.changed`` event about ``resource`` (``flows/events.py``
    emits them as ``autotransfer.data.<pointer name>``: ``autotransfer.data.data`` for data.dvc)."""
    return DeploymentEventTrigger(name=TRIGGER, expect={DATA_CHANGED}, match={"prefect.resource.id": resource})


def ensure_pool(name: str = POOL) -> None:
    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.create_work_pool(WorkPoolCreate(name=name, type="process"))


def deploy(
    project: Path = PROJECT,
    parameters: dict[str, Any] | None = None,
    cron: str = CRON,
    timezone: str = TIMEZONE,
    pool: str = POOL,
    name: str = DEPLOYMENT,
    data_resource: str = f"{RESOURCE_PREFIX}*",
) -> UUID:
    """Create (or update) the deployment: the flow's code is read from ``project`` when a run starts."""
    ensure_pool(pool)
    source = retrain.from_source(source=str(project), entrypoint=ENTRYPOINT)
    return source.deploy(
        name=name,
        work_pool_name=pool,
        schedules=[Cron(cron, timezone=timezone)],
        triggers=[data_trigger(data_resource)],
        concurrency_limit=ConcurrencyLimitConfig(
            limit=CONCURRENCY, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE
        ),
        parameters=parameters or {"params_file": "params.yaml", "force": False},
        build=False,
        push=False,
        print_next_steps=False,
        ignore_warnings=True,
    )


def _healthy(api: str) -> bool:
    import requests

    try:
        return requests.get(f"{api}/health", timeout=2).ok
    except requests.RequestException:
        return False


def serve(api: str = LOCAL_API) -> int:
    """Local scheduling: a Prefect server on loopback (started if none answers), the deployment, a worker."""
    env = {**os.environ, "PREFECT_API_URL": api}
    started: subprocess.Popen | None = None
    if not _healthy(api):
        host, port = api.split("//")[1].split("/")[0].split(":")
        started = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", port], env=env
        )
        deadline = time.monotonic() + 120
        while not _healthy(api):
            if started.poll() is not None or time.monotonic() > deadline:
                print(f"prefect server did not come up at {api}", file=sys.stderr)
                return 1
            time.sleep(1)
    os.environ["PREFECT_API_URL"] = api
    deployment = deploy()
    print(
        f"deployment retrain/{DEPLOYMENT} ({deployment}): cron '{CRON}' {TIMEZONE} on pool {POOL}; "
        f"UI: {api.removesuffix('/api')}; trigger now: prefect deployment run retrain/{DEPLOYMENT}"
    )
    worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL], env=env)
    try:
        return worker.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        for process in (worker, started):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.deploy", description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help="start a local server if needed, deploy, run a worker")
    parser.add_argument("--api", default=LOCAL_API, help=f"with --serve: the local API URL (default {LOCAL_API})")
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.api)
    print(f"deployment retrain/{DEPLOYMENT}: {deploy()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
