"""The Space in a real headless Chromium (playwright): pick a user, forget them, read the before/after panel."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from space_helpers import running_space


pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]  # fmt: skip


def _ensure_chromium() -> str:
    """Debian's Chromium (playwright's own browser download does not work offline); installed when we are root."""
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "chromium"], check=False, env=env, timeout=600)
        if os.path.exists(CHROMIUM):
            return CHROMIUM
        pytest.skip(f"`apt-get install -y chromium` did not provide {CHROMIUM}.")
    pytest.skip(f"{CHROMIUM} is missing and this is not root: `apt-get install -y chromium` enables browser tests.")


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api", reason="the `playwright` package is not installed")
    executable = _ensure_chromium()
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable, headless=True, args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


def test_pick_forget_and_see_after_panel(browser, space_cache, tmp_path):
    from playwright.sync_api import expect

    with running_space(space_cache) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        expect(page.locator("#model-info")).to_contain_text("version 1", timeout=60_000)
        status = page.locator("#status")

        # Pick a user through the searchable dropdown: type part of the label, click the match.
        dropdown = page.locator("#user input")
        dropdown.click()
        dropdown.fill("u0007")
        option = page.locator("[data-testid=dropdown-option]").filter(has_text="u0007 (").first
        option.click()
        expect(page.locator("#user-heading")).to_contain_text("Showing u0007 (", timeout=30_000)
        recs = page.locator("#recs")
        expect(recs).to_contain_text("P(like)")
        expect(page.locator("#history")).to_contain_text("liked")
        expect(page.locator("#after-panel")).to_be_hidden()

        page.locator("#forget-btn").click()
        summary = page.locator("#forget-summary")
        expect(summary).to_contain_text("Forgot u0007 with APA (exact)", timeout=60_000)
        expect(page.locator("#after-panel")).to_be_visible()
        expect(summary).to_contain_text("Shards retrained: 1 of 2")
        expect(summary).to_contain_text("absent")
        expect(page.locator("#recs-before")).to_contain_text("rank after")
        expect(page.locator("#recs-after")).to_contain_text("rank before")
        expect(page.locator("#own-compare")).to_contain_text("P(like) after")
        expect(page.locator("#plot")).to_be_visible()
        expect(status).to_contain_text("Forgot u0007")

        shot = tmp_path / "space-after-forget.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        page.close()
