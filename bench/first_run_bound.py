"""How close to the fetch+parse floor can a first run get? A lower bound, measured on the rows a first run writes.

A first run over a campaign nobody has synced yet creates one patron row and one audit row (the state it first saw)
per member. This script makes such a run over the sandbox's members exactly as ``bench/sync_100k.py`` does, reads
back the rows it wrote, and times only what writing those same rows costs at the least, with no logic at all:

* SQLite inserting them: every value already in the form SQLite stores, one ``executemany`` per table per 1,000
  members, each page its own transaction, into the same tables and indexes (a fresh database);
* turning the rows' datetimes into SQLite's text (the columns' own bind processor), and
* encoding the audit rows' changes as JSON (the store's own encoder, the datetimes already strings).

Their sum divided by the floor is what even a run that did nothing but write would add to the floor, so
``1 + bound`` is the lowest ratio ``bench/sync_100k.py`` could print for a first run on this machine (a run that
wrote from a thread of its own still holds the GIL for all but SQLite's part). It also prints the ratio if the
conversions were free and only SQLite's inserts were left.

    python bench/first_run_bound.py           # BENCH_MEMBERS=100000 by default

The last line is ``lowest_first_ratio=<x>``.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sync_100k import MEMBERS, fetch_floor, make_app, setup_tiers, start_sandbox, timed_run

PAGE = 1000


def read_rows(db: Path, table: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    conn = sqlite3.connect(db)
    try:
        cursor = conn.execute(f"SELECT * FROM {table} ORDER BY rowid")
        names = [d[0] for d in cursor.description]
        return names, cursor.fetchall()
    finally:
        conn.close()


def time_inserts(source: Path, target: Path, tables: dict[str, tuple[list[str], list[tuple[Any, ...]]]]) -> float:
    """Seconds to insert the rows into an empty copy of ``source``'s schema, a transaction per page."""
    schema = sqlite3.connect(source)
    statements = [sql for (sql,) in schema.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL")]
    schema.close()
    conn = sqlite3.connect(target, isolation_level=None)
    for sql in statements:
        conn.execute(sql)
    inserts = {
        table: f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})"
        for table, (names, _) in tables.items()
    }
    members = len(tables["patronlock_patrons"][1])
    started = time.perf_counter()
    for start in range(0, members, PAGE):
        conn.execute("BEGIN IMMEDIATE")
        for table, (_, rows) in tables.items():
            conn.executemany(inserts[table], rows[start : start + PAGE])
        conn.execute("COMMIT")
    seconds = time.perf_counter() - started
    conn.close()
    return seconds


def time_datetimes(app: Any, tables: dict[str, tuple[list[str], list[tuple[Any, ...]]]]) -> float:
    """Seconds the datetime columns' bind processor takes over every datetime the rows hold."""
    from sqlalchemy import MetaData
    from sqlalchemy.dialects import sqlite as sqlite_dialect

    from flask_patronlock.extension import get_state
    from flask_patronlock.models import UTCDateTime

    metadata: MetaData = get_state(app).tables.patrons.metadata
    process = UTCDateTime()._cached_bind_processor(sqlite_dialect.dialect())
    values = []
    for table, (names, rows) in tables.items():
        columns = [i for i, name in enumerate(names) if isinstance(metadata.tables[table].c[name].type, UTCDateTime)]
        for row in rows:
            for i in columns:
                if row[i] is not None:
                    values.append(datetime.fromisoformat(row[i] + "+00:00"))
    started = time.perf_counter()
    for value in values:
        process(value)
    return time.perf_counter() - started


def time_json(events: tuple[list[str], list[tuple[Any, ...]]]) -> float:
    """Seconds the store's encoder takes to encode every audit row's changes (datetimes already strings)."""
    from flask_patronlock.dbutil import dumps_json

    names, rows = events
    index = names.index("changes")
    changes = [json.loads(row[index]) for row in rows if row[index] is not None]
    started = time.perf_counter()
    for value in changes:
        dumps_json(value)
    return time.perf_counter() - started


def main() -> int:
    proc, creds = start_sandbox(MEMBERS)
    try:
        fetch_floor(creds)  # warm the sandbox's caches
        floor, seen, _ = fetch_floor(creds)
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "first.db"
            app = make_app(db, creds)
            setup_tiers(app, creds)
            run_seconds, result = timed_run(app, creds)
            tables = {name: read_rows(db, name) for name in ("patronlock_patrons", "patronlock_events")}
            tables["patronlock_events"] = (
                tables["patronlock_events"][0],
                [r for r in tables["patronlock_events"][1] if r[tables["patronlock_events"][0].index("kind")]
                 == "patron_created"],
            )
            inserts = time_inserts(db, Path(tmp) / "bound.db", tables)
        datetimes = time_datetimes(app, tables)
        encode = time_json(tables["patronlock_events"])
    finally:
        proc.terminate()
        proc.wait(10)
    patrons, audits = len(tables["patronlock_patrons"][1]), len(tables["patronlock_events"][1])
    bound = inserts + datetimes + encode
    print(f"members={seen} floor(fetch+parse)={floor:.2f}s ({floor / seen * 1e6:.1f} us a member)")
    print(f"first run: {run_seconds:.2f}s status={result.status} ratio={run_seconds / floor:.2f}")
    print(f"rows it wrote: {patrons} patron rows, {audits} patron_created audit rows")
    for label, seconds in (("SQLite inserts", inserts), ("datetimes to text", datetimes), ("audit JSON", encode)):
        print(f"  {label:18s} {seconds:6.2f}s  {seconds / seen * 1e6:5.1f} us a member  {seconds / floor:.2f} x floor")
    print(f"writing alone adds {bound / floor:.2f} x the floor, at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"even if every datetime and JSON conversion were free: {1 + inserts / floor:.2f} x the floor")
    print(f"lowest_first_ratio={1 + bound / floor:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
