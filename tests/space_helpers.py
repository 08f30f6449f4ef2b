"""Launching the Space (`spaces/app.py`) in-process on 127.0.0.1 for the Space tests."""

from __future__ import annotations

import contextlib
import importlib.util
import socket
from pathlib import Path


APP_PATH = Path(__file__).resolve().parents[1] / "spaces" / "app.py"


def load_app_module():
    """`spaces/app.py` as a module (the Space folder is not a package)."""
    spec = importlib.util.spec_from_file_location("hf_recunlearn_space_app", APP_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_space(cache_dir):
    """The tiny built-in Space served on a free 127.0.0.1 port; yields its URL."""
    from hf_recunlearn.space import SpaceSettings

    module = load_app_module()
    app = module.build_app(SpaceSettings(cache_dir=str(cache_dir), size="tiny"))
    app.queue()
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, css=module.CSS)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()
