"""A retrain-free forgetting audit: does a model see the forget set the way a model that never saw it does?

The retrained model is what approximate unlearning exists to avoid paying for, so it cannot be the target at run
time. [`ForgetAudit`] replaces it with a *reference model* that never saw the forgotten data and costs a fraction of
a retrain (the stand-in base of the benchmark, or a short training run on a sample of the retained data), and with
a *hold-out set*: rows the original never trained on (other users' later rows, e.g. the validation split).

What is compared is relative, not absolute, because the reference is a weaker model than the one audited. The
stopping statistic is the *relative AUC*: a model's AUC (P(like) against the labels) on the forget rows minus its AUC
on the hold-out rows. A model that learned the forgotten users predicts them better than unseen rows; one that never
saw them predicts them worse (their tastes depart from the population's). The target is the reference model's
relative AUC, with an interval from the reference's own variability (a bootstrap over the users of both sets).

Measured on the demo population (seed 0, hold-out = validation rows of the other users; `benchmarks/RESULTS.md`):

| model | relative AUC | loss-attack AUC |
| --- | ---: | ---: |
| Original | +0.117 | 0.625 |
| Retrain, two seeds | −0.091 / −0.095 | 0.427 / 0.420 |
| base model (reference, free) | −0.073 | 0.463 |
| Original's recipe, 1 epoch on 10% / 25% of D_r | −0.079 / −0.089 | 0.479 / 0.465 |

The relative AUC of a cheap model lands within 0.02 of Retrain's (the gap to close is 0.21): ranking is insensitive to
how well calibrated a model is. The membership attacks are reported too (on the per-sample loss and, label-free, on the
confidence; a KS statistic and p-value compare each forget row's loss percentile within the same model's hold-out
losses, audited model against reference), but they are not the stopping statistic: a weaker reference is less
confident everywhere, and its loss attack lands 0.04–0.05 above Retrain's.

"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np


_EPS = 1e-7


def per_sample_loss(labels, probs) -> np.ndarray:
    """Cross-entropy of the true label per sample, `-log P(y)`, from P(like) scores, `(rows,)`."""
    y = np.asarray(labels).astype(int).reshape(-1)
    p = np.clip(np.asarray(probs, dtype=np.float64).reshape(-1), _EPS, 1 - _EPS)
    return -np.where(y == 1, np.log(p), np.log(1 - p))


def confidence(probs) -> np.ndarray:
    """Label-free confidence per sample, `max(p, 1 − p)`, `(rows,)`."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    return np.maximum(p, 1 - p)


def entropy(probs) -> np.ndarray:
    """Entropy (nats) of the Yes/No distribution per sample, `(rows,)`; memorised samples tend to lower entropy."""
    p = np.clip(np.asarray(probs, dtype=np.float64).reshape(-1), _EPS, 1 - _EPS)
    return -(p * np.log(p) + (1 - p) * np.log(1 - p))


