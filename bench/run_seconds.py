"""The whole ``autotransfer run`` as a user runs it, on a held-out target with few labels: its seconds.

The recipes issue asks that, with default params, a 10-class target with 10 labels per
class finishes ``autotransfer run`` within 5 minutes on a 2-core CPU. Each run here is the
real CLI in a fresh process (the Prefect flow with its temporary server, validate,
similarity, plan, train, evaluate, register into a fresh SQLite MLflow store) with cold
caches: a fresh Prefect home, feature cache, decoded-image cache and reports folder, as
on a first run. ImageNet is the source (``data.source=null``, the quickstart's command).
Recorded per run: wall seconds of the command, the train stage's seconds (train.json), the
plan's choice and step budget, and test accuracy (metrics.json; the test split chooses nothing).

    python bench/run_seconds.py [--target letters] [--labels 10] [--seeds 0 1 2] [--data-seed 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import REPO, WORK, save, spread
from heldout import data_root


def run(target: str, labels: int, seed: int, data_seed: int) -> dict:
    folder = WORK / "run_seconds" / f"{target}-{labels}-{seed}-data{data_seed}"
    shutil.rmtree(folder, ignore_errors=True)  # cold: nothing cached from an earlier run
    folder.mkdir(parents=True)
    overrides = [f"data.root={data_root(data_seed)}", f"data.target={target}", "data.source=null",
                 f"data.labeled_per_class={labels}", f"data.seed={seed}", f"train.seed={seed}",
                 f"reports.dir={folder}/reports", f"train.out={folder}/model", f"similarity.cache_dir={folder}/cache",
                 f"data.decoded_cache={folder}/decoded", f"validation.state_dir={folder}/scan",
                 f"registry.tracking_uri=sqlite:///{folder}/mlflow/mlflow.db"]  # artifacts: next to it
    command = [str(Path(sys.executable).with_name("autotransfer")), "run",
               *(x for o in overrides for x in ("-S", o))]
    env = {**os.environ, "PREFECT_HOME": str(folder / "prefect")}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(command)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    reports = folder / "reports"
    plan = json.loads((reports / "plan.json").read_text())
    train = json.loads((reports / "train.json").read_text())
    metrics = json.loads((reports / "metrics.json").read_text())
    out = {"target": target, "labels": labels, "seed": seed, "data_seed": data_seed, "seconds": round(seconds, 1),
           "plan": plan["chosen"], "strategy": train["strategy"], "steps": train["budget"]["steps"],
           "budget_rule": train["budget"]["rule"], "train_seconds": train["seconds"],
           "selection": train["selection"]["rule"], "accuracy": metrics["accuracy"], "test_images": metrics["n"],
           "registered": (reports / "registration.json").exists()}
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="letters")
    parser.add_argument("--labels", type=int, default=10)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--data-seed", type=int, default=1)
    args = parser.parse_args()
    runs = [run(args.target, args.labels, seed, args.data_seed) for seed in args.seeds]
    seconds = [r["seconds"] for r in runs]
    save("run_seconds", {"runs": runs, "seconds": spread(seconds)})


if __name__ == "__main__":
    main()
