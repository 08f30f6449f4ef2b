"""Tiny, deterministic data and models shared by the APA tests (offline, seconds to train)."""

from __future__ import annotations

import contextlib

import torch

from hf_recunlearn.data import build_datasets, make_synthetic
from hf_recunlearn.models import build_tiny_model, build_tokenizer
from hf_recunlearn.trainer import APAConfig


def user_tag(raw: str) -> str:
    """A user id that cannot occur by chance in a file, so a leak of it is detectable by a byte search."""
    return f"person-{raw}-qzx"


def tiny_datasets(num_users: int = 24, sizes=(72, 36, 36), seed: int = 0):
    data = make_synthetic(num_users=num_users, num_items=40, interactions_per_user=8, seed=seed)
    ds = build_datasets(data, preset="apa", sizes=sizes, history_len=3)
    return ds.map(lambda row: {"user_id": user_tag(row["user_id"])})


def tiny_tokenizer(ds):
    texts = [p for split in ds.values() for p in split["prompt"]]
    return build_tokenizer(texts + list(ds["train"]["completion"]))


def tiny_base(tokenizer, arch: str = "causal", size: str = "tiny"):
    return build_tiny_model(tokenizer, arch, size, seed=0)


def apa_args(output_dir, salt_dir, **overrides) -> APAConfig:
    settings = dict(
        output_dir=str(output_dir),
        num_shards=3,
        num_train_epochs=1,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=32,
        use_cpu=True,
        logging_steps=1000,
        disable_tqdm=True,
        salt_dir=str(salt_dir),
        num_neighbors=5,
    )
    settings.update(overrides)
    return APAConfig(**settings)


@contextlib.contextmanager
def single_thread():
    """Tiny models run faster on one thread, and bit-for-bit comparisons need a fixed thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
