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
    import re

    if not name or os.path.isabs(name) or name.startswith((".", "~")) or os.path.exists(name):
        return False
    return re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) is not None and ".." not in name


def is_seq2seq(model) -> bool:
    """Whether `model` (possibly PEFT-wrapped) is an encoder–decoder model."""
    config = getattr(model, "config", None)
    return bool(getattr(config, "is_encoder_decoder", False))


def load_model(
    name_or_path: str | os.PathLike, torch_dtype: str | torch.dtype | None = "auto", **kwargs
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """
    Load a causal LM or seq2seq model and its tokenizer by Hub id or local path.

    A directory holding a PEFT adapter (`adapter_config.json`) loads its base model and applies the adapter. Missing
    pad tokens are set to EOS, and causal models pad on the left so the answer position is the last one.
    """
    path = Path(name_or_path)
    adapter_config = path / "adapter_config.json"
    if adapter_config.is_file():
        from peft import PeftConfig, PeftModel

        peft_config = PeftConfig.from_pretrained(path)
        base, tokenizer = load_model(peft_config.base_model_name_or_path, torch_dtype=torch_dtype, **kwargs)
        if (path / "tokenizer_config.json").is_file():
            tokenizer = _prepare_tokenizer(AutoTokenizer.from_pretrained(path), base)
        return PeftModel.from_pretrained(base, path), tokenizer
    if str(name_or_path).startswith(("/", "./", "../", "~")) and not path.expanduser().exists():
        raise FileNotFoundError(f"`model` path {str(name_or_path)!r} does not exist. Pass a Hub model id or a directory.")
    config = AutoConfig.from_pretrained(name_or_path, **kwargs)
    auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    model = auto.from_pretrained(name_or_path, dtype=torch_dtype, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    return model, _prepare_tokenizer(tokenizer, model)


def _prepare_tokenizer(tokenizer: PreTrainedTokenizerBase, model) -> PreTrainedTokenizerBase:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not is_seq2seq(model):
        tokenizer.padding_side = "left"
    return tokenizer


def count_trainable_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
