"""SQLite's one writer: this process's writers queue on a lock of their own, and a writer waiting for another
process retries often instead of sleeping in SQLite's busy handler (flask_patronlock.dbutil.begin_immediate)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from flask_patronlock.dbutil import begin_immediate, sqlite_write_lock


def _holder(path: Path, hold: float, started: threading.Event) -> threading.Thread:
    """Another connection (as another process would) that holds the write lock for ``hold`` seconds."""

    def hold_lock() -> None:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        started.set()
        time.sleep(hold)
        other.execute("COMMIT")
        other.close()

    thread = threading.Thread(target=hold_lock)
    thread.start()
    return thread


def _while_locked(tmp_path: Path, hold: float) -> tuple[sqlite3.Connection, threading.Thread]:
    """A connection to a database whose write lock another connection holds for ``hold`` seconds from now."""
    path = tmp_path / "w.db"
    sqlite3.connect(path).close()
    started = threading.Event()
    holder = _holder(path, hold, started)
    started.wait(5)
    return sqlite3.connect(path, isolation_level=None), holder


def test_waits_for_another_writer_and_then_holds_the_lock(tmp_path: Path) -> None:
    conn, holder = _while_locked(tmp_path, 0.2)
    begun = time.monotonic()
    begin_immediate(conn, timeout=10)
    waited = time.monotonic() - begun
    holder.join()
    assert conn.in_transaction
    assert waited >= 0.1  # it did wait for the other writer (not a timing target: a lower bound on a sleep)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("COMMIT")
    # statements inside keep a busy timeout (a commit in rollback-journal mode waits for readers)
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 10_000
    conn.close()


def test_gives_up_after_the_timeout_with_sqlites_own_error(tmp_path: Path) -> None:
    conn, holder = _while_locked(tmp_path, 1.0)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        begin_immediate(conn, timeout=0.1)
    assert not conn.in_transaction
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 100  # restored: the connection goes back to a pool
    holder.join()
    conn.close()


def test_other_errors_are_not_retried(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "w.db", isolation_level=None)
    conn.execute("BEGIN")
    with pytest.raises(sqlite3.OperationalError, match="within a transaction"):
        begin_immediate(conn, timeout=5)
    conn.close()


def test_one_lock_per_database_and_reentrant(tmp_path: Path) -> None:
    a = create_engine(f"sqlite:///{tmp_path / 'a.db'}")
    a_again = create_engine(f"sqlite:///{tmp_path / 'sub' / '..' / 'a.db'}")  # the same file, named otherwise
    b = create_engine(f"sqlite:///{tmp_path / 'b.db'}")
    assert sqlite_write_lock(a) is sqlite_write_lock(a_again)
    assert sqlite_write_lock(a) is not sqlite_write_lock(b)
    with sqlite_write_lock(a), sqlite_write_lock(a):  # a nested write fails as SQLite would, it does not hang
        pass


def test_many_threads_writing_at_once_all_commit(tmp_path: Path) -> None:
    """Writers of one process queue on the lock: none sees "database is locked", none is lost."""
    from flask_patronlock.store import Store

    engine = create_engine(f"sqlite:///{tmp_path / 'many.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    store = Store(lambda: engine, tables=None)  # type: ignore[arg-type]  # transaction() needs only the engine
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for i in range(25):
                with store.transaction() as conn:
                    conn.execute(text("INSERT INTO t (x) VALUES (:x)"), {"x": n * 100 + i})
        except BaseException as exc:  # pragma: no cover - the failure this test exists to catch
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*), count(DISTINCT x) FROM t")).one() == (200, 200)
