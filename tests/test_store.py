"""store.apply: the single write path (conditional upsert, transitions, audit rows, signals after commit)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from connect_site import capture
from flask import Flask
from sqlalchemy import func, select

from flask_patronlock import MemberSnapshot, signals
from flask_patronlock.dates import add_months
from flask_patronlock.extension import get_state
from flask_patronlock.transitions import infer_events, merge

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def snap(member_id: str = "m1", **kw: Any) -> MemberSnapshot:
    defaults: dict[str, Any] = dict(
        campaign_id="c1",
        user_id="u-" + member_id,
        email=f"{member_id}@example.com",
        full_name="Kopi",
        patron_status="active_patron",
        last_charge_status="Paid",
        last_charge_date=T0 - timedelta(days=1),
        next_charge_date=T0 + timedelta(days=30),
        entitled_cents=500,
        entitled_tier_ids=("t5",),
        will_pay_cents=500,
        pledge_start=T0 - timedelta(days=1),
        pledge_cadence=1,
    )
    defaults.update(kw)
    return MemberSnapshot(member_id=member_id, **defaults)



def count(app: Flask, table: str) -> int:
    state = get_state(app)
    with state.store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(getattr(state.tables, table))).scalar_one())


def test_create_then_noop_writes_one_audit_row(app_ctx: Flask) -> None:
    store = get_state().store
    first = store.apply(snap(), source="sync", observed_at=T0)
    assert first.outcome == "created" and first.changed
    assert first.patron is not None and first.patron.entitled_cents == 500
    assert first.events == ("pledge_started", "charge_succeeded", "access_granted")
    again = store.apply(snap(), source="sync", observed_at=T0 + timedelta(minutes=30))
    assert again.outcome == "unchanged" and not again.changed
    assert count(app_ctx, "events") == 1
    stored = store.get_patron("m1")
    assert stored is not None
    assert stored.observed_at == T0 and stored.source == "sync"
    assert stored.entitled_tier_ids == ("t5",)
    assert stored.last_charge_date is not None and stored.last_charge_date.tzinfo is not None


def test_never_older_over_newer(app_ctx: Flask) -> None:
    store = get_state().store
    store.apply(snap(entitled_cents=1000), source="webhook", observed_at=T0 + timedelta(hours=1))
    stale = store.apply(snap(entitled_cents=300), source="sync", observed_at=T0)
    assert stale.outcome == "stale"
    patron = store.get_patron("m1")
    assert patron is not None and patron.entitled_cents == 1000
    assert count(app_ctx, "events") == 1


def test_update_records_changes_and_source(app_ctx: Flask) -> None:
    store = get_state().store
    store.apply(snap(), source="sync", observed_at=T0)
    res = store.apply(
        snap(entitled_cents=1000, entitled_tier_ids=("t10",)), source="webhook", observed_at=T0 + timedelta(1)
    )
    assert res.outcome == "updated"
    assert res.changes["entitled_cents"] == (500, 1000)
    assert res.events == ("tier_changed",)
    rows = store.history("m1")
    assert [r["kind"] for r in rows] == ["patron_updated", "patron_created"]
    assert rows[0]["source"] == "webhook" and rows[0]["events"] == "tier_changed"
    assert rows[0]["changes"]["entitled_cents"] == [500, 1000]


def test_apply_rejects_bad_input(app_ctx: Flask) -> None:
    store = get_state().store
    with pytest.raises(ValueError, match="source"):
        store.apply(snap(), source="carrier-pigeon", observed_at=T0)
    with pytest.raises(ValueError, match="timezone"):
        store.apply(snap(), source="sync", observed_at=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="same member twice"):
        store.apply_many([snap(), snap()], source="sync", observed_at=T0)
    assert count(app_ctx, "patrons") == 0


def test_signals_are_sent_after_commit(app_ctx: Flask) -> None:
    state = get_state()
    observed: list[int] = []

    def receiver(sender: Any, **kw: Any) -> None:
        assert sender is app_ctx  # the real app, not the proxy
        # a separate connection sees the row: the transaction has committed
        with state.store.engine.connect() as conn:
            observed.append(int(conn.execute(select(func.count()).select_from(state.tables.patrons)).scalar_one()))

    signals.patron_changed.connect(receiver)
    try:
        state.store.apply(snap(), source="oauth", observed_at=T0)
    finally:
        signals.patron_changed.disconnect(receiver)
    assert observed == [1]


def test_failed_transaction_sends_nothing_and_writes_nothing(app_ctx: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    store = get_state().store

    def boom(*a: Any, **k: Any) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(store, "_update_not_newer", boom)
    store.apply(snap(), source="sync", observed_at=T0)
    with capture(signals.patron_changed) as seen, pytest.raises(RuntimeError):
        store.apply_many(
            [snap(entitled_cents=1000), snap("m2")], source="sync", observed_at=T0 + timedelta(1)
        )
    assert seen == []
    assert count(app_ctx, "patrons") == 1  # m2's insert was rolled back with the failed update
    assert count(app_ctx, "events") == 1


def test_event_signals_carry_documented_kwargs(app_ctx: Flask) -> None:
    store = get_state().store
    sigs = [signals.patron_changed, *signals.EVENT_SIGNALS.values()]
    with capture(*sigs) as seen:
        store.apply(snap(), source="sync", observed_at=T0, run_id=7)
        store.apply(snap(entitled_cents=1000), source="webhook", observed_at=T0 + timedelta(1))
        store.apply(
            snap(entitled_cents=1000, patron_status="declined_patron", last_charge_status="Declined",
                 last_charge_date=T0 + timedelta(days=29)),
            source="sync", observed_at=T0 + timedelta(days=30),
        )
        store.apply(
            snap(entitled_cents=1000, last_charge_date=T0 + timedelta(days=33)),
            source="sync", observed_at=T0 + timedelta(days=34),
        )
        store.apply(
            snap(entitled_cents=300, last_charge_date=T0 + timedelta(days=33)),
            source="webhook", observed_at=T0 + timedelta(days=35),
        )
        store.apply(
            snap(entitled_cents=0, patron_status="former_patron", last_charge_status="Deleted",
                 last_charge_date=T0 + timedelta(days=33)),
            source="webhook", observed_at=T0 + timedelta(days=40),
        )
    # access-granted / access-revoked depend on the store's clock (real time here); tests/test_sync_access.py has them
    names = [name for name, _ in seen if not name.startswith("access-")]
    assert names == [
        "patron-changed", "pledge-started", "charge-succeeded",
        "patron-changed", "tier-changed",
        "patron-changed", "payment-declined",
        "patron-changed", "charge-succeeded", "payment-recovered",
        "patron-changed", "tier-changed",
        "patron-changed", "pledge-cancelled",
    ]
    first = seen[0][1]
    assert set(first) == {"patron", "previous", "changes", "events", "source", "run_id"}
    assert first["run_id"] == 7 and first["previous"] is None and first["source"] == "sync"
    tier_changes = [kw["direction"] for name, kw in seen if name == "tier-changed"]
    assert tier_changes == ["up", "down"]
    charge = seen[2][1]
    assert charge["charged_at"] == T0 - timedelta(days=1)


def test_first_sighting_of_an_old_pledge_is_not_news(app_ctx: Flask) -> None:
    store = get_state().store
    with capture(signals.pledge_started, signals.charge_succeeded) as seen:
        res = store.apply(snap(pledge_start=T0 - timedelta(days=400)), source="sync", observed_at=T0)
    assert res.outcome == "created" and res.events == () and seen == []


def test_inferred_fields(app_ctx: Flask) -> None:
    store = get_state().store
    store.apply(snap(next_charge_date=None), source="sync", observed_at=T0)
    patron = store.get_patron("m1")
    assert patron is not None and patron.paid_through == add_months(T0 - timedelta(days=1), 1)
    declined_at = T0 + timedelta(days=30)
    store.apply(
        snap(patron_status="declined_patron", last_charge_status="Declined", last_charge_date=declined_at),
        source="sync", observed_at=declined_at + timedelta(hours=1),
    )
    patron = store.get_patron("m1")
    assert patron is not None and patron.declined_since == declined_at
    # a later retry that also fails keeps the original declined_since
    store.apply(
        snap(patron_status="declined_patron", last_charge_status="Declined",
             last_charge_date=declined_at + timedelta(3)),
        source="sync", observed_at=declined_at + timedelta(days=4),
    )
    patron = store.get_patron("m1")
    assert patron is not None and patron.declined_since == declined_at
    # cancelling keeps paid_through (cancelled-but-paid keeps access to the period's end)
    store.apply(
        snap(patron_status="former_patron", last_charge_status="Deleted", entitled_cents=0, entitled_tier_ids=()),
        source="webhook", observed_at=declined_at + timedelta(days=5),
    )
    patron = store.get_patron("m1")
    assert patron is not None
    assert patron.declined_since == declined_at  # never settled by a Paid charge: Patreon's dates no longer count
    assert patron.paid_through == add_months(T0 - timedelta(days=1), 1)


def test_annual_paid_through_uses_next_charge_date() -> None:
    charged = datetime(2026, 1, 15, tzinfo=UTC)
    patron = merge(
        None,
        snap(pledge_cadence=12, last_charge_date=charged, next_charge_date=datetime(2027, 1, 15, tzinfo=UTC)),
        observed_at=charged, source="sync",
    )
    assert patron.paid_through == datetime(2027, 1, 15, tzinfo=UTC)
    no_next = merge(None, snap(pledge_cadence=12, last_charge_date=charged, next_charge_date=None),
                    observed_at=charged, source="sync")
    assert no_next.paid_through == datetime(2027, 1, 15, tzinfo=UTC)
    refunded = merge(no_next, snap(last_charge_status="Refunded"), observed_at=charged, source="sync")
    assert refunded.paid_through is None


def test_add_months_clamps() -> None:
    assert add_months(datetime(2026, 1, 31, tzinfo=UTC), 1) == datetime(2026, 2, 28, tzinfo=UTC)
    assert add_months(datetime(2026, 11, 30, tzinfo=UTC), 3) == datetime(2027, 2, 28, tzinfo=UTC)
    assert add_months(datetime(2024, 1, 31, tzinfo=UTC), 1) == datetime(2024, 2, 29, tzinfo=UTC)


def test_infer_events_declined_to_former_is_cancel_not_recovery() -> None:
    declined = merge(None, snap(patron_status="declined_patron", last_charge_status="Declined"),
                     observed_at=T0, source="sync")
    former = merge(declined, snap(patron_status="former_patron", last_charge_status="Declined"),
                   observed_at=T0 + timedelta(1), source="sync")
    assert infer_events(declined, former, observed_at=T0) == ("pledge_cancelled",)


def test_sparse_snapshot_keeps_known_identity(app_ctx: Flask) -> None:
    store = get_state().store
    store.apply(snap(email="kopi@example.com", email_verified=True), source="oauth", observed_at=T0)
    store.apply(snap(email=None, email_verified=None), source="sync", observed_at=T0 + timedelta(1))
    patron = store.get_patron("m1")
    assert patron is not None and patron.email == "kopi@example.com" and patron.email_verified is True


def test_many_in_one_transaction(app_ctx: Flask) -> None:
    store = get_state().store
    snaps = [snap(f"m{i}") for i in range(1200)]  # more than one chunk of ids
    results = store.apply_many(snaps, source="sync", observed_at=T0, run_id=1)
    assert all(r.outcome == "created" for r in results)
    again = store.apply_many(snaps, source="sync", observed_at=T0 + timedelta(hours=1), run_id=2)
    assert all(r.outcome == "unchanged" for r in again)
    assert count(app_ctx, "patrons") == 1200
    assert count(app_ctx, "events") == 1200


def test_concurrent_applies_are_one_effect(app: Flask) -> None:
    """Threads applying the same new member at once: one creation, one audit row, no 'database is locked'."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def worker() -> None:
        try:
            with app.app_context():
                barrier.wait()
                outcomes.append(get_state().store.apply(snap(), source="webhook", observed_at=T0).outcome)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(outcomes) == ["created"] + ["unchanged"] * 7
    assert count(app, "events") == 1


