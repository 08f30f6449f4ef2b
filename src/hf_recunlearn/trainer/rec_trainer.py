"""Fine-tuning an LLM into a Yes/No recommender (TALLRec recipe), evaluated by AUC."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import EvalPrediction, PreTrainedModel, Trainer, set_seed

from ..metrics import utility_metrics
from ..models import is_seq2seq, load_model, prepare_model_for_training
from ..scoring import AnswerTokens, make_collator, model_inputs, p_like
from .hub_mixin import VersionedHubMixin
from .rec_config import RecConfig


def default_target_modules(model: PreTrainedModel) -> list[str]:
    """
    PEFT's default LoRA targets for `model`'s architecture (the attention query/value projections for llama, t5,
    gpt2 and the rest of `TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING`): the modules TALLRec and E2URec adapt.
    """
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    model_type = getattr(model.config, "model_type", None)
    if model_type not in TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING:
        raise ValueError(
            f"`lora_target_modules` is not set and PEFT has no default LoRA targets for model type {model_type!r}. "
            "Pass the names of the layers to adapt, e.g. `lora_target_modules=['q_proj', 'v_proj']` (the attention "
            "query/value projections)."
        )
    return list(TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING[model_type])


def make_lora_config(model: PreTrainedModel, args: RecConfig) -> LoraConfig:
    return LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=args.lora_target_modules or default_target_modules(model),
        task_type="SEQ_2_SEQ_LM" if is_seq2seq(model) else "CAUSAL_LM",
    )


def compute_utility_metrics(eval_pred: EvalPrediction) -> dict[str, float]:
    """`compute_metrics` for trainers whose predictions are P(like) and labels are 0/1."""
    probs = np.asarray(eval_pred.predictions).reshape(-1)
    labels = np.asarray(eval_pred.label_ids).reshape(-1)
    return utility_metrics(labels, probs)


class RecTrainer(VersionedHubMixin, Trainer):
    """
    Trainer for an LLM-based recommender (TALLRec): the loss is the language-modelling loss on the answer
    ("Yes"/"No") only, and evaluation reports AUC/ACC/LogLoss of P(like) on `eval_dataset`.

    Datasets are those of [`~hf_recunlearn.data.build_datasets`] (columns `prompt`, `completion`, `label`).

    Args:
        model (`str` or `PreTrainedModel`):
            A model id or path, or a loaded causal LM / seq2seq model. With `args.use_lora` it is wrapped in a new LoRA
            adapter (`peft_config`, or one built from `args`) unless it already is a `PeftModel`.
        args (`RecConfig`, *optional*): training configuration.
        peft_config (`peft.LoraConfig`, *optional*): overrides the LoRA settings of `args`.

    `save_model` writes the library's card next to the model, and `push_to_hub` publishes it as a versioned repo
    (see [`VersionedHubMixin`]).
    """

    _tag_names = ["hf_recunlearn", "tallrec"]
    _method = "tallrec"

    def __init__(
        self,
        model: str | PreTrainedModel,
        args: RecConfig | None = None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        compute_metrics=None,
        callbacks=None,
        optimizers=(None, None),
        peft_config: LoraConfig | None = None,
    ):
        args = args or RecConfig(output_dir="rec-model")
        if isinstance(model, str):
            model, tokenizer = load_model(model, **args.model_load_kwargs())
            processing_class = processing_class or tokenizer
        else:
            args.check_loaded_model(model)
        if processing_class is None:
            raise ValueError("`processing_class` (the tokenizer) is required when `model` is a loaded model.")
        if isinstance(model, PeftModel):
            # Adapters already in place (APA's shards, E2URec's augmented adapter): only the inputs of checkpointed
            # blocks need to require grad; the QLoRA preparation would freeze the adapters too.
            prepare_model_for_training(
                model.get_base_model(), use_lora=True, gradient_checkpointing=args.gradient_checkpointing
            )
        else:
            model = prepare_model_for_training(
                model,
                use_lora=args.use_lora,
                gradient_checkpointing=args.gradient_checkpointing,
            )
        if args.use_lora and not isinstance(model, PeftModel):
            # peft initialises LoRA from the global RNG: seed right before it so runs are reproducible.
            set_seed(args.seed)
            model = get_peft_model(model, peft_config or make_lora_config(model, args))
        reference = train_dataset if train_dataset is not None else eval_dataset
        if reference is None:
            raise ValueError("Pass `train_dataset` or `eval_dataset`: the answer tokens are read from their completions.")
        self.answer_tokens = AnswerTokens.from_dataset(processing_class, reference)
        if data_collator is None:
            data_collator = make_collator(model, processing_class, self.answer_tokens, max_prompt_length=args.max_prompt_length)
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            compute_metrics=compute_metrics or compute_utility_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        return super().compute_loss(model, model_inputs(inputs), return_outputs, num_items_in_batch)

    def prediction_step(self, model, inputs: dict[str, Any], prediction_loss_only: bool, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            outputs = model(**model_inputs(inputs))
        logits = outputs.logits
        rows = torch.arange(logits.shape[0], device=logits.device)
        probs = p_like(logits[rows, inputs["answer_index"]], self.answer_tokens)
        loss = outputs.loss.detach() if outputs.loss is not None else None
        if prediction_loss_only:
            return loss, None, None
        return loss, probs, inputs["answer_label"]
