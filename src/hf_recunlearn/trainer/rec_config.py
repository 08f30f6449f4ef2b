"""Configuration of the recommender fine-tuning recipe (TALLRec)."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments


@dataclass
class RecConfig(TrainingArguments):
    r"""
    Configuration for [`RecTrainer`], the TALLRec recipe: LoRA fine-tuning of an LLM to answer "Yes"/"No" to
    "will this user like item X?", with the loss on the answer only.

    Only the parameters specific to the recipe are listed; see [`~transformers.TrainingArguments`] for the rest. Some
    defaults differ from `TrainingArguments`: `learning_rate` (TALLRec's 1e-4), `remove_unused_columns=False` (the
    collator needs the raw `prompt`/`completion`/`label` columns), `report_to="none"`, `logging_steps=10`,
    `save_strategy="no"`.

    Parameters:
        use_lora (`bool`, *optional*, defaults to `True`):
            Train a LoRA adapter on the frozen model (TALLRec). `False` fine-tunes every weight, which the built-in demo
            uses to turn a random tiny model into a stand-in for a pretrained LLM.
        lora_r (`int`, *optional*, defaults to `8`):
            LoRA rank (TALLRec and APA use 8).
        lora_alpha (`int`, *optional*, defaults to `16`):
            LoRA scaling numerator (TALLRec: 16).
        lora_dropout (`float`, *optional*, defaults to `0.05`):
            Dropout on the LoRA path (TALLRec: 0.05).
        lora_target_modules (`list[str]`, *optional*):
            Modules that get LoRA. Defaults to the attention query and value projections (`q_proj`, `v_proj` for
            llama-style models, `q`, `v` for T5), as in TALLRec and E2URec.
        max_prompt_length (`int`, *optional*, defaults to `512`):
            Prompts longer than this keep their end (the target item and the question).
    """

    learning_rate: float = field(default=1e-4, metadata={"help": "Initial learning rate (TALLRec: 1e-4)."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep dataset columns; the collator needs prompt, completion and label."}
    )
    report_to: str | list[str] = field(default="none", metadata={"help": "Integrations to report to."})
    logging_steps: float = field(default=10, metadata={"help": "Log every X update steps."})
    save_strategy: str = field(default="no", metadata={"help": "Checkpoint saving strategy."})

    use_lora: bool = field(default=True, metadata={"help": "Train a LoRA adapter (True) or every weight (False)."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Modules to adapt; default: attention query and value projections."}
    )
    max_prompt_length: int = field(default=512, metadata={"help": "Maximum prompt length in tokens (keeps the end)."})

    def __post_init__(self):
        super().__post_init__()
        if self.lora_r < 1:
            raise ValueError(f"`lora_r` must be >= 1, got {self.lora_r}. TALLRec uses 8.")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"`lora_dropout` must be in [0, 1), got {self.lora_dropout}.")
        if self.max_prompt_length < 8:
            raise ValueError(f"`max_prompt_length` must be >= 8 tokens, got {self.max_prompt_length}.")
