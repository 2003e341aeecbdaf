"""Banners: one template per reason, the one next step with its link, placeholders filled, creator texts, overriding
templates, the base template, and the banner-context and pledge-url filters."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from jinja2 import ChoiceLoader, DictLoader

from flask_patronlock import locked, signals
from flask_patronlock.banners import DEFAULT_TEXTS, MAX_TEXT_LENGTH, check_text, fill, render_text
from flask_patronlock.settings import (
    BANNER_REASONS,
    create_lock,
    delete_lock,
    get_banner_text,
    list_banner_overrides,
    set_banner_text,
)
from flask_patronlock.signals import filter_receiver
from tests.helpers.constants import NOW
from tests.helpers.sites import Site, make_site

BASE = "https://patreon.test"


def add_patreon_blueprint(app: Flask) -> None:
    """Issue 3's blueprint (registered by init_app) provides patronlock.connect and patronlock.login under /patreon."""
    assert app.url_map.bind("localhost").build("patronlock.login") == "/patreon/login"


@pytest.fixture
def site(make_app: Callable[..., Flask]) -> Site:
    site = make_site(make_app, PATRONLOCK_OAUTH_BASE_URL=BASE, PATRONLOCK_CREATOR_NAME="Kopi Studio")
    app = site.app
    add_patreon_blueprint(app)
    site.ext.lock("premium", tier="Gold")
    site.ext.lock("early", patron_since_before=NOW - timedelta(days=200))
    site.ext.lock("drip", drip_months=6)
    site.ext.lock("lifetime", lifetime_cents=10000)
    site.ext.lock("gold-only", tier="Gold", exact=True)
    site.ext.lock("members", free_members=True)
    with app.app_context():  # a lock a creator made, then deleted: content still on it stays locked
        create_lock("gone", title="Gone", by="creator")
        delete_lock("gone", by="creator")
    for name in ("premium", "early", "drip", "lifetime", "gold-only", "members", "gone"):
        app.add_url_rule(f"/{name}", name, locked(name)((lambda n: lambda: f"SECRET:{n}")(name)))
    site.user("stranger")
    site.link("linked-only", "p-nobody")
    site.linked_patron("silver", entitled_cents=500, entitled_tier_ids=("t5",))
    site.linked_patron(
        "declined",
        patron_status="declined_patron",
        last_charge_status="Declined",
        last_charge_date=NOW - timedelta(days=20),
    )
    site.linked_patron(
        "former",
        patron_status="former_patron",
        last_charge_status="Paid",
        last_charge_date=NOW - timedelta(days=90),
        next_charge_date=None,
        entitled_cents=0,
        entitled_tier_ids=(),
    )
    site.linked_patron("gold")
    site.linked_patron("platinum", entitled_cents=2500, entitled_tier_ids=("t25",))
    return site


# reason -> (user, path, the action's href (None: no action), words the message must contain)
CASES: dict[str, tuple[str | None, str, str | None, tuple[str, ...]]] = {
    "anonymous": (None, "/premium", "/patreon/login?next=/premium", ("Kopi Studio", "Log in")),
    "not_linked": ("stranger", "/premium", "/patreon/connect?next=/premium", ("separate", "connect")),
    "not_a_patron": ("linked-only", "/premium", f"{BASE}/checkout/c1?rid=t10", ("Gold", "Pledge Gold")),
    "amount_too_low": ("silver", "/premium", f"{BASE}/checkout/c1?rid=t10", ("Gold", "$10.00", "Upgrade")),
    "payment_declined": ("declined", "/premium", f"{BASE}/settings/memberships", ("declined", "payment method")),
    "former_patron": ("former", "/premium", f"{BASE}/checkout/c1?rid=t10", ("Rejoin at Gold", "Kopi Studio")),
    "not_patron_at_date": ("gold", "/early", None, ("August 27, 2025",)),
    "drip_not_reached": ("gold", "/drip", None, ("unlocks for you on June 5, 2026", "opens by itself")),
    "lifetime_too_low": ("gold", "/lifetime", f"{BASE}/checkout/c1", ("$100.00 in total",)),
    "wrong_tier": ("platinum", "/gold-only", f"{BASE}/checkout/c1?rid=t10", ("at Gold.", "change it to Gold")),
    "not_a_member": ("linked-only", "/members", f"{BASE}/checkout/c1", ("free or paid", "a free membership")),
    "lock_unavailable": ("gold", "/gone", None, ("isn't available", "Kopi Studio")),
}


