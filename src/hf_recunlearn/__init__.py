"""hf_recunlearn: make LLM-based recommenders forget (E2URec, APA) on transformers + PEFT."""

__version__ = "0.1.0.dev0"

from .data import RecData, build_datasets, load_data, make_forget_split, make_synthetic
from .metrics import gap_closed, jsd, l2_distance, membership_inference_auc, utility_metrics
from .models import build_tiny_model, build_tokenizer, load_model
from .scoring import AnswerTokens, score
from .trainer import RecConfig, RecTrainer


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
