"""A newcomer's first minutes on the example site, in headless Chromium: register, meet a locked post's banner,
connect Patreon through the sandbox's authorize page, pledge the right tier from the control panel, read the post,
get declined (the payment banner), recover, read again. Screenshots go to pytest's tmp dir (paths printed)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.example_server import register, serve_example_site

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]
WAIT_MS = 15_000

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
if shutil.which(CHROMIUM) is None:
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

pytestmark = pytest.mark.slow


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    with serve_example_site({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'site.db'}"}) as served:
        yield served


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=WAIT_MS)
        try:
            context = browser.new_context(viewport={"width": 1000, "height": 800})
            context.set_default_timeout(WAIT_MS)
            yield context.new_page()
            context.close()
        finally:
            browser.close()


def test_newcomer_journey(site: tuple[str, Any], page: Any, tmp_path: Path) -> None:
    base, _ = site
    expect = sync_api.expect
    shots: list[Path] = []

    def shot(name: str) -> None:
        path = tmp_path / f"{len(shots) + 1:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        shots.append(path)
        print(f"screenshot: {path}")

    # the creator registered first (the first account is the site's admin); our newcomer is a reader
    register(base, "kopi@example.com").close()

    page.goto(base + "/register")
    page.fill("input[name=name]", "Newcomer")
    page.fill("input[name=email]", "newcomer@example.com")
    page.fill("input[name=password]", "correct horse")
    page.click("text=Create account")
    expect(page.locator(".flash")).to_contain_text("connect your Patreon account")

    # a Silver post: the banner says to connect Patreon
    page.goto(base + "/posts/process")
    banner = page.locator("[data-patronlock-reason=not_linked]")
    expect(banner).to_be_visible()
    expect(page.locator("body")).not_to_contain_text("twenty-step process")
    shot("locked-post-connect-banner")

    # connect through the sandbox's real authorize page: a new Patreon user with the newcomer's email, Approve
    banner.locator("a.patronlock-action").click()
    page.wait_for_url("**/_patreon/oauth2/authorize**")
    page.fill("input[name=new_email]", "newcomer@example.com")
    shot("sandbox-authorize")
    page.click("button[value=approve]")
    page.wait_for_url(base + "/posts/process")
    expect(page.locator("[data-patronlock-reason=not_a_patron]")).to_be_visible()

    # the control panel: pledge Silver on "Patreon", then send the webhooks to the site
    page.click("text=Play Patreon")
    page.wait_for_url(base + "/panel/")
    page.select_option("select[name=tier]", "Silver")
    page.click("#pledge")
    expect(page.locator(".flash")).to_contain_text("Silver patron")
    page.click("#flush")
    expect(page.locator("#pending")).to_have_text("0")
    expect(page.locator("#site-status")).to_contain_text("active_patron")
    shot("panel-after-webhooks")

    page.goto(base + "/posts/process")
    expect(page.locator("body")).to_contain_text("twenty-step process")
    shot("post-unlocked")

    # declined: the payment banner
    page.goto(base + "/panel/")
    page.click("#decline")
    page.click("#flush")
    expect(page.locator("#site-status")).to_contain_text("declined_patron")
    page.goto(base + "/posts/process")
    declined = page.locator("[data-patronlock-reason=payment_declined]")
    expect(declined).to_be_visible()
    expect(declined).to_contain_text("Update your payment method")
    expect(page.locator("body")).not_to_contain_text("twenty-step process")
    shot("payment-declined-banner")

    # recovered: readable again
    page.goto(base + "/panel/")
    page.click("#recover")
    page.click("#flush")
    expect(page.locator("#site-status")).to_contain_text("active_patron")
    page.goto(base + "/posts/process")
    expect(page.locator("body")).to_contain_text("twenty-step process")
    shot("post-readable-again")
    assert all(p.stat().st_size > 0 for p in shots)
