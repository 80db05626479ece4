"""``linear_probe``: a converged logistic regression on the backbone's frozen, cached features."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from autotransfer.errors import TrainingError
from autotransfer.io.data import TrainData
from autotransfer.models.features import FeatureCache, state_hash
from autotransfer.transfer.logistic import fit_logistic
from autotransfer.transfer.strategies import Phase, SharedGuard, Strategy, register, single_phase


@register
class LinearProbe(Strategy):
    """A converged logistic regression on frozen features (computed once, cached on disk).

    No optimizer steps: ``solve`` fits the head to convergence with L-BFGS, its L2 strength
    chosen on val or by cross-validation (``transfer.logistic``), and writes it into the
    model's ``Linear`` head, so the model is served like any other.
    """

    name = "linear_probe"
    reads_images = False  # the fit reads cached features
    closed_form = True

    def phases(self, epochs: int) -> list[Phase]:
        return single_phase(epochs, ("head",))

    def setup(self, data: TrainData, progress: bool | None, shared: SharedGuard = contextlib.nullcontext) -> None:
        super().setup(data, progress, shared)
        sim = self.params.similarity
        cache = FeatureCache(sim.cache_dir)
        weights = state_hash(self.model.body)
        with shared():
            self.features = {
                name: torch.from_numpy(
                    cache.features(
                        self.model.body,
                        self.params.backbone.arch,
                        images,
                        self.normalization,
                        sim.batch_size,
                        weights,
                        progress,
                    )
                )
                for name, images in (("train", data.train), ("val", data.val))
            }

    def solve(self) -> tuple[dict[str, Any], str]:
        """Fit the head; the history row of the fit (its one "epoch") and how C was chosen."""
        if len(self.data.val):
            val_x, val_y = self.features["val"].numpy(), self.data.val.labels.numpy()
        else:
            val_x, val_y = np.zeros((0, self.features["train"].shape[1])), np.zeros(0, dtype=np.int64)
        try:
            head = fit_logistic(
                self.features["train"].numpy(),
                self.pool_labels.numpy(),
                val_x,
                val_y,
                len(self.head_classes),
                self.cfg.min_val_per_class,
                self.cfg.cv_folds,
                self.cfg.seed,
            )
        except ValueError as exc:
            raise TrainingError(f"{self.name}: {exc}; no model written") from exc
        head.load_into(self.model.head)
        with torch.no_grad():
            logits = self.model.head(self.features["train"])
        labels = self.pool_labels
        record = {
            "train_loss": float(F.cross_entropy(logits, labels)),
            "train_accuracy": float((logits.argmax(1) == labels).float().mean()),
            "lr": None,
            "probe_c": head.selection.C,
            "probe_selection": head.selection.rule,
            "probe_fitted_on": head.fitted_on,
        }
        return record, f"converged logistic regression (L-BFGS) on frozen features, {head.selection.describe()}"

    def val_features(self) -> torch.Tensor | None:
        return self.features["val"]
