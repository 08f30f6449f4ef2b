"""hf_recunlearn: make LLM-based recommenders forget (E2URec, APA) on transformers + PEFT."""

__version__ = "0.1.0.dev0"

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


__all__ = [
    "BadTeacherConfig",
    "BadTeacherTrainer",
    "E2URecConfig",
    "E2URecTrainer",
    "ModelPredictions",
    "NegGradConfig",
    "NegGradTrainer",
    "NegKLConfig",
    "NegKLTrainer",
    "Predictions",
    "RecConfig",
    "RecTrainer",
    "UnlearningConfig",
    "UnlearningTrainer",
    "evaluate_unlearning",
    "predict",
    "predict_unlearning_sets",
    "retrain_reference",
]
