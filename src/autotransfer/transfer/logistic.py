"""A converged multinomial logistic regression, its L2 strength chosen without the test split.

What ``linear_probe`` and the floor's pixel baseline fit: features centred and divided by
one scale (``_Scaler``), L-BFGS to convergence (scikit-learn's ``LogisticRegression`` at its
tolerance), the inverse L2 strength ``C`` swept over ``C_GRID``, the scaling folded back into
one ``Linear`` layer so the result is a head like any other. How ``C`` is chosen
(``Selection.rule``):

- ``val``: the labeled val split has at least ``min_val_per_class`` images in each
  class: the C with the lowest log-loss on it, fitted on train only (val stays a fair
  score for the floor);
- ``cv``: val is smaller: the C with the lowest mean held-out log-loss over stratified
  k-fold cross-validation on train and val pooled, then the final fit on that pool
  (nothing is left to choose on val, so it trains);
- ``fixed``: too few labels per class for even two folds: C = 1 (scikit-learn's default).

Log-loss, not accuracy: with 1-6 held-out images per fold and class, accuracy is flat
across C and a tie decides; over 10 label draws of 3-30 labels per class on three held-out
sets, choosing by log-loss scored 0.7 points above choosing by accuracy on the sets it was
chosen on (BENCHMARKS.md §12, which reads it again on sets built afresh).

This is the protocol of the linear-probe literature (Kornblith et al. 2019; the CLIP
paper's probes): a convex fit with its regularisation swept, not a short SGD run, which
with a handful of labels stops far from the optimum (docs/strategies.md).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Inverse L2 strengths tried, on scaled features (``_Scaler``): 1e-3 ... 1e2, every half decade.
C_GRID: tuple[float, ...] = tuple(float(c) for c in np.logspace(-3, 2, 11))
FIXED_C = 1.0
MAX_ITER = 1000
# The C sweep stops at scikit-learn's tolerance; the one final fit goes further: a weak
# penalty (which log-loss chooses on separable features) converges slowly, and at 1e-4 the
# served probabilities were up to 8e-3 from the optimum on 80 separable images (1e-8: 1e-6),
# for a few tenths of a second in the row space.
FINAL_TOL = 1e-8


@dataclass(frozen=True)
class Selection:
    """How the L2 strength was chosen and what each candidate scored."""

    rule: str  # val | cv | fixed
    C: float
    scores: dict[float, float] = field(default_factory=dict)  # C -> held-out log-loss (val, or mean over folds)
    accuracy: dict[float, float] = field(default_factory=dict)  # C -> held-out accuracy, for the record
    folds: int = 0

    def describe(self) -> str:
        held = f"log-loss {self.scores.get(self.C, 0):.3f}, accuracy {self.accuracy.get(self.C, 0):.3f}"
        if self.rule == "val":
            return f"C={self.C:g} chosen on val ({held})"
        if self.rule == "cv":
            return f"C={self.C:g} chosen by {self.folds}-fold cross-validation on train+val ({held})"
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


def _path(x: np.ndarray, y: np.ndarray, cs: tuple[float, ...], seed: int, tol: float = 1e-4) -> dict[float, Fit]:
    """Fits of a logistic regression on scaled ``x`` for each C in ``cs``, each to convergence.

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
    model = LogisticRegression(max_iter=MAX_ITER, tol=tol, warm_start=True, random_state=seed)
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


class _Scaler:
    """Centre each feature, divide all by one scale: the mean of the features' standard deviations.

    One scale, not one per feature: a backbone channel that is near zero on every image it
    is fitted on but a few (a dead channel on a plain background: 220 of lite0's 1,280 on the
    demo's digits) would be divided by its tiny spread and blown up on the image where it
    fires, and a cross-validation fold's held-out log-loss with it (8 to 33 on the demo's
    digits, where a uniform guess scores 2.3). Over 10 label draws of 3-30 labels per class
    on the three held-out sets built with data seed 0, one scale scored 82.7 points, per
    feature 79.8 and per feature with its spread floored at a tenth of the median 82.5
    (BENCHMARKS.md §12b, which reads them again on sets built afresh and on the demo).
    """

    def __init__(self, x: np.ndarray) -> None:
        self.mean = x.mean(0)
        self.std = np.full(x.shape[1], x.std(0).mean() + 1e-6)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std


def _held_out(x: np.ndarray, y: np.ndarray, fit: Fit) -> tuple[float, float]:
    """Log-loss and accuracy of ``fit`` on ``(x, y)`` (every class of ``y`` is one the fit saw)."""
    coef, intercept, classes = fit
    logits = x @ coef.T + intercept
    logits = logits - logits.max(1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    truth = np.searchsorted(classes, y)
    return float(-log_p[np.arange(len(y)), truth].mean()), float((logits.argmax(1) == truth).mean())


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
        scale = _Scaler(train_x)
        fits = _path(scale(train_x), train_y, C_GRID, seed)
        held = {c: _held_out(scale(val_x), val_y, fit) for c, fit in fits.items()}
        scores = {c: loss for c, (loss, _) in held.items()}
        return Selection("val", _best(scores), scores, {c: acc for c, (_, acc) in held.items()})
    x, y = np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y])
    smallest = min(int((y == c).sum()) for c in np.unique(y))
    k = min(folds, smallest)
    if k < 2 or len(np.unique(y)) < 2:
        return Selection("fixed", FIXED_C)
    from sklearn.model_selection import StratifiedKFold

    losses, accuracy = dict.fromkeys(C_GRID, 0.0), dict.fromkeys(C_GRID, 0.0)
    for fit_rows, held_rows in StratifiedKFold(k, shuffle=True, random_state=seed).split(x, y):
        scale = _Scaler(x[fit_rows])
        for c, fit in _path(scale(x[fit_rows]), y[fit_rows], C_GRID, seed).items():
            loss, acc = _held_out(scale(x[held_rows]), y[held_rows], fit)
            losses[c] += loss / k
            accuracy[c] += acc / k
    return Selection("cv", _best(losses), losses, accuracy, k)


def _best(losses: dict[float, float]) -> float:
    """The C of the lowest held-out log-loss; among equals the smallest (the strongest penalty)."""
    low = min(losses.values())
    return min(c for c, loss in losses.items() if loss <= low + 1e-12)


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
    """Choose C, fit to convergence, fold the scaling into one linear map over ``n_classes``."""
    train_x, val_x = np.asarray(train_x, np.float64), np.asarray(val_x, np.float64)
    train_y, val_y = np.asarray(train_y, np.int64), np.asarray(val_y, np.int64)
    if len(np.unique(train_y)) < 2:
        raise ValueError(f"a logistic regression needs two classes with labels, got {len(np.unique(train_y))}")
    selection = select_c(train_x, train_y, val_x, val_y, min_val_per_class, folds, seed)
    if selection.rule != "val":  # nothing is chosen on val: it trains
        train_x, train_y = np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y])
    scale = _Scaler(train_x)
    coef, intercept, classes = _path(scale(train_x), train_y, (selection.C,), seed, FINAL_TOL)[selection.C]
    # w·(x − μ)/σ + b = (w/σ)·x + (b − (w/σ)·μ)
    folded = coef / scale.std
    weight = np.zeros((n_classes, train_x.shape[1]))
    bias = np.full(n_classes, -1e4)  # a class absent from the fit is never predicted
    weight[classes] = folded
    bias[classes] = intercept - folded @ scale.mean
    return LogisticHead(weight, bias, selection, len(train_y))
