"""``train.time_budget``: what the plan chooses for a budget, how long train then takes, what it scores.

On a held-out set (bench/heldout_data.py) at the backbone's pretrained resolution
(``backbone.input_size=auto``: 224 px for lite0), each budget in ``--budgets`` is given to
the rules' run (validate, similarity, plan, train, test accuracy), with no budget as the
reference. Recorded per budget: the plan's resolution, epochs and estimate (from its
warm-up), train's measured training seconds (``train.json`` ``seconds``: the strategy's
fit, which the budget covers, plus loading the images, which it does not), and test
accuracy (the test split chooses nothing). The ratio measured / estimated is the honest
check of the warm-up.

    python bench/time_budget.py [--target letters] [--labels 10] [--budgets 60 120 240 none] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from autotransfer.config import load_params
from autotransfer.models.weights import backbone_input
from autotransfer.stages.pipeline import PLAN, SIMILARITY, TRAIN, VALIDATE
from common import RESULTS, WORK, machine
from heldout import base_overrides, data_root
from strategy_selection import test_accuracy


def run(target: str, labels: int, budget: float | None, seed: int, size: str) -> dict:
    folder = WORK / "time_budget" / f"{target}-{labels}-{seed}-{size}-{budget}"
    base = [*base_overrides(target, labels, seed, 0, folder, []), f"backbone.input_size={size}",
            f"train.time_budget={'null' if budget is None else budget}", f"train.out={folder}/model",
            f"similarity.cache_dir={WORK}/time_budget_cache"]
    params = load_params(None, base)
    VALIDATE.run(params, progress=False)
    SIMILARITY.run(params, progress=False)
    started = time.perf_counter()
    plan = PLAN.run(params)
    plan_seconds = time.perf_counter() - started
    report = TRAIN.run(params, progress=False)
    fitted = plan.budget.time_fit if plan.budget else None
    out = {
        "budget": budget, "strategy": plan.chosen, "plan_seconds": round(plan_seconds, 1),
        "input_size": report.budget.input_size or backbone_input(params).size,
        "epochs": report.budget.epochs, "steps": report.budget.steps,
        "estimated_seconds": fitted.estimated_seconds if fitted else None,
        "measured_per_epoch": fitted.seconds_per_epoch if fitted else None,
        "train_seconds": report.seconds,
        # the optimizer steps alone (train_history's per-epoch seconds), what the warm-up estimates
        "step_seconds": round(report.seconds_per_epoch * report.epochs_run, 1) if report.seconds_per_epoch else None,
        "rule": fitted.rule if fitted else report.budget.rule,
        "accuracy": test_accuracy(params),
    }
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="letters")
    parser.add_argument("--labels", type=int, default=10)
    parser.add_argument("--budgets", nargs="+", default=["60", "120", "240", "none"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", default="auto")
    args = parser.parse_args()
    torch.set_num_threads(2)
    data_root(0)
    runs = [run(args.target, args.labels, None if b == "none" else float(b), args.seed, args.size)
            for b in args.budgets]
    path = RESULTS / "time_budget.json"
    path.write_text(json.dumps({"benchmark": "time_budget", "machine": machine(),
                                "command": f"python bench/time_budget.py --target {args.target} --labels {args.labels} "
                                           f"--budgets {' '.join(args.budgets)} --seed {args.seed} --size {args.size}",
                                "runs": runs}, indent=2) + "\n")
    print(path)


if __name__ == "__main__":
    main()
