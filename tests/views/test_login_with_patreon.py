"""Log in with Patreon against the sandbox: linked users, sign-up through the host's callback, email matching that
never links silently, and the browser-free end-to-end from anonymous to linked and entitled."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from flask_patronlock import signals
from flask_patronlock.accounts import get_accounts
from flask_patronlock.state import get_state
from tests.helpers.connect import (
    ConnectSite,
    capture,
    log_in,
    logged_in,
    oauth_flow,
    problem_kind,
    sandbox_site,
    whoami,
)

LOGIN = "/patreon/login"


@pytest.fixture
def site(make_app: Callable[..., Flask], patreon_sandbox: Any) -> ConnectSite:
    return sandbox_site(make_app, patreon_sandbox)


def test_end_to_end_anonymous_to_linked_and_entitled(site: ConnectSite, patreon_sandbox: Any) -> None:
    """Browser-free: real HTTP to the sandbox's authorize page, its redirect followed through Flask's test client."""
    patreon_sandbox.add_patron("new@patreon.example", tier="Silver", full_name="New Patron")
    created = site.allow_signup()
    site.find_by_email()
    client = site.app.test_client()
    assert whoami(client)["user_id"] is None
    with capture(
        signals.user_created_from_patreon, signals.patron_linked, signals.patron_logged_in, signals.pledge_started
    ) as seen:
        response = oauth_flow(client, "new@patreon.example", path=LOGIN, next="/posts/9")
    assert response.status_code == 302 and response.location == "/posts/9"
    me = whoami(client)
    assert me["user_id"] is not None
    assert me["flashes"] == [
        "Welcome! Your account was created from your Patreon account (new@…). You're a Silver patron: posts for "
        "Silver and below are unlocked."
    ]
    user = site.users[me["user_id"]]
    assert user.email == "new@patreon.example" and user.name == "New Patron"
    assert [u.email for u in created] == ["new@patreon.example"]
    assert [name for name, _ in seen] == [
        "pledge-started",
        "user-created-from-patreon",
        "patron-linked",
        "patron-logged-in",
    ]
    assert seen[2][1]["via"] == "login" and seen[3][1]["user"] is user
    with site.app.app_context():
        patron = get_state().store.patron_for_user(user.id)
        assert patron is not None and patron.entitled_cents == 500 and patron.source == "oauth"

    # next time: the same Patreon account logs the same user in, no new user
    fresh = site.app.test_client()
    oauth_flow(fresh, "new@patreon.example", path=LOGIN)
    again = whoami(fresh)
    assert again["user_id"] == user.id and len(site.users) == 1
    assert again["flashes"][0].startswith("Logged in with your Patreon account (new@…). You're a Silver patron")


def test_login_renews_the_session(site: ConnectSite, patreon_sandbox: Any) -> None:
    patreon_sandbox.add_patron("fix@patreon.example", tier="Bronze")
    local = site.add_user("fix@site.example")
    client = site.app.test_client()
    # a linked account, made by connecting once
    log_in(client, local)
    oauth_flow(client, "fix@patreon.example")
    victim = site.app.test_client()
    with victim.session_transaction() as sess:  # keys planted before login, as a fixation attacker would
        sess["planted"] = "by-attacker"
        sess["_id"] = "attacker-session-id"
        sess["_fresh"] = False
    before = victim.get_cookie("session")
    assert before is not None
    oauth_flow(victim, "fix@patreon.example", path=LOGIN)
    me = whoami(victim)
    assert me["user_id"] == local.id
    assert "planted" not in me["keys"]
    assert not any(key.startswith("_patronlock_oauth") and key != "_patronlock_oauth_used" for key in me["keys"])
    with victim.session_transaction() as sess:
        assert sess["_id"] != "attacker-session-id" and sess["_fresh"] is True
    after = victim.get_cookie("session")
    assert after is not None and after.value != before.value


def test_existing_verified_email_is_not_linked_silently(site: ConnectSite, patreon_sandbox: Any) -> None:
    patreon_sandbox.add_patron("same@example.com", tier="Gold")
    existing = site.add_user("Same@Example.com")
    site.allow_signup()
    site.find_by_email()
    client = site.app.test_client()
    with capture(signals.patron_linked, signals.patron_logged_in) as seen:
        response = oauth_flow(client, "same@example.com", path=LOGIN, next="/posts/1")
    html = response.get_data(as_text=True)
    assert response.status_code == 409 and problem_kind(html) == "email_exists"
    assert "already uses the email address" in html
    # the way forward: log in the usual way, then connect (and come back to /posts/1)
    assert 'href="/_test/login?next=%2Fpatreon%2Fconnect%3Fnext%3D%2Fposts%2F1"' in html
    assert seen == [] and whoami(client)["user_id"] is None and len(site.users) == 1
    with site.app.app_context():
        assert get_accounts().get(existing.id) is None


def test_verified_email_auto_links_when_allowed(make_app: Callable[..., Flask], patreon_sandbox: Any) -> None:
    site = sandbox_site(make_app, patreon_sandbox, PATRONLOCK_AUTO_LINK_VERIFIED_EMAIL=True)
    patreon_sandbox.add_patron("auto@example.com", tier="Gold")
    existing = site.add_user("auto@example.com", email_verified=True)
    site.find_by_email()
    site.vouch_for_verified_emails()
    client = site.app.test_client()
    with capture(signals.patron_linked) as seen:
        oauth_flow(client, "auto@example.com", path=LOGIN)
    assert whoami(client)["user_id"] == existing.id
    assert seen[0][1]["via"] == "email"
    with site.app.app_context():
        assert get_accounts().get(existing.id) is not None


def refused_login(site: ConnectSite, sandbox_user: str, kind: str, **query: str) -> str:
    """Log in with Patreon as ``sandbox_user`` from a fresh client; assert it was refused with a ``kind`` problem,
    nobody was logged in or linked, and no user was created; returns the page."""
    client = site.app.test_client()
    users = len(site.users)
    with capture(signals.patron_linked, signals.patron_logged_in) as seen:
        response = oauth_flow(client, sandbox_user, path=LOGIN, **query)
    html: str = response.get_data(as_text=True)
    assert response.status_code == 409 and problem_kind(html) == kind
    assert seen == [] and whoami(client)["user_id"] is None and len(site.users) == users
    return html


@pytest.mark.parametrize("vouching", [False, True], ids=["no-verified-callback", "site-did-not-verify"])
def test_auto_link_never_opens_an_account_whose_address_the_site_did_not_verify(
    make_app: Callable[..., Flask], patreon_sandbox: Any, vouching: bool
) -> None:
    """The attack: register the patron's address here (nobody checks it), wait for her to log in with Patreon. She
    must not be logged in to (or linked to) the attacker's account, even with auto-linking on."""
    site = sandbox_site(make_app, patreon_sandbox, PATRONLOCK_AUTO_LINK_VERIFIED_EMAIL=True)
    patreon_sandbox.add_patron("ada@example.com", tier="Gold")
    attacker = site.add_user("ada@example.com")  # never verified: the site sent no mail, or it was not followed
    site.allow_signup()
    site.find_by_email()
    if vouching:
        site.vouch_for_verified_emails()
    refused_login(site, "ada@example.com", "email_exists")
    with site.app.app_context():
        assert get_accounts().get(attacker.id) is None


