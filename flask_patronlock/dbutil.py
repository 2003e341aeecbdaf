"""SQL helpers under the store: write transactions, SQLite's one writer, bulk inserts, JSON-ready values.

None of this knows patrons: :mod:`flask_patronlock.store`, :mod:`flask_patronlock.catalogue` and the webhook
acknowledgement write through it. No Flask here.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert
from sqlalchemy.types import JSON

#: how many ids one ``IN (...)`` or one bulk statement takes. SQLite's default limit on bound parameters is 32766
#: since 3.32; stay well under it for older builds too.
CHUNK = 500


# -- JSON columns: the audit rows' ``changes`` hold datetimes and tuples of tier ids -----------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def json_ready(value: Any) -> Any:
    """``value`` with datetimes as ISO 8601 strings and tuples as lists, all the way down: what any database's JSON
    column takes (the audit rows' ``changes`` hold datetimes and tuples of tier ids)."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is dict:
        return {k: json_ready(v) for k, v in value.items()}
    if kind is tuple or kind is list:
        return [json_ready(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


_encode_json = json.JSONEncoder(default=_json_default).encode  # one encoder: json.dumps(default=...) makes one per call


def dumps_json(value: Any) -> str:
    """What SQLAlchemy's JSON type stores for ``value`` (``json.dumps``, ``None`` as ``'null'``), writing datetimes
    and tuples as :func:`json_ready` would have converted them, in one C-level call."""
    return "null" if value is None else _encode_json(value)


# -- bulk inserts without per-row statement overhead (a first run writes 100,000 rows) ---------------------------------

_SQLITE_INSERTS: dict[tuple[int, tuple[str, ...], str | None], tuple[str, list[tuple[int, Any]]]] = {}


def _sqlite_insert_plan(
    conn: Connection, table: Any, names: tuple[str, ...], skip_conflicts_on: str | None
) -> tuple[str, list[tuple[int, Any]]]:
    """The ``INSERT`` for ``names`` and, by position, the bind processors of the columns that have one."""
    key = (id(table), names, skip_conflicts_on)
    cached = _SQLITE_INSERTS.get(key)
    if cached is None:
        dialect = conn.dialect
        quote = dialect.identifier_preparer.quote
        sql = (
            f"INSERT INTO {quote(table.name)} ({', '.join(quote(n) for n in names)}) "
            f"VALUES ({', '.join('?' for _ in names)})"
        )
        if skip_conflicts_on is not None:
            sql += f" ON CONFLICT ({quote(skip_conflicts_on)}) DO NOTHING"
        processors: list[tuple[int, Any]] = []
        for index, name in enumerate(names):
            column_type = table.c[name].type
            if isinstance(column_type, JSON) and getattr(dialect, "_json_serializer", None) is None:
                # What the JSON type stores (json.dumps, None as 'null'), in one C-level call that also writes the
                # datetimes and tuples json_ready() would have converted first.
                processors.append((index, dumps_json))
                continue
            process = column_type._cached_bind_processor(dialect)
            if process is not None:
                processors.append((index, process))
        cached = (sql, processors)
        _SQLITE_INSERTS[key] = cached
    return cached


def executemany_sqlite(
    conn: Connection,
    table: Any,
    names: tuple[str, ...],
    rows: Iterable[Sequence[Any]],
    *,
    skip_conflicts_on: str | None = None,
) -> None:
    """``INSERT`` ``rows`` (value sequences in the order of ``names``) through the DBAPI's executemany on SQLite: the
    columns' own bind processors convert the values (so what is stored is exactly what SQLAlchemy would store), but
    no statement is compiled and no parameter dict is built per row."""
    sql, processors = _sqlite_insert_plan(conn, table, names, skip_conflicts_on)
    params = []
    for row in rows:
        values = list(row)
        for index, process in processors:
            values[index] = process(values[index])
        params.append(tuple(values))
    if params:
        conn.exec_driver_sql(sql, params)


def executemany(conn: Connection, table: Any, names: tuple[str, ...], rows: Sequence[Sequence[Any]]) -> None:
    """A plain multi-row ``INSERT`` of value sequences in the order of ``names`` (JSON columns' values may hold
    datetimes and tuples)."""
    if not rows:
        return
    if conn.dialect.name == "sqlite":
        executemany_sqlite(conn, table, names, rows)
        return
    json_columns = {n for n in names if isinstance(table.c[n].type, JSON)}
    conn.execute(
        insert(table),
        [{n: json_ready(v) if n in json_columns else v for n, v in zip(names, row, strict=True)} for row in rows],
    )


# -- SQLite's one writer (webhook acknowledgements and runs share it) --------------------------------------------------
#
# SQLite lets one connection write at a time. A writer that finds the lock taken is put to sleep by SQLite's busy
# handler -- 1 ms, then 2, 5, 10 ... 100 ms between tries -- although a write here holds it for well under a
# millisecond: under a burst of webhooks most of an acknowledgement's time went to those sleeps. So writers of one
# process queue on a lock of their own (handed over at once), and a writer waiting for another process retries every
# fraction of a millisecond instead.

_WRITE_LOCKS: dict[str, threading.RLock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()
#: how long a writer waits for SQLite's write lock before "database is locked" (SQLite's own busy timeout, as before).
SQLITE_BUSY_SECONDS = 30.0


def sqlite_write_lock(engine: Engine) -> threading.RLock:
    """The lock this process's writers to ``engine``'s SQLite database take before SQLite's own (re-entrant, so a
    nested write on the same thread fails as SQLite would instead of waiting on itself)."""
    database = engine.url.database
    # one lock per database file however the URL names it (in-memory databases share one: harmless, writes are short)
    key = os.path.realpath(database) if database and database != ":memory:" else str(engine.url)
    lock = _WRITE_LOCKS.get(key)
    if lock is None:
        with _WRITE_LOCKS_GUARD:
            lock = _WRITE_LOCKS.setdefault(key, threading.RLock())
    return lock


def begin_immediate(dbapi_connection: Any, *, timeout: float = SQLITE_BUSY_SECONDS) -> None:
    """``BEGIN IMMEDIATE`` on a DBAPI sqlite3 connection, retrying every fraction of a millisecond (up to 5 ms apart)
    while another process writes, for up to ``timeout`` seconds; then "database is locked" as SQLite would say it.
    Statements inside the transaction keep a ``timeout`` busy timeout (a commit in rollback-journal mode waits for
    readers)."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA busy_timeout = 0")
        try:
            deadline, pause = time.monotonic() + timeout, 0.0002
            while True:
                try:
                    cursor.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError as exc:
                    if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() >= deadline:
                        raise
                time.sleep(pause)
                pause = min(pause * 2, 0.005)
        finally:  # also when giving up: the pooled connection's other users keep waiting as SQLite does
            cursor.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    finally:
        cursor.close()


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """A write transaction on ``engine`` that takes SQLite's write lock up front (``BEGIN IMMEDIATE``).

    A deferred SQLite transaction that reads and then writes fails at once with "database is locked" when another
    connection wrote in between; taking the lock first makes it wait instead (see :func:`sqlite_write_lock`).
    """
    on_sqlite = engine.dialect.name == "sqlite"
    with sqlite_write_lock(engine) if on_sqlite else nullcontext(), engine.connect() as conn:
        if on_sqlite:
            conn.begin()  # SQLAlchemy's side of the transaction (pysqlite sends nothing for it) ...
            begin_immediate(conn.connection.dbapi_connection)  # ... and SQLite's, with the write lock
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()
