"""NegKL: fine-tune on the retained data while moving the forgotten predictions away from the original's."""

from __future__ import annotations

import torch

from ..losses import kl_divergence
from .base_trainer import StudentOutputs, UnlearningTrainer
from .negkl_config import NegKLConfig


class NegKLTrainer(UnlearningTrainer):
    r"""
    NegKL baseline (compared against in the E2URec paper): `L = L_pred(D_r) − λ · KL(M_o ‖ M_u)[D_f]`, where `M_o` is
    the original model. Its outputs on D_f are computed once before training (with a LoRA student they are the
    student-disabled network; with `use_lora=False`, the weights before the first step).

    Logged components: `loss/forget` (the KL on D_f, subtracted; it grows as the model forgets) and `loss/retain_ce`.

    Arguments are those of [`UnlearningTrainer`], with a [`NegKLConfig`].
    """

    _tag_names = ["hf_recunlearn", "unlearning", "recommendation", "negkl"]
    _name = "NegKL"
    config_class = NegKLConfig

    def compute_teacher_outputs(self) -> dict[str, torch.Tensor]:
        """`{"forget": the original model's logits on D_f}` in `args.kl_scope`."""
        return {"forget": self.teacher_logits(None, self.forget_dataset)}

    def unlearning_loss(self, outputs: StudentOutputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        forget = outputs.is_forget
        student = self._in_scope(outputs.answer_logits)
        forget_kl = kl_divergence(self._teacher_rows("forget", outputs, forget), student[forget])
        retain_ce = outputs.cross_entropy(outputs.is_retain)
        loss = retain_ce - self.args.forget_weight * forget_kl
        return loss, {"loss/forget": forget_kl, "loss/retain_ce": retain_ce}