def test_concurrent_newer_and_older_converge_to_newest(app: Flask) -> None:
    with app.app_context():
        get_state().store.apply(snap(), source="sync", observed_at=T0)
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            with app.app_context():
                barrier.wait()
                get_state().store.apply(
                    snap(entitled_cents=1000 + i), source="webhook", observed_at=T0 + timedelta(minutes=i)
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(1, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with app.app_context():
        patron = get_state().store.get_patron("m1")
    assert patron is not None and patron.entitled_cents == 1006


def test_patron_for_user_joins_linked_account(app_ctx: Flask) -> None:
    state = get_state()
    from sqlalchemy import insert

    with state.store.transaction() as conn:
        conn.execute(insert(state.tables.accounts).values(user_id="42", patreon_user_id="u-m1", scope=""))
    res = state.store.apply(snap(), source="oauth", observed_at=T0)
    assert res.patron is not None and res.patron.local_user_id == "42"
    patron = state.store.patron_for_user("42")
    assert patron is not None and patron.member_id == "m1" and patron.local_user_id == "42"
    assert state.store.patron_for_user("42", campaign_id="other") is None
    assert state.store.history("m1")[0]["user_id"] == "42"


def test_last_entitlement_survives_cancellation_for_the_paid_period(app_ctx: Flask) -> None:
    """Patreon zeroes cents and tiers on cancellation (see the delete fixture); the paid period still grants them."""
    from flask_patronlock.policy import LockRule, PolicySettings, Viewer, decide

    store = get_state().store
    store.apply(snap(entitled_cents=1000, entitled_tier_ids=("gold",)), source="sync", observed_at=T0)
    store.apply(
        snap(patron_status="former_patron", last_charge_status="Deleted", entitled_cents=0, entitled_tier_ids=()),
        source="webhook", observed_at=T0 + timedelta(days=3),
    )
    patron = store.get_patron("m1")
    assert patron is not None
    assert (patron.last_entitled_cents, patron.last_entitled_tier_ids) == (1000, ("gold",))
    rule = LockRule(tier_ids=("gold",))
    viewer = Viewer(authenticated=True, linked=True, patron=patron)
    inside = decide(rule, viewer, PolicySettings(), T0 + timedelta(days=10))
    assert inside.allowed and inside.entitlement is not None and inside.entitlement.state == "grace"
    after = decide(rule, viewer, PolicySettings(), T0 + timedelta(days=40))
    assert not after.allowed and after.reason == "former_patron"
    at_once = decide(rule, viewer, PolicySettings(cancelled="at_once"), T0 + timedelta(days=10))
    assert not at_once.allowed and at_once.reason == "former_patron"


def test_a_refund_is_remembered_through_the_cancellation(app_ctx: Flask) -> None:
    store = get_state().store
    charged = T0 - timedelta(days=1)
    store.apply(snap(last_charge_date=charged), source="sync", observed_at=T0)
    store.apply(snap(last_charge_date=charged, last_charge_status="Refunded"), source="webhook",
                observed_at=T0 + timedelta(days=2))
    patron = store.get_patron("m1")
    assert patron is not None and patron.paid_through is None and patron.refunded_at == charged
    # Patreon's cancellation says Deleted and keeps the refunded charge's dates: the store still knows
    store.apply(
        snap(patron_status="former_patron", last_charge_status="Deleted", last_charge_date=charged, entitled_cents=0,
             entitled_tier_ids=()),
        source="webhook", observed_at=T0 + timedelta(days=3),
    )
    patron = store.get_patron("m1")
    assert patron is not None and patron.refunded_at == charged and patron.paid_through is None
