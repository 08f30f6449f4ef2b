"""The in-memory form every data source is turned into, and the data *spec* strings that select a source."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


INTERACTION_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
ITEM_COLUMNS = ("item_id", "title", "genres")


class DataFormatError(ValueError):
    """A data file exists but does not have the documented format (the message names the file and line)."""


@dataclass
class RecData:
    """
    User–item interactions plus item text, the common form of every data source.

    Args:
        name (`str`):
            Short name of the source (`"movielens-100k"`, `"synthetic"`, ...), used in model cards and reports.
        interactions (`pandas.DataFrame`):
            One row per rating with columns `user_id` (`str`), `item_id` (`str`), `rating` (`float`) and `timestamp`
            (`int`, seconds), sorted by `(timestamp, user_id, item_id)` so that row order is deterministic.
        items (`pandas.DataFrame`):
            One row per item with columns `item_id` (`str`), `title` (`str`) and `genres` (`str`, `"|"`-separated,
            may be empty; for books the author is stored here).
        like_threshold (`float`):
            An interaction is a *like* when `rating > like_threshold` (3 for MovieLens, 5 for BookCrossing).
        item_kind (`str`, *optional*, defaults to `"movie"`):
            `"movie"` or `"book"`; chooses the wording of the prompt templates.
        user_groups (`dict[str, str]`, *optional*):
            Optional group label per user id. The synthetic generator marks users with niche tastes `"niche"`, the
            natural candidates for a forget request whose effect can be measured.
    """

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    like_threshold: float
    item_kind: str = "movie"
    user_groups: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        missing = [c for c in INTERACTION_COLUMNS if c not in self.interactions.columns]
        if missing:
            raise ValueError(f"`interactions` is missing columns {missing}; it needs {list(INTERACTION_COLUMNS)}.")
        missing = [c for c in ITEM_COLUMNS if c not in self.items.columns]
        if missing:
            raise ValueError(f"`items` is missing columns {missing}; it needs {list(ITEM_COLUMNS)}.")
        if self.item_kind not in ("movie", "book"):
            raise ValueError(f"`item_kind` must be 'movie' or 'book', got {self.item_kind!r}.")
        inter = self.interactions.astype({"user_id": str, "item_id": str, "rating": float, "timestamp": "int64"})
        known = set(self.items["item_id"].astype(str))
        inter = inter[inter["item_id"].isin(known)]
        self.interactions = inter.sort_values(["timestamp", "user_id", "item_id"], kind="stable").reset_index(
            drop=True
        )
        self.items = self.items.astype({"item_id": str, "title": str, "genres": str}).reset_index(drop=True)

    @property
    def num_users(self) -> int:
        return int(self.interactions["user_id"].nunique())

    @property
    def num_items(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return (
            f"RecData(name={self.name!r}, interactions={len(self.interactions)}, users={self.num_users}, "
            f"items={self.num_items}, like_threshold={self.like_threshold}, item_kind={self.item_kind!r})"
        )


DATA_SPECS = {
    "synthetic": "built-in seeded generator (no path)",
    "movielens-100k": "directory with u.data and u.item",
    "movielens-1m": "directory with ratings.dat and movies.dat",
    "movielens-latest-small": "directory with ratings.csv and movies.csv",
    "bookcrossing": "directory with BX-Book-Ratings.csv and BX-Books.csv",
    "tallrec": "a TALLRec JSON file, or a directory with train.json / valid.json / test.json",
}


def parse_data_spec(spec: str) -> tuple[str, Path | None]:
    """
    Split a data spec such as `"movielens-100k:/data/ml-100k"` into `("movielens-100k", Path("/data/ml-100k"))`.

    `"synthetic"` takes no path (`"synthetic"` alone).
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"`data` must be a data spec string, got {spec!r}. Known specs: {_spec_help()}.")
    kind, sep, path = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in DATA_SPECS:
        raise ValueError(f"Unknown data spec {spec!r}. Known specs: {_spec_help()}.")
    if kind == "synthetic":
        if path:
            raise ValueError(f"The `synthetic` data spec takes no path, got {spec!r}. Pass just 'synthetic'.")
        return kind, None
    if not sep or not path:
        raise ValueError(f"The data spec {spec!r} needs a path: '{kind}:PATH' ({DATA_SPECS[kind]}).")
    return kind, Path(path).expanduser()


def _spec_help() -> str:
    return ", ".join(f"'{k}'" if k == "synthetic" else f"'{k}:PATH'" for k in DATA_SPECS)
