"""Recipes and the automatic choice on held-out sets (bench/heldout_data.py), label levels swept.

For each target, labels per class and seed, side by side on the same labeled images (the
label cap covers train and val together; the test split chooses nothing):
- every strategy forced, floor off, at params.yaml's defaults (the step rule's budget);
- the rules' pick as shipped (floor on);
- ``sklearn_probe``: a reference written here, not the product's code: scikit-learn's
  ``LogisticRegression`` (L-BFGS, to convergence) on the same backbone's frozen features of
  the same labeled images, ``C`` from 10^-4..10^4 chosen on val where val has at least 5
  images per class (fit on train), else by 3-fold cross-validation on train+val (fit on both);
- ``pixels``: the floor's logistic regression on pooled pixels.

Runs are recorded one by one in bench/results/heldout_runs/ (a rerun skips what is there;
``--rerun linear_probe`` trains that strategy again in recorded cells, after a change to it;
``rules`` and ``pixels`` redo the product's run and the pixel model).

    python bench/heldout.py [--targets letters scenes textures] [--labels 3 10 30] [--seeds 0]
                            [--strategies linear_probe finetune_top progressive finetune_all] [--data-seed 0]

``--data-seed 1`` builds the sets afresh (other glyph draws and crops: a test split that
chose nothing); the rules were revised on data seed 0 (docs/strategies.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from autotransfer.config import load_params
from autotransfer.io.data import domain_rows, load_images, load_train_data, read_manifest
from autotransfer.models.features import FeatureCache
from autotransfer.models.weights import backbone_input, load_backbone
from autotransfer.stages.pipeline import PLAN, SIMILARITY, TRAIN, VALIDATE
from common import RESULTS, WORK, demo_root, machine
from heldout_data import CROPPED, build, val_overlaps_training
from strategy_selection import pixel_floor_accuracy, test_accuracy

RUNS = RESULTS / "heldout_runs"
# A nominal source for each target (the pipeline asks for one; with ImageNet weights and no
# shared classes it plays no part in these strategies).
SOURCE = {"letters": "textures", "scenes": "textures", "textures": "letters", "letters-m": "letters"}
# The demo's targets, with the sources the demo pairs them with (both share the target's classes):
# the sets the rules were designed on, measured through the same harness (in-sample for the rules).
DEMO_SOURCE = {"digits": "synth-digits", "digits-m": "digits"}


def data_root(data_seed: int = 0) -> Path:
    """The held-out sets built with ``data_seed`` (another seed: other fonts draws and crops, a fresh test split)."""
    root = WORK / ("heldout" if data_seed == 0 else f"heldout-{data_seed}")
    if not (root / "textures" / "test").is_dir():
        build(root, data_seed)
    return root


def reference_probe(params) -> dict:
    """scikit-learn's converged logistic regression on the product's cached features (see the docstring)."""
    spec = backbone_input(params)
    data = load_train_data(params, False, spec, progress=False)
    backbone = load_backbone(params, num_classes=len(data.classes))
    body, norm = backbone.model.body, backbone.normalization
    cache = FeatureCache(params.similarity.cache_dir)
    manifest = read_manifest(params.reports.dir)
    test = load_images(domain_rows(manifest, params.data.target, ("test",)), data.classes, spec.size,
                       interpolation=spec.interpolation)
    feats = {k: cache.features(body, params.backbone.arch, s, norm, 256) for k, s in
             (("train", data.train), ("val", data.val), ("test", test))}
    dim = feats["train"].shape[1]
    feats = {k: f.reshape(0, dim) if len(f) == 0 else f for k, f in feats.items()}  # an empty split: (0, dim)
    ys = {"train": data.train.labels.numpy(), "val": data.val.labels.numpy(), "test": test.labels.numpy()}
    return reference_probe_on(feats["train"], ys["train"], feats["val"], ys["val"], feats["test"], ys["test"])


def reference_probe_on(train_x, train_y, val_x, val_y, test_x, test_y) -> dict:
    """The reference's rule on given features: C on val (≥ 5 per class), else 3-fold CV, else C = 1."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, PredefinedSplit, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    grid = {"logisticregression__C": np.logspace(-4, 4, 17)}
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    n_classes = int(max(train_y.max(initial=0), val_y.max(initial=0))) + 1
    val_counts = np.bincount(val_y, minlength=n_classes) if len(val_y) else np.zeros(1)
    x, y = np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y])
    if val_counts.min() >= 5:
        split = PredefinedSplit(np.r_[np.full(len(train_y), -1), np.zeros(len(val_y))])
        search = GridSearchCV(model, grid, cv=split, refit=False).fit(x, y)
        rule = "val"
        final = model.set_params(**search.best_params_).fit(train_x, train_y)
    else:
        k = int(min(3, np.bincount(y).min()))
        if k >= 2:
            search = GridSearchCV(model, grid, cv=StratifiedKFold(k, shuffle=True, random_state=0)).fit(x, y)
            final, rule = search.best_estimator_, f"{k}-fold cv"
        else:
            final, rule = model.set_params(logisticregression__C=1.0).fit(x, y), "fixed C=1"
    return {"accuracy": float((final.predict(test_x) == test_y).mean()), "rule": rule,
            "C": float(final.get_params()["logisticregression__C"])}


