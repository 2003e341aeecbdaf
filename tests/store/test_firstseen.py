"""Members the store has never seen are created in bulk (flask_patronlock.firstseen): every column of their rows, their
audit rows, the results and the signals must be exactly what the general transition (Store._transition, merge(),
the access evaluation, diff(), one by one) makes of them, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from itertools import repeat
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import MetaData, create_engine, delete, event, insert, select
from sqlalchemy.pool import StaticPool

from flask_patronlock import signals
from flask_patronlock.dbutil import dumps_json, json_ready, sqlite_insert_plan
from flask_patronlock.models import tables_for
from flask_patronlock.patreon.types import MemberSnapshot, UserSnapshot
from flask_patronlock.patron import Patron
from flask_patronlock.policy import PolicySettings
from flask_patronlock.store import Store
from flask_patronlock.transitions import STATE_FIELDS, ApplyResult, CreatedChanges, changes_dict, diff
from tests.helpers.constants import T0
from tests.helpers.patrons import snap

OBSERVED = T0 + timedelta(hours=1)
_SIGNALS = {"patron_changed": signals.patron_changed, **signals.EVENT_SIGNALS, "access_granted": signals.access_granted}


def _members() -> list[MemberSnapshot]:
    """A varied first sighting: each shape the write path infers something different from."""
    day = timedelta(days=1)
    return [
        snap("m01"),  # paid, a new pledge: pledge_started, charge_succeeded, access_granted
        snap("m02", pledge_start=T0 - 400 * day),  # an existing patron: no events
        snap("m03", patron_status="declined_patron", last_charge_status="Declined", last_charge_date=T0 - 3 * day),
        snap("m04", patron_status="declined_patron", last_charge_status="Declined", last_charge_date=None),
        snap("m05", patron_status="active_patron", last_charge_status="Declined", pledge_start=T0 - 90 * day),
        snap("m06", patron_status="former_patron", last_charge_status="Deleted", entitled_cents=0,
             entitled_tier_ids=(), pledge_start=T0 - 200 * day),
        snap("m07", patron_status="former_patron", last_charge_status="Paid", next_charge_date=T0 + 9 * day),
        snap("m08", is_free_trial=True, last_charge_status=None, last_charge_date=None, pledge_cadence=None),
        snap("m09", is_gifted=True, last_charge_status=None, last_charge_date=None, entitled_tier_ids=("t5", "t10")),
        snap("m10", pledge_cadence=12, entitled_cents=12000, next_charge_date=T0 + 300 * day),
        snap("m11", last_charge_date=None, next_charge_date=None, pledge_start=None, pledge_cadence=None),
        snap("m12", last_charge_status="Refunded"),
        snap("m13", patron_status="former_patron", last_charge_status="Refunded by Patreon"),
        snap("m14", last_charge_status="Fraud", lifetime_cents=500),
        snap("m15", last_charge_status="Pending", entitled_cents=0, entitled_tier_ids=()),
        snap("m16", patron_status=None, last_charge_status=None, last_charge_date=None, next_charge_date=None,
             entitled_cents=0, entitled_tier_ids=(), will_pay_cents=0, pledge_start=None, is_follower=True),
        snap("m17", campaign_id=None, user_id=None, email=None, full_name=""),
        snap("m18", email=None, email_verified=None,
             user=UserSnapshot(id="u-m18", email="From.User@example.com", email_verified=True)),
        snap("m19", full_name='Zoë "Z" \\ O\'Brien \u2603 \U0001f600', email="zoë@example.com", email_verified=False),
        snap("m20", user_id="u-linked", lifetime_cents=2_000_000_000_000),
        snap("m21", last_charge_date=T0 - 31 * day, next_charge_date=T0 - day),  # paid period already over
        snap("m22", last_charge_date=T0.replace(microsecond=0) - 2 * day, pledge_start=T0.replace(microsecond=123)),
    ]


class World:
    """One database, one store, a clock, a policy and a recorder of every signal the store sends."""

    def __init__(self, url: str, policy: PolicySettings) -> None:
        connect = {"check_same_thread": False} if url.startswith("sqlite") else {}
        self.engine = create_engine(url, poolclass=StaticPool, connect_args=connect)
        self.metadata = MetaData()
        self.tables = tables_for(self.metadata)
        self.metadata.create_all(self.engine)
        self.sender = object()
        self.store = Store(
            lambda: self.engine, self.tables, sender=self.sender, strict_signals=lambda: True,
            clock=lambda: T0, policy_settings=lambda: policy,
        )
        self.sent: list[tuple[str, dict[str, Any]]] = []
        with self.engine.begin() as conn:
            conn.execute(insert(self.tables.accounts).values(user_id="local-7", patreon_user_id="u-linked"))

    def receiver(self, name: str) -> Any:
        def receive(sender: Any, **kwargs: Any) -> None:
            assert sender is self.sender
            self.sent.append((name, kwargs))

        return receive

    def apply(self, snapshots: list[MemberSnapshot], *, bulk: bool, **kw: Any) -> dict[str, Any]:
        """Apply ``snapshots`` with the bulk creation on or off; everything it wrote, returned and sent, then the
        tables emptied again (but the accounts) for the other way."""
        self.store._first_seen_in_bulk = bulk
        self.sent = []
        receivers = [(signal, self.receiver(name)) for name, signal in _SIGNALS.items()]
        for signal, receive in receivers:
            signal.connect(receive, sender=self.sender)
        try:
            results = self.store.apply_many(snapshots, source="sync", observed_at=OBSERVED, run_id=3, **kw)
        finally:
            for signal, receive in receivers:
                signal.disconnect(receive, sender=self.sender)
        out = {"results": [_result(r) for r in results], "signals": self.sent}
        p, e = self.tables.patrons, self.tables.events
        with self.engine.begin() as conn:
            out["patrons"] = [tuple(r) for r in conn.execute(select(p).order_by(p.c.member_id))]
            # the audit rows as the database holds them (on SQLite the stored text itself), but their ids
            out["events"] = [tuple(r)[1:] for r in conn.exec_driver_sql(f"SELECT * FROM {e.name} ORDER BY id")]
            out["raw_patrons"] = [tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {p.name} ORDER BY member_id")]
            conn.execute(delete(e))
            conn.execute(delete(p))
        return out

    def close(self) -> None:
        self.metadata.drop_all(self.engine)
        self.engine.dispose()


def _result(result: ApplyResult) -> tuple[Any, ...]:
    return (result.member_id, result.outcome, result.patron, result.previous, dict(result.changes), result.events,
            result.losses)


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    made = World(db_url, PolicySettings())
    yield made
    made.close()


def _agree(world: World, snapshots: list[MemberSnapshot], **kw: Any) -> dict[str, Any]:
    general = world.apply(snapshots, bulk=False, **kw)
    bulk = world.apply(snapshots, bulk=True, **kw)
    for key in ("patrons", "raw_patrons", "events", "results", "signals"):
        assert bulk[key] == general[key], key
    return bulk


@pytest.mark.parametrize(
    "policy",
    [
        PolicySettings(),
        PolicySettings(declined="restrict", cancelled="at_once", first_charge="after_first_charge",
                       count_free_trials=False),
    ],
    ids=["default", "strict"],
)
def test_first_sighting_in_bulk_is_the_general_transition(db_url: str, policy: PolicySettings) -> None:
    world = World(db_url, policy)
    try:
        made = _agree(world, _members())
        assert len(made["patrons"]) == len(_members()) == len(made["events"])
        assert {r[1] for r in made["results"]} == {"created"}
        by_id = {r[0]: r for r in made["results"]}
        assert by_id["m20"][2].local_user_id == "local-7"  # linked before it was first seen
        assert "pledge_started" in by_id["m01"][5] and not by_id["m02"][5]
        assert any(name == "access_granted" for name, _ in made["signals"])
    finally:
        world.close()


def test_a_page_of_stored_and_new_members(world: World) -> None:
    """Members already stored go the general way (updated or unchanged) beside the new ones, in the page's order."""
    members = _members()
    stored = members[::3]
    changed = [m.replace(entitled_cents=m.entitled_cents + 100) if i % 2 else m for i, m in enumerate(stored)]

    def page(bulk: bool, **kw: Any) -> dict[str, Any]:
        world.store._first_seen_in_bulk = True
        world.store.apply_many(stored, source="sync", observed_at=T0, run_id=2)
        return world.apply(changed + [m for m in members if m not in stored], bulk=bulk, **kw)

    for kw in ({}, {"load_unchanged": False, "defer_revocations": True}):
        general, bulk = page(False, **kw), page(True, **kw)
        for key in ("patrons", "raw_patrons", "results", "signals"):
            assert bulk[key] == general[key], key
        # the audit rows are the same rows; the new members' come first
        assert sorted(bulk["events"], key=repr) == sorted(general["events"], key=repr)
        assert {r[1] for r in bulk["results"]} == {"created", "updated", "unchanged"}


