"""The write path of members the store has never seen: what :meth:`~flask_patronlock.store.Store.apply_many` does
for them, in bulk.

A campaign's first reconcile run creates every member: 100,000 rows and their 100,000 audit rows. For a member with
no stored row there is nothing to lock, compare, defer or find stale: applying its snapshot always creates it, with
:func:`~flask_patronlock.transitions.merge` against nothing, the access the policy gives it now, and an audit row
listing every field that is set. This module writes exactly that, with less work per member than the general
transition: on SQLite both tables' rows go to the DBAPI's ``executemany`` with the values of the page (when, from
where, under which policy) converted once per page, not once per row.

What is stored, returned and signalled is the same as through the general path, column for column
(tests/store/test_firstseen.py compares the two on SQLite and PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Boolean, Connection
from sqlalchemy.engine import Dialect

from .dbutil import dumps_json, sqlite_insert_plan
from .models import Tables
from .patreon.types import MemberSnapshot
from .transitions import (
    EVENT_COLUMNS,
    INSERT_COLUMNS,
    AccessContext,
    ApplyResult,
    columns_of,
    diff,
    infer_events,
    merge,
)

if TYPE_CHECKING:
    from .store import Store

__all__ = ["Prepared", "create", "prepare"]

_SET = object.__setattr__


class Prepared:
    """A page's members computed as first sightings before their transaction (:func:`prepare`): their results and, on
    SQLite, their rows' values as SQLite stores them. Pure work, so a reconcile run does it for the next page while
    the current one is written; the transaction uses it for the members it finds no row for and ignores the rest.

    :param access: the settings and moment the members' access is evaluated under. The transaction evaluates its
        page under its own (the settings then, its own moment) and takes a prepared member only where that gives the
        same: the same settings (:meth:`fits`) and an access not due to end by then (time alone only ever ends an
        entitlement, at ``access_until``).
    """

    __slots__ = ("access", "created", "observed_at", "run_id", "source")

    def __init__(self, access: AccessContext, observed_at: datetime, source: str, run_id: int | None) -> None:
        self.access, self.observed_at, self.source, self.run_id = access, observed_at, source, run_id
        #: member id -> the ``created`` result, its patron row's values and its audit row's (``None`` but on SQLite)
        self.created: dict[str, tuple[ApplyResult, list[Any] | None, list[Any] | None]] = {}

    def fits(self, access: AccessContext, observed_at: datetime, source: str, run_id: int | None) -> bool:
        """Whether it was prepared for a transaction that applies with these, under the same settings, no later."""
        mine = self.access
        return (
            access.key == mine.key and access.defer == mine.defer and access.settings == mine.settings
            and mine.now <= access.now and observed_at == self.observed_at and source == self.source
            and run_id == self.run_id
        )


def prepare(
    dialect: Dialect,
    tables: Tables,
    snapshots: Sequence[MemberSnapshot],
    *,
    access: AccessContext,
    observed_at: datetime,
    source: str,
    run_id: int | None,
    into: Prepared | None = None,
) -> Prepared:
    """What creating each of ``snapshots`` would store, not linked to any local user yet (:func:`create` links them):
    :func:`~flask_patronlock.transitions.merge` against nothing, the access ``access`` gives it, every set field as
    its audit row's changes, and, on SQLite, both rows' values converted by their columns' bind processors (the
    values the page shares -- when, from where, under which policy -- once per page)."""
    prepared = into if into is not None else Prepared(access, observed_at, source, run_id)
    plans = _sqlite_plans(dialect, tables, access, observed_at, source, run_id) if dialect.name == "sqlite" else None
    created = prepared.created
    for snapshot in snapshots:
        patron = merge(None, snapshot, observed_at=observed_at, source=source)
        patron, granted = access.evaluate(None, patron, observed_at=observed_at, owned=True)
        changes = diff(None, patron)
        events = infer_events(None, patron, observed_at=observed_at) + granted
        result = ApplyResult(snapshot.member_id, "created", patron, None, changes, events)
        if plans is None:
            created[snapshot.member_id] = (result, None, None)
            continue
        (per_row, fixed), (template, at) = plans
        values = [*columns_of(patron), None]
        for index, process, boolean in per_row:
            value = values[index]
            if value is not None and not (boolean and value.__class__ is bool):
                values[index] = process(value)
        for index, value in fixed.items():
            values[index] = value
        row = template.copy()
        row[at["member_id"]] = snapshot.member_id
        row[at["patreon_user_id"]] = patron.patreon_user_id
        row[at["events"]] = ",".join(events)
        row[at["changes"]] = dumps_json(changes)
        created[snapshot.member_id] = (result, values, row)
    return prepared


def create(
    store: Store,
    conn: Connection,
    snapshots: Sequence[MemberSnapshot],
    links: Mapping[str, str],
    *,
    access: AccessContext,
    observed_at: datetime,
    source: str,
    run_id: int | None,
    prepared: Prepared | None = None,
) -> tuple[dict[str, ApplyResult], list[MemberSnapshot]]:
    """Create the members of ``snapshots``, none of which has a stored row, with their audit rows, inside ``conn``'s
    transaction: what :meth:`Store.apply_locked` does for a member it found no row for (``links`` maps Patreon user
    ids to local users). ``prepared`` (:func:`prepare`, for the same ``access``) holds members computed already.
    Returns the ``created`` results by member id, and the snapshots whose row another transaction inserted meanwhile
    (PostgreSQL only; the caller applies them against that row)."""
    if prepared is None or not prepared.fits(access, observed_at, source, run_id):
        prepared = Prepared(access, observed_at, source, run_id)
    now, created = access.now, prepared.created
    missing = [s for s in snapshots if s.member_id not in created or _ended(created[s.member_id][0], now)]
    if missing:
        prepare(conn.dialect, store.tables, missing, access=access, observed_at=observed_at, source=source,
                run_id=run_id, into=prepared)
    entries = [prepared.created[s.member_id] for s in snapshots]
    user_at = EVENT_COLUMNS.index("user_id")
    results: dict[str, ApplyResult] = {}
    for result, _values, row in entries:
        patron = result.patron
        assert patron is not None
        if links and patron.patreon_user_id is not None and patron.patreon_user_id in links:
            _SET(patron, "local_user_id", links[patron.patreon_user_id])  # prepare()'s own, held by nobody else
        elif patron.local_user_id is not None:  # linked by an earlier attempt of this transaction
            _SET(patron, "local_user_id", None)
        if row is not None:
            row[user_at] = patron.local_user_id
        results[result.member_id] = result
    if conn.dialect.name == "sqlite":
        _write_sqlite(store, conn, entries)
        return results, []
    patrons = [result.patron for result, _values, _row in entries if result.patron is not None]
    inserted = store._insert_absent(conn, patrons)
    raced = [s for s in snapshots if s.member_id not in inserted]
    for snapshot in raced:
        del results[snapshot.member_id]
    store._write_events(
        conn,
        [
            (observed_at, r.member_id, r.patron, "patron_created", source, run_id, r.events, r.changes, None)
            for r in results.values()
        ],
    )
    return results, raced


def _ended(result: ApplyResult, now: datetime) -> bool:
    """Whether the access ``result``'s patron was given ends by ``now``."""
    until = result.patron.access_until if result.patron is not None else None
    return until is not None and until <= now


