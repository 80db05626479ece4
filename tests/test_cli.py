import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autotransfer.cli import main
from conftest import make_domain


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
    for command in ("demo-data", "validate"):
        assert command in result.stdout