_dates = st.sampled_from([None, T0 - timedelta(days=400), T0 - timedelta(days=3), T0 + timedelta(days=20)])
_snapshots = st.builds(
    MemberSnapshot,
    member_id=st.just("m"),
    campaign_id=st.sampled_from([None, "c1"]),
    user_id=st.sampled_from([None, "u-1", "u-linked"]),
    email=st.sampled_from([None, "a@example.com"]),
    email_verified=st.sampled_from([None, False, True]),
    full_name=st.text(max_size=8),
    patron_status=st.sampled_from(["active_patron", "declined_patron", "former_patron", None, "odd_status"]),
    last_charge_status=st.sampled_from(
        ["Paid", "Declined", "Pending", "Refunded", "Refunded by Patreon", "Fraud", "Deleted", "Other", None]
    ),
    last_charge_date=_dates,
    next_charge_date=_dates,
    entitled_cents=st.sampled_from([0, 500, 12000]),
    entitled_tier_ids=st.sampled_from([(), ("t5",), ("t5", "t10")]),
    will_pay_cents=st.sampled_from([0, 500]),
    lifetime_cents=st.sampled_from([0, 500]),
    pledge_start=_dates,
    pledge_cadence=st.sampled_from([None, 1, 12]),
    is_free_trial=st.booleans(),
    is_gifted=st.booleans(),
    is_follower=st.booleans(),
    user=st.sampled_from([None, UserSnapshot(id="u-x", email="user@example.com", email_verified=True)]),
)
_policies = st.builds(
    PolicySettings,
    declined=st.sampled_from(["restrict", "grace", "retry_window"]),
    cancelled=st.sampled_from(["paid_period", "at_once"]),
    first_charge=st.sampled_from(["entitled_at_once", "after_first_charge"]),
    count_free_trials=st.booleans(),
    count_gifted=st.booleans(),
)


