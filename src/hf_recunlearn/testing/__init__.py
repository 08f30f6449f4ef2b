"""
Utilities for testing code that talks to the Hugging Face Hub, without a network.

[`HubServer`] is a small Hub-compatible HTTP server that the real `huggingface_hub` client works against;
[`prepare_hub_environment`] points the client at it (call it before `huggingface_hub` is imported). A `conftest.py`
for your own tests:

```python
import pytest

from hf_recunlearn.testing import HubServer, prepare_hub_environment

HUB_ENV = prepare_hub_environment()  # before anything imports huggingface_hub


@pytest.fixture(scope="session")
def hub_server():
    with HubServer(port=HUB_ENV.port, tokens=[HUB_ENV.token]) as server:
        yield server
```
"""

from .hub_server import (
    Fault,
    HubError,
    HubServer,
    HubTestEnvironment,
    RequestRecord,
    find_free_port,
    git_blob_oid,
    prepare_hub_environment,
)


__all__ = [
    "Fault",
    "HubError",
    "HubServer",
    "HubTestEnvironment",
    "RequestRecord",
    "find_free_port",
    "git_blob_oid",
    "prepare_hub_environment",
]
