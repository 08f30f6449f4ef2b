import math

import numpy as np
import pytest

from hf_recunlearn.metrics import (
    bootstrap_auc,
    gap_closed,
    jsd,
    l2_distance,
    membership_inference_auc,
    symmetrised_kl_full_vocab,
    true_label_confidence,
    utility_metrics,
)


def test_utility_metrics_by_hand():
    m = utility_metrics([1, 0, 1, 0], [0.9, 0.2, 0.4, 0.6])
    assert m["auc"] == pytest.approx(0.75)
    assert m["acc"] == pytest.approx(0.5)
    expected = -np.mean(np.log([0.9, 0.8, 0.4, 0.4]))
    assert m["logloss"] == pytest.approx(expected)
    assert math.isnan(utility_metrics([1, 1], [0.3, 0.4])["auc"])
    with pytest.raises(ValueError, match="length"):
        utility_metrics([1, 0], [0.5])
    with pytest.raises(ValueError, match="logits"):
        utility_metrics([1, 0], [2.0, -1.0])


def test_jsd_is_the_true_jensen_shannon_divergence():
    p, q = np.array([0.9]), np.array([0.2])
    P, Q = np.array([0.1, 0.9]), np.array([0.8, 0.2])
    M = (P + Q) / 2
    expected = 0.5 * np.sum(P * np.log(P / M)) + 0.5 * np.sum(Q * np.log(Q / M))
    assert jsd(p, q) == pytest.approx(expected)
    assert jsd([0.3, 0.7], [0.3, 0.7]) == pytest.approx(0.0, abs=1e-12)
    assert jsd([0.0], [1.0]) == pytest.approx(math.log(2), rel=1e-4)
    assert jsd(p, q) == pytest.approx(jsd(q, p))


def test_l2_between_yes_no_distributions():
    assert l2_distance([0.9], [0.2]) == pytest.approx(np.linalg.norm([0.1 - 0.8, 0.9 - 0.2]))


def test_symmetrised_kl_is_not_jsd():
    a = np.log(np.array([[0.7, 0.2, 0.1]]))
    b = np.log(np.array([[0.1, 0.3, 0.6]]))
    pa, pb = np.exp(a[0]), np.exp(b[0])
    expected = 0.5 * (np.sum(pa * np.log(pa / pb)) + np.sum(pb * np.log(pb / pa)))
    assert symmetrised_kl_full_vocab(a, b) == pytest.approx(expected)


def test_gap_closed():
    assert gap_closed(0.02, 0.014, 0.012) == pytest.approx(0.75)
    assert gap_closed(0.02, 0.02, 0.012) == pytest.approx(0.0)
    assert math.isnan(gap_closed(0.01, 0.01, 0.012))  # nothing above the floor


def test_membership_inference_auc():
    assert membership_inference_auc([3, 4, 5], [0, 1, 2]) == pytest.approx(1.0)
    assert membership_inference_auc([1, 2], [1, 2]) == pytest.approx(0.5)
    conf = true_label_confidence([1, 0], [0.8, 0.8])
    np.testing.assert_allclose(conf, np.log([0.8, 0.2]))
    with pytest.raises(ValueError, match="member"):
        membership_inference_auc([], [1])


def test_bootstrap_auc_is_the_auc_of_each_resample_and_pairs_the_resamples():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    p = np.round(np.clip(0.3 * y + rng.random(300) * 0.7, 0, 1), 2)  # rounded: many ties
    q = rng.random(300)
    a, b = bootstrap_auc(y, p, resamples=50, seed=3), bootstrap_auc(y, q, resamples=50, seed=3)
    draws = np.random.default_rng(3).integers(0, 300, size=(50, 300))  # the resamples the function draws
    for i in (0, 17, 49):
        assert a[i] == pytest.approx(roc_auc_score(y[draws[i]], p[draws[i]]), abs=1e-12)
        assert b[i] == pytest.approx(roc_auc_score(y[draws[i]], q[draws[i]]), abs=1e-12)
    assert not np.array_equal(a, bootstrap_auc(y, p, resamples=50, seed=4))
    assert np.isnan(bootstrap_auc([1, 1, 1], [0.2, 0.5, 0.9], resamples=4)).all()
