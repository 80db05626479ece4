"""The evaluate stage: score the trained model on the target test split, and draw it.

Writes ``reports/metrics.json`` (accuracy, macro-F1, per-class precision/recall/F1 and
support, n), ``reports/predictions.csv`` (path, actual, predicted, its probability: what ``dvc plots``
draws as a confusion matrix and compares across experiments) and ``reports/plots/``: the
confusion matrix, the training curves (from ``reports/train_history.csv``) and a 2-D
PCA map of source and target features before (the source backbone) and after training.
The test split is read here and nowhere else in training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from autotransfer.analysis.metrics import classification_metrics, predict_logits
from autotransfer.artifacts import (
    METRICS_JSON,
    MODEL_FILE,
    PLOTS_DIR,
    PREDICTIONS_CSV,
    TRAIN_HISTORY_CSV,
    MetricsReport,
)
from autotransfer.config import Params
from autotransfer.errors import StageInputError, WeightsError
from autotransfer.io.data import class_names, decoded_cache, domain_rows, load_images, read_manifest, sample_rows
from autotransfer.io.files import write_report, write_text
from autotransfer.io.images import sha256_file
from autotransfer.models.weights import TrainedModel, load_backbone, load_trained_model


def evaluate(params: Params, progress: bool | None = None) -> MetricsReport:
    trained = load_trained_model(params.train.out)
    manifest = read_manifest(params.reports.dir)
    target = params.data.target
    classes = class_names(manifest, target)
    size, interpolation, background = trained.model.input_size, trained.meta.interpolation, trained.background
    test_rows = domain_rows(manifest, target, ("test",))
    test = load_images(
        test_rows, classes, size, progress, "target test", interpolation, decoded_cache(params), background
    )
    if len(test) == 0:
        raise StageInputError(f"target {target!r} has no readable test images to score on")
    probs = torch.softmax(predict_logits(trained.model, test.images, trained.normalization, torch.device("cpu")), 1)
    confidence, index = probs.max(1)
    predicted = np.array(trained.head_classes, dtype=object)[index.numpy()]
    truth = np.array(classes, dtype=object)[test.labels.numpy()]
    metrics: dict[str, Any] = {
        "target": target,
        "strategy": trained.meta.strategy,
        "candidate": trained.meta.candidate,
        "test_set_hash": test.content_hash(),
        "model_sha256": sha256_file(Path(params.train.out) / MODEL_FILE),
        **classification_metrics(truth, predicted, classes),
    }
    reports = Path(params.reports.dir)
    predictions = pd.DataFrame(
        {
            "path": test_rows["path"].to_numpy(),
            "actual": truth,
            "predicted": predicted,
            "probability": confidence.numpy().round(6),
        }
    )
    write_text(reports / PREDICTIONS_CSV, predictions.to_csv(index=False))
    plots = reports / PLOTS_DIR
    plots.mkdir(parents=True, exist_ok=True)
    metrics["plots"] = {
        "confusion_matrix": _confusion_plot(truth, predicted, classes, plots / "confusion_matrix.png"),
        "training_curves": _curves_plot(reports / TRAIN_HISTORY_CSV, plots / "training_curves.png"),
        "feature_map": _feature_map(params, manifest, trained, plots / "feature_map.png", progress),
    }
    report = MetricsReport.model_validate(metrics)
    write_report(reports / METRICS_JSON, report)
    return report


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


CONFUSION_MAX_INCHES = 20  # at dpi 100: at most a 2,000 px square
CONFUSION_LABELLED_CLASSES = 40


def _confusion_plot(truth: np.ndarray, predicted: np.ndarray, classes: tuple[str, ...], path: Path) -> str:
    columns = list(classes) + sorted(set(predicted) - set(classes))  # a source-class head may predict others
    matrix = pd.crosstab(
        pd.Categorical(truth, categories=classes), pd.Categorical(predicted, categories=columns), dropna=False
    ).to_numpy()
    plt = _pyplot()
    # 0.45 in per class up to CONFUSION_MAX_INCHES: a 1,000-class matrix at that rate would be a
    # 45,000 px square (8 GB of pixels); past CONFUSION_LABELLED_CLASSES the cells are too small
    # for names and counts, and the matrix is drawn as a heat map (metrics.json has the numbers).
    fig, ax = plt.subplots(
        figsize=(min(1 + 0.45 * len(columns), CONFUSION_MAX_INCHES), min(1 + 0.45 * len(classes), CONFUSION_MAX_INCHES))
    )
    ax.imshow(matrix, cmap="Blues", aspect="auto")
    labelled = max(len(classes), len(columns)) <= CONFUSION_LABELLED_CLASSES
    if labelled:
        ax.set_xticks(range(len(columns)), columns, rotation=90)
        ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), value in np.ndenumerate(matrix if labelled else np.zeros((0, 0))):
        if value:
            ax.text(
                j,
                i,
                str(value),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if value > matrix.max() / 2 else "black",
            )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.as_posix()


def _curves_plot(history_csv: Path, path: Path) -> str | None:
    if not history_csv.exists() or history_csv.stat().st_size == 0:
        return None
    history = pd.read_csv(history_csv)
    if history.empty:
        return None
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(history["epoch"], history["train_loss"], label="train loss")
    left.set_xlabel("epoch")
    left.legend()
    for column in ("train_accuracy", "val_accuracy", "domain_accuracy"):
        if column in history and history[column].notna().any():
            right.plot(history["epoch"], history[column], label=column.replace("_", " "))
    right.set_xlabel("epoch")
    right.set_ylim(0, 1.02)
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.as_posix()


def _feature_map(
    params: Params, manifest: pd.DataFrame, trained: TrainedModel, path: Path, progress: bool | None
) -> str | None:
    """PCA of source vs target features, under the source backbone (before) and the trained model (after)."""
    size, interpolation = trained.model.input_size, trained.meta.interpolation
    source_rows = sample_rows(domain_rows(manifest, params.data.source, ("train",)), 300, 0)
    target_rows = sample_rows(domain_rows(manifest, params.data.target, ("train", "val", "unlabeled")), 300, 0)
    if len(source_rows) == 0 or len(target_rows) == 0:
        return None
    background = trained.background
    source = load_images(source_rows, (), size, progress, "source sample", interpolation, background=background)
    target = load_images(target_rows, (), size, progress, "target sample", interpolation, background=background)
    panels = []
    try:
        before = load_backbone(params, num_classes=len(trained.head_classes))
        panels.append(("before (pretrained backbone)", before.model, before.normalization))
    except (WeightsError, StageInputError):
        pass  # e.g. torchvision weights not cached: draw only "after"
    panels.append((f"after ({trained.meta.strategy})", trained.model, trained.normalization))
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False)
    for ax, (title, model, normalization) in zip(axes[0], panels):
        with torch.no_grad():
            model.eval()
            feats = [model.features(normalization(s.images[:])).numpy() for s in (source, target)]
        both = np.concatenate(feats)
        centered = both - both.mean(0)
        _, _, vt = np.linalg.svd(centered, full_matrices=False)
        xy = centered @ vt[:2].T
        ax.scatter(*xy[: len(source)].T, s=4, alpha=0.5, label=params.data.source)
        ax.scatter(*xy[len(source) :].T, s=4, alpha=0.5, label=params.data.target)
        ax.set_title(title)
        ax.legend(markerscale=3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.as_posix()
