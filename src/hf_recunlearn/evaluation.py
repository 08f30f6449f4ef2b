"""Evidence that a model forgot: utility, distance to a retrained model against its noise floor, memorisation, MIA."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .metrics import (
    gap_closed,
    jsd,
    l2_distance,
    mean_confidence,
    membership_inference_auc,
    symmetrised_kl_full_vocab,
    true_label_confidence,
    utility_metrics,
)
from .models import count_trainable_parameters
from .scoring import AnswerTokens, score


@dataclass
class Predictions:
    """
    A model's outputs on one data set.

    Attributes:
        probs (`np.ndarray` of shape `(rows,)`): P(like) per row.
        labels (`np.ndarray` of shape `(rows,)`): the 0/1 labels.
        vocab_logits (`np.ndarray` of shape `(rows, vocab)`, *optional*): full-vocabulary logits at the answer
            position, needed only for the E2URec code's symmetrised-KL metric.
    """

    probs: np.ndarray
    labels: np.ndarray
    vocab_logits: np.ndarray | None = None


@dataclass
class ModelPredictions:
    """A model's [`Predictions`] on the forget set and on the test set: what [`evaluate_unlearning`] needs of it."""

    forget: Predictions
    test: Predictions

    def metrics(self) -> dict[str, float]:
        """
        Evidence about one model: `test_auc`/`test_acc`/`test_logloss`, `forget_auc`, `forget_confidence` (mean
        P(true label) on D_f) and `mia_auc` (telling D_f from the test samples by the true label's probability).
        """
        forget, test = self.forget, self.test
        out = {f"test_{key}": value for key, value in utility_metrics(test.labels, test.probs).items()}
        out["forget_auc"] = utility_metrics(forget.labels, forget.probs)["auc"]
        out["forget_confidence"] = mean_confidence(forget.labels, forget.probs)
        out["mia_auc"] = membership_inference_auc(
            true_label_confidence(forget.labels, forget.probs), true_label_confidence(test.labels, test.probs)
        )
        return out


def predict(
    model,
    tokenizer,
    dataset,
    answer_tokens: AnswerTokens | None = None,
    batch_size: int = 64,
    max_prompt_length: int = 512,
    full_vocab: bool = False,
) -> Predictions:
    """
    Score every row of `dataset` (P(like) at the first answer position, as [`~hf_recunlearn.scoring.score`]), keeping
    the full-vocabulary answer logits when `full_vocab=True` (`rows × vocab` floats on the CPU).
    """
    out = score(model, tokenizer, dataset, answer_tokens, batch_size, max_prompt_length, return_logits=full_vocab)
    probs, vocab = out if full_vocab else (out, None)
    return Predictions(probs=probs, labels=np.asarray(dataset["label"], dtype=int), vocab_logits=vocab)


def predict_unlearning_sets(
    model, tokenizer, forget_dataset, test_dataset, full_vocab: bool = True, **kwargs
) -> ModelPredictions:
    """[`predict`] on the forget set (with full-vocabulary logits when `full_vocab`) and on the test set."""
    return ModelPredictions(
        forget=predict(model, tokenizer, forget_dataset, full_vocab=full_vocab, **kwargs),
        test=predict(model, tokenizer, test_dataset, **kwargs),
    )


def _recommender_predictions(trainer, dataset, batch_size: int) -> Predictions:
    """An APA trainer's aggregated P(like) on `dataset` (no full-vocabulary logits: there is no single model)."""
    probs = trainer.recommender.predict(dataset, batch_size)
    return Predictions(probs=probs, labels=np.asarray(dataset["label"], dtype=int))