def weighted_auc(scores: np.ndarray, is_member: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """
    AUC of calling a row a member when its score is high, under row weights (ties count half).

    Args:
        scores (`np.ndarray` of shape `(rows,)`), is_member (`np.ndarray` of shape `(rows,)`, bool).
        weights (`np.ndarray` of shape `(resamples, rows)`): one weighting per resample (bootstrap counts).

    Returns:
        `np.ndarray` of shape `(resamples,)`; `nan` where a resample has no member or no non-member weight.
    """
    order = np.argsort(scores, kind="stable")
    _, starts = np.unique(scores[order], return_index=True)
    w = weights[:, order]
    y = is_member[order].astype(np.float64)
    pos = np.add.reduceat(w * y, starts, axis=1)
    neg = np.add.reduceat(w * (1 - y), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (below + 0.5 * neg)).sum(1) / (pos.sum(1) * neg.sum(1))


def attack_auc(member_scores, nonmember_scores) -> float:
    """AUC of a membership attack that calls a sample a member when its score is high (0.5: no signal)."""
    m = np.asarray(member_scores, dtype=np.float64).reshape(-1)
    n = np.asarray(nonmember_scores, dtype=np.float64).reshape(-1)
    scores = np.concatenate([m, n])
    member = np.concatenate([np.ones(len(m), bool), np.zeros(len(n), bool)])
    return float(weighted_auc(scores, member, np.ones((1, len(scores))))[0])


def _percentiles(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Mid-rank percentile of each of `values` within `reference` (ties count half), in [0, 1]."""
    ref = np.sort(reference)
    lo = np.searchsorted(ref, values, side="left")
    hi = np.searchsorted(ref, values, side="right")
    return (lo + hi) / (2.0 * len(ref))


@dataclass
class AuditResult:
    """
    Where a model's forget set sits relative to unseen data, against the reference model's.

    Attributes:
        relative_auc (`float`): the model's AUC (P(like) against the labels) on the forget rows minus its AUC on the
            hold-out rows: how much better it predicts the forgotten users than unseen ones. The stopping rule's
            statistic.
        target_relative_auc (`float`), relative_interval (`tuple[float, float]`): the reference model's value and
            its bootstrap interval over users.
        loss_auc (`float`): membership-attack AUC on the per-sample loss (forget set vs hold-out rows; high = the
            forget set is fitted better than unseen data).
        confidence_auc (`float`): the same attack on the label-free confidence `max(p, 1 − p)`.
        target_loss_auc, target_confidence_auc (`float`): the reference model's values (the targets).
        loss_interval, confidence_interval (`tuple[float, float]`): bootstrap intervals of the targets (the
            reference's variability over users).
        ks_statistic, ks_pvalue (`float`): two-sample KS test between the forget rows' loss percentiles (within the
            model's own hold-out losses) for the audited model and for the reference model.
        at_target (`bool`): `relative_auc` lies inside `relative_interval`.
        side (`int`): +1 above the interval (the forget set still predicted better, relative to unseen rows, than the
            reference predicts it), −1 below (pushed past it), 0 inside.
    """

    relative_auc: float
    target_relative_auc: float
    relative_interval: tuple[float, float]
    loss_auc: float
    confidence_auc: float
    target_loss_auc: float
    target_confidence_auc: float
    loss_interval: tuple[float, float]
    confidence_interval: tuple[float, float]
    ks_statistic: float
    ks_pvalue: float
    at_target: bool
    side: int

    @property
    def distance(self) -> float:
        """`relative_auc − target_relative_auc`: positive while the model still knows the forget set better."""
        return self.relative_auc - self.target_relative_auc

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("relative_interval", "loss_interval", "confidence_interval"):
            out[key] = list(getattr(self, key))
        out["distance"] = self.distance
        return out


class ForgetAudit:
    """
    A retrain-free target for approximate unlearning (see the module docstring), and the audit of any model against
    it.

    Args:
        forget_labels, holdout_labels (array of 0/1): labels of the forget rows and of the hold-out rows.
        reference_forget_probs, reference_holdout_probs (array of P(like)): the reference model's scores on them.
        forget_groups, holdout_groups (*optional*): a group id per row (the user); the bootstrap resamples groups,
            so the interval reflects how much users differ. Rows are their own groups when not given.
        resamples (`int`, *optional*, defaults to `400`): bootstrap resamples of the reference.
        level (`float`, *optional*, defaults to `0.95`): coverage of the intervals.
        seed (`int`, *optional*, defaults to `0`): seed of the bootstrap.
        forget_dataset, holdout_dataset (`Dataset`, *optional*): the rows themselves, kept for scoring models
            ([`ForgetAudit.audit_model`], the stopping callback); set by [`ForgetAudit.from_model`].
    """

    def __init__(
        self,
        forget_labels,
        holdout_labels,
        reference_forget_probs,
        reference_holdout_probs,
        forget_groups: Sequence | None = None,
        holdout_groups: Sequence | None = None,
        resamples: int = 400,
        level: float = 0.95,
        seed: int = 0,
        forget_dataset=None,
        holdout_dataset=None,
    ):
        self.forget_labels = np.asarray(forget_labels).astype(int).reshape(-1)
        self.holdout_labels = np.asarray(holdout_labels).astype(int).reshape(-1)
        self.reference_forget_probs = np.asarray(reference_forget_probs, dtype=np.float64).reshape(-1)
        self.reference_holdout_probs = np.asarray(reference_holdout_probs, dtype=np.float64).reshape(-1)
        for name, probs, labels in (
            ("forget", self.reference_forget_probs, self.forget_labels),
            ("holdout", self.reference_holdout_probs, self.holdout_labels),
        ):
            if len(probs) != len(labels):
                raise ValueError(f"`reference_{name}_probs` has {len(probs)} rows but `{name}_labels` {len(labels)}.")
            if len(labels) < 2:
                raise ValueError(f"The audit needs at least 2 {name} rows, got {len(labels)}.")
        if not 0.5 < level < 1.0:
            raise ValueError(f"`level` must be in (0.5, 1), got {level}.")
        if resamples < 20:
            raise ValueError(f"`resamples` must be >= 20 for a bootstrap interval, got {resamples}.")
        self.forget_groups = self._groups(forget_groups, len(self.forget_labels), "forget_groups")
        self.holdout_groups = self._groups(holdout_groups, len(self.holdout_labels), "holdout_groups")
        self.resamples, self.level, self.seed = resamples, level, seed
        self.forget_dataset, self.holdout_dataset = forget_dataset, holdout_dataset
        # Row indices into the audit this one was subsampled from (itself when built directly).
        self.forget_rows = np.arange(len(self.forget_labels))
        self.holdout_rows = np.arange(len(self.holdout_labels))
        self._weights = self._bootstrap_weights()
        ref_loss_auc = self._aucs(-self._losses(self.reference_forget_probs, self.reference_holdout_probs))
        ref_conf_auc = self._aucs(self._confidences(self.reference_forget_probs, self.reference_holdout_probs))
        self.target_loss_auc = self._point(-self._losses(self.reference_forget_probs, self.reference_holdout_probs))
        self.target_confidence_auc = self._point(
            self._confidences(self.reference_forget_probs, self.reference_holdout_probs)
        )
        self.loss_interval = self._interval(ref_loss_auc)
        self.confidence_interval = self._interval(ref_conf_auc)
        self.target_relative_auc = self._relative(self.reference_forget_probs, self.reference_holdout_probs)
        self.relative_interval = self._interval(
            self._relative(self.reference_forget_probs, self.reference_holdout_probs, self._weights)
        )
        self._reference_percentiles = _percentiles(
            per_sample_loss(self.forget_labels, self.reference_forget_probs),
            per_sample_loss(self.holdout_labels, self.reference_holdout_probs),
        )

    @staticmethod
    def _groups(groups, n: int, name: str) -> np.ndarray:
        if groups is None:
            return np.arange(n)
        groups = np.asarray([str(g) for g in groups])
        if len(groups) != n:
            raise ValueError(f"`{name}` has {len(groups)} entries for {n} rows.")
        return np.unique(groups, return_inverse=True)[1]

    def _bootstrap_weights(self) -> np.ndarray:
        """`(resamples, forget + holdout rows)` counts: groups drawn with replacement within each set."""
        rng = np.random.default_rng(self.seed)
        parts = []
        for groups in (self.forget_groups, self.holdout_groups):
            k = int(groups.max()) + 1
            draws = rng.integers(0, k, size=(self.resamples, k))
            counts = np.zeros((self.resamples, k))
            np.add.at(counts, (np.arange(self.resamples)[:, None], draws), 1.0)
            parts.append(counts[:, groups])
        return np.concatenate(parts, axis=1)

    @property
    def _member(self) -> np.ndarray:
        return np.concatenate([np.ones(len(self.forget_labels), bool), np.zeros(len(self.holdout_labels), bool)])

    def _losses(self, forget_probs, holdout_probs) -> np.ndarray:
        return np.concatenate(
            [per_sample_loss(self.forget_labels, forget_probs), per_sample_loss(self.holdout_labels, holdout_probs)]
        )

    @staticmethod
    def _confidences(forget_probs, holdout_probs) -> np.ndarray:
        return np.concatenate([confidence(forget_probs), confidence(holdout_probs)])

    def _aucs(self, scores: np.ndarray) -> np.ndarray:
        return weighted_auc(scores, self._member, self._weights)

    def _point(self, scores: np.ndarray) -> float:
        return float(weighted_auc(scores, self._member, np.ones((1, len(scores))))[0])

    def _relative(self, forget_probs, holdout_probs, weights: np.ndarray | None = None):
        """AUC on the forget rows minus AUC on the hold-out rows; one value per row of `weights` when given."""
        n = len(self.forget_labels)
        w = np.ones((1, n + len(self.holdout_labels))) if weights is None else weights
        forget = weighted_auc(np.asarray(forget_probs, dtype=np.float64), self.forget_labels == 1, w[:, :n])
        holdout = weighted_auc(np.asarray(holdout_probs, dtype=np.float64), self.holdout_labels == 1, w[:, n:])
        out = forget - holdout
        return float(out[0]) if weights is None else out

    def _interval(self, values: np.ndarray) -> tuple[float, float]:
        tail = 100 * (1 - self.level) / 2
        lo, hi = np.nanpercentile(values, [tail, 100 - tail])
        return float(lo), float(hi)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_model(
        cls, reference_model, tokenizer, forget_dataset, holdout_dataset, batch_size: int = 64, **kwargs
    ) -> "ForgetAudit":
        """
        Score `forget_dataset` and `holdout_dataset` with `reference_model` (a model that never trained on the forget
        set) and build the audit; groups are the datasets' `user_id` columns when present.
        """
        from .scoring import score

        return cls.from_probs(
            forget_dataset,
            holdout_dataset,
            score(reference_model, tokenizer, forget_dataset, batch_size=batch_size),
            score(reference_model, tokenizer, holdout_dataset, batch_size=batch_size),
            **kwargs,
        )

    @classmethod
    def from_probs(cls, forget_dataset, holdout_dataset, forget_probs, holdout_probs, **kwargs) -> "ForgetAudit":
        """The audit from the reference model's scores on two datasets (`label`, optional `user_id` columns)."""

        def groups(ds):
            return ds["user_id"] if "user_id" in ds.column_names else None

        return cls(
            forget_dataset["label"],
            holdout_dataset["label"],
            forget_probs,
            holdout_probs,
            forget_groups=groups(forget_dataset),
            holdout_groups=groups(holdout_dataset),
            forget_dataset=forget_dataset,
            holdout_dataset=holdout_dataset,
            **kwargs,
        )

    def subset(self, forget_rows: Sequence[int], holdout_rows: Sequence[int]) -> "ForgetAudit":
        """The same audit on a subsample of rows (a cheaper check; its interval is that of the subsample)."""
        f, h = np.asarray(forget_rows, dtype=int), np.asarray(holdout_rows, dtype=int)
        fg, hg = self.forget_groups[f], self.holdout_groups[h]
        sub = ForgetAudit(
            self.forget_labels[f],
            self.holdout_labels[h],
            self.reference_forget_probs[f],
            self.reference_holdout_probs[h],
            forget_groups=fg,
            holdout_groups=hg,
            resamples=self.resamples,
            level=self.level,
            seed=self.seed,
            forget_dataset=None if self.forget_dataset is None else self.forget_dataset.select(f.tolist()),
            holdout_dataset=None if self.holdout_dataset is None else self.holdout_dataset.select(h.tolist()),
        )
        sub.forget_rows, sub.holdout_rows = self.forget_rows[f], self.holdout_rows[h]
        return sub

    def sample(self, rows: int, seed: int | None = None) -> "ForgetAudit":
        """[`ForgetAudit.subset`] with up to `rows` rows of each set drawn at random (seeded)."""
        rng = np.random.default_rng(self.seed if seed is None else seed)

        def draw(n):
            return np.sort(rng.choice(n, size=n if rows >= n else rows, replace=False))

        return self.subset(draw(len(self.forget_labels)), draw(len(self.holdout_labels)))

    # ------------------------------------------------------------------ audit

    def __call__(self, forget_probs, holdout_probs) -> AuditResult:
        """Audit a model from its P(like) on the forget rows and on the hold-out rows (same order as the reference)."""
        from scipy.stats import ks_2samp

        forget_probs = np.asarray(forget_probs, dtype=np.float64).reshape(-1)
        holdout_probs = np.asarray(holdout_probs, dtype=np.float64).reshape(-1)
        if len(forget_probs) != len(self.forget_labels) or len(holdout_probs) != len(self.holdout_labels):
            raise ValueError(
                f"The audit was built on {len(self.forget_labels)} forget and {len(self.holdout_labels)} hold-out "
                "rows, "
                f"got scores for {len(forget_probs)} and {len(holdout_probs)}. Score the same rows, in order."
            )
        loss_auc = self._point(-self._losses(forget_probs, holdout_probs))
        conf_auc = self._point(self._confidences(forget_probs, holdout_probs))
        percentiles = _percentiles(
            per_sample_loss(self.forget_labels, forget_probs), per_sample_loss(self.holdout_labels, holdout_probs)
        )
        ks = ks_2samp(percentiles, self._reference_percentiles)
        relative = self._relative(forget_probs, holdout_probs)
        lo, hi = self.relative_interval
        side = 1 if relative > hi else (-1 if relative < lo else 0)
        return AuditResult(
            relative_auc=relative,
            target_relative_auc=self.target_relative_auc,
            relative_interval=self.relative_interval,
            loss_auc=loss_auc,
            confidence_auc=conf_auc,
            target_loss_auc=self.target_loss_auc,
            target_confidence_auc=self.target_confidence_auc,
            loss_interval=self.loss_interval,
            confidence_interval=self.confidence_interval,
            ks_statistic=float(ks.statistic),
            ks_pvalue=float(ks.pvalue),
            at_target=side == 0,
            side=side,
        )

    def audit_model(self, model, tokenizer, batch_size: int = 64) -> AuditResult:
        """Score the audit's rows with `model` and audit it (needs the datasets: `from_model` / `from_probs`)."""
        from .scoring import score

        if self.forget_dataset is None or self.holdout_dataset is None:
            raise ValueError(
                "This audit holds no datasets to score a model on; build it with `ForgetAudit.from_model(...)` or "
                "`ForgetAudit.from_probs(...)`, or call it with the model's scores: "
                "`audit(forget_probs, holdout_probs)`."
            )
        return self(
            score(model, tokenizer, self.forget_dataset, batch_size=batch_size),
            score(model, tokenizer, self.holdout_dataset, batch_size=batch_size),
        )

    def summary(self) -> dict[str, Any]:
        """The target and its intervals, with row and group counts: no ids (safe for logs and model cards)."""
        return {
            "target_relative_auc": self.target_relative_auc,
            "relative_interval": list(self.relative_interval),
            "target_loss_auc": self.target_loss_auc,
            "loss_interval": list(self.loss_interval),
            "target_confidence_auc": self.target_confidence_auc,
            "confidence_interval": list(self.confidence_interval),
            "forget_rows": int(len(self.forget_labels)),
            "holdout_rows": int(len(self.holdout_labels)),
            "forget_groups": int(self.forget_groups.max() + 1),
            "holdout_groups": int(self.holdout_groups.max() + 1),
            "level": self.level,
        }


def holdout_rows(splits, forgotten_users) -> Any:
    """
    The audit's hold-out set for a forget request: the validation rows of the users who are not forgotten (rows no
    model of the run trained on). A split too small to hold both labels gets those users' test rows too.

    Args:
        splits (`DatasetDict`): the run's `valid` and `test` splits (`user_id`, `label` columns).
        forgotten_users (iterable of `str`): the ids of the users being forgotten.
    """
    from datasets import concatenate_datasets

    forgotten = set(forgotten_users)
    holdout = splits["valid"].filter(lambda row: row["user_id"] not in forgotten)
    if len(set(holdout["label"])) < 2:
        holdout = concatenate_datasets([holdout, splits["test"].filter(lambda row: row["user_id"] not in forgotten)])
    return holdout


def forget_audit_for_request(reference_model, tokenizer, request, splits, batch_size: int = 64, seed: int = 0):
    """
    The default audit of a forget request, as the CLI, the demo and the benchmark build it: the target is
    `reference_model`'s view (the base the recommender was trained from: it never saw the forget set, and costs
    nothing) of `request.forget` against [`holdout_rows`].

    Args:
        reference_model: a model that never trained on the forget set.
        tokenizer: its tokenizer.
        request ([`~hf_recunlearn.data.ForgetSplit`]): the forget request (`forget`, `user_ids`).
        splits (`DatasetDict`): the run's splits (`valid`, `test`).
        batch_size (`int`, *optional*, defaults to `64`), seed (`int`, *optional*, defaults to `0`): scoring batch and
            bootstrap seed.

    Returns:
        `(ForgetAudit, holdout)`: the audit and the hold-out rows it was built on.
    """
    holdout = holdout_rows(splits, request.user_ids)
    audit = ForgetAudit.from_model(reference_model, tokenizer, request.forget, holdout, batch_size=batch_size,
                                   seed=seed)  # fmt: skip
    return audit, holdout


def is_finite(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


# ---------------------------------------------------------------------------------------------------------- evidence


def membership_attacks(
    forget_labels,
    forget_probs,
    test_labels,
    test_probs,
    reference_forget_probs=None,
    reference_test_probs=None,
) -> dict[str, float]:
    """
    A membership-inference suite: AUC of telling forget-set rows (members) from unseen test rows by

    - `mia_loss`: the per-sample loss (low loss = member);
    - `mia_confidence`: the label-free confidence `max(p, 1 − p)`;
    - `mia_entropy`: the entropy of the Yes/No distribution (low entropy = member);
    - `mia_reference`: the loss *calibrated by a reference model* that never saw the forget set (the attack scores
      `loss_ref − loss`, how much better the audited model fits a row than the reference does; Carlini et al.'s
      reference-model calibration), `nan` without reference scores.

    0.5 = the attack learns nothing; compare with the retrained model's values, not with 0.5.
    """
    f_loss, t_loss = per_sample_loss(forget_labels, forget_probs), per_sample_loss(test_labels, test_probs)
    out = {
        "mia_loss": attack_auc(-f_loss, -t_loss),
        "mia_confidence": attack_auc(confidence(forget_probs), confidence(test_probs)),
        "mia_entropy": attack_auc(-entropy(forget_probs), -entropy(test_probs)),
        "mia_reference": float("nan"),
    }
    if reference_forget_probs is not None and reference_test_probs is not None:
        f_ref = per_sample_loss(forget_labels, reference_forget_probs)
        t_ref = per_sample_loss(test_labels, reference_test_probs)
        out["mia_reference"] = attack_auc(f_ref - f_loss, t_ref - t_loss)
    return out


def forget_quality(probs, retrained_probs) -> float:
    """
    TOFU's forget quality: the p-value of a two-sample KS test between a model's per-sample P(like) on the forget set
    and the retrained model's. High = the two distributions cannot be told apart; it is an evaluation (it needs the
    retrained model), not something a method can use.
    """
    from scipy.stats import ks_2samp

    return float(ks_2samp(np.asarray(probs, dtype=np.float64), np.asarray(retrained_probs, dtype=np.float64)).pvalue)
