"""The whole demo in one journey, two browser contexts side by side: Kopi, the creator, and Sam, a reader who becomes
a patron. Sam's first visit, connecting Patreon, a Silver pledge, a declined payment (locked under the example's
``restrict`` policy, then open again, until a day the pages name, once Kopi switches to a grace period past the what-if
step), the payment recovered; meanwhile Kopi makes a lock, puts it on a post in the site's editor, overrides its
banner for that lock only and widens it, each time past the what-if; then Sam cancels (open until the paid period's
end, the page says when) and the clock moves a month past it (locked, the former patron's banner). After every
change on Patreon or in the settings, Sam's page is reloaded and checked.

Every step's screenshot is saved (see conftest.py); the one named :data:`README_SHOT` is the README's picture:
with ``PATRONLOCK_README_SCREENSHOT=1`` (``make screenshots``) it is also copied to :data:`README_PICTURE`, the one
code path that makes that file."""

from __future__ import annotations

import os
import re
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flask_patronlock.formatting import date_text
from tests.helpers.browser import Shots, connect_from_banner, new_page, play_patreon

pytestmark = pytest.mark.slow

#: the README's and the quick start's picture, made by this journey (see the module's docstring).
README_PICTURE = Path(__file__).parents[2] / "docs" / "_static" / "locked-post.png"
README_SHOT = "locked-post"
#: its viewport: wide enough for the site's column, short enough to show the banner in a README.
README_VIEWPORT = {"width": 1000, "height": 540}

SILVER_POST = "/posts/process"
SILVER_TEXT = "twenty-step process"
#: the post Kopi puts on a lock of their own (it starts on "supporters": any paid tier, so Sam reads it).
NOTES_POST = "/posts/sketchbook"
NOTES_TEXT = "this week's sketches in full resolution"
GRACE_DAYS = 5
OWN_BANNER = "Studio notes are for **{tier}** patrons for now: thank you for being here!"
OWN_BANNER_SHOWN = "Studio notes are for Gold patrons for now: thank you for being here!"


def _today(panel: Any) -> datetime:
    """The demo's one clock, as Play Patreon shows it ("7 December 2026, on Patreon and on this site")."""
    return datetime.strptime(panel.locator("#today").inner_text().split(",")[0], "%d %B %Y")


