"""The issue's security list, each against the sandbox: state (length, single use, bound to the session, 10 minutes),
PKCE S256, a redirect URI that headers cannot change, safe ``next``, Patreon errors as friendly pages."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from connect_site import (
    EVIL_NEXT,
    REDIRECT_URI,
    Site,
    approve,
    authorize_params,
    csrf_token,
    log_in,
    oauth_flow,
    problem_kind,
    sandbox_site,
    whoami,
)
from flask import Flask

from flask_patronlock.accounts import get_accounts
from flask_patronlock.patreon.client import PatreonClient
from flask_patronlock.state import get_state


@pytest.fixture
def site(make_app: Callable[..., Flask], patreon_sandbox: Any) -> Site:
    patreon_sandbox.add_patron("pat@patreon.example", tier="Gold")
    return sandbox_site(make_app, patreon_sandbox)


@pytest.fixture
def exchanges(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every code sent to the token endpoint."""
    seen: list[str] = []
    real = PatreonClient.exchange_code

    def spy(self: PatreonClient, code: str, redirect_uri: str, code_verifier: str | None = None) -> Any:
        seen.append(code)
        return real(self, code, redirect_uri, code_verifier)

    monkeypatch.setattr(PatreonClient, "exchange_code", spy)
    yield seen


def logged_in_client(site: Site) -> Any:
    client = site.app.test_client()
    log_in(client, site.add_user("me@site.example"))
    return client


def begin(client: Any, path: str = "/patreon/connect", **query: str) -> tuple[str, dict[str, str]]:
    response = client.get(path, query_string=query)
    assert response.status_code == 302
    return response.location, authorize_params(response.location)


def with_state(callback: str, state: str | None) -> str:
    parts = urlsplit(callback)
    query = "&".join(p for p in parts.query.split("&") if not p.startswith("state="))
    if state is not None:
        query += f"&state={state}"
    return f"{parts.path}?{query}"


def assert_refused(response: Any, kind: str) -> None:
    html = response.get_data(as_text=True)
    assert response.status_code == 400 and problem_kind(html) == kind, html
    assert "Nothing was changed" in html and "What to do" in html


def test_state_has_256_bits_and_pkce_is_s256(site: Site) -> None:
    _, params = begin(logged_in_client(site))
    assert len(params["state"]) >= 43  # token_urlsafe(32): 256 bits (the issue asks for at least 128)
    assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) == 43
    assert params["redirect_uri"] == REDIRECT_URI and params["response_type"] == "code"


def test_missing_state_is_refused_before_the_token_endpoint(site: Site, exchanges: list[str]) -> None:
    client = logged_in_client(site)
    url, _ = begin(client)
    assert_refused(client.get(with_state(approve(url, "pat@patreon.example"), None)), "state_missing")
    assert exchanges == []


def test_state_from_another_session_is_refused(site: Site, exchanges: list[str]) -> None:
    """Login CSRF: an attacker sends the victim a callback URL carrying the attacker's own code and state."""
    attacker = logged_in_client(site)
    url, _ = begin(attacker)
    attackers_callback = approve(url, "pat@patreon.example")
    victim = logged_in_client(site)
    assert_refused(victim.get(attackers_callback), "state_no_session")
    begin(victim)  # the victim has a flow of their own pending: still refused
    assert_refused(victim.get(attackers_callback), "state_mismatch")
    assert exchanges == []
    with site.app.app_context():
        assert all(get_accounts().get(u) is None for u in site.users)


def test_state_is_single_use(site: Site, exchanges: list[str]) -> None:
    client = logged_in_client(site)
    url, _ = begin(client)
    callback = approve(url, "pat@patreon.example")
    assert client.get(callback).status_code == 302
    assert len(exchanges) == 1
    assert_refused(client.get(callback), "state_reused")
    assert len(exchanges) == 1


def test_tampered_state_is_refused(site: Site, exchanges: list[str]) -> None:
    client = logged_in_client(site)
    url, params = begin(client)
    callback = approve(url, "pat@patreon.example")
    assert_refused(client.get(with_state(callback, params["state"][:-2] + "xx")), "state_mismatch")
    assert exchanges == []


def test_state_expires_after_10_minutes(site: Site, exchanges: list[str]) -> None:
    client = logged_in_client(site)
    url, _ = begin(client)
    callback = approve(url, "pat@patreon.example")
    store = get_state(site.app).store
    later = store.clock() + timedelta(minutes=10, seconds=1)
    store.clock = lambda: later
    assert_refused(client.get(callback), "state_expired")
    assert exchanges == []


def test_state_is_fine_within_10_minutes(site: Site) -> None:
    client = logged_in_client(site)
    url, _ = begin(client)
    callback = approve(url, "pat@patreon.example")
    store = get_state(site.app).store
    later = store.clock() + timedelta(minutes=9, seconds=50)
    store.clock = lambda: later
    assert client.get(callback).status_code == 302


def test_pkce_verifier_is_checked_by_the_token_endpoint(site: Site) -> None:
    """The sandbox rejects the code without the verifier the session holds: a stolen code is useless alone."""
    client = logged_in_client(site)
    url, _ = begin(client)
    callback = approve(url, "pat@patreon.example")
    with client.session_transaction() as sess:
        flows = sess["_patronlock_oauth"]
        for flow in flows.values():
            flow["verifier"] = "a" * 64
        sess["_patronlock_oauth"] = flows
    response = client.get(callback)
    assert response.status_code == 400 and problem_kind(response.get_data(as_text=True)) == "code_rejected"


