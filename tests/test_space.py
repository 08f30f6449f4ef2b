"""The Gradio Space over real HTTP (gradio_client), its launch as a script, and its README front matter."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from space_helpers import APP_PATH, free_port, running_space


SPACE_DIR = APP_PATH.parent
APA = "APA (exact)"


def _value(output):
    """The value of a component output (gradio_client returns `gr.update(...)` outputs as dicts)."""
    return output["value"] if isinstance(output, dict) and output.get("__type__") == "update" else output


def _rows(table) -> list[dict]:
    """A Dataframe output from gradio_client as a list of row dicts."""
    return [dict(zip(table["headers"], row)) for row in table["data"]]


@pytest.fixture(scope="module")
def client(space_cache):
    from gradio_client import Client

    with running_space(space_cache) as url:
        yield Client(url, verbose=False)


def test_recommend_forget_and_after(client):
    default_user, status = client.predict(api_name="/init")
    default_user = _value(default_user)
    assert "version 1" in status
    users = client.predict(api_name="/users")
    assert default_user in users and len(users) > 10

    history, recs, own, heading, _ = client.predict(default_user, api_name="/recommend")
    assert f"Showing {default_user} (" in heading
    before = _rows(recs)
    assert len(before) == 10
    assert all(0.0 <= r["P(like)"] <= 1.0 for r in before)
    assert [r["rank"] for r in before] == list(range(1, 11))
    assert {r["verdict"] for r in _rows(history)} <= {"liked", "disliked"}
    assert len(_rows(own)) > 0
    assert client.predict(default_user, api_name="/ledger")["user_in_ledger"] is True

    status, summary, recs_before, recs_after, plot, own_compare, next_user = client.predict(
        default_user, APA, api_name="/forget"
    )
    assert "absent" in summary and "Shards retrained: **1 of 2**" in summary
    assert "version: 1 → 2" in summary
    assert [r["item"] for r in _rows(recs_before)] == [r["item"] for r in before]
    after = _rows(recs_after)
    assert len(after) == 10 and {"rank before", "change", "P(like) before"} <= set(after[0])
    assert len(_rows(own_compare)) == len(_rows(own))
    next_user = _value(next_user)
    assert next_user and next_user != default_user

    ledger = client.predict(default_user, api_name="/ledger")
    assert ledger["user_in_ledger"] is False and ledger["version"] == ledger["version_on_disk"] == 2
    assert default_user not in client.predict(api_name="/users")
    # Other users are still served.
    _, other_recs, _, _, _ = client.predict(next_user, api_name="/recommend")
    assert len(_rows(other_recs)) == 10

    # The same user again: a clear message, nothing changes.
    status, *_ = client.predict(default_user, APA, api_name="/forget")
    assert "already forgotten" in status
    assert client.predict(default_user, api_name="/ledger")["version"] == 2
    _, _, _, _, status = client.predict(default_user, api_name="/recommend")
    assert "already forgotten" in status


def test_e2urec_option(client):
    """E2URec distils an unlearned copy; the APA shards, ledger and version stay as they were."""
    user = client.predict(api_name="/users")[-1]
    version = client.predict(user, api_name="/ledger")["version"]
    try:
        from hf_recunlearn.trainer import E2URecTrainer  # noqa: F401
    except ImportError:
        status, *_ = client.predict(user, "E2URec (approximate)", api_name="/forget")
        assert "E2URec is not available" in status
    else:
        status, summary, recs_before, recs_after, _, own_compare, _ = client.predict(
            user, "E2URec (approximate)", api_name="/forget"
        )
        assert "with E2URec (approximate)" in summary and "still present" in summary
        assert "Shards retrained: **0 of 2**" in summary and "samples unlearned" in summary
        assert len(_rows(recs_after)) == 10 and len(_rows(own_compare)) > 0
    state = client.predict(user, api_name="/ledger")
    assert state["user_in_ledger"] is True and state["version"] == version and state["finite"]


def test_concurrent_forgets_are_serialised(client):
    from gradio_client import Client

    users = client.predict(api_name="/users")
    targets = users[1:3]
    version = client.predict(users[0], api_name="/ledger")["version"]
    results, errors = {}, []

    def run(user):
        try:
            results[user] = Client(client.src, verbose=False).predict(user, APA, api_name="/forget")
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(u,)) for u in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    for user in targets:
        assert "absent" in results[user][1]
        assert client.predict(user, api_name="/ledger")["user_in_ledger"] is False
    state = client.predict(users[0], api_name="/ledger")
    assert state["version"] == state["version_on_disk"] == version + 2
    assert state["finite"] and state["user_in_ledger"] is True
    remaining = client.predict(api_name="/users")
    assert not set(targets) & set(remaining)

    # Reset brings back the original model and every user.
    status, _ = client.predict(api_name="/reset")
    assert "version 1" in status
    assert set(targets) <= set(client.predict(api_name="/users"))
    assert client.predict(targets[0], api_name="/ledger")["user_in_ledger"] is True


def test_space_readme_front_matter():
    text = (SPACE_DIR / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["sdk"] == "gradio"
    assert meta["app_file"] == "app.py"
    import gradio

    assert str(meta["sdk_version"]) == gradio.__version__
    for key in ("title", "emoji", "colorFrom", "colorTo"):
        assert meta[key]
    assert "unlearning" in meta["tags"]
    assert isinstance(meta.get("models", []), list)
    for var in ("HF_RECUNLEARN_REPO", "HF_RECUNLEARN_REVISION", "HF_RECUNLEARN_DIR", "HF_RECUNLEARN_BASE_MODEL",
                "HF_RECUNLEARN_CACHE", "HF_RECUNLEARN_SPACE_SIZE", "HF_RECUNLEARN_DATA"):  # fmt: skip
        assert var in text
    lines = (SPACE_DIR / "requirements.txt").read_text().lower().splitlines()
    requirements = [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]
    assert any(r.replace("-", "_").startswith("hf_recunlearn") for r in requirements)
    assert not any(r.startswith("gradio") for r in requirements)  # the Space runtime installs sdk_version


def test_app_starts_as_a_script_with_no_configuration(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_RECUNLEARN_")}
    src = str(Path(__file__).resolve().parents[1] / "src")
    env.update(
        HF_RECUNLEARN_SPACE_SIZE="tiny",
        HF_RECUNLEARN_CACHE=str(tmp_path / "cache"),
        GRADIO_SERVER_PORT=str(port),
        GRADIO_SERVER_NAME="127.0.0.1",
        GRADIO_ANALYTICS_ENABLED="False",
        PYTHONPATH=src + os.pathsep + env.get("PYTHONPATH", ""),
    )
    proc = subprocess.Popen(
        [sys.executable, str(APP_PATH)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = []
    try:
        # Importing peft imports bitsandbytes when it is installed (the dev extra has it), about 10 s more on a busy
        # 2-core machine before the app can even start building its demo.
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            lines.append(line)
            if "Running on" in line:
                break
        assert any("Running on" in line for line in lines), "".join(lines)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
            assert response.status == 200
            assert "hf_recunlearn" in response.read().decode()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_forgotten_id_stays_out_of_logs_and_model_files(space_cache, tmp_path, caplog):
    """Privacy: after a forget, the raw id appears in no log record and in no file of the live model."""
    import logging
    import shutil

    from hf_recunlearn.space import DemoRecommender, SpaceSettings

    cache = tmp_path / "cache"
    shutil.copytree(space_cache, cache)
    demo = DemoRecommender.load(SpaceSettings(cache_dir=str(cache), size="tiny"))
    user = demo.default_user()
    with caplog.at_level(logging.DEBUG):
        result = demo.forget(user)
    assert result.in_ledger_after is False and result.samples_removed > 0
    assert caplog.records, "the forget should log what it did (counts only)"
    assert not [r for r in caplog.records if user in r.getMessage()]
    live = demo.workdir / "apa"
    leaks = [p for p in live.rglob("*") if p.is_file() and user.encode() in p.read_bytes()]
    assert not leaks
