"""`make bench-full`: every table of BENCHMARKS.md from one code, resumable.

The whole run takes about four hours on 2 cores. Each step is recorded in
bench/results/full_run.json as it ends, with a fingerprint of the code it measured: the
product (src/, flows/, tasks/, params.yaml, pyproject.toml) and the bench scripts the
step runs. A rerun skips the steps recorded at the same fingerprint and command whose
result file is still the one that step wrote, so a stopped run resumes where it was, and
any change to the code a step measures runs that step again. `--fresh` forgets the record.

    cd bench && python full.py --peers-python ../.venv-peers/bin/python
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
LEDGER = RESULTS / "full_run.json"
PRODUCT = ("src", "flows", "tasks", "params.yaml", "pyproject.toml")


@dataclass(frozen=True)
class Step:
    output: str  # the results/<output>.json the step writes
    script: str
    args: tuple[str, ...]
    peers: bool = False  # runs in the peers venv (fastai, Lightning, skada)


# Short steps before the long peer ones: a run cut by a deadline keeps more of its tables.
STEPS = (
    Step("orchestration", "orchestration.py", ("--repeats", "3", "--demo")),
    Step("similarity_cost", "similarity_cost.py", ("--repeats", "3")),
    Step("strategy_selection", "strategy_selection.py", ("--arch", "resnet18", "--seeds", "0", "1", "2")),
    Step("efficiency", "efficiency.py", ("--repeats", "5", "--epochs", "2")),
    Step("probe_cache", "probe_cache.py", ("--repeats", "3")),
    Step("peers", "peers.py", ("--seeds", "0", "1", "2", "--scenarios", "all"), peers=True),
    Step("strategy_selection_race_fresh", "strategy_selection.py",
         ("--arch", "resnet18", "--seeds", "3", "4", "5", "--scenarios", "shifted, all labels", "similar, all labels",
          "--name", "strategy_selection_race_fresh")),
    Step("dann", "dann.py", ("--seeds", "10", "11", "12", "13", "14", "--steps", "800"), peers=True),
)


def bench_imports(script: str) -> set[str]:
    """The script and the bench modules it imports, transitively."""
    seen: set[str] = set()
    todo = [script]
    while todo:
        name = todo.pop()
        if name in seen or not (BENCH / name).exists():
            continue
        seen.add(name)
        text = (BENCH / name).read_text()
        todo += [f"{m}.py" for m in re.findall(r"^\s*(?:from|import) (\w+)", text, flags=re.MULTILINE)]
    return seen


def fingerprint(step: Step) -> str:
    """sha256 over the bytes of every file the step's numbers depend on (working tree, not HEAD)."""
    tracked = subprocess.run(["git", "ls-files", *PRODUCT], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    files = sorted({*(REPO / path for path in tracked), *(BENCH / name for name in bench_imports(step.script))})
    digest = hashlib.sha256()
    for path in files:
        digest.update(os.path.relpath(path, REPO).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def result_date(step: Step) -> str | None:
    path = RESULTS / f"{step.output}.json"
    return json.loads(path.read_text()).get("machine", {}).get("date") if path.exists() else None


def written_by(record: dict[str, Any], date: str | None) -> bool:
    """Whether a result dated ``date`` is the one the recorded step wrote (not rewritten since)."""
    return date is not None and record["started"] <= date <= record["ended"]


def done(step: Step, record: dict[str, Any] | None, command: str, code: str) -> bool:
    """Recorded at this code fingerprint and command, and its result file still the one it wrote."""
    if record is None or record["command"] != command or record["fingerprint"] != code:
        return False
    return written_by(record, result_date(step))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers-python", default=sys.executable,
                        help="the peers venv's python (fastai, Lightning, skada): `make .venv-peers/.installed`")
    parser.add_argument("--fresh", action="store_true", help="forget the recorded steps and run every one")
    parser.add_argument("--no-report", action="store_true", help="leave BENCHMARKS.md as it is")
    parser.add_argument("--only", nargs="+", choices=[s.output for s in STEPS], metavar="STEP",
                        help="run (or skip, if done at this code) only these steps, e.g. strategy_selection_race_fresh")
    args = parser.parse_args(argv)

    ledger: dict[str, Any] = {"steps": {}, "invocations": []}
    if LEDGER.exists() and not args.fresh:
        ledger = json.loads(LEDGER.read_text())
    ledger["invocations"].append(now())
    LEDGER.parent.mkdir(parents=True, exist_ok=True)
    LEDGER.write_text(json.dumps(ledger, indent=2) + "\n")
    for step in (s for s in STEPS if not args.only or s.output in args.only):
        python = args.peers_python if step.peers else sys.executable
        command = shlex.join(["python", step.script, *step.args])  # the same record whichever venv path
        before = fingerprint(step)
        if done(step, ledger["steps"].get(step.output), command, before):
            print(f"== {step.output}: recorded at this code, skipped", flush=True)
            continue
        print(f"== {step.output}: {command}", flush=True)
        started, clock = now(), time.perf_counter()
        exit_code = subprocess.run([python, step.script, *step.args], cwd=BENCH).returncode
        if exit_code != 0:
            sys.exit(f"bench-full: {step.output} failed (exit {exit_code}): {command}")
        if fingerprint(step) != before:  # edited while it ran: which code was measured is unknown
            print(f"== {step.output}: its code changed while it ran; not recorded, a rerun measures it again")
            continue
        ledger["steps"][step.output] = {"command": command, "fingerprint": before, "started": started,
                                        "ended": now(), "minutes": round((time.perf_counter() - clock) / 60, 1)}
        LEDGER.write_text(json.dumps(ledger, indent=2) + "\n")
    if not args.no_report:
        subprocess.run([sys.executable, "report.py"], cwd=BENCH, check=True)


if __name__ == "__main__":
    main()
