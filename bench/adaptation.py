"""Domain adaptation from the ImageNet backbone: a labeled source, an unlabeled target, params.yaml's defaults.

For a source -> target pair with no target labels, each strategy forced (floor off) on the
default backbone (ImageNet EfficientNet-Lite0 at params.yaml's size), side by side per seed:
- ``source_only``: the classifier learns the labeled source with dann's recipe, target terms off;
- ``dann`` and ``dann_mcc_pl``: the same, plus the adversarial loss (and the self-training terms);
- ``bound``: ``source_only`` with every target label too (the labeled target train images join the
  source in the pool): the same network, optimizer, schedule and augmentation, ``train.epochs``
  set so its optimizer steps match the others' within one epoch's worth, the last epoch kept
  as in the unlabeled runs (``train.select=last``);
- the rules' pick (plan.json), scored as that strategy's forced run: without target labels the
  floor and val selection are skipped, so the shipped run trains exactly that.
- ``skada_dann``: the peer, skada's DANN (bench/skada_peer.py says what it shares with ``dann``
  and what differs) on the same network, data and about the same steps, when skada is importable
  (``.venv-peers``: ``cd bench && ../.venv-peers/bin/python adaptation.py``); recorded apart
  (``<run>.skada_dann.json``), so runs recorded without it keep and gain it on a rerun.
Test accuracy on the target's test split, which chooses nothing; gap closure =
(method − source_only) / (bound − source_only) per seed. Each run is recorded in
bench/results/adaptation_runs/ (a rerun skips what is there).

    python bench/adaptation.py [--pairs letters:letters-m] [--seeds 0 1 2 3 4] [--data-seed 0]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import time
from pathlib import Path

import torch

from autotransfer.config import load_params
from autotransfer.stages.pipeline import PLAN, SIMILARITY, TRAIN, VALIDATE
from common import RESULTS, WORK, demo_root, machine
from heldout import data_root
from strategy_selection import test_accuracy

RUNS = RESULTS / "adaptation_runs"
METHODS = ("source_only", "dann", "dann_mcc_pl")
PEER = "skada_dann"
PEER_AVAILABLE = importlib.util.find_spec("skada") is not None
DEMO = ("synth-digits", "digits", "digits-m")  # the demo's datasets (autotransfer demo-data builds them)


def root_of(pair: str, data_seed: int) -> Path:
    return demo_root() if pair.split(":")[0] in DEMO else data_root(data_seed)


def base_overrides(source: str, target: str, root: Path, seed: int, folder: Path, labels: str) -> list[str]:
    return [f"data.root={root}", f"data.source={source}", f"data.target={target}",
            f"data.labeled_per_class={labels}", f"data.seed={seed}", f"train.seed={seed}",
            f"reports.dir={folder}/reports-{labels}", f"similarity.cache_dir={WORK}/adaptation_cache",
            f"data.decoded_cache={WORK}/adaptation_decoded", f"validation.state_dir={folder}/scan",
            "train.device=cpu", f"registry.tracking_uri=sqlite:///{folder}/mlflow.db", "registry.live_tracking=false"]


def prepared(base: list[str]) -> str:
    """validate, similarity and plan on ``base``: the plan's choice."""
    params = load_params(None, base)
    report = VALIDATE.run(params, progress=False)
    if not report.success:  # measure only what the product would accept
        raise SystemExit(f"validation failed ({', '.join(report.failed_checks)}): {params.reports.dir}")
    SIMILARITY.run(params, progress=False)
    return PLAN.run(params).chosen


def trained(base: list[str], out: Path, *extra: str) -> dict:
    params = load_params(None, [*base, f"train.out={out}", *extra])
    PLAN.run(params)  # plan.json for this run's strategy.force (train reads it)
    started = time.perf_counter()
    report = TRAIN.run(params, progress=False)
    return {"strategy": report.strategy, "accuracy": test_accuracy(params),
            "seconds": round(time.perf_counter() - started, 1), "epochs": report.epochs_run,
            "steps": report.budget.steps, "health": report.health.line(), "collapsed": report.health.collapsed,
            "domain_accuracy": report.health.domain_accuracy,
            "source_val_accuracy": report.health.source_val_accuracy}


def run_name(pair: str, seed: int, data_seed: int) -> str:
    source, target = pair.split(":")
    return f"{source}-{target}-{seed}" + (f"-data{data_seed}" if data_seed else "")


