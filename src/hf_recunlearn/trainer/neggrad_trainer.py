"""NegGrad: fine-tune on the retained data while ascending the loss on the forgotten data."""

from __future__ import annotations

import textwrap

import torch

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
    _paper = {
        "title": "Eternal Sunshine of the Spotless Net: Selective Forgetting in Deep Networks",
        "url": "https://arxiv.org/abs/1911.04933",
        # docstyle-ignore
        "citation": textwrap.dedent("""\
            @inproceedings{golatkar2020eternal,
                title     = {Eternal Sunshine of the Spotless Net: Selective Forgetting in Deep Networks},
                author    = {Aditya Golatkar and Alessandro Achille and Stefano Soatto},
                booktitle = {CVPR},
                pages     = {9304--9312},
                year      = {2020},
            }"""),
    }
    config_class = NegGradConfig

    def unlearning_loss(self, outputs: StudentOutputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        forget_ce = outputs.cross_entropy(outputs.is_forget)
        retain_ce = outputs.cross_entropy(outputs.is_retain)
        loss = retain_ce - self.args.forget_weight * forget_ce
        return loss, {"loss/forget": forget_ce, "loss/retain_ce": retain_ce}