_Plans = tuple[
    tuple[list[tuple[int, Any, bool]], dict[int, Any]], tuple[list[Any], dict[str, int]]
]


def _sqlite_plans(
    dialect: Dialect, tables: Tables, access: AccessContext, observed_at: datetime, source: str, run_id: int | None
) -> _Plans:
    """For the patron rows: the per-row bind processors and the page's shared values converted; for the audit rows: a
    row with the shared values filled in and the positions of the others. (``updated_at`` and ``created_at`` are
    filled by :func:`_write_sqlite` when it writes.)"""
    plan = sqlite_insert_plan(dialect, tables.patrons, INSERT_COLUMNS, "member_id")
    shared = {"observed_at": observed_at, "source": source, "access_policy": access.key}
    fixed = _processed(plan.processors, INSERT_COLUMNS, shared)
    # sqlite3 stores a bool as the very integer SQLAlchemy's Boolean processor makes of it: skipped for bools
    booleans = {i for i, name in enumerate(INSERT_COLUMNS) if isinstance(tables.patrons.c[name].type, Boolean)}
    shared_or_stamped = {*fixed, INSERT_COLUMNS.index("updated_at")}
    per_row = [
        (index, process, index in booleans) for index, process in plan.processors if index not in shared_or_stamped
    ]

    event_plan = sqlite_insert_plan(dialect, tables.events, EVENT_COLUMNS, None)
    varying = ("member_id", "patreon_user_id", "user_id", "events", "changes")
    assert not any(EVENT_COLUMNS[index] in varying[:4] for index, _ in event_plan.processors), "a text column converts"
    event_shared = {"observed_at": observed_at, "kind": "patron_created", "source": source, "run_id": run_id,
                    "detail": None}
    event_fixed = _processed(event_plan.processors, EVENT_COLUMNS, event_shared)
    template = [event_fixed.get(index) for index in range(len(EVENT_COLUMNS))]
    at = {name: EVENT_COLUMNS.index(name) for name in varying}
    return (per_row, fixed), (template, at)


def _write_sqlite(
    store: Store, conn: Connection, entries: list[tuple[ApplyResult, list[Any] | None, list[Any] | None]]
) -> None:
    """Insert the prepared rows on SQLite (its write lock is held: nothing can have inserted them since they were
    looked for) in multi-row statements (:class:`~flask_patronlock.dbutil.SqliteInsert`), stamped with the time of
    writing."""
    tables = store.tables
    plan = sqlite_insert_plan(conn.dialect, tables.patrons, INSERT_COLUMNS, "member_id")
    event_plan = sqlite_insert_plan(conn.dialect, tables.events, EVENT_COLUMNS, None)
    now = store.clock()
    updated_at = INSERT_COLUMNS.index("updated_at")
    created_at = EVENT_COLUMNS.index("created_at")
    stamp = _processed(plan.processors, INSERT_COLUMNS, {"updated_at": now})[updated_at]
    event_stamp = _processed(event_plan.processors, EVENT_COLUMNS, {"created_at": now})[created_at]
    rows, events = [], []
    for _result, values, row in entries:
        assert values is not None and row is not None
        values[updated_at] = stamp
        row[created_at] = event_stamp
        rows.append(values)
        events.append(row)
    plan.execute(conn, rows)
    event_plan.execute(conn, events)


def _processed(processors: list[tuple[int, Any]], names: tuple[str, ...], values: Mapping[str, Any]) -> dict[int, Any]:
    """``values`` (by column name) as their columns' bind processors store them, by position in ``names``."""
    convert = dict(processors)
    out = {}
    for name, value in values.items():
        index = names.index(name)
        out[index] = convert[index](value) if index in convert else value
    return out