def evaluate_unlearning(
    unlearned,
    original,
    retrained,
    *,
    forget_dataset=None,
    test_dataset=None,
    tokenizer=None,
    retrained_other=None,
    unlearning_time: float | None = None,
    trainable_parameters: int | None = None,
    full_vocab: bool = True,
    batch_size: int = 64,
) -> dict[str, Any]:
    """
    The evidence for one unlearned model, against the original and the retrained reference.

    Each of `unlearned`, `original`, `retrained` and `retrained_other` is a model (scored here on `forget_dataset` and
    `test_dataset` with `tokenizer`), a [`ModelPredictions`] computed earlier (the way to keep the original's outputs:
    unlearning modifies the original model in place), or, for `unlearned`, an unlearning trainer (its model, wall time
    and trainable parameter count are read off it; for an `APATrainer`, its aggregated recommender and last forget
    event).

    Args:
        unlearned: the model after unlearning.
        original: the model before unlearning.
        retrained: the model trained without the forgotten data ([`retrain_reference`]).
        forget_dataset, test_dataset (`Dataset`): D_f and held-out test samples.
        tokenizer: needed when any argument is a model.
        retrained_other (*optional*): a second retrained model with another seed; gives the noise floor.
        unlearning_time (`float`, *optional*): wall time of the unlearning in seconds.
        trainable_parameters (`int`, *optional*): parameters the method trained.
        full_vocab (`bool`, *optional*, defaults to `True`): also compute the E2URec code's full-vocabulary metric.

    Returns:
        `dict` with these keys (`nan` where an input is missing):

        - `test_auc`, `test_acc`, `test_logloss`: utility of the unlearned model; `original_test_*`, `retrained_test_*`
          the same for the references.
        - `forget_jsd`, `forget_l2`: true Jensen–Shannon divergence (natural log) and L2 distance between the Yes/No
          distributions of the unlearned and the retrained model on D_f (lower is better);
          `forget_symmetrised_kl_full_vocab`: the E2URec code's "JSD" (half the symmetrised full-vocabulary KL).
          `original_forget_*`: the same for the original (the gap to close).
        - `noise_floor_jsd`, `noise_floor_l2`, `noise_floor_symmetrised_kl_full_vocab`: the same distances between
          two retrained models with different seeds; distances below them are indistinguishable from retraining.
        - `gap_closed`, `gap_closed_l2`: `(original − unlearned) / (original − floor)`; 1 = as close as another
          retrain seed, 0 = no change, `nan` when the original is not above the floor.
        - `forget_auc`, `forget_confidence` (mean P(true label) on D_f) for the unlearned model, and
          `original_forget_*`, `retrained_forget_*`.
        - `original_memorised`: whether the original is more accurate and more confident on D_f than the retrained
          model, and above the floor in JSD: without that there is nothing measurable to forget.
        - `mia_auc`, `original_mia_auc`, `retrained_mia_auc`: membership-inference audit, AUC of telling D_f from the
          test samples by the log-probability of the true label (0.5 = nothing to infer; compare with the retrained
          model's, which never saw D_f).
        - `unlearning_time_s`, `trainable_parameters`, `num_forget_samples`, `num_test_samples`.
    """
    if hasattr(unlearned, "forget_request_summary"):  # an unlearning trainer
        trainer = unlearned
        unlearning_time = unlearning_time if unlearning_time is not None else trainer.unlearning_runtime
        if trainable_parameters is None:
            trainable_parameters = trainer.num_trainable_parameters
        tokenizer = tokenizer or trainer.processing_class
        if hasattr(trainer, "recommender"):
            # APA: `trainer.model` is the frozen base; the unlearned model is the aggregate of the shard adapters.
            if forget_dataset is None or test_dataset is None:
                raise ValueError("Pass `forget_dataset` and `test_dataset` to evaluate an APA trainer's recommender.")
            unlearned = ModelPredictions(
                forget=_recommender_predictions(trainer, forget_dataset, batch_size),
                test=_recommender_predictions(trainer, test_dataset, batch_size),
            )
        else:
            unlearned = trainer.accelerator.unwrap_model(trainer.model)
    if trainable_parameters is None and isinstance(unlearned, torch.nn.Module):
        trainable_parameters = count_trainable_parameters(unlearned)

    def resolve(name, value, required=True) -> ModelPredictions | None:
        if value is None:
            if required:
                raise ValueError(f"`{name}` is required.")
            return None
        if isinstance(value, ModelPredictions):
            return value
        if forget_dataset is None or test_dataset is None or tokenizer is None:
            raise ValueError(
                f"`{name}` is a model: pass `forget_dataset`, `test_dataset` and `tokenizer` to score it, or pass "
                "`ModelPredictions` from `predict_unlearning_sets`."
            )
        return predict_unlearning_sets(value, tokenizer, forget_dataset, test_dataset, full_vocab=full_vocab,
                                       batch_size=batch_size)  # fmt: skip

    u = resolve("unlearned", unlearned)
    o = resolve("original", original)
    r = resolve("retrained", retrained)
    r2 = resolve("retrained_other", retrained_other, required=False)
    nan = float("nan")

    def symkl(a: Predictions, b: Predictions) -> float:
        if a.vocab_logits is None or b.vocab_logits is None:
            return nan
        return symmetrised_kl_full_vocab(a.vocab_logits, b.vocab_logits)

    out: dict[str, Any] = {}
    for prefix, preds in (("", u), ("original_", o), ("retrained_", r)):
        out.update({f"{prefix}{key}": value for key, value in preds.metrics().items()})
    for prefix, preds in (("", u), ("original_", o)):
        out[f"{prefix}forget_jsd"] = jsd(preds.forget.probs, r.forget.probs)
        out[f"{prefix}forget_l2"] = l2_distance(preds.forget.probs, r.forget.probs)
        out[f"{prefix}forget_symmetrised_kl_full_vocab"] = symkl(preds.forget, r.forget)
    if r2 is not None:
        out["noise_floor_jsd"] = jsd(r.forget.probs, r2.forget.probs)
        out["noise_floor_l2"] = l2_distance(r.forget.probs, r2.forget.probs)
        out["noise_floor_symmetrised_kl_full_vocab"] = symkl(r.forget, r2.forget)
        out["gap_closed"] = gap_closed(out["original_forget_jsd"], out["forget_jsd"], out["noise_floor_jsd"])
        out["gap_closed_l2"] = gap_closed(out["original_forget_l2"], out["forget_l2"], out["noise_floor_l2"])
    else:
        for key in ("noise_floor_jsd", "noise_floor_l2", "noise_floor_symmetrised_kl_full_vocab", "gap_closed",
                    "gap_closed_l2"):  # fmt: skip
            out[key] = nan
    floor = out["noise_floor_jsd"]
    out["original_memorised"] = bool(
        out["original_forget_auc"] > out["retrained_forget_auc"]
        and out["original_forget_confidence"] > out["retrained_forget_confidence"]
        and (math.isnan(floor) or out["original_forget_jsd"] > floor)
    )
    out["unlearning_time_s"] = nan if unlearning_time is None else float(unlearning_time)
    out["trainable_parameters"] = trainable_parameters
    out["num_forget_samples"] = len(u.forget.probs)
    out["num_test_samples"] = len(u.test.probs)
    return out


EVALUATE_UNLEARNING_KEYS = (
    "test_auc", "test_acc", "test_logloss", "forget_auc", "forget_confidence", "mia_auc",
    "original_test_auc", "original_test_acc", "original_test_logloss", "original_forget_auc",
    "original_forget_confidence", "original_mia_auc",
    "retrained_test_auc", "retrained_test_acc", "retrained_test_logloss", "retrained_forget_auc",
    "retrained_forget_confidence", "retrained_mia_auc",
    "forget_jsd", "forget_l2", "forget_symmetrised_kl_full_vocab",
    "original_forget_jsd", "original_forget_l2", "original_forget_symmetrised_kl_full_vocab",
    "noise_floor_jsd", "noise_floor_l2", "noise_floor_symmetrised_kl_full_vocab", "gap_closed", "gap_closed_l2",
    "original_memorised", "unlearning_time_s", "trainable_parameters", "num_forget_samples", "num_test_samples",
)  # fmt: skip
"""The keys [`evaluate_unlearning`] returns, in a stable order."""

