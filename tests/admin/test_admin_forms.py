"""The settings page's forms: validation shown inline, nothing lost on a bad input, an audit row naming the admin for
every change, and the change reaching another worker through the settings version within its check interval."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, render_template_string
from flask_login import current_user
from sqlalchemy import select

from flask_patronlock import locked
from flask_patronlock.admin.forms import cents_from_text
from flask_patronlock.policy import LockRule
from flask_patronlock.settings import get_lock_override, get_policy_settings, list_locks, set_lock_override
from tests.helpers.admin import ADMIN_PREFIX, AdminSite, make_admin_site
from tests.helpers.constants import CAMPAIGN, NOW


@pytest.fixture
def site(make_app: Callable[..., Flask]) -> AdminSite:
    site = make_admin_site(make_app)

    @site.app.get("/premium")
    @locked("premium")
    def premium() -> str:
        return "premium content"

    @site.app.get("/post")
    def post() -> str:
        return render_template_string("{% patronlock 'premium' %}teaser{% more %}the rest{% endpatronlock %}")

    site.apply("m-silver", full_name="Sil", entitled_cents=500, entitled_tier_ids=("t5",), user_id="p-sil")
    site.link("bob", "p-sil")
    return site


def audit(site: AdminSite, kind: str) -> list[dict[str, Any]]:
    e = site.state.tables.events
    with site.state.store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(e).where(e.c.kind == kind).order_by(e.c.id)).mappings()]


def html_of(response: Any) -> str:
    return str(response.get_data(as_text=True))


# -- amounts --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "cents"), [("5", 500), ("5.00", 500), ("$5.5", 550), ("12,34", 1234), (" 0 ", 0), ("", None)]
)
def test_amounts_are_read_as_people_write_them(text: str, cents: int | None) -> None:
    assert cents_from_text(text) == cents


@pytest.mark.parametrize("text", ["-5", "five", "5.001", "1e3", "5 6"])
def test_bad_amounts_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not an amount"):
        cents_from_text(text)


# -- locks ----------------------------------------------------------------------------------------------------------


def lock_form(**changes: Any) -> dict[str, Any]:
    # "confirm": the second press, on the what-if step (tests/admin/test_admin_whatif.py covers the first)
    data: dict[str, Any] = {"enabled": "y", "tiers": ["t10"], "min_amount": "", "lifetime_amount": "",
                            "patron_since_before": "", "drip_months": "", "combine": "all", "confirm": "1"}
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def test_choosing_a_tier_saves_an_override_audited_by_the_admin_and_applies_at_once(site: AdminSite) -> None:
    assert site.get("/premium", "bob").status_code == 403  # Silver < Gold
    page = html_of(site.get(ADMIN_PREFIX + "/locks/premium"))
    for title in ("Bronze (3.00 a month)", "Silver (5.00 a month)", "Gold (10.00 a month)"):
        assert title in page  # the campaign's real tiers
    response = site.post(ADMIN_PREFIX + "/locks/premium", lock_form(tiers=["t5"]))
    assert response.status_code == 302
    with site.app.app_context():
        override = get_lock_override("premium")
    assert override is not None and override.rule.tier_ids == ("t5",) and override.updated_by == "admin"
    rows = audit(site, "lock_override_set")
    assert rows[-1]["user_id"] == "admin" and rows[-1]["source"] == "admin"
    assert rows[-1]["detail"]["rule"]["tier_ids"] == ["t5"]
    assert site.get("/premium", "bob").status_code == 200
    assert "Silver" in html_of(site.get(ADMIN_PREFIX + "/locks/premium"))


def test_an_amount_lifetime_date_and_drip_are_saved(site: AdminSite) -> None:
    response = site.post(
        ADMIN_PREFIX + "/locks/premium",
        lock_form(tiers=[], min_amount="4.50", lifetime_amount="100", patron_since_before="2026-01-01",
                  drip_months="3", combine="any"),
    )
    assert response.status_code == 302
    with site.app.app_context():
        rule = get_lock_override("premium").rule  # type: ignore[union-attr]
    assert rule.min_cents == 450 and rule.lifetime_cents == 10000 and rule.drip_months == 3
    assert rule.patron_since_before is not None and rule.patron_since_before.isoformat() == "2026-01-01T00:00:00+00:00"
    assert rule.combine == "any" and rule.tier_ids == ()


@pytest.mark.parametrize(
    ("changes", "field_text", "message"),
    [
        ({"min_amount": "five dollars"}, "five dollars", "not an amount"),
        ({"lifetime_amount": "-3"}, "-3", "not an amount"),
        ({"drip_months": "-2"}, "-2", "Number must be between 0 and 1200"),
        ({"drip_months": "soon"}, "soon", "Not a valid integer value"),
        ({"patron_since_before": "31/31/2026"}, "31/31/2026", "Not a valid date value"),
        ({"combine": "maybe"}, None, "Not a valid choice"),
    ],
)
def test_bad_input_is_shown_inline_and_nothing_is_lost_or_saved(
    site: AdminSite, changes: dict[str, Any], field_text: str | None, message: str
) -> None:
    data = lock_form(**{"tiers": ["t5", "t10"], "min_amount": "2.50", **changes})
    response = site.post(ADMIN_PREFIX + "/locks/premium", data)
    assert response.status_code == 422
    html = html_of(response)
    assert message in html and 'class="pl-errors"' in html
    if field_text is not None:
        assert f'value="{field_text}"' in html  # what they typed is still there
    assert html.count("checked") >= 3  # both tiers ticked and "enabled" still checked
    with site.app.app_context():
        assert get_lock_override("premium") is None
    assert audit(site, "lock_override_set") == []


def test_a_rule_error_from_lockrule_is_shown_next_to_its_field(site: AdminSite, monkeypatch: Any) -> None:
    from flask_patronlock.admin import forms

    def refuse(data: Any) -> LockRule:
        raise ValueError("LockRule.drip_months must be an integer from 0 to 1200, not 5000")

    monkeypatch.setattr(forms.LockRule, "from_dict", staticmethod(refuse))
    response = site.post(ADMIN_PREFIX + "/locks/premium", lock_form(drip_months="12"))
    assert response.status_code == 422
    html = html_of(response)
    assert 'id="drip_months-errors"' in html and "not 5000" in html


def test_a_tier_not_in_the_catalogue_is_kept_not_dropped(site: AdminSite) -> None:
    with site.app.app_context():
        set_lock_override("premium", {"tier_ids": ["t99"]}, by="cli")
    html = html_of(site.get(ADMIN_PREFIX + "/locks/premium"))
    assert "t99 (not a tier of the campaign)" in html
    assert 'value="t99" checked' in html


def test_toggle_and_reset(site: AdminSite) -> None:
    assert site.post(ADMIN_PREFIX + "/locks/premium/toggle", {"enabled": "0", "confirm": "1"}).status_code == 302
    assert site.get("/premium", "bob").status_code == 200  # off: everyone may see it
    with site.app.app_context():
        assert get_lock_override("premium").rule.enabled is False  # type: ignore[union-attr]
        assert get_lock_override("premium").rule.tier_ids == ("Gold",)  # type: ignore[union-attr]  # kept
    site.post(ADMIN_PREFIX + "/locks/premium/reset")
    with site.app.app_context():
        assert get_lock_override("premium") is None
    assert site.get("/premium", "bob").status_code == 403
    assert [r["detail"]["lock"] for r in audit(site, "lock_override_cleared")] == ["premium"]


def test_unknown_lock_is_404(site: AdminSite) -> None:
    assert site.get(ADMIN_PREFIX + "/locks/nope").status_code == 404
    assert site.post(ADMIN_PREFIX + "/locks/nope", lock_form()).status_code == 404


def test_preview_as_a_patron_of_a_tier(site: AdminSite) -> None:
    html = html_of(site.get(ADMIN_PREFIX + "/locks/premium?as=t5&months=2"))
    assert 'data-preview="amount_too_low"' in html
    assert 'data-patronlock-reason="amount_too_low"' in html  # the real banner template
    assert "Upgrade your pledge" in html and "Gold" in html
    html = html_of(site.get(ADMIN_PREFIX + "/locks/premium?as=t10"))
    assert 'data-preview="allowed"' in html
    html = html_of(site.get(ADMIN_PREFIX + "/locks/premium?as=anonymous"))
    assert 'data-patronlock-reason="anonymous"' in html
    html = html_of(site.get(ADMIN_PREFIX + "/locks/premium?as=gone"))
    assert "not among the campaign&#39;s tiers" in html


# -- site-wide and URL-prefix locks ------------------------------------------------------------------------------------


def test_site_and_path_locks_are_stored_and_win_over_the_configuration(site: AdminSite) -> None:
    assert site.get("/", "bob").status_code == 200
    data = {"site_lock": "", "paths-0-prefix": "/post", "paths-0-lock": "premium",
            "paths-1-prefix": "", "paths-1-lock": ""}
    assert site.post(ADMIN_PREFIX + "/locks/routing", data).status_code == 302
    assert site.get("/post", "bob").status_code == 403
    assert site.get("/", "bob").status_code == 200
    stored = audit(site, "routing_set")[-1]["detail"]["routing"]
    assert stored == {"site_lock": None, "path_locks": {"/post": "premium"}}
    page = site.get(ADMIN_PREFIX + "/locks")  # the stored URL locks are shown, to change them
    assert page.status_code == 200 and 'value="/post"' in html_of(page)
    site.post(ADMIN_PREFIX + "/locks/routing", {"site_lock": "supporters"})
    assert site.get("/", None).status_code == 403
    assert site.get(ADMIN_PREFIX + "/locks").status_code == 200  # the settings page itself is never locked
    site.post(ADMIN_PREFIX + "/locks/routing/reset")
    assert site.get("/", None).status_code == 200


def test_bad_path_rows_are_shown_and_kept(site: AdminSite) -> None:
    data = {"site_lock": "premium", "paths-0-prefix": "members", "paths-0-lock": "premium",
            "paths-1-prefix": "/vip", "paths-1-lock": "", "paths-2-prefix": "/x", "paths-2-lock": "ghost"}
    response = site.post(ADMIN_PREFIX + "/locks/routing", data)
    assert response.status_code == 422
    html = html_of(response)
    assert "starts with /" in html and "Choose the lock for this URL" in html and "No lock named" in html
    assert 'value="members"' in html and 'value="/vip"' in html
    assert audit(site, "routing_set") == []


# -- banners --------------------------------------------------------------------------------------------------------


def test_a_banner_text_is_saved_and_shown_to_the_patron_below_the_tier(site: AdminSite) -> None:
    text = "Premium is for {tier} patrons ({amount} a month). Thank you, {creator} says!"
    response = site.post(ADMIN_PREFIX + "/banners/amount_too_low", {"text": text, "lock": "premium",
                                                                     "action": "save"})
    assert response.status_code == 302
    page = html_of(site.get("/post", "bob"))
    assert "Premium is for Gold patrons ($10.00 a month). Thank you, the creator says!" in page
    assert audit(site, "banner_text_set")[-1]["user_id"] == "admin"


def test_a_banner_preview_saves_nothing(site: AdminSite) -> None:
    response = site.post(ADMIN_PREFIX + "/banners/amount_too_low",
                         {"text": "Only {tier} & up <b>", "lock": "premium", "action": "preview"})
    assert response.status_code == 200
    html = html_of(response)
    assert "Only Gold &amp; up &lt;b&gt;" in html  # rendered, escaped, in the real template
    assert audit(site, "banner_text_set") == []
    fragment = site.post(ADMIN_PREFIX + "/banners/amount_too_low/preview",
                         {"text": "Live {tier}", "lock": "supporters"})
    assert fragment.status_code == 200 and "Live" in html_of(fragment) and "patronlock-banner" in html_of(fragment)
    bad = site.post(ADMIN_PREFIX + "/banners/amount_too_low/preview", {"text": "{nope}", "lock": "premium"})
    assert "unknown placeholder" in html_of(bad)
    assert audit(site, "banner_text_set") == []


def test_an_unknown_placeholder_is_refused_and_the_text_kept(site: AdminSite) -> None:
    response = site.post(ADMIN_PREFIX + "/banners/amount_too_low",
                         {"text": "Upgrade to {tierr} now", "lock": "premium", "action": "save"})
    assert response.status_code == 422
    html = html_of(response)
    assert "unknown placeholder(s) {tierr}" in html and "Upgrade to {tierr} now</textarea>" in html
    assert audit(site, "banner_text_set") == []


def test_restoring_the_default_text(site: AdminSite) -> None:
    site.post(ADMIN_PREFIX + "/banners/not_linked", {"text": "Connect!", "lock": "premium", "action": "save"})
    assert "Connect!" in html_of(site.get(ADMIN_PREFIX + "/banners"))
    site.post(ADMIN_PREFIX + "/banners/not_linked", {"text": "", "lock": "premium", "action": "default"})
    assert "Connect!" not in html_of(site.get(ADMIN_PREFIX + "/banners"))
    assert site.get(ADMIN_PREFIX + "/banners/allowed").status_code == 404


def save_banner(site: AdminSite, text: str, *, lock: str = "premium", **fields: str) -> Any:
    """Post the amount-too-low banner form as its Save button does."""
    return site.post(ADMIN_PREFIX + "/banners/amount_too_low", {"text": text, "lock": lock, "action": "save", **fields})


def scope_of(page: str) -> str:
    """The scope radio chosen on a banner page."""
    match = re.search(r'<input checked[^>]* name="scope" type="radio" value="(\w+)"', page)
    assert match is not None
    return match.group(1)


def test_a_banner_saved_for_one_lock_shows_on_that_lock_only(site: AdminSite) -> None:
    site.ext.lock("archive", tier="Gold")
    site.app.add_url_rule("/archive", "archive", locked("archive")(lambda: "archive content"))
    form = html_of(site.get(ADMIN_PREFIX + "/banners/amount_too_low?lock=premium"))
    assert scope_of(form) == "all" and "All locks" in form and "Only the lock \u201cpremium\u201d" in form
    # a link from a lock's own page may ask for "only this lock"
    assert scope_of(html_of(site.get(ADMIN_PREFIX + "/banners/amount_too_low?lock=premium&scope=lock"))) == "lock"
    response = save_banner(site, "The **premium** room is for {tier}.", scope="lock")
    assert response.status_code == 302
    assert "for the lock \u201cpremium\u201d only" in html_of(site.get(response.headers["Location"]))
    assert "The <strong>premium</strong> room is for Gold." in html_of(site.get("/premium", "bob"))
    assert "room" not in html_of(site.get("/archive", "bob"))
    row = audit(site, "banner_text_set")[-1]
    assert row["user_id"] == "admin" and row["detail"]["lock"] == "premium" and row["detail"]["text"].startswith("The")
    # the page says which locks have a text of their own, and opens on that lock's text with "only this lock" chosen
    listing = html_of(site.get(ADMIN_PREFIX + "/banners?lock=premium"))
    assert "Locks with a text of their own: premium." in listing and "own text of \u201cpremium\u201d" in listing
    editing = html_of(site.get(ADMIN_PREFIX + "/banners/amount_too_low?lock=premium"))
    assert scope_of(editing) == "lock" and "The **premium** room is for {tier}.</textarea>" in editing
    assert '<li data-lock="premium">' in editing
    assert "The <strong>premium</strong> room is for Gold." in editing  # the preview, through the real template
    other = html_of(site.get(ADMIN_PREFIX + "/banners/amount_too_low?lock=archive"))
    preview = other.split('id="banner-preview"')[1].split("</div>")[0]
    assert scope_of(other) == "all" and "room is for" not in preview and "patronlock-banner" in preview


def test_saving_for_all_locks_keeps_a_locks_own_text(site: AdminSite) -> None:
    save_banner(site, "Premium's own.", scope="lock")
    response = save_banner(site, "Everyone's.", scope="all")
    assert response.status_code == 302
    assert "for all locks without a text of their own" in html_of(site.get(response.headers["Location"]))
    assert "Premium&#39;s own." in html_of(site.get("/premium", "bob"))
    assert audit(site, "banner_text_set")[-1]["detail"]["lock"] is None


def test_removing_a_locks_own_text(site: AdminSite) -> None:
    save_banner(site, "Premium's own.", scope="lock")
    response = site.post(ADMIN_PREFIX + "/banners/amount_too_low",
                         {"action": "remove", "remove": "premium", "lock": "supporters"})
    assert response.status_code == 302
    assert "shows the text of all locks again" in html_of(site.get(response.headers["Location"]))
    assert "Premium" not in html_of(site.get("/premium", "bob"))
    detail = audit(site, "banner_text_set")[-1]["detail"]
    assert (detail["reason"], detail["lock"], detail["text"]) == ("amount_too_low", "premium", None)
    again = site.post(ADMIN_PREFIX + "/banners/amount_too_low", {"action": "remove", "remove": "premium"})
    assert "has no text of its own" in html_of(site.get(again.headers["Location"]))
    assert len(audit(site, "banner_text_set")) == 2


def test_a_banner_text_over_the_limit_is_refused_in_plain_words_and_kept(site: AdminSite) -> None:
    text = "Upgrade " + "x" * 600
    response = save_banner(site, text, scope="lock")
    assert response.status_code == 422
    page = html_of(response)
    assert "The text is 608 characters long; a banner can be at most 500 characters. Shorten it by 108." in page
    assert f"{text}</textarea>" in page and "608 of at most 500 characters" in page and "pl-counter--over" in page
    assert audit(site, "banner_text_set") == []
    # line ends count once, as the counter in the browser counts them
    lines = "\r\n".join(["x" * 99] * 5)
    response = save_banner(site, lines)
    assert response.status_code == 302


def test_a_hostile_banner_text_is_shown_as_text(site: AdminSite) -> None:
    text = '<script>alert(1)</script> [click](javascript:alert`1`) <b onclick="x()">**bold**'
    response = site.post(ADMIN_PREFIX + "/banners/amount_too_low",
                         {"text": text, "lock": "premium", "action": "preview"})
    assert response.status_code == 422 and "A link must go to a web page" in html_of(response)
    text = '<script>alert(1)</script> <b onclick="x()">**bold** [Pledge]({pledge_url})'
    response = save_banner(site, text)
    assert response.status_code == 302
    page = html_of(site.get("/premium", "bob"))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b onclick=&#34;x()&#34;&gt;<strong>bold</strong>" in page
    assert '<a href="https://www.patreon.com/checkout/' in page and 'rel="nofollow noopener">Pledge</a>' in page


# -- policies -------------------------------------------------------------------------------------------------------


def policy_form(**changes: Any) -> dict[str, Any]:
    data = {"declined": "grace", "declined_grace_days": "3", "cancelled": "at_once", "first_charge":
            "after_first_charge", "count_free_trials": "y", "missing_runs": "3", "missing_hours": "",
            "breaker_min_patrons": "10", "breaker_percent": "5", "confirm": "1"}  # confirmed on the what-if step
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def test_policies_are_saved_and_audited(site: AdminSite) -> None:
    assert site.post(ADMIN_PREFIX + "/policies", policy_form()).status_code == 302
    with site.app.app_context():
        saved = get_policy_settings()
    assert saved.declined_grace_days == 3 and saved.cancelled == "at_once" and saved.count_gifted is False
    assert saved.missing_hours is None and saved.breaker_fraction == pytest.approx(0.05)
    assert audit(site, "policy_settings_set")[-1]["user_id"] == "admin"
    html = html_of(site.get(ADMIN_PREFIX + "/policies"))
    assert 'value="5"' in html and 'value="3"' in html


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"declined_grace_days": "99999"}, "Number must be between 0 and 3650"),
        ({"breaker_percent": "0"}, "percentage must be above 0"),
        ({"breaker_percent": "lots"}, "Write a percentage"),
        ({"missing_runs": "0"}, "Number must be at least 1"),
        ({"declined": "whenever"}, "Not a valid choice"),
    ],
)
def test_bad_policies_are_shown_inline_and_kept(site: AdminSite, changes: dict[str, str], message: str) -> None:
    response = site.post(ADMIN_PREFIX + "/policies", policy_form(**changes))
    assert response.status_code == 422
    html = html_of(response)
    assert message in html
    for value in changes.values():
        if value not in ("whenever",):
            assert f'value="{value}"' in html
    assert audit(site, "policy_settings_set") == []


# -- every worker within the check interval ----------------------------------------------------------------------------


def test_a_change_reaches_another_worker_through_the_version_stamp(make_app: Callable[..., Flask]) -> None:
    """Two apps on one database are two workers. Worker B checks the version every 2 s (its clock is ours): the
    admin's change on worker A is invisible to B until then, and applies right after, without a restart."""
    a = make_admin_site(make_app)
    b = make_admin_site(make_app, PATRONLOCK_SETTINGS_CHECK_SECONDS=2.0)
    ticks = [100.0]
    b.state.settings.clock = lambda: ticks[0]
    with b.app.app_context():
        assert [i.effective.tier_ids for i in list_locks() if i.name == "premium"] == [("t10",)]
    assert a.post(ADMIN_PREFIX + "/locks/premium", lock_form(tiers=["t3"])).status_code == 302
    with b.app.app_context():
        ticks[0] += 1.9
        assert [i.effective.tier_ids for i in list_locks() if i.name == "premium"] == [("t10",)]
        ticks[0] += 0.2
        assert [i.effective.tier_ids for i in list_locks() if i.name == "premium"] == [("t3",)]


