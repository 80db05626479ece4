"""The converged logistic regression behind linear_probe and the floor: its fit, and how its L2 strength is chosen."""

import numpy as np
import pytest

from autotransfer.transfer.logistic import C_GRID, fit_logistic


def blobs(n_per_class: int, classes: int, seed: int, dim: int = 20, spread: float = 2.5):
    """Gaussian classes in ``dim`` dimensions; features on different scales, as lite0's are (their spread: 0.05 to 2
    from the 10th to the 90th percentile on the demo's digits)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(classes, dim))
    y = np.repeat(np.arange(classes), n_per_class)
    x = centres[y] + rng.normal(scale=spread, size=(len(y), dim))
    return x * np.geomspace(0.05, 2, dim), y


@pytest.mark.parametrize("dim", [20, 300])  # 300: more dimensions than images, solved in their row space
def test_the_folded_head_gives_sklearns_probabilities_at_the_chosen_c(dim):
    from sklearn.linear_model import LogisticRegression

    x, y = blobs(20, 4, seed=0, dim=dim)
    vx, vy = blobs(12, 4, seed=1, dim=dim)
    head = fit_logistic(x, y, vx, vy, n_classes=4, min_val_per_class=10)
    assert head.selection.rule == "val" and head.fitted_on == len(y)  # chosen on val: val does not train
    mean, std = x.mean(0), x.std(0).mean() + 1e-6  # centred, one scale for all features (the product's)
    # the reference: scikit-learn in the full feature space, to a much tighter tolerance
    reference = LogisticRegression(C=head.selection.C, max_iter=20000, tol=1e-10).fit((x - mean) / std, y)
    tx, _ = blobs(10, 4, seed=2, dim=dim)
    logits = tx @ head.weight.T + head.bias
    ours = np.exp(logits - logits.max(1, keepdims=True))
    expected = reference.predict_proba((tx - mean) / std)
    np.testing.assert_allclose(ours / ours.sum(1, keepdims=True), expected, atol=2e-3)


def test_c_is_the_val_best_by_log_loss_when_val_is_large_enough():
    from sklearn.metrics import log_loss

    x, y = blobs(30, 3, seed=0)
    vx, vy = blobs(15, 3, seed=1)
    head = fit_logistic(x, y, vx, vy, n_classes=3, min_val_per_class=10)
    scores = head.selection.scores
    assert set(scores) == set(C_GRID) and set(head.selection.accuracy) == set(C_GRID)
    assert scores[head.selection.C] == min(scores.values())
    # among equal losses the strongest penalty (smallest C) is kept
    assert all(c >= head.selection.C for c, s in scores.items() if s == min(scores.values()))
    # and the loss recorded for the chosen C is scikit-learn's log-loss of the served head on val (refitted
    # to a tighter tolerance: equal within it)
    logits = vx @ head.weight.T + head.bias
    p = np.exp(logits - logits.max(1, keepdims=True))
    assert log_loss(vy, p / p.sum(1, keepdims=True)) == pytest.approx(scores[head.selection.C], rel=1e-3)
    assert "log-loss" in head.selection.describe()


def test_too_small_a_val_means_cross_validation_on_the_pool_and_val_trains():
    x, y = blobs(6, 3, seed=0)
    vx, vy = blobs(2, 3, seed=1)
    head = fit_logistic(x, y, vx, vy, n_classes=3, min_val_per_class=10, folds=5)
    assert head.selection.rule == "cv" and head.selection.folds == 5  # 8 labels per class pooled: 5 folds fit
    assert head.fitted_on == len(y) + len(vy)
    assert "cross-validation" in head.selection.describe()


def test_fewer_than_two_labels_in_a_class_fixes_c():
    x, y = blobs(1, 3, seed=0)
    head = fit_logistic(x, y, np.zeros((0, x.shape[1])), np.zeros(0, dtype=int), n_classes=3, min_val_per_class=10)
    assert head.selection.rule == "fixed" and head.selection.C == 1.0
    assert (head.predict(x) == y).all()


def test_a_class_without_labels_is_never_predicted():
    x, y = blobs(10, 3, seed=0)
    head = fit_logistic(x, y, np.zeros((0, x.shape[1])), np.zeros(0, dtype=int), n_classes=5, min_val_per_class=10)
    assert head.weight.shape == (5, x.shape[1])
    far, _ = blobs(50, 5, seed=3)
    assert set(head.predict(far)) <= {0, 1, 2}


def test_one_class_is_refused_by_name():
    x, y = blobs(5, 1, seed=0)
    with pytest.raises(ValueError, match="two classes"):
        fit_logistic(x, y, x[:0], y[:0], n_classes=2, min_val_per_class=1)


def test_the_converged_fit_beats_a_short_sgd_head_with_few_labels():
    """What the probe replaced: 10 SGD steps on a linear head stop far from the optimum with 3 labels per class."""
    import torch

    x, y = blobs(3, 10, seed=0, spread=0.7)
    tx, ty = blobs(50, 10, seed=5, spread=0.7)
    head = fit_logistic(x, y, x[:0], y[:0], n_classes=10, min_val_per_class=10, folds=3)
    converged = (head.predict(tx) == ty).mean()
    torch.manual_seed(0)
    linear = torch.nn.Linear(x.shape[1], 10)
    sgd = torch.optim.SGD(linear.parameters(), lr=0.05, momentum=0.9)
    features, labels = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    for _ in range(10):
        sgd.zero_grad()
        torch.nn.functional.cross_entropy(linear(features), labels).backward()
        sgd.step()
    short = (linear(torch.tensor(tx, dtype=torch.float32)).argmax(1).numpy() == ty).mean()
    assert converged > short + 0.1


def rare_channels(x: np.ndarray, channels: int, seed: int) -> np.ndarray:
    """``x`` with ``channels`` backbone-like dead channels appended: near zero on every image but two, where they fire."""
    rng = np.random.default_rng(seed)
    quiet = np.abs(rng.normal(scale=1e-4, size=(len(x), channels)))
    for channel in range(channels):
        quiet[rng.choice(len(x), 2, replace=False), channel] = rng.uniform(1, 3, 2)
    return np.hstack([x, quiet])


def test_a_channel_that_fires_on_few_images_does_not_decide_c():
    """Cross-validation's held-out log-loss stays a fair score when a fold's fit images barely vary in a channel.

    Scaled by its own spread on the fit images (10⁻⁴), such a channel is blown up ten thousand times on
    the held-out image where it fires; the held-out log-loss then grows with C whatever the features say,
    and the strongest penalty wins (what the demo's digits showed: 8 to 33 where a guess scores 2.3).
    """
    x, y = blobs(10, 4, seed=0, dim=30, spread=1.5)
    wide = rare_channels(x, 60, seed=1)
    head = fit_logistic(wide, y, wide[:0], y[:0], n_classes=4, min_val_per_class=10, folds=5)
    plain = fit_logistic(x, y, x[:0], y[:0], n_classes=4, min_val_per_class=10, folds=5)
    assert head.selection.rule == "cv"
    assert head.selection.scores[head.selection.C] < np.log(4)  # better than a uniform guess
    tx, ty = blobs(50, 4, seed=5, dim=30, spread=1.5)
    quiet = np.abs(np.random.default_rng(2).normal(scale=1e-4, size=(len(tx), 60)))
    assert (head.predict(np.hstack([tx, quiet])) == ty).mean() >= (plain.predict(tx) == ty).mean() - 0.05
