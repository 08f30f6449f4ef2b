"""From interactions to instruction datasets: prompts, presets and splits."""

from __future__ import annotations

import hashlib
from collections import defaultdict, deque

import numpy as np
from datasets import Dataset, DatasetDict

from .core import RecData, parse_data_spec
from .loaders import (
    load_bookcrossing,
    load_movielens_1m,
    load_movielens_100k,
    load_movielens_latest_small,
    load_tallrec_json,
)
from .prompts import HistoryItem, get_template
from .synthetic import make_synthetic


PRESETS = {
    # E2URec §5.1: the last 100,000 samples by global time, split 6:2:2 by time.
    "e2urec": {"num_samples": 100_000, "ratios": (0.6, 0.2, 0.2)},
    # TALLRec / APA §4.1: 1024 train, 500 valid and 1000 test samples.
    "apa": {"sizes": (1024, 500, 1000)},
}

_LOADERS = {
    "movielens-100k": load_movielens_100k,
    "movielens-1m": load_movielens_1m,
    "movielens-latest-small": load_movielens_latest_small,
    "bookcrossing": load_bookcrossing,
}


def load_data(spec: str, **synthetic_kwargs) -> RecData:
    """
    Load the interactions a data spec names (`"synthetic"`, `"movielens-100k:DIR"`, ...).

    Keyword arguments go to [`make_synthetic`] for `"synthetic"` and are refused otherwise. `tallrec:PATH` holds
    prompts rather than interactions: use [`build_datasets`] for it.
    """
    kind, path = parse_data_spec(spec)
    if kind == "synthetic":
        return make_synthetic(**synthetic_kwargs)
    if synthetic_kwargs:
        raise ValueError(f"Generator options {sorted(synthetic_kwargs)} only apply to the 'synthetic' spec, got {spec!r}.")
    if kind == "tallrec":
        raise ValueError(f"{spec!r} holds prompts, not interactions: call `build_datasets({spec!r})` instead.")
    return _LOADERS[kind](path)


def make_sample_id(user_id: str, item_id: str, timestamp: int) -> str:
    """A stable id for one interaction that does not spell out the user id."""
    return hashlib.sha1(f"{user_id}\x1f{item_id}\x1f{timestamp}".encode()).hexdigest()[:16]


def build_samples(data: RecData, template: str = "e2urec", history_len: int = 10, min_history: int = 1) -> Dataset:
    """
    One Yes/No sample per interaction that has at least `min_history` earlier interactions of the same user.

    The prompt lists the user's last `history_len` rated items before the target (marked liked or disliked), in time
    order, as in E2URec's and TALLRec's reference code. Rows stay in global time order.
    """
    if history_len < 1:
        raise ValueError(f"`history_len` must be >= 1, got {history_len}.")
    if min_history < 0:
        raise ValueError(f"`min_history` must be >= 0, got {min_history}.")
    tpl = get_template(template)
    titles = dict(zip(data.items["item_id"], data.items["title"]))
    histories: dict[str, deque] = defaultdict(lambda: deque(maxlen=history_len))
    columns = defaultdict(list)
    inter = data.interactions
    for user, item, rating, ts in zip(inter["user_id"], inter["item_id"], inter["rating"], inter["timestamp"]):
        liked = bool(rating > data.like_threshold)
        history = histories[user]
        if len(history) >= min_history:
            columns["sample_id"].append(make_sample_id(user, item, int(ts)))
            columns["user_id"].append(user)
            columns["item_id"].append(item)
            columns["timestamp"].append(int(ts))
            columns["prompt"].append(tpl.render(list(history), titles[item], data.item_kind))
            columns["completion"].append(tpl.completion(liked))
            columns["label"].append(int(liked))
        history.append(HistoryItem(titles[item], liked))
    if not columns:
        raise ValueError(
            f"No samples: no user of {data.name!r} has {min_history} earlier interaction(s). Lower `min_history`."
        )
    return Dataset.from_dict(dict(columns))


def split_by_time(samples: Dataset, num_samples: int | None, ratios=(0.6, 0.2, 0.2)) -> DatasetDict:
    """The E2URec preset: keep the last `num_samples` samples by global time, then split them by time."""
    if len(ratios) != 3 or any(r <= 0 for r in ratios):
        raise ValueError(f"`ratios` must be three positive numbers (train, valid, test), got {ratios}.")
    n = len(samples) if num_samples is None else min(num_samples, len(samples))
    samples = samples.select(range(len(samples) - n, len(samples)))
    total = float(sum(ratios))
    n_train = int(n * ratios[0] / total)
    n_valid = int(n * ratios[1] / total)
    return DatasetDict(
        train=samples.select(range(n_train)),
        valid=samples.select(range(n_train, n_train + n_valid)),
        test=samples.select(range(n_train + n_valid, n)),
    )


