"""A newcomer's first minute on the example site, in a real browser, doing only what the pages say: the first screen
offers both sides; as Sam, a reader, open a locked post, connect Patreon (the authorize page proposes a new patron:
just Approve), pledge in Play Patreon, send the webhooks, read; cancel (still readable: paid for), advance the clock
a month (locked: the paid period ended), then switch to Kopi, the creator, who sees every post with a note saying
why. Screenshots of each page are saved (see conftest.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.browser import Shots, connect_from_banner, new_page, play_patreon
from tests.helpers.example_server import serve_example_site

pytestmark = pytest.mark.slow

LOCKED_TEXT = "twenty-step process"


@pytest.fixture
def demo_site(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """The example site as ``make example`` serves it: SQLite, the sandbox mounted and set up as the campaign."""
    with serve_example_site({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'example.db'}",
                             "PATRONLOCK_STRICT_SIGNALS": True}) as served:  # fmt: skip
        yield served


def test_a_newcomers_first_minute(browser: Any, demo_site: tuple[str, Any], shots: Shots) -> None:
    from playwright.sync_api import expect

    base, _app = demo_site
    context, page = new_page(browser, base, 1100, 850)
    try:
        # -- the first screen: who am I here? both sides, one click each
        page.goto("/")
        expect(page.locator("[data-first-screen]")).to_contain_text("You are the creator")
        expect(page.locator("[data-first-screen]")).to_contain_text("open it as a patron would")
        expect(page.locator("[data-private-feed]")).to_be_visible()
        shots(page, "first-screen")
        assert page.locator("button:has-text('Sign in as Kopi, the creator')").evaluate(
            "b => getComputedStyle(b).backgroundColor"
        ) == "rgb(176, 48, 42)"  # the site's own buttons, not the browser's grey ones

        # -- as a reader: a locked post, and connecting Patreon from its banner
        page.click("[data-choice=reader] >> button")
        expect(page.locator(".flash")).to_contain_text("Signed in as Sam, a reader")
        expect(page.locator("[data-next-step=connect]")).to_be_visible()
        page.click("[data-next-step=connect] >> text=How I paint a city at night")
        banner = page.locator("[data-patronlock-reason=not_linked]")
        expect(banner).to_be_visible()
        expect(page.locator("body")).not_to_contain_text(LOCKED_TEXT)
        shots(page, "a-locked-post")  # (the README's picture is test_full_journey's)
        connect_from_banner(page, shots)
        expect(page).to_have_url(re.compile(r"/posts/process$"))

        # -- pledge on Patreon, tell the site, read
        play_patreon(page, "pledge", "active_patron", tier="Silver")
        shots(page, "panel-a-silver-patron")
        page.goto("/posts/process")
        expect(page.locator("body")).to_contain_text(LOCKED_TEXT)
        shots(page, "post-unlocked")

        # -- cancel: paid for, so still readable; a month later the paid period has ended, on the site too
        play_patreon(page, "cancel", "former_patron")
        before = page.locator("#today").inner_text()
        page.goto("/posts/process")
        expect(page.locator("body")).to_contain_text(LOCKED_TEXT)
        page.goto("/panel/")
        page.click("#advance")
        expect(page.locator(".flash")).to_contain_text("The clock moved a month")
        after = page.locator("#today").inner_text()
        assert after != before and after.endswith("on Patreon and on this site")
        page.goto("/posts/process")
        expect(page.locator("[data-patronlock-reason=former_patron]")).to_be_visible()
        expect(page.locator("body")).not_to_contain_text(LOCKED_TEXT)
        shots(page, "a-month-later-locked")
        page.goto("/")
        expect(page.locator("[data-today]")).to_contain_text(after.split(",")[0])  # one date everywhere

        # -- switch to the creator: every post open, and the page says why
        page.click("[data-demo-bar] >> button:has-text('Switch to Kopi')")
        expect(page.locator("[data-role=creator]")).to_contain_text("You are the creator")
        shots(page, "creator-home")
        page.click("text=How I paint a city at night")
        expect(page.locator("[data-creator-note]")).to_contain_text("because you are the creator")
        expect(page.locator("body")).to_contain_text(LOCKED_TEXT)
        shots(page, "creator-sees-why")

        # -- the large download, and how nginx would send it; the keyboard's focus is visible
        page.click("header >> text=Downloads")
        expect(page.locator("[data-signed-link]")).to_be_visible()
        expect(page.locator("pre")).to_contain_text("internal;")
        page.locator("[data-signed-link]").focus()
        outline = page.locator("[data-signed-link]").evaluate("a => getComputedStyle(a).outlineStyle")
        assert outline == "solid"
        shots(page, "downloads")
    finally:
        context.close()