def test_pkce_can_be_switched_off(make_app: Callable[..., Flask], patreon_sandbox: Any) -> None:
    patreon_sandbox.add_patron("pat@patreon.example", tier="Gold")
    site = sandbox_site(make_app, patreon_sandbox, PATRONLOCK_USE_PKCE=False)
    client = logged_in_client(site)
    url, params = begin(client)
    assert "code_challenge" not in params
    assert client.get(approve(url, "pat@patreon.example")).status_code == 302


def test_redirect_uri_ignores_host_headers(site: Site) -> None:
    client = site.app.test_client()  # anonymous: the session cookie would not be sent to another host anyway
    response = client.get(
        "/patreon/login",
        headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"},
    )
    assert authorize_params(response.location)["redirect_uri"] == REDIRECT_URI


def test_redirect_uri_from_server_name(make_app: Callable[..., Flask], patreon_sandbox: Any) -> None:
    site = sandbox_site(make_app, patreon_sandbox, SERVER_NAME="site.example", PREFERRED_URL_SCHEME="https")
    site.app.config["PATRONLOCK_REDIRECT_URI"] = None
    response = site.app.test_client().get(
        "/patreon/login", headers={"Host": "site.example", "X-Forwarded-Host": "evil.example"}
    )
    assert authorize_params(response.location)["redirect_uri"] == "https://site.example/patreon/callback"


def test_without_redirect_uri_or_server_name_it_says_which_key(
    make_app: Callable[..., Flask], patreon_sandbox: Any
) -> None:
    site = sandbox_site(make_app, patreon_sandbox)
    site.app.config.update(PATRONLOCK_REDIRECT_URI=None, TESTING=True, PROPAGATE_EXCEPTIONS=True)
    client = site.app.test_client()
    log_in(client, site.add_user("me@site.example"))
    response = client.get("/patreon/connect")  # a page that says so (the key folded away for the owner), not a 500
    html = response.get_data(as_text=True)
    assert response.status_code == 500 and 'data-patronlock-problem="not_configured"' in html
    assert "PATRONLOCK_REDIRECT_URI" in html and "Traceback" not in html
    with client.session_transaction() as sess:
        assert "_patronlock_oauth" not in sess  # nothing remembered for a flow that cannot finish


def test_unsafe_next_lands_on_the_default_page(site: Site) -> None:
    client = logged_in_client(site)
    for target in EVIL_NEXT:
        response = oauth_flow(client, "pat@patreon.example", next=target)
        assert response.status_code == 302 and response.location == "/", target
    response = oauth_flow(client, "pat@patreon.example", next="/posts/1?x=%2F")
    assert response.location == "/posts/1?x=%2F"
    site.app.config["PATRONLOCK_DEFAULT_NEXT"] = "/welcome"
    assert oauth_flow(client, "pat@patreon.example", next="//evil.com").location == "/welcome"
    site.app.config["PATRONLOCK_DEFAULT_NEXT"] = "https://evil.com"  # even a bad default stays on the site
    assert oauth_flow(client, "pat@patreon.example").location == "/"


def test_unsafe_next_on_unlink_and_refresh(site: Site) -> None:
    client = logged_in_client(site)
    oauth_flow(client, "pat@patreon.example")
    token = csrf_token(client)
    response = client.post("/patreon/refresh", data={"csrf_token": token, "next": "//evil.com"})
    assert response.location == "/"
    response = client.post("/patreon/unlink", data={"csrf_token": token, "next": "/\\evil.com"})
    assert response.location == "/"


def test_connect_flow_is_bound_to_the_user_who_started_it(site: Site, exchanges: list[str]) -> None:
    client = logged_in_client(site)
    url, _ = begin(client)
    callback = approve(url, "pat@patreon.example")
    log_in(client, site.add_user("other@site.example"))
    response = client.get(callback)
    assert response.status_code == 403 and problem_kind(response.get_data(as_text=True)) == "session_changed"
    assert exchanges == []
    with site.app.app_context():
        assert all(get_accounts().get(u) is None for u in site.users)


def test_patreon_down_is_a_clear_page_not_a_500(site: Site, patreon_sandbox: Any) -> None:
    client = logged_in_client(site)
    url, _ = begin(client)
    callback = approve(url, "pat@patreon.example")
    patreon_sandbox.api_down = True  # the token endpoint and API v2 answer 503
    response = client.get(callback)
    html = response.get_data(as_text=True)
    assert response.status_code == 502 and problem_kind(html) == "patreon_unavailable"
    assert "try again in a few minutes" in html


def test_authorize_errors_other_than_access_denied(site: Site) -> None:
    client = logged_in_client(site)
    url, params = begin(client)
    callback = approve(url, "pat@patreon.example")
    path = urlsplit(callback).path
    response = client.get(path, query_string={"error": "server_error", "state": params["state"]})
    assert response.status_code == 502 and problem_kind(response.get_data(as_text=True)) == "authorize_error"
    url, params = begin(client)
    response = client.get(path, query_string={"state": params["state"]})
    assert response.status_code == 400 and problem_kind(response.get_data(as_text=True)) == "no_code"


def test_tokens_never_reach_pages_or_logs(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    client = logged_in_client(site)
    pages = [oauth_flow(client, "pat@patreon.example").get_data(as_text=True)]
    pages.append(client.get("/patreon/").get_data(as_text=True))
    user_id = whoami(client)["user_id"]
    with site.app.app_context():
        accounts = get_accounts()
        access = accounts.access_token(user_id)
        state = get_state()
        with state.store.engine.connect() as conn:
            row = conn.execute(
                state.tables.accounts.select().where(state.tables.accounts.c.user_id == user_id)
            ).mappings().one()
        refresh = state.token_cipher().decrypt(row["refresh_token"])
    secret = site.app.config["PATRONLOCK_CLIENT_SECRET"]
    for text in [*pages, caplog.text]:
        for value in (access, refresh, secret):
            assert value not in text
