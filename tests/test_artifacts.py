"""Typed stage contracts: a missing or renamed field is an error naming the file and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autotransfer.artifacts import PLAN_JSON, PlanReport, TrainReport, read_report
from autotransfer.cli import main
from autotransfer.errors import StageInputError
from stage_helpers import plan_ready, tiny_params


@pytest.fixture
def planned(data_root, tmp_path):
    return plan_ready(tiny_params(data_root, tmp_path, train={"epochs": 1}))


def test_a_written_report_reads_back_equal(planned):
    path = tmp_plan(planned)
    plan = read_report(path, PlanReport, "plan")
    assert plan.to_json() == json.loads(path.read_text())


def test_a_renamed_field_names_the_file_both_fields_and_the_command_to_rerun(planned):
    # given plan.json with "chosen" renamed, as an older or hand-edited file would have it
    path = tmp_plan(planned)
    raw = json.loads(path.read_text())
    raw["choice"] = raw.pop("chosen")
    path.write_text(json.dumps(raw))
    # when the train stage reads it, then the error names the file, the missing and the unknown field
    with pytest.raises(StageInputError) as error:
        read_report(path, PlanReport, "plan")
    message = str(error.value)
    assert str(path) in message and "chosen" in message and "choice" in message
    assert "rerun `autotransfer plan`" in message


def test_a_field_of_the_wrong_type_is_named(planned):
    path = tmp_plan(planned)
    raw = json.loads(path.read_text())
    raw["candidates"][0]["backbone_lr_mult"] = "fast"
    path.write_text(json.dumps(raw))
    with pytest.raises(StageInputError, match=r"candidates\.0\.backbone_lr_mult"):
        read_report(path, PlanReport, "plan")


def test_the_cli_reports_a_broken_contract_by_name_with_exit_1(planned, tmp_path, capsys):
    import yaml

    path = tmp_plan(planned)
    raw = json.loads(path.read_text())
    del raw["candidates"]
    path.write_text(json.dumps(raw))
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(planned.model_dump(mode="json")))
    assert main(["train", "--params", str(params_file), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"{path}: does not match what `autotransfer plan` writes (candidates: Field required)" in err


def test_a_missing_report_says_which_command_makes_it(tmp_path):
    with pytest.raises(StageInputError, match=r"train\.json: not found; run `autotransfer train` first"):
        read_report(tmp_path / "train.json", TrainReport, "train")


def tmp_plan(params):
    return Path(params.reports.dir) / PLAN_JSON
