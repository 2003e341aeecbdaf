"""Tokens against the sandbox (whose refresh rotates the pair and rejects a reused refresh token): encrypted at rest,
concurrent refreshes that do not lose the pair (SQLite and PostgreSQL), invalid_grant, a 401 on identity, and key
rotation end to end."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from connect_site import KEY1, KEY2, Site, csrf_token, log_in, oauth_flow, sandbox_site, whoami
from flask import Flask
from sqlalchemy import select, update

from flask_patronlock.accounts import NeedsReauthorization, get_accounts
from flask_patronlock.patreon.client import PatreonClient
from flask_patronlock.state import get_state


@pytest.fixture
def site(make_app: Callable[..., Flask], patreon_sandbox: Any) -> Site:
    return sandbox_site(make_app, patreon_sandbox)


def connect(
    site: Site, patreon_sandbox: Any, email: str = "pat@patreon.example", tier: str = "Gold"
) -> tuple[Any, str]:
    patreon_sandbox.add_patron(email, tier=tier)
    user = site.add_user(email.replace("patreon", "site"))
    client = site.app.test_client()
    log_in(client, user)
    assert oauth_flow(client, email).status_code == 302
    whoami(client)  # read the flash
    return client, user.id


def row(site: Site, user_id: str) -> dict[str, Any]:
    state = get_state(site.app)
    t = state.tables.accounts
    with state.store.engine.connect() as conn:
        return dict(conn.execute(select(t).where(t.c.user_id == user_id)).mappings().one())


def expire_stored_token(site: Site, user_id: str) -> None:
    state = get_state(site.app)
    t = state.tables.accounts
    with state.store.engine.begin() as conn:
        conn.execute(update(t).where(t.c.user_id == user_id).values(token_expires_at=datetime.now(UTC)))


@pytest.fixture
def refreshes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every refresh token sent to the token endpoint (from any thread)."""
    seen: list[str] = []
    lock = threading.Lock()
    real = PatreonClient.refresh

    def spy(self: PatreonClient, refresh_token: str) -> Any:
        with lock:
            seen.append(refresh_token)
        return real(self, refresh_token)

    monkeypatch.setattr(PatreonClient, "refresh", spy)
    return seen


def test_tokens_are_encrypted_at_rest(site: Site, patreon_sandbox: Any) -> None:
    _, user_id = connect(site, patreon_sandbox)
    stored = row(site, user_id)
    with site.app.app_context():
        access = get_accounts().access_token(user_id)
    assert access.encode() not in stored["access_token"]
    assert patreon_sandbox.authenticate(access) is not None
    assert stored["token_expires_at"] > datetime.now(UTC) + timedelta(days=30)
    assert "identity" in stored["scope"].split()


@pytest.mark.parametrize("workers", [8])
def test_concurrent_refreshes_do_not_lose_the_pair(
    site: Site, patreon_sandbox: Any, refreshes: list[str], workers: int
) -> None:
    _, user_id = connect(site, patreon_sandbox)
    expire_stored_token(site, user_id)
    accounts = get_accounts(get_state(site.app))
    barrier = threading.Barrier(workers)
    results: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            results.append(accounts.access_token(user_id))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(results) == workers and len(set(results)) == 1  # everyone got the one new token
    assert len(refreshes) == 1  # the single-use refresh token was spent once
    account = accounts.get(user_id)
    assert account is not None and not account.needs_reauth
    assert patreon_sandbox.authenticate(results[0]) is not None
    # and the stored pair is the live one: the next refresh works
    expire_stored_token(site, user_id)
    assert accounts.access_token(user_id) not in results
    assert len(refreshes) == 2


def test_invalid_grant_asks_to_reconnect_and_keeps_access(site: Site, patreon_sandbox: Any) -> None:
    client, user_id = connect(site, patreon_sandbox)
    with site.app.app_context():
        state = get_state()
        before = state.store.patron_for_user(user_id)
        access = get_accounts().access_token(user_id)
    patreon_sandbox.revoke_token(access)  # the refresh token dies with it
    expire_stored_token(site, user_id)
    client.post("/patreon/refresh", data={"csrf_token": csrf_token(client)})
    assert "connect your account again" in whoami(client)["flashes"][0]
    with site.app.app_context():
        account = get_accounts().get(user_id)
        assert account is not None and account.needs_reauth
        assert state.store.patron_for_user(user_id) == before  # no entitlement changed
        with pytest.raises(NeedsReauthorization):
            get_accounts().identity(user_id)
    assert 'data-patronlock-needs-reauth="yes"' in client.get("/patreon/").get_data(as_text=True)


def test_an_expired_access_token_is_refreshed_on_401(site: Site, patreon_sandbox: Any, refreshes: list[str]) -> None:
    client, _ = connect(site, patreon_sandbox)
    patreon_sandbox.advance(days=32)  # Patreon's clock: the access token expired, the stored expiry says otherwise
    patreon_sandbox.change_tier("pat@patreon.example", "Silver")
    client.post("/patreon/refresh", data={"csrf_token": csrf_token(client)})
    assert whoami(client)["flashes"] == [
        "Refreshed your Patreon status. You're a Silver patron: posts for Silver and below are unlocked."
    ]
    assert len(refreshes) == 1


def test_key_rotation_end_to_end(site: Site, patreon_sandbox: Any) -> None:
    client, user_id = connect(site, patreon_sandbox)
    before = row(site, user_id)
    site.app.config["PATRONLOCK_TOKEN_KEYS"] = [KEY2, KEY1]
    result = site.app.test_cli_runner().invoke(args=["patronlock", "rotate-keys"])
    assert result.exit_code == 0 and "Re-encrypted 2 token(s) of 1 linked account(s)" in result.output
    after = row(site, user_id)
    assert after["access_token"] != before["access_token"]
    site.app.config["PATRONLOCK_TOKEN_KEYS"] = [KEY2]  # the old key is gone
    patreon_sandbox.change_tier("pat@patreon.example", "Bronze")
    client.post("/patreon/refresh", data={"csrf_token": csrf_token(client)})
    assert whoami(client)["flashes"][0].startswith("Refreshed your Patreon status. You're a Bronze patron")
