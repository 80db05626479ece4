"""A converged multinomial logistic regression, its L2 strength chosen without the test split.

What ``linear_probe`` and the floor's pixel baseline fit: features standardised, L-BFGS
to convergence (scikit-learn's ``LogisticRegression`` at its tolerance), the inverse L2 strength ``C``
swept over ``C_GRID``, the standardisation folded back into one ``Linear`` layer so the
result is a head like any other. How ``C`` is chosen (``Selection.rule``):

- ``val``: the labeled val split has at least ``min_val_per_class`` images in each
  class: the best C on it, fitted on train only (val stays a fair score for the floor);
- ``cv``: val is smaller: stratified k-fold cross-validation on train and val pooled,
  then the final fit on that pool (nothing is left to choose on val, so it trains);
- ``fixed``: too few labels per class for even two folds: C = 1 (scikit-learn's default).

This is the protocol of the linear-probe literature (Kornblith et al. 2019; the CLIP
paper's probes): a convex fit with its regularisation swept, not a short SGD run, which
with a handful of labels stops far from the optimum (docs/strategies.md).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Inverse L2 strengths tried, on standardised features: 1e-3 ... 1e2, every half decade.
C_GRID: tuple[float, ...] = tuple(float(c) for c in np.logspace(-3, 2, 11))
FIXED_C = 1.0
MAX_ITER = 1000


@dataclass(frozen=True)
class Selection:
    """How the L2 strength was chosen and what each candidate scored."""

    rule: str  # val | cv | fixed
    C: float
    scores: dict[float, float] = field(default_factory=dict)  # C -> accuracy (val, or mean over folds)
    folds: int = 0

    def describe(self) -> str:
        if self.rule == "val":
            return f"C={self.C:g} chosen on val (accuracy {self.scores[self.C]:.3f})"
        if self.rule == "cv":
            return f"C={self.C:g} chosen by {self.folds}-fold cross-validation on train+val ({self.scores[self.C]:.3f})"
        return f"C={self.C:g} fixed: too few labels per class to cross-validate"


@dataclass(frozen=True)
class LogisticHead:
    """``logits = features @ weight.T + bias`` over ``n_classes`` (classes unseen in the fit: never predicted)."""

    weight: np.ndarray  # (n_classes, d), in the features' own units
    bias: np.ndarray  # (n_classes,)
    selection: Selection
    fitted_on: int  # images in the final fit

    def predict(self, features: np.ndarray) -> np.ndarray:
        return np.asarray((features @ self.weight.T + self.bias).argmax(1))

    def load_into(self, linear: Any) -> None:
        """Write this head into a ``torch.nn.Linear`` of ``(n_classes, d)`` (what the model serves)."""
        import torch

        with torch.no_grad():
            linear.weight.copy_(torch.as_tensor(self.weight, dtype=torch.float32))
            linear.bias.copy_(torch.as_tensor(self.bias, dtype=torch.float32))


Fit = tuple[np.ndarray, np.ndarray, np.ndarray]  # coef (classes, d), intercept, the classes seen


def _path(x: np.ndarray, y: np.ndarray, cs: tuple[float, ...], seed: int) -> dict[float, Fit]:
    """Fits of a logistic regression on standardised ``x`` for each C in ``cs``, each to convergence.

    Two exact speed-ups, measured in docs/strategies.md: with fewer images than feature
    dimensions the problem is solved in the row space of ``x`` (the L2-penalised optimum lies
    in it, and an orthonormal change of basis leaves the penalty unchanged), and each C
    starts from the previous C's optimum (warm start, smallest C first).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    basis = None
    if x.shape[0] < x.shape[1]:
        _, singular, vt = np.linalg.svd(x, full_matrices=False)
        basis = vt[singular > singular[0] * 1e-10] if len(singular) and singular[0] > 0 else vt[:1]
        x = x @ basis.T
    model = LogisticRegression(max_iter=MAX_ITER, warm_start=True, random_state=seed)
    fits: dict[float, Fit] = {}
    for c in sorted(cs):
        with warnings.catch_warnings():
            # scikit-learn's tolerance (1e-4) is met for every set measured; a very weak penalty
            # on separable features may still stop at MAX_ITER a hair short of the optimum.
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.set_params(C=c).fit(x, y)
        coef, intercept = model.coef_.copy(), model.intercept_.copy()
        if coef.shape[0] == 1:  # the binary form: one logit for the second class
            coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.array([0.0, intercept[0]])
        fits[c] = (coef if basis is None else coef @ basis, intercept, model.classes_.copy())
    return fits


