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
from flask_patronlock.banners import DEFAULT_TEXTS, fill
from flask_patronlock.settings import BANNER_REASONS, create_lock, delete_lock, get_banner_text, set_banner_text
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
