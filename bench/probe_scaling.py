"""How the linear probe scales its features before the fit: per feature, floored, or one scale for all.

The converged probe (src/autotransfer/transfer/logistic.py) standardises its features before
the L2-penalised fit, so one C suits them all. Per-feature standardisation divides by each
feature's standard deviation over the images it is fitted on: a feature that is near zero on
every image of a fold but one (a dead channel on a plain background: the demo's digits have
220 of lite0's 1,280 features constant on their labeled pool) is blown up by 10⁶ on the
held-out image where it is not, and the fold's held-out log-loss (the product's criterion,
BENCHMARKS.md §12) explodes with C: 8.2 at the smallest C, 33 at the largest, on the demo's
digits at 10 labels per class, where a uniform guess scores 2.3. Variants, fixed before
measuring:

- ``per_feature``: ``(x − μ) / (σ + 10⁻⁶)`` per feature (the product until this table);
- ``floored``: per feature, σ floored at a tenth of the median feature's σ;
- ``global``: ``(x − μ) / mean σ``: centred, one scale for every feature (the penalty sees the
  features in their own proportions, as the probes of the CLIP paper do).

Each with the product's criterion (log-loss, 5-fold cross-validation on the labeled pool),
labels drawn as validate draws them (label seed = draw). The rule: the variant with the
highest mean test accuracy over data seed 0's cells (the design sets) is the product's; data
seed 1 (built afresh) and the demo's targets read it again. ``reference`` is bench/heldout.py's
scikit-learn probe on the first draws (taken from results/probe_selection.json where that table
measured the same draw; computed here otherwise).

    python bench/probe_scaling.py [--targets letters scenes textures] [--labels 3 10 30] [--draws 10]
                                  [--data-seeds 0 1] [--demo digits digits-m]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Iterator

import numpy as np
import torch

from autotransfer.io.manifest import assign_usage
from autotransfer.transfer import logistic
from common import RESULTS, save
from heldout import data_root, reference_probe_on
from probe_selection import cv_scores, target_features
from probe_selection import test_accuracy as fitted_test_accuracy


class PerFeature:
    """``(x − μ) / (σ + 10⁻⁶)``: the product's standardiser before this table."""

    def __init__(self, x: np.ndarray) -> None:
        self.mean = x.mean(0)
        self.std = x.std(0) + 1e-6

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std


class Floored(PerFeature):
    def __init__(self, x: np.ndarray) -> None:
        self.mean = x.mean(0)
        std = x.std(0)
        self.std = np.maximum(std, 0.1 * np.median(std)) + 1e-6


class Global(PerFeature):
    def __init__(self, x: np.ndarray) -> None:
        self.mean = x.mean(0)
        self.std = np.full(x.shape[1], x.std(0).mean() + 1e-6)


VARIANTS = {"per_feature": PerFeature, "floored": Floored, "global": Global}


@contextlib.contextmanager
def scaling(variant: type) -> Iterator[None]:
    """The product's probe with ``variant`` as its standardiser (cross-validation and final fit alike)."""
    before = logistic._Scaler
    logistic._Scaler = variant
    try:
        yield
    finally:
        logistic._Scaler = before


def measure(target: str, data_seed: int, labels: int, draws: int, folds: int, reference: list[float] | None,
            reference_draws: int) -> dict:
    rows, feats = target_features(target, data_seed)
    test = (rows["split"] == "test").to_numpy()
    test_x, test_y = feats[test], rows["y"].to_numpy()[test]
    out: dict = {v: [] for v in VARIANTS}
    out["chosen C"] = {v: [] for v in VARIANTS}
    out["cv log-loss"] = {v: [] for v in VARIANTS}  # at the chosen C: train data only
    out["constant features"] = []  # features with σ < 10⁻⁶ over the labeled pool
    out["reference"] = reference if reference is not None else []
    for draw in range(draws):
        usage = assign_usage(rows, target, labels, draw)
        pool = usage.isin(["train", "val"]).to_numpy()
        x, y = feats[pool].astype(np.float64), rows["y"].to_numpy()[pool]
        out["constant features"].append(int((x.std(0) < 1e-6).sum()))
        for name, variant in VARIANTS.items():
            with scaling(variant):
                _, loss = cv_scores(x, y, folds, draw)
                c = min(loss, key=lambda k: (loss[k], k))  # the product's criterion (logistic._best)
                out["chosen C"][name].append(c)
                out["cv log-loss"][name].append(loss[c])
                out[name].append(fitted_test_accuracy(x, y, c, test_x, test_y))
        if reference is None and draw < reference_draws:
            train, val = (usage == "train").to_numpy(), (usage == "val").to_numpy()
            out["reference"].append(reference_probe_on(
                feats[train], rows["y"].to_numpy()[train], feats[val], rows["y"].to_numpy()[val],
                test_x, test_y)["accuracy"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", default=["letters", "scenes", "textures"])
    parser.add_argument("--labels", nargs="+", type=int, default=[3, 10, 30])
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--data-seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--demo", nargs="*", default=["digits", "digits-m"], help="the demo's targets (data seed 0)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--reference-draws", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    earlier = json.loads((RESULTS / "probe_selection.json").read_text())["cells"]
    started = time.perf_counter()
    cells = {}
    plan = [(t, d) for d in args.data_seeds for t in args.targets] + [(t, 0) for t in args.demo]
    for target, data_seed in plan:
        if target not in args.demo:
            data_root(data_seed)
        for labels in args.labels:
            key = f"{target}, {labels}/class, data seed {data_seed}"
            if target in args.demo:
                key = f"{target}, {labels}/class (demo)"
            known = earlier.get(key, {}).get("reference")  # the same draws (label seed = draw), the same features
            cell = measure(target, data_seed, labels, args.draws, args.folds,
                           known[:args.reference_draws] if known else None, args.reference_draws)
            cells[key] = cell
            print(key, {v: round(100 * float(np.mean(cell[v])), 1) for v in (*VARIANTS, "reference")},
                  "constant features", cell["constant features"][0], flush=True)
    save("probe_scaling", {"seconds": round(time.perf_counter() - started, 1), "cells": cells})


if __name__ == "__main__":
    main()
