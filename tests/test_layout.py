"""The house rules of docs/architecture.md that a test can check."""

from __future__ import annotations

import ast
import os
import tomllib
from pathlib import Path

import yaml

from autotransfer.stages.pipeline import stage_names

REPO = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_top_level_layout():
    for name in ("flows", "tasks", "src/autotransfer", "tests", "mlflow", "bench", "params.yaml", "dvc.yaml",
                 "dvc.lock", "data.dvc", "pyproject.toml", "Makefile", "README.md", ".ci/run", "mlflow/README.md"):
        assert (REPO / name).exists(), name


def test_library_never_imports_prefect_and_mlflow_stays_in_one_module():
    users: dict[str, list[str]] = {"prefect": [], "mlflow": []}
    for path in (REPO / "src/autotransfer").rglob("*.py"):
        for name in imported_modules(path) & users.keys():
            users[name].append(path.name)
    assert users["prefect"] == []
    assert len(users["mlflow"]) <= 1


def test_dvc_pipeline_follows_the_stage_list():
    stages = list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    assert stages == stage_names()
    for name in stages:
        assert yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][name]["cmd"].startswith(f"autotransfer {name}")


def test_telemetry_is_off():
    import autotransfer  # noqa: F401

    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert "analytics = false" in (REPO / ".dvc/config").read_text()


def test_dependencies_are_pinned_to_what_installs_here():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.14.1" in deps and "torchvision==0.29.1" in deps
    assert any(d.startswith("mlflow>=3.17,<3.18") for d in deps)
    for name in ("prefect", "dvc", "great-expectations", "pandas"):
        assert any(d.startswith(name) for d in deps), name


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci/run").read_text()
    assert "make test" in ci
    assert "make test" in (REPO / "README.md").read_text()
    assert "make run" in (REPO / "README.md").read_text()


def test_reliability_table_links_only_tests_that_exist():
    import re

    text = (REPO / "RELIABILITY.md").read_text()
    links = re.findall(r"\[(test_\w+)\]\((tests/\w+\.py)\)", text)
    assert len(links) >= 40
    for name, path in links:
        assert f"def {name}(" in (REPO / path).read_text(), f"{path} has no {name}"