def test_every_denying_reason_has_a_case() -> None:
    assert set(CASES) == BANNER_REASONS == set(DEFAULT_TEXTS)


@pytest.mark.parametrize("reason", sorted(CASES))
def test_each_reason_renders_its_banner_with_the_next_step(site: Site, reason: str) -> None:
    user, path, href, words = CASES[reason]
    response = site.get(path, user)
    assert response.status_code == 403
    body = response.get_data(as_text=True)
    assert f'class="patronlock-banner patronlock-banner--{reason}"' in body
    message = html.unescape(re.search(r'<p class="patronlock-message">(.*?)</p>', body, re.S).group(1))  # type: ignore[union-attr]
    assert "{" not in message and "}" not in message  # every placeholder filled
    for word in words:
        assert word in message, (word, message)
    actions = re.findall(r'class="patronlock-action" href="([^"]*)"', body)
    if href is None:
        assert actions == []
    else:
        assert [html.unescape(a) for a in actions] == [href]
    if reason == "drip_not_reached":
        # opens six months after the pledge start (100 days before NOW: 2025-12-05)
        assert '<time datetime="2026-06-05T12:00:00+00:00">June 5, 2026</time>' in body


def test_login_and_connect_links_fall_back_without_the_blueprint(make_app: Callable[..., Flask]) -> None:
    site = make_site(make_app, PATRONLOCK_URL_PREFIX=None)  # the host has its own views, or none
    site.ext.lock("premium", tier="Gold")
    site.app.add_url_rule("/premium", "premium", locked("premium")(lambda: "x"))
    site.app.add_url_rule("/signin", "signin", lambda: "signin")
    site.user("stranger")
    # neither patronlock.login nor a login_view nor config: the banner still says what to do, without a link
    for user in (None, "stranger"):
        body = site.get("/premium", user).get_data(as_text=True)
        assert 'class="patronlock-message"' in body and 'class="patronlock-action"' not in body
    site.app.login_manager.login_view = "signin"  # type: ignore[attr-defined]
    assert 'href="/signin?next=/premium"' in site.get("/premium").get_data(as_text=True)
    site.app.config.update(PATRONLOCK_LOGIN_URL="/custom-login", PATRONLOCK_CONNECT_URL="https://x.test/link?a=1")
    assert 'href="/custom-login?next=%2Fpremium"' in site.get("/premium").get_data(as_text=True)
    assert 'href="https://x.test/link?a=1&amp;next=%2Fpremium"' in site.get("/premium", "stranger").get_data(
        as_text=True
    )


def test_tier_without_url_and_amount_locks_pick_the_cheapest_fitting_tier(make_app: Callable[..., Flask]) -> None:
    site = make_site(make_app)
    site.ext.lock("platinum", tier="Platinum")  # stored without a url
    site.ext.lock("seven", min_cents=700)
    site.linked_patron("silver", entitled_cents=500, entitled_tier_ids=("t5",))
    with site.app.test_request_context(headers={"X-User": "silver"}):
        from flask_patronlock import decision_for
        from flask_patronlock.banners import banner_context
        from flask_patronlock.locks import as_lock

        ctx = banner_context(as_lock("platinum"), decision_for("platinum"))
        assert ctx["pledge_url"] == "https://www.patreon.com/checkout/c1?rid=t25" and ctx["tier"] == "Platinum"
        ctx = banner_context(as_lock("seven"), decision_for("seven"))
        assert ctx["tier"] == "Gold" and ctx["amount"] == "$7.00"  # the cheapest tier of at least $7
        assert ctx["action_url"] == "https://www.patreon.com/checkout/c1?rid=t10"


