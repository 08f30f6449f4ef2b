"""E2URec (Wang et al., 2024): efficient and effective unlearning of LLM recommenders with two teachers."""

from __future__ import annotations

import copy
import logging
import os
import warnings

import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel
from transformers import PreTrainedModel
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from ..cards import paper
from ..losses import e2urec_loss, forgetting_teacher_logits, kl_divergence
from ..audit import ForgetAudit
from ..models import is_quantized, load_model
from .base_trainer import StudentOutputs, UnlearningTrainer
from .e2urec_config import E2URecConfig
from .rec_config import CHECKPOINTING_FIELD, RecConfig
from .rec_trainer import RecTrainer, make_lora_config


AUGMENT_ADAPTER = "e2urec_augment"
# Below this mean |change of the Yes/No log-odds| on D_f, the forgetting teacher is the original for all practical
# purposes (a change of 0.05 in log-odds moves P(like) by about 0.01).
MIN_TEACHER_SHIFT = 0.05

logger = logging.getLogger(__name__)


class E2URecTrainer(UnlearningTrainer):
    r"""
    E2URec: a new LoRA student on the frozen original recommender, distilled towards a *forgetting teacher* on the
    forgotten data and towards the original (the *remembering teacher*) on the retained data (paper §4, eqs. 3–7):

    `L = w_f · KL(M_f ‖ M_u)[D_f] + w_r · (L_pred[D_r] + KL(M_r ‖ M_u)[D_r])`

    - Remembering teacher `M_r`: the original model, i.e. the student's own network with the student disabled.
    - Forgetting teacher `M_f`: `softmax(v − α·ReLU(v_aug − v))` (see [`E2URecConfig`] for the two forms), with
      `v_aug` from an augmented model, the original fine-tuned further on D_f. Pass one as `augmented_model`, or
      let the trainer train it first (`augment_method`, `augment_epochs`, `augment_learning_rate`).

    All teacher outputs are computed once at the start of `train()`, at the answer position only, for the forget set
    and the retained samples paired with it; the augmented model is released after that. The KL compares the Yes/No
    distribution (`kl_scope="yes_no"`) or the full vocabulary (`"full"`, as in the authors' code).

    Logged loss components: `loss/forget` (L_FGT), `loss/retain_kl`, `loss/retain_ce` (L_pred) and `loss/remember`
    (their sum, L_REM).

    Args:
        model: the original recommender (see [`UnlearningTrainer`]).
        augmented_model (`str` or `PreTrainedModel`, *optional*): the original fine-tuned further on D_f (or its id or
            path). Trained by the trainer when not given.
        args ([`E2URecConfig`], *optional*): configuration.
        The other arguments are those of [`UnlearningTrainer`].
    """

    _tag_names = ["hf_recunlearn", "unlearning", "recommendation", "e2urec"]
    _name = "E2URec"
    _paper = paper("e2urec")
    config_class = E2URecConfig

    def __init__(
        self,
        model: str | PreTrainedModel | PeftModel,
        augmented_model: str | PreTrainedModel | None = None,
        args: E2URecConfig | None = None,
        data_collator=None,
        train_dataset: Dataset | None = None,
        eval_dataset: Dataset | None = None,
        processing_class=None,
        compute_metrics=None,
        callbacks=None,
        optimizers=(None, None),
        forget_dataset: Dataset | None = None,
        retain_dataset: Dataset | None = None,
        forget_audit: ForgetAudit | None = None,
        peft_config: LoraConfig | None = None,
    ):
        if isinstance(augmented_model, str):
            augmented_model = load_model(augmented_model)[0]
        if isinstance(augmented_model, PeftModel):
            augmented_model = augmented_model.merge_and_unload()
        self.augmented_model = augmented_model
        # Mean |change of the Yes/No log-odds| on D_f of the augmented model and of the forgetting teacher (train()).
        self.augmented_shift: float | None = None
        self.teacher_shift: float | None = None
        self._augment_source: PreTrainedModel | None = None
        self.alpha: float | None = None  # α in effect (calibrated or `args.alpha`), set by `train()`
        self.alpha_search: list[dict] = []
        super().__init__(
            model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            compute_metrics=compute_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
            forget_dataset=forget_dataset,
            retain_dataset=retain_dataset,
            forget_audit=forget_audit,
            peft_config=peft_config,
        )

    def _on_original_model(self, model: PreTrainedModel, args: E2URecConfig) -> None:
        self._augment_method = args.augment_method
        if self.augmented_model is None and args.augment_method == "full" and is_quantized(model):
            warnings.warn(
                "`augment_method='full'` fine-tunes every weight of a copy of the original, but the original is "
                "quantized (4-bit/8-bit): its weights cannot be trained, and a copy would double its memory. The "
                "augmented model is trained as a LoRA adapter on the same base instead. Set "
                "`augment_method='lora'` to silence this warning.",
                UserWarning,
                stacklevel=4,
            )
            self._augment_method = "lora"
            return
        if self.augmented_model is None and args.augment_method == "full":
            # The augmented model is a separately trained network; it starts as a copy of the original and is freed
            # as soon as its logits on D_f are computed.
            self._augment_source = copy.deepcopy(model)

    # ------------------------------------------------------------------ teachers

    def compute_teacher_outputs(self) -> dict[str, torch.Tensor]:
        """
        `{"forget": v_f on D_f, "retain": original logits on the paired retained samples}`, each `(rows, classes)`
        at the answer position, in `args.kl_scope`.
        """
        original_forget = self.teacher_logits(None, self.forget_dataset)
        augmented_forget = self._augmented_logits()
        self.alpha = self._calibrated_alpha(original_forget, augmented_forget)
        forget = forgetting_teacher_logits(original_forget, augmented_forget, self.alpha, form=self.args.teacher_form)
        self._check_teacher_shift(original_forget, augmented_forget, forget)
        retain = self.teacher_logits(None, self.paired_retain_dataset)
        return {"forget": forget, "retain": retain}

    def _calibrated_alpha(self, original: torch.Tensor, augmented: torch.Tensor) -> float:
        """
        α of the forgetting teacher: `args.alpha` on the fixed schedule; with a forget audit and
        `args.calibrate_alpha`, the smallest of `args.alpha_candidates` whose teacher the audit puts at or below the
        target's centre (the relative AUC of the teacher's answers on the forget set against the original's on the hold-out
        rows — the teacher only changes the forgotten answers), else the largest. The search is recorded in
        `self.alpha_search`.
        """
        callback = self.audit_callback
        if callback is None or not self.args.calibrate_alpha:
            return self.args.alpha
        from ..scoring import p_like, score

        audit = callback.audit
        rows = torch.as_tensor(audit.forget_rows, dtype=torch.long)
        holdout = score(self._unwrapped, self.processing_class, audit.holdout_dataset,
                        batch_size=self.args.teacher_batch_size)  # fmt: skip  (the student is still zero: the original)
        self.alpha_search = []
        chosen = None
        for alpha in sorted(self.args.alpha_candidates):
            teacher = forgetting_teacher_logits(original[rows], augmented[rows], alpha, form=self.args.teacher_form)
            probs = p_like(teacher, self.answer_tokens if teacher.shape[-1] > 2 else None)
            result = audit(probs.double().numpy(), holdout)
            self.alpha_search.append({"alpha": alpha, "relative_auc": result.relative_auc, "side": result.side})
            if result.relative_auc <= result.target_relative_auc:
                chosen = alpha
                break
        chosen = chosen if chosen is not None else max(self.args.alpha_candidates)
        logger.info("E2URec: α calibrated on the forget audit to %s (search: %s)", chosen, self.alpha_search)
        return float(chosen)

    def _check_teacher_shift(self, original: torch.Tensor, augmented: torch.Tensor, teacher: torch.Tensor) -> None:
        """Record how far the augmented model and the forgetting teacher moved the answers; warn if nowhere."""
        if self.args.kl_scope == "full":
            ids = [self.answer_tokens.no_id, self.answer_tokens.yes_id]
            original, augmented, teacher = original[:, ids], augmented[:, ids], teacher[:, ids]
        log_odds = lambda v: v[:, 1] - v[:, 0]  # noqa: E731
        self.augmented_shift = float((log_odds(augmented) - log_odds(original)).abs().mean())
        self.teacher_shift = float((log_odds(teacher) - log_odds(original)).abs().mean())
        logger.info(
            "Mean |change of the Yes/No log-odds| on D_f: augmented model %.4f, forgetting teacher %.4f",
            self.augmented_shift,
            self.teacher_shift,
        )
        if self.teacher_shift < MIN_TEACHER_SHIFT:
            warnings.warn(
                f"The forgetting teacher's answers on the forget set differ from the original's by a mean |change of "
                f"the Yes/No log-odds| of {self.teacher_shift:.2e} (the augmented model's by "
                f"{self.augmented_shift:.2e}), so little will be forgotten. Raise `alpha`, `augment_learning_rate` "
                "or `augment_epochs`, or pass a more strongly fine-tuned `augmented_model`.",
                UserWarning,
                stacklevel=3,
            )

    def _augmented_logits(self) -> torch.Tensor:
        if self.augmented_model is not None:
            model = self.augmented_model.to(self.args.device)
            logits = self.teacher_logits(model, self.forget_dataset)
        elif self._augment_method == "full":
            model = self._train_augmented(self._augment_source)
            logits = self.teacher_logits(model, self.forget_dataset)
            self._augment_source = None
        else:
            logits = self._lora_augmented_logits()
        self.augmented_model = None  # only its logits are needed; let the memory go
        return logits

    def _augment_args(self, use_lora: bool) -> RecConfig:
        a = self.args
        return RecConfig(
            output_dir=os.path.join(a.output_dir, "augmented"),
            use_lora=use_lora,
            lora_r=a.lora_r,
            lora_alpha=a.lora_alpha,
            lora_dropout=a.lora_dropout,
            lora_target_modules=a.lora_target_modules,
            learning_rate=a.augment_learning_rate,
            num_train_epochs=a.augment_epochs,
            per_device_train_batch_size=a.augment_batch_size,
            max_prompt_length=a.max_prompt_length,
            seed=a.seed,
            bf16=a.bf16,
            fp16=a.fp16,
            **{CHECKPOINTING_FIELD: a.gradient_checkpointing},
            use_cpu=a.use_cpu,
            disable_tqdm=True,
            logging_strategy="no",
            save_strategy="no",
            report_to="none",
        )

    def _augment_trainer(self, model, use_lora: bool) -> RecTrainer:
        trainer = RecTrainer(
            model,
            self._augment_args(use_lora),
            train_dataset=self.forget_dataset,
            processing_class=self.processing_class,
        )
        for callback in (PrinterCallback, ProgressCallback):  # a step inside this trainer's run, not a run to report
            trainer.remove_callback(callback)
        return trainer

    def _train_augmented(self, model: PreTrainedModel) -> PreTrainedModel:
        model.requires_grad_(True)  # a merged PEFT original arrives frozen
        trainer = self._augment_trainer(model, use_lora=False)
        trainer.train()
        return trainer.model

    def _lora_augmented_logits(self) -> torch.Tensor:
        """Train a temporary adapter on the original (student inactive), read its logits on D_f, delete it."""
        model = self._unwrapped
        active = list(model.active_adapters)
        model.add_adapter(AUGMENT_ADAPTER, make_lora_config(model.get_base_model(), self.args))
        # On top of the original's own adapter when it is kept unmerged (a quantized original), else on the base.
        self._activate_adapters(model, [*self._original_adapters, AUGMENT_ADAPTER], trainable=AUGMENT_ADAPTER)
        try:
            self._augment_trainer(model, use_lora=True).train()
            return self.teacher_logits(model, self.forget_dataset)
        finally:
            self._activate_adapters(model, active, trainable=self._student_adapter)
            model.delete_adapter(AUGMENT_ADAPTER)

    # ------------------------------------------------------------------ loss

    def unlearning_loss(self, outputs: StudentOutputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        student = self._in_scope(outputs.answer_logits)
        forget, retain = outputs.is_forget, outputs.is_retain
        forget_kl = kl_divergence(self._teacher_rows("forget", outputs, forget), student[forget])
        w_f, w_r = self.args.loss_weights
        epoch = self.state.epoch or 0.0
        if epoch < self.args.forget_only_epochs:
            return w_f * forget_kl, {"loss/forget": forget_kl}
        retain_kl = kl_divergence(self._teacher_rows("retain", outputs, retain), student[retain])
        retain_ce = outputs.cross_entropy(retain)
        loss = e2urec_loss(forget_kl, retain_kl, retain_ce, w_f, w_r)
        return loss, {
            "loss/forget": forget_kl,
            "loss/retain_kl": retain_kl,
            "loss/retain_ce": retain_ce,
            "loss/remember": retain_ce + retain_kl,
        }
