"""Label-free health of a trained model: what can be said about it on target images without labels.

With no labeled target val, nothing in a run measures accuracy before the test split, and
an adaptation run can end no better than chance (all its target predictions in one or two
classes) while its losses look fine. These signals are computed from the model's
predictions on target images alone: the mean entropy of the predictions (normalised by
log C: 0 certain, 1 uniform), the share of each predicted class, the effective number of
predicted classes (exp of the entropy of that histogram) and whether the model collapsed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def collapse_top_k(classes: int, collapse_classes: int) -> int:
    """How many of the most predicted classes the collapse rule sums: ``collapse_classes``, or
    half of the classes (rounded down) when there are fewer than twice that."""
    return min(collapse_classes, classes // 2)


def prediction_health(
    probabilities: np.ndarray,
    head_classes: tuple[str, ...],
    collapse_classes: int,
    collapse_share: float,
) -> dict[str, Any]:
    """Entropy, class balance and the collapse verdict of ``probabilities`` (N × C, rows sum to 1)."""
    n, c = probabilities.shape
    if n == 0:
        return {"n": 0, "collapsed": None, "verdict": "no target images to check the model on"}
    p = np.clip(probabilities.astype(np.float64), 1e-12, 1.0)
    entropy = float((-(p * np.log(p)).sum(1)).mean() / math.log(c)) if c > 1 else 0.0
    counts = np.bincount(probabilities.argmax(1), minlength=c)
    shares = counts / n
    nonzero = shares[shares > 0]
    effective = float(np.exp(-(nonzero * np.log(nonzero)).sum()))
    order = np.argsort(-counts, kind="stable")
    k = collapse_top_k(c, collapse_classes)
    top = [head_classes[i] for i in order[:k]]
    top_share = float(shares[order[:k]].sum()) if k else 0.0
    collapsed = bool(k and top_share >= collapse_share)
    named = " and ".join(repr(t) for t in top)
    verdict = (
        f"collapsed: {top_share:.0%} of its {n} target predictions are {named} "
        f"(≥ {collapse_share:.0%}: train.health.collapse_share)"
        if collapsed
        else f"not collapsed: its {k} most predicted classes ({named}) take {top_share:.0%} of {n} target predictions"
    )
    return {
        "n": n,
        "mean_entropy": round(entropy, 4),
        "effective_classes": round(effective, 2),
        "classes": c,
        "top_classes": top,
        "top_share": round(top_share, 4),
        "shares": {head_classes[i]: round(float(shares[i]), 4) for i in order if counts[i]},
        "collapsed": collapsed,
        "verdict": verdict,
    }
