"""The recipes before the step budgets and the converged probe, on the held-out cells (the "before" columns).

Issue "Recipes that fit the target" measured the product at ef99f3c (epoch budgets: 10 epochs
whatever the target's size, an SGD linear probe for those steps, early stopping and the
floor on whatever val there is). This runs that commit's own code, unchanged, from a git
worktree, through its CLI, on the same held-out cells as bench/heldout.py (same targets,
label caps, label and training seeds, data seed), so every strategy has a "before" beside
today's "after". The label draw is that commit's: same cap and seed, not necessarily the
same images.

    python bench/heldout_before.py [--commit ef99f3c] [--targets letters scenes textures]
                                   [--labels 3 10 30] [--seeds 0] [--data-seed 1]

Each run: bench/results/heldout_before_runs/<cell>.json; report.py tables them beside §11. When that
commit's product run (its plan's pick) fails, the run records the error in place of an accuracy: what
a user of that commit got (on the demo's targets its dann_mcc_pl needed a source head it did not have).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, WORK, machine
from heldout import base_overrides, cell_name

RUNS = RESULTS / "heldout_before_runs"
COMMIT = "ef99f3c"  # the commit the recipes issue measured (its table: "at HEAD (ef99f3c), default params")
STRATEGIES = ("linear_probe", "finetune_top", "finetune_all")
REPO = Path(__file__).resolve().parent.parent


def worktree(commit: str) -> Path:
    """That commit's tree, checked out once under bench/results/tmp (git worktree: nothing in this one moves)."""
    path = WORK / f"before-{commit}"
    if not (path / "src" / "autotransfer").is_dir():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(path), commit], check=True)
    return path


class CommandFailed(Exception):
    """That commit's command exited non-zero; the message is its last line (the product's own error)."""


def cli(tree: Path, folder: Path, *args: str) -> float:
    """``autotransfer ARGS`` with that commit's code first on the path (its own params.yaml); seconds taken."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", "import sys; from autotransfer.cli import main; sys.exit(main())",
                           *args, "--no-progress"], cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode:
        (folder / "failed.log").write_text(done.stdout + done.stderr)
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise CommandFailed(lines[-1] if lines else f"{args[0]} exited {done.returncode}: {folder}/failed.log")
    return round(time.perf_counter() - started, 1)


def run_cell(tree: Path, commit: str, target: str, labels: int | None, seed: int, data_seed: int) -> dict:
    name = cell_name({"target": target, "labels": labels, "seed": seed, "data_seed": data_seed})
    path = RUNS / f"{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    folder = WORK / "heldout_before" / name
    folder.mkdir(parents=True, exist_ok=True)
    # heldout.py's overrides (that commit reads the same keys), with caches of its own (their formats may differ)
    base = base_overrides(target, labels, seed, data_seed, folder,
                          [f"similarity.cache_dir={WORK}/before_cache", f"data.decoded_cache={WORK}/before_decoded"])
    overrides = [arg for o in base for arg in ("-S", o)]
    cli(tree, folder, "validate", *overrides)
    cli(tree, folder, "similarity", *overrides)
    cli(tree, folder, "plan", *overrides)
    plan = json.loads((folder / "reports" / "plan.json").read_text())
    out: dict = {"target": target, "labels": labels, "seed": seed, "data_seed": data_seed, "commit": commit,
                 "plan": plan["chosen"], "strategies": {}}

    def trained(mode: str, *extra: str) -> dict:
        seconds = cli(tree, folder, "train", *overrides, "-S", f"train.out={folder}/{mode}", *extra)
        cli(tree, folder, "evaluate", *overrides, "-S", f"train.out={folder}/{mode}")
        train = json.loads((folder / "reports" / "train.json").read_text())
        metrics = json.loads((folder / "reports" / "metrics.json").read_text())
        return {"strategy": train.get("strategy"), "accuracy": metrics["accuracy"], "seconds": seconds,
                "epochs": train.get("epochs_run"), "best_epoch": train.get("best_epoch")}

    for strategy in STRATEGIES:
        out["strategies"][strategy] = trained(strategy, "--force", strategy, "-S", "train.floor=false")
        print(f"  {name} {strategy} at {commit}: {out['strategies'][strategy]}", flush=True)
    try:
        out["rules"] = trained("rules")  # the plan's pick, floor on: the product as it shipped then
    except CommandFailed as failed:  # what a user of that commit got: recorded, not retried another way
        out["rules"] = {"strategy": plan["chosen"], "accuracy": None, "failed": str(failed)}
    RUNS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**out, "machine": machine()}, indent=2) + "\n")
    print(f"{name} at {commit}: rules {out['rules']['strategy']} {out['rules']['accuracy']}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commit", default=COMMIT)
    parser.add_argument("--targets", nargs="+", default=["letters", "scenes", "textures"])
    parser.add_argument("--labels", nargs="+", default=["3", "10", "30"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--data-seed", type=int, default=1)
    args = parser.parse_args()
    tree = worktree(args.commit)
    for seed in args.seeds:
        for labels in args.labels:
            for target in args.targets:
                run_cell(tree, args.commit, target, None if labels == "all" else int(labels), seed, args.data_seed)


if __name__ == "__main__":
    main()
