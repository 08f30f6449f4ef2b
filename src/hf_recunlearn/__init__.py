"""hf_recunlearn: make LLM-based recommenders forget (E2URec, APA) on transformers + PEFT."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING


__version__ = "0.1.0.dev0"

# The public API is imported on first use, so `import hf_recunlearn` (or `hf_recunlearn.testing`, which must run
# before `huggingface_hub` is imported) does not load torch and transformers.
_EXPORTS = {
    "BadTeacherConfig": ".trainer",
    "BadTeacherTrainer": ".trainer",
    "E2URecConfig": ".trainer",
    "E2URecTrainer": ".trainer",
    "ModelPredictions": ".evaluation",
    "NegGradConfig": ".trainer",
    "NegGradTrainer": ".trainer",
    "NegKLConfig": ".trainer",
    "NegKLTrainer": ".trainer",
    "Predictions": ".evaluation",
    "RecConfig": ".trainer",
    "RecTrainer": ".trainer",
    "UnlearningConfig": ".trainer",
    "UnlearningTrainer": ".trainer",
    "evaluate_unlearning": ".evaluation",
    "predict": ".evaluation",
    "predict_unlearning_sets": ".evaluation",
    "retrain_reference": ".trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from .evaluation import ModelPredictions, Predictions, evaluate_unlearning, predict, predict_unlearning_sets
    from .trainer import (
        BadTeacherConfig,
        BadTeacherTrainer,
        E2URecConfig,
        E2URecTrainer,
        NegGradConfig,
        NegGradTrainer,
        NegKLConfig,
        NegKLTrainer,
        RecConfig,
        RecTrainer,
        UnlearningConfig,
        UnlearningTrainer,
        retrain_reference,
    )
