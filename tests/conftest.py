"""Offline, tiny, seeded: shared fixtures for the trainer tests."""

import os


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import gc  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402, F401
import transformers  # noqa: E402, F401
from hf_recunlearn.trainer import E2URecTrainer  # noqa: E402, F401


# Every `Trainer.train()` runs `gc.collect()` (accelerate's `free_memory`); with torch and transformers loaded that
# walks hundreds of thousands of long-lived objects each time. Freezing them keeps a tiny training run tiny.
gc.freeze()


@pytest.fixture(scope="session")
def tiny_data():
    """A small synthetic data set with niche users, its forget split (the niche users) and a word-level tokenizer."""
    from hf_recunlearn.data import build_datasets, make_forget_split, make_synthetic
    from hf_recunlearn.models import build_tokenizer

    data = make_synthetic(num_users=24, num_items=40, interactions_per_user=14, niche_user_fraction=0.2, seed=0)
    splits = build_datasets(data, preset="apa", history_len=3, sizes=(64, 8, 24), seed=0)
    train = splits["train"]
    niche = sorted({u for u in train["user_id"] if data.user_groups[u] == "niche"})
    split = make_forget_split(train, user_ids=niche[:2])
    tokenizer = build_tokenizer(
        list(train["prompt"]) + list(splits["test"]["prompt"]) + list(splits["valid"]["prompt"])
    )
    return {"train": train, "test": splits["test"], "split": split, "tokenizer": tokenizer}
