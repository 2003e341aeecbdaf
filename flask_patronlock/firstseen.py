"""The write path of members the store has never seen: what :meth:`~flask_patronlock.store.Store.apply_many` does
for them, in bulk.

A campaign's first reconcile run creates every member: 100,000 rows and their 100,000 audit rows. For a member with
no stored row there is nothing to lock, compare, defer or find stale: applying its snapshot always creates it, with
:func:`~flask_patronlock.transitions.merge` against nothing, the access the policy gives it now, and an audit row
listing every field that is set. This module writes exactly that, with less work per member than the general
transition: on SQLite both tables' rows go in multi-row statements, gathered a column at a time, with the values of
the page (when, from where, under which policy) and each of its distinct dates converted once; a created member's
``changes`` are read from its patron when asked (:class:`~flask_patronlock.transitions.CreatedChanges`) instead of
held as some twenty pairs each (a page of live pairs made Python's collector walk the heap every few pages).

What is stored, returned and signalled is the same as through the general path, column for column
(tests/store/test_firstseen.py compares the two on SQLite and PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from itertools import repeat
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from sqlalchemy import Boolean, Connection

from .dbutil import dumps_json, sqlite_insert_plan
from .models import UTCDateTime
from .patreon.types import MemberSnapshot
from .patron import Patron
from .transitions import (
    EVENT_COLUMNS,
    INSERT_COLUMNS,
    STATE_FIELDS,
    AccessContext,
    ApplyResult,
    CreatedChanges,
    changes_dict,
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
        changes = CreatedChanges(patron)  # diff(None, patron), its pairs built only when read
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
    does, the page's shared values once, in multi-row statements (:class:`~flask_patronlock.dbutil.SqliteInsert`).

    The values are gathered a column at a time (no list per row), and each distinct date of the page is converted
    once: a page's patrons share most of their dates (the charge days of a campaign, a paid period's end that is
    also its access's)."""
    now = store.clock()
    tables = store.tables
    plan = sqlite_insert_plan(conn, tables.patrons, INSERT_COLUMNS, "member_id")
    processors = dict(plan.processors)
    fixed = _processed(
        plan.processors,
        INSERT_COLUMNS,
        {"observed_at": observed_at, "source": source, "access_policy": access.key, "updated_at": now},
    )
    # in key order (the page's order is the API's, random to the key): SQLite's B-tree takes them in fewer page
    # visits; the audit rows keep the page's order
    ordered = sorted(patrons, key=_MEMBER_ID)
    count = len(ordered)
    stored_dates: dict[datetime, str] = {}  # UTC dates only (two datetimes of one other zone compare by wall time)
    columns: list[Any] = []
    for index, name in enumerate(INSERT_COLUMNS):
        if index in fixed:
            columns.append(repeat(fixed[index], count))
            continue
        column = list(map(attrgetter(name), ordered))
        process = processors.get(index)
        column_type = tables.patrons.c[name].type
        if process is None or column.count(None) == count:
            pass
        elif isinstance(column_type, UTCDateTime):
            column = [
                None if value is None else _memo(stored_dates, value, process) if value.tzinfo is UTC
                else process(value)
                for value in column
            ]
        elif isinstance(column_type, Boolean):
            # sqlite3 stores a bool as the very integer SQLAlchemy's Boolean processor makes of it: bools kept
            column = [value if value is None or value.__class__ is bool else process(value) for value in column]
        else:
            column = [None if value is None else process(value) for value in column]
        columns.append(column)
    plan.execute_columns(conn, columns, count)

    event_plan = sqlite_insert_plan(conn, tables.events, EVENT_COLUMNS, None)
    varying = ("member_id", "patreon_user_id", "user_id", "events", "changes")
    assert not any(EVENT_COLUMNS[index] in varying[:4] for index, _ in event_plan.processors), "a text column converts"
    fixed = _processed(
        event_plan.processors,
        EVENT_COLUMNS,
        {"created_at": now, "observed_at": observed_at, "kind": "patron_created", "source": source, "run_id": run_id,
         "detail": None},
    )
    created = [result.patron for result in results.values()]
    to_json = dict(event_plan.processors)[EVENT_COLUMNS.index("changes")]
    made = {
        "member_id": list(results),
        "patreon_user_id": list(map(attrgetter("patreon_user_id"), created)),
        "user_id": list(map(attrgetter("local_user_id"), created)),
        "events": [",".join(result.events) for result in results.values()],
        "changes": _changes_json(tables.patrons, results.values()) if to_json is dumps_json
        # the engine has its own JSON serializer: it writes the changes
        else [to_json(changes_dict(result.changes)) for result in results.values()],
    }
    count = len(results)
    event_plan.execute_columns(
        conn,
        [repeat(fixed[index], count) if index in fixed else made[name] for index, name in enumerate(EVENT_COLUMNS)],
        count,
    )


_MEMBER_ID = attrgetter("member_id")


def _memo(memo: dict[datetime, str], value: datetime, process: Callable[[datetime], str]) -> str:
    text = memo.get(value)
    if text is None:
        text = memo[value] = process(value)
    return text


def _changes_json(table: Any, results: Iterable[ApplyResult]) -> list[str]:
    """The audit rows' ``changes`` of created members, as :func:`~flask_patronlock.dbutil.dumps_json` writes
    ``diff(None, patron)``: each set field as ``[null, value]``, a date as its ``isoformat()`` (converted here once per
    distinct UTC date of the page instead of once per field through the encoder's fallback)."""
    dated = {name for name in STATE_FIELDS if isinstance(table.c[name].type, UTCDateTime)}
    positions: dict[tuple[str, ...], tuple[int, ...]] = {}
    iso: dict[datetime, str] = {}  # UTC dates only: an instant's isoformat() depends on its offset
    out = []
    for result in results:
        changes = result.changes
        assert isinstance(changes, CreatedChanges)
        names, values = changes.set_fields()
        at = positions.get(names)
        if at is None:
            at = positions[names] = tuple(i for i, name in enumerate(names) if name in dated)
        if at:
            converted = list(values)
            for i in at:
                value = converted[i]
                if value.tzinfo is UTC:
                    text = iso.get(value)
                    if text is None:
                        text = iso[value] = value.isoformat()
                    converted[i] = text
                else:
                    converted[i] = value.isoformat()
            values = tuple(converted)
        out.append(dumps_json(dict(zip(names, zip(repeat(None), values), strict=True))))
    return out


def _processed(processors: list[tuple[int, Any]], names: tuple[str, ...], values: Mapping[str, Any]) -> dict[int, Any]:
    """``values`` (by column name) as their columns' bind processors store them, by position in ``names``."""
    convert = dict(processors)
    out = {}
    for name, value in values.items():
        index = names.index(name)
        out[index] = convert[index](value) if index in convert else value
    return out

