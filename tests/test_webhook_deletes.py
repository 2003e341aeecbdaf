"""A pledge deleted on Patreon ends access here, from the webhook alone, per the cancel policy.

Each delivery is posted as Patreon (or anyone holding a captured body) sends it: raw bytes shaped like the real
``members:pledge:delete`` payload, signed with the webhook secret, with the trigger in ``X-Patreon-Event``. The payload
is never trusted over the API: a member the API no longer returns is a pledge that ended (never the payload's stale
``active_patron``); a member the API still returns as pledging keeps access (a re-pledge raced the delete); and an API
that cannot be reached revokes nobody.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from patreon_fixtures import fixture_json
from sync_helpers import access_of, count, set_policy, webhook_app

from flask_patronlock import signals
from flask_patronlock.patreon.client import PatreonClient
from flask_patronlock.patreon.errors import TransportError
from flask_patronlock.patreon.signatures import sign
from flask_patronlock.patreon.types import MemberSnapshot
from flask_patronlock.sandbox import Member, Sandbox
from flask_patronlock.state import get_state

pytestmark = pytest.mark.timeout(120)
URL = "/patreon/webhook"


@pytest.fixture
def sb_app(make_app: Callable[..., Flask], patreon_sandbox: Sandbox) -> Flask:
    return webhook_app(make_app, patreon_sandbox, URL)


def delete_body(member: Member, campaign_id: str, **attributes: Any) -> bytes:
    """The real ``members:pledge:delete`` payload, about ``member``, with some attributes changed."""
    doc = fixture_json("members_pledge_delete.json")
    data = doc["data"]
    data["id"] = member.id
    data["relationships"]["user"]["data"]["id"] = member.user_id
    data["relationships"]["campaign"]["data"]["id"] = campaign_id
    data["attributes"].update(attributes)
    return json.dumps(doc).encode()


def send(app: Flask, sandbox: Sandbox, body: bytes, event: str) -> int:
    """POST ``body`` to the webhook route, signed with the webhook secret, as Patreon sends it."""
    headers = {
        "X-Patreon-Event": event,
        "X-Patreon-Signature": sign(body, sandbox.webhook_secret),
        "Content-Type": "application/json",
    }
    return app.test_client().post(URL, data=body, headers=headers).status_code


def stale_active(member: Member, campaign_id: str) -> bytes:
    """A delete whose payload still says what the member was: ``active_patron``, entitled, last charge paid."""
    return delete_body(
        member,
        campaign_id,
        patron_status="active_patron",
        last_charge_status="Paid",
        last_charge_date=member.last_charge_date.isoformat() if member.last_charge_date else None,
        next_charge_date=member.next_charge_date.isoformat() if member.next_charge_date else None,
        currently_entitled_amount_cents=member.entitled_cents,
        will_pay_amount_cents=member.entitled_cents,
    )


def paying_patron(app: Flask, sandbox: Sandbox) -> Member:
    """A Gold patron charged now, stored from the API through their own webhooks, entitled."""
    member = sandbox.add_patron("ann@example.com", tier="Gold")
    sandbox.flush_webhooks()
    assert access_of(app, member.id) is True
    sandbox.advance(days=3)
    return member


def gone_from_patreon(sandbox: Sandbox, member: Member) -> None:
    """Patreon no longer returns the member (``GET /members/{id}`` answers 404); its own webhooks not delivered."""
    sandbox.transport = lambda uri, headers, body: 200
    sandbox.delete_member(member)
    sandbox.flush_webhooks()


def cancellations(app: Flask) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    signals.pledge_cancelled.connect(lambda sender, **kw: seen.append(kw), app, weak=False)
    return seen


@pytest.mark.patreon_sandbox(members=0)
@pytest.mark.parametrize("event", ["members:pledge:delete", "members:delete"])
def test_a_delete_for_a_member_the_api_no_longer_returns_ends_access_at_once_under_at_once(
    sb_app: Flask, patreon_sandbox: Sandbox, event: str
) -> None:
    sandbox, store = patreon_sandbox, get_state(sb_app).store
    set_policy(sb_app, cancelled="at_once")
    member = paying_patron(sb_app, sandbox)
    body = stale_active(member, sandbox.campaign.id)
    gone_from_patreon(sandbox, member)
    seen = cancellations(sb_app)
    assert send(sb_app, sandbox, body, event) == 200
    patron = store.get_patron(member.id)
    assert patron is not None and patron.patron_status == "former_patron" and patron.access is False
    assert patron.source == "webhook" and patron.entitled_cents == 0
    [row, *_] = store.history(member.id)
    assert row["source"] == "webhook" and set(row["events"].split(",")) >= {"pledge_cancelled", "access_revoked"}
    assert len(seen) == 1 and seen[0]["source"] == "webhook"
    # the other trigger of the same deletion (and the same body again) is one cancellation, not two
    other = "members:delete" if event == "members:pledge:delete" else "members:pledge:delete"
    assert send(sb_app, sandbox, body, other) == 200
    assert send(sb_app, sandbox, body, event) == 200
    assert len(seen) == 1 and store.get_patron(member.id).access is False  # type: ignore[union-attr]


@pytest.mark.patreon_sandbox(members=0)
def test_a_pledge_delete_keeps_access_to_the_end_of_the_paid_period_then_ends_it(
    sb_app: Flask, patreon_sandbox: Sandbox
) -> None:
    sandbox, store = patreon_sandbox, get_state(sb_app).store
    set_policy(sb_app, cancelled="paid_period")
    member = paying_patron(sb_app, sandbox)
    paid_until = member.next_charge_date
    assert paid_until is not None and paid_until > sandbox.now
    body = stale_active(member, sandbox.campaign.id)
    gone_from_patreon(sandbox, member)
    assert send(sb_app, sandbox, body, "members:pledge:delete") == 200
    patron = store.get_patron(member.id)
    assert patron is not None and patron.patron_status == "former_patron"
    assert patron.access is True and patron.access_until == paid_until  # what they paid for, and no longer
    assert "pledge_cancelled" in store.history(member.id)[0]["events"]
    sandbox.advance(days=(paid_until - sandbox.now).days + 1)
    [flip] = store.refresh_access()
    assert flip.member_id == member.id and "access_revoked" in flip.events
    assert access_of(sb_app, member.id) is False


@pytest.mark.patreon_sandbox(members=0)
def test_members_delete_of_a_member_who_never_paid_ends_access_at_once(
    sb_app: Flask, patreon_sandbox: Sandbox
) -> None:
    """Patreon sends ``members:delete`` for members who never paid: there is no paid period to keep."""
    sandbox, store = patreon_sandbox, get_state(sb_app).store
    set_policy(sb_app, cancelled="paid_period", first_charge="entitled_at_once")
    member = sandbox.add_patron("new@example.com", tier="Gold", charge=False)
    sandbox.flush_webhooks()
    assert access_of(sb_app, member.id) is True  # unpaid first pledge: entitled at once
    sandbox.advance(hours=1)
    sandbox.delete_member(member)  # Patreon posts members:delete with the member's last state: active_patron
    [delivery] = sandbox.flush_webhooks()
    assert delivery.event == "members:delete" and b'"active_patron"' in delivery.body and delivery.status == 200
    patron = store.get_patron(member.id)
    assert patron is not None and patron.patron_status == "former_patron" and patron.access is False


@pytest.mark.patreon_sandbox(members=0)
def test_a_delete_for_a_member_never_stored_stores_nothing(sb_app: Flask, patreon_sandbox: Sandbox) -> None:
    """A deleted member the API does not know and this site never stored: the payload creates no patron."""
    sandbox = patreon_sandbox
    member = sandbox.add_patron("stranger@example.com", tier="Gold")
    body = stale_active(member, sandbox.campaign.id)
    gone_from_patreon(sandbox, member)
    assert send(sb_app, sandbox, body, "members:delete") == 200
    assert get_state(sb_app).store.get_patron(member.id) is None
    assert count(sb_app, "patrons") == 0


@pytest.mark.patreon_sandbox(members=0)
def test_a_stale_update_after_the_delete_cannot_grant_access_back(sb_app: Flask, patreon_sandbox: Sandbox) -> None:
    """Retries reorder deliveries: an update carrying the old active state, processed after the delete, is answered
    404 by the API too, and grants nothing."""
    sandbox, store = patreon_sandbox, get_state(sb_app).store
    set_policy(sb_app, cancelled="at_once")
    member = paying_patron(sb_app, sandbox)
    body = stale_active(member, sandbox.campaign.id)
    gone_from_patreon(sandbox, member)
    assert send(sb_app, sandbox, body, "members:pledge:delete") == 200
    assert access_of(sb_app, member.id) is False
    for event in ("members:update", "members:pledge:update", "members:pledge:create", "members:create"):
        assert send(sb_app, sandbox, body, event) == 200
        patron = store.get_patron(member.id)
        assert patron is not None and patron.access is False and patron.patron_status == "former_patron"


@pytest.mark.patreon_sandbox(members=0)
@pytest.mark.parametrize("failure", ["api-503", "timeout"])
def test_a_network_error_during_the_refetch_revokes_nobody(
    sb_app: Flask, patreon_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    sandbox, state = patreon_sandbox, get_state(sb_app)
    set_policy(sb_app, cancelled="at_once")
    sb_app.config["PATRONLOCK_WEBHOOK_RETRY_SECONDS"] = 60
    member = paying_patron(sb_app, sandbox)
    sandbox.transport = lambda uri, headers, body: 200  # capture Patreon's own deliveries, post them below
    sandbox.cancel(member)
    captured = sandbox.flush_webhooks()
    assert {d.event for d in captured} == {"members:pledge:delete", "members:update"}
    if failure == "api-503":
        sandbox.api_down = True
    else:
        real_member = PatreonClient.member

        def timing_out(self: PatreonClient, member_id: str, **kw: Any) -> MemberSnapshot:
            raise TransportError("GET /members/…: read timed out")

        monkeypatch.setattr(PatreonClient, "member", timing_out)
    for delivery in captured:
        assert send(sb_app, sandbox, delivery.body, delivery.event) == 200
    patron = state.store.get_patron(member.id)
    assert patron is not None and patron.access is True and patron.patron_status == "active_patron"
    t = state.tables.webhook_deliveries
    with state.store.engine.connect() as conn:
        statuses = {r.status for r in conn.execute(t.select())}
    assert "retry" in statuses and "failed" not in statuses
    # once the API answers, the retry applies what it says: the pledge ended
    sandbox.api_down = False
    if failure == "timeout":
        monkeypatch.setattr(PatreonClient, "member", real_member)
    sandbox.advance(minutes=5)
    assert state.jobs.retry_due() >= 1
    patron = state.store.get_patron(member.id)
    assert patron is not None and patron.patron_status == "former_patron" and patron.access is False


@pytest.mark.patreon_sandbox(members=0)
def test_a_re_pledge_that_raced_the_delete_keeps_access(sb_app: Flask, patreon_sandbox: Sandbox) -> None:
    """The delete arrives after the member pledged again: the API says active, and the API wins."""
    sandbox, store = patreon_sandbox, get_state(sb_app).store
    set_policy(sb_app, cancelled="at_once")
    member = paying_patron(sb_app, sandbox)
    body = delete_body(member, sandbox.campaign.id)  # the real payload's shape: former_patron, charge "Deleted"
    assert send(sb_app, sandbox, body, "members:pledge:delete") == 200
    patron = store.get_patron(member.id)
    assert patron is not None and patron.patron_status == "active_patron" and patron.access is True
    assert all("pledge_cancelled" not in (row["events"] or "") for row in store.history(member.id))


@pytest.mark.patreon_sandbox(members=0)
@pytest.mark.parametrize("policy", ["paid_period", "at_once"])
def test_a_delete_the_api_answers_with_no_patron_status_is_a_cancellation(
    sb_app: Flask, patreon_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, policy: str
) -> None:
    """After a pledge delete the API may return the member with no ``patron_status`` at all (a follower now): that
    is a pledge that ended, so the cancel policy's paid period applies, not "never pledged"."""
    sandbox, store = patreon_sandbox, get_state(sb_app).store
    set_policy(sb_app, cancelled=policy)
    member = paying_patron(sb_app, sandbox)
    paid_until = member.next_charge_date
    body = delete_body(member, sandbox.campaign.id)
    real_member = PatreonClient.member

    def no_longer_a_patron(self: PatreonClient, member_id: str, **kw: Any) -> MemberSnapshot:
        return real_member(self, member_id, **kw).replace(
            patron_status=None, entitled_cents=0, entitled_tier_ids=(), will_pay_cents=0, is_follower=True
        )

    monkeypatch.setattr(PatreonClient, "member", no_longer_a_patron)
    seen = cancellations(sb_app)
    assert send(sb_app, sandbox, body, "members:pledge:delete") == 200
    patron = store.get_patron(member.id)
    assert patron is not None and patron.patron_status == "former_patron" and len(seen) == 1
    if policy == "paid_period":
        assert patron.access is True and patron.access_until == paid_until
    else:
        assert patron.access is False