def sync_linked(site: ConnectSite, sandbox: Any, email: str) -> tuple[Any, Any]:
    """A Gold patron with ``email`` and a local user with that address the site verified, linked by a reconcile run
    (matching on, the site vouching); returns the local user and the patron's sandbox user."""
    from tests.helpers.sync import sync

    member = sandbox.add_patron(email, tier="Gold")
    owner = site.add_user(email, email_verified=True)
    site.vouch_for_verified_emails()
    assert sync(site.app, sandbox).detail["linked"] == 1
    with site.app.app_context():
        link = get_accounts().get(owner.id)
        assert link is not None and link.patreon_user_id == member.user_id and link.origin == "email"
    return owner, sandbox.user(email)


@pytest.mark.parametrize("auto_link", [False, True])
def test_a_link_made_by_email_matching_does_not_log_in(
    make_app: Callable[..., Flask], patreon_sandbox: Any, auto_link: bool
) -> None:
    """Whoever completes Log in with Patreon for a Patreon account a run linked by email is not let into the local
    account (not even with auto-linking: the run's link is no consent); the owner logs in and connects once, and from
    then on Log in with Patreon opens their account."""
    site = sandbox_site(
        make_app, patreon_sandbox, PATRONLOCK_SYNC_MATCH_EMAILS=True, PATRONLOCK_AUTO_LINK_VERIFIED_EMAIL=auto_link
    )
    site.allow_signup()
    site.find_by_email()
    owner, _ = sync_linked(site, patreon_sandbox, "grace@example.com")
    html = refused_login(site, "grace@example.com", "linked_by_email", next="/posts/1")
    assert 'href="/_test/login?next=%2Fpatreon%2Fconnect%3Fnext%3D%2Fposts%2F1"' in html
    with site.app.app_context():
        link = get_accounts().get(owner.id)
        assert link is not None and link.origin == "email"  # nothing changed

    # the owner, logged in with their password, is asked to confirm on Patreon, and connects with a fresh consent
    owner_client = site.app.test_client()
    log_in(owner_client, owner)
    status = owner_client.get("/patreon/").get_data(as_text=True)
    assert 'data-patronlock-consented="no"' in status and 'href="/patreon/connect"' in status
    assert "Refresh my status" not in status
    assert oauth_flow(owner_client, "grace@example.com").status_code == 302
    status = owner_client.get("/patreon/").get_data(as_text=True)
    assert "data-patronlock-consented" not in status and "Refresh my status" in status
    with site.app.app_context():
        link = get_accounts().get(owner.id)
        assert link is not None and link.origin == "oauth"
    fresh = site.app.test_client()
    oauth_flow(fresh, "grace@example.com", path=LOGIN)
    assert whoami(fresh)["user_id"] == owner.id


