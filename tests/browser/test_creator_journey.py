"""The creator's journey in a real browser: sign in as the example site's creator (the demo's Kopi), complete the
setup checklist against the sandbox, set lock "premium" to a tier (past the what-if step), edit the banner a patron
below it sees, make a lock of their own and put it on a post in the site's editor, and -- in a second browser context
-- a Bronze patron logs in with Patreon and sees that new banner, and the post locked. Screenshots of each page are
saved (see conftest.py)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.helpers.browser import TIMEOUT_MS, Shots, new_page

pytestmark = pytest.mark.slow

NEW_BANNER = "The **premium archive** is for {tier} patrons. Upgrade for {amount} a month!"


def test_creator_sets_up_locks_a_tier_and_a_patron_below_it_sees_the_new_banner(
    browser: Any, live_site: tuple[str, Any], shots: Shots
) -> None:
    from playwright.sync_api import expect

    base, _app = live_site
    creator, page = new_page(browser, base, 1200, 900)
    try:
        # -- the creator signs in: the demo's first screen has a button for Kopi, the site's admin
        page.goto("/")
        page.click("button:has-text('Sign in as Kopi, the creator')")
        page.click("header >> text=Settings")
        expect(page).to_have_url(re.compile(r"/patronlock/admin/setup$"))
        expect(page.locator('[data-step="creator"]')).to_contain_text("to do")
        shots(page, "setup-start")

        # -- connect the creator's own Patreon account (the sandbox's consent page) and choose the campaign
        page.click("button:has-text('Connect your Patreon creator account')")
        expect(page).to_have_url(re.compile(r"/_patreon/oauth2/authorize"))
        page.check("label:has-text('creator@example.com') input[type=radio]")
        shots(page, "patreon-consent")
        page.click("button:has-text('Approve')")
        expect(page).to_have_url(re.compile(r"/patronlock/admin/setup/campaign$"))
        shots(page, "choose-campaign")
        page.click("button:has-text('Use this campaign')")
        expect(page.locator('[data-step="creator"]')).to_contain_text("done")
        expect(page.locator('[data-step="campaign"]')).to_contain_text("Gold")
        expect(page.locator('[data-step="campaign"]')).to_contain_text("done")
        shots(page, "setup-connected")

        # -- register the webhook, run a first sync (the page follows its progress), and the checklist is complete
        page.click('[data-step="webhook"] >> button:has-text("Register the webhook")')
        expect(page.locator('[data-step="webhook"]')).to_contain_text("done")
        page.click('[data-step="sync"] >> button:has-text("Sync now")')
        expect(page).to_have_url(re.compile(r"/patronlock/admin/sync"))
        expect(page.locator('[data-runs] tr[data-status="complete"]').first).to_be_visible(timeout=TIMEOUT_MS)
        shots(page, "sync")
        page.click("nav >> text=Setup")
        expect(page.locator(".pl-lead").first).to_contain_text("5 of 5 steps done")
        shots(page, "setup-complete")

        # -- lock "premium" to Gold
        page.click("nav >> text=Locks")
        shots(page, "locks")
        page.click("tr[data-lock=premium] >> text=Edit")
        page.check("label:has-text('Gold') input[type=checkbox]")
        page.fill("input[name=min_amount]", "")
        page.click("button:has-text('Save the lock')")
        expect(page.locator("[data-whatif-summary]")).to_contain_text("would gain access")  # the what-if step
        shots(page, "lock-premium-whatif")
        page.click("button:has-text('Save the change')")
        expect(page.locator(".pl-flash--success")).to_contain_text("Saved lock 'premium'")
        expect(page.locator("[data-rule]")).to_contain_text("Gold")
        page.select_option("select[name=as]", label="a patron of Bronze")
        page.click("button:has-text('Preview')")
        expect(page.locator('[data-preview="amount_too_low"]')).to_be_visible()
        shots(page, "lock-premium-preview-bronze")

        # -- edit the banner a patron below the tier sees; the live preview follows the typing
        page.click("text=Edit this banner's text")
        expect(page).to_have_url(re.compile(r"/banners/amount_too_low"))
        page.wait_for_load_state("load")  # the preview script is attached; typing now fires its input listener
        # an unbroken word wraps inside the banner; the counter says how many characters are too many
        page.fill("textarea[name=text]", "x" * 480)
        expect(page.locator("#banner-preview .patronlock-message")).to_contain_text("x" * 480)
        assert page.locator("#banner-preview").evaluate("e => e.scrollWidth <= e.clientWidth")
        page.fill("textarea[name=text]", "y" * 510)
        expect(page.locator("#text-counter .pl-counter--over")).to_contain_text("510 of at most 500 characters (10 too")
        expect(page.locator("#banner-preview")).to_contain_text("Shorten it by 10")
        page.fill("textarea[name=text]", NEW_BANNER)
        expect(page.locator("#banner-preview")).to_contain_text(
            "The premium archive is for Gold patrons. Upgrade for $10.00 a month!"
        )
        expect(page.locator("#banner-preview strong")).to_have_text("premium archive")
        expect(page.locator("#text-counter")).to_contain_text(f"{len(NEW_BANNER)} of at most 500 characters")
        page.check("label:has-text('Only the lock “premium”') input[type=radio]")  # not every lock's banner
        shots(page, "banner-live-preview")
        page.click("button:has-text('Save the banner')")
        expect(page.locator(".pl-flash--success")).to_contain_text("Saved the banner for the lock “premium” only")

        # -- a lock of the creator's own, for Gold patrons, put on a post in the site's post editor
        page.click("nav >> text=Locks")
        page.fill("input[name=title]", "Early access")
        page.click("button:has-text('Make the lock')")
        expect(page.locator(".pl-flash--success")).to_contain_text("Made the lock “Early access”")
        page.check("label:has-text('Gold') input[type=checkbox]")
        page.click("button:has-text('Save the lock')")
        expect(page.locator("[data-whatif-summary]")).to_contain_text("would lose it")
        page.click("summary:has-text('Show who')")
        shots(page, "lock-made-whatif")
        page.click("button:has-text('Save the change')")
        expect(page.locator("[data-rule]")).to_contain_text("Gold")
        shots(page, "lock-made")
        page.goto("/editor/process")
        page.select_option("select[name=lock]", "early-access")
        page.click("button:has-text('Save')")
        expect(page.locator("[data-post=process] [data-post-lock]")).to_contain_text("Early access")
        shots(page, "post-editor")
        page.goto("/patronlock/admin/locks")

        # -- the other pages, for the record
        for name in ("Banners", "Policies", "Patrons", "Dashboard", "Add-ons"):
            page.click(f"nav >> text={name}")
            expect(page.locator("h1")).to_be_visible()
            shots(page, name.lower().replace("-", ""))
        page.click("nav >> text=Patrons")
        page.fill("input[name=q]", "ada")
        page.click("button:has-text('Search')")
        page.click("table[data-patrons] >> text=Ada")
        expect(page.locator("h1")).to_contain_text("Ada")
        page.select_option("select[name=lock]", "premium")
        page.click("button:has-text('Explain')")
        expect(page.locator("[data-explain]")).to_be_visible()
        page.click("button:has-text('Sync this patron now')")
        expect(page.locator(".pl-flash--success")).to_contain_text("Synced")
        shots(page, "patron-ada")
    finally:
        creator.close()

    # -- a Bronze patron, in a second browser context, logs in with Patreon and opens the premium post
    patron, page = new_page(browser, base, 1000, 800)
    try:
        page.goto("/posts/premium-archive")
        page.click("header >> text=Log in with Patreon")
        page.check("label:has-text('bo@example.com') input[type=radio]")
        page.click("button:has-text('Approve')")
        expect(page).to_have_url(re.compile(r"/posts/premium-archive$"))
        banner = page.locator('[data-patronlock-reason="amount_too_low"]')
        expect(banner).to_contain_text("The premium archive is for Gold patrons. Upgrade for $10.00 a month!")
        expect(banner.locator("strong")).to_have_text("premium archive")
        expect(page.locator("body")).not_to_contain_text("every study, with its reference photos")
        shots(page, "patron-bronze-sees-new-banner")
        page.goto("/posts/process")  # the post the creator put on their own lock, Early access (Gold)
        expect(page.locator('[data-patronlock-reason="amount_too_low"]')).to_be_visible()
        expect(page.locator("body")).not_to_contain_text("the full twenty-step process")
        shots(page, "patron-bronze-sees-the-creators-lock")
        # the settings page is not theirs
        response = page.goto("/patronlock/admin/locks")
        assert response is not None and response.status == 403
        shots(page, "patron-forbidden")
    finally:
        patron.close()
