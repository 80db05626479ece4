"""Domain distance and transferability measures on feature matrices (docs/strategies.md, "Similarity").

Pure numpy/scikit-learn on arrays of shape (n, d); the stage that extracts features and
writes ``reports/similarity.json`` builds on these. Each function is small enough to
check against its formula.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import linalg

if TYPE_CHECKING:
    from autotransfer.models.features import LayerMoments

PAD_C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)


def proxy_a_distance(
    source: np.ndarray, target: np.ndarray, seed: int = 0, c_grid: tuple[float, ...] = PAD_C_GRID
) -> dict[str, float]:
    """PAD = 2(1 − 2ε), ε the best held-out error of a linear source-vs-target classifier.

    Ben-David et al.; the DANN paper's measure. Both samples are cut to the same size (so
    chance is 0.5), each half trains, the other half scores, and the best error over the
    regularisation grid is kept. Clipped to [0, 2]: an error above chance says nothing.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    n = min(len(source), len(target))
    rng = np.random.default_rng(seed)
    x = np.concatenate([source[rng.permutation(len(source))[:n]], target[rng.permutation(len(target))[:n]]])
    y = np.repeat([0, 1], n)
    order = rng.permutation(2 * n)
    x, y = x[order], y[order]
    half = n  # a random half of the 2n points trains, the rest scores
    scaler = StandardScaler().fit(x[:half])
    x_train, x_test = scaler.transform(x[:half]), scaler.transform(x[half:])
    errors = []
    for c in c_grid:
        model = LogisticRegression(C=c, max_iter=2000).fit(x_train, y[:half])
        errors.append(1.0 - model.score(x_test, y[half:]))
    error = float(min(errors))
    return {"pad": float(np.clip(2.0 * (1.0 - 2.0 * error), 0.0, 2.0)), "error": error, "n_per_domain": n}