def run_pair(pair: str, seed: int, data_seed: int) -> dict:
    source, target = pair.split(":")
    name = run_name(pair, seed, data_seed)
    path = RUNS / f"{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    folder, root = WORK / "adaptation_runs" / name, root_of(pair, data_seed)
    unlabeled = base_overrides(source, target, root, seed, folder, "0")
    # The rules' pick, scored as its forced run: without target labels there is no floor or val
    # selection, so the shipped run trains exactly that (a smoke run here matched it to the bit).
    pick = prepared(unlabeled)
    out: dict = {"pair": pair, "seed": seed, "data_seed": data_seed, "rules_pick": pick, "methods": {}}
    for method in METHODS:
        out["methods"][method] = trained(unlabeled, folder / method, f"strategy.force={method}", "train.floor=false")
        print(f"  {name} {method}: {out['methods'][method]}", flush=True)
    steps = out["methods"]["source_only"]["steps"]
    labeled = base_overrides(source, target, root, seed, folder, "null")
    prepared(labeled)
    # The bound's pool: source train + target train (val stays val: it has train.min_val_per_class per class).
    params = load_params(None, labeled)
    domains = json.loads((Path(params.reports.dir) / "validation.json").read_text())["domains"]
    per_epoch = math.ceil((domains["source"]["images"]["train"] + domains["target"]["images"]["train"])
                          / params.train.batch_size)
    epochs = max(1, round(steps / per_epoch))
    out["bound"] = trained(labeled, folder / "bound", "strategy.force=source_only", "train.floor=false",
                           f"train.epochs={epochs}", "train.select=last")
    print(f"  {name} bound: {out['bound']}", flush=True)
    RUNS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**out, "machine": machine()}, indent=2) + "\n")
    return out


def run_peer(pair: str, seed: int, data_seed: int, steps: int) -> dict:
    """skada's DANN on the pair's unlabeled setting for about ``steps`` optimizer steps (recorded apart)."""
    from skada_peer import run_skada_dann

    source, target = pair.split(":")
    name = run_name(pair, seed, data_seed)
    path = RUNS / f"{name}.{PEER}.json"
    if path.exists():
        return json.loads(path.read_text())
    folder = WORK / "adaptation_runs" / name
    unlabeled = base_overrides(source, target, root_of(pair, data_seed), seed, folder, "0")
    prepared(unlabeled)
    params = load_params(None, [*unlabeled, f"train.out={folder}/{PEER}", "strategy.force=dann"])
    result = run_skada_dann(params, steps)
    out = {"strategy": PEER, "accuracy": result["accuracy"], "seconds": result["seconds"], "epochs": result["epochs"],
           "steps": result["steps"], "source_train_accuracy": result["source_train_accuracy"], "health": None,
           "collapsed": None, "domain_accuracy": None, "source_val_accuracy": None}
    print(f"  {name} {PEER}: {out}", flush=True)
    path.write_text(json.dumps({**out, "machine": machine()}, indent=2) + "\n")
    return out


def aggregate() -> Path:
    runs = [json.loads(p.read_text()) for p in sorted(RUNS.glob("*.json")) if p.suffixes == [".json"]]
    dates = [run["machine"]["date"] for run in runs]
    for run in runs:  # the peer's records, apart from the run they belong to
        peer = RUNS / f"{run_name(run['pair'], run['seed'], run['data_seed'])}.{PEER}.json"
        if peer.exists():
            record = json.loads(peer.read_text())
            dates.append(record["machine"]["date"])
            run["methods"][PEER] = {k: v for k, v in record.items() if k != "machine"}
    latest = max(dates, default=machine()["date"])
    path = RESULTS / "adaptation.json"
    path.write_text(json.dumps({"benchmark": "adaptation", "machine": {**machine(), "date": latest},
                                "command": "python bench/adaptation.py (each run: bench/results/adaptation_runs/)",
                                "runs": runs}, indent=2) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", default=["letters:letters-m"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--data-seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    for seed in args.seeds:
        for pair in args.pairs:
            run = run_pair(pair, seed, args.data_seed)
            if PEER_AVAILABLE:
                run_peer(pair, seed, args.data_seed, run["methods"]["source_only"]["steps"])
    print(aggregate())


if __name__ == "__main__":
    main()
