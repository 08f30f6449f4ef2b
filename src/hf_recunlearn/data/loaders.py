"""Loaders for the real data sets, from the files exactly as distributed (being written on branch `loaders`)."""

from __future__ import annotations

from pathlib import Path

from .core import RecData


def load_movielens_100k(path: str | Path) -> RecData:
    raise NotImplementedError


def load_movielens_1m(path: str | Path) -> RecData:
    raise NotImplementedError


def load_movielens_latest_small(path: str | Path) -> RecData:
    raise NotImplementedError


def load_bookcrossing(path: str | Path) -> RecData:
    raise NotImplementedError


def load_tallrec_json(path: str | Path):
    raise NotImplementedError
