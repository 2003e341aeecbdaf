"""The creator's token lives: a real reconcile run against the sandbox when Patreon kills the access token early
(one serialized refresh, the page read again, nobody revoked), when it refuses the refresh token (run incomplete, a
degraded state the settings page and ``flask patronlock check`` show, nobody revoked, cleared by new tokens), and
under Patreon's per-token rate limit (paced, 429s waited out, nobody locked out). Assertions count and order the
requests the sandbox answered; none measures time."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sync_helpers
from adminhelpers import ADMIN_PREFIX, AdminSite, sandbox_admin_site
from flask import Flask
from sqlalchemy import select

from flask_patronlock import signals
from flask_patronlock.creator import CREATOR_KEY, get_creator_connection
from flask_patronlock.crypto import TokenCipher
from flask_patronlock.errors import ConfigurationError
from flask_patronlock.extension import get_state
from flask_patronlock.pacing import SharedRateLimiter
from flask_patronlock.patreon.signatures import sign
from flask_patronlock.sandbox import Sandbox, render_webhook_member
from flask_patronlock.sandbox.entities import CREATOR_SCOPES
from flask_patronlock.sync import run_sync

MEMBERS = 200  # four pages of 50


@pytest.fixture
def site(make_app: Callable[..., Flask], patreon_sandbox: Sandbox) -> AdminSite:
    """A site on the sandbox whose creator token comes from the configuration, with its refresh token."""
    return sandbox_admin_site(make_app, patreon_sandbox, MEMBERS)


def token_calls(sandbox: Sandbox) -> list[tuple[str, str, int]]:
    return [entry for entry in sandbox.api_log if entry[1] == "/api/oauth2/token"]


def entitled(site: AdminSite) -> set[str]:
    p = site.state.tables.patrons
    with site.state.store.engine.connect() as conn:
        return {r.member_id for r in conn.execute(select(p.c.member_id).where(p.c.access.is_(True)))}


def stored_value(site: AdminSite) -> dict[str, Any]:
    s = site.state.tables.settings
    with site.state.store.engine.connect() as conn:
        value = conn.execute(select(s.c.value).where(s.c.key == CREATOR_KEY)).scalar_one()
    return dict(value)


def first_complete_run(site: AdminSite) -> set[str]:
    result = run_sync(site.app)
    assert result.status == "complete", result.reason
    everyone = entitled(site)
    assert len(everyone) > 100
    return everyone


def check(site: AdminSite) -> Any:
    return site.app.test_cli_runner().invoke(args=["patronlock", "check"])


def test_a_token_that_dies_mid_run_is_refreshed_once_and_the_page_read_again(
    site: AdminSite, patreon_sandbox: Sandbox
) -> None:
    everyone = first_complete_run(site)
    seeded = stored_value(site)
    assert seeded["origin"] == "config" and seeded["token_expires_at"] is None
    assert not token_calls(patreon_sandbox)  # a token with no known expiry is used until Patreon refuses it
    dead: list[str] = []

    def kill_after_the_first_page(progress: Any) -> None:
        if progress.pages == 1:
            dead.append(patreon_sandbox.expire_creator_token())

    patreon_sandbox.api_log.clear()
    result = run_sync(site.app, progress=kill_after_the_first_page)

    assert result.status == "complete" and result.complete, result.reason
    assert result.members_seen == MEMBERS and result.revoked == 0
    assert entitled(site) == everyone
    log = patreon_sandbox.api_log
    refused = [i for i, (_, _, status) in enumerate(log) if status == 401]
    assert len(refused) == 1  # one 401 ...
    assert token_calls(patreon_sandbox) == [("POST", "/api/oauth2/token", 200)]  # ... one refresh ...
    at = refused[0]
    assert log[at + 1] == ("POST", "/api/oauth2/token", 200)
    assert log[at + 2] == (log[at][0], log[at][1], 200)  # ... and the refused request again, answered
    members_path = f"/api/oauth2/v2/campaigns/{patreon_sandbox.campaign.id}/members"
    assert len([e for e in log if e[1] == members_path and e[2] == 200]) == 4
    # the new pair is stored, encrypted, and is the one Patreon now holds
    value = stored_value(site)
    cipher = TokenCipher(site.app.config["PATRONLOCK_TOKEN_KEYS"])
    assert cipher.decrypt(value["access_token"].encode()) == patreon_sandbox.creator_access_token != dead[0]
    assert cipher.decrypt(value["refresh_token"].encode()) == patreon_sandbox.creator_refresh_token
    assert patreon_sandbox.creator_access_token not in str(value)
    assert patreon_sandbox.creator_refresh_token not in str(value)
    assert not value["needs_reauth"]
    # the stored pair wins over the configured (now spent) refresh token: the next run refreshes nothing
    assert run_sync(site.app).status == "complete"
    assert len(token_calls(patreon_sandbox)) == 1


def test_two_threads_refused_at_once_refresh_once(site: AdminSite, patreon_sandbox: Sandbox) -> None:
    with site.app.app_context():
        clients = [site.state.creator_client() for _ in range(2)]
    patreon_sandbox.expire_creator_token()
    patreon_sandbox.api_log.clear()
    barrier = threading.Barrier(2)
    results: list[Any] = []
    errors: list[BaseException] = []

    def read(client: Any) -> None:
        barrier.wait()
        try:
            results.append(client.campaign(patreon_sandbox.campaign.id))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors and len(results) == 2
    assert [s for _, _, s in patreon_sandbox.api_log].count(401) == 2
    assert token_calls(patreon_sandbox) == [("POST", "/api/oauth2/token", 200)]  # one refresh between them
    assert {c.access_token for c in clients} == {patreon_sandbox.creator_access_token}
    connection = get_creator_connection(site.state)
    assert connection is not None and not connection.needs_reauth
    for client in clients:
        client.close()


def test_a_webhook_re_fetch_refused_with_401_refreshes_and_applies(site: AdminSite, patreon_sandbox: Sandbox) -> None:
    with site.app.app_context():
        site.state.creator_client().close()  # the configured pair is stored on first use
    patreon_sandbox.expire_creator_token()
    member = patreon_sandbox.add_patron("hook@patreon.example", tier="Gold")
    body = render_webhook_member(patreon_sandbox, member)
    secret = site.app.config["PATRONLOCK_WEBHOOK_SECRETS"][0]
    patreon_sandbox.api_log.clear()
    outcomes: list[str] = []

    def heard(sender: Any, **kwargs: Any) -> None:
        outcomes.append(kwargs["outcome"])

    signals.webhook_processed.connect(heard, sender=site.app)
    try:
        response = site.app.test_client().post(
            "/patreon/webhook",
            data=body,
            headers={"X-Patreon-Event": "members:pledge:create", "X-Patreon-Signature": sign(body, secret),
                     "Content-Type": "application/json"},
        )
    finally:
        signals.webhook_processed.disconnect(heard)
    assert response.status_code == 200 and outcomes == ["applied"]
    member_path = f"/api/oauth2/v2/members/{member.id}"
    assert patreon_sandbox.api_log == [
        ("GET", member_path, 401), ("POST", "/api/oauth2/token", 200), ("GET", member_path, 200)
    ]
    stored = site.state.store.get_patron(member.id)
    assert stored is not None and stored.access and stored.source == "webhook"


def test_a_refused_refresh_degrades_the_site_visibly_and_revokes_nobody(
    site: AdminSite, patreon_sandbox: Sandbox
) -> None:
    everyone = first_complete_run(site)
    patreon_sandbox.revoke_creator_refresh_token()
    patreon_sandbox.expire_creator_token()
    # a real change the dead token cannot see (an active patron: Patreon keeps a declined one declined_patron)
    leaving = next(m for m in patreon_sandbox.members if m.patron_status == "active_patron")
    patreon_sandbox.cancel(leaving)
    failures: list[dict[str, Any]] = []

    def heard(sender: Any, **kwargs: Any) -> None:
        failures.append(kwargs)

    signals.creator_token_failed.connect(heard, sender=site.app)
    try:
        result = run_sync(site.app)
    finally:
        signals.creator_token_failed.disconnect(heard)

    assert result.status == "incomplete" and not result.complete
    assert result.reason is not None and "page 1" in result.reason and "no longer accepts" in result.reason
    assert result.revoked == 0 and entitled(site) == everyone
    assert len(token_calls(patreon_sandbox)) == 1  # one refresh tried, refused
    assert [(f["reason"], f["origin"]) for f in failures] == [("invalid_grant", "config")]
    connection = get_creator_connection(site.state)
    assert connection is not None and connection.needs_reauth and connection.failure == "invalid_grant"
    assert connection.failed_at == patreon_sandbox.now

    html = site.get(ADMIN_PREFIX + "/setup").get_data(as_text=True)
    day = f"{patreon_sandbox.now.day} {patreon_sandbox.now:%B}"
    assert f"Patreon stopped accepting the site&#39;s connection on {day}." in html
    assert "Reconnect the creator account here" in html and "nobody loses access" in html
    outcome = check(site)
    assert outcome.exit_code == 1 and "DEGRADED creator token" in outcome.output
    assert "invalid_grant" in outcome.output

    # later runs refuse to start and say why, trying no refresh token again; still nobody is revoked
    with pytest.raises(ConfigurationError, match="no longer accepts the creator's token"):
        run_sync(site.app)
    assert len(token_calls(patreon_sandbox)) == 1
    assert entitled(site) == everyone

    # recovery: new tokens from Patreon's portal in the configuration
    fresh = patreon_sandbox.issue_token(patreon_sandbox.creator, scopes=CREATOR_SCOPES)
    site.app.config.update(
        PATRONLOCK_CREATOR_ACCESS_TOKEN=fresh.access_token, PATRONLOCK_CREATOR_REFRESH_TOKEN=fresh.refresh_token
    )
    recovered = run_sync(site.app)
    assert recovered.status == "complete", recovered.reason
    cancelled = site.state.store.get_patron(leaving.id)
    assert cancelled is not None and cancelled.patron_status == "former_patron"  # Patreon is read again
    connection = get_creator_connection(site.state)
    assert connection is not None and not connection.needs_reauth
    assert "stopped accepting" not in site.get(ADMIN_PREFIX + "/setup").get_data(as_text=True)
    assert check(site).exit_code == 0


def test_only_an_access_token_configured_a_401_degrades_until_the_configuration_changes(
    make_app: Callable[..., Flask], patreon_sandbox: Sandbox
) -> None:
    patreon_sandbox.generate_members(60)
    app = sync_helpers.sandbox_app(make_app, patreon_sandbox)
    assert run_sync(app).status == "complete"
    patreon_sandbox.expire_creator_token()
    result = run_sync(app)
    assert result.status == "incomplete" and result.revoked == 0
    assert not token_calls(patreon_sandbox)  # nothing to refresh with
    connection = get_creator_connection(get_state(app))
    assert connection is not None and connection.needs_reauth and connection.failure == "no_refresh_token"
    assert check_exit(app) == 1
    app.config["PATRONLOCK_CREATOR_ACCESS_TOKEN"] = patreon_sandbox.token_for(
        patreon_sandbox.creator, scopes=CREATOR_SCOPES
    )
    assert run_sync(app).status == "complete"
    assert get_creator_connection(get_state(app)) is None


def check_exit(app: Flask) -> int:
    return int(app.test_cli_runner().invoke(args=["patronlock", "check"]).exit_code)


class FakeClock:
    """Seconds that move only when someone sleeps on them."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return datetime(2026, 12, 4, tzinfo=UTC) + timedelta(seconds=self.now)

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds


