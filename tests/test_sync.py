"""Reconcile runs against the live sandbox: completeness, faults, the breaker, missing patrons, policies, the lease."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sync_helpers import access_of, count, revoked_in_run, sandbox_app, set_policy, sync

from flask_patronlock import signals
from flask_patronlock.extension import get_state
from flask_patronlock.leases import Lease
from flask_patronlock.sandbox import Sandbox
from flask_patronlock.sync import SYNC_LEASE, AlreadyRunning, list_runs, refresh_tiers, run_sync

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def sb_app(make_app: Callable[..., Flask], patreon_sandbox: Sandbox) -> Flask:
    return sandbox_app(make_app, patreon_sandbox)


def active_ids(sandbox: Sandbox, n: int) -> list[str]:
    ids = [m.id for m in sandbox.members if m.patron_status == "active_patron" and not m.is_free_trial]
    return ids[:n]


@pytest.mark.patreon_sandbox(members=230)
def test_complete_run_then_unchanged_run_writes_nothing(
    sb_app: Flask, patreon_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = sync(sb_app, patreon_sandbox)
    assert first.status == "complete" and first.complete and first.reason is None
    assert first.pages == 5 and first.members_seen == 230 == first.total_reported
    assert count(sb_app, "patrons") == 230 and first.changed == 230
    assert count(sb_app, "tiers") == len(patreon_sandbox.tiers)
    audit = count(sb_app, "events")
    store = get_state(sb_app).store
    read_whole: list[str] = []
    load = store.load_for_update
    monkeypatch.setattr(store, "load_for_update", lambda conn, ids: read_whole.extend(ids) or load(conn, ids))
    second = sync(sb_app, patreon_sandbox)
    assert second.complete and second.changed == 0 and second.revoked == 0
    assert read_whole == []  # every member was found settled by the database; no row was read whole
    assert first.detail["api_requests"] == 6 and first.detail["tiers"] == "changed (never read)"  # 5 pages + tiers
    # the catalogue is fresh (PATRONLOCK_TIERS_MAX_AGE): the run reads member pages only
    assert second.detail["unchanged"] == 230 and second.detail["api_requests"] == 5
    assert second.detail["tiers"] == "fresh"
    assert count(sb_app, "events") == audit  # no audit row for a no-op
    runs = list_runs(sb_app)
    assert [r.run_id for r in runs] == [second.run_id, first.run_id] and runs[0].detail["unchanged"] == 230


@pytest.mark.patreon_sandbox(members=60)
def test_tiers_are_read_again_when_stale(sb_app: Flask, patreon_sandbox: Sandbox) -> None:
    sandbox = patreon_sandbox
    assert sync(sb_app, sandbox).detail["tiers"] == "changed (never read)"
    sandbox.add_tier("Platinum", 5000)  # nobody pledges to it yet: only its age makes the run read it
    sandbox.advance(seconds=3599)
    fresh = sync(sb_app, sandbox)
    assert fresh.detail["tiers"] == "fresh" and fresh.detail["api_requests"] == 2
    assert "Platinum" not in [t.title for t in get_state(sb_app).store.tiers()]
    sandbox.advance(seconds=1)
    stale = sync(sb_app, sandbox)
    assert stale.detail["tiers"] == "changed (stale)" and stale.detail["api_requests"] == 3
    assert "Platinum" in [t.title for t in get_state(sb_app).store.tiers()]
    again = sync(sb_app, sandbox)
    assert again.detail["tiers"] == "fresh" and again.detail["api_requests"] == 2


def test_refresh_tiers_reads_the_catalogue_now(sb_app: Flask, patreon_sandbox: Sandbox) -> None:
    with sb_app.app_context():
        assert get_state().store.tiers() == []
        assert refresh_tiers() is True
        assert [t.title for t in get_state().store.tiers()] == ["Free", "Bronze", "Silver", "Gold"]
        assert refresh_tiers() is False  # nothing changed
        patreon_sandbox.add_tier("Platinum", 5000)
        assert refresh_tiers() is True
        assert "Platinum" in [t.title for t in get_state().store.tiers()]


@pytest.mark.patreon_sandbox(members=60)
def test_tiers_are_read_again_when_a_member_names_an_unknown_tier(sb_app: Flask, patreon_sandbox: Sandbox) -> None:
    sandbox = patreon_sandbox
    sync(sb_app, sandbox)
    diamond = sandbox.add_tier("Diamond", 7000)
    member = sandbox.add_patron("diamond@example.com", tier="Diamond")
    run = sync(sb_app, sandbox)
    assert run.complete and run.detail["tiers"] == "changed (unknown tier)" and run.detail["api_requests"] == 3
    assert diamond.id in {t.id for t in get_state(sb_app).store.tiers()}
    assert get_state(sb_app).store.get_patron(member.id).entitled_tier_ids == (diamond.id,)
    assert sync(sb_app, sandbox).detail["tiers"] == "fresh"


@pytest.mark.patreon_sandbox(members=60)
def test_tiers_max_age_is_configurable(make_app: Callable[..., Flask], patreon_sandbox: Sandbox) -> None:
    app = sandbox_app(make_app, patreon_sandbox, PATRONLOCK_TIERS_MAX_AGE=0)
    sync(app, patreon_sandbox)
    assert sync(app, patreon_sandbox).detail["tiers"] == "unchanged (stale)"


FAULTS: list[Any] = [
    pytest.param({"kind": "error", "status": 500, "times": None}, "ServerError", id="500"),
    pytest.param({"kind": "rate_limit", "retry_after": 1, "times": None}, "RateLimited", id="429-exhausted"),
    pytest.param({"kind": "slow", "seconds": 1.5, "times": None}, "TransportError", id="timeout"),
    pytest.param({"kind": "truncate"}, "MalformedDocument", id="truncated-json"),
    pytest.param({"kind": "repeat_cursor"}, "PaginationError", id="repeated-cursor"),
    pytest.param(
        {"kind": "drop", "count": 12},
        "saw 187 member(s) but Patreon reported a total of 199 (more than 5 apart)",
        id="dropped",
    ),
    pytest.param({"kind": "drop", "count": 50}, "page(s) 3 came back empty but pointed to a next page", id="emptied"),
]


@pytest.mark.patreon_sandbox(members=200)
@pytest.mark.parametrize(("fault", "reason"), FAULTS)
def test_fault_on_page_k_revokes_nobody(
    sb_app: Flask, patreon_sandbox: Sandbox, fault: dict[str, Any], reason: str
) -> None:
    sandbox = patreon_sandbox
    set_policy(sb_app, cancelled="at_once", missing_runs=1)
    assert sync(sb_app, sandbox).complete
    doomed = active_ids(sandbox, 6)
    for member_id in doomed[:4]:
        sandbox.cancel(member_id)
    for member_id in doomed[4:]:
        sandbox.delete_member(member_id)
    sandbox.add_patron("new@example.com", tier="Gold")
    sandbox.add_fault(page=3, **fault)
    run = sync(sb_app, sandbox, read_timeout=0.5)
    assert run.status == "incomplete" and not run.complete
    assert reason in (run.reason or "")
    assert revoked_in_run(sb_app, run.run_id) == 0 and run.revoked == 0
    assert all(access_of(sb_app, m) is True for m in doomed)
    assert count(sb_app, "patrons", get_state(sb_app).tables.patrons.c.missing_runs > 0) == 0
    sandbox.clear_faults()
    healed = sync(sb_app, sandbox)
    assert healed.complete and healed.revoked == 6
    assert all(access_of(sb_app, m) is False for m in doomed)


@pytest.mark.patreon_sandbox(members=200)
@pytest.mark.parametrize("decision", ["approve", "reject"])
@pytest.mark.parametrize("share", ["none-listed", "half-cancelled"])
def test_breaker_holds_a_run_that_would_revoke_too_many(
    sb_app: Flask, patreon_sandbox: Sandbox, decision: str, share: str
) -> None:
    sandbox, store = patreon_sandbox, get_state(sb_app).store
    set_policy(sb_app, cancelled="at_once", missing_runs=1)
    assert sync(sb_app, sandbox).complete
    entitled_before = store.count_entitled(sandbox.campaign.id)
    if share == "none-listed":  # the API suddenly lists nobody (and says so in its total)
        doomed = [m.id for m in sandbox.members]
        for member_id in doomed:
            sandbox.delete_member(member_id)
    else:  # the API reports half of everyone as former patrons
        doomed = [m.id for m in sandbox.members if m.patron_status == "active_patron"][::2]
        for member_id in doomed:
            sandbox.cancel(member_id)
    held_events: list[dict[str, Any]] = []

    def on_held(sender: Any, **kw: Any) -> None:
        held_events.append(kw)

    with signals.revocations_held.connected_to(on_held, sender=sb_app):
        run = sync(sb_app, sandbox)
    assert run.status == "held" and run.complete and run.held > 25 and run.revoked == 0
    assert held_events and held_events[0]["run_id"] == run.run_id and held_events[0]["total"] == entitled_before
    assert store.count_entitled(sandbox.campaign.id) == entitled_before
    assert revoked_in_run(sb_app, run.run_id) == 0
    held = store.held_revocations(run.run_id)
    assert len(held) == run.held
    if decision == "approve":
        store.approve_run(run.run_id, by="creator")
        entitled_doomed = {h["member_id"] for h in held}
        assert all(access_of(sb_app, m) is False for m in entitled_doomed)
        assert store.count_entitled(sandbox.campaign.id) == entitled_before - len(entitled_doomed)
    else:
        store.reject_run(run.run_id, by="creator")
        assert store.count_entitled(sandbox.campaign.id) == entitled_before
        assert all(store.get_patron(m).held_run_id is None for m in doomed)  # type: ignore[union-attr]
    assert store.held_revocations(run.run_id) == []
    with pytest.raises(ValueError, match="not held"):
        store.approve_run(run.run_id)


@pytest.mark.patreon_sandbox(members=40)
def test_missing_two_strikes_and_reappearing(sb_app: Flask, patreon_sandbox: Sandbox) -> None:
    sandbox, store = patreon_sandbox, get_state(sb_app).store
    set_policy(sb_app, missing_runs=2, missing_hours=None)
    assert sync(sb_app, sandbox).complete
    gone, back = active_ids(sandbox, 2)
    sandbox.delete_member(gone)
    first = sync(sb_app, sandbox)
    patron = store.get_patron(gone)
    assert first.complete and first.revoked == 0 and patron is not None
    assert patron.missing_runs == 1 and patron.missing_since == sandbox.now and patron.access is True
    # a patron marked missing who shows up again is restored without any revocation
    store.mark_missing(first.run_id, [back], seen_before=sandbox.now + timedelta(days=1))
    assert store.get_patron(back).missing_runs == 1  # type: ignore[union-attr]
    sandbox.advance(minutes=30)
    second = sync(sb_app, sandbox)
    assert second.revoked == 1 and access_of(sb_app, gone) is False
    events = store.history(gone)[0]["events"].split(",")
    assert "access_revoked" in events and "pledge_cancelled" in events
    restored = store.get_patron(back)
    assert restored is not None and restored.missing_runs == 0 and restored.access is True
    assert all("access_revoked" not in row["events"] for row in store.history(back))


@pytest.mark.patreon_sandbox(members=40)
def test_missing_hours_revoke_between_runs(sb_app: Flask, patreon_sandbox: Sandbox) -> None:
    sandbox, store = patreon_sandbox, get_state(sb_app).store
    set_policy(sb_app, missing_runs=5, missing_hours=48)
    sync(sb_app, sandbox)
    (gone,) = active_ids(sandbox, 1)
    sandbox.delete_member(gone)
    sync(sb_app, sandbox)
    sandbox.advance(hours=47)
    assert store.refresh_access() == [] and access_of(sb_app, gone) is True
    sandbox.advance(hours=2)
    (flip,) = store.refresh_access()
    assert flip.member_id == gone and "access_revoked" in flip.events and access_of(sb_app, gone) is False
    assert store.refresh_access() == []  # announced once


@pytest.mark.patreon_sandbox(members=0)
def test_declined_grace_recovered_and_cancelled_but_paid(sb_app: Flask, patreon_sandbox: Sandbox) -> None:
    sandbox = patreon_sandbox
    set_policy(sb_app, declined="grace", declined_grace_days=7, cancelled="paid_period")
    late = sandbox.add_patron("late@example.com", tier="Gold")
    leaving = sandbox.add_patron("leaving@example.com", tier="Silver")
    seen: list[tuple[str, str]] = []

    def record(name: str) -> Callable[..., None]:
        return lambda sender, patron, **kw: seen.append((name, patron.member_id))

    receivers = {sig: record(sig.name) for sig in (signals.access_granted, signals.access_revoked,
                                                    signals.payment_declined, signals.payment_recovered)}
    for sig, receiver in receivers.items():
        sig.connect(receiver)
    try:
        sync(sb_app, sandbox)
        assert ("access-granted", late.id) in seen
        sandbox.advance(days=3)
        sandbox.decline(late)
        sandbox.cancel(leaving)
        sync(sb_app, sandbox)
        assert access_of(sb_app, late.id) is True and ("payment-declined", late.id) in seen  # inside the grace
        assert access_of(sb_app, leaving.id) is True  # cancelled, but paid until the next charge date
        sandbox.advance(days=8)
        sync(sb_app, sandbox)
        assert access_of(sb_app, late.id) is False and ("access-revoked", late.id) in seen
        sandbox.recover(late)
        sync(sb_app, sandbox)
        assert access_of(sb_app, late.id) is True and ("payment-recovered", late.id) in seen
        assert seen.count(("access-granted", late.id)) == 2
        sandbox.advance(days=30)
        sync(sb_app, sandbox)
        assert access_of(sb_app, leaving.id) is False and ("access-revoked", leaving.id) in seen
    finally:
        for sig, receiver in receivers.items():
            sig.disconnect(receiver)


@pytest.mark.patreon_sandbox(members=5)
def test_one_run_at_a_time_and_a_crashed_lease_expires(sb_app: Flask, patreon_sandbox: Sandbox) -> None:
    store = get_state(sb_app).store
    other = Lease(store, SYNC_LEASE, ttl=60, holder="other-machine:1")
    assert other.acquire()
    with pytest.raises(AlreadyRunning, match="already running"):
        sync(sb_app, patreon_sandbox)
    assert not Lease(store, SYNC_LEASE, ttl=60).acquire()
    patreon_sandbox.advance(minutes=2)  # the other holder crashed: it never renewed
    assert sync(sb_app, patreon_sandbox).complete
    assert Lease(store, SYNC_LEASE).current() is None  # released after the run


@pytest.mark.patreon_sandbox(members=0)
def test_email_matching_links_addresses_verified_on_both_sides_only(
    make_app: Callable[..., Flask], patreon_sandbox: Sandbox
) -> None:
    app = sandbox_app(make_app, patreon_sandbox, PATRONLOCK_SYNC_MATCH_EMAILS=True)
    verified_here = {"ann@example.com": "1", "bob@example.com": "2"}  # what the site's confirmation mails proved
    asked: list[list[str]] = []

    @get_state(app).extension.verified_users_by_email
    def find(emails: Any) -> dict[str, str]:
        asked.append(list(emails))
        return {e: verified_here[e] for e in emails if e in verified_here}

    ann = patreon_sandbox.add_patron("Ann@Example.com", tier="Gold")
    patreon_sandbox.add_patron("bob@example.com", tier="Gold", email_verified=False)
    patreon_sandbox.add_patron("cy@example.com", tier="Gold")  # a local Cy exists, but never confirmed the address
    run = sync(app, patreon_sandbox)
    assert run.detail["linked"] == 1 and asked == [["ann@example.com", "cy@example.com"]]
    store = get_state(app).store
    patron = store.get_patron(ann.id)
    assert patron is not None and patron.local_user_id == "1"
    e = get_state(app).tables.events
    assert count(app, "events", e.c.kind == "account_linked", e.c.user_id == "1") == 1
    a = get_state(app).tables.accounts
    assert count(app, "accounts", a.c.user_id == "1", a.c.origin == "email", a.c.access_token.is_(None)) == 1
    assert sync(app, patreon_sandbox).detail["linked"] == 0


@pytest.mark.patreon_sandbox(members=0)
@pytest.mark.parametrize("lookup", ["user_by_email", "users_by_email", "verified-but-flag-off"])
def test_nothing_but_the_verified_callback_and_the_flag_makes_a_run_link(
    make_app: Callable[..., Flask], patreon_sandbox: Sandbox, lookup: str
) -> None:
    """An address anyone can register here (the Log in with Patreon lookup, the old batch lookup) never links a
    patron; the host's vouching callback links only with PATRONLOCK_SYNC_MATCH_EMAILS on (default off)."""
    flag = {"PATRONLOCK_SYNC_MATCH_EMAILS": True} if lookup != "verified-but-flag-off" else {}
    app = sandbox_app(make_app, patreon_sandbox, **flag)
    extension = get_state(app).extension
    if lookup == "user_by_email":

        class Attacker:
            def get_id(self) -> str:
                return "666"

        extension.user_by_email(lambda email: Attacker())
    elif lookup == "users_by_email":
        with pytest.warns(DeprecationWarning, match="verified_users_by_email"):
            extension.users_by_email(lambda emails: {e: "666" for e in emails})
    else:
        extension.verified_users_by_email(lambda emails: {e: "666" for e in emails})
    ada = patreon_sandbox.add_patron("ada@example.com", tier="Gold")
    run = sync(app, patreon_sandbox)
    assert run.complete and run.detail.get("linked", 0) == 0
    assert count(app, "accounts") == 0
    patron = get_state(app).store.get_patron(ada.id)
    assert patron is not None and patron.local_user_id is None


def test_run_needs_configuration(app: Flask) -> None:
    from flask_patronlock.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="PATRONLOCK_CAMPAIGN_ID"):
        run_sync(app)


@pytest.mark.patreon_sandbox(members=3)
def test_a_run_whose_process_stopped_is_marked_failed_by_the_next(sb_app: Flask, patreon_sandbox: Sandbox) -> None:
    state = get_state(sb_app)
    runs = state.tables.sync_runs
    with state.store.engine.begin() as conn:  # what a run killed mid-way leaves behind (its lease long expired)
        conn.execute(runs.insert().values(trigger="schedule", status="running", started_at=patreon_sandbox.now))
    result = sync(sb_app, patreon_sandbox)
    assert result.status == "complete"
    listed = list_runs(sb_app)
    assert [r.status for r in listed] == ["complete", "failed"]
    assert listed[1].reason is not None and listed[1].reason.startswith("interrupted")
    assert listed[1].finished_at is not None and not listed[1].complete
