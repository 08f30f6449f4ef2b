"""
`hf-recunlearn` as a user runs it: the installed console script in a real process, running this checkout's code.

A process start imports torch, transformers and peft (seconds on a small CPU machine), so tests that need several
commands run independent ones side by side (`run_side_by_side`), at most as many at once as there are cores, up to 2.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import hf_recunlearn

# The package the tests import: the console script's process must import the same one (not another installed copy).
SOURCE_ROOT = Path(hf_recunlearn.__file__).resolve().parents[1]
WORKERS = max(1, min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def console_script() -> str:
    """The `hf-recunlearn` console script next to this interpreter (the environment the tests run in), else on PATH."""
    path = shutil.which("hf-recunlearn", path=str(Path(sys.executable).parent)) or shutil.which("hf-recunlearn")
    if path is None:
        pytest.fail("The `hf-recunlearn` console script is not installed: `pip install -e .` (or `make install`).")
    return path


def console_env(online: bool = False, **extra: str) -> dict[str, str]:
    """The child's environment: this checkout first on the import path, one thread, the Hub only when `online`."""
    python_path = os.pathsep.join([str(SOURCE_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "PYTHONPATH": python_path, "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "0" if online else "1", **extra}  # fmt: skip


def console(*args: str, online: bool = False, timeout: int = 600) -> subprocess.CompletedProcess:
    """`hf-recunlearn ARGS` in a new process; returns the finished process (stdout, stderr, exit code)."""
    return subprocess.run([console_script(), *args], capture_output=True, text=True, env=console_env(online),
                          timeout=timeout, check=False)  # fmt: skip


def console_json(*args: str, online: bool = False, with_stderr: bool = False):
    """
    `hf-recunlearn ARGS`, which must exit 0 and print exactly one JSON document (what `python -m json.tool` accepts,
    and no NaN or Infinity); returns it (with `with_stderr`, `(document, stderr)`).
    """
    result = console(*args, online=online)
    assert result.returncode == 0, f"hf-recunlearn {' '.join(args)}: exit {result.returncode}\n{result.stderr[-3000:]}"
    tool = subprocess.run([sys.executable, "-m", "json.tool"], input=result.stdout, capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert tool.returncode == 0, f"stdout of `hf-recunlearn {args[0]}` is not one JSON document: {tool.stderr}"
    document = json.loads(result.stdout, parse_constant=lambda name: pytest.fail(f"{name} in stdout of {args[0]}"))
    return (document, result.stderr) if with_stderr else document


def runs_this_checkout() -> str:
    """The `hf_recunlearn` a console-script process imports (its interpreter and environment, as `console` sets)."""
    shebang = Path(console_script()).read_text().splitlines()[0].removeprefix("#!").strip()
    interpreter = shebang if "python" in Path(shebang).name else sys.executable  # e.g. pip's `#!/bin/sh` trampoline
    code = "import hf_recunlearn; print(hf_recunlearn.__file__)"
    out = subprocess.run([interpreter, "-c", code], capture_output=True, text=True, env=console_env(), check=True)
    return out.stdout.strip()


def run_side_by_side(*jobs: Callable[[], object]) -> list:
    """Run independent jobs (each a chain of commands) `WORKERS` at a time; their results in order."""
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        return [future.result() for future in [pool.submit(job) for job in jobs]]
