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
