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