class _Standardiser:
    def __init__(self, x: np.ndarray) -> None:
        self.mean = x.mean(0)
        self.std = x.std(0) + 1e-6

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std


def _accuracy(x: np.ndarray, y: np.ndarray, fit: Fit) -> float:
    coef, intercept, classes = fit
    return float((classes[(x @ coef.T + intercept).argmax(1)] == y).mean())


def select_c(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    min_val_per_class: int,
    folds: int,
    seed: int,
) -> Selection:
    """Choose C by the rules of the module docstring (val, else cross-validation, else fixed)."""
    classes = np.unique(train_y)
    val_counts = [int((val_y == c).sum()) for c in classes]
    if len(val_y) and min(val_counts) >= min_val_per_class:
        scale = _Standardiser(train_x)
        fits = _path(scale(train_x), train_y, C_GRID, seed)
        scores = {c: _accuracy(scale(val_x), val_y, fit) for c, fit in fits.items()}
        return Selection("val", _best(scores), scores)
    x, y = np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y])
    smallest = min(int((y == c).sum()) for c in np.unique(y))
    k = min(folds, smallest)
    if k < 2 or len(np.unique(y)) < 2:
        return Selection("fixed", FIXED_C)
    from sklearn.model_selection import StratifiedKFold

    totals = dict.fromkeys(C_GRID, 0.0)
    for fit_rows, held_rows in StratifiedKFold(k, shuffle=True, random_state=seed).split(x, y):
        scale = _Standardiser(x[fit_rows])
        for c, fit in _path(scale(x[fit_rows]), y[fit_rows], C_GRID, seed).items():
            totals[c] += _accuracy(scale(x[held_rows]), y[held_rows], fit)
    scores = {c: total / k for c, total in totals.items()}
    return Selection("cv", _best(scores), scores, k)


def _best(scores: dict[float, float]) -> float:
    """The best C; among equals the smallest (the strongest penalty: the simplest model)."""
    top = max(scores.values())
    return min(c for c, score in scores.items() if score >= top - 1e-12)


def fit_logistic(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    n_classes: int,
    min_val_per_class: int,
    folds: int = 5,
    seed: int = 0,
) -> LogisticHead:
    """Choose C, fit to convergence, fold the standardisation into one linear map over ``n_classes``."""
    train_x, val_x = np.asarray(train_x, np.float64), np.asarray(val_x, np.float64)
    train_y, val_y = np.asarray(train_y, np.int64), np.asarray(val_y, np.int64)
    if len(np.unique(train_y)) < 2:
        raise ValueError(f"a logistic regression needs two classes with labels, got {len(np.unique(train_y))}")
    selection = select_c(train_x, train_y, val_x, val_y, min_val_per_class, folds, seed)
    if selection.rule != "val":  # nothing is chosen on val: it trains
        train_x, train_y = np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y])
    scale = _Standardiser(train_x)
    coef, intercept, classes = _path(scale(train_x), train_y, (selection.C,), seed)[selection.C]
    # w·(x − μ)/σ + b = (w/σ)·x + (b − (w/σ)·μ)
    folded = coef / scale.std
    weight = np.zeros((n_classes, train_x.shape[1]))
    bias = np.full(n_classes, -1e4)  # a class absent from the fit is never predicted
    weight[classes] = folded
    bias[classes] = intercept - folded @ scale.mean
    return LogisticHead(weight, bias, selection, len(train_y))