def base_overrides(target: str, labels: int | None, seed: int, data_seed: int, folder: Path,
                   extra: list[str]) -> list[str]:
    if target in DEMO_SOURCE and data_seed != 0:
        raise SystemExit(f"{target}: the demo's data has one build (no --data-seed)")
    root, source = (demo_root(), DEMO_SOURCE[target]) if target in DEMO_SOURCE else (data_root(data_seed), SOURCE[target])
    return [f"data.root={root}", f"data.source={source}", f"data.target={target}",
            f"data.labeled_per_class={'null' if labels is None else labels}", f"data.seed={seed}",
            f"train.seed={seed}", f"reports.dir={folder}/reports", f"similarity.cache_dir={WORK}/heldout_cache",
            f"data.decoded_cache={WORK}/heldout_decoded", f"validation.state_dir={folder}/scan", "train.device=cpu",
            f"registry.tracking_uri=sqlite:///{folder}/mlflow.db", "registry.live_tracking=false", *extra]


def rules_today(run: dict, path: Path) -> dict:
    """The pick of today's rules on the run's recorded validation and similarity reports, scored as its forced run.

    When nothing is chosen on val (no floor, no race: every run here up to 30 labels per class)
    the product's run of that strategy is the forced one; otherwise the recorded ``rules`` run
    (with its floor) is the product's.
    """
    folder = WORK / "heldout_runs" / path.stem
    if not (folder / "reports" / "similarity.json").exists():
        return {}
    params = load_params(None, [*base_overrides(run["target"], run["labels"], run["seed"], run.get("data_seed", 0),
                                                folder, run.get("extra", [])), f"reports.dir={folder}/replan"])
    for name in ("validation.json", "similarity.json", "manifest.csv"):
        (folder / "replan").mkdir(exist_ok=True)
        (folder / "replan" / name).write_bytes((folder / "reports" / name).read_bytes())
    pick = PLAN.run(params).chosen
    if pick in (run["rules"]["pick"], run.get("plan")):  # the plan when it ran: its rules run (the floor may
        # have written another model: that is the product's outcome of this pick)
        return {"pick": run["rules"]["pick"], "accuracy": run["rules"]["accuracy"], "as": "the recorded rules run",
                "replayed": machine()["date"]}
    if pick in run["strategies"]:
        return {"pick": pick, "accuracy": run["strategies"][pick]["accuracy"], "as": "its forced run (floor off)",
                "replayed": machine()["date"]}
    return {"pick": pick, "accuracy": None, "as": "not measured", "replayed": machine()["date"]}


def forced_run(base: list[str], folder: Path, strategy: str) -> dict:
    """``strategy`` forced, floor off: its test accuracy, seconds, budget and how it chose."""
    p = load_params(None, [*base, f"strategy.force={strategy}", f"train.out={folder}/{strategy}", "train.floor=false"])
    started = time.perf_counter()
    report = TRAIN.run(p, progress=False)
    return {"strategy": strategy, "accuracy": test_accuracy(p), "seconds": round(time.perf_counter() - started, 1),
            "epochs": report.epochs_run, "steps": report.budget.steps, "selection": report.selection.rule,
            "fit": report.fit, "date": machine()["date"]}


def product_run(base: list[str], folder: Path, mode: str, forced: dict | None = None) -> tuple[dict, str]:
    """The product's own run in ``mode`` (rules: floor on; race: strategy.mode=race); its record and selection rule.

    When the rules' choice was already trained forced and nothing was chosen on val (below
    train.min_val_per_class: no floor, no early stopping), the product trains that same model
    (same data, seed and budget), so the forced run is recorded instead of a second copy.
    """
    if mode == "rules" and forced is not None and forced["selection"] == "no_val":
        return {"pick": forced["strategy"], "accuracy": forced["accuracy"], "seconds": forced["seconds"],
                "floor": None, "as": "its forced run: nothing is chosen on val, the same model"}, "no_val"
    p = load_params(None, [*base, f"train.out={folder}/{mode}", *(["strategy.mode=race"] if mode == "race" else [])])
    started = time.perf_counter()
    report = TRAIN.run(p, progress=False)
    return {"pick": report.strategy, "accuracy": test_accuracy(p), "seconds": round(time.perf_counter() - started, 1),
            "floor": report.floor.note if report.floor else None, "race_note": report.race_note,
            "race": [row.model_dump() for row in report.race] if report.race else None}, report.selection.rule


