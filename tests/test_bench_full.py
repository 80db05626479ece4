"""`make bench-full` resumes: a step done at the same code is skipped, a changed one runs again."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

TOY = """
import json, sys
from datetime import datetime, timezone
from pathlib import Path

results, runs = Path(sys.argv[1]), Path(sys.argv[2])
runs.write_text(runs.read_text() + "x" if runs.exists() else "x")
if "--fail" in sys.argv:
    sys.exit(3)
date = datetime.now(timezone.utc).isoformat(timespec="seconds")
(results / "toy.json").write_text(json.dumps({"machine": {"date": date}}))
"""


@pytest.fixture
def full(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_full", REPO / "bench/full.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_full", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "RESULTS", tmp_path)
    monkeypatch.setattr(module, "LEDGER", tmp_path / "full_run.json")
    script = tmp_path / "toy.py"
    script.write_text(TOY)
    module.toy = lambda *extra: (module.Step("toy", str(script), (str(tmp_path), str(tmp_path / "runs"), *extra)),)
    return module


def runs(tmp_path: Path) -> int:
    return len((tmp_path / "runs").read_text()) if (tmp_path / "runs").exists() else 0


def test_a_step_done_at_this_code_is_skipped_and_a_changed_one_runs_again(full, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(full, "STEPS", full.toy())
    full.main(["--no-report"])
    full.main(["--no-report"])
    assert runs(tmp_path) == 1
    assert "toy: recorded at this code, skipped" in capsys.readouterr().out
    ledger = json.loads((tmp_path / "full_run.json").read_text())
    assert len(ledger["invocations"]) == 2 and ledger["steps"]["toy"]["fingerprint"] == full.fingerprint(full.STEPS[0])

    (tmp_path / "toy.py").write_text(TOY + "\n# the measured code changed\n")
    full.main(["--no-report"])
    assert runs(tmp_path) == 2

    (tmp_path / "toy.json").write_text(json.dumps({"machine": {"date": "2099-01-01T00:00:00+00:00"}}))
    full.main(["--no-report"])  # the result was rewritten by something else: measured again
    assert runs(tmp_path) == 3

    full.main(["--no-report", "--fresh"])
    assert runs(tmp_path) == 4
    assert len(json.loads((tmp_path / "full_run.json").read_text())["invocations"]) == 1


def test_only_runs_the_steps_named(full, tmp_path, monkeypatch):
    first, second = full.toy()[0], full.toy("--second")[0]
    monkeypatch.setattr(full, "STEPS", (first, full.Step("other", second.script, second.args)))
    full.main(["--no-report", "--only", "other"])
    assert runs(tmp_path) == 1
    assert list(json.loads((tmp_path / "full_run.json").read_text())["steps"]) == ["other"]


def test_a_failed_step_stops_the_run_names_itself_and_is_not_recorded(full, tmp_path, monkeypatch):
    monkeypatch.setattr(full, "STEPS", full.toy("--fail"))
    with pytest.raises(SystemExit, match="bench-full: toy failed \\(exit 3\\)"):
        full.main(["--no-report"])
    assert not (tmp_path / "full_run.json").exists() or "toy" not in json.loads(
        (tmp_path / "full_run.json").read_text())["steps"]


def test_a_steps_fingerprint_covers_the_bench_modules_it_imports(full):
    assert {"peers.py", "strategy_selection.py", "common.py"} <= full.bench_imports("peers.py")
    assert "report.py" not in full.bench_imports("peers.py")
    peers, dann = (next(s for s in full.STEPS if s.output == name) for name in ("peers", "dann"))
    assert full.fingerprint(peers) != full.fingerprint(dann)
