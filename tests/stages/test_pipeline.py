"""The stage list: each stage's declared code, what dvc.yaml says, and what invalidates a checkpoint."""

from __future__ import annotations

import shutil
from pathlib import Path

import grimp
import pytest
import yaml

from autotransfer.stages import pipeline
from autotransfer.stages.pipeline import STAGES, code_files, code_version, stage_key

REPO = Path(__file__).resolve().parents[2]
# Imported by stages but not part of what any stage computes: the params schema (its values
# are in every key), the error classes (messages), when a stop signal takes effect, and the stage list itself.
NOT_CODE = {"autotransfer.config", "autotransfer.config.sections", "autotransfer.config.training",
            "autotransfer.config.params", "autotransfer.errors", "autotransfer.stages.pipeline", "autotransfer",
            "autotransfer.ops.telemetry", "autotransfer.uninterrupted"}


def test_dvc_yaml_lists_exactly_each_stages_declared_code():
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for spec in STAGES:
        listed = {d for d in dvc[spec.name]["deps"] if d.startswith("src/")}
        assert listed == {f"src/autotransfer/{entry}" for entry in spec.code}, spec.name


def test_each_stage_declares_all_the_library_code_it_imports():
    graph = grimp.build_graph("autotransfer")
    # config reads the catalog's names only to validate params (whose values every key holds);
    # the stages that use the strategies' traits (pretrain, plan, train) declare catalog.py themselves.
    graph.remove_import(importer="autotransfer.config.sections", imported="autotransfer.catalog")
    for spec in STAGES:
        entry = f"autotransfer.stages.{spec.name}"
        reached = graph.find_upstream_modules(entry) | {entry}
        declared = {_module(path) for path in code_files(spec.name)}
        missing = sorted(m for m in reached - declared - NOT_CODE if not m.endswith("__init__"))
        assert not missing, f"{spec.name} imports code it does not declare: {missing}"


def test_each_stage_runs_its_modules_function_and_promises_the_report_that_function_returns(monkeypatch):
    import importlib
    import inspect
    from typing import get_type_hints

    from autotransfer.config import Params

    asked = []

    def record(module, name):
        asked.append((module, name))
        return lambda params, progress: None

    monkeypatch.setattr(pipeline, "_function", record)
    for spec in STAGES:
        spec.run(Params(), False)
        module, name = asked.pop()
        assert module == spec.name  # the module of the same name as the stage (what the code test above follows)
        function = getattr(importlib.import_module(f"autotransfer.stages.{module}"), name)
        assert list(inspect.signature(function).parameters)[:2] == ["params", "progress"], spec.name
        assert get_type_hints(function)["return"] == get_type_hints(spec.run)["return"], spec.name


def _module(path: Path) -> str:
    parts = path.relative_to(pipeline.PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.fixture
def package_copy(tmp_path, monkeypatch):
    """A copy of the library's source that code versions are computed from."""
    copy = tmp_path / "autotransfer"
    shutil.copytree(pipeline.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(pipeline, "PACKAGE", copy)
    code_version.cache_clear()
    yield copy
    code_version.cache_clear()


def test_a_description_edit_in_config_changes_no_code_version_but_an_engine_edit_does(package_copy):
    before = {spec.name: code_version(spec.name) for spec in STAGES}
    config = package_copy / "config/training.py"
    text = config.read_text()
    assert "Early stopping: epochs without val improvement (0: off)." in text
    config.write_text(text.replace("Early stopping: epochs without val improvement (0: off).",
                                   "Early stopping: epochs without a better val accuracy (0: off)."))
    code_version.cache_clear()
    assert {spec.name: code_version(spec.name) for spec in STAGES} == before
    loop = package_copy / "engine/loop.py"
    loop.write_text(loop.read_text() + "\n# an edit\n")
    code_version.cache_clear()
    after = {spec.name: code_version(spec.name) for spec in STAGES}
    # the plan too: a train.time_budget is fitted by timing the strategy's own steps (engine/warmup.py)
    assert {name for name in after if after[name] != before[name]} == {"pretrain", "plan", "train"}


def test_a_description_edit_in_config_resumes_the_training_checkpoint(data_root, tmp_path, package_copy):
    from autotransfer.stages.pipeline import TRAIN
    from stage_helpers import plan_ready, tiny_params

    # given a finished training run
    params = plan_ready(tiny_params(data_root, tmp_path, train={"epochs": 2, "patience": 0},
                                    strategy={"force": "finetune_all"}))
    first = TRAIN.run(params, progress=False)
    key = stage_key("train", params)
    # when a Field description of config.py is edited
    config = package_copy / "config/training.py"
    config.write_text(config.read_text().replace("Learning rate of the head", "LR of the head"))
    code_version.cache_clear()
    # then the stage's cache key is the same and the checkpoint is resumed, not retrained
    assert stage_key("train", params) == key
    assert TRAIN.run(params, progress=False).resumed_from_epoch == first.epochs_run == 2
    # while an edit of the training code starts afresh
    strategies = package_copy / "transfer/strategies.py"
    strategies.write_text(strategies.read_text() + "\n# an edit\n")
    code_version.cache_clear()
    assert stage_key("train", params) != key
    assert TRAIN.run(params, progress=False).resumed_from_epoch == 0