def rerun(path: Path, strategies: list[str]) -> dict:
    """A recorded cell with ``strategies`` trained again at today's code (the plan replayed, the rest kept).

    ``rules`` among them reruns the product's own run (floor on) too (where val chooses nothing
    it is the forced run of the plan's choice), ``race`` the product's run in race mode (where
    val chooses; below, the race is skipped and its record stays a copy of the rules'),
    ``pixels`` the floor's pixel model. A run whose reports are gone (bench/results/tmp
    is scratch) is validated and measured again first: the same images (the label draw is the
    run's seed), so the same reports.
    """
    run = json.loads(path.read_text())
    folder = WORK / "heldout_runs" / path.stem
    base = base_overrides(run["target"], run["labels"], run["seed"], run.get("data_seed", 0), folder,
                          run.get("extra", []))
    if not (folder / "reports" / "similarity.json").exists():
        if run.get("data_seed"):
            data_root(run["data_seed"])
        VALIDATE.run(load_params(None, base), progress=False)
        SIMILARITY.run(load_params(None, base), progress=False)
    plan = PLAN.run(load_params(None, base))  # this code's plan.json, which train reads
    for strategy in (s for s in strategies if s not in ("rules", "race", "pixels")):
        run["strategies"][strategy] = forced_run(base, folder, strategy)
        print(f"  {path.stem} {strategy} (rerun): {run['strategies'][strategy]}", flush=True)
    if "rules" in strategies:
        run["rules"], _ = product_run(base, folder, "rules", run["strategies"].get(plan.chosen))
        print(f"  {path.stem} rules (rerun): {run['rules']}", flush=True)
    elif run["rules"].get("as", "").startswith("its forced run") and run["rules"]["pick"] in strategies:
        forced = run["strategies"][run["rules"]["pick"]]  # the rules' record was that forced run: the same model
        run["rules"] = {**run["rules"], "accuracy": forced["accuracy"], "seconds": forced["seconds"]}
    if run.get("race", {}).get("as", "").startswith("race skipped"):  # a copy of the rules' record
        run["race"] = {**run["rules"], "as": run["race"]["as"]}
    elif "race" in strategies:
        run["race"], _ = product_run(base, folder, "race")
        print(f"  {path.stem} race (rerun): {run['race']['pick']} {run['race']['accuracy']:.3f}", flush=True)
    if "pixels" in strategies:
        run["pixels"] = pixel_floor_accuracy(load_params(None, base))
    run.setdefault("reruns", []).append({"strategies": strategies, "date": machine()["date"]})
    path.write_text(json.dumps(run, indent=2) + "\n")
    return run


def cell_name(run: dict) -> str:
    """A run's file stem: target, labels, seed, data seed and any -S variant."""
    name = f"{run['target']}-{run['labels']}-{run['seed']}" + (f"-data{run['data_seed']}" if run.get("data_seed") else "")
    return name + ("-" + "-".join(x.replace("=", "_") for x in run["extra"]) if run.get("extra") else "")