def test_creator_text_with_placeholders(site: Site) -> None:
    with site.app.app_context():
        set_banner_text("amount_too_low", "Go {tier} for {amount} at {pledge_url}, love {creator}", by="kopi")
        assert get_banner_text("amount_too_low").startswith("Go {tier}")
    body = html.unescape(site.get("/premium", "silver").get_data(as_text=True))
    assert f"Go Gold for $10.00 at {BASE}/checkout/c1?rid=t10, love Kopi Studio" in body
    with site.app.app_context():
        set_banner_text("amount_too_low", None, by="kopi")
        assert get_banner_text("amount_too_low") == DEFAULT_TEXTS["amount_too_low"]
        with pytest.raises(ValueError, match=r"\{teir\}"):
            set_banner_text("amount_too_low", "Go {teir}")
        with pytest.raises(ValueError, match="not a reason"):
            set_banner_text("allowed", "hi")


def test_fill_is_plain_substitution() -> None:
    assert fill("{tier} {tier.__class__} {0} {missing}", {"tier": "Gold"}) == "Gold {tier.__class__} {0} {missing}"


def test_app_overrides_a_banner_template_and_the_base(site: Site) -> None:
    site.app.jinja_loader = ChoiceLoader(  # type: ignore[assignment]
        [
            DictLoader(
                {
                    "patronlock/banners/amount_too_low.html": "<b>UPGRADE to {{ tier }}: {{ action_url }}</b>",
                    "layout.html": "<main>{% block title %}{% endblock %}|{% block content %}{% endblock %}</main>",
                }
            )
        ]
    )
    site.app.config["PATRONLOCK_BASE_TEMPLATE"] = "layout.html"
    body = site.get("/premium", "silver").get_data(as_text=True)
    assert body.startswith("<main>Patrons only|")
    assert f"<b>UPGRADE to Gold: {BASE}/checkout/c1?rid=t10</b>" in body
    assert 'class="patronlock-banner' in site.get("/premium", None).get_data(as_text=True)  # others unchanged


@pytest.fixture
def connected() -> Iterator[list[tuple[Any, Any]]]:
    made: list[tuple[Any, Any]] = []
    yield made
    for signal, receiver in made:
        signal.disconnect(receiver)


def test_banner_context_and_pledge_url_filters(site: Site, connected: list[tuple[Any, Any]]) -> None:
    @filter_receiver(signals.banner_context)
    def shout(sender: Any, value: dict[str, Any], **kw: Any) -> dict[str, Any]:
        assert kw["lock"] == "premium" and kw["decision"].reason == value["reason"]
        return {**value, "message": value["message"].upper()}

    @filter_receiver(signals.pledge_url)
    def tag(sender: Any, value: str, **kw: Any) -> str:
        return value + ("&" if "?" in value else "?") + f"utm=site&cents={kw['cents']}"

    connected.extend([(signals.banner_context, shout), (signals.pledge_url, tag)])
    body = html.unescape(site.get("/premium", "silver").get_data(as_text=True))
    assert "UPGRADE YOUR PLEDGE TO GOLD" in body
    assert f'href="{BASE}/checkout/c1?rid=t10&utm=site&cents=1000"' in body


def test_an_exact_tier_lock_does_not_say_or_higher(site: Site) -> None:
    body = html.unescape(site.get("/gold-only", "linked-only").get_data(as_text=True))
    assert "This is for patrons of Kopi Studio at Gold. Pledge Gold on Patreon to see it." in body
    assert "or higher" not in body
    assert site.get("/gold-only", "gold").status_code == 200
    assert site.get("/premium", "platinum").status_code == 200  # the ladder lock lets the dearer tier in


