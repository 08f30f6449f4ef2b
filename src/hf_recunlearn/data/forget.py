"""Forget requests: which training samples must be forgotten, and what remains."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
from datasets import Dataset


@dataclass
class ForgetSplit:
    """
    The outcome of a forget request on a training set.

    Attributes:
        forget (`Dataset`): the forgotten training samples, D_f.
        retain (`Dataset`): the remaining training samples, D_r (same row order as the training set).
        user_ids (`list[str]`): users whose samples are in `forget` (all of them for a user request).
        sample_ids (`list[str]`): the forgotten samples' ids.
    """

    forget: Dataset
    retain: Dataset
    user_ids: list[str]
    sample_ids: list[str]

    def __repr__(self) -> str:
        return f"ForgetSplit(forget={len(self.forget)} samples of {len(self.user_ids)} users, retain={len(self.retain)})"


def make_forget_split(
    train: Dataset,
    user_ids: Iterable[str] | None = None,
    sample_ids: Iterable[str] | None = None,
    fraction: float | None = None,
    seed: int = 0,
) -> ForgetSplit:
    """
    Select the training samples a forget request covers.

    Exactly one of the three request forms is used:
        - `user_ids`: every training sample of these users (E2URec, user-level deletion);
        - `sample_ids`: these samples only (poisoned or individually withdrawn interactions);
        - `fraction`: a seeded random `fraction` of the training users (E2URec §5.1 uses 0.2).

    Unknown ids and requests that select nothing are refused: silently forgetting nothing is the worst outcome for a
    deletion request.
    """
    given = [name for name, value in (("user_ids", user_ids), ("sample_ids", sample_ids), ("fraction", fraction))
             if value is not None]  # fmt: skip
    if len(given) != 1:
        raise ValueError(
            f"Pass exactly one of `user_ids`, `sample_ids` or `fraction` to describe the forget request, got {given or 'none'}."
        )
    train_users = np.asarray(train["user_id"])
    train_samples = np.asarray(train["sample_id"])
    known_users = sorted(set(train_users.tolist()), key=_natural_key)

    if fraction is not None:
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"`fraction` must be in (0, 1), got {fraction}. Pass e.g. 0.2 to forget 20% of users.")
        order = np.random.default_rng(seed).permutation(len(known_users))
        count = max(1, int(round(fraction * len(known_users))))
        user_ids = [known_users[i] for i in sorted(order[:count])]

    if user_ids is not None:
        user_ids = _as_str_list(user_ids, "user_ids")
        unknown = sorted(set(user_ids) - set(known_users))
        if unknown:
            raise ValueError(
                f"`user_ids` has {len(unknown)} user(s) with no training sample (e.g. {unknown[:3]}). "
                "Pass ids as they appear in the dataset's `user_id` column."
            )
        mask = np.isin(train_users, user_ids)
    else:
        sample_ids = _as_str_list(sample_ids, "sample_ids")
        unknown = sorted(set(sample_ids) - set(train_samples.tolist()))
        if unknown:
            raise ValueError(
                f"`sample_ids` has {len(unknown)} id(s) not in the training data (e.g. {unknown[:3]}). "
                "Pass values of the training set's `sample_id` column."
            )
        mask = np.isin(train_samples, sample_ids)

    forget_idx = np.flatnonzero(mask)
    retain_idx = np.flatnonzero(~mask)
    if len(retain_idx) == 0:
        raise ValueError("The forget request covers every training sample; nothing would remain to recommend with.")
    forget = train.select(forget_idx.tolist())
    return ForgetSplit(
        forget=forget,
        retain=train.select(retain_idx.tolist()),
        user_ids=sorted(set(forget["user_id"]), key=_natural_key),
        sample_ids=list(forget["sample_id"]),
    )


def _as_str_list(values, name: str) -> list[str]:
    if isinstance(values, (str, int)):
        values = [values]
    values = [str(v) for v in values]
    if not values:
        raise ValueError(f"`{name}` is empty: a forget request must name at least one id.")
    return values


def _natural_key(value: str):
    return (0, int(value), "") if value.isdigit() else (1, 0, value)