def run_cell(target: str, labels: int | None, seed: int, strategies: list[str], extra: list[str],
             data_seed: int = 0, again: list[str] | None = None, forced_only: bool = False) -> dict:
    if forced_only and not extra:
        raise SystemExit("--forced-only is for variants (-S ...): a table cell needs the product's runs too")
    name = cell_name({"target": target, "labels": labels, "seed": seed, "data_seed": data_seed, "extra": extra})
    path = RUNS / f"{name}.json"
    if path.exists():
        return rerun(path, again) if again else json.loads(path.read_text())
    folder = WORK / "heldout_runs" / name
    base = base_overrides(target, labels, seed, data_seed, folder, extra)
    params = load_params(None, base)
    report = VALIDATE.run(params, progress=False)
    if not report.success:  # measure only what the product would accept
        raise SystemExit(f"{name}: validation failed ({', '.join(report.failed_checks)}); see {folder}/reports")
    SIMILARITY.run(params, progress=False)
    plan = PLAN.run(params)
    out: dict = {"target": target, "labels": labels, "seed": seed, "data_seed": data_seed, "extra": extra,
                 "plan": plan.chosen,
                 "plan_reason": plan.reason, "strategies": {}}
    for strategy in strategies:
        out["strategies"][strategy] = forced_run(base, folder, strategy)
        print(f"  {name} {strategy}: {out['strategies'][strategy]}", flush=True)
    if forced_only:  # a variant of the forced runs only (e.g. another budget): no product run, no baselines
        RUNS.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**out, "forced_only": True, "machine": machine()}, indent=2) + "\n")
        return out
    out["rules"], selection = product_run(base, folder, "rules", out["strategies"].get(plan.chosen))
    # The race chooses on val: below train.min_val_per_class it is skipped and trains the rules' choice.
    out["race"] = (product_run(base, folder, "race")[0] if selection == "val" else
                   {**out["rules"], "as": "race skipped (val too small to choose on): the rules' choice"})
    out["sklearn_probe"] = reference_probe(params)
    out["pixels"] = pixel_floor_accuracy(params)
    RUNS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**out, "machine": machine()}, indent=2) + "\n")
    print(f"{name}: rules {out['rules']['pick']} {out['rules']['accuracy']:.3f}, race {out['race']['pick']} "
          f"{out['race']['accuracy']:.3f}, sklearn probe "
          f"{out['sklearn_probe']['accuracy']:.3f}, pixels {out['pixels']:.3f}", flush=True)
    return out


def aggregate() -> Path:
    """bench/results/heldout.json: every recorded run, grouped by (target, labels), for report.py."""
    # A replay needs the run's reports (bench/results/tmp, not committed): where they are gone, the
    # replay recorded in the last heldout.json stands (its date says when it ran).
    previous = {}
    if (RESULTS / "heldout.json").exists():
        for cell in json.loads((RESULTS / "heldout.json").read_text())["cells"].values():
            previous.update({cell_name(run): run.get("rules_today") for run in cell})
    runs = []
    for path in sorted(RUNS.glob("*.json")):
        run = json.loads(path.read_text())
        if run.get("forced_only"):
            continue  # a variant of forced runs (--forced-only): read from its file, not in the table
        run["rules_today"] = rules_today(run, path) or previous.get(cell_name(run)) or {}
        before = RESULTS / "heldout_before_runs" / path.name  # bench/heldout_before.py: the same cell at ef99f3c
        if before.exists():
            run["before"] = json.loads(before.read_text())
        runs.append(run)
    cells: dict[str, list[dict]] = {}
    for run in runs:
        if run.get("extra"):
            continue  # variants (-S) are recorded beside, not in the table
        own_val = run["target"] in CROPPED and not val_overlaps_training(run["target"], run.get("data_seed", 0))
        data = (f" (fresh data {run['data_seed']}{', val its own region' if own_val else ''})" if run.get("data_seed")
                else " (demo: in-sample)" if run["target"] in DEMO_SOURCE else "")
        labels = run["labels"] if run["labels"] is not None else "all"
        cells.setdefault(f"{run['target']}, {labels}/class{data}", []).append(run)
    def order(key: str) -> tuple:
        run = cells[key][0]
        return run["target"], run.get("data_seed", 0), run["labels"] if run["labels"] is not None else 10**9

    cells = {key: cells[key] for key in sorted(cells, key=order)}
    latest = max((date for run in runs for date in (run["machine"]["date"], *(r["date"] for r in run.get("reruns", [])))),
                 default=machine()["date"])  # a rerun is a measurement too: notes written before it are dropped
    path = RESULTS / "heldout.json"
    path.write_text(json.dumps({"benchmark": "heldout", "machine": {**machine(), "date": latest},
                                "command": "python bench/heldout.py (each cell: bench/results/heldout_runs/)",
                                "cells": cells}, indent=2) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", default=["letters", "scenes", "textures"])
    parser.add_argument("--labels", nargs="+", default=["3", "10", "30"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--strategies", nargs="+",
                        default=["linear_probe", "finetune_top", "progressive", "finetune_all"])
    parser.add_argument("-S", dest="extra", action="append", default=[], help="extra params override")
    parser.add_argument("--data-seed", type=int, default=0, help="build the sets afresh with this seed")
    parser.add_argument("--forced-only", action="store_true",
                        help="with -S: only the forced runs of --strategies (a variant recorded beside the table)")
    parser.add_argument("--rerun", nargs="+", default=[],
                        help="strategies to train again in cells already recorded (after a change to them)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    for seed in args.seeds:
        for labels in args.labels:
            for target in args.targets:
                run_cell(target, None if labels == "all" else int(labels), seed, args.strategies, args.extra,
                         args.data_seed, args.rerun, args.forced_only)
    print(aggregate())


if __name__ == "__main__":
    main()
