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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from datetime import datetime
from itertools import chain, islice
from typing import Any

from sqlalchemy import Connection, Engine, func, insert
from sqlalchemy.types import JSON

#: how many ids one ``IN (...)`` or one bulk statement takes. SQLite's default limit on bound parameters is 32766
#: since 3.32; stay well under it for older builds too.
CHUNK = 500


# -- JSON columns: the audit rows' ``changes`` hold datetimes and tuples of tier ids -----------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):  # a read-only mapping (an ApplyResult's changes): encoded as its dict
        return dict(value.items())
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
    if isinstance(value, Mapping):  # a read-only mapping (an ApplyResult's changes)
        return {k: json_ready(v) for k, v in value.items()}
    return value


def _json_encoder() -> Callable[[Any], str]:
    """``json.JSONEncoder(default=_json_default).encode``, with its C encoder built once: ``encode()`` builds one at
    every call, and a first run encodes 100,000 audit rows' changes (no circular-reference check: they are acyclic)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return json.JSONEncoder(default=_json_default).encode
    escape = json.encoder.encode_basestring_ascii
    chunks = make(None, _json_default, escape, None, ": ", ", ", False, False, True)
    return lambda value: "".join(chunks(value, 0))


_encode_json = _json_encoder()


def dumps_json(value: Any) -> str:
    """What SQLAlchemy's JSON type stores for ``value`` (``json.dumps``, ``None`` as ``'null'``), writing datetimes
    and tuples as :func:`json_ready` would have converted them, in one C-level call."""
    return "null" if value is None else _encode_json(value)


# -- reading many rows in one step on SQLite ---------------------------------------------------------------------------


def json_rows(*columns: Any) -> Any:
    """A select column that makes SQLite return every row of the query as ONE value, a JSON array of arrays of
    ``columns`` (read back with :func:`rows_from_json`; text, integers and NULLs come back as they are stored).

    Python's sqlite3 releases the GIL around each row it steps; while another thread of the process runs Python (a
    run's next page being parsed), each row then waits out that thread's switch interval (5 ms) to take it back. One
    value is one step."""
    return func.json_group_array(func.json_array(*columns))


def rows_from_json(value: str | None) -> list[list[Any]]:
    """The rows of a :func:`json_rows` value."""
    rows: list[list[Any]] = json.loads(value) if value else []
    return rows


# -- bulk inserts without per-row statement overhead (a first run writes 100,000 rows) ---------------------------------

#: SQLite's default limit on one statement's bound parameters before 3.32 (``getlimit`` says the build's own).
_SQLITE_OLD_MAX_VARIABLES = 999


class SqliteInsert:
    """An ``INSERT`` into some columns of a table on SQLite, run as multi-row ``VALUES`` statements.

    SQLite does a whole statement in one ``sqlite3_step``, and Python's sqlite3 releases the GIL around every step:
    ``executemany`` steps (and gives up and takes back the GIL) once per row, so while another thread of the process
    runs Python -- a run's next page being parsed -- each row waits for that thread's switch interval (5 ms) to get
    the GIL back. One statement of many rows steps once: the rows' B-tree work runs with the GIL released, beside the
    other thread, instead of behind it. What is stored is the same as row by row, in the same order.
    """

    def __init__(self, table_name: str, names: tuple[str, ...], processors: list[tuple[int, Any]], tail: str) -> None:
        #: by position in ``names``, the bind processors of the columns that have one.
        self.processors = processors
        self._head = f"INSERT INTO {table_name} ({', '.join(names)}) VALUES "
        self._row = f"({', '.join('?' for _ in names)})"
        self._tail = tail
        self._width = len(names)
        self._statements: dict[int, str] = {}  # rows in the statement -> its SQL (sqlite3 caches each prepared)

    def _sql(self, rows: int) -> str:
        sql = self._statements.get(rows)
        if sql is None:
            sql = self._statements[rows] = self._head + ", ".join([self._row] * rows) + self._tail
        return sql

    def execute(self, conn: Connection, rows: Sequence[Sequence[Any]]) -> None:
        """Insert ``rows``, their values already as SQLite stores them (see :attr:`processors`), in as few
        statements as SQLite's limit on bound parameters allows."""
        if not rows:
            return
        per = self._rows_per_statement(conn)
        for start in range(0, len(rows), per):
            chunk = rows[start : start + per]
            conn.exec_driver_sql(self._sql(len(chunk)), tuple(chain.from_iterable(chunk)))

    def execute_columns(self, conn: Connection, columns: Sequence[Iterable[Any]], count: int) -> None:
        """:meth:`execute` for ``count`` rows given a column at a time, in the order of the names (each an iterable
        of ``count`` values as SQLite stores them; an ``itertools.repeat`` for a value every row shares): no list is
        built per row."""
        if count <= 0:
            return
        if len(columns) != self._width:
            raise ValueError(f"expected {self._width} columns, got {len(columns)}")
        rows = zip(*columns, strict=False)  # a repeat() column is endless: the count bounds each statement
        per = self._rows_per_statement(conn)
        for start in range(0, count, per):
            size = min(per, count - start)
            conn.exec_driver_sql(self._sql(size), tuple(chain.from_iterable(islice(rows, size))))

    def _rows_per_statement(self, conn: Connection) -> int:
        getlimit = getattr(conn.connection.dbapi_connection, "getlimit", None)
        limit = getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) if getlimit is not None else _SQLITE_OLD_MAX_VARIABLES
        return max(1, limit // self._width)


_SQLITE_INSERTS: dict[tuple[int, tuple[str, ...], str | None], SqliteInsert] = {}


def sqlite_insert_plan(
    conn: Connection, table: Any, names: tuple[str, ...], skip_conflicts_on: str | None
) -> SqliteInsert:
    """The ``INSERT`` for ``names`` (skipping rows whose ``skip_conflicts_on`` is taken, when given), with the bind
    processors of the columns that have one."""
    key = (id(table), names, skip_conflicts_on)
    cached = _SQLITE_INSERTS.get(key)
    if cached is None:
        dialect = conn.dialect
        quote = dialect.identifier_preparer.quote
        tail = f" ON CONFLICT ({quote(skip_conflicts_on)}) DO NOTHING" if skip_conflicts_on is not None else ""
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
        cached = SqliteInsert(quote(table.name), tuple(quote(n) for n in names), processors, tail)
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
    """``INSERT`` ``rows`` (value sequences in the order of ``names``) on SQLite in multi-row statements
    (:class:`SqliteInsert`): the columns' own bind processors convert the values (so what is stored is exactly what
    SQLAlchemy would store), but no statement is compiled by SQLAlchemy and no parameter dict is built per row."""
    plan = sqlite_insert_plan(conn, table, names, skip_conflicts_on)
    params = []
    for row in rows:
        values = list(row)
        for index, process in plan.processors:
            values[index] = process(values[index])
        params.append(values)
    plan.execute(conn, params)


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
