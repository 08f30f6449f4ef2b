"""Configuration of the recommender fine-tuning recipe (TALLRec)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from transformers import TrainingArguments


# transformers 5.2x renamed `gradient_checkpointing` to `activation_checkpointing` (the old name is a deprecated alias
# that both reads back the same value); code that builds arguments uses whichever this version has.
CHECKPOINTING_FIELD = (
    "activation_checkpointing"
    if "activation_checkpointing" in {f.name for f in fields(TrainingArguments)}
    else "gradient_checkpointing"
)


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
        load_in_4bit (`bool`, *optional*, defaults to `False`):
            When `model` is an id or path, load it with 4-bit NF4 weights (QLoRA; bitsandbytes, `pip install
            hf_recunlearn[kbit]`). The 4-bit matmuls compute in bfloat16 with `bf16=True`, else float32. Only LoRA
            adapters train on a quantized model.
        load_in_8bit (`bool`, *optional*, defaults to `False`):
            Same with LLM.int8() 8-bit weights.
        bnb_4bit_quant_type (`str`, *optional*, defaults to `"nf4"`):
            4-bit data type: `"nf4"` (QLoRA) or `"fp4"`.
        torch_dtype (`str`, *optional*):
            dtype to load the model's weights in when `model` is an id or path: `"auto"` (as stored), `"bfloat16"`,
            `"float16"` or `"float32"`. Defaults to `"bfloat16"` when `bf16=True` and `use_lora=True` (the frozen
            base in bf16, the adapters in float32), else `"auto"`.

    `gradient_checkpointing=True` (from `TrainingArguments`) works with LoRA: the inputs of the checkpointed blocks
    are made to require grad, so the adapters inside them get gradients (see
    [`~hf_recunlearn.models.prepare_model_for_training`]).
    """

    learning_rate: float = field(default=1e-4, metadata={"help": "Initial learning rate (TALLRec: 1e-4)."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep dataset columns; the collator needs prompt, completion and label."}
    )
    report_to: None | str | list[str] = field(default="none", metadata={"help": "Integrations to report to."})
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
    load_in_4bit: bool = field(
        default=False, metadata={"help": "Load the model with 4-bit NF4 weights (QLoRA; needs hf_recunlearn[kbit])."}
    )
    load_in_8bit: bool = field(
        default=False, metadata={"help": "Load the model with 8-bit LLM.int8() weights (needs hf_recunlearn[kbit])."}
    )
    bnb_4bit_quant_type: str = field(
        default="nf4", metadata={"help": "4-bit data type: nf4 (QLoRA) or fp4.", "choices": ["nf4", "fp4"]}
    )
    torch_dtype: str | None = field(
        default=None,
        metadata={"help": "dtype of the loaded weights: auto | bfloat16 | float16 | float32 (default: bfloat16 with "
                  "--bf16 and LoRA, else auto)."},
    )  # fmt: skip

    def __post_init__(self):
        super().__post_init__()
        if self.lora_r < 1:
            raise ValueError(f"`lora_r` must be >= 1, got {self.lora_r}. TALLRec uses 8.")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"`lora_dropout` must be in [0, 1), got {self.lora_dropout}.")
        if self.max_prompt_length < 8:
            raise ValueError(f"`max_prompt_length` must be >= 8 tokens, got {self.max_prompt_length}.")
        if self.load_in_4bit and self.load_in_8bit:
            raise ValueError("`load_in_4bit` and `load_in_8bit` are both True; choose one quantization.")
        if self.quantized and not self.use_lora:
            flag = "load_in_4bit" if self.load_in_4bit else "load_in_8bit"
            raise ValueError(
                f"`{flag}=True` with `use_lora=False`: quantized weights cannot be trained. Set `use_lora=True` "
                f"(QLoRA) or drop `{flag}`."
            )
        if self.quantized:
            from ..models import require_bitsandbytes

            require_bitsandbytes("load_in_4bit" if self.load_in_4bit else "load_in_8bit")
        if self.bnb_4bit_quant_type not in ("nf4", "fp4"):
            raise ValueError(f"`bnb_4bit_quant_type` must be 'nf4' or 'fp4', got {self.bnb_4bit_quant_type!r}.")
        if self.torch_dtype is not None:
            from ..models import resolve_dtype

            resolve_dtype(self.torch_dtype)  # a clear error for a misspelt dtype, now rather than at load time

    @property
    def quantized(self) -> bool:
        """Whether the model is to be loaded in 4-bit or 8-bit."""
        return bool(self.load_in_4bit or self.load_in_8bit)

    def model_load_kwargs(self) -> dict:
        """Keyword arguments of [`~hf_recunlearn.models.load_model`] for this recipe (dtype and quantization)."""
        from ..models import make_quantization_config

        dtype = self.torch_dtype
        if dtype is None:
            dtype = "bfloat16" if self.bf16 and self.use_lora else "float16" if self.fp16 and self.use_lora else "auto"
        compute = "bfloat16" if self.bf16 else "float16" if self.fp16 else "float32"
        quantization = make_quantization_config(
            self.load_in_4bit, self.load_in_8bit, compute_dtype=compute, quant_type=self.bnb_4bit_quant_type
        )
        return {"torch_dtype": dtype, "quantization_config": quantization}

    def check_loaded_model(self, model) -> None:
        """Refuse quantization flags the loaded `model` does not have (they only apply when loading by id/path)."""
        from ..models import is_quantized

        if self.quantized and not is_quantized(model):
            flag = "load_in_4bit" if self.load_in_4bit else "load_in_8bit"
            raise ValueError(
                f"`{flag}=True`, but the model passed is already loaded without quantization. Pass the model id or "
                f"path so that it is loaded quantized, or load it with `load_model(..., {flag}=True)`."
            )
