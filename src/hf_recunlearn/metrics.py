"""Utility and forgetting metrics on P(like) scores. Every function takes per-sample arrays; nothing sees padding."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score


_EPS = 1e-7


def _as_probs(p) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    if p.size and (np.nanmin(p) < 0 or np.nanmax(p) > 1):
        raise ValueError("Probabilities must lie in [0, 1]; pass P(like) scores, not logits.")
    return p


def utility_metrics(labels, probs) -> dict[str, float]:
    """
    AUC, ACC (threshold 0.5) and LogLoss of P(like) scores against 0/1 labels (scikit-learn implementations).

    AUC is `nan` when `labels` hold a single class.
    """
    y = np.asarray(labels).astype(int).reshape(-1)
    p = _as_probs(probs)
    if len(y) != len(p):
        raise ValueError(f"`labels` and `probs` differ in length: {len(y)} vs {len(p)}.")
    if len(y) == 0:
        raise ValueError("Cannot compute metrics on an empty set.")
    auc = float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")
    return {
        "auc": auc,
        "acc": float(accuracy_score(y, p >= 0.5)),
        "logloss": float(log_loss(y, np.clip(p, _EPS, 1 - _EPS), labels=[0, 1])),
    }


def bootstrap_auc(labels, probs, resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """
    AUC of `probs` on `resamples` bootstrap resamples of the rows (drawn with replacement), `(resamples,)`.

    The resamples depend only on `len(labels)`, `resamples` and `seed`, so calls with the same three share them:
    the difference of two such arrays is a *paired* bootstrap of the AUC difference, and
    `np.percentile(a - b, [2.5, 97.5])` its 95% interval. Vectorised over the resamples (a resample is a row of
    counts; AUC is the count-weighted Mann–Whitney statistic, ties counted half), so thousands of resamples of a few
    thousand rows take well under a second. A resample holding a single class gets `nan`.
    """
    y = np.asarray(labels).astype(int).reshape(-1)
    p = _as_probs(probs)
    if len(y) != len(p):
        raise ValueError(f"`labels` and `probs` differ in length: {len(y)} vs {len(p)}.")
    n = len(y)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(resamples, n)) + n * np.arange(resamples)[:, None]
    counts = np.bincount(draws.ravel(), minlength=resamples * n).reshape(resamples, n).astype(np.float64)
    order = np.argsort(p, kind="stable")
    _, starts = np.unique(p[order], return_index=True)  # tied scores form one group
    counts, y_sorted = counts[:, order], y[order]
    pos = np.add.reduceat(counts * y_sorted, starts, axis=1)
    neg = np.add.reduceat(counts * (1 - y_sorted), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negatives scored strictly lower than each group
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (below + 0.5 * neg)).sum(1) / (pos.sum(1) * neg.sum(1))


def jsd(p, q) -> float:
    """
    Mean Jensen–Shannon divergence (natural log) between per-sample Yes/No distributions `[1-p, p]` and `[1-q, q]`.

    Bounded by ln 2; 0 for identical predictions.
    """
    p, q = _as_probs(p), _as_probs(q)
    P = np.stack([1 - p, p], axis=-1).clip(_EPS, 1)
    Q = np.stack([1 - q, q], axis=-1).clip(_EPS, 1)
    M = 0.5 * (P + Q)
    kl_pm = (P * (np.log(P) - np.log(M))).sum(-1)
    kl_qm = (Q * (np.log(Q) - np.log(M))).sum(-1)
    return float(np.mean(0.5 * (kl_pm + kl_qm)))


def l2_distance(p, q) -> float:
    """Mean Euclidean distance between per-sample Yes/No distributions, `sqrt(2) * |p - q|`."""
    p, q = _as_probs(p), _as_probs(q)
    return float(np.mean(np.sqrt(2.0) * np.abs(p - q)))


def symmetrised_kl_full_vocab(logits_a, logits_b) -> float:
    """
    What E2URec's reference code reports as "JSD": half the symmetrised KL, `(KL(a‖b) + KL(b‖a)) / 2`, between
    full-vocabulary softmax distributions at the first answer position, averaged over samples.

    It is not the Jensen–Shannon divergence (no mixture distribution); it is kept, under its own name, so results can
    be compared with the paper's tables.

    Args:
        logits_a, logits_b: arrays or tensors of shape `(num_samples, vocab_size)`.
    """
    import torch

    a = torch.as_tensor(np.asarray(logits_a), dtype=torch.float64).log_softmax(-1)
    b = torch.as_tensor(np.asarray(logits_b), dtype=torch.float64).log_softmax(-1)
    kl_ab = (a.exp() * (a - b)).sum(-1)
    kl_ba = (b.exp() * (b - a)).sum(-1)
    return float((0.5 * (kl_ab + kl_ba)).mean())


def gap_closed(jsd_original: float, jsd_method: float, jsd_floor: float) -> float:
    """
    Share of the original model's distance to the retrained model that a method removes, relative to the noise floor:
    `(JSD_original − JSD_method) / (JSD_original − JSD_floor)`. 1 = as close as another retrain seed; 0 = no change.

    `nan` when the original is not above the floor (there was nothing measurable to forget).
    """
    denom = jsd_original - jsd_floor
    if denom <= 0:
        return float("nan")
    return float((jsd_original - jsd_method) / denom)


def membership_inference_auc(member_scores, nonmember_scores) -> float:
    """
    AUC of an attack that calls a sample a training member when its score is high.

    Feed a per-sample confidence in the true label (for example `-loss`) for forgotten training samples
    (`member_scores`) and unseen samples (`nonmember_scores`). 0.5 means the model's outputs reveal nothing about
    membership; above 0.5 the forgotten samples still look like training data.
    """
    m = np.asarray(member_scores, dtype=np.float64).reshape(-1)
    n = np.asarray(nonmember_scores, dtype=np.float64).reshape(-1)
    if len(m) == 0 or len(n) == 0:
        raise ValueError("The membership-inference audit needs at least one member and one non-member sample.")
    y = np.concatenate([np.ones(len(m)), np.zeros(len(n))])
    return float(roc_auc_score(y, np.concatenate([m, n])))


def mean_confidence(labels, probs) -> float:
    """Mean probability the model gives the true label, `mean P(y)`; a memorised set scores higher than unseen data."""
    y = np.asarray(labels).astype(int).reshape(-1)
    p = _as_probs(probs)
    if len(y) != len(p) or len(y) == 0:
        raise ValueError(f"`labels` and `probs` must be non-empty and equally long, got {len(y)} and {len(p)}.")
    return float(np.mean(np.where(y == 1, p, 1 - p)))


def true_label_confidence(labels, probs) -> np.ndarray:
    """Per-sample log-probability of the true label, `log P(y)`: the membership signal a loss-based attack uses."""
    y = np.asarray(labels).astype(int).reshape(-1)
    p = _as_probs(probs).clip(_EPS, 1 - _EPS)
    return np.where(y == 1, np.log(p), np.log(1 - p))