def test_the_patreon_account_owner_takes_an_email_link_to_the_account_they_connect(
    make_app: Callable[..., Flask], patreon_sandbox: Any
) -> None:
    """A link a run made by email gives way to the Patreon account's owner connecting it, with a fresh consent, to
    the account they are logged in to (a link that was only an address comparison cannot keep its owner out)."""
    site = sandbox_site(make_app, patreon_sandbox, PATRONLOCK_SYNC_MATCH_EMAILS=True)
    matched, patreon_user = sync_linked(site, patreon_sandbox, "hopper@example.com")
    client, own = logged_in(site, "grace.hopper@elsewhere.example")
    with capture(signals.patron_unlinked, signals.patron_linked) as seen:
        response = oauth_flow(client, "hopper@example.com")
    assert response.status_code == 302
    assert [(name, kw["user_id"]) for name, kw in seen] == [("patron-unlinked", matched.id), ("patron-linked", own.id)]
    assert seen[0][1]["reason"] == "claimed"
    with site.app.app_context():
        assert get_accounts().get(matched.id) is None
        link = get_accounts().get(own.id)
        assert link is not None and link.patreon_user_id == patreon_user.id and link.origin == "oauth"
        assert get_state().store.patron_for_user(own.id) is not None
        assert get_state().store.patron_for_user(matched.id) is None

    # a link made with consent is not taken the same way
    other, _ = logged_in(site, "someone@elsewhere.example")
    response = oauth_flow(other, "hopper@example.com")
    assert response.status_code == 409 and problem_kind(response.get_data(as_text=True)) == "linked_elsewhere"


def test_a_link_from_before_origins_were_recorded_counts_as_email_without_tokens(
    make_app: Callable[..., Flask], patreon_sandbox: Any
) -> None:
    """Rows an earlier version made have no origin: one without tokens came from a run's email match (OAuth always
    stores tokens), and must not log in either."""
    from sqlalchemy import update

    site = sandbox_site(make_app, patreon_sandbox, PATRONLOCK_SYNC_MATCH_EMAILS=True)
    owner, _ = sync_linked(site, patreon_sandbox, "legacy@example.com")
    with site.app.app_context():
        accounts = get_state().tables.accounts
        with get_state().store.engine.begin() as conn:
            conn.execute(update(accounts).values(origin=None))
        link = get_accounts().get(owner.id)
        assert link is not None and link.origin == "email"
    refused_login(site, "legacy@example.com", "linked_by_email")