def test_an_early_access_banner_says_when_it_opens_to_everyone(site: Site) -> None:
    site.ext.lock("sneak-peek", tier="Gold", public_after=NOW + timedelta(days=20))
    site.ext.lock("was-early", tier="Gold", public_after=NOW - timedelta(days=1))
    for name in ("sneak-peek", "was-early"):
        site.app.add_url_rule(f"/{name}", name, locked(name)((lambda n: lambda: f"SECRET:{n}")(name)))
    for user in (None, "silver"):
        response = site.get("/sneak-peek", user)
        assert response.status_code == 403
        assert "Patrons can see this now; it opens to everyone on April 4, 2026." in response.get_data(as_text=True)
    assert site.get("/sneak-peek", "gold").get_data(as_text=True) == "SECRET:sneak-peek"
    assert site.get("/was-early", None).get_data(as_text=True) == "SECRET:was-early"
    body = site.get("/sneak-peek", None, headers={"Accept": "application/json"}).get_json()
    assert body["early_access"] == "Patrons can see this now; it opens to everyone on April 4, 2026."
    assert "patronlock-early-access" not in site.get("/premium", None).get_data(as_text=True)
    with site.app.app_context():
        set_banner_text("anonymous", "Early birds only until {public_date}. Log in.")
    body = html.unescape(site.get("/sneak-peek", None).get_data(as_text=True))
    assert "Early birds only until April 4, 2026. Log in." in body and "patronlock-early-access" not in body


def test_a_lock_on_the_free_tier_never_asks_a_free_member_to_pledge_free(make_app: Callable[..., Flask]) -> None:
    from tests.helpers.constants import FREE, GOLD, SILVER

    site = make_site(make_app, tiers=(FREE, SILVER, GOLD), PATRONLOCK_OAUTH_BASE_URL=BASE,
                     PATRONLOCK_CREATOR_NAME="Kopi Studio")
    site.ext.lock("community", tier="Free")
    site.app.add_url_rule("/community", "community", locked("community")(lambda: "SECRET:community"))
    site.linked_patron(  # a free member as Patreon reports one: no patron status, the $0 tier, nothing paid
        "freebie", patron_status=None, last_charge_status=None, last_charge_date=None, next_charge_date=None,
        entitled_cents=0, entitled_tier_ids=("free",), will_pay_cents=0, lifetime_cents=0, pledge_start=None,
    )
    site.link("outsider", "p-nobody")
    assert site.get("/community", "freebie").get_data(as_text=True) == "SECRET:community"
    response = site.get("/community", "outsider")
    body = html.unescape(response.get_data(as_text=True))
    assert response.status_code == 403 and "Pledge Free" not in body
    assert "This is for members of Kopi Studio, free or paid." in body
    assert re.findall(r'class="patronlock-action" href="([^"]*)"', body) == [f"{BASE}/checkout/c1?rid=free"]
    assert "Join for free on Patreon" in body


# -- a lock's own text, the length limit, the formatting subset (issue 17 item 4) ----------------------------------


def message_of(body: str) -> str:
    match = re.search(r'<p class="patronlock-message">(.*?)</p>', body, re.S)
    assert match is not None, body
    return match.group(1)


def test_a_locks_own_text_wins_over_the_site_wide_text_which_wins_over_the_default(site: Site) -> None:
    with site.app.app_context():
        assert get_banner_text("amount_too_low", lock="premium") == DEFAULT_TEXTS["amount_too_low"]
        set_banner_text("amount_too_low", "Site-wide {tier}.", by="kopi")
        set_banner_text("amount_too_low", "Premium only: {tier}.", lock="premium", by="kopi")
        assert get_banner_text("amount_too_low") == "Site-wide {tier}."
        assert get_banner_text("amount_too_low", lock="premium") == "Premium only: {tier}."
        assert get_banner_text("amount_too_low", lock="lifetime") == "Site-wide {tier}."
        assert get_banner_text("not_a_patron", lock="premium") == DEFAULT_TEXTS["not_a_patron"]  # other reasons
        assert list_banner_overrides("amount_too_low") == {"premium": "Premium only: {tier}."}
        set_banner_text("amount_too_low", None, by="kopi")  # the site-wide text back to the default ...
        assert get_banner_text("amount_too_low", lock="premium") == "Premium only: {tier}."  # ... the lock keeps its
        assert get_banner_text("amount_too_low", lock="lifetime") == DEFAULT_TEXTS["amount_too_low"]
        set_banner_text("amount_too_low", "", lock="premium", by="kopi")  # removing the lock's text
        assert list_banner_overrides("amount_too_low") == {}
        assert get_banner_text("amount_too_low", lock="premium") == DEFAULT_TEXTS["amount_too_low"]
        with pytest.raises(LookupError, match="nope"):
            set_banner_text("amount_too_low", "hi", lock="nope")
        set_banner_text("amount_too_low", None, lock="nope")  # removing never needs the lock (it may be gone)


