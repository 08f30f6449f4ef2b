"""hf_recunlearn: make LLM-based recommenders forget (E2URec, APA) on transformers + PEFT.

The public names below are imported lazily (PEP 562), so `import hf_recunlearn` is cheap and does not import
`huggingface_hub` before a test harness has pointed it at a local Hub (the tests' `tests/hub_server.py`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING


__version__ = "0.1.0.dev0"

_EXPORTS = {
    "audit": ["ForgetAudit"],
    "data": ["RecData", "build_datasets", "load_data", "make_forget_split", "make_synthetic"],
    "metrics": ["gap_closed", "jsd", "l2_distance", "membership_inference_auc", "utility_metrics"],
    "models": ["build_tiny_model", "build_tokenizer", "load_model"],
    "scoring": ["AnswerTokens", "score"],
    "trainer": [
        "APAConfig",
        "APATrainer",
        "AuditStoppingCallback",
        "BadTeacherConfig",
        "BadTeacherTrainer",
        "E2URecConfig",
        "E2URecTrainer",
        "NegGradConfig",
        "NegGradTrainer",
        "NegKLConfig",
        "NegKLTrainer",
        "RecConfig",
        "RecTrainer",
        "SISAConfig",
        "SISATrainer",
        "UnlearningConfig",
        "UnlearningTrainer",
        "retrain_reference",
    ],
    "apa_recommender": ["APARecommender"],
    "evaluation": ["ModelPredictions", "Predictions", "evaluate_unlearning", "predict_unlearning_sets"],
    "bench": ["BenchSettings", "run_bench"],
    "verification": ["VerifyReport", "verify"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

# The modules that register a version format with the Hub layer (`hub.VersionFormat`): `hf_recunlearn.hub` imports
# them the first time it looks at a directory, so the Hub layer itself names no format and `import hf_recunlearn`
# stays light.
_HUB_FORMATS = ("apa_hub",)

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # pragma: no cover
    from .apa_recommender import APARecommender
    from .bench import BenchSettings, run_bench
    from .data import RecData, build_datasets, load_data, make_forget_split, make_synthetic
    from .metrics import gap_closed, jsd, l2_distance, membership_inference_auc, utility_metrics
    from .models import build_tiny_model, build_tokenizer, load_model
    from .scoring import AnswerTokens, score
    from .audit import ForgetAudit
    from .verification import VerifyReport, verify
    from .evaluation import ModelPredictions, Predictions, evaluate_unlearning, predict_unlearning_sets
    from .trainer import (
        APAConfig,
        APATrainer,
        AuditStoppingCallback,
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
        SISAConfig,
        SISATrainer,
        UnlearningConfig,
        UnlearningTrainer,
        retrain_reference,
    )
