import numpy as np
import pytest
from scipy.stats import multivariate_normal

from autotransfer.analysis.similarity import frechet_distance, linear_probe_accuracy, logme, mmd2_rbf, proxy_a_distance


def gaussian(n, d=8, shift=0.0, seed=0):
    return np.random.default_rng(seed).normal(shift, 1.0, size=(n, d))


def test_pad_near_zero_for_one_distribution():
    result = proxy_a_distance(gaussian(400, seed=1), gaussian(400, seed=2))
    assert result["pad"] < 0.3 and result["n_per_domain"] == 400


def test_pad_near_two_for_disjoint_clusters():
    result = proxy_a_distance(gaussian(200, shift=-5, seed=1), gaussian(300, shift=5, seed=2))
    assert result["pad"] > 1.95 and result["n_per_domain"] == 200


def test_pad_grows_with_the_shift():
    pads = [proxy_a_distance(gaussian(300, seed=1), gaussian(300, shift=s, seed=2))["pad"] for s in (0.0, 0.3, 1.0)]
    assert pads[0] < pads[1] < pads[2]


def test_mmd_near_zero_for_one_distribution_and_large_for_disjoint():
    same = mmd2_rbf(gaussian(200, seed=1), gaussian(200, seed=2))["mmd2"]
    apart = mmd2_rbf(gaussian(200, shift=-3, seed=1), gaussian(200, shift=3, seed=2))["mmd2"]
    assert abs(same) < 0.01 and apart > 0.5


def test_frechet_is_zero_for_identical_sets_and_matches_the_formula_for_shifted_means():
    x = gaussian(500, d=4)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    # same covariance, means apart by 2 in each of 4 dims: distance = 4 * 2² = 16
    assert frechet_distance(x, x + 2.0) == pytest.approx(16.0, rel=1e-6)


def test_logme_prefers_label_informative_features():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=300)
    informative = np.eye(3)[labels] * 3 + rng.normal(0, 0.5, size=(300, 3))
    informative = np.concatenate([informative, rng.normal(size=(300, 5))], axis=1)
    noise = rng.normal(size=(300, 8))
    assert logme(informative, labels)["logme"] > logme(noise, labels)["logme"] + 0.5


@pytest.mark.parametrize("n, d", [(6, 2), (4, 6)])  # more samples than dims, and fewer
def test_logme_equals_the_direct_log_evidence_at_its_fixed_point(n, d):
    # given a tiny case whose evidence can be written down directly:
    # y ~ N(0, β⁻¹I + α⁻¹FFᵀ) under the prior w ~ N(0, α⁻¹I), noise N(0, β⁻¹)
    rng = np.random.default_rng(3)
    features = rng.normal(size=(n, d))
    labels = np.array([0, 1] * (n // 2))
    result = logme(features, labels)
    for entry in result["per_class"]:
        y = (labels == entry["label"]).astype(float)
        cov = np.eye(n) / entry["beta"] + features @ features.T / entry["alpha"]
        direct = multivariate_normal(mean=np.zeros(n), cov=cov).logpdf(y)
        assert entry["evidence"] == pytest.approx(direct, abs=1e-6)
    assert result["logme"] == pytest.approx(np.mean([e["evidence"] for e in result["per_class"]]) / n)


def test_logme_with_fewer_images_than_dimensions_stays_finite():
    # given 3 labeled images per class and 512-d features (the label-scarce case: y lies in F's span)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 3)
    wide = rng.normal(size=(30, 512))
    for features in (wide, 1e3 * wide, np.repeat(wide[:10], 3, axis=0)):  # incl. large and repeated features
        result = logme(features, labels)
        # then the score is a number, not a ZeroDivisionError
        assert np.isfinite(result["logme"]) and all(np.isfinite(c["alpha"]) for c in result["per_class"])


def test_logme_fixed_point_maximises_the_evidence():
    # the returned α, β are a stationary point: nudging them lowers the evidence
    rng = np.random.default_rng(4)
    f = rng.normal(size=(40, 5))
    labels = (f[:, 0] + rng.normal(0, 0.5, 40) > 0).astype(int)
    entry = logme(f, labels)["per_class"][1]
    y = (labels == 1).astype(float)

    def evidence(alpha, beta):
        return multivariate_normal(np.zeros(40), np.eye(40) / beta + f @ f.T / alpha).logpdf(y)

    best = evidence(entry["alpha"], entry["beta"])
    for da, db in ((1.2, 1), (1 / 1.2, 1), (1, 1.2), (1, 1 / 1.2)):
        assert evidence(entry["alpha"] * da, entry["beta"] * db) < best


def test_linear_probe_accuracy_separates_signal_from_noise():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    signal = labels[:, None] * 2.0 + rng.normal(size=(200, 4))
    assert linear_probe_accuracy(signal, labels)["accuracy"] > 0.9
    assert linear_probe_accuracy(rng.normal(size=(200, 4)), labels)["accuracy"] < 0.7