def test_the_admin_is_the_current_user(site: AdminSite) -> None:
    @site.app.get("/who")
    def who() -> str:
        return str(current_user.get_id())

    assert site.get("/who").get_data(as_text=True) == "admin"
    assert CAMPAIGN == "c1" and NOW.year == 2026


# -- add-ons --------------------------------------------------------------------------------------------------------


def test_an_add_on_is_switched_off_and_on(site: AdminSite) -> None:
    from flask_patronlock import signals
    from flask_patronlock.addons import Addon

    heard: list[str] = []

    class Echo(Addon):
        name = "echo"
        version = "1.0"
        description = "Hears every patron change"

        def init_app(self, app: Flask, hooks: Any) -> None:
            hooks.connect(signals.patron_changed, lambda sender, patron, **kw: heard.append(patron.member_id))

    site.state.extension.register_addon(Echo(), app=site.app)
    html = html_of(site.get(ADMIN_PREFIX + "/addons"))
    assert 'data-addon="echo"' in html and "Hears every patron change" in html
    assert site.post(ADMIN_PREFIX + "/addons/echo", {"enabled": "0"}).status_code == 302
    site.apply("m-a", full_name="A")
    assert heard == []
    assert audit(site, "addon_switched")[-1]["user_id"] == "admin"
    site.post(ADMIN_PREFIX + "/addons/echo", {"enabled": "1"})
    site.apply("m-b", full_name="B")
    assert heard == ["m-b"]
    assert site.post(ADMIN_PREFIX + "/addons/nope", {"enabled": "1"}).status_code == 404


