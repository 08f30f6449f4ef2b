"""NegGrad: fine-tune on the retained data while ascending the loss on the forgotten data."""

from __future__ import annotations


import torch

from ..cards import paper
from .base_trainer import StudentOutputs, UnlearningTrainer
from .neggrad_config import NegGradConfig


class NegGradTrainer(UnlearningTrainer):
    r"""
    NegGrad baseline: `L = L_pred(D_r) − λ · L_pred(D_f)` on each paired batch (as the E2URec authors'
    `unlearning_ga.py`).

    It needs no teacher. Logged components: `loss/forget` (`L_pred(D_f)`, the term that is *subtracted*; it grows as
    the model forgets) and `loss/retain_ce` (`L_pred(D_r)`).

    Arguments are those of [`UnlearningTrainer`], with a [`NegGradConfig`].
    """

    _tag_names = ["hf_recunlearn", "unlearning", "recommendation", "neggrad"]
    _name = "NegGrad"
    _paper = paper("neggrad")
    config_class = NegGradConfig

    def unlearning_loss(self, outputs: StudentOutputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        forget_ce = outputs.cross_entropy(outputs.is_forget)
        retain_ce = outputs.cross_entropy(outputs.is_retain)
        loss = retain_ce - self.args.forget_weight * forget_ce
        return loss, {"loss/forget": forget_ce, "loss/retain_ce": retain_ce}
