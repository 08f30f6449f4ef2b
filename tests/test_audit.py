"""The retrain-free forget audit on hand-built distributions, and the evidence functions the benchmark reports."""

import numpy as np
import pytest
from scipy.stats import ks_2samp
from sklearn.metrics import roc_auc_score

from hf_recunlearn.audit import ForgetAudit, forget_quality, membership_attacks, per_sample_loss


def draw(rng, n, labels, sharpness):
    """P(like) whose confidence in the true label grows with `sharpness` (a model that fits these rows better)."""
    logit = rng.normal(sharpness, 1.0, size=n)
    p_true = 1 / (1 + np.exp(-logit))
    return np.where(labels == 1, p_true, 1 - p_true)


@pytest.fixture
def population():
    rng = np.random.default_rng(0)
    forget_labels = rng.integers(0, 2, 300)
    holdout_labels = rng.integers(0, 2, 400)
    users_f = np.repeat(np.arange(30), 10)
    users_h = np.repeat(np.arange(40), 10) + 1000
    # The reference never saw the forget rows, and they are harder for it than the hold-out rows (AUC below 0.5):
    # the target is the reference's own view, not 0.5.
    reference = (draw(rng, 300, forget_labels, 0.2), draw(rng, 400, holdout_labels, 0.8))
    audit = ForgetAudit(forget_labels, holdout_labels, *reference, forget_groups=users_f, holdout_groups=users_h)
    return rng, forget_labels, holdout_labels, reference, audit


def test_identical_distributions_are_indistinguishable(population):
    rng, forget_labels, holdout_labels, reference, audit = population
    # The matched target sits where the reference puts it: the forget rows predicted worse than unseen rows.
    assert audit.target_relative_auc < -0.05 and audit.target_loss_auc < 0.45
    lo, hi = audit.relative_interval
    assert lo < audit.target_relative_auc < hi and hi - lo < 0.25

    same = audit(*reference)
    assert same.relative_auc == pytest.approx(audit.target_relative_auc) and same.distance == pytest.approx(0.0)
    assert same.loss_auc == pytest.approx(audit.target_loss_auc)
    assert same.at_target and same.side == 0 and same.ks_statistic == 0.0 and same.ks_pvalue == pytest.approx(1.0)

    # A fresh draw from the same distributions (another model that never saw the forget set) is also at the target.
    fresh = audit(draw(rng, 300, forget_labels, 0.2), draw(rng, 400, holdout_labels, 0.8))
    assert fresh.at_target and fresh.ks_pvalue > 0.05


def test_shifted_distributions_are_distinguishable(population):
    rng, forget_labels, holdout_labels, reference, audit = population
    # A model that fits the forget rows far better than unseen rows: it remembers them.
    remembers = audit(draw(rng, 300, forget_labels, 2.5), draw(rng, 400, holdout_labels, 0.8))
    assert not remembers.at_target and remembers.side == 1
    assert remembers.relative_auc > remembers.relative_interval[1] and remembers.distance > 0.2
    assert remembers.loss_auc > remembers.loss_interval[1]
    # The relative AUC is the forget rows' AUC minus the hold-out rows', each computed independently.
    expected_relative = roc_auc_score(forget_labels, draw(np.random.default_rng(1), 300, forget_labels, 2.5)) - \
        roc_auc_score(holdout_labels, reference[1])
    assert audit(draw(np.random.default_rng(1), 300, forget_labels, 2.5), reference[1]).relative_auc == pytest.approx(
        expected_relative
    )
    assert remembers.ks_pvalue < 1e-6
    # The loss attack is the AUC of -loss, members first, computed independently.
    losses = np.concatenate([per_sample_loss(forget_labels, draw(np.random.default_rng(1), 300, forget_labels, 2.5)),
                             per_sample_loss(holdout_labels, reference[1])])  # fmt: skip
    expected = roc_auc_score(np.r_[np.ones(300), np.zeros(400)], -losses)
    scores = draw(np.random.default_rng(1), 300, forget_labels, 2.5)
    assert audit(scores, reference[1]).loss_auc == pytest.approx(expected)
    # Pushed past the target (worse on the forget rows than a model that never saw them): the other side.
    over = audit(draw(rng, 300, forget_labels, -1.5), draw(rng, 400, holdout_labels, 0.8))
    assert not over.at_target and over.side == -1


def test_subsample_keeps_row_mapping_and_its_own_interval(population):
    _, forget_labels, holdout_labels, reference, audit = population
    sub = audit.sample(100, seed=3)
    assert len(sub.forget_labels) == 100 and len(sub.holdout_labels) == 100
    np.testing.assert_array_equal(sub.forget_labels, forget_labels[sub.forget_rows])
    np.testing.assert_allclose(sub.reference_holdout_probs, reference[1][sub.holdout_rows])
    # Fewer rows, a wider interval.
    assert np.diff(sub.relative_interval)[0] > np.diff(audit.relative_interval)[0]
    with pytest.raises(ValueError, match="Score the same rows"):
        audit(reference[0][:10], reference[1])


def test_membership_suite_and_forget_quality_on_hand_built_scores():
    rng = np.random.default_rng(0)
    fl, tl = rng.integers(0, 2, 200), rng.integers(0, 2, 300)
    fp, tp = draw(rng, 200, fl, 2.0), draw(rng, 300, tl, 0.5)
    ref_f, ref_t = draw(rng, 200, fl, 0.5), draw(rng, 300, tl, 0.5)
    suite = membership_attacks(fl, fp, tl, tp, ref_f, ref_t)
    y = np.r_[np.ones(200), np.zeros(300)]
    assert suite["mia_loss"] == pytest.approx(roc_auc_score(y, -np.r_[per_sample_loss(fl, fp), per_sample_loss(tl, tp)]))
    conf = np.maximum(np.r_[fp, tp], 1 - np.r_[fp, tp])
    assert suite["mia_confidence"] == pytest.approx(roc_auc_score(y, conf))
    calibrated = np.r_[per_sample_loss(fl, ref_f) - per_sample_loss(fl, fp), per_sample_loss(tl, ref_t) - per_sample_loss(tl, tp)]
    assert suite["mia_reference"] == pytest.approx(roc_auc_score(y, calibrated))
    assert suite["mia_loss"] > 0.8 and suite["mia_entropy"] > 0.6  # these forget rows are fitted much better
    assert np.isnan(membership_attacks(fl, fp, tl, tp)["mia_reference"])

    assert forget_quality(fp, fp) == pytest.approx(1.0)
    assert forget_quality(fp, ref_f) == pytest.approx(ks_2samp(fp, ref_f).pvalue) and forget_quality(fp, ref_f) < 1e-3