@pytest.mark.parametrize("auto_link", [False, True])
def test_unverified_email_never_links(make_app: Callable[..., Flask], patreon_sandbox: Any, auto_link: bool) -> None:
    site = sandbox_site(make_app, patreon_sandbox, PATRONLOCK_AUTO_LINK_VERIFIED_EMAIL=auto_link)
    patreon_sandbox.add_patron("unverified@example.com", tier="Gold", email_verified=False)
    existing = site.add_user("unverified@example.com")
    site.allow_signup()
    site.find_by_email()
    client = site.app.test_client()
    response = oauth_flow(client, "unverified@example.com", path=LOGIN)
    assert response.status_code == 409 and problem_kind(response.get_data(as_text=True)) == "email_unverified"
    assert whoami(client)["user_id"] is None and len(site.users) == 1
    with site.app.app_context():
        assert get_accounts().get(existing.id) is None


def test_without_a_creator_sign_up_is_not_configured(site: ConnectSite, patreon_sandbox: Any) -> None:
    patreon_sandbox.add_patron("nobody@example.com", tier="Gold")
    response = oauth_flow(site.app.test_client(), "nobody@example.com", path=LOGIN)
    html = response.get_data(as_text=True)
    assert response.status_code == 403 and problem_kind(html) == "signup_not_configured"
    assert "does not create accounts from Patreon" in html


def test_a_creator_may_refuse(site: ConnectSite, patreon_sandbox: Any) -> None:
    patreon_sandbox.add_user("refused@example.com")
    site.patronlock.user_creator(lambda patreon_user: None)
    response = oauth_flow(site.app.test_client(), "refused@example.com", path=LOGIN)
    assert response.status_code == 403 and problem_kind(response.get_data(as_text=True)) == "signup_refused"


def test_an_inactive_user_is_not_logged_in(site: ConnectSite, patreon_sandbox: Any) -> None:
    patreon_sandbox.add_patron("off@patreon.example", tier="Gold")
    client, user = logged_in(site, "off@site.example")
    oauth_flow(client, "off@patreon.example")
    user.active = False
    fresh = site.app.test_client()
    response = oauth_flow(fresh, "off@patreon.example", path=LOGIN)
    assert response.status_code == 403 and problem_kind(response.get_data(as_text=True)) == "inactive_user"
    assert whoami(fresh)["user_id"] is None


def test_a_deleted_local_user_loses_the_stale_link(site: ConnectSite, patreon_sandbox: Any) -> None:
    patreon_sandbox.add_patron("gone@patreon.example", tier="Gold")
    client, user = logged_in(site, "gone@site.example")
    oauth_flow(client, "gone@patreon.example")
    del site.users[user.id]
    site.allow_signup()
    fresh = site.app.test_client()
    with capture(signals.patron_unlinked) as seen:
        oauth_flow(fresh, "gone@patreon.example", path=LOGIN)
    assert seen[0][1]["reason"] == "user_missing"
    me = whoami(fresh)
    assert me["user_id"] is not None and me["user_id"] != user.id


def test_a_logged_in_user_connects_instead(site: ConnectSite, patreon_sandbox: Any) -> None:
    patreon_sandbox.add_patron("both@patreon.example", tier="Gold")
    client, user = logged_in(site, "both@site.example")
    oauth_flow(client, "both@patreon.example", path=LOGIN)
    assert whoami(client)["flashes"][0].startswith("Connected your Patreon account")
    with site.app.app_context():
        assert get_accounts().get(user.id) is not None


def test_login_can_be_switched_off(make_app: Callable[..., Flask], patreon_sandbox: Any) -> None:
    site = sandbox_site(make_app, patreon_sandbox, PATRONLOCK_LOGIN_ENABLED=False)
    assert site.app.test_client().get(LOGIN).status_code == 404


@pytest.mark.parametrize("remember", [False, True])
def test_remember_me_is_configurable(make_app: Callable[..., Flask], patreon_sandbox: Any, remember: bool) -> None:
    site = sandbox_site(make_app, patreon_sandbox, PATRONLOCK_LOGIN_REMEMBER=remember)
    patreon_sandbox.add_patron("rem@patreon.example", tier="Gold")
    site.allow_signup()
    client = site.app.test_client()
    oauth_flow(client, "rem@patreon.example", path=LOGIN)
    client.get("/_test/session")  # Flask-Login sets the cookie after a request that saw the login
    assert (client.get_cookie("remember_token") is not None) is remember


# -- admins and Log in with Patreon (PATRONLOCK_ADMIN_PATREON_LOGIN) -------------------------------------------------


