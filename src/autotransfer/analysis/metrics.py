"""Scoring a model on labeled images, by class *name*, and the classification metrics of a split.

A head may predict another class list than the target's (the source head of
source_only, dann and dann_mcc_pl), so predictions and truths are compared as names.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from autotransfer.io.data import ImageSet, Normalization
from autotransfer.io.store import ImageStore
from autotransfer.models.backbones import TransferModel


@torch.no_grad()
def predict_logits(
    model: TransferModel,
    images: ImageStore,
    normalization: Normalization,
    device: torch.device,
    features: torch.Tensor | None = None,
    batch_size: int = 512,
) -> torch.Tensor:
    """The head's logits for every image (or for cached ``features``), on the CPU."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        if features is not None:
            logits = model.head(model.neck(features[start : start + batch_size].to(device)))
        else:
            logits = model(normalization(images[start : start + batch_size].to(device)))
        out.append(logits.float().cpu())
    return torch.cat(out) if out else torch.zeros(0, model.head.out_features)


def predict_names(
    model: TransferModel,
    images: ImageSet,
    normalization: Normalization,
    head_classes: tuple[str, ...],
    device: torch.device,
    features: torch.Tensor | None = None,
    batch_size: int = 512,
) -> np.ndarray:
    index = predict_logits(model, images.images, normalization, device, features, batch_size).argmax(1).numpy()
    return np.array(head_classes, dtype=object)[index]


def evaluate_head(
    model: TransferModel,
    images: ImageSet,
    normalization: Normalization,
    head_classes: tuple[str, ...],
    classes: tuple[str, ...],
    device: torch.device,
    features: torch.Tensor | None = None,
) -> float | None:
    """Accuracy on a labeled set, comparing class names (the head may predict source classes)."""
    if len(images) == 0:
        return None
    predicted = predict_names(model, images, normalization, head_classes, device, features)
    truth = np.array(classes, dtype=object)[images.labels.numpy()]
    return float((predicted == truth).mean())


def classification_metrics(truth: np.ndarray, predicted: np.ndarray, classes: tuple[str, ...]) -> dict[str, Any]:
    per_class = {}
    for name in classes:
        tp = int(((predicted == name) & (truth == name)).sum())
        predicted_n, actual_n = int((predicted == name).sum()), int((truth == name).sum())
        precision = tp / predicted_n if predicted_n else 0.0
        recall = tp / actual_n if actual_n else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": actual_n}
    return {
        "accuracy": float((truth == predicted).mean()) if len(truth) else None,
        "macro_f1": float(np.mean([c["f1"] for c in per_class.values()])) if per_class else None,
        "n": len(truth),
        "per_class": per_class,
    }
