"""The floor: cheap baselines that every trained model must beat on the target val split.

Two of them, both servable as a ``TransferModel`` like any trained model:
- ``linear_probe``: the pretrained features with a converged logistic-regression head (the
  strategy of that name, on cached features);
- ``logistic_pixels``: a converged multinomial logistic regression on the images average-pooled to
  ``PIXEL_SIDE`` x ``PIXEL_SIDE`` x 3, folded into a ``pixels`` model (a pooling body with
  no parameters and a Linear head) so that evaluate, the registry and serving use it as is.

A trained model that does not beat the best floor on val is replaced by it: a real
target where transfer fails should get the baseline, not a model worse than one.
"""

from __future__ import annotations

import numpy as np

from autotransfer.config import TrainConfig
from autotransfer.io.data import Normalization, TrainData
from autotransfer.io.store import ImageStore
from autotransfer.models.backbones import PIXEL_SIDE, PIXELS, PixelBody, TransferModel
from autotransfer.transfer.logistic import fit_logistic

PIXEL_NORMALIZATION = Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # uint8 / 255: the body pools raw pixels


def pixel_features(images: ImageStore, side: int = PIXEL_SIDE) -> np.ndarray:
    """The ``pixels`` model's features: its body on uint8 (N,3,S,S) scaled to [0,1], chunk by chunk."""
    body = PixelBody(side)
    parts = [body(PIXEL_NORMALIZATION(chunk)).numpy() for chunk in images.chunks(1024)]
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros((0, 3 * side * side))


def fit_logistic_pixels(data: TrainData, cfg: TrainConfig) -> TransferModel:
    """A converged logistic regression on pooled pixels of the labeled target, as a ``pixels`` model.

    Its L2 strength is chosen as the linear probe's is (``transfer.logistic``): on val when
    val is large enough, else by cross-validation on train.
    """
    head = fit_logistic(
        pixel_features(data.train.images),
        data.train.labels.numpy(),
        pixel_features(data.val.images),
        data.val.labels.numpy(),
        len(data.classes),
        cfg.min_val_per_class,
        cfg.cv_folds,
        cfg.seed,
    )
    model = TransferModel(PIXELS, len(data.classes), int(data.train.images.shape[-1]))
    head.load_into(model.head)
    return model.eval()
