"""Domain adaptation gap closure on the demo domains (a measurement, not a test).

For each (source, target) pair and seed, five runs (six with the peer) from the *same* starting point (the source
model pretrained on the source domain), with the same network (bottleneck + head over the
source classes + domain classifier), augmentation, optimizer (SGD, lr·(1+10p)^-0.75), step
budget and selection rule (the last epoch):
- source_only: labeled source only, no target term;
- dann: Ganin & Lempitsky's DANN, the adversarial term (GRL + domain classifier, λ ramp);
- dann_mcc_pl: the default adaptation recipe, DANN + entropy + MCC + pseudo-labels;
- mcc_pl: the same without the adversarial term (domain_weight 0), the ablation;
- bound: the source_only recipe with every target train label in its labeled pool;
- skada_dann: the peer, skada's DANN from the same source model (bench/skada_peer.py says
  what it shares and what differs), when skada is importable:
  `cd bench && ../.venv-peers/bin/python dann.py` (after `make .venv-peers/.installed`).
The target's labels are seen only by the bound; all are scored on the target test split.
Gap closure = (adapted − source_only) / (bound − source_only). The default seeds (10-14)
are ones no recipe choice was made on (the recipe was set on seeds 0-2).

    python bench/dann.py --seeds 10 11 12 13 14 --steps 800

Each run is recorded in bench/results/dann_runs/ as it ends; a rerun reuses the runs recorded
with the same settings, so the two-hour bench can be stopped and resumed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import shlex
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from autotransfer.config import load_params  # noqa: E402
from autotransfer.stages.pipeline import EVALUATE, PLAN, PRETRAIN, SIMILARITY, TRAIN, VALIDATE  # noqa: E402
from common import machine, spread  # noqa: E402

ADAPTED = ("dann", "dann_mcc_pl", "mcc_pl")
PEER = "skada_dann"  # the domain-adaptation peer, run when skada is importable (.venv-peers)
PEER_AVAILABLE = importlib.util.find_spec("skada") is not None


def adapted(results: dict) -> tuple[str, ...]:
    return (*ADAPTED, PEER) if PEER in results else ADAPTED


PAIRS = {"digits->digits-m": ("digits", "digits-m"), "synth-digits->digits": ("synth-digits", "digits")}


def run_pair(name: str, source: str, target: str, seed: int, steps: int, arch: str, work: Path,
             data_root: Path, pretrain_epochs: int, dann_overrides: list[str] = (),
             only: list[str] | None = None, recipe_overrides: list[str] = (), records: Path | None = None) -> dict:
    base = [f"data.root={data_root}", f"data.source={source}", f"data.target={target}",
            f"backbone.arch={arch}", "backbone.weights=null", "backbone.input_size=32", "train.floor=false",
            f"pretrain.epochs={pretrain_epochs}", f"pretrain.seed={seed}",
            f"pretrain.out={work}/models/source", "train.patience=0", f"train.seed={seed}",
            f"similarity.cache_dir={work}/cache", "similarity.n_per_domain=200"]
    results = {}
    off = ["train.dann.domain_weight=0"]
    unlabeled = ["data.labeled_per_class=0"]
    variants = {
        "source_only": [*unlabeled, "strategy.force=dann", *off, *recipe_overrides],
        "dann": [*unlabeled, "strategy.force=dann", *recipe_overrides, *dann_overrides],
        "dann_mcc_pl": [*unlabeled, "strategy.force=dann_mcc_pl", *recipe_overrides, *dann_overrides],
        "mcc_pl": [*unlabeled, "strategy.force=dann_mcc_pl", *recipe_overrides, *dann_overrides, *off],
        "bound": ["data.labeled_per_class=null", "strategy.force=dann", *off, *recipe_overrides, "train.select=last"],
    }
    if PEER_AVAILABLE:
        variants["skada_dann"] = [*unlabeled, "strategy.force=dann", *recipe_overrides]
    setup = {"steps": steps, "arch": arch, "pretrain_epochs": pretrain_epochs,
             "dann_overrides": list(dann_overrides), "recipe_overrides": list(recipe_overrides)}
    for variant, extra in variants.items():
        if only and variant not in only:
            continue
        # one file per run: a stopped bench resumes where it was, and a rerun with other settings redoes it
        record = records / name.replace("->", "_to_") / f"seed{seed}" / f"{variant}.json" if records else None
        if record is not None and record.exists() and json.loads(record.read_text()).get("setup") == setup:
            results[variant] = json.loads(record.read_text())["result"]
            print(f"{name} seed {seed} {variant}: {results[variant]['accuracy']:.3f} (recorded)", flush=True)
            continue
        reports = work / variant / "reports"
        params = load_params(None, [*base, *extra, f"reports.dir={reports}", f"train.out={work}/{variant}/model"])
        VALIDATE.run(params, progress=False)
        if not (work / "models/source/model.safetensors").exists():
            PRETRAIN.run(params, progress=False)
        pool = 1079 if source in ("digits", "digits-m") else 2100  # labeled steps per epoch drive the budget
        labeled = pool + (1079 if variant == "bound" else 0)  # the bound's pool adds the target train split
        per_epoch = math.ceil(labeled / params.train.batch_size)
        epochs = max(1, math.ceil(steps / per_epoch))
        params = load_params(None, [*base, *extra, f"reports.dir={reports}", f"train.out={work}/{variant}/model",
                                    f"train.epochs={epochs}"])
        if variant == "skada_dann":
            from skada_peer import run_skada_dann

            results[variant] = run_skada_dann(params, steps)
        else:
            SIMILARITY.run(params, progress=False)
            PLAN.run(params)
            started = time.perf_counter()
            report = TRAIN.run(params, progress=False)
            metrics = EVALUATE.run(params, progress=False)
            results[variant] = {"accuracy": metrics.accuracy, "epochs": epochs, "steps": epochs * per_epoch,
                                "seconds": round(time.perf_counter() - started, 1),
                                "images_per_second": report.images_per_second}
        print(f"{name} seed {seed} {variant}: {results[variant]['accuracy']:.3f} ({results[variant]['seconds']} s)",
              flush=True)
        if record is not None:
            record.parent.mkdir(parents=True, exist_ok=True)
            record.write_text(json.dumps({"setup": setup, "result": results[variant]}, indent=2) + "\n")
    if only:
        return results
    so, bound = results["source_only"]["accuracy"], results["bound"]["accuracy"]
    results["gap_closure"] = {v: (results[v]["accuracy"] - so) / (bound - so) if bound != so else None
                              for v in adapted(results)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[10, 11, 12, 13, 14])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--arch", default="small_cnn")
    parser.add_argument("--pretrain-epochs", type=int, default=10)
    parser.add_argument("--pairs", nargs="+", default=list(PAIRS))
    parser.add_argument("--data", type=Path, default=REPO / "data")
    parser.add_argument("--dann-set", nargs="*", default=[], help="extra overrides for the dann runs")
    parser.add_argument("--recipe-set", nargs="*", default=[],
                        help="overrides for both source_only and dann (they share the recipe)")
    parser.add_argument("--only", nargs="*", help="run only these variants (no summary)")
    parser.add_argument("--work", type=Path, default=REPO / "bench/results/tmp")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/dann.json")
    parser.add_argument("--records", type=Path, default=REPO / "bench/results/dann_runs",
                        help="one JSON per (pair, seed, variant); runs already recorded with the same settings are "
                             "reused, so a stopped bench resumes")
    args = parser.parse_args()
    summary = {"steps": args.steps, "arch": args.arch, "seeds": args.seeds, "dann_overrides": args.dann_set,
               "recipe_overrides": args.recipe_set,
               "pairs": {}}
    for name in args.pairs:
        source, target = PAIRS[name]
        runs = {seed: run_pair(name, source, target, seed, args.steps, args.arch, args.work / name / f"seed{seed}",
                               args.data, args.pretrain_epochs, args.dann_set, args.only, args.recipe_set,
                               args.records)
                for seed in args.seeds}
        entry = {"runs": runs}
        if args.only:
            summary["pairs"][name] = entry
            continue
        keys = adapted(next(iter(runs.values())))
        for key in ("source_only", *keys, "bound"):
            values = [r[key]["accuracy"] for r in runs.values()]
            entry[key] = {"mean": statistics.mean(values), "stdev": spread(values)["std"]}
        entry["gap_closure"] = {}
        for key in keys:
            closures = [r["gap_closure"][key] for r in runs.values() if r["gap_closure"][key] is not None]
            entry["gap_closure"][key] = {"mean": statistics.mean(closures) if closures else None,
                                         "stdev": spread(closures)["std"] if closures else None, "values": closures}
        summary["pairs"][name] = entry
        print(f"{name}: " + ", ".join(f"{k} {entry[k]['mean']:.3f}" for k in ("source_only", *keys, "bound"))
              + "; gap closure " + ", ".join(f"{k} {entry['gap_closure'][k]['mean']}" for k in keys), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": "dann", "machine": machine(), "command": shlex.join(sys.argv), **summary}
    args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