def _admin_site(make_app: Callable[..., Flask], sandbox: Any, **config: Any) -> tuple[ConnectSite, Any]:
    site = sandbox_site(make_app, sandbox, **config)
    site.patronlock.admin_loader(lambda user: user.admin)
    sandbox.add_patron("boss@patreon.example", tier="Gold")
    admin = site.user("boss", email="boss@site.example", admin=True)
    _connected(site, admin, "boss@patreon.example")  # the admin connected Patreon from their account, as anyone may
    with site.app.app_context():
        assert get_accounts().get("boss") is not None
    return site, admin


def _connected(site: ConnectSite, user: Any, patreon_email: str) -> None:
    """``user`` signs in the usual way and connects the Patreon account of ``patreon_email``."""
    client = site.app.test_client()
    log_in(client, user)
    oauth_flow(client, patreon_email)


def _refusals(site: ConnectSite) -> list[dict[str, Any]]:
    from sqlalchemy import select

    with site.app.app_context():
        state = get_state()
        e = state.tables.events
        with state.store.engine.connect() as conn:
            query = select(e).where(e.c.kind == "admin_patreon_login_refused")
            return [dict(row) for row in conn.execute(query).mappings()]


def test_an_admin_cannot_log_in_with_patreon_by_default(
    make_app: Callable[..., Flask], patreon_sandbox: Any, caplog: pytest.LogCaptureFixture
) -> None:
    site, _admin = _admin_site(make_app, patreon_sandbox)
    client = site.app.test_client()
    with capture(signals.patron_logged_in) as seen:
        response = oauth_flow(client, "boss@patreon.example", path=LOGIN, next="/posts/3")
    html = response.get_data(as_text=True)
    assert response.status_code == 403 and problem_kind(html) == "admin_login_refused"
    assert "Administrators sign in with their password" in html
    assert "Sign in with your password on this site&#39;s login page instead." in html
    assert 'href="/_test/login?next=%2Fposts%2F3"' in html  # the way forward, back to where they were going
    assert seen == [] and whoami(client)["user_id"] is None
    rows = _refusals(site)
    assert len(rows) == 1 and rows[0]["user_id"] == "boss" and rows[0]["source"] == "oauth"
    assert rows[0]["detail"] == {"via": "login"} and rows[0]["patreon_user_id"]
    assert any("refused for admin user boss" in r.getMessage() for r in caplog.records)


def test_an_admin_found_by_verified_email_is_refused_and_not_linked(
    make_app: Callable[..., Flask], patreon_sandbox: Any
) -> None:
    site = sandbox_site(make_app, patreon_sandbox, PATRONLOCK_AUTO_LINK_VERIFIED_EMAIL=True)
    site.patronlock.admin_loader(lambda user: user.admin)
    site.find_by_email()
    site.vouch_for_verified_emails()
    patreon_sandbox.add_patron("chief@example.com", tier="Gold")
    site.user("chief", email="chief@example.com", admin=True, email_verified=True)
    client = site.app.test_client()
    response = oauth_flow(client, "chief@example.com", path=LOGIN)
    assert response.status_code == 403 and problem_kind(response.get_data(as_text=True)) == "admin_login_refused"
    assert whoami(client)["user_id"] is None
    with site.app.app_context():
        assert get_accounts().get("chief") is None  # nothing linked either
    assert [row["detail"] for row in _refusals(site)] == [{"via": "email"}]


def test_the_switch_lets_admins_log_in_with_patreon(make_app: Callable[..., Flask], patreon_sandbox: Any) -> None:
    site, _admin = _admin_site(make_app, patreon_sandbox, PATRONLOCK_ADMIN_PATREON_LOGIN=True)
    client = site.app.test_client()
    response = oauth_flow(client, "boss@patreon.example", path=LOGIN)
    assert response.status_code == 302 and whoami(client)["user_id"] == "boss"
    assert _refusals(site) == []


def test_a_patron_who_is_no_admin_still_logs_in_with_the_switch_off(
    make_app: Callable[..., Flask], patreon_sandbox: Any
) -> None:
    site, _admin = _admin_site(make_app, patreon_sandbox)
    patreon_sandbox.add_patron("reader@patreon.example", tier="Silver")
    reader = site.add_user("reader@site.example")
    _connected(site, reader, "reader@patreon.example")
    fresh = site.app.test_client()
    assert oauth_flow(fresh, "reader@patreon.example", path=LOGIN).status_code == 302
    assert whoami(fresh)["user_id"] == reader.id and _refusals(site) == []
