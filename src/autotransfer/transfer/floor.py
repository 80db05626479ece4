"""The floor: cheap baselines that every trained model must beat on the target val split.

Two of them, both servable as a ``TransferModel`` like any trained model:
- ``linear_probe``: the pretrained features with a trained head (the strategy of that name,
  trained by the same loop on cached features);
- ``logistic_pixels``: a multinomial logistic regression on the images average-pooled to
  ``PIXEL_SIDE`` x ``PIXEL_SIDE`` x 3, folded into a ``pixels`` model (a pooling body with
  no parameters and a Linear head) so that evaluate, the registry and serving use it as is.

A trained model that does not beat the best floor on val is replaced by it: a real
target where transfer fails should get the baseline, not a model worse than one.
"""

from __future__ import annotations

import numpy as np
import torch

from autotransfer.io.data import Normalization, TrainData
from autotransfer.io.store import ImageStore
from autotransfer.models.backbones import PIXEL_SIDE, PIXELS, PixelBody, TransferModel

PIXEL_NORMALIZATION = Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # uint8 / 255: the body pools raw pixels


def pixel_features(images: ImageStore, side: int = PIXEL_SIDE) -> np.ndarray:
    """The ``pixels`` model's features: its body on uint8 (N,3,S,S) scaled to [0,1], chunk by chunk."""
    body = PixelBody(side)
    parts = [body(PIXEL_NORMALIZATION(chunk)).numpy() for chunk in images.chunks(1024)]
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros((0, 3 * side * side))


def fit_logistic_pixels(data: TrainData, seed: int) -> TransferModel:
    """A logistic regression on pooled pixels of the labeled target train split, as a ``pixels`` model."""
    from sklearn.linear_model import LogisticRegression

    features = pixel_features(data.train.images)
    labels = data.train.labels.numpy()
    mean, std = features.mean(0), features.std(0) + 1e-6
    classifier = LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
    classifier.fit((features - mean) / std, labels)
    coef, intercept = classifier.coef_, classifier.intercept_
    if coef.shape[0] == 1:  # sklearn's binary form: one logit for the second class
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.array([0.0, intercept[0]])
    # Standardisation folded into the head: w·(x − μ)/σ + b = (w/σ)·x + (b − (w/σ)·μ).
    weight = coef / std
    bias = intercept - weight @ mean
    model = TransferModel(PIXELS, len(data.classes), int(data.train.images.shape[-1]))
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.fill_(-1e4)  # a class absent from train is never predicted
        rows = torch.as_tensor(classifier.classes_, dtype=torch.long)
        model.head.weight[rows] = torch.as_tensor(weight, dtype=torch.float32)
        model.head.bias[rows] = torch.as_tensor(bias, dtype=torch.float32)
    return model.eval()
