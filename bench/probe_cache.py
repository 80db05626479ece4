"""Linear-probe cache: head training on cached features vs recomputing the frozen backbone every epoch.

Since the converged probe (transfer/logistic.py) `linear_probe` takes no epochs: its "cached"
run here is one feature extraction plus one convex fit, and "recompute" is the SGD head of
its earlier recipe; BENCHMARKS.md §2 records the run of its date (both SGD then).

Same source backbone (resnet18 pretrained on synth-digits by the pretrain stage), same
head, optimizer, schedule, batch order and epochs (10, the earlier train.epochs default). "cached": autotransfer's
`linear_probe` (features extracted once into the on-disk cache, then the head trains on
them), measured cold (empty cache: one extraction included) and warm. "recompute": the
naive loop, a no-grad backbone forward on every batch of every epoch. Both are scored on
the digits test split. Repeats alternate the variants; the ratio is of medians, and the
first cold run of the process (first forward, first cache write) is reported on its own too.

    python bench/probe_cache.py [--repeats 3] [--epochs 10] [--pretrain-epochs 6]
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from autotransfer.analysis.metrics import evaluate_head
from autotransfer.config import load_params
from autotransfer.engine.loop import fit
from autotransfer.io.data import domain_rows, load_images, load_train_data, read_manifest
from autotransfer.models.weights import backbone_input
from autotransfer.stages.pipeline import PRETRAIN, VALIDATE
from autotransfer.transfer.modes import set_train_mode
from autotransfer.transfer.strategies import Candidate, apply_phase, make_strategy
from common import WORK, demo_root, median, save


def recompute_every_epoch(params, data, epochs: int):
    """The naive linear probe: the frozen backbone runs forward on every batch, every epoch."""
    cfg = params.train
    strategy = make_strategy(params, Candidate("linear_probe"))
    model, normalization, head_classes = strategy.build(data)  # the model only, no feature cache
    strategy.model, strategy.extra_modules = model, []
    [phase] = strategy.phases(epochs)
    frozen = apply_phase(model, phase)
    steps = math.ceil(len(data.train) / cfg.batch_size)
    optimizer, scheduler = strategy.configure(phase, steps * epochs)
    for epoch in range(epochs):
        set_train_mode(model, frozen)
        torch.manual_seed(cfg.seed * 1_000_003 + epoch)
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        order = torch.randperm(len(data.train), generator=generator)
        for step in range(steps):
            index = order[step * cfg.batch_size: (step + 1) * cfg.batch_size]
            with torch.no_grad():
                features = model.body(normalization(data.train.images[index]))
            loss = F.cross_entropy(model.head(features), data.train.labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    return model.eval(), normalization, head_classes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--pretrain-epochs", type=int, default=6)
    args = parser.parse_args()
    work = WORK / "probe_cache"
    base = [f"data.root={demo_root()}", "data.source=synth-digits", "data.target=digits", "backbone.arch=resnet18", "backbone.weights=null",
            "backbone.input_size=32",
            f"reports.dir={work}/reports", f"pretrain.out={work}/source-{args.pretrain_epochs}",
            f"pretrain.epochs={args.pretrain_epochs}", f"train.epochs={args.epochs}", "train.patience=0",
            "train.device=cpu"]
    params = load_params(None, base)
    VALIDATE.run(params, progress=False)
    if not (Path(params.pretrain.out) / "model.safetensors").exists():
        PRETRAIN.run(params, progress=False)
    data = load_train_data(params, False, backbone_input(params), progress=False)
    manifest = read_manifest(params.reports.dir)
    test = load_images(domain_rows(manifest, "digits", ("test",)), data.classes, 32)
    cpu = torch.device("cpu")

    def test_accuracy(model, normalization, head_classes) -> float:
        return evaluate_head(model, test, normalization, head_classes, data.classes, cpu)

    rows = []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory(dir=WORK) as tmp:
            cold_params = load_params(None, [*base, f"similarity.cache_dir={tmp}/cache", f"train.out={tmp}/out"])
            started = time.perf_counter()
            cold = fit(cold_params, Candidate("linear_probe"), data, Path(tmp) / "cold", args.epochs, progress=False)
            cold_s = time.perf_counter() - started
            shutil.rmtree(Path(tmp) / "cold")
            started = time.perf_counter()
            fit(cold_params, Candidate("linear_probe"), data, Path(tmp) / "warm", args.epochs, progress=False)
            warm_s = time.perf_counter() - started
        started = time.perf_counter()
        naive = recompute_every_epoch(params, data, args.epochs)
        naive_s = time.perf_counter() - started
        row = {"repeat": repeat, "cached_cold_s": cold_s, "cached_warm_s": warm_s, "recompute_s": naive_s,
               "speedup_cold": naive_s / cold_s, "speedup_warm": naive_s / warm_s,
               "accuracy_cached": test_accuracy(cold.model, cold.normalization, cold.head_classes),
               "accuracy_recompute": test_accuracy(*naive)}
        row["accuracy_gap_pts"] = 100 * abs(row["accuracy_cached"] - row["accuracy_recompute"])
        rows.append(row)
        print(f"repeat {repeat}: cached {cold_s:.1f} s cold / {warm_s:.1f} s warm, recompute {naive_s:.1f} s "
              f"(x{naive_s / cold_s:.1f} / x{naive_s / warm_s:.1f}); test accuracy {row['accuracy_cached']:.4f} vs "
              f"{row['accuracy_recompute']:.4f}")
    summary = {key: median([r[key] for r in rows]) for key in rows[0] if key != "repeat"}
    summary["speedup_cold"] = median([r["recompute_s"] for r in rows]) / median([r["cached_cold_s"] for r in rows])
    summary["speedup_warm"] = median([r["recompute_s"] for r in rows]) / median([r["cached_warm_s"] for r in rows])
    summary["first_cold_s"] = rows[0]["cached_cold_s"]
    summary["speedup_first_cold"] = median([r["recompute_s"] for r in rows]) / rows[0]["cached_cold_s"]
    save("probe_cache", {"setup": {"arch": "resnet18", "epochs": args.epochs, "train_images": len(data.train),
                                   "test_images": len(test), "pretrain_epochs": args.pretrain_epochs},
                         "repeats": rows, "median": summary,
                         "target": {"speedup": 10.0, "accuracy_gap_pts": 0.5}})


if __name__ == "__main__":
    main()
