"""Configuration of the NegGrad baseline (gradient ascent on the forgotten data)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .base_config import UnlearningConfig


@dataclass
class NegGradConfig(UnlearningConfig):
    r"""
    Configuration for [`NegGradTrainer`]: minimise `L_pred(D_r) − λ · L_pred(D_f)`, fine-tuning on the retained data
    while ascending the loss on the forgotten data (Golatkar et al., 2020; the E2URec paper's NegGrad baseline).

    As in the E2URec paper's baselines every weight is trained by default (`use_lora=False`); `use_lora=True` trains
    a LoRA student instead. The ascent term is unbounded: too large a `forget_weight` or too many steps make the model
    answer the opposite of what it learned on D_f and then collapse.

    Parameters:
        forget_weight (`float`, *optional*, defaults to `0.5`):
            λ, the weight of the negated forget loss (the authors' code: 0.5).
    """

    use_lora: bool = field(default=False, metadata={"help": "Train a LoRA student (True) or every weight (False)."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Initial learning rate."})
    forget_weight: float = field(default=0.5, metadata={"help": "λ: weight of the negated loss on D_f."})

    def __post_init__(self):
        super().__post_init__()
        if self.forget_weight < 0:
            raise ValueError(f"`forget_weight` must be >= 0, got {self.forget_weight}. It is λ in L_r − λ·L_f.")
