"""How the linear probe's L2 strength is chosen with few labels: criteria side by side, many label draws.

The converged probe (src/autotransfer/transfer/logistic.py) is a convex fit; what is left to
choose is C, and with 3-30 labels per class no val split can choose it, so the product
cross-validates on the labeled pool. This measures the cross-validation criterion on the
held-out sets (bench/heldout_data.py), with the backbone's frozen features computed once per
target and the labeled images drawn ``--draws`` times per label level exactly as validate
draws them (``assign_usage``, label seed = draw):

- ``accuracy``: mean held-out accuracy over the folds, ties to the smallest C (the rule
  until 2026-12-04);
- ``log_loss``: mean held-out log-loss over the same folds (a smooth criterion: with 1-6
  images per fold and class, accuracy is flat across C and the tie decides);
- ``accuracy, then log_loss``: accuracy, its ties broken by log-loss;
- ``C=1``: scikit-learn's default, nothing chosen;
- ``reference``: bench/heldout.py's scikit-learn probe (GridSearchCV, C in 10^-4..10^4, val
  with ≥ 5 per class, else 3-fold CV accuracy), an independent implementation.

Test accuracy in points, mean over draws (the test split chooses nothing; the criterion is
chosen on data seed 0 and read again on data seed 1, built afresh).

    python bench/probe_selection.py [--targets letters scenes textures] [--labels 3 10 30] [--draws 10]
                                    [--data-seeds 0 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

from autotransfer.config import load_params
from autotransfer.io.data import load_images
from autotransfer.io.manifest import assign_usage
from autotransfer.models.features import FeatureCache
from autotransfer.models.weights import backbone_input, load_backbone
from autotransfer.stages.pipeline import VALIDATE
from autotransfer.transfer import logistic
from common import WORK, save
from heldout import base_overrides, data_root, reference_probe_on

CRITERIA = ("accuracy", "log_loss", "accuracy_then_log_loss", "C=1", "reference")


def target_features(target: str, data_seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """The manifest of ``target`` (all labels) and the frozen features of each of its rows."""
    folder = WORK / "probe_selection" / f"{target}-data{data_seed}"
    params = load_params(None, base_overrides(target, None, 0, data_seed, folder, []))
    VALIDATE.run(params, progress=False)
    manifest = pd.read_csv(folder / "reports" / "manifest.csv", keep_default_na=False, na_values={"label": [""]})
    rows = manifest[(manifest["domain"] == target) & manifest["readable"]].reset_index(drop=True)
    spec = backbone_input(params)
    classes = tuple(sorted(rows["label"].unique()))
    images = load_images(rows, classes, spec.size, False, interpolation=spec.interpolation)
    backbone = load_backbone(params, num_classes=len(classes))
    feats = FeatureCache(params.similarity.cache_dir).features(
        backbone.model.body, params.backbone.arch, images, backbone.normalization, 256)
    rows["y"] = [classes.index(label) for label in rows["label"]]
    return rows, feats


def cv_scores(x: np.ndarray, y: np.ndarray, folds: int, seed: int) -> tuple[dict, dict]:
    """Mean held-out accuracy and log-loss per C over the product's own stratified folds (``select_c``)."""
    never_val = np.iinfo(np.int32).max  # no val: select_c cross-validates the pool
    selection = logistic.select_c(x, y, x[:0], y[:0], never_val, folds, seed)
    return selection.accuracy, selection.scores


def choose(criterion: str, acc: dict, loss: dict) -> float:
    if criterion == "accuracy":
        return logistic._best(acc)
    if criterion == "log_loss":
        return min(loss, key=lambda c: (loss[c], c))
    if criterion == "accuracy_then_log_loss":
        top = max(acc.values())
        return min((c for c in acc if acc[c] >= top - 1e-12), key=lambda c: (loss[c], c))
    return 1.0


def test_accuracy(x: np.ndarray, y: np.ndarray, c: float, test_x: np.ndarray, test_y: np.ndarray) -> float:
    scale = logistic._Scaler(x)
    coef, intercept, classes = logistic._path(scale(x), y, (c,), 0)[c]
    return float((classes[(scale(test_x) @ coef.T + intercept).argmax(1)] == test_y).mean())


def measure(target: str, data_seed: int, labels: int, draws: int, folds: int, reference_draws: int) -> dict:
    rows, feats = target_features(target, data_seed)
    test = (rows["split"] == "test").to_numpy()
    out: dict = {c: [] for c in CRITERIA}
    out["best C on test (not selectable)"] = []
    out["accuracy (reference draws)"], out["log_loss (reference draws)"] = [], []
    out["chosen C"] = {c: [] for c in CRITERIA[:3]}
    for draw in range(draws):
        usage = assign_usage(rows, target, labels, draw)
        pool = usage.isin(["train", "val"]).to_numpy()
        x, y = feats[pool].astype(np.float64), rows["y"].to_numpy()[pool]
        acc, loss = cv_scores(x, y, folds, draw)
        for criterion in CRITERIA[:3]:
            c = choose(criterion, acc, loss)
            out["chosen C"][criterion].append(c)
            out[criterion].append(test_accuracy(x, y, c, feats[test], rows["y"].to_numpy()[test]))
        out["C=1"].append(test_accuracy(x, y, 1.0, feats[test], rows["y"].to_numpy()[test]))
        val = (usage == "val").to_numpy()
        train = (usage == "train").to_numpy()
        if draw < reference_draws:  # the reference is slow (17 C values to 5,000 iterations, in full space)
            out["reference"].append(reference_probe_on(
                feats[train], rows["y"].to_numpy()[train], feats[val], rows["y"].to_numpy()[val],
                feats[test], rows["y"].to_numpy()[test])["accuracy"])
            out["accuracy (reference draws)"].append(out["accuracy"][-1])
            out["log_loss (reference draws)"].append(out["log_loss"][-1])
        out["best C on test (not selectable)"].append(max(
            test_accuracy(x, y, c, feats[test], rows["y"].to_numpy()[test]) for c in logistic.C_GRID))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", default=["letters", "scenes", "textures"])
    parser.add_argument("--labels", nargs="+", type=int, default=[3, 10, 30])
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--data-seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--reference-draws", type=int, default=3, help="draws the slow reference is fitted on")
    args = parser.parse_args()
    torch.set_num_threads(2)
    cells = {}
    started = time.perf_counter()
    for data_seed in args.data_seeds:
        data_root(data_seed)
        for target in args.targets:
            for labels in args.labels:
                cell = measure(target, data_seed, labels, args.draws, args.folds, args.reference_draws)
                key = f"{target}, {labels}/class, data seed {data_seed}"
                cells[key] = cell
                print(key, {k: round(100 * float(np.mean(v)), 1) for k, v in cell.items() if k != "chosen C"},
                      flush=True)
    save("probe_selection", {"seconds": round(time.perf_counter() - started, 1), "cells": cells})


if __name__ == "__main__":
    main()
