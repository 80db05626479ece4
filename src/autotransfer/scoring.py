"""Scoring a model on labeled images, by class *name*.

A head may predict another class list than the target's (the source head of
source_only and dann), so predictions and truths are compared as names.
"""

from __future__ import annotations

import numpy as np
import torch

from autotransfer.backbones import TransferModel
from autotransfer.data import ImageSet, Normalization


@torch.no_grad()
def predict_names(model: TransferModel, images: ImageSet, normalization: Normalization,
                  head_classes: tuple[str, ...], device: torch.device, features: torch.Tensor | None = None,
                  batch_size: int = 512) -> np.ndarray:
    model.eval()
    predicted = []
    for start in range(0, len(images), batch_size):
        if features is not None:
            logits = model.head(model.neck(features[start: start + batch_size].to(device)))
        else:
            logits = model(normalization(images.images[start: start + batch_size].to(device)))
        predicted.append(logits.argmax(1).cpu())
    index = torch.cat(predicted).numpy() if predicted else np.zeros(0, dtype=np.int64)
    return np.array(head_classes, dtype=object)[index]


def evaluate_head(model: TransferModel, images: ImageSet, normalization: Normalization,
                  head_classes: tuple[str, ...], classes: tuple[str, ...], device: torch.device,
                  features: torch.Tensor | None = None) -> float | None:
    """Accuracy on a labeled set, comparing class names (the head may predict source classes)."""
    if len(images) == 0:
        return None
    predicted = predict_names(model, images, normalization, head_classes, device, features)
    truth = np.array(classes, dtype=object)[images.labels.numpy()]
    return float((predicted == truth).mean())