def test_a_locks_own_text_shows_on_that_lock_only(site: Site) -> None:
    site.ext.lock("premium2", tier="Gold")
    site.app.add_url_rule("/premium2", "premium2", locked("premium2")(lambda: "SECRET"))
    with site.app.app_context():
        set_banner_text("amount_too_low", "The **premium** archive wants {tier}.", lock="premium", by="kopi")
    assert message_of(site.get("/premium", "silver").get_data(as_text=True)) == (
        "The <strong>premium</strong> archive wants Gold."
    )
    other = html.unescape(message_of(site.get("/premium2", "silver").get_data(as_text=True)))
    assert "archive" not in other and other.startswith("This is for patrons of Kopi Studio at Gold")
    # another reason on the same lock keeps the site-wide (here: built-in) text
    assert "separate" in html.unescape(message_of(site.get("/premium", "stranger").get_data(as_text=True)))


def test_a_saved_text_reaches_another_worker_through_the_settings_version(site: Site) -> None:
    from flask_patronlock.settings_cache import SettingsCache

    other = SettingsCache(site.state.store, lambda: 0)
    before = other.current()
    with site.app.app_context():
        set_banner_text("former_patron", "Come back to {creator}", lock="premium", by="kopi")
    after = other.current()
    assert after.version > before.version
    assert after.banner_text("former_patron", "premium") == "Come back to {creator}"
    assert after.banner_text("former_patron", "drip") is None


def test_the_length_limit_counts_what_was_typed() -> None:
    check_text("x" * MAX_TEXT_LENGTH)
    with pytest.raises(ValueError, match=r"501 characters long; a banner can be at most 500 characters\. Shorten"):
        check_text("x" * (MAX_TEXT_LENGTH + 1))
    with pytest.raises(ValueError, match="Shorten it by 9,500"):
        check_text("y" * 10_000)


def test_formatting_bold_italics_and_links() -> None:
    values = {"tier": "Gold", "pledge_url": "https://patreon.test/checkout/c1?rid=t10&x=1", "login_url": "/login"}
    rendered, plain = render_text("**Bold {tier}**, *so* [pledge]({pledge_url}) or [sign in]({login_url}).", values)
    assert rendered == (
        '<strong>Bold Gold</strong>, <em>so</em> <a href="https://patreon.test/checkout/c1?rid=t10&amp;x=1" '
        'rel="nofollow noopener">pledge</a> or <a href="/login" rel="nofollow noopener">sign in</a>.'
    )
    assert plain == "Bold Gold, so pledge or sign in."
    nested, _ = render_text("**a *b* [c **d**](mailto:kopi@studio.test) e**", {})
    assert nested == (
        '<strong>a <em>b</em> <a href="mailto:kopi@studio.test" rel="nofollow noopener">c <strong>d</strong></a> e'
        "</strong>"
    )
    assert render_text("2*3*4 costs * nothing *", {})[0] == "2<em>3</em>4 costs * nothing *"


