"""Launching the Space (`spaces/app.py`) in-process on 127.0.0.1, and a private copy of the session's demo cache."""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
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


def copy_cache(space_cache, tmp_path) -> Path:
    """A copy of the session's built demo (only the bundle; every user of the copy starts from the pristine model)."""
    cache = Path(tmp_path) / "cache"
    shutil.copytree(space_cache, cache, ignore=shutil.ignore_patterns("live"))
    return cache


@contextlib.contextmanager
def running_space(cache_dir):
    """The tiny built-in Space served on a free 127.0.0.1 port; yields its URL once the model is loaded."""
    from forgetting_demo import SpaceSettings

    module = load_app_module()
    app = module.build_app(SpaceSettings(cache_dir=str(cache_dir), size="tiny"))
    app.loader.wait(timeout=300)
    app.queue()
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, css=module.CSS)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()
