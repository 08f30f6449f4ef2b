"""Configuration of the Bad-T baseline (distil an incompetent teacher on the forgotten data)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .base_config import UnlearningConfig


@dataclass
class BadTeacherConfig(UnlearningConfig):
    r"""
    Configuration for [`BadTeacherTrainer`] (Chundawat et al., 2023): distil a randomly initialised, *incompetent*
    teacher on the forgotten data and the original model (the competent teacher) on the retained data:
    `L = w_f · KL(M_bad ‖ M_u)[D_f] + w_r · KL(M_o ‖ M_u)[D_r]`.

    Every weight is trained by default (`use_lora=False`), as for the E2URec paper's baselines.

    Parameters:
        forget_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the KL to the incompetent teacher on D_f.
        retain_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the KL to the original model on D_r.
        bad_teacher_seed (`int`, *optional*, defaults to `0`):
            Seed of the incompetent teacher's random initialisation (when no `bad_teacher_model` is passed).
    """

    use_lora: bool = field(default=False, metadata={"help": "Train a LoRA student (True) or every weight (False)."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Initial learning rate."})
    forget_weight: float = field(default=1.0, metadata={"help": "Weight of KL(incompetent teacher ‖ student) on D_f."})
    retain_weight: float = field(default=1.0, metadata={"help": "Weight of KL(original ‖ student) on D_r."})
    bad_teacher_seed: int = field(default=0, metadata={"help": "Seed of the incompetent teacher's initialisation."})

    def __post_init__(self):
        super().__post_init__()
        for name in ("forget_weight", "retain_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)}.")