def assert_safe(rendered: str, plain: str) -> None:
    """Only <a href>, <strong> and <em>; links to web pages, mail or this site; the text is the plain text."""
    for tag, attributes in re.findall(r"<(\w+)([^>]*)>", rendered):
        assert tag in {"a", "strong", "em"}, rendered
        if tag == "a":
            match = re.fullmatch(r' href="([^"]*)" rel="nofollow noopener"', attributes)
            assert match is not None, rendered
            href = match.group(1)
            assert href.startswith(("https://", "http://", "mailto:", "/")) and not href.startswith("//"), href
        else:
            assert attributes == "", rendered
    assert html.unescape(re.sub(r"<[^>]*>", "", rendered)) == plain


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<script>alert(1)</script>hi", "&lt;script&gt;alert(1)&lt;/script&gt;hi"),
        ('<a href="javascript:x" onclick="x()">x</a>', "&lt;a href=&#34;javascript:x&#34; onclick=&#34;x()&#34;&gt;x"),
        ("<b>unclosed <i>tags", "&lt;b&gt;unclosed &lt;i&gt;tags"),
        ("**unclosed *bold [link](https://x.test", "**unclosed *bold [link](https://x.test"),
        ("[x](javascript:alert(1))", "[x](javascript:alert(1))"),
        ("[x](javascript:alert`1`)", "x"),
        ("[x](JaVaScRiPt:alert`1`)", "x"),
        ("[x](data:text/html,hi)", "x"),
        ("[x](//evil.test/)", "x"),
        ("[x](https://kopi.test@evil.test/)", "x"),
        ("[x](https://evil.test\"onclick=x/)", "x"),
        ("[x](/\\evil.test/)", "x"),
        ('[x](https://a.test/"onclick="alert`1`)', '<a href="https://a.test/%22onclick=%22alert`1`" rel'),
        ("[a [b](https://b.test)](https://a.test)", '[a <a href="https://b.test" rel="nofollow noopener">b</a>]'),
        ("**<em onclick=x>**", "<strong>&lt;em onclick=x&gt;</strong>"),
    ],
)
def test_hostile_text_stays_text(text: str, expected: str) -> None:
    rendered, plain = render_text(text, {})
    assert expected in rendered
    assert_safe(rendered, plain)


@pytest.mark.parametrize(
    "value",
    ["<script>alert(1)</script>", "**bold** [x](https://evil.test)", '"><img src=x onerror=alert(1)>', "{tier}"],
)
def test_a_placeholder_value_is_always_text(value: str) -> None:
    values = {"creator": value, "pledge_url": "https://p.test/", "tier": "Gold"}
    rendered, plain = render_text("Hi {creator}, [pledge {creator}]({pledge_url}) *{creator}*", values)
    assert_safe(rendered, plain)
    assert plain == f"Hi {value}, pledge {value} {value}"
    assert re.findall(r'href="([^"]*)"', rendered) == ["https://p.test/"]


def test_a_message_is_safe_inside_an_attribute_too(site: Site) -> None:
    from flask import render_template_string

    rendered, _ = render_text("\" onmouseover=\"alert(1) 'x' **b**", {})
    with site.app.app_context():
        out = render_template_string('<p title="{{ m }}" data-x=\'{{ m }}\'>', m=rendered)
    assert out.count("<p ") == 1 and "onmouseover=\"" not in out and "'x'" not in out and "&#34;" in out


def test_a_link_placeholder_filled_with_something_unsafe_is_no_link() -> None:
    rendered, plain = render_text("[Pledge]({pledge_url})", {"pledge_url": "javascript:alert(1)"})
    assert rendered == "Pledge" and plain == "Pledge"
    assert render_text("[Connect]({connect_url})", {"connect_url": ""})[0] == "Connect"


def test_links_that_can_never_be_safe_are_refused_when_saved() -> None:
    for text in ("[x](javascript:alert`1`)", "[x]({tier})", "[x](ftp://a.test/)", "[x](//evil.test)"):
        with pytest.raises(ValueError, match="A link must go to a web page"):
            check_text(text)
    for text in ("[x]({pledge_url})", "[x](https://a.test/{tier})", "[x](mailto:kopi@studio.test)", "[x](/about)"):
        check_text(text)


def test_a_formatted_text_renders_in_the_banner_json_and_image_as_plain_text(site: Site) -> None:
    with site.app.app_context():
        set_banner_text("amount_too_low", "**Upgrade** to {tier} & *more*", lock="premium", by="kopi")
    body = site.get("/premium", "silver").get_data(as_text=True)
    assert message_of(body) == "<strong>Upgrade</strong> to Gold &amp; <em>more</em>"
    data = site.get("/premium", "silver", headers={"Accept": "application/json"}).get_json()
    assert data["message"] == "Upgrade to Gold & more"