@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(members=st.lists(_snapshots, min_size=1, max_size=6), policy=_policies)
def test_any_first_sighting_in_bulk_is_the_general_transition(members: list[MemberSnapshot], policy: Any) -> None:
    world = World("sqlite://", policy)
    try:
        _agree(world, [m.replace(member_id=f"m{i}") for i, m in enumerate(members)])
    finally:
        world.close()


def test_rows_are_split_by_sqlites_limit_on_parameters() -> None:
    """On SQLite the rows go in multi-row statements no larger than its limit on bound parameters: with the limit
    lowered to 100 (3 patron rows or 9 audit rows a statement), the page is stored exactly as under the default."""
    default = World("sqlite://", PolicySettings())
    lowered = World("sqlite://", PolicySettings())
    inserts: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("INSERT INTO patronlock_"):
            inserts.append(statement.split()[2])

    try:
        with lowered.engine.connect() as conn:
            conn.connection.dbapi_connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 100)  # type: ignore[union-attr]
        event.listen(lowered.engine, "before_cursor_execute", count)
        expected = _agree(default, _members())
        for bulk in (True, False):
            inserts.clear()
            made = lowered.apply(_members(), bulk=bulk)
            for key in ("patrons", "raw_patrons", "events", "results", "signals"):
                assert made[key] == expected[key], key
            assert inserts.count("patronlock_patrons") == 8  # 22 rows, 3 a statement
            assert inserts.count("patronlock_events") == 3  # 22 rows, 9 a statement
    finally:
        default.close()
        lowered.close()


# -- the created member's changes, read from the patron ---------------------------------------------------------------

_patrons = st.builds(
    lambda snapshot, policy: _created(snapshot, policy),
    _snapshots,
    _policies,
)


def _created(snapshot: MemberSnapshot, policy: PolicySettings) -> Patron:
    from flask_patronlock.transitions import AccessContext, merge

    patron = merge(None, snapshot, observed_at=OBSERVED, source="sync")
    return AccessContext(policy, T0, False).evaluate(None, patron, observed_at=OBSERVED, owned=True)[0]


@settings(max_examples=150, deadline=None, derandomize=True)
@given(patron=_patrons)
def test_created_changes_are_diff_from_nothing(patron: Patron) -> None:
    """CreatedChanges is diff(None, patron) in every way a reader can tell: items, order, length, membership, lookups,
    equality both ways, the plain dict it copies to, and the JSON both encoders write."""
    expected = diff(None, patron)
    changes = CreatedChanges(patron)
    assert list(changes.items()) == list(expected.items())
    assert list(changes) == list(expected) and len(changes) == len(expected)
    assert changes == expected and expected == changes
    assert changes.as_dict() == expected and type(changes.as_dict()) is dict
    assert type(changes_dict(changes)) is dict and changes_dict(changes) == expected
    names, values = changes.set_fields()
    assert names == tuple(expected) and values == tuple(new for _, new in expected.values())
    for name in STATE_FIELDS:
        assert (name in changes) is (name in expected)
        if name in expected:
            assert changes[name] == expected[name]
        else:
            with pytest.raises(KeyError):
                changes[name]
    assert dumps_json(changes) == dumps_json(expected)
    assert json_ready(changes) == json_ready(expected)


def test_created_changes_share_their_names() -> None:
    """Two patrons with the same fields set share one names tuple (a first run keeps a page of them alive)."""
    first, second = (_created(snap(f"m{i}"), PolicySettings()) for i in (1, 2))
    assert CreatedChanges(first).set_fields()[0] is CreatedChanges(second).set_fields()[0]


