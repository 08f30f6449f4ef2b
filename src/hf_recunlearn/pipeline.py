"""The steps the CLI, the demo, the Space and the benchmark share: prepare data and a base model, train a recommender.

The built-in default base model is a tiny llama-style model with a word-level tokenizer built from the data. A random
tiny model knows nothing of movies, and LoRA on a random model learns next to nothing, so the built-in base is first
fully trained on the samples of a held-out group of users (`pretrain_user_fraction`): it stands in for a pretrained
LLM that has seen other people's ratings, but never the users the recommender is trained on, or asked to forget.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict

from .data import RecData, build_datasets, build_samples, load_data, parse_data_spec
from .data.instructions import split_preset
from .metrics import utility_metrics
from .models import build_tiny_model, build_tokenizer, load_model
from .scoring import score
from .trainer import RecConfig, RecTrainer


logger = logging.getLogger(__name__)

BUILTIN = "builtin"

# The recommender recipe for the built-in stand-in base, which `hf-recunlearn train` uses in place of the config's
# defaults when no `--model` is given: a tiny model fine-tuned from a small pretraining needs a larger learning rate
# than TALLRec's 1e-4 for a real LLM, and a cosine schedule with a short warm-up (measured on the synthetic data).
BUILTIN_RECIPE = {
    "learning_rate": 2e-3,
    "per_device_train_batch_size": 16,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 20,
    "logging_steps": 50,
}


@dataclass
class PreparedData:
    """Splits for the recommender, the stand-in pretraining corpus (built-in base only) and the loaded interactions."""

    datasets: DatasetDict
    pretrain: Dataset | None
    data: RecData | None


def prepare_data(
    spec: str | RecData = "synthetic",
    preset: str = "e2urec",
    template: str = "e2urec",
    history_len: int = 10,
    num_samples: int | None = None,
    pretrain_user_fraction: float = 0.0,
    seed: int = 0,
    **synthetic_kwargs,
) -> PreparedData:
    """
    Load a data spec and build the train/valid/test splits.

    With `pretrain_user_fraction > 0`, that share of the (non-niche) users is held out of the recommender's data and
    their samples returned as `pretrain`, the corpus of the built-in stand-in base model.
    """
    if isinstance(spec, str) and parse_data_spec(spec)[0] == "tallrec":
        datasets = build_datasets(spec, template=template, preset=preset, num_samples=num_samples, seed=seed)
        return PreparedData(datasets, None, None)
    data = spec if isinstance(spec, RecData) else load_data(spec, **synthetic_kwargs)
    pretrain = None
    if pretrain_user_fraction > 0:
        data, held_out = split_users(data, pretrain_user_fraction, seed)
        pretrain = build_samples(held_out, template=template, history_len=history_len)
    samples = build_samples(data, template=template, history_len=history_len)
    datasets = split_preset(samples, preset, num_samples=num_samples, seed=seed)
    return PreparedData(datasets, pretrain, data)


def niche_users(prepared: PreparedData) -> list[str]:
    """
    The training users of the synthetic data's `"niche"` group, sorted: users whose favourite items nobody else rates,
    so a recommender can only know those items from their data (the requests the demo and the benchmark forget).
    Empty for data without user groups.
    """
    groups = prepared.data.user_groups if prepared.data is not None else {}
    return sorted({u for u in prepared.datasets["train"]["user_id"] if groups.get(u) == "niche"})


def split_users(data: RecData, fraction: float, seed: int = 0) -> tuple[RecData, RecData]:
    """Hold out a seeded `fraction` of the users (never a `"niche"` one): returns `(kept, held_out)`."""
    if not 0 < fraction < 1:
        raise ValueError(f"`pretrain_user_fraction` must be in (0, 1), got {fraction}.")
    users = sorted(data.interactions["user_id"].unique(), key=lambda u: (len(u), u))
    eligible = [u for u in users if data.user_groups.get(u, "regular") != "niche"]
    rng = np.random.default_rng(seed + 1)
    held = set(rng.choice(eligible, size=int(round(fraction * len(users))), replace=False).tolist())
    inter = data.interactions
    mask = inter["user_id"].isin(held)

    def subset(rows, users_kept):
        groups = {u: g for u, g in data.user_groups.items() if u in users_kept}
        return RecData(data.name, rows, data.items, data.like_threshold, data.item_kind, groups)

    return subset(inter[~mask], set(users) - held), subset(inter[mask], held)


def build_builtin_base(
    prepared: PreparedData,
    output_dir: str | Path,
    arch: str = "causal",
    size: str = "small",
    epochs: float = 3.0,
    learning_rate: float = 3e-3,
    batch_size: int = 16,
    seed: int = 0,
    **overrides,
):
    """
    Build the tokenizer and the tiny stand-in base model, fully train it on `prepared.pretrain`, save both to
    `output_dir` (reloadable with `from_pretrained`) and return `(model, tokenizer)`. `overrides` are [`RecConfig`]
    fields that replace the recipe's (`num_train_epochs=2` is `epochs=2`).
    """
    splits = prepared.datasets
    texts = [t for name in splits for t in splits[name]["prompt"]]
    corpus = prepared.pretrain if prepared.pretrain is not None else splits["train"]
    texts += list(corpus["prompt"])
    tokenizer = build_tokenizer(texts)
    model = build_tiny_model(tokenizer, arch=arch, size=size, seed=seed)
    recipe = {
        "output_dir": str(output_dir),
        "use_lora": False,
        "learning_rate": learning_rate,
        "num_train_epochs": epochs,
        "per_device_train_batch_size": batch_size,
        "warmup_steps": 50,
        "lr_scheduler_type": "cosine",
        "weight_decay": 0.01,
        "seed": seed,
        "logging_steps": 50,
        "use_cpu": not _has_accelerator(),
    }
    args = RecConfig(**(recipe | overrides))
    trainer = RecTrainer(model, args, train_dataset=corpus, processing_class=tokenizer)
    trainer.train()
    model = trainer.model
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return model, tokenizer


def train_recommender(
    base: str | Path,
    train_dataset: Dataset,
    eval_dataset: Dataset | None,
    output_dir: str | Path,
    config: RecConfig | None = None,
    **config_overrides,
):
    """
    Train the TALLRec recipe on `base` (path or id) and save the result (a PEFT adapter, or a full model when
    `use_lora=False`) to `output_dir`. Returns `(trainer, metrics)` with test metrics and `train_seconds`.
    """
    args = config or RecConfig(output_dir=str(output_dir), use_cpu=not _has_accelerator(), **config_overrides)
    model, tokenizer = load_model(str(base), **args.model_load_kwargs())
    trainer = RecTrainer(model, args, train_dataset=train_dataset, eval_dataset=eval_dataset, processing_class=tokenizer)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    trainer.save_model(str(output_dir))
    metrics = {"train_seconds": seconds}
    if eval_dataset is not None:
        probs = score(trainer.model, tokenizer, eval_dataset, batch_size=args.per_device_eval_batch_size * 8)
        metrics.update(utility_metrics(eval_dataset["label"], probs))
    return trainer, metrics


def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch.backends, "mps") and torch.backends.mps.is_available())
