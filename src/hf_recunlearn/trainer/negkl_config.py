"""Configuration of the NegKL baseline (push the forgotten predictions away from the original's)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .base_config import UnlearningConfig


@dataclass
class NegKLConfig(UnlearningConfig):
    r"""
    Configuration for [`NegKLTrainer`]: minimise `L_pred(D_r) − λ · KL(M_o ‖ M_u)[D_f]`, fine-tuning on the retained
    data while pushing the student's answer distribution on the forgotten data away from the original model's.

    Every weight is trained by default (`use_lora=False`), as for the E2URec paper's baselines. The KL compares the
    distribution chosen by `kl_scope` (default: Yes/No). Like NegGrad the pushing term is unbounded.

    Parameters:
        forget_weight (`float`, *optional*, defaults to `0.5`):
            λ, the weight of the negated KL on D_f.
    """

    use_lora: bool = field(default=False, metadata={"help": "Train a LoRA student (True) or every weight (False)."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Initial learning rate."})
    forget_weight: float = field(
        default=0.5, metadata={"help": "λ: weight of the negated KL(original ‖ student) on D_f."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.forget_weight < 0:
            raise ValueError(f"`forget_weight` must be >= 0, got {self.forget_weight}. It is λ in L_r − λ·KL_f.")
