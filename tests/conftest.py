"""
Shared test setup.

Hub tests run the real `huggingface_hub` client against `hf_recunlearn.testing.HubServer` on 127.0.0.1. The client
reads `HF_ENDPOINT`, `HF_HOME`, `HF_TOKEN` and `HF_HUB_DISABLE_XET` when it is imported, so they are set here, at
conftest import, before any test module imports it; the server starts lazily on the chosen port.
"""

import pytest

from hf_recunlearn.testing import HubServer, prepare_hub_environment


HUB_ENV = prepare_hub_environment()


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
def space_cache(tmp_path_factory):
    """A Space cache holding the tiny built-in demo, built once per session (each app still starts from a pristine copy)."""
    from hf_recunlearn.space import DemoRecommender, SpaceSettings

    cache = tmp_path_factory.mktemp("space-cache")
    DemoRecommender.load(SpaceSettings(cache_dir=str(cache), size="tiny"))
    return cache
