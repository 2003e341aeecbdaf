"""One holder at a time, across processes and machines: a row in ``patronlock_leases``.

A lease has a name (``"sync"``), a holder and an expiry. It is taken with one atomic statement -- insert the row if
absent, otherwise take it over only where it has expired (or is already ours) -- so two workers asking at the same
moment cannot both win, on SQLite or PostgreSQL. The holder renews it while it works; a holder that crashed stops
renewing, and the lease expires for the next one.

Expiry is judged by the clocks of the machines involved, so keep them in sync (NTP) and the TTL well above any skew.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Table, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from .errors import PatronLockError
from .store import Store

__all__ = ["Lease", "LeaseHeld", "default_holder", "insert_if_absent"]


class LeaseHeld(PatronLockError):
    """The lease is held by someone else (for the sync lease: a run is already running)."""

    def __init__(self, name: str, holder: str | None, expires_at: datetime | None) -> None:
        self.name, self.holder, self.expires_at = name, holder, expires_at
        until = f" until {expires_at.isoformat()}" if expires_at else ""
        super().__init__(f"lease {name!r} is held by {holder or 'another worker'}{until}")


def insert_if_absent(conn: Connection, table: Table, values: dict[str, Any]) -> bool:
    """Insert the lease row ``values`` unless a row of that name exists, in one statement; whether it was inserted."""
    dialect = conn.dialect.name
    if dialect in ("postgresql", "sqlite"):
        ins: Any = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
        # RETURNING, not rowcount: psycopg reports -1 for an INSERT … ON CONFLICT DO NOTHING
        stmt = ins.values(**values).on_conflict_do_nothing(index_elements=["name"]).returning(table.c.name)
        return conn.execute(stmt).first() is not None
    # other databases: insert only when absent, inside the transaction
    exists = conn.execute(select(table.c.name).where(table.c.name == values["name"])).first()  # pragma: no cover
    return not exists and bool(conn.execute(insert(table).values(**values)).rowcount)  # pragma: no cover


def default_holder() -> str:
    """``host:pid:random``: unique per process and per call."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


class Lease:
    """A named lease on ``store``'s database.

    :param ttl: seconds the lease lasts without renewal.
    :param holder: who holds it (default :func:`default_holder`).
    :param clock: the current time (default the store's clock).
    """

    def __init__(
        self,
        store: Store,
        name: str,
        *,
        ttl: float = 300.0,
        holder: str | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.store = store
        self.name = name
        self.ttl = timedelta(seconds=ttl)
        self.holder = holder or default_holder()
        self._clock = clock or store.clock

    def _now(self) -> datetime:
        return self._clock().astimezone(UTC)

    def acquire(self) -> bool:
        """Take the lease if it is free, expired, or already ours; ``True`` when we hold it now."""
        table = self.store.tables.leases
        now = self._now()
        values = {"name": self.name, "holder": self.holder, "acquired_at": now, "expires_at": now + self.ttl}
        with self.store.transaction() as conn:
            if insert_if_absent(conn, table, values):
                return True
            taken = conn.execute(
                update(table)
                .where(
                    table.c.name == self.name,
                    (table.c.expires_at < now) | (table.c.holder == self.holder),
                )
                .values(holder=self.holder, acquired_at=now, expires_at=now + self.ttl)
            ).rowcount
            return bool(taken)

    def renew(self) -> bool:
        """Push the expiry out by the TTL; ``False`` when the lease is no longer ours (it expired and was taken)."""
        with self.store.transaction() as conn:
            return self.renew_in(conn)

    def renew_in(self, conn: Connection) -> bool:
        """:meth:`renew` inside ``conn``, a write transaction of the caller's (it counts once that commits)."""
        table = self.store.tables.leases
        now = self._now()
        return bool(
            conn.execute(
                update(table).where(table.c.name == self.name, table.c.holder == self.holder).values(
                    expires_at=now + self.ttl
                )
            ).rowcount
        )

    def release(self) -> None:
        """Give the lease up (only if we still hold it)."""
        table = self.store.tables.leases
        with self.store.transaction() as conn:
            conn.execute(delete(table).where(table.c.name == self.name, table.c.holder == self.holder))

    def current(self) -> tuple[str, datetime] | None:
        """``(holder, expires_at)`` of the lease as stored, or ``None`` when nobody holds it."""
        table = self.store.tables.leases
        with self.store.engine.connect() as conn:
            row = conn.execute(select(table.c.holder, table.c.expires_at).where(table.c.name == self.name)).first()
        if row is None or row.expires_at < self._now():
            return None
        return row.holder, row.expires_at

    def __enter__(self) -> Lease:
        if not self.acquire():
            held = self.current()
            raise LeaseHeld(self.name, held[0] if held else None, held[1] if held else None)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
