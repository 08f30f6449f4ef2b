"""Bad-T: distil an incompetent (randomly initialised) teacher on the forgotten data, the original on the rest."""

from __future__ import annotations


import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel
from transformers import PreTrainedModel

from ..cards import paper
from ..losses import kl_divergence
from ..audit import ForgetAudit
from ..models import load_model
from .bad_teacher_config import BadTeacherConfig
from .base_trainer import StudentOutputs, UnlearningTrainer


class BadTeacherTrainer(UnlearningTrainer):
    r"""
    Bad-T baseline (Chundawat et al., 2023): `L = w_f · KL(M_bad ‖ M_u)[D_f] + w_r · KL(M_o ‖ M_u)[D_r]`.

    `M_bad` is a randomly initialised model of the original's architecture (seeded by `bad_teacher_seed`), or
    `bad_teacher_model` when given; `M_o` is the original model. Both teachers' outputs are computed once before
    training and the incompetent teacher is then released.

    (The E2URec authors' script named Bad-T, `unlearning_rl.py`, instead fine-tunes on D_f with flipped labels.)

    Logged components: `loss/forget` (KL to the incompetent teacher on D_f) and `loss/retain_kl`.

    Args:
        model: the original recommender (see [`UnlearningTrainer`]).
        bad_teacher_model (`str` or `PreTrainedModel`, *optional*): the incompetent teacher; by default a random
            initialisation of the original's architecture.
        args ([`BadTeacherConfig`], *optional*): configuration.
        The other arguments are those of [`UnlearningTrainer`].
    """

    _tag_names = ["hf_recunlearn", "unlearning", "recommendation", "bad-teacher"]
    _name = "Bad-T"
    _paper = paper("badt")
    config_class = BadTeacherConfig

    def __init__(
        self,
        model: str | PreTrainedModel | PeftModel,
        bad_teacher_model: str | PreTrainedModel | None = None,
        args: BadTeacherConfig | None = None,
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
        if isinstance(bad_teacher_model, str):
            bad_teacher_model = load_model(bad_teacher_model)[0]
        self.bad_teacher_model = bad_teacher_model
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

    def _random_teacher(self) -> PreTrainedModel:
        model = self._unwrapped
        base = model.get_base_model() if isinstance(model, PeftModel) else model
        torch.manual_seed(self.args.bad_teacher_seed)
        teacher = type(base)._from_config(base.config)
        return teacher.to(device=self.args.device, dtype=base.dtype)

    def compute_teacher_outputs(self) -> dict[str, torch.Tensor]:
        """`{"forget": the incompetent teacher on D_f, "retain": the original on the paired retained samples}`."""
        teacher = self.bad_teacher_model if self.bad_teacher_model is not None else self._random_teacher()
        forget = self.teacher_logits(teacher.to(self.args.device), self.forget_dataset)
        self.bad_teacher_model = None  # only its logits are needed
        del teacher
        retain = self.teacher_logits(None, self.paired_retain_dataset)
        return {"forget": forget, "retain": retain}

    def unlearning_loss(self, outputs: StudentOutputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        student = self._in_scope(outputs.answer_logits)
        forget, retain = outputs.is_forget, outputs.is_retain
        forget_kl = kl_divergence(self._teacher_rows("forget", outputs, forget), student[forget])
        retain_kl = kl_divergence(self._teacher_rows("retain", outputs, retain), student[retain])
        loss = self.args.forget_weight * forget_kl + self.args.retain_weight * retain_kl
        return loss, {"loss/forget": forget_kl, "loss/retain_kl": retain_kl}
