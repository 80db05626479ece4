"""Strategy selection: the oracle (every candidate to the full budget) vs `rules` vs `race`.

Scenarios are built from the demo domains: a similar target (synth-digits -> digits) and a
shifted one (digits -> digits-m), with 3, 10 or all labels per class, or none. The label
cap covers train and val together (`data.labeled_per_class`): the race scores its
candidates on the val images the scenario grants, nothing more; only the test split is
scored here. For each scenario and seed: every candidate of the plan trained to the full
budget (the oracle, test accuracy and seconds each), the rules' pick (the plan's choice
with params.yaml's hyperparameters: its oracle entry), and the race (its own run).
Regret = best oracle accuracy − the pick's, in points; compute = seconds / oracle seconds.

The oracle's candidates train with the floor off (each is the strategy itself); the rules'
pick and the race run as the product does, floor on, so a pick the floor replaced is
scored as the model it wrote. The floor's pixel baseline is scored on test beside them
(its linear probe is the oracle's linear_probe).

Where a race runs, both race rules (`train.race.rising_slot` on and off) are also replayed on
the oracle's recorded val curves (`race.replayed`): same candidates, same decisions as the
product's race code, no training; the real race run checks the replay of the default rule.

    python bench/strategy_selection.py [--seeds 0 1 2] [--scenarios all] [--arch tf_efficientnet_lite0] [--name N] [--merge]

``--arch`` defaults to params.yaml's backbone (the ImageNet lite0 at 64 px); any other
architecture runs as the synth-digits-pretrained source model of earlier versions (weights
null, 32 px).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from autotransfer.config import load_params
from autotransfer.io.data import class_names, domain_rows, load_images, read_manifest
from autotransfer.models.weights import load_trained_model
from autotransfer.stages.pipeline import PLAN, PRETRAIN, SIMILARITY, TRAIN, VALIDATE
from autotransfer.analysis.metrics import predict_names
from autotransfer.artifacts import TRAIN_HISTORY_CSV
from autotransfer.io.data import load_train_data
from autotransfer.models.weights import backbone_input
from autotransfer.transfer.strategies import Candidate, make_strategy
from common import WORK, demo_root, merged, save, spread

SCENARIOS = {
    "similar, 3/class": ("synth-digits", "digits", 3),
    "similar, 10/class": ("synth-digits", "digits", 10),
    "similar, all labels": ("synth-digits", "digits", None),
    "shifted, 3/class (label-scarce)": ("digits", "digits-m", 3),
    "shifted, 10/class": ("digits", "digits-m", 10),
    "shifted, all labels": ("digits", "digits-m", None),
    "shifted, no labels": ("digits", "digits-m", 0),
}
DEFAULT_ARCH = load_params(None, []).backbone.arch
QUICK = ["similar, 10/class", "shifted, 3/class (label-scarce)", "shifted, all labels"]


def test_accuracy(params) -> float:
    trained = load_trained_model(params.train.out)
    manifest = read_manifest(params.reports.dir)
    classes = class_names(manifest, params.data.target)
    test = load_images(domain_rows(manifest, params.data.target, ("test",)), classes, trained.model.input_size,
                       interpolation=trained.meta.interpolation)
    predicted = predict_names(trained.model, test, trained.normalization, trained.head_classes, torch.device("cpu"))
    truth = np.array(classes, dtype=object)[test.labels.numpy()]
    return float((predicted == truth).mean())


def pixel_floor_accuracy(params) -> float | None:
    """Test accuracy of the floor's logistic regression on pixels, fitted as the train stage fits it."""
    from autotransfer.io.data import load_train_data
    from autotransfer.models.weights import backbone_input
    from autotransfer.transfer.floor import PIXEL_NORMALIZATION, fit_logistic_pixels

    spec = backbone_input(params)
    data = load_train_data(params, False, spec, progress=False)
    if len(data.train) == 0:
        return None
    model = fit_logistic_pixels(data, params.train)
    manifest = read_manifest(params.reports.dir)
    test = load_images(domain_rows(manifest, params.data.target, ("test",)), data.classes, spec.size,
                       interpolation=spec.interpolation)
    predicted = predict_names(model, test, PIXEL_NORMALIZATION, data.classes, torch.device("cpu"))
    return float((predicted == np.array(data.classes, dtype=object)[test.labels.numpy()]).mean())


