"""Data: loaders for the real data sets, a synthetic generator, prompt templates, splits and forget requests."""

from .core import DATA_SPECS, DataFormatError, RecData, parse_data_spec
from .forget import ForgetSplit, make_forget_split
from .instructions import (
    PRESETS,
    build_datasets,
    build_samples,
    load_data,
    make_sample_id,
    split_by_size,
    split_by_time,
    split_preset,
)
from .loaders import (
    load_bookcrossing,
    load_movielens_1m,
    load_movielens_100k,
    load_movielens_latest_small,
    load_tallrec_json,
)
from .prompts import TEMPLATES, PromptTemplate, get_template
from .synthetic import make_synthetic


__all__ = [
    "DATA_SPECS",
    "DataFormatError",
    "ForgetSplit",
    "PRESETS",
    "PromptTemplate",
    "RecData",
    "TEMPLATES",
    "build_datasets",
    "build_samples",
    "get_template",
    "load_bookcrossing",
    "load_data",
    "load_movielens_100k",
    "load_movielens_1m",
    "load_movielens_latest_small",
    "load_tallrec_json",
    "make_forget_split",
    "make_sample_id",
    "make_synthetic",
    "parse_data_spec",
    "split_by_size",
    "split_by_time",
    "split_preset",
]
