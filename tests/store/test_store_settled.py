"""The store's settled path (``apply_many(load_unchanged=False)``, what a sync run uses) and the policy marker
(``Patron.access_policy``): a member found unchanged without reading its whole row must be exactly a member the full
path finds unchanged, and a creator's policy change must never leave an access evaluated under the old policy."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import MetaData, create_engine, select, update
from sqlalchemy.pool import StaticPool

from flask_patronlock.models import tables_for
from flask_patronlock.patreon.types import UserSnapshot
from flask_patronlock.policy import ENTITLEMENT_SETTINGS, PolicySettings, settings_fingerprint
from flask_patronlock.store import ApplyResult, Store
from tests.helpers.constants import T0
from tests.helpers.patrons import snap

MEMBERS = [f"m{i}" for i in range(5)]


class World:
    """Two stores on separate databases under one clock and one policy: ``full`` always reads whole rows, ``fast``
    asks the database which members are settled first (as a sync run does)."""

    def __init__(self, policy: PolicySettings | None = None) -> None:
        self.now = T0
        self.policy = policy or PolicySettings()
        self.run_id = 0
        self.full, self.fast = self._store(), self._store()

    def _store(self) -> Store:
        engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
        metadata = MetaData()
        tables = tables_for(metadata)
        metadata.create_all(engine)
        return Store(lambda: engine, tables, clock=lambda: self.now, policy_settings=lambda: self.policy)

    def stores(self) -> tuple[Store, Store]:
        return self.full, self.fast


def rows(store: Store) -> list[dict[str, Any]]:
    p = store.tables.patrons
    with store.engine.connect() as conn:
        found = conn.execute(select(p).order_by(p.c.member_id)).mappings().all()
    return [{k: v for k, v in row.items() if k != "updated_at"} for row in found]


def audit(store: Store) -> list[tuple[Any, ...]]:
    e = store.tables.events
    with store.engine.connect() as conn:
        return [
            tuple(row)
            for row in conn.execute(
                select(e.c.member_id, e.c.kind, e.c.source, e.c.events, e.c.changes).order_by(e.c.id)
            )
        ]


def same(a: ApplyResult, b: ApplyResult) -> bool:
    """The full path's result and the settled path's agree (a settled member's result carries no states)."""
    if a.outcome != b.outcome or a.member_id != b.member_id:
        return False
    if b.patron is None:
        return a.outcome == "unchanged" and b.previous is None
    return a.patron == b.patron and a.changes == b.changes and a.events == b.events


# -- a member's snapshot: the base, with any of Patreon's fields changed -------------------------------------------

_dates = st.sampled_from([None, T0 - timedelta(days=40), T0 - timedelta(days=1), T0 + timedelta(days=3)])
_changes = st.fixed_dictionaries(
    {},
    optional={
        "patron_status": st.sampled_from(["active_patron", "declined_patron", "former_patron", None]),
        "last_charge_status": st.sampled_from(["Paid", "Declined", "Pending", "Refunded", "Fraud", None]),
        "last_charge_date": _dates,
        "next_charge_date": _dates,
        "entitled_cents": st.sampled_from([0, 500, 1000]),
        "entitled_tier_ids": st.sampled_from([(), ("t5",), ("t5", "t10")]),
        "will_pay_cents": st.sampled_from([0, 500]),
        "lifetime_cents": st.sampled_from([0, 500, 1500]),
        "pledge_start": _dates,
        "pledge_cadence": st.sampled_from([None, 1, 12]),
        "is_free_trial": st.booleans(),
        "is_gifted": st.booleans(),
        "is_follower": st.booleans(),
        "full_name": st.sampled_from(["Kopi", "Kopi Luwak", ""]),
        # Patreon may leave these out (None keeps what is stored) or say something else
        "campaign_id": st.sampled_from([None, "c1"]),
        "user_id": st.sampled_from([None, "u-other"]),
        "email": st.sampled_from([None, "new@example.com"]),
        "email_verified": st.sampled_from([None, False, True]),
        "user": st.sampled_from([None, UserSnapshot(id="u-x", email="user@example.com", email_verified=False)]),
    },
)
_batch = st.dictionaries(st.sampled_from(MEMBERS), _changes, min_size=1, max_size=len(MEMBERS))
_policies = st.builds(
    PolicySettings,
    declined=st.sampled_from(["restrict", "grace", "retry_window"]),
    declined_grace_days=st.sampled_from([0, 3, 30]),
    cancelled=st.sampled_from(["paid_period", "at_once"]),
    first_charge=st.sampled_from(["entitled_at_once", "after_first_charge"]),
    count_free_trials=st.booleans(),
    missing_runs=st.sampled_from([1, 2]),
    missing_hours=st.sampled_from([None, 1, 48]),
    breaker_min_patrons=st.sampled_from([0, 25]),
)
_steps = st.lists(
    st.one_of(
        st.tuples(st.just("apply"), _batch, st.sampled_from([0, 0, 0, -2])),  # hours older than now (stale)
        st.tuples(st.just("advance"), st.sampled_from([1, 24, 24 * 5, 24 * 40])),
        st.tuples(st.just("policy"), _policies),
        st.tuples(st.just("missing"), st.lists(st.sampled_from(MEMBERS), unique=True, max_size=3)),
        st.tuples(st.just("refresh")),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=_steps)
def test_settled_path_agrees_with_the_full_path(steps: list[tuple[Any, ...]]) -> None:
    world = World()
    for step in steps:
        kind = step[0]
        if kind == "apply":
            batch, hours = step[1], step[2]
            snapshots = [snap(member_id, **changes) for member_id, changes in sorted(batch.items())]
            observed_at = world.now + timedelta(hours=hours)
            full = world.full.apply_many(snapshots, source="sync", observed_at=observed_at, defer_revocations=True)
            fast = world.fast.apply_many(
                snapshots, source="sync", observed_at=observed_at, defer_revocations=True, load_unchanged=False
            )
            assert all(same(a, b) for a, b in zip(full, fast, strict=True)), (full, fast)
            # applied again at once: everything is settled now, whichever path asks
            again = world.fast.apply_many(
                snapshots, source="sync", observed_at=observed_at, defer_revocations=True, load_unchanged=False
            )
            assert all(r.outcome in ("unchanged", "stale", "deferred") for r in again)
        elif kind == "advance":
            world.now += timedelta(hours=step[1])
        elif kind == "policy":
            world.policy = step[1]
        elif kind == "missing":
            world.run_id += 1
            for store in world.stores():
                store.mark_missing(world.run_id, step[1], seen_before=world.now + timedelta(hours=1))
        else:
            for store in world.stores():
                store.refresh_access()
        assert rows(world.full) == rows(world.fast)
        assert audit(world.full) == audit(world.fast)


@pytest.fixture
def world() -> Iterator[World]:
    yield World(PolicySettings(declined="retry_window"))


def marker(store: Store, member_id: str) -> str | None:
    p = store.tables.patrons
    with store.engine.connect() as conn:
        return conn.execute(select(p.c.access_policy).where(p.c.member_id == member_id)).scalar_one()


def test_a_settled_member_is_answered_without_its_row(world: World) -> None:
    store = world.fast
    created = store.apply(snap("m1"), source="sync", observed_at=T0)
    assert created.patron is not None and created.patron.access_policy == settings_fingerprint(world.policy)
    [result] = store.apply_many([snap("m1")], source="sync", observed_at=T0, load_unchanged=False)
    assert result.outcome == "unchanged" and result.patron is None and result.previous is None
    # the full path still hands back the stored state
    [result] = store.apply_many([snap("m1")], source="sync", observed_at=T0)
    assert result.outcome == "unchanged" and result.patron is not None


def test_read_first_writes_nothing_only_when_every_member_is_settled(world: World) -> None:
    """``read_first``: a batch found settled in a plain read opens no write transaction and does not call ``also``;
    a batch with one change is applied as without it, ``also`` inside its transaction."""
    store = world.fast
    members = [snap("m1"), snap("m2")]
    store.apply_many(members, source="sync", observed_at=T0)
    begins: list[str] = []
    with store.engine.connect() as conn:  # one connection (StaticPool): its statements as SQLite runs them
        raw = conn.connection.dbapi_connection
        assert raw is not None
        raw.set_trace_callback(lambda sql: begins.append(sql) if sql.startswith("BEGIN") else None)
    calls: list[list[str]] = []

    def also(conn: Any, results: list[ApplyResult]) -> None:
        calls.append([r.outcome for r in results])

    kw: dict[str, Any] = {"source": "sync", "observed_at": T0, "load_unchanged": False, "read_first": True}
    results = store.apply_many(members, also=also, **kw)
    assert [r.outcome for r in results] == ["unchanged", "unchanged"] and all(r.patron is None for r in results)
    assert not calls and not begins
    changed = [members[0], members[1].replace(lifetime_cents=members[1].lifetime_cents + 500)]
    results = store.apply_many(changed, also=also, **kw)
    assert [r.outcome for r in results] == ["unchanged", "updated"] and calls == [["unchanged", "updated"]]
    assert begins  # a write transaction, as without read_first
    assert store.get_patron("m2").lifetime_cents == changed[1].lifetime_cents  # type: ignore[union-attr]


def test_a_policy_change_is_never_settled_away(world: World) -> None:
    """Declined, entitled under retry_window; the creator switches to restrict. The next run's settled
    path must not call the member unchanged: it re-evaluates and revokes, once."""
    store = world.fast
    declined = snap("m1", patron_status="declined_patron", last_charge_status="Declined")
    assert store.apply(declined, source="sync", observed_at=T0).patron.access is True  # type: ignore[union-attr]
    world.policy = PolicySettings(declined="restrict")
    [result] = store.apply_many([declined], source="sync", observed_at=T0, load_unchanged=False)
    assert result.outcome == "updated" and result.events == ("access_revoked",)
    assert marker(store, "m1") == settings_fingerprint(world.policy)
    [result] = store.apply_many([declined], source="sync", observed_at=T0, load_unchanged=False)
    assert result.outcome == "unchanged" and result.patron is None


def test_an_access_due_to_end_is_not_settled(world: World) -> None:
    world.policy = PolicySettings(declined="grace", declined_grace_days=3)
    store = world.fast
    declined = snap("m1", patron_status="declined_patron", last_charge_status="Declined", last_charge_date=T0)
    created = store.apply(declined, source="sync", observed_at=T0)
    assert created.patron is not None and created.patron.access_until == T0 + timedelta(days=3)
    world.now = T0 + timedelta(days=3)  # the grace period ends exactly now
    [result] = store.apply_many([declined], source="sync", observed_at=world.now, load_unchanged=False)
    assert result.outcome == "updated" and result.events == ("access_revoked",)


def test_a_policy_change_is_re_evaluated_by_refresh_and_marked_silently(world: World) -> None:
    store = world.fast
    store.apply_many([snap("m1"), snap("m2", is_free_trial=True)], source="sync", observed_at=T0)
    before = audit(store)
    world.policy = PolicySettings(declined="retry_window", count_free_trials=False)
    # not full=True: the marker finds every access evaluated under the old policy
    changed = store.refresh_access()
    assert [(r.member_id, r.events) for r in changed] == [("m2", ("access_revoked",))]
    assert marker(store, "m1") == marker(store, "m2") == settings_fingerprint(world.policy)
    after = audit(store)
    # one audit row, m2's revocation; m1's new marker is not a change of state
    assert len(after) == len(before) + 1 and after[-1][:4] == ("m2", "access_changed", "clock", "access_revoked")
    assert store.refresh_access() == []


def test_a_row_without_a_marker_is_marked_by_the_next_unchanged_apply(world: World) -> None:
    store = world.fast
    store.apply(snap("m1"), source="sync", observed_at=T0)
    p = store.tables.patrons
    with store.engine.begin() as conn:  # a row written before the marker existed
        conn.execute(update(p).values(access_policy=None))
    events = len(audit(store))
    [result] = store.apply_many([snap("m1")], source="sync", observed_at=T0, load_unchanged=False)
    assert result.outcome == "unchanged" and result.patron is not None  # read whole: it was not settled
    assert marker(store, "m1") == settings_fingerprint(world.policy)
    assert len(audit(store)) == events  # silent
    [result] = store.apply_many([snap("m1")], source="sync", observed_at=T0, load_unchanged=False)
    assert result.patron is None  # settled from now on


def test_fingerprint_covers_exactly_what_entitlement_reads() -> None:
    every = {f for f in PolicySettings.__dataclass_fields__}
    assert set(ENTITLEMENT_SETTINGS) | {"breaker_min_patrons", "breaker_fraction"} == every
    base = PolicySettings()
    assert settings_fingerprint(replace(base, breaker_min_patrons=3, breaker_fraction=0.5)) == settings_fingerprint(
        base
    )
    for name, other in [
        ("declined", "restrict"), ("declined_grace_days", 8), ("cancelled", "at_once"),
        ("first_charge", "after_first_charge"), ("count_free_trials", False), ("count_gifted", False),
        ("missing_runs", 3), ("missing_hours", None),
    ]:
        assert settings_fingerprint(replace(base, **{name: other})) != settings_fingerprint(base), name
