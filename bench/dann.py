"""DANN gap closure on the demo domains (a measurement, not a test).

For each (source, target) pair and seed, three runs with the *same* augmentation, budget
(optimizer steps) and starting point (the source model pretrained on the source domain):
- source_only: the DANN recipe with every target term off (adversarial, entropy, class
  confusion, pseudo-labels): same augmentation, optimizer and schedule;
- dann: the full recipe (GRL, domain classifier, entropy minimisation, minimum class
  confusion, pseudo-labels from the target batch, annealed SGD);
- target: supervised on the labeled target train split (the upper bound).
The target's labels are never seen by source_only and dann; all are scored on the
target test split. Gap closure = (dann − source_only) / (target − source_only).

    python bench/dann.py --seeds 0 1 2 --steps 800
"""

from __future__ import annotations

import argparse
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
from autotransfer.stages.evaluate import evaluate  # noqa: E402
from autotransfer.stages.plan import make_plan  # noqa: E402
from autotransfer.stages.pretrain import pretrain  # noqa: E402
from autotransfer.stages.similarity import measure_similarity  # noqa: E402
from autotransfer.stages.train import train_stage  # noqa: E402
from autotransfer.stages.validate import validate  # noqa: E402
from common import machine, spread  # noqa: E402

PAIRS = {"digits->digits-m": ("digits", "digits-m"), "synth-digits->digits": ("synth-digits", "digits")}


def run_pair(name: str, source: str, target: str, seed: int, steps: int, arch: str, work: Path,
             data_root: Path, pretrain_epochs: int, dann_overrides: list[str] = (),
             only: list[str] | None = None, recipe_overrides: list[str] = ()) -> dict:
    base = [f"data.root={data_root}", f"data.source={source}", f"data.target={target}",
            f"backbone.arch={arch}", "backbone.weights=null", "backbone.input_size=32", "train.floor=false",
            f"pretrain.epochs={pretrain_epochs}", f"pretrain.seed={seed}",
            f"pretrain.out={work}/models/source", "train.patience=0", f"train.seed={seed}",
            f"similarity.cache_dir={work}/cache", "similarity.n_per_domain=200"]
    results = {}
    variants = {
        "source_only": ["data.labeled_per_class=0", "strategy.force=dann", *recipe_overrides,
                        "train.dann.domain_weight=0", "train.dann.entropy_weight=0", "train.dann.mcc_weight=0",
                        "train.dann.pseudo_label_weight=0"],
        "dann": ["data.labeled_per_class=0", "strategy.force=dann", *recipe_overrides, *dann_overrides],
        "target": ["strategy.force=finetune_all", "train.backbone_lr_mult=1.0", "train.lr=0.01"],
    }
    for variant, extra in variants.items():
        if only and variant not in only:
            continue
        reports = work / variant / "reports"
        params = load_params(None, [*base, *extra, f"reports.dir={reports}", f"train.out={work}/{variant}/model"])
        validate(params, progress=False)
        if not (work / "models/source/model.safetensors").exists():
            pretrain(params, progress=False)
        pool = 1079 if source in ("digits", "digits-m") else 2100  # labeled steps per epoch drive the budget
        labeled = pool if variant != "target" else 1079
        epochs = max(1, math.ceil(steps / math.ceil(labeled / params.train.batch_size)))
        params = load_params(None, [*base, *extra, f"reports.dir={reports}", f"train.out={work}/{variant}/model",
                                    f"train.epochs={epochs}"])
        measure_similarity(params, progress=False)
        make_plan(params)
        started = time.perf_counter()
        report = train_stage(params, progress=False)
        metrics = evaluate(params, progress=False)
        results[variant] = {"accuracy": metrics.accuracy, "epochs": epochs,
                            "seconds": round(time.perf_counter() - started, 1),
                            "images_per_second": report.images_per_second}
        print(f"{name} seed {seed} {variant}: {metrics.accuracy:.3f} ({results[variant]['seconds']} s)", flush=True)
    if only:
        return results
    so, da, tg = (results[k]["accuracy"] for k in ("source_only", "dann", "target"))
    results["gap_closure"] = (da - so) / (tg - so) if tg != so else None
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
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
    args = parser.parse_args()
    summary = {"steps": args.steps, "arch": args.arch, "seeds": args.seeds, "dann_overrides": args.dann_set,
               "recipe_overrides": args.recipe_set,
               "pairs": {}}
    for name in args.pairs:
        source, target = PAIRS[name]
        runs = {seed: run_pair(name, source, target, seed, args.steps, args.arch,
                               args.work / name / f"seed{seed}", args.data, args.pretrain_epochs, args.dann_set, args.only,
                               args.recipe_set)
                for seed in args.seeds}
        entry = {"runs": runs}
        if args.only:
            summary["pairs"][name] = entry
            continue
        for key in ("source_only", "dann", "target"):
            values = [r[key]["accuracy"] for r in runs.values()]
            entry[key] = {"mean": statistics.mean(values), "stdev": spread(values)["std"]}
        closures = [r["gap_closure"] for r in runs.values() if r["gap_closure"] is not None]
        entry["gap_closure"] = {"mean": statistics.mean(closures) if closures else None,
                                "stdev": spread(closures)["std"] if closures else None, "values": closures}
        summary["pairs"][name] = entry
        print(f"{name}: source_only {entry['source_only']['mean']:.3f}, dann {entry['dann']['mean']:.3f}, "
              f"target {entry['target']['mean']:.3f}, gap closure {entry['gap_closure']['mean']}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": "dann", "machine": machine(), "command": shlex.join(sys.argv), **summary}
    args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