def test_url_locks_are_stored_in_one_spelling_and_impossible_ones_explained(site: AdminSite) -> None:
    data = {"site_lock": "", "paths-0-prefix": " /post/./ ", "paths-0-lock": "premium",
            "paths-1-prefix": "/files//gold//", "paths-1-lock": "premium"}
    assert site.post(ADMIN_PREFIX + "/locks/routing", data).status_code == 302
    stored = audit(site, "routing_set")[-1]["detail"]["routing"]
    assert stored["path_locks"] == {"/post": "premium", "/files/gold": "premium"}
    assert site.get("/post", "bob").status_code == 403
    bad = {"site_lock": "", "paths-0-prefix": "/post?page=2", "paths-0-lock": "premium",
           "paths-1-prefix": "/members#top", "paths-1-lock": "premium",
           "paths-2-prefix": "/Files/Gold", "paths-2-lock": "premium",
           "paths-3-prefix": "/files/./gold/", "paths-3-lock": "supporters"}
    response = site.post(ADMIN_PREFIX + "/locks/routing", bad)
    assert response.status_code == 422
    html = html_of(response)
    assert html.count("without the part from") == 2  # ? and #: a lock matches the path, not the query
    assert "the same URL as /Files/Gold" in html  # case and dot segments do not make another URL
    assert 'value="/post?page=2"' in html and 'value="/files/./gold/"' in html  # kept as typed to fix
    assert len(audit(site, "routing_set")) == 1


