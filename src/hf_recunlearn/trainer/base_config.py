"""Configuration shared by every unlearning method."""

from __future__ import annotations

from dataclasses import dataclass, field

from .rec_config import RecConfig


KL_SCOPES = ("yes_no", "full")
STOPPING_RULES = ("audit", "fixed")


@dataclass
class UnlearningConfig(RecConfig):
    r"""
    Configuration shared by the unlearning trainers ([`UnlearningTrainer`] and its subclasses).

    Training iterates over the forgotten samples D_f: `per_device_train_batch_size` forgotten samples per step, each
    paired with `retain_per_forget` retained samples drawn once (seeded) from D_r, as the E2URec reference code pairs
    one retain batch with each forget batch. `num_train_epochs` counts passes over D_f. The pairing is fixed for the
    whole run, so any teacher outputs a method needs are computed once, for exactly the samples the student sees.

    Inherits the recommender recipe of [`RecConfig`] (LoRA settings, `max_prompt_length`, ...). With `use_lora=True`
    (the default) the model is frozen and a new LoRA adapter, the *student*, is the only thing trained; with
    `use_lora=False` every weight of the model is trained (the baselines of the papers).

    Parameters:
        retain_per_forget (`int`, *optional*, defaults to `1`):
            Retained samples paired with each forgotten sample in a training step (the reference code: 1).
        pairing_seed (`int`, *optional*):
            Seed of the draw of paired retained samples; defaults to `seed`.
        kl_scope (`str`, *optional*, defaults to `"yes_no"`):
            Distribution a KL term compares at the answer position: `"yes_no"` (softmax over the Yes/No logits, the
            distribution the recommender's P(like) is read from) or `"full"` (softmax over the whole vocabulary, as
            in the E2URec reference code). `"full"` stores `vocab_size` floats per teacher sample on the CPU.
        teacher_batch_size (`int`, *optional*, defaults to `64`):
            Prompts per forward pass when the fixed teacher outputs are computed before training.
        eval_on_forget (`bool`, *optional*, defaults to `True`):
            `evaluate()` also scores the forget set and reports `eval_forget_auc`, `eval_forget_confidence`, ...
        stopping (`str`, *optional*, defaults to `"audit"`):
            `"audit"`: with a `forget_audit` given to the trainer, audit the original first (zero steps when it is
            already at the target: nothing measurable to forget), then every `audit_steps` steps, and stop as soon as
            the audit puts the model at the target (see [`~hf_recunlearn.trainer.stopping.AuditStoppingCallback`]);
            `num_train_epochs` is then the most it trains. `"fixed"`: train `num_train_epochs` whatever happens (the
            papers' setting). Without a `forget_audit` the schedule is fixed either way.
        audit_steps (`int`, *optional*, defaults to `10`):
            Optimizer steps between two audits.
        audit_samples (`int`, *optional*, defaults to `256`):
            Rows of the forget set and of the hold-out set scored per audit (0 = all).
    """

    retain_per_forget: int = field(
        default=1, metadata={"help": "Retained samples paired with each forgotten sample per step (reference: 1)."}
    )
    pairing_seed: int | None = field(
        default=None, metadata={"help": "Seed of the draw of paired retained samples (default: `seed`)."}
    )
    kl_scope: str = field(
        default="yes_no",
        metadata={
            "help": "KL at the answer position over the Yes/No logits ('yes_no') or the full vocabulary ('full').",
            "choices": list(KL_SCOPES),
        },
    )
    teacher_batch_size: int = field(
        default=64, metadata={"help": "Prompts per forward pass when precomputing teacher outputs."}
    )
    eval_on_forget: bool = field(
        default=True, metadata={"help": "Also report forgetting metrics on the forget set in evaluate()."}
    )

    stopping: str = field(
        default="audit",
        metadata={"help": "Stop where the forget audit reaches its target ('audit', needs a `forget_audit`) or train "
                          "the fixed schedule ('fixed', the papers').", "choices": list(STOPPING_RULES)},
    )  # fmt: skip
    audit_steps: int = field(default=10, metadata={"help": "Optimizer steps between two forget audits."})
    audit_samples: int = field(
        default=256, metadata={"help": "Rows of the forget and hold-out sets scored per audit (0 = all)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.stopping not in STOPPING_RULES:
            raise ValueError(f"`stopping` must be one of {STOPPING_RULES}, got {self.stopping!r}.")
        if self.audit_steps < 1:
            raise ValueError(f"`audit_steps` must be >= 1, got {self.audit_steps}: the steps between two audits.")
        if self.audit_samples < 0:
            raise ValueError(f"`audit_samples` must be >= 0 (0 = every row), got {self.audit_samples}.")
        if self.retain_per_forget < 1:
            raise ValueError(
                f"`retain_per_forget` must be >= 1, got {self.retain_per_forget}. Each forgotten sample is paired "
                "with this many retained samples (the reference code uses 1)."
            )
        if self.kl_scope not in KL_SCOPES:
            raise ValueError(f"`kl_scope` must be one of {KL_SCOPES}, got {self.kl_scope!r}.")
        if self.teacher_batch_size < 1:
            raise ValueError(f"`teacher_batch_size` must be >= 1, got {self.teacher_batch_size}.")
        if self.remove_unused_columns:
            raise ValueError(
                "`remove_unused_columns=True` would drop the `prompt`/`completion`/`label` columns the unlearning "
                "collator needs. Leave it at False."
            )