def test_signals_get_a_plain_dict_of_changes(world: World) -> None:
    """patron-changed's ``changes`` is a dict of its own (as documented), not the result's read-only mapping."""
    made = world.apply(_members()[:3], bulk=True)
    sent = [kwargs["changes"] for name, kwargs in made["signals"] if name == "patron_changed"]
    assert len(sent) == 3 and all(type(changes) is dict for changes in sent)


def test_an_engine_json_serializer_writes_the_changes(tmp_path: Any) -> None:
    """An engine with its own JSON serializer writes the created members' changes with it, as it writes every other
    JSON value, instead of the built-in encoder."""
    calls: list[Any] = []

    def serializer(value: Any) -> str:
        calls.append(value)
        return json.dumps(json_ready(value), sort_keys=True)

    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}", json_serializer=serializer)
    metadata = MetaData()
    tables = tables_for(metadata)
    metadata.create_all(engine)
    store = Store(lambda: engine, tables, sender=object(), clock=lambda: T0, policy_settings=PolicySettings)
    try:
        store.apply_many(_members()[:4], source="sync", observed_at=OBSERVED, run_id=None)
        with engine.connect() as conn:
            stored = [row[0] for row in conn.exec_driver_sql("SELECT changes FROM patronlock_events ORDER BY id")]
        written = [value for value in calls if value is not None]  # (and once the page's detail, None)
        assert len(stored) == 4 and len(written) == 4 and all(type(value) is dict for value in written)
        assert stored == [json.dumps(json_ready(value), sort_keys=True) for value in written]
        assert json.loads(stored[0])["patron_status"] == [None, "active_patron"]
    finally:
        engine.dispose()


def test_rows_given_by_column() -> None:
    """SqliteInsert.execute_columns stores what execute() stores for the same rows, split by SQLite's limit; a wrong
    number of columns is refused before anything is written."""
    engine = create_engine("sqlite://", poolclass=StaticPool)
    metadata = MetaData()
    tables = tables_for(metadata)
    metadata.create_all(engine)
    names = ("created_at", "member_id", "kind", "source", "events")
    when = "2026-01-01 00:00:00.000000"
    try:
        with engine.begin() as conn:
            conn.connection.dbapi_connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 12)  # type: ignore[union-attr]
            plan = sqlite_insert_plan(conn, tables.events, names, None)
            members = [f"m{i}" for i in range(7)]
            plan.execute_columns(
                conn, [repeat(when, 7), members, repeat("patron_created", 7), repeat("sync", 7), ["a"] * 7], 7
            )
            plan.execute_columns(conn, [[], [], [], [], []], 0)
            with pytest.raises(ValueError, match="expected 5 columns"):
                plan.execute_columns(conn, [members], 7)
            rows = conn.exec_driver_sql("SELECT created_at, member_id, kind, events FROM patronlock_events ORDER BY id")
            assert [tuple(r) for r in rows] == [(when, m, "patron_created", "a") for m in members]
    finally:
        engine.dispose()


def test_dates_in_other_zones(world: World) -> None:
    """Dates Patreon never sends but a caller may: other offsets, and the two instants of one ambiguous wall time (a
    clock going back), which compare equal within their zone. Each is stored as its own instant and audited with its
    own offset, exactly as the general path does."""
    from zoneinfo import ZoneInfo

    berlin = ZoneInfo("Europe/Berlin")
    first = datetime(2026, 10, 25, 2, 30, tzinfo=berlin)  # 00:30 UTC
    second = first.replace(fold=1)  # 01:30 UTC
    assert first == second and first.astimezone(UTC) != second.astimezone(UTC)
    plus_two = T0.astimezone(timezone(timedelta(hours=2)))
    members = [
        snap("z1", last_charge_date=first, pledge_start=plus_two),
        snap("z2", last_charge_date=second, pledge_start=T0),
        snap("z3", last_charge_date=first.astimezone(UTC), pledge_start=plus_two),
    ]
    made = _agree(world, members)
    stored = {row[0]: row for row in made["raw_patrons"]}
    column = [c.name for c in world.tables.patrons.columns].index("last_charge_date")
    for member, instant in (("z1", first.astimezone(UTC)), ("z2", second.astimezone(UTC))):
        value = stored[member][column]  # SQLite's text, PostgreSQL's timestamptz
        assert value == (instant.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(value, str) else instant)
    audits = {row[2]: row[9] if isinstance(row[9], dict) else json.loads(row[9]) for row in made["events"]}
    assert audits["z1"]["pledge_start"][1].endswith("+02:00") and audits["z2"]["pledge_start"][1].endswith("+00:00")
