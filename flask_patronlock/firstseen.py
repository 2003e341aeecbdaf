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
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from sqlalchemy import Boolean, Connection

from .dbutil import dumps_json, sqlite_insert_plan
from .patreon.types import MemberSnapshot
from .patron import Patron
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

__all__ = ["create"]

_SET = object.__setattr__


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
) -> tuple[dict[str, ApplyResult], list[MemberSnapshot]]:
    """Create the members of ``snapshots``, none of which has a stored row, with their audit rows, inside ``conn``'s
    transaction: what :meth:`Store.apply_locked` does for a member it found no row for (``links`` maps Patreon user
    ids to local users). Returns the ``created`` results by member id, and the snapshots whose row another
    transaction inserted meanwhile (PostgreSQL only; the caller applies them against that row)."""
    results: dict[str, ApplyResult] = {}
    patrons: list[Patron] = []
    for snapshot in snapshots:
        patron = merge(None, snapshot, observed_at=observed_at, source=source)
        if links and patron.patreon_user_id is not None and patron.patreon_user_id in links:
            _SET(patron, "local_user_id", links[patron.patreon_user_id])  # merge()'s own, held by nobody else
        patron, granted = access.evaluate(None, patron, observed_at=observed_at, owned=True)
        changes = diff(None, patron)
        events = infer_events(None, patron, observed_at=observed_at) + granted
        results[snapshot.member_id] = ApplyResult(snapshot.member_id, "created", patron, None, changes, events)
        patrons.append(patron)
    if conn.dialect.name == "sqlite":
        _write_sqlite(store, conn, patrons, results, access=access, observed_at=observed_at, source=source,
                      run_id=run_id)
        return results, []
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


def _write_sqlite(
    store: Store,
    conn: Connection,
    patrons: list[Patron],
    results: Mapping[str, ApplyResult],
    *,
    access: AccessContext,
    observed_at: datetime,
    source: str,
    run_id: int | None,
) -> None:
    """Insert the rows on SQLite (its write lock is held: nothing can have inserted them since they were looked for),
    each value converted by its column's own bind processor as :func:`~flask_patronlock.dbutil.executemany_sqlite`
    does, the page's shared values once, in multi-row statements (:class:`~flask_patronlock.dbutil.SqliteInsert`)."""
    now = store.clock()
    tables = store.tables
    plan = sqlite_insert_plan(conn, tables.patrons, INSERT_COLUMNS, "member_id")
    processors = plan.processors
    shared = {"observed_at": observed_at, "source": source, "access_policy": access.key, "updated_at": now}
    fixed = _processed(processors, INSERT_COLUMNS, shared)
    # sqlite3 stores a bool as the very integer SQLAlchemy's Boolean processor makes of it: skipped for bools
    booleans = {i for i, name in enumerate(INSERT_COLUMNS) if isinstance(tables.patrons.c[name].type, Boolean)}
    per_row = [(index, process, index in booleans) for index, process in processors if index not in fixed]
    rows = []
    for patron in patrons:
        values = [*columns_of(patron), None]
        for index, process, boolean in per_row:
            value = values[index]
            if value is not None and not (boolean and value.__class__ is bool):
                values[index] = process(value)
        for index, value in fixed.items():
            values[index] = value
        rows.append(values)
    # in key order (the page's order is the API's, random to the key): SQLite's B-tree takes them in fewer page
    # visits; the audit rows keep the page's order
    rows.sort(key=itemgetter(0))
    plan.execute(conn, rows)

    event_plan = sqlite_insert_plan(conn, tables.events, EVENT_COLUMNS, None)
    event_processors = event_plan.processors
    varying = ("member_id", "patreon_user_id", "user_id", "events", "changes")
    assert not any(EVENT_COLUMNS[index] in varying[:4] for index, _ in event_processors), "a text column converts"
    shared = {"created_at": now, "observed_at": observed_at, "kind": "patron_created", "source": source,
              "run_id": run_id, "detail": None}
    fixed = _processed(event_processors, EVENT_COLUMNS, shared)
    template = [fixed.get(index) for index in range(len(EVENT_COLUMNS))]
    at = {name: EVENT_COLUMNS.index(name) for name in varying}
    events = []
    for result in results.values():
        created = result.patron
        assert created is not None
        row = template.copy()
        row[at["member_id"]] = result.member_id
        row[at["patreon_user_id"]] = created.patreon_user_id
        row[at["user_id"]] = created.local_user_id
        row[at["events"]] = ",".join(result.events)
        row[at["changes"]] = dumps_json(result.changes)
        events.append(row)
    event_plan.execute(conn, events)


def _processed(processors: list[tuple[int, Any]], names: tuple[str, ...], values: Mapping[str, Any]) -> dict[int, Any]:
    """``values`` (by column name) as their columns' bind processors store them, by position in ``names``."""
    convert = dict(processors)
    out = {}
    for name, value in values.items():
        index = names.index(name)
        out[index] = convert[index](value) if index in convert else value
    return out