def split_by_size(samples: Dataset, sizes=(1024, 500, 1000), seed: int = 0) -> DatasetDict:
    """The APA/TALLRec preset: disjoint seeded random samples of the given sizes (train, valid, test)."""
    if len(sizes) != 3 or any(s < 1 for s in sizes):
        raise ValueError(f"`sizes` must be three positive sample counts (train, valid, test), got {sizes}.")
    need = sum(sizes)
    if need > len(samples):
        scale = len(samples) / need
        sizes = tuple(max(1, int(s * scale)) for s in sizes)
    order = np.random.default_rng(seed).permutation(len(samples))
    bounds = np.cumsum((0,) + tuple(sizes))
    parts = {}
    for name, lo, hi in zip(("train", "valid", "test"), bounds[:-1], bounds[1:]):
        parts[name] = samples.select(sorted(order[lo:hi].tolist()))
    return DatasetDict(parts)


def build_datasets(
    data: RecData | str,
    template: str = "e2urec",
    preset: str = "e2urec",
    history_len: int = 10,
    min_history: int = 1,
    num_samples: int | None = None,
    sizes: tuple[int, int, int] | None = None,
    seed: int = 0,
) -> DatasetDict:
    """
    Build the train/valid/test instruction datasets for a data source.

    Args:
        data (`RecData` or `str`): loaded interactions, or a data spec (`"synthetic"`, `"movielens-1m:DIR"`,
            `"tallrec:PATH"`, ...).
        template (`str`, *optional*, defaults to `"e2urec"`): prompt template, `"e2urec"` or `"tallrec"`.
        preset (`str`, *optional*, defaults to `"e2urec"`): `"e2urec"` (last `num_samples` by time, 6:2:2 by time)
            or `"apa"` (seeded random 1024/500/1000 samples, or `sizes`).
        history_len (`int`, *optional*, defaults to `10`): items of history in each prompt.
        min_history (`int`, *optional*, defaults to `1`): drop interactions with fewer earlier ones.
        num_samples (`int`, *optional*): overrides the E2URec preset's 100,000.
        sizes (`tuple[int, int, int]`, *optional*): overrides the APA preset's sizes.
        seed (`int`, *optional*, defaults to `0`): seed of the APA preset's sampling.

    Returns:
        `DatasetDict` with splits `train`, `valid`, `test` and columns `sample_id`, `user_id`, `item_id`,
        `timestamp`, `prompt`, `completion`, `label`.
    """
    if preset not in PRESETS:
        raise ValueError(f"`preset` must be one of {sorted(PRESETS)}, got {preset!r}.")
    if isinstance(data, str):
        kind, path = parse_data_spec(data)
        if kind == "tallrec":
            return _split_tallrec(load_tallrec_json(path), preset, num_samples, sizes, seed)
        data = load_data(data)
    samples = build_samples(data, template=template, history_len=history_len, min_history=min_history)
    return split_preset(samples, preset, num_samples=num_samples, sizes=sizes, seed=seed)


def split_preset(
    samples: Dataset, preset: str, num_samples: int | None = None, sizes: tuple[int, int, int] | None = None, seed: int = 0
) -> DatasetDict:
    """Split time-ordered samples with a preset: `"e2urec"` ([`split_by_time`]) or `"apa"` ([`split_by_size`])."""
    if preset == "e2urec":
        return split_by_time(samples, num_samples or PRESETS["e2urec"]["num_samples"], PRESETS["e2urec"]["ratios"])
    if preset == "apa":
        return split_by_size(samples, sizes or PRESETS["apa"]["sizes"], seed=seed)
    raise ValueError(f"`preset` must be one of {sorted(PRESETS)}, got {preset!r}.")


def _split_tallrec(found: DatasetDict, preset, num_samples, sizes, seed) -> DatasetDict:
    """TALLRec files usually come split already; a single file is split with the preset."""
    if all(name in found for name in ("train", "valid", "test")):
        return DatasetDict({name: found[name] for name in ("train", "valid", "test")})
    from datasets import concatenate_datasets

    pooled = concatenate_datasets([found[name] for name in found])
    return split_preset(pooled, preset, num_samples=num_samples, sizes=sizes, seed=seed)
