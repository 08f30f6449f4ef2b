"""Loading recommender backbones, and tiny offline models with a tokenizer built from the data."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)


SPECIAL_TOKENS = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}

# Sizes of the offline stand-ins for a pretrained LLM. "tiny" exercises the mechanics in seconds but learns little;
# "small" learns the synthetic data's structure on 2 CPU cores in about a minute.
TINY_SIZES = {
    "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "ffn": 64},
    "small": {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "ffn": 128},
    "base": {"hidden_size": 128, "num_layers": 2, "num_heads": 4, "ffn": 256},
}


def build_tokenizer(texts: Iterable[str], save_dir: str | os.PathLike | None = None) -> PreTrainedTokenizerFast:
    """
    A word-level tokenizer over `texts` (prompts and completions), for offline tiny models.

    Words and punctuation become tokens, so "Yes" and "No" are single tokens. The result is a regular
    `PreTrainedTokenizerFast`; with `save_dir` it is saved there and reloadable with `AutoTokenizer.from_pretrained`.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS.values()), min_frequency=1)
    tok.train_from_iterator(list(texts) + ["Yes No Yes. No."], trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, padding_side="left", **SPECIAL_TOKENS)
    if save_dir is not None:
        tokenizer.save_pretrained(save_dir)
    return tokenizer


def build_tiny_model(
    tokenizer: PreTrainedTokenizerBase, arch: str = "causal", size: str = "small", seed: int = 0
) -> PreTrainedModel:
    """
    A randomly initialised llama-style causal LM (`arch="causal"`) or t5-style seq2seq model (`arch="seq2seq"`).

    The vocabulary and special tokens come from `tokenizer`; `size` is one of `TINY_SIZES`. Initialisation is seeded,
    so the same call returns the same weights.
    """
    if size not in TINY_SIZES:
        raise ValueError(f"`size` must be one of {sorted(TINY_SIZES)}, got {size!r}.")
    s = TINY_SIZES[size]
    vocab = len(tokenizer)
    ids = {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}
    torch.manual_seed(seed)
    if arch == "causal":
        config = LlamaConfig(
            vocab_size=vocab,
            hidden_size=s["hidden_size"],
            intermediate_size=s["ffn"],
            num_hidden_layers=s["num_layers"],
            num_attention_heads=s["num_heads"],
            num_key_value_heads=s["num_heads"],
            max_position_embeddings=1024,
            bos_token_id=tokenizer.bos_token_id,
            tie_word_embeddings=True,
            **ids,
        )
        return LlamaForCausalLM(config)
    if arch == "seq2seq":
        config = T5Config(
            vocab_size=vocab,
            d_model=s["hidden_size"],
            d_kv=s["hidden_size"] // s["num_heads"],
            d_ff=s["ffn"],
            num_layers=s["num_layers"],
            num_decoder_layers=s["num_layers"],
            num_heads=s["num_heads"],
            decoder_start_token_id=tokenizer.pad_token_id,
            **ids,
        )
        return T5ForConditionalGeneration(config)
    raise ValueError(f"`arch` must be 'causal' or 'seq2seq', got {arch!r}.")


