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


def test_library_never_imports_prefect_and_only_the_registry_package_imports_mlflow():
    users: dict[str, list[str]] = {"prefect": [], "mlflow": []}
    for path in (REPO / "src/autotransfer").rglob("*.py"):
        for name in imported_modules(path) & users.keys():
            users[name].append(path.relative_to(REPO / "src/autotransfer").as_posix())
    assert users["prefect"] == []
    assert users["mlflow"] and all(path.startswith("registry/") for path in users["mlflow"]), users["mlflow"]


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
    links = re.findall(r"\[(test_\w+)\]\((tests/[\w/]+\.py)\)", text)
    assert len(links) >= 40
    for name, path in links:
        assert f"def {name}(" in (REPO / path).read_text(), f"{path} has no {name}"


def test_no_import_cycle_between_modules_of_the_library():
    import grimp

    graph = grimp.build_graph("autotransfer")
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if imported != module and graph.chain_exists(imported, module):
                cycles.append(f"{module} -> {imported} -> ... -> {module}")
    assert not cycles, cycles[:5]


def test_import_contracts_hold():
    import subprocess
    import sys

    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]


def test_help_and_stack_commands_load_neither_torch_nor_mlflow():
    import subprocess
    import sys

    code = ("import sys; from autotransfer import cli; p = cli.build_parser(); "
            "p.parse_args(['summary']); p.parse_args(['stack', 'down']); "
            "import autotransfer.ops.stack; "
            "assert not {'torch', 'mlflow'} & set(sys.modules), sorted({'torch', 'mlflow'} & set(sys.modules))")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
