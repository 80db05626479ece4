"""The nightly deployment's declaration (prefect.yaml) matches what flows.deploy creates."""

from __future__ import annotations

from pathlib import Path

import yaml

from flows import deploy as deploy_module

REPO = Path(__file__).resolve().parents[1]


def test_prefect_yaml_declares_the_deployment_flows_deploy_creates():
    declared = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    assert len(declared) == 1
    entry = declared[0]
    # flows.deploy reads its settings from it; what it reads must be what prefect.yaml means
    assert entry["schedules"] == [{"cron": deploy_module.CRON, "timezone": deploy_module.TIMEZONE}]
    assert (REPO / entry["entrypoint"].split(":")[0]).exists() and deploy_module.ENTRYPOINT == entry["entrypoint"]
    # the data trigger and the concurrency limit are the ones flows.deploy gives the deployment
    [trigger] = entry["triggers"]
    made = deploy_module.data_trigger()
    assert trigger["name"] == made.name and set(trigger["expect"]) == made.expect
    assert {k: [v] if isinstance(v, str) else v for k, v in trigger["match"].items()} == dict(made.match.items())
    assert entry["concurrency_limit"] == {"limit": deploy_module.CONCURRENCY, "collision_strategy": "ENQUEUE"}


# The deployment running on a real worker: test_scaleout (Prefect server on PostgreSQL, the
# stack's process worker), which replaced the SQLite-backed copy of the same test.