def is_hub_model_id(name: str | None) -> bool:
    """Whether `name` is a Hub model id (not a local path), so that it may be published in a card or metadata."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not name or os.path.isabs(name) or name.startswith((".", "~")) or os.path.exists(name):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def is_seq2seq(model) -> bool:
    """Whether `model` (possibly PEFT-wrapped) is an encoder–decoder model."""
    config = getattr(model, "config", None)
    return bool(getattr(config, "is_encoder_decoder", False))


KBIT_EXTRA = "hf_recunlearn[kbit]"
# `load_model` keyword arguments that also apply to the config and the tokenizer (the rest go to the model only).
_HUB_KWARGS = ("revision", "token", "cache_dir", "trust_remote_code", "local_files_only")


def require_bitsandbytes(argument: str) -> None:
    """Raise an `ImportError` naming `argument` and the `kbit` extra when bitsandbytes is not installed."""
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise ImportError(
            f"`{argument}` quantizes the base model with bitsandbytes, which is not installed. Install the optional "
            f"extra with `pip install {KBIT_EXTRA}` (or `pip install bitsandbytes`), or drop `{argument}`."
        )


def resolve_dtype(torch_dtype: str | torch.dtype | None) -> str | torch.dtype | None:
    """`"bfloat16"`/`"bf16"`/`torch.bfloat16`... as a `torch.dtype`; `"auto"` and `None` unchanged."""
    if torch_dtype is None or isinstance(torch_dtype, torch.dtype) or torch_dtype == "auto":
        return torch_dtype
    aliases = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}
    name = aliases.get(str(torch_dtype), str(torch_dtype)).removeprefix("torch.")
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(
            f"`torch_dtype` must be 'auto', 'float32', 'bfloat16' or 'float16' (or a torch dtype), got {torch_dtype!r}."
        )
    return dtype


def make_quantization_config(
    load_in_4bit: bool = False,
    load_in_8bit: bool = False,
    compute_dtype: str | torch.dtype | None = None,
    quant_type: str = "nf4",
    double_quant: bool = True,
):
    """
    A `BitsAndBytesConfig` for QLoRA (`load_in_4bit`: NF4 weights, double quantization, matmuls in
    `compute_dtype`) or LLM.int8() (`load_in_8bit`); `None` when neither is set.

    `compute_dtype` defaults to float32, the dtype bitsandbytes' CPU kernels run in; pass `torch.bfloat16` on a GPU.
    Raises an `ImportError` naming the `kbit` extra when bitsandbytes is missing.
    """
    if load_in_4bit and load_in_8bit:
        raise ValueError("`load_in_4bit` and `load_in_8bit` are both set; choose one quantization.")
    if not (load_in_4bit or load_in_8bit):
        return None
    require_bitsandbytes("load_in_4bit" if load_in_4bit else "load_in_8bit")
    from transformers import BitsAndBytesConfig

    if load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    if quant_type not in ("nf4", "fp4"):
        raise ValueError(f"`bnb_4bit_quant_type` must be 'nf4' or 'fp4', got {quant_type!r}.")
    compute = resolve_dtype(compute_dtype) if compute_dtype not in (None, "auto") else torch.float32
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=compute,
    )


def kbit_device_map() -> dict[str, int | str]:
    """Where a quantized model is loaded: this process's GPU under a launch (as trl's `get_kbit_device_map`), else CPU."""
    if torch.cuda.is_available():
        from accelerate import PartialState

        return {"": PartialState().local_process_index}
    return {"": "cpu"}


def load_model(
    name_or_path: str | os.PathLike,
    torch_dtype: str | torch.dtype | None = "auto",
    *,
    load_in_4bit: bool = False,
    load_in_8bit: bool = False,
    quantization_config=None,
    **kwargs,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """
    Load a causal LM or seq2seq model and its tokenizer by Hub id or local path.

    A directory holding a PEFT adapter (`adapter_config.json`) loads its base model and applies the adapter. Missing
    pad tokens are set to EOS, and causal models pad on the left so the answer position is the last one.

    Args:
        torch_dtype: dtype of the weights (`"auto"`: as stored; `"bfloat16"`, `"float32"`, ...). With 4-bit
            quantization it is the dtype of the layers that stay unquantized and of the 4-bit matmuls.
        load_in_4bit / load_in_8bit: quantize the linear layers with bitsandbytes (QLoRA's NF4, or LLM.int8());
            needs `pip install hf_recunlearn[kbit]`. The model is placed on this process's GPU, or the CPU.
        quantization_config (*optional*): a ready `BitsAndBytesConfig` instead of the two flags.
        kwargs: passed to `from_pretrained` (`revision`, `device_map`, `attn_implementation`, ...).
    """
    torch_dtype = resolve_dtype(torch_dtype)
    if quantization_config is None:
        compute = torch_dtype if isinstance(torch_dtype, torch.dtype) else None
        quantization_config = make_quantization_config(load_in_4bit, load_in_8bit, compute_dtype=compute)
    elif load_in_4bit or load_in_8bit:
        raise ValueError("Pass either `quantization_config` or `load_in_4bit`/`load_in_8bit`, not both.")
    path = Path(name_or_path)
    if str(name_or_path).startswith(("/", "./", "../", "~")) and not path.expanduser().exists():
        raise FileNotFoundError(f"`model` path {str(name_or_path)!r} does not exist. Pass a Hub model id or a directory.")
    config_kwargs = {k: v for k, v in kwargs.items() if k in _HUB_KWARGS}
    base_path = name_or_path
    adapter = (path / "adapter_config.json").is_file()
    if adapter:
        from peft import PeftConfig

        base_path = PeftConfig.from_pretrained(path).base_model_name_or_path
    config = AutoConfig.from_pretrained(base_path, **config_kwargs)
    seq2seq = getattr(config, "is_encoder_decoder", False)
    if adapter:  # the base named in the adapter's config, then the adapter (PEFT's `AutoPeftModelFor...`)
        from peft import AutoPeftModelForCausalLM, AutoPeftModelForSeq2SeqLM

        auto = AutoPeftModelForSeq2SeqLM if seq2seq else AutoPeftModelForCausalLM
    else:
        auto = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
        kwargs.setdefault("device_map", kbit_device_map())
        if torch_dtype == "auto" and getattr(quantization_config, "load_in_4bit", False):
            # The unquantized layers (embeddings, norms, head) follow the 4-bit matmuls' compute dtype.
            torch_dtype = quantization_config.bnb_4bit_compute_dtype
    model = auto.from_pretrained(name_or_path, dtype=torch_dtype, **kwargs)
    has_tokenizer = not adapter or (path / "tokenizer_config.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(name_or_path if has_tokenizer else base_path, **config_kwargs)
    return model, _prepare_tokenizer(tokenizer, model)


def is_quantized(model) -> bool:
    """Whether `model` (possibly PEFT-wrapped) holds bitsandbytes 4-bit or 8-bit layers."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base, "is_loaded_in_4bit", False) or getattr(base, "is_loaded_in_8bit", False):
        return True
    if getattr(base, "hf_quantizer", None) is not None:
        return True
    return any(type(m).__name__ in ("Linear4bit", "Linear8bitLt") for m in base.modules())


def prepare_model_for_training(
    model,
    *,
    use_lora: bool = True,
    gradient_checkpointing: bool = False,
):
    """
    Get a base model ready for adapters to train on it, before `get_peft_model`: the QLoRA recipe for a quantized
    model, and inputs that require grad wherever gradient checkpointing runs over a frozen base.

    - Quantized (4-bit / 8-bit): peft's `prepare_model_for_kbit_training` (freezes the base and upcasts the layers
      that stay unquantized to float32 for stable training). Done once per model; only LoRA can train on it.
    - Gradient checkpointing with a frozen base (`use_lora`): a reentrant checkpoint (`use_reentrant=True`, the
      default of older transformers and of peft's QLoRA recipe) only backpropagates into a segment whose inputs
      require grad, and a frozen embedding's output does not, so the LoRA weights inside would get no gradient.
      `enable_input_require_grads()` fixes that. `Trainer` itself switches checkpointing on (transformers 5.2x
      also makes the inputs require grad when it does; older versions and checkpointing switched on by hand rely on
      this step).

    A model that already holds LoRA layers (a `PeftModel`'s base) only gets the second step: the QLoRA preparation
    freezes every parameter, the adapters' too.

    Returns the same model object.
    """
    has_adapters = any(".lora_" in name for name, _ in model.named_parameters())
    if is_quantized(model):
        keep_4bit_layers_differentiable(model)
        if not use_lora:
            raise ValueError(
                "`use_lora=False` trains every weight, but the model is quantized (4-bit/8-bit) and its weights cannot "
                "be trained. Set `use_lora=True` (QLoRA), or load the model without `load_in_4bit`/`load_in_8bit`."
            )
        if not has_adapters and not getattr(model, "_hf_recunlearn_kbit_prepared", False):
            from peft import prepare_model_for_kbit_training

            # Checkpointing itself is switched on by `Trainer` (`gradient_checkpointing=True`); here only the freezing
            # and the float32 upcast, and the input grads below.
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
            model._hf_recunlearn_kbit_prepared = True
    wants_input_grads = gradient_checkpointing and use_lora and hasattr(model, "enable_input_require_grads")
    if wants_input_grads and getattr(model, "_require_grads_hook", None) is None:
        model.enable_input_require_grads()
    return model


def keep_4bit_layers_differentiable(model) -> None:
    """
    Keep bitsandbytes' `Linear4bit` layers on the CPU in the layout its autograd path reads.

    bitsandbytes 0.50 repacks a 4-bit weight for its AVX512-BF16 CPU kernel on the first forward pass in eval mode
    without grad (a teacher pass, a validation score) and keeps that layout afterwards; the kernel has no backward,
    so later training steps silently send no gradient through the base layers (only the last layers' adapters, or
    none, train). The repacking is switched off here and undone where it already happened. No effect on GPUs.
    """
    inverse = None
    for module in model.modules():
        if type(module).__name__ != "Linear4bit":
            continue
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
        weight = module.weight
        state = getattr(weight, "quant_state", None)
        if state is not None and getattr(state, "packing_format_for_cpu", False):
            if inverse is None:
                from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse as inverse
            weight.data, weight.quant_state = inverse(weight.data, state)
            if getattr(module, "quant_state", None) is not None:
                module.quant_state = weight.quant_state


def _prepare_tokenizer(tokenizer: PreTrainedTokenizerBase, model) -> PreTrainedTokenizerBase:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not is_seq2seq(model):
        tokenizer.padding_side = "left"
    return tokenizer


def count_trainable_parameters(model: torch.nn.Module) -> int:
    """Trainable parameters: PEFT's count for a PEFT model (`get_nb_trainable_parameters`), else those with a grad."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()[0]
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