# -- richer access rules (issue 18) -------------------------------------------------------------------------------


def test_only_the_ticked_tiers_is_saved_and_shown_in_plain_words(site: AdminSite) -> None:
    site.apply("m-gold", full_name="Gol", entitled_cents=1000, entitled_tier_ids=("t10",), user_id="p-gol")
    site.link("gwen", "p-gol")
    page = html_of(site.get(ADMIN_PREFIX + "/locks/premium"))
    assert "Only the ticked tiers" in page and "any tier that costs at least as much" in page
    response = site.post(ADMIN_PREFIX + "/locks/premium", lock_form(tiers=["t5"], tier_match="exact"))
    assert response.status_code == 302
    with site.app.app_context():
        rule = get_lock_override("premium").rule  # type: ignore[union-attr]
    assert rule.tier_match == "exact" and rule.tier_ids == ("t5",)
    assert "tier Silver (5.00 a month) only" in html_of(site.get(ADMIN_PREFIX + "/locks/premium"))
    assert site.get("/premium", "bob").status_code == 200  # Silver
    assert site.get("/premium", "gwen").status_code == 403  # Gold is dearer, but not Silver
    response = site.post(ADMIN_PREFIX + "/locks/premium", lock_form(tier_match="sideways"))
    assert response.status_code == 422 and "Not a valid choice" in html_of(response)


