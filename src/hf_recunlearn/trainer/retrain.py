"""The gold standard every approximate method is measured against: retraining without the forgotten data."""

from __future__ import annotations

import time
from typing import Callable

from datasets import Dataset
from peft import LoraConfig
from transformers import PreTrainedModel

from .rec_config import RecConfig
from .rec_trainer import RecTrainer


def retrain_reference(
    model: str | PreTrainedModel | Callable[[], PreTrainedModel],
    args: RecConfig,
    retain_dataset: Dataset,
    eval_dataset: Dataset | None = None,
    processing_class=None,
    callbacks=None,
    peft_config: LoraConfig | None = None,
) -> RecTrainer:
    """
    Train the *retrained* reference: the original recipe ([`RecTrainer`] with the same `args`) from the same base
    model, on the retained data D_r only. Exact unlearning by construction and the target approximate methods are
    compared with (JSD/L2 on D_f); too slow to be a method, which is why the others exist.

    Args:
        model (`str`, `PreTrainedModel` or callable): the *base* model the original was trained from, not the trained
            original. Training modifies a loaded model in place, so pass a fresh one, an id/path, or a function that
            returns a fresh one.
        args (`RecConfig`): the configuration the original was trained with (change `seed` for a second reference,
            e.g. to measure the noise floor).
        retain_dataset (`Dataset`): D_r.
        eval_dataset, processing_class, callbacks, peft_config: as for [`RecTrainer`].

    Returns:
        The trained [`RecTrainer`]; `trainer.model` is the retrained model and `trainer.retrain_runtime` the wall time
        in seconds.
    """
    if len(retain_dataset) == 0:
        raise ValueError("`retain_dataset` is empty: there is nothing to retrain on.")
    if callable(model) and not isinstance(model, PreTrainedModel):
        model = model()
    start = time.perf_counter()
    trainer = RecTrainer(
        model,
        args,
        train_dataset=retain_dataset,
        eval_dataset=eval_dataset,
        processing_class=processing_class,
        callbacks=callbacks,
        peft_config=peft_config,
    )
    trainer.train()
    trainer.retrain_runtime = time.perf_counter() - start
    return trainer