def test_a_creator_and_a_patron_side_by_side(browser: Any, demo_site_on_db: tuple[str, Any], shots: Shots) -> None:
    from playwright.sync_api import expect

    base, _app = demo_site_on_db
    creator_context, kopi = new_page(browser, base, 1200, 900)
    patron_context, sam = new_page(browser, base, 1100, 850)

    def sam_reads(path: str, text: str, shot: str) -> None:
        """Sam opens ``path`` and reads it in full."""
        sam.goto(path)
        expect(sam.locator("body")).to_contain_text(text)
        shots(sam, shot)

    def status_sentence() -> Any:
        """What Sam's "Your Patreon" page says Sam has on this site."""
        sam.click("header >> text=Your Patreon")
        return sam.locator(".patronlock-described")

    def past_the_whatif(save: str, summary: str, names: str, shot: str) -> None:
        """Kopi presses ``save``; the what-if step says ``summary`` and, opened, names Sam in ``names``; Kopi saves."""
        kopi.click(f"button:has-text('{save}')")
        expect(kopi.locator("[data-whatif-summary]")).to_contain_text(summary)
        kopi.click("summary:has-text('Show who')")
        expect(kopi.locator(names)).to_contain_text(patreon_name)
        shots(kopi, shot)
        kopi.click(".pl-actions button.pl-primary:has-text('Save the change')")

    try:
        # -- first visit: the first screen offers both sides
        sam.goto("/")
        expect(sam.locator("[data-first-screen]")).to_contain_text("You are the creator")
        shots(sam, "first-visit")
        sam.click("[data-choice=reader] >> button")
        expect(sam.locator("[data-next-step=connect]")).to_be_visible()
        kopi.goto("/")
        kopi.click("[data-choice=creator] >> button")
        expect(kopi.locator("[data-role=creator]")).to_contain_text("You are the creator")
        shots(kopi, "creator-signed-in")

        # -- a locked post (the README's picture), and connecting Patreon from its banner
        sam.click("[data-next-step=connect] >> text=How I paint a city at night")
        expect(sam.locator("[data-patronlock-reason=not_linked]")).to_be_visible()
        expect(sam.locator("body")).not_to_contain_text(SILVER_TEXT)
        sam.set_viewport_size(README_VIEWPORT)
        readme_shot = shots(sam, README_SHOT)
        sam.set_viewport_size({"width": 1100, "height": 850})
        connect_from_banner(sam, shots)
        expect(sam).to_have_url(re.compile(r"/posts/process$"))
        shots(sam, "connected-not-a-patron-yet")

        # -- pledge Silver on Patreon, send the webhooks: the Silver post opens
        play_patreon(sam, "pledge", "active_patron", tier="Silver")
        shots(sam, "pledged-silver")
        account = sam.locator("#panel-state tr:has-text('Your Patreon account') td").inner_text()
        patreon_name = re.search(r"connected \((.+?), ", account).group(1)  # the sandbox's new patron's name
        sam_reads(SILVER_POST, SILVER_TEXT, "silver-post-open")

        # -- the payment is declined: the example starts on "restrict", so the post locks at once
        play_patreon(sam, "decline", "declined_patron")
        charge = re.search(r"Last payment declined on (\d{1,2} \w+ \d{4})", sam.locator("#sandbox-status").inner_text())
        assert charge, sam.locator("#sandbox-status").inner_text()
        declined_on = datetime.strptime(charge.group(1), "%d %B %Y")
        sam.goto(SILVER_POST)
        expect(sam.locator("[data-patronlock-reason=payment_declined]")).to_be_visible()
        expect(sam.locator("body")).not_to_contain_text(SILVER_TEXT)
        shots(sam, "declined-restricted")

        # -- Kopi switches declined payments to a grace period; the what-if names Sam, who would gain access
        kopi.click("header >> text=Settings")
        kopi.click("nav >> text=Policies")
        kopi.check("label:has-text('Keep access for a grace period') input[type=radio]")
        kopi.fill("input[name=declined_grace_days]", str(GRACE_DAYS))
        past_the_whatif("Save the policies", "1 patron would gain access", "[data-gained]", "policy-grace-whatif")
        expect(kopi.locator(".pl-flash--success")).to_contain_text("Saved the access policies")
        expect(kopi.locator("input[name=declined_grace_days]")).to_have_value(str(GRACE_DAYS))

        # -- Sam reads again, and the status page counts down: until the declined charge's day plus the grace period
        sam_reads(SILVER_POST, SILVER_TEXT, "declined-grace-post-open")
        grace_end = date_text(declined_on + timedelta(days=GRACE_DAYS))
        sentence = status_sentence()
        expect(sentence).to_contain_text("Patreon could not charge your last payment")
        expect(sentence).to_contain_text(f"until {grace_end} (in {GRACE_DAYS} days)")  # declined today: N days left
        shots(sam, "declined-grace-countdown")
        sam.click("header >> text=Play Patreon")  # the panel says what the site knows in the same words
        expect(sam.locator("#site-status")).to_contain_text(f"until {grace_end}")

        # -- the payment goes through: a Silver patron again, no end date
        play_patreon(sam, "recover", "active_patron")
        sam_reads(SILVER_POST, SILVER_TEXT, "recovered-post-open")
        sentence = status_sentence()
        expect(sentence).to_contain_text("You're a Silver patron")
        expect(sentence).not_to_contain_text("until")
        shots(sam, "recovered")

        # -- Kopi makes a lock for Gold patrons; the what-if says Sam, a Silver patron, would lose it
        sam_reads(NOTES_POST, NOTES_TEXT, "sketchbook-open")
        kopi.click("nav >> text=Locks")
        kopi.fill("input[name=title]", "Studio notes")
        kopi.click("button:has-text('Make the lock')")
        expect(kopi.locator(".pl-flash--success")).to_contain_text("Made the lock “Studio notes”")
        kopi.check("label:has-text('Gold') input[type=checkbox]")
        past_the_whatif("Save the lock", "would lose it", "[data-lost]", "new-lock-whatif")
        expect(kopi.locator("[data-rule]")).to_contain_text("Gold")
        shots(kopi, "new-lock-saved")
        sam.reload()
        expect(sam.locator("body")).to_contain_text(NOTES_TEXT)  # not on any post yet

        # -- ...and puts it on the sketchbook post in the site's editor: Sam's page locks
        kopi.goto("/editor/sketchbook")
        kopi.select_option("select[name=lock]", "studio-notes")
        kopi.click("button:has-text('Save')")
        expect(kopi.locator("[data-post=sketchbook] [data-post-lock]")).to_contain_text("Studio notes")
        shots(kopi, "post-editor")
        sam.reload()
        banner = sam.locator("[data-patronlock-lock=studio-notes][data-patronlock-reason]")
        expect(banner).to_contain_text("Gold")
        expect(sam.locator("body")).not_to_contain_text(NOTES_TEXT)
        reason = banner.get_attribute("data-patronlock-reason")
        shots(sam, "post-on-the-new-lock")

        # -- Kopi gives that banner a text of this lock's own; Sam reads it, other locks keep theirs
        kopi.goto("/patronlock/admin/banners?lock=studio-notes")
        kopi.click(f"[data-reason={reason}] >> text=Edit the text")
        kopi.wait_for_load_state("load")  # the preview script is attached; typing now fires its input listener
        kopi.fill("textarea[name=text]", OWN_BANNER)
        expect(kopi.locator("#banner-preview")).to_contain_text(OWN_BANNER_SHOWN)
        kopi.check("label:has-text('Only the lock “studio-notes”') input[type=radio]")
        shots(kopi, "banner-for-this-lock-only")
        kopi.click("button:has-text('Save the banner')")
        expect(kopi.locator(".pl-flash--success")).to_contain_text("for the lock “studio-notes” only")
        sam.reload()
        expect(banner).to_contain_text(OWN_BANNER_SHOWN)
        expect(banner.locator("strong")).to_have_text("Gold")
        shots(sam, "own-banner")
        sam.goto("/posts/masterclass")  # Gold too, on another lock: the site-wide text
        expect(sam.locator(f"[data-patronlock-lock=gold][data-patronlock-reason={reason}]")).to_be_visible()
        expect(sam.locator("body")).not_to_contain_text(OWN_BANNER_SHOWN)

        # -- Kopi widens the lock to Silver; the what-if says Sam would gain access, and the post opens for Sam
        kopi.goto("/patronlock/admin/locks/studio-notes")
        kopi.check("label:has-text('Silver') input[type=checkbox]")
        past_the_whatif("Save the lock", "would gain access", "[data-gained]", "widen-lock-whatif")
        expect(kopi.locator("[data-rule]")).to_contain_text("Silver")
        sam_reads(NOTES_POST, NOTES_TEXT, "lock-widened-post-open")

        # -- Sam cancels: paid for, so still open, and the status page says until when
        play_patreon(sam, "cancel", "former_patron")
        sam_reads(SILVER_POST, SILVER_TEXT, "cancelled-post-open")
        sentence = status_sentence()
        expect(sentence).to_contain_text("you paid through this period")
        found = re.search(r"until (\w+ \d{1,2}, \d{4})", sentence.inner_text())
        assert found, sentence.inner_text()
        paid_until = datetime.strptime(found.group(1), "%B %d, %Y")
        shots(sam, "cancelled-paid-until")

        # -- a month later the paid period has ended: locked, with the former patron's banner
        sam.click("header >> text=Play Patreon")
        assert _today(sam) < paid_until
        sam.click("#advance")
        expect(sam.locator(".flash")).to_contain_text("The clock moved a month")
        assert _today(sam) >= paid_until  # a month on: the paid period ended at that day's renewal time
        sam.goto(SILVER_POST)
        expect(sam.locator("[data-patronlock-reason=former_patron]")).to_be_visible()
        expect(sam.locator("body")).not_to_contain_text(SILVER_TEXT)
        shots(sam, "past-the-paid-period-locked")
        sam.goto(NOTES_POST)  # the lock of Kopi's own: the former patron's banner there too
        expect(sam.locator("[data-patronlock-lock=studio-notes][data-patronlock-reason=former_patron]")).to_be_visible()
        kopi.goto(SILVER_POST)  # the creator still reads every post
        expect(kopi.locator("[data-creator-note]")).to_contain_text("because you are the creator")
        shots(kopi, "creator-reads-every-post")
    finally:
        patron_context.close()
        creator_context.close()

    if os.environ.get("PATRONLOCK_README_SCREENSHOT"):
        shutil.copyfile(readme_shot, README_PICTURE)
