"""Connect with Patreon against the sandbox: link, entitle at once, refresh my status, unlink, re-authorize."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from connect_site import (
    Site,
    capture,
    csrf_token,
    log_in,
    logged_in,
    oauth_flow,
    problem_kind,
    sandbox_site,
    whoami,
)
from flask import Flask

from flask_patronlock import signals
from flask_patronlock.accounts import get_accounts
from flask_patronlock.state import get_state


@pytest.fixture
def site(make_app: Callable[..., Flask], patreon_sandbox: Any) -> Site:
    return sandbox_site(make_app, patreon_sandbox)


def flashes(site: Site, client: Any) -> list[str]:
    messages: list[str] = whoami(client)["flashes"]
    return messages


def test_connect_links_and_unlocks_at_once_even_with_another_email(site: Site, patreon_sandbox: Any) -> None:
    """The patron pledged as gold@patreon.example; the local account is local@site.example."""
    patreon_sandbox.add_patron("gold@patreon.example", tier="Gold", full_name="Gold Patron")
    client, user = logged_in(site, "local@site.example")
    with capture(signals.patron_linked, signals.patron_logged_in, signals.pledge_started) as seen:
        response = oauth_flow(client, "gold@patreon.example", next="/posts/7")
    assert response.status_code == 302 and response.location == "/posts/7"
    assert flashes(site, client) == [
        "Connected your Patreon account (gold@…). You're a Gold patron: posts for Gold and below are unlocked."
    ]
    with site.app.app_context():
        state = get_state()
        patron = state.store.patron_for_user(user.id, state.campaign_id())
        assert patron is not None and patron.patron_status == "active_patron" and patron.entitled_cents == 1000
        assert patron.source == "oauth" and patron.email == "gold@patreon.example"
        account = get_accounts().get(user.id)
        assert account is not None and not account.needs_reauth
    names = [name for name, _ in seen]
    assert names == ["pledge-started", "patron-linked"]
    linked = seen[1][1]
    assert linked["user"] is user and linked["user_id"] == user.id and linked["via"] == "connect"
    assert linked["patreon_user"].email == "gold@patreon.example" and linked["patron"] == patron

    page = client.get("/patreon/").get_data(as_text=True)
    assert 'data-patronlock-linked="yes"' in page and "gold@…" in page
    # page views never call Patreon: without synced tiers (patronlock_tiers) the page names the amount ...
    assert "You&#39;re a patron at $10.00 a month: posts for $10.00 a month and below are unlocked." in page
    # ... and once a sync stored the catalogue, the tier
    with site.app.app_context():
        campaign = state.creator_client().campaign(state.campaign_id())
        state.store.replace_tiers(campaign.id, campaign.tiers)
        state.settings.invalidate()
    assert "You&#39;re a Gold patron" in client.get("/patreon/").get_data(as_text=True)


def test_non_patron_is_told_the_next_step_then_refresh_unlocks(site: Site, patreon_sandbox: Any) -> None:
    patreon_sandbox.add_user("fan@patreon.example")
    client, user = logged_in(site, "fan@site.example")
    oauth_flow(client, "fan@patreon.example")
    (message,) = flashes(site, client)
    assert message.startswith("Connected your Patreon account (fan@…). We found no pledge to this creator")
    assert "This site and Patreon are separate accounts" in message

    # pledged after connecting: Refresh my status unlocks it without waiting for a sync
    patreon_sandbox.add_patron(user="fan@patreon.example", tier="Silver")
    token = csrf_token(client)
    response = client.post("/patreon/refresh", data={"csrf_token": token, "next": "/posts/2"})
    assert response.status_code == 302 and response.location == "/posts/2"
    assert flashes(site, client) == [
        "Refreshed your Patreon status. You're a Silver patron: posts for Silver and below are unlocked."
    ]
    with site.app.app_context():
        patron = get_state().store.patron_for_user(user.id)
        assert patron is not None and patron.entitled_cents == 500

    # at most once per 5 minutes, with a clear message
    client.post("/patreon/refresh", data={"csrf_token": token})
    (limited,) = flashes(site, client)
    assert "You can refresh it again in 5 minutes" in limited
    store = get_state(site.app).store
    later = store.clock() + timedelta(minutes=5, seconds=1)
    store.clock = lambda: later
    patreon_sandbox.cancel("fan@patreon.example")
    client.post("/patreon/refresh", data={"csrf_token": token})
    (cancelled,) = flashes(site, client)
    assert cancelled.startswith("Refreshed your Patreon status. Your pledge has ended, but you paid through")


def test_declined_payment_is_described(site: Site, patreon_sandbox: Any) -> None:
    patreon_sandbox.add_patron("dee@patreon.example", tier="Bronze")
    patreon_sandbox.decline("dee@patreon.example")
    client, _ = logged_in(site, "dee@site.example")
    oauth_flow(client, "dee@patreon.example")
    (message,) = flashes(site, client)
    assert "Patreon could not charge your last payment. You're still a Bronze patron for now" in message


def test_refresh_and_unlink_need_post_login_and_csrf(site: Site, patreon_sandbox: Any) -> None:
    patreon_sandbox.add_patron("pat@patreon.example", tier="Gold")
    user = site.add_user("pat@site.example")
    client = site.app.test_client()
    assert client.post("/patreon/unlink").status_code == 302  # anonymous: Flask-Login's login view
    log_in(client, user)
    oauth_flow(client, "pat@patreon.example")
    flashes(site, client)
    assert client.get("/patreon/unlink").status_code == 405
    assert client.get("/patreon/refresh").status_code == 405
    for path in ("/patreon/unlink", "/patreon/refresh"):
        for data in ({}, {"csrf_token": "forged"}):
            response = client.post(path, data=data)
            assert response.status_code == 400 and problem_kind(response.get_data(as_text=True)) == "csrf"
    with site.app.app_context():
        assert get_accounts().get(user.id) is not None

    token = csrf_token(client)
    with capture(signals.patron_unlinked) as seen:
        response = client.post("/patreon/unlink", data={"csrf_token": token})
    assert response.status_code == 302 and response.location == "/patreon/"
    assert seen == [("patron-unlinked", {"user_id": user.id, "patreon_user_id": seen[0][1]["patreon_user_id"],
                                         "reason": "user"})]  # fmt: skip
    assert flashes(site, client)[0].startswith("Disconnected your Patreon account.")
    with site.app.app_context():
        assert get_accounts().get(user.id) is None
        assert get_state().store.patron_for_user(user.id) is None  # no longer matched: locked again
    page = client.get("/patreon/").get_data(as_text=True)
    assert 'data-patronlock-linked="no"' in page
    # the header works too (JavaScript clients)
    response = client.post("/patreon/unlink", headers={"X-CSRFToken": token})
    assert response.status_code == 302
    assert flashes(site, client) == ["No Patreon account was connected."]


def test_a_patreon_account_linked_elsewhere_is_refused(site: Site, patreon_sandbox: Any) -> None:
    patreon_sandbox.add_patron("shared@patreon.example", tier="Gold")
    first, second = site.add_user("a@site.example"), site.add_user("b@site.example")
    client = site.app.test_client()
    log_in(client, first)
    oauth_flow(client, "shared@patreon.example")
    other = site.app.test_client()
    log_in(other, second)
    response = oauth_flow(other, "shared@patreon.example")
    assert response.status_code == 409 and problem_kind(response.get_data(as_text=True)) == "linked_elsewhere"
    with site.app.app_context():
        assert get_accounts().get(second.id) is None
        account = get_accounts().get(first.id)
        assert account is not None


def test_connecting_another_patreon_account_moves_the_link(site: Site, patreon_sandbox: Any) -> None:
    patreon_sandbox.add_user("old@patreon.example")
    patreon_sandbox.add_patron("new@patreon.example", tier="Bronze")
    client, user = logged_in(site, "me@site.example")
    oauth_flow(client, "old@patreon.example")
    with capture(signals.patron_unlinked, signals.patron_linked) as seen:
        oauth_flow(client, "new@patreon.example")
    assert [name for name, _ in seen] == ["patron-unlinked", "patron-linked"]
    assert seen[0][1]["reason"] == "relinked"
    with site.app.app_context():
        patron = get_state().store.patron_for_user(user.id)
        assert patron is not None and patron.email == "new@patreon.example"


def test_needs_reauth_is_shown_and_connecting_again_clears_it(site: Site, patreon_sandbox: Any) -> None:
    patreon_sandbox.add_patron("re@patreon.example", tier="Gold")
    client, user = logged_in(site, "re@site.example")
    oauth_flow(client, "re@patreon.example")
    with site.app.app_context():
        get_accounts().mark_needs_reauth(user.id, why="test")
    page = client.get("/patreon/").get_data(as_text=True)
    assert 'data-patronlock-needs-reauth="yes"' in page
    assert "You&#39;re a patron at $10.00 a month" in page  # access unchanged meanwhile
    client.post("/patreon/refresh", data={"csrf_token": csrf_token(client)})
    assert "connect your account again" in flashes(site, client)[-1]
    with capture(signals.patron_linked) as seen:
        oauth_flow(client, "re@patreon.example")
    assert seen == []  # a re-authorization is not a new link
    assert flashes(site, client)[-1].startswith("Reconnected your Patreon account (re@…).")
    with site.app.app_context():
        account = get_accounts().get(user.id)
        assert account is not None and not account.needs_reauth


def test_anonymous_connect_goes_to_log_in_with_patreon(site: Site) -> None:
    client = site.app.test_client()
    response = client.get("/patreon/connect", query_string={"next": "/posts/3"})
    assert response.status_code == 302 and response.location == "/patreon/login?next=/posts/3"
    site.app.config["PATRONLOCK_LOGIN_ENABLED"] = False
    response = client.get("/patreon/connect")
    assert response.status_code == 302 and response.location.startswith("/_test/login")
    assert client.get("/patreon/login").status_code == 404
    assert client.get("/patreon/").status_code == 302


def test_anonymous_status_page_offers_log_in(site: Site) -> None:
    page = site.app.test_client().get("/patreon/").get_data(as_text=True)
    assert 'href="/patreon/login"' in page


def test_prefix_is_configurable(make_app: Callable[..., Flask], patreon_sandbox: Any) -> None:
    site = sandbox_site(make_app, patreon_sandbox, PATRONLOCK_URL_PREFIX="/members/patreon")
    with site.app.test_request_context():
        from flask import url_for

        assert url_for("patronlock.callback") == "/members/patreon/callback"
        assert url_for("patronlock.status") == "/members/patreon/"


def test_cancelled_on_patreon(site: Site, patreon_sandbox: Any) -> None:
    patreon_sandbox.add_user("no@patreon.example")
    client, user = logged_in(site, "no@site.example")
    response = oauth_flow(client, "no@patreon.example", decision="deny")
    html = response.get_data(as_text=True)
    assert response.status_code == 403 and problem_kind(html) == "access_denied"
    assert "Try again" in html and "What to do" in html
    with site.app.app_context():
        assert get_accounts().get(user.id) is None


def test_responses_are_not_cached(site: Site) -> None:
    response = site.app.test_client().get("/patreon/")
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"


def test_refresh_during_an_outage_is_a_clear_page_and_costs_no_try(site: Site, patreon_sandbox: Any) -> None:
    patreon_sandbox.add_patron("out@patreon.example", tier="Gold")
    client, _ = logged_in(site, "out@site.example")
    oauth_flow(client, "out@patreon.example")
    flashes(site, client)
    token = csrf_token(client)
    patreon_sandbox.api_down = True
    response = client.post("/patreon/refresh", data={"csrf_token": token})
    html = response.get_data(as_text=True)
    assert response.status_code == 502 and problem_kind(html) == "patreon_unavailable"
    assert 'href="/patreon/"' in html  # back to the status page, not into a new OAuth flow
    patreon_sandbox.api_down = False
    client.post("/patreon/refresh", data={"csrf_token": token})
    assert flashes(site, client)[0].startswith("Refreshed your Patreon status. You're a Gold patron")


def test_amounts_use_the_sites_currency_symbol(make_app: Callable[..., Flask], patreon_sandbox: Any) -> None:
    site = sandbox_site(make_app, patreon_sandbox, PATRONLOCK_CURRENCY_SYMBOL="€")
    patreon_sandbox.add_patron("eu@patreon.example", amount_cents=750)
    client, _ = logged_in(site, "eu@site.example")
    oauth_flow(client, "eu@patreon.example")
    assert "posts for Silver and below" in flashes(site, client)[0]  # the identity names the tier
    assert "patron at €7.50 a month" in client.get("/patreon/").get_data(as_text=True)  # no synced tiers yet


def test_the_creators_policy_decides_the_wording(site: Site, patreon_sandbox: Any) -> None:
    from flask_patronlock.settings import set_policy_settings

    with site.app.app_context():
        set_policy_settings({"declined": "restrict"}, by="test")
    patreon_sandbox.add_patron("dee@patreon.example", tier="Bronze")
    patreon_sandbox.decline("dee@patreon.example")
    client, _ = logged_in(site, "dee@site.example")
    oauth_flow(client, "dee@patreon.example")
    (message,) = flashes(site, client)
    assert "Patreon could not charge your payment, so patron posts are locked for now" in message


def test_connect_and_an_unchanged_refresh_stamp_the_session(site: Site, patreon_sandbox: Any) -> None:
    """A viewer's own connect / refresh must be seen on their next page on every worker (the viewer cache)."""
    patreon_sandbox.add_patron("same@patreon.example", tier="Bronze")
    client, _ = logged_in(site, "same@site.example")
    oauth_flow(client, "same@patreon.example")
    with client.session_transaction() as sess:
        assert "_patronlock_vstamp" in sess
        del sess["_patronlock_vstamp"]
    client.post("/patreon/refresh", data={"csrf_token": csrf_token(client)})  # nothing changed: no signal sent
    with client.session_transaction() as sess:
        assert "_patronlock_vstamp" in sess
