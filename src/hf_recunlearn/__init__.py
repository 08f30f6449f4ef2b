"""hf_recunlearn: make LLM-based recommenders forget (E2URec, APA) on transformers + PEFT."""

__version__ = "0.1.0.dev0"

import importlib
from typing import TYPE_CHECKING


# The public API is imported on first use (PEP 562), so that `import hf_recunlearn.testing` does not import
# `huggingface_hub` (through datasets/transformers) before `prepare_hub_environment()` has set `HF_ENDPOINT`:
# the client reads its environment once, at import.
_LAZY = {
    "RecData": ".data",
    "build_datasets": ".data",
    "load_data": ".data",
    "make_forget_split": ".data",
    "make_synthetic": ".data",
    "gap_closed": ".metrics",
    "jsd": ".metrics",
    "l2_distance": ".metrics",
    "membership_inference_auc": ".metrics",
    "utility_metrics": ".metrics",
    "build_tiny_model": ".models",
    "build_tokenizer": ".models",
    "load_model": ".models",
    "AnswerTokens": ".scoring",
    "score": ".scoring",
    "RecConfig": ".trainer",
    "RecTrainer": ".trainer",
}

if TYPE_CHECKING:
    from .data import RecData, build_datasets, load_data, make_forget_split, make_synthetic
    from .metrics import gap_closed, jsd, l2_distance, membership_inference_auc, utility_metrics
    from .models import build_tiny_model, build_tokenizer, load_model
    from .scoring import AnswerTokens, score
    from .trainer import RecConfig, RecTrainer


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AnswerTokens",
    "RecConfig",
    "RecData",
    "RecTrainer",
    "build_datasets",
    "build_tiny_model",
    "build_tokenizer",
    "gap_closed",
    "jsd",
    "l2_distance",
    "load_data",
    "load_model",
    "make_forget_split",
    "make_synthetic",
    "membership_inference_auc",
    "score",
    "utility_metrics",
]
