"""Label-free health: entropy, class balance and the collapse verdict of target predictions."""

from __future__ import annotations

import numpy as np
import pytest

from autotransfer.analysis.health import collapse_top_k, prediction_health
from autotransfer.registry.promotion import health_veto

CLASSES = tuple(str(i) for i in range(10))


def one_hot(predicted: list[int], c: int = 10, confidence: float = 0.9) -> np.ndarray:
    p = np.full((len(predicted), c), (1 - confidence) / (c - 1))
    p[np.arange(len(predicted)), predicted] = confidence
    return p


def test_a_model_answering_mostly_two_classes_is_collapsed_and_says_which():
    # given 100 target predictions, 87 of them '3' or '7'
    predicted = [3] * 60 + [7] * 25 + list(range(10)) + [0] * 5
    health = prediction_health(one_hot(predicted), CLASSES, collapse_classes=2, collapse_share=0.8)
    assert health["collapsed"] is True and health["top_classes"] == ["3", "7"]
    assert health["top_share"] == pytest.approx(0.87)
    assert "87%" in health["verdict"] and "'3' and '7'" in health["verdict"]
    assert sum(health["shares"].values()) == pytest.approx(1.0)
    assert health["effective_classes"] < 4


def test_a_balanced_model_is_not_collapsed_and_its_entropy_is_read_from_its_probabilities():
    predicted = list(range(10)) * 10
    sure = prediction_health(one_hot(predicted, confidence=0.99), CLASSES, 2, 0.8)
    unsure = prediction_health(one_hot(predicted, confidence=0.2), CLASSES, 2, 0.8)
    assert sure["collapsed"] is False and sure["effective_classes"] == pytest.approx(10.0)
    assert sure["top_share"] == pytest.approx(0.2)
    assert 0 <= sure["mean_entropy"] < unsure["mean_entropy"] <= 1


def test_few_classes_sum_half_of_them_and_no_images_gives_no_verdict():
    assert [collapse_top_k(c, 2) for c in (2, 3, 4, 10)] == [1, 1, 2, 2]
    binary = prediction_health(one_hot([0] * 9 + [1], c=2), ("cat", "dog"), 2, 0.8)
    assert binary["collapsed"] is True and binary["top_classes"] == ["cat"]
    empty = prediction_health(np.zeros((0, 10)), CLASSES, 2, 0.8)
    assert empty["collapsed"] is None and empty["n"] == 0


def test_only_a_collapsed_model_without_target_val_labels_is_vetoed():
    assert "not promoted" in health_veto(True, True, "collapsed: 90% ...")
    assert health_veto(True, False, "collapsed") is None  # val labels checked it: the floor and val rule
    assert health_veto(False, True, "not collapsed") is None
    assert health_veto(None, True, "no target images") is None
