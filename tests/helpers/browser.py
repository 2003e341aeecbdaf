"""Constants and the screenshot helper of the browser tests (a module of its own: ``conftest`` is not importable by
name when several test directories have one)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("PATRONLOCK_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
#: every wait in the browser tests is bounded by this (milliseconds).
TIMEOUT_MS = 20_000
SCREENSHOTS = Path(os.environ.get("PATRONLOCK_SCREENSHOTS") or Path(__file__).parents[1] / "browser" / "screenshots")

#: every screenshot saved by this run, listed at its end.
SAVED: list[Path] = []


class Shots:
    """Saves numbered screenshots of a test's pages into its own directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)

    def __call__(self, page: Any, name: str) -> Path:
        self.count += 1
        path = self.directory / f"{self.count:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True, timeout=TIMEOUT_MS)
        SAVED.append(path)
        return path


def new_page(browser: Any, base: str, width: int, height: int) -> tuple[Any, Any]:
    """A new browser context on ``base`` (its own cookies) and a page in it, every action and assertion bounded by
    :data:`TIMEOUT_MS`; close the context when done."""
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    context = browser.new_context(base_url=base, viewport={"width": width, "height": height})
    context.set_default_timeout(TIMEOUT_MS)
    return context, context.new_page()


def connect_from_banner(page: Any, shots: Shots) -> None:
    """From a ``not_linked`` banner, connect Patreon as a newcomer does: the sandbox's authorize page proposes a new
    patron (not the creator's account), and Approve is enough. Back on the post, it asks for a pledge."""
    import re

    from playwright.sync_api import expect

    page.click("[data-patronlock-reason=not_linked] >> a.patronlock-action")
    expect(page).to_have_url(re.compile(r"/_patreon/oauth2/authorize"))
    expect(page.locator("input[name=user_id][value=new]")).to_be_checked()  # a new patron, not the creator
    shots(page, "authorize-proposes-a-new-patron")
    page.click("button:has-text('Approve')")
    expect(page.locator("[data-patronlock-reason=not_a_patron]")).to_be_visible()


def play_patreon(page: Any, action: str, status: str, *, tier: str | None = None) -> None:
    """In Play Patreon, press ``action``'s button (``pledge``, with ``tier``; ``decline``, ``recover``, ``cancel``),
    send the webhooks, and wait until the site knows the patron status ``status``."""
    from playwright.sync_api import expect

    page.click("header >> text=Play Patreon")
    if tier is not None:
        page.select_option("select[name=tier]", tier)
    page.click(f"#{action}")
    if tier is not None:
        expect(page.locator(".flash")).to_contain_text(f"{tier} patron")
    page.click("#flush")
    expect(page.locator("#pending")).to_have_text("0")
    expect(page.locator("#site-status")).to_have_attribute("data-status", status)