def faked(site: AdminSite, clock: FakeClock) -> None:
    pacing = site.state.pacing
    pacing.monotonic, pacing.clock, pacing.sleep = clock.monotonic, clock.wall, clock.sleep


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "process"])
def test_calls_are_paced_under_the_per_token_limit(site: AdminSite, patreon_sandbox: Sandbox, shared: bool) -> None:
    clock = FakeClock()
    faked(site, clock)
    site.app.config.update(PATRONLOCK_TOKEN_RATE_LIMIT=3, PATRONLOCK_SHARED_RATE_LIMIT=shared)
    patreon_sandbox.limit_tokens(3, 60.0, clock=clock.monotonic)
    patreon_sandbox.api_log.clear()
    result = run_sync(site.app)
    assert result.status == "complete", result.reason
    api_calls = [e for e in patreon_sandbox.api_log if e[1] != "/api/oauth2/token"]
    assert [s for _, _, s in api_calls] == [200] * len(api_calls)  # never a 429: the site waited instead
    assert len(api_calls) >= 5
    assert len(clock.sleeps) >= (len(api_calls) - 1) // 3  # a wait before every fourth call at least


def test_429s_of_the_per_token_limit_are_waited_out(site: AdminSite, patreon_sandbox: Sandbox) -> None:
    everyone = first_complete_run(site)
    clock = FakeClock()
    faked(site, clock)
    patreon_sandbox.limit_tokens(2, 60.0, clock=clock.monotonic)  # Patreon counts calls the site did not see
    patreon_sandbox.api_log.clear()
    result = run_sync(site.app)
    assert result.status == "complete", result.reason
    statuses = [s for _, _, s in patreon_sandbox.api_log]
    assert statuses.count(429) >= 1 and statuses.count(200) >= 4
    assert all(s in (200, 429) for s in statuses)
    assert result.revoked == 0 and entitled(site) == everyone


def test_the_shared_limit_holds_across_processes(make_app: Callable[..., Flask]) -> None:
    """Two apps on one database (two processes' worth of state): calls of one key count for both."""
    first, second = make_app(), make_app()
    clock = FakeClock()

    def limiter(app: Flask, holder: str) -> SharedRateLimiter:
        return SharedRateLimiter(get_state(app).store, "t:abc", 3, 60.0, holder=holder, clock=clock.wall,
                                 sleep=clock.sleep)

    a, b = limiter(first, "a"), limiter(second, "b")
    assert [a.try_acquire(), b.try_acquire(), a.try_acquire()] == [0.0, 0.0, 0.0]
    assert b.try_acquire() > 0 and a.try_acquire() > 0  # the window is full, whoever asks
    clock.now += 30
    assert b.try_acquire() > 0
    waited = b.acquire()  # sleeps (on the fake clock) until the first slot frees
    assert waited > 0 and clock.sleeps
    assert a.try_acquire() == 0.0 and b.try_acquire() == 0.0  # the other two slots freed too
    assert a.try_acquire() > 0
    other = SharedRateLimiter(get_state(first).store, "t:def", 3, 60.0, clock=clock.wall)
    assert other.try_acquire() == 0.0  # another token has its own window
