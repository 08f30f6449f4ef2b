"""The Space's logic (`DemoRecommender`) on the tiny built-in demo, its launch as a script, and its deploy files."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

from space_helpers import APP_PATH, copy_cache, free_port, load_app_module


SPACE_DIR = APP_PATH.parent
ROOT = SPACE_DIR.parent
APA, E2UREC = "APA (exact)", "E2URec (approximate)"


@pytest.fixture
def demo(space_cache, tmp_path):
    from forgetting_demo import DemoRecommender, SpaceSettings

    return DemoRecommender.load(SpaceSettings(cache_dir=str(copy_cache(space_cache, tmp_path)), size="tiny"))


def test_apa_forget_removes_what_only_they_taught_and_matches_the_new_version(demo, caplog):
    """One exact forget (each costs a shard retraining), checked from every side: lists, files, messages, reset."""
    import logging

    from hf_recunlearn.apa_recommender import APARecommender
    from forgetting_demo import ForgottenUserError, NoUserError, UnknownUserError

    user = demo.memorised_users()[0]
    assert user == demo.default_user()
    shown = demo.recommend(user)
    line = demo.model_line()
    assert shown["private"].sum() >= 2, "the original model recommends their private franchise"
    with caplog.at_level(logging.DEBUG):
        result = demo.forget(user, APA)

    # "Before" is exactly the list the visitor was shown.
    assert list(result.before.head(10)["item"]) == list(shown["item"])
    assert np.allclose(result.before.head(10)["P(like)"], shown["P(like)"])
    # At least half of the private franchise left the top-10; their own items fell to the never-seen reference.
    assert result.private_left * 2 >= result.private_in_before >= 2
    means = result.own_means()
    assert means["before"] - means["after"] > 0.05
    assert abs(means["after"] - means["reference"]) <= 0.05
    assert "Removed " + user in result.verdict() and "holds nothing learned from them" in result.verdict()

    # "After" is what a recommender loaded from the new version on disk recommends.
    assert result.version_after == 2 and not result.in_ledger_after and result.samples_removed > 0
    fresh = APARecommender.from_pretrained(demo.workdir / "apa", base_model=demo.settings.base_model)
    assert fresh.version == 2
    items, prompts = demo.candidate_prompts(user)
    p = dict(zip(items, fresh.predict(prompts)))
    top = result.top_after()
    assert np.allclose([p[i] for i in top["item_id"]], top["P(like)"], atol=1e-4)
    assert np.allclose(top["P(like)"], sorted(p.values(), reverse=True)[:10], atol=1e-4)

    # Privacy: the raw id is in no log record and no file of the live model.
    assert caplog.records, "the forget should log what it did (counts only)"
    assert not [r for r in caplog.records if user in r.getMessage()]
    live = demo.workdir / "apa"
    assert not [f for f in live.rglob("*") if f.is_file() and user.encode() in f.read_bytes()]

    # The forgotten user stays visible, labelled; the model line counts them.
    assert demo.status(user) == "forgotten" and "forgotten" in demo.user_label(user)
    assert "APA version 2" in demo.model_line() and "(1 forgotten)" in demo.model_line()
    assert len(demo.recommend(user)) == 10

    # Three distinct messages: no user, an unknown id, forgotten earlier; none changes the model.
    messages = []
    for bad, error in (("", NoUserError), (None, NoUserError), ("u9999", UnknownUserError), (user, ForgottenUserError)):
        with pytest.raises(error) as caught:
            demo.forget(bad, APA)
        messages.append(str(caught.value))
    assert demo.recommender.version == 2
    assert "Pick a user first" in messages[0] and "'u9999'" in messages[2] and "forgotten earlier" in messages[3]
    assert len({messages[0], messages[2], messages[3]}) == 3

    # Reset restores the original model, every user and the list they were shown.
    demo.reset()
    assert demo.recommender.version == 1 and demo.status(user) == "active" and demo.in_ledger(user)
    assert demo.model_line() == line and "APA version 1" in line
    assert np.allclose(demo.recommend(user)["P(like)"], shown["P(like)"])


def test_e2urec_forget_changes_the_served_model_and_compares_with_what_was_shown(demo):
    from forgetting_demo import ModelBusyError

    pytest.importorskip("hf_recunlearn.trainer", reason="E2URec ships with the trainer package").E2URecTrainer
    user = demo.memorised_users()[0]
    shown = demo.recommend(user)
    result = demo.forget(user, E2UREC)
    assert list(result.before.head(10)["item"]) == list(shown["item"])
    assert not result.exact and result.in_ledger_after and result.version_after == 1
    assert "approximate" in result.note and "E2URec" in result.verdict()
    # The model actually served changed for this user: their scores now come from the unlearned copy.
    assert demo.served_kind == "E2URec" and "E2URec copy" in demo.model_line()
    now = demo.recommend(user)
    served = dict(zip(result.after["item"], result.after["P(like)"]))
    assert np.allclose([served[i] for i in now["item"]], now["P(like)"])
    old = dict(zip(shown["item"], shown["P(like)"]))
    assert max(abs(old[i] - served[i]) for i in old) > 1e-3
    # The never-seen reference is an exact forget on a scratch copy: the served APA version is untouched.
    assert demo.check_model()["version_on_disk"] == 1
    with pytest.raises(ModelBusyError):
        demo.forget(demo.memorised_users()[-1], APA)
    demo.reset()
    assert demo.served_kind == "APA"


def test_salt_secret_is_installed_where_forgetting_looks(tmp_path, monkeypatch):
    from hf_recunlearn.partition import load_or_create_salt, salt_id_of

    monkeypatch.setenv("HF_RECUNLEARN_SALT_DIR", str(tmp_path / "salts"))
    salt = bytes(range(32))
    module = load_app_module()
    salt_id = module.install_salt_secret({"HF_RECUNLEARN_LEDGER_SALT": salt.hex()})
    assert salt_id == salt_id_of(salt)
    path = tmp_path / "salts" / f"{salt_id}.salt"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_salt(salt_id) == salt
    assert module.install_salt_secret({}) is None
    with pytest.raises(ValueError, match="hex"):
        module.install_salt_secret({"HF_RECUNLEARN_LEDGER_SALT": "not hex"})


def test_space_readme_and_requirements_deploy():
    text = (SPACE_DIR / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    import gradio

    assert str(meta["sdk_version"]) == gradio.__version__
    for key in ("title", "emoji", "colorFrom", "colorTo"):
        assert meta[key]
    assert "unlearning" in meta["tags"]
    for var in ("HF_RECUNLEARN_REPO", "HF_RECUNLEARN_REVISION", "HF_RECUNLEARN_DIR", "HF_RECUNLEARN_BASE_MODEL",
                "HF_RECUNLEARN_CACHE", "HF_RECUNLEARN_SPACE_SIZE", "HF_RECUNLEARN_DATA", "HF_RECUNLEARN_LEDGER_SALT",
                "HF_RECUNLEARN_SALT_DIR"):  # fmt: skip
        assert var in text
    assert "secret" in text.lower() and "restart" in text.lower()
    lines = (SPACE_DIR / "requirements.txt").read_text().splitlines()
    requirements = [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]
    assert not any(r.lower().startswith("gradio") for r in requirements)  # the Space runtime installs sdk_version
    # Not a bare name (the package is on no index): a wheel the Space carries.
    assert not any(r.replace("-", "_").lower() == "hf_recunlearn" for r in requirements)
    assert any(r.startswith("./wheels/hf_recunlearn-") and r.endswith(".whl") for r in requirements)


@pytest.mark.slow  # builds a wheel of the checkout with pip (~16 s)
def test_build_space_folder_carries_the_wheel_requirements_install(tmp_path):
    target = tmp_path / "space"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_space.py"), str(target)], check=True, timeout=300)
    assert (target / "app.py").is_file() and (target / "README.md").is_file()
    requirement = next(
        line.strip() for line in (target / "requirements.txt").read_text().splitlines() if line.startswith("./wheels/")
    )
    wheel = target / requirement
    assert wheel.is_file()
    # pip resolves the requirement from inside the Space folder, as the Space build does.
    out = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-index", requirement],
        cwd=target, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0 and "hf_recunlearn" in out.stdout.replace("-", "_"), out.stdout + out.stderr


@pytest.mark.slow  # a fresh interpreter importing gradio, torch and peft: ~40 s of the 10-minute budget
def test_app_starts_as_a_script_and_builds_at_startup(tmp_path):
    """No configuration: the server answers at once while the demo is built in the background, with progress."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_RECUNLEARN_")}
    src = str(ROOT / "src")
    env.update(
        HF_RECUNLEARN_SPACE_SIZE="tiny",
        HF_RECUNLEARN_CACHE=str(tmp_path / "cache"),
        HF_RECUNLEARN_SALT_DIR=str(tmp_path / "salts"),
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
        # The build started at startup, before any visitor: its progress is in the log.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any("Generating synthetic ratings" in line for line in lines):
            lines.append(proc.stdout.readline())
        assert any("Generating synthetic ratings" in line for line in lines), "".join(lines)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
