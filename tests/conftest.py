"""
Shared test setup.

Hub tests run the real `huggingface_hub` client against `HubServer` (tests/hub_server.py) on 127.0.0.1. The client
reads `HF_ENDPOINT`, `HF_HOME`, `HF_TOKEN` and `HF_HUB_DISABLE_XET` when it is imported, so they are set here, at
conftest import, before any test module imports it; the server starts lazily on the chosen port.

Everything else is offline, tiny and seeded.
"""

import gc
import os
import sys
from pathlib import Path

import pytest

from hub_server import HubServer, prepare_hub_environment


HUB_ENV = prepare_hub_environment()

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the `hub_server` fixture turns it off for the tests that use it
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import transformers  # noqa: E402, F401

import hf_recunlearn.trainer  # noqa: E402, F401


# The Space's own modules (`spaces/forgetting_demo.py`) import as they do in the Space, where its folder is the root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "spaces"))


# Tiny models gain nothing from intra-op threads, and on a shared CPU OpenMP threads that wait for each other made a
# 0.2 s training test take 10 s. One thread keeps the suite fast however busy the machine is.
torch.set_num_threads(1)

# Every `Trainer.train()` runs `gc.collect()` (accelerate's `free_memory`); with torch and transformers loaded that
# walks hundreds of thousands of long-lived objects each time (about 0.45 s here). Freezing them keeps a tiny
# training run tiny.
gc.freeze()


@pytest.fixture(autouse=True)
def _run_in_tmp_path(tmp_path, monkeypatch):
    """
    Every test runs in its own temporary directory, so that a relative path (the default `output_dir` of a trainer
    built without `args`, such as `e2urec-unlearned/`) lands there and never in the checkout.
    """
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def hub_server_session():
    """The session's `HubServer` at `HF_ENDPOINT`, accepting only `HUB_ENV.token` (the client's default `HF_TOKEN`)."""
    with HubServer(port=HUB_ENV.port, tokens=[HUB_ENV.token]) as server:
        yield server


@pytest.fixture
def hub_server(hub_server_session, monkeypatch):
    """
    The session's `HubServer`, with `huggingface_hub` allowed online for this test even when `HF_HUB_OFFLINE` is set
    for the rest of the suite. Faults a test armed are disarmed after it.
    """
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    yield hub_server_session
    hub_server_session.clear_faults()


import os  # noqa: E402


# Nothing in the suite may reach the real Hub; Hub tests opt back in through the `hub_server` fixture.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def synthetic_splits():
    """Small synthetic train/valid/test splits (E2URec preset, short histories)."""
    from hf_recunlearn.data import build_datasets, make_synthetic

    return build_datasets(make_synthetic(num_users=60, num_items=60, seed=0), history_len=3)


@pytest.fixture(scope="session")
def tiny_tokenizer(synthetic_splits, tmp_path_factory):
    from hf_recunlearn.models import build_tokenizer

    texts = [p for name in synthetic_splits for p in synthetic_splits[name]["prompt"]]
    return build_tokenizer(texts, save_dir=tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def tiny_data():
    """A small synthetic data set with niche users, its forget split (two niche users) and a word-level tokenizer."""
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


@pytest.fixture(scope="session")
def space_cache(tmp_path_factory):
    """A Space cache with the tiny built-in demo, built once per session (each app starts from its pristine copy)."""
    from forgetting_demo import DemoRecommender, SpaceSettings

    cache = tmp_path_factory.mktemp("space-cache")
    DemoRecommender.load(SpaceSettings(cache_dir=str(cache), size="tiny"))
    return cache
