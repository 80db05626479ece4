import json
import subprocess
import sys
from pathlib import Path


import pytest

from autotransfer.cli import main


def test_validate_exit_0_on_valid_data(data_root, tmp_path, capsys):
    code = main(["validate", "--no-progress", "--data", str(data_root), "-S", "data.source=src",
                 "-S", "data.target=tgt", "--reports", str(tmp_path / "r")])
    assert code == 0
    assert "validation passed" in capsys.readouterr().out
    assert json.loads((tmp_path / "r/validation.json").read_text())["success"]


def test_validate_exit_1_names_the_truncated_png(data_root, tmp_path, capsys):
    bad = data_root / "tgt/test/b/01.png"
    bad.write_bytes(bad.read_bytes()[:50])
    code = main(["validate", "--no-progress", "--data", str(data_root), "-S", "data.source=src",
                 "-S", "data.target=tgt", "--reports", str(tmp_path / "r")])
    assert code == 1
    out = capsys.readouterr().out
    assert "validation FAILED" in out and bad.as_posix() in out


def test_config_error_exits_2_and_names_the_key(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("validation:\n  min_sidee: 3\n")
    assert main(["validate", "--params", str(params)]) == 2
    assert "validation.min_sidee: unknown key" in capsys.readouterr().err


def test_bad_override_value_exits_2(capsys):
    assert main(["validate", "-S", "data.labeled_per_class=many"]) == 2
    err = capsys.readouterr().err
    assert "data.labeled_per_class" in err and "'many'" in err


def test_demo_data_without_dvc_outside_a_project(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["demo-data", "--no-progress", "--no-dvc", "--out", str(out), "-S", "demo.synth_per_class=10"]) == 0
    printed = capsys.readouterr().out
    assert f"{out.as_posix()}/digits: test 539, train 1079, val 179" in printed
    assert len(list((out / "synth-digits").rglob("*.png"))) == 100


def test_console_script_is_installed():
    exe = Path(sys.executable).with_name("autotransfer")
    result = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("demo-data", "validate", "pretrain", "similarity", "plan", "train", "evaluate", "summary"):
        assert command in result.stdout


def test_pipeline_stages_through_the_cli(data_root, tmp_path, capsys):
    # given a params file for a tiny, fast pipeline on two small domains
    import yaml

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({
        "data": {"root": str(data_root), "source": "src", "target": "tgt"},
        "backbone": {"arch": "small_cnn", "weights": None, "input_size": 32},
        "pretrain": {"out": str(tmp_path / "models/source"), "epochs": 1, "batch_size": 8},
        "train": {"out": str(tmp_path / "models/target"), "epochs": 2, "batch_size": 8, "floor": False},
        "similarity": {"n_per_domain": 20, "probe_folds": 2, "cache_dir": str(tmp_path / "cache")},
        "reports": {"dir": str(tmp_path / "reports")},
        "registry": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"},
    }))
    # when each stage runs in order, then each succeeds and says what it found
    def run(*args: str) -> int:
        return main([*args, "--params", str(params), "--no-progress"])

    assert run("validate") == 0
    assert run("pretrain") == 0
    assert "pretrained small_cnn on src" in capsys.readouterr().out
    assert run("similarity") == 0
    out = capsys.readouterr().out
    assert "PAD" in out and "zero-shot source-head accuracy" in out and "logme" in out
    assert run("plan") == 0
    assert "strategy: " in capsys.readouterr().out
    assert run("plan", "--force", "dann") == 0
    assert capsys.readouterr().out.startswith("strategy: dann")
    assert json.loads((tmp_path / "reports/plan.json").read_text())["forced"] is True
    assert run("plan") == 0
    capsys.readouterr()
    assert run("train") == 0
    assert "trained " in capsys.readouterr().out
    assert run("evaluate") == 0
    assert "test (4 images): accuracy" in capsys.readouterr().out
    assert run("summary") == 0
    out = capsys.readouterr().out
    assert "target test accuracy" in out
    # how it trained: the budget and why (the probe: how it was fitted), and which rule chose
    assert "train.epochs=2, set explicitly" in out or "converged logistic regression" in out
    assert "target val has 2 labeled images in its smallest class (train.min_val_per_class=10)" in out


def test_stage_without_its_inputs_exits_1_and_says_what_to_run(tmp_path, capsys):
    code = main(["similarity", "-S", f"reports.dir={tmp_path}", "-S", f"registry.tracking_uri=sqlite:///{tmp_path}/m.db",
                 "--no-progress"])
    assert code == 1
    assert "run `autotransfer validate` first" in capsys.readouterr().err


def test_unknown_forced_strategy_is_a_config_error(capsys):
    assert main(["plan", "--force", "magic"]) == 2
    assert "strategy.force" in capsys.readouterr().err


def test_summary_without_a_run_says_what_to_do(tmp_path, capsys):
    assert main(["summary", "-S", f"reports.dir={tmp_path}"]) == 1
    assert "make run" in capsys.readouterr().err


def test_version_is_the_installed_package_version(capsys):
    from importlib.metadata import version

    import autotransfer

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"autotransfer {version('autotransfer')}"
    assert version("autotransfer") == autotransfer.__version__  # pyproject.toml and the package agree


def test_every_command_and_argument_has_help_and_the_top_level_has_examples():
    import argparse

    from autotransfer.cli import build_parser

    parser = build_parser()
    assert "examples:" in parser.format_help() and "autotransfer predict" in parser.format_help()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    undocumented = [f"{name} {action.dest}" for name, sub in commands.choices.items() for action in sub._actions
                    if not action.help]
    assert undocumented == []
    assert all(choice.help for choice in commands._choices_actions)


def test_each_stage_is_a_command_made_from_the_stage_list():
    import argparse

    from autotransfer.cli import build_parser, cmd_stage, cmd_validate
    from autotransfer.stages.pipeline import STAGES

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    # every stage of the one list is a subcommand whose help is the stage's summary
    helps = {choice.dest: choice.help for choice in commands._choices_actions}
    assert all(helps[spec.name] == spec.summary for spec in STAGES)
    # run by the one generic command (validate has its own: --data, --reports and its file listing)
    handlers = {spec.name: commands.choices[spec.name].get_default("handler") for spec in STAGES}
    assert handlers == {spec.name: cmd_validate if spec.name == "validate" else cmd_stage for spec in STAGES}