def run_scenario(name: str, seed: int, arch: str, work: Path) -> dict:
    source, target, labels = SCENARIOS[name]
    folder = work / f"{name.split(',')[0]}-{labels}-{seed}".replace(" ", "_")
    folder = work / arch / folder.name
    backbone = [] if arch == DEFAULT_ARCH else ["backbone.weights=null", "backbone.input_size=32"]
    base = [f"data.root={demo_root()}", f"data.source={source}", f"data.target={target}",
            f"data.labeled_per_class={'null' if labels is None else labels}", f"data.seed={seed}",
            f"backbone.arch={arch}", *backbone, f"pretrain.out={work}/source-{source}-{arch}-{seed}",
            f"pretrain.seed={seed}", f"train.seed={seed}", f"reports.dir={folder}/reports",
            f"similarity.cache_dir={work}/cache", "train.device=cpu"]
    params = load_params(None, base)
    VALIDATE.run(params, progress=False)
    if not (Path(params.pretrain.out) / "meta.json").exists():  # one source model per source and seed
        PRETRAIN.run(params, progress=False)
    SIMILARITY.run(params, progress=False)
    plan = PLAN.run(params)
    oracle = {}
    for candidate in plan.candidates:
        label = candidate.strategy + (f"@{candidate.backbone_lr_mult:g}x"
                                      if candidate.backbone_lr_mult is not None else "")
        extra = [f"strategy.force={candidate.strategy}", f"train.out={folder}/oracle/{label}", "train.floor=false"]
        if candidate.backbone_lr_mult is not None:
            extra.append(f"train.backbone_lr_mult={candidate.backbone_lr_mult}")
        p = load_params(None, [*base, *extra])
        started = time.perf_counter()
        trained = TRAIN.run(p, progress=False)
        oracle[label] = {"accuracy": test_accuracy(p), "seconds": time.perf_counter() - started,
                         "epochs": trained.epochs_run, "val_curve": val_curve(p),
                         "keeps_best_val": make_strategy(p, Candidate(candidate.strategy)).keeps_best_val()}
    best = max(v["accuracy"] for v in oracle.values())
    oracle_s = sum(v["seconds"] for v in oracle.values())
    floor = {"logistic_pixels": pixel_floor_accuracy(params)}
    p = load_params(None, [*base, f"train.out={folder}/rules"])
    started = time.perf_counter()
    report = TRAIN.run(p, progress=False)
    rules = {"pick": report.strategy, "accuracy": test_accuracy(p), "seconds": time.perf_counter() - started,
             "floor": report.floor.model_dump() if report.floor else None}
    p = load_params(None, [*base, "strategy.mode=race", f"train.out={folder}/race"])
    started = time.perf_counter()
    report = TRAIN.run(p, progress=False)
    race = {"pick": report.candidate, "accuracy": test_accuracy(p), "seconds": time.perf_counter() - started,
            "table": [row.model_dump() for row in report.race], "note": report.race_note,
            "floor": report.floor.model_dump() if report.floor else None}
    for pick in (rules, race):
        pick["regret_pts"] = None if pick["accuracy"] is None else 100 * (best - pick["accuracy"])
        pick["compute_share"] = None if pick["seconds"] is None else pick["seconds"] / oracle_s
    race["epoch_share"] = epoch_share(race["table"], oracle)
    if race["table"]:  # both rules replayed on the oracle's curves; the real race checks the replay
        images = len(load_train_data(p, False, backbone_input(p), progress=False).train)
        race["replayed"] = {f"rising_slot={flag}": replay_race(p, plan.candidates, oracle, best, images, flag)
                            for flag in (True, False)}
    print(f"{name} seed {seed}: best {best:.4f} ({max(oracle, key=lambda k: oracle[k]['accuracy'])}); "
          f"rules {rules['pick']} regret {rules['regret_pts']}; race {race['pick']} regret {race['regret_pts']:.2f} "
          f"at {race['compute_share']:.2f} of the oracle's compute")
    return {"seed": seed, "oracle": oracle, "floor": floor, "best": best, "oracle_seconds": oracle_s, "rules": rules,
            "race": race, "plan_reason": plan.reason}


def val_curve(params) -> list[float | None]:
    """The run's val accuracy after each epoch (reports/train_history.csv, read before the next run writes it)."""
    import csv

    with (Path(params.reports.dir) / TRAIN_HISTORY_CSV).open() as f:
        return [float(row["val_accuracy"]) if row["val_accuracy"] not in ("", "None") else None
                for row in csv.DictReader(f)]


def replay_race(params, planned, oracle: dict, best: float, train_images: int, rising_slot: bool) -> dict:
    """The product's race (engine/race.py) run on the oracle's recorded val curves instead of training.

    A race round is an exact prefix of the candidate's full run (tests/engine/test_loop.py: a run
    stopped after epoch k and resumed ends bit-identical to the uninterrupted one; §5b compares each
    replay with the real race),
    so a round stopped after ``n`` epochs scores what the full run scored by epoch ``n``: the best
    val so far for a strategy that keeps its best epoch, the last otherwise. The winner's test
    accuracy is its oracle run's (floor off: the floor's swap is not replayed).
    """
    from types import SimpleNamespace

    from autotransfer.engine.race import race, race_candidates

    def fit(candidate, stop_after):
        entry = oracle[candidate.label]
        curve = entry["val_curve"][: stop_after or len(entry["val_curve"])]
        seen = [v for v in curve if v is not None]
        val = (max(seen) if entry["keeps_best_val"] else curve[-1]) if seen else None
        history = [{"epoch": i + 1, "val_accuracy": v} for i, v in enumerate(curve)]
        return SimpleNamespace(val_accuracy=val, epochs_run=len(curve), history=history)

    race_params = params.model_copy(update={"train": params.train.model_copy(update={
        "race": params.train.race.model_copy(update={"rising_slot": rising_slot})})})
    candidates = race_candidates(params, planned)
    train = SimpleNamespace(train=range(train_images))  # race() reads len(data.train): steps per epoch
    from autotransfer.transfer.budget import step_budget

    _, table = race(race_params, candidates, train, fit, step_budget(params.train, train_images).epochs)
    pick = table[-1].candidate
    epochs = sum(row.epochs_trained for row in table)
    return {"pick": pick, "regret_pts": 100 * (best - oracle[pick]["accuracy"]),
            "epochs": epochs, "oracle_epochs": sum(oracle[c.label]["epochs"] for c in candidates),
            "epoch_share": epoch_share([row.model_dump() for row in table], oracle),
            "rounds": [[row.round, row.candidate, row.budget_epochs] for row in table]}