def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def mmd2_rbf(source: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Unbiased MMD² with an RBF kernel, bandwidth by the median heuristic on the pooled sample."""
    x = np.asarray(source, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    pooled = np.concatenate([x, y])
    d_all = _sq_distances(pooled, pooled)
    median = float(np.median(d_all[np.triu_indices(len(pooled), k=1)]))
    gamma = 1.0 / max(median, 1e-12)
    k_xx, k_yy, k_xy = (np.exp(-gamma * _sq_distances(a, b)) for a, b in ((x, x), (y, y), (x, y)))
    m, n = len(x), len(y)
    mmd2 = (
        (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
        + (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
        - 2.0 * k_xy.mean()
    )
    return {"mmd2": float(mmd2), "bandwidth_sq": median, "n_source": m, "n_target": n}


def frechet_distance(source: np.ndarray, target: np.ndarray) -> float:
    """‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^½): the FID formula on any features."""
    x = np.asarray(source, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    mu = x.mean(0) - y.mean(0)
    s1, s2 = np.atleast_2d(np.cov(x, rowvar=False)), np.atleast_2d(np.cov(y, rowvar=False))
    with warnings.catch_warnings():
        # Fewer samples than dimensions make Σ₁Σ₂ singular; its square root is still the right trace.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s1 @ s2)
    if np.iscomplexobj(covmean):
        covmean = covmean.real  # tiny imaginary parts from numerical error
    value = float(mu @ mu + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))
    return max(value, 0.0)


EVIDENCE_EPS = 1e-5


def logme(features: np.ndarray, labels: np.ndarray, max_iter: int = 100, tol: float = 1e-6) -> dict:
    """LogME (You et al., ICML 2021): mean over classes of the maximised log-evidence / N.

    For each class k, a Bayesian linear regression of the one-hot column y on the features
    F (prior N(0, α⁻¹I), noise N(0, β⁻¹)); the evidence is maximised by the fixed point
    γ = Σ σᵢ/(σᵢ + α/β), m = β A⁻¹Fᵀy, α ← γ/(mᵀm), β ← (N − γ)/‖y − Fm‖², with σᵢ the
    eigenvalues of FᵀF from one SVD of F. Float64 throughout.
    """
    f = np.asarray(features, dtype=np.float64)
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    sigma = np.zeros(d)
    sigma[: len(s)] = s**2  # the eigenvalues of FᵀF; zeros beyond the rank
    classes = np.unique(labels)
    per_class = []
    for k in classes:
        y = (labels == k).astype(np.float64)
        x = u.T @ y  # y in the basis of F's left singular vectors
        x2 = np.zeros(d)
        x2[: len(x)] = x**2
        outside = float(y @ y - (x**2).sum())  # the part of y that F cannot reach
        alpha, beta = 1.0, 1.0
        for _ in range(max_iter):
            t = alpha / beta
            gamma = float((sigma / (sigma + t)).sum())
            m2 = float((sigma * x2 / (sigma + t) ** 2).sum())  # ‖m‖²
            res2 = float((x2 * (t / (sigma + t)) ** 2).sum() + outside)  # ‖y − Fm‖²
            # ε as in the reference implementation: with fewer images than feature dimensions y
            # lies in F's span, ‖y − Fm‖² → 0 as α/β → 0, and the unguarded iteration divides by zero.
            new_alpha, new_beta = gamma / (m2 + EVIDENCE_EPS), (n - gamma) / (res2 + EVIDENCE_EPS)
            if new_beta <= 0 or not np.isfinite(new_alpha / new_beta):
                break  # γ reached N in float64: keep the last finite point
            alpha, beta = new_alpha, new_beta
            if abs(alpha / beta - t) / t < tol:
                break
        t = alpha / beta
        m2 = float((sigma * x2 / (sigma + t) ** 2).sum())
        res2 = float((x2 * (t / (sigma + t)) ** 2).sum() + outside)
        evidence = (
            d / 2 * np.log(alpha)
            + n / 2 * np.log(beta)
            - 0.5 * np.log(alpha + beta * sigma).sum()
            - beta / 2 * res2
            - alpha / 2 * m2
            - n / 2 * np.log(2 * np.pi)
        )
        per_class.append(
            {
                "label": k.item() if hasattr(k, "item") else k,
                "evidence": float(evidence),
                "alpha": float(alpha),
                "beta": float(beta),
            }
        )
    score = float(np.mean([c["evidence"] for c in per_class]) / n)
    return {"logme": score, "n": n, "dim": d, "per_class": per_class}


def linear_probe_accuracy(features: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0) -> dict:
    """Cross-validated accuracy of a logistic regression on standardised features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    counts = np.unique(labels, return_counts=True)[1]
    folds = int(max(2, min(folds, counts.min())))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    scores = cross_val_score(model, features, labels, cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    return {"accuracy": float(scores.mean()), "std": float(scores.std()), "folds": folds, "n": len(labels)}


def batchnorm_shift(layers: list[LayerMoments], eps: float = 1e-5) -> dict[str, Any]:
    """How far the target's activations are from those the backbone was trained on, without its training images.

    Each BatchNorm layer keeps the per-channel mean and variance of its input over the
    pretraining data (ImageNet for imagenet weights, the source domain for a source model).
    Per channel, the symmetric KL divergence between two Gaussians, the target's (measured
    in eval mode) and the pretrained one:
    ½(σt²/σs² + σs²/σt² + (μt − μs)²(1/σs² + 1/σt²)) − 1; averaged over channels, then
    over layers (``value``), and over the first and the last third of the layers (early
    layers see colour and texture, late ones content). 0: the same statistics.
    """
    if not layers:
        return {"value": None, "reason": "the backbone has no BatchNorm layers (e.g. a ViT)"}
    per_layer = []
    for m in layers:
        var_t, var_s = m.var + eps, m.running_var + eps
        gap = (m.mean - m.running_mean) ** 2
        kl = 0.5 * (var_t / var_s + var_s / var_t + gap * (1 / var_s + 1 / var_t)) - 1
        per_layer.append(float(np.mean(kl)))
    third = max(1, len(per_layer) // 3)
    return {
        "value": float(np.mean(per_layer)),
        "early": float(np.mean(per_layer[:third])),
        "late": float(np.mean(per_layer[-third:])),
        "layers": len(per_layer),
    }