def test_an_early_access_date_is_saved_and_opens_the_lock_to_everyone_on_the_day(site: AdminSite) -> None:
    response = site.post(ADMIN_PREFIX + "/locks/premium", lock_form(public_after="2026-04-01"))
    assert response.status_code == 302
    with site.app.app_context():
        rule = get_lock_override("premium").rule  # type: ignore[union-attr]
    assert rule.public_after is not None and rule.public_after.isoformat() == "2026-04-01T00:00:00+00:00"
    page = html_of(site.get(ADMIN_PREFIX + "/locks/premium"))
    assert "everyone from 1 April 2026 (early access)" in page and 'value="2026-04-01"' in page
    assert site.get("/premium", "bob").status_code == 403  # before the day: Gold or higher
    site.post(ADMIN_PREFIX + "/locks/premium", lock_form(public_after=NOW.date().isoformat()))
    assert site.get("/premium").status_code == 200  # from the day on: everyone, signed in or not
    response = site.post(ADMIN_PREFIX + "/locks/premium", lock_form(public_after="soonish"))
    assert response.status_code == 422 and "Not a valid date value" in html_of(response)
    assert 'value="soonish"' in html_of(response)


def test_patrons_when_published_is_a_tick_box_saved_with_the_rule(site: AdminSite) -> None:
    page = html_of(site.get(ADMIN_PREFIX + "/locks/premium"))
    assert "Only those who were patrons when the item was published" in page
    response = site.post(ADMIN_PREFIX + "/locks/premium", lock_form(tiers=["t5"], patrons_at_publish="y"))
    assert response.status_code == 302
    with site.app.app_context():
        assert get_lock_override("premium").rule.patrons_at_publish  # type: ignore[union-attr]
    assert "pledging when each item was published" in html_of(site.get(ADMIN_PREFIX + "/locks/premium"))
    site.post(ADMIN_PREFIX + "/locks/premium", lock_form(tiers=["t5"]))  # unticked
    with site.app.app_context():
        assert not get_lock_override("premium").rule.patrons_at_publish  # type: ignore[union-attr]


def test_free_members_is_a_tick_box_saved_with_the_rule(site: AdminSite) -> None:
    assert "Free members too" in html_of(site.get(ADMIN_PREFIX + "/locks/premium"))
    site.apply("m-free", full_name="Fre", patron_status=None, last_charge_status=None, last_charge_date=None,
               entitled_cents=0, entitled_tier_ids=(), will_pay_cents=0, user_id="p-fre")
    site.link("fay", "p-fre")
    assert site.get("/premium", "fay").status_code == 403
    response = site.post(ADMIN_PREFIX + "/locks/premium", lock_form(tiers=[], free_members="y"))
    assert response.status_code == 302
    with site.app.app_context():
        assert get_lock_override("premium").rule.free_members  # type: ignore[union-attr]
    assert "any member, free or paid" in html_of(site.get(ADMIN_PREFIX + "/locks/premium"))
    assert site.get("/premium", "fay").status_code == 200