def epoch_share(table: list[dict], oracle: dict) -> float | None:
    """The race's cost at the oracle's own seconds per epoch of each candidate, over the oracle's seconds.

    Seconds measured minutes apart compare only on an otherwise idle machine; this share
    counts the epochs the race trained instead, priced at what an epoch of that candidate
    cost in the oracle run.
    """
    if not table or any("epochs" not in v for v in oracle.values()):
        return None
    per_epoch = {k: v["seconds"] / max(v["epochs"], 1) for k, v in oracle.items()}
    spent = sum(row["epochs_trained"] * per_epoch[row["candidate"]] for row in table)
    return spent / sum(v["seconds"] for v in oracle.values())


def summarise(runs: list[dict]) -> dict:
    def stats(values):
        values = [v for v in values if v is not None]
        return spread(values) if values else None

    labels = sorted({k for r in runs for k in r["oracle"]})
    replayed = [r for r in runs if r["race"].get("replayed")]
    return {"oracle": {k: stats([r["oracle"][k]["accuracy"] for r in runs if k in r["oracle"]]) for k in labels},
            "rules_regret_pts": stats([r["rules"]["regret_pts"] for r in runs]),
            "race_regret_pts": stats([r["race"]["regret_pts"] for r in runs]),
            "race_compute_share": stats([r["race"]["compute_share"] for r in runs]),
            "floor": {k: stats([r.get("floor", {}).get(k) for r in runs]) for k in ("logistic_pixels",)},
            "rules_picks": [r["rules"]["pick"] for r in runs], "race_picks": [r["race"]["pick"] for r in runs],
            "race_replayed": {flag: {"regret_pts": stats([r["race"]["replayed"][flag]["regret_pts"] for r in replayed]),
                                     "epoch_share": stats([r["race"]["replayed"][flag]["epoch_share"] for r in replayed]),
                                     "picks": [r["race"]["replayed"][flag]["pick"] for r in replayed]}
                              for flag in ("rising_slot=True", "rising_slot=False") if replayed}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), help=f"names, or 'quick': {QUICK}")
    parser.add_argument("--arch", default=DEFAULT_ARCH)
    parser.add_argument("--name", help="result file name (default: strategy_selection, or strategy_selection_ARCH "
                        "for another --arch than resnet18); e.g. a fresh-seed run beside the saved one")
    parser.add_argument("--merge", action="store_true",
                        help="keep the saved file's other scenarios (rerun some after a change that only affects them)")
    args = parser.parse_args()
    names = QUICK if args.scenarios == ["quick"] else args.scenarios
    work = WORK / "strategy_selection"
    results: dict = {}
    for name in names:
        runs = []
        for seed in args.seeds:  # saved after every seed: an interrupted run keeps what it finished
            runs.append(run_scenario(name, seed, args.arch, work))
            results[name] = {"runs": runs, "summary": summarise(runs)}
            write(results, args)


def write(results: dict, args: argparse.Namespace) -> None:
    name = args.name or ("strategy_selection" if args.arch == "resnet18" else f"strategy_selection_{args.arch}")
    provenance = None
    if args.merge:
        results, provenance = merged(name, results)
    regrets = [r["race"]["regret_pts"] for v in results.values() for r in v["runs"]]
    shares = [r["race"]["compute_share"] for v in results.values() for r in v["runs"]]
    rules = [r["rules"]["regret_pts"] for v in results.values() for r in v["runs"] if r["rules"]["regret_pts"] is not None]
    done = sorted({r["seed"] for v in results.values() for r in v["runs"]})
    save(name, {"setup": {"arch": args.arch, "seeds": args.seeds, "seeds_done": done, "scenarios": list(results)},
                "provenance": provenance,
                "scenarios": results,
                "overall": {"race_mean_regret_pts": statistics.mean(regrets),
                            "race_worst_regret_pts": max(regrets),
                            "race_mean_compute_share": statistics.mean(shares),
                            "rules_mean_regret_pts": statistics.mean(rules) if rules else None,
                            "rules_worst_regret_pts": max(rules) if rules else None},
                "target": {"race_mean_regret_pts": 1.0, "race_worst_regret_pts": 3.0,
                           "race_compute_share": 0.50}})

if __name__ == "__main__":
    main()
