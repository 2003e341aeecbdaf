"""Pacing the app's calls to Patreon under both of Patreon's rate limits, across every process sharing the database.

Patreon allows each API client 100 requests per 2 seconds and each access token 100 requests a minute
(:data:`~flask_patronlock.patreon.ratelimit.CLIENT_LIMIT`, :data:`~flask_patronlock.patreon.ratelimit.TOKEN_LIMIT`).
A site spends the creator's token on reconcile runs and webhook re-fetches, often from several processes at once, so a
limiter per process cannot keep the token under its limit. :class:`Pacing` (one per app, ``state.pacing``) gives every
client the app makes a ``pacer`` that, before each API request, takes:

1. a slot of the token's limiter in this process (:class:`~flask_patronlock.patreon.ratelimit.KeyedRateLimiter`,
   ``PATRONLOCK_TOKEN_RATE_LIMIT`` a minute): free of any I/O, and exact for a single process;
2. when ``PATRONLOCK_SHARED_RATE_LIMIT`` is on (the default), a slot of the client's limiter and of the token's
   limiter in the database (:class:`SharedRateLimiter`).

A shared slot is a row of ``patronlock_leases`` named ``rate:<key>:<n>`` that a call holds for the window; a call
waits while all ``max_calls`` rows of its key are held. So across every process sharing the database at most
``max_calls`` calls of a key start in any window of ``period`` seconds, as exactly as the machines' clocks agree
(keep them in sync, as for leases). The price is one short write transaction per request; a single-process site can
turn it off (``PATRONLOCK_SHARED_RATE_LIMIT = False``) and keep the in-process limiters only. Patrons' tokens (one
person's "refresh my status") are paced by the client limit only: one person never comes near 100 calls a minute.

A 429 that still comes (another site on the same token, Patreon counting differently) is waited out by the client
(``retry_after``) and, failing that, makes a run incomplete: it never revokes anyone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update

from .leases import default_holder, insert_if_absent
from .patreon.ratelimit import CLIENT_LIMIT, TOKEN_LIMIT, KeyedRateLimiter, token_key, wait_for_slot
from .store import Store

__all__ = ["Pacing", "SharedRateLimiter"]

#: expired slot rows older than this are deleted when a key makes its first slots (tokens rotate; keys go stale).
STALE_SLOTS = timedelta(hours=1)


class SharedRateLimiter:
    """At most ``max_calls`` calls per ``period`` seconds under ``key``, counted in the database (see the module docs).

    :param clock: the current time (default: the real time, not the store's clock: tests move the store's clock).
    :param sleep: how to wait.
    """

    def __init__(
        self,
        store: Store,
        key: str,
        max_calls: int,
        period: float,
        *,
        holder: str | None = None,
        clock: Callable[[], datetime] | None = None,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if max_calls < 1:
            raise ValueError("max_calls must be at least 1")
        self.store, self.key, self.max_calls = store, key, max_calls
        self.period = timedelta(seconds=period)
        self.holder = holder or default_holder()
        self._clock = clock or (lambda: datetime.now(UTC))
        self._sleep = sleep

    def try_acquire(self) -> float:
        """Take a slot if one is free now: ``0.0``, or the seconds until one frees up (nothing taken)."""
        table = self.store.tables.leases
        now = self._clock().astimezone(UTC)
        prefix = f"rate:{self.key}:"
        values = {"holder": self.holder, "acquired_at": now, "expires_at": now + self.period}
        with self.store.transaction() as conn:
            stmt: Any = select(table.c.name, table.c.expires_at).where(table.c.name.startswith(prefix, autoescape=True))
            if conn.dialect.name == "postgresql":
                stmt = stmt.with_for_update()
            rows = conn.execute(stmt).all()
            live = [row.expires_at for row in rows if row.expires_at > now]
            if len(live) >= self.max_calls:
                return max(0.001, (min(live) - now).total_seconds())
            free = next((row.name for row in rows if row.expires_at <= now), None)
            if free is not None:
                conn.execute(update(table).where(table.c.name == free).values(**values))
                return 0.0
            names = {row.name for row in rows}
            name = next(f"{prefix}{n}" for n in range(self.max_calls + 1) if f"{prefix}{n}" not in names)
            conn.execute(
                delete(table).where(
                    table.c.name.startswith("rate:", autoescape=True), table.c.expires_at < now - STALE_SLOTS
                )
            )
            if not insert_if_absent(conn, table, {"name": name, **values}):
                return 0.001  # another process made that slot between our read and our insert: look again
        return 0.0

    def acquire(self) -> float:
        """Block until a slot is free, and take it; returns the seconds spent waiting."""
        return wait_for_slot(self.try_acquire, self._sleep)


class Pacing:
    """The pacing of one app's Patreon calls (``state.pacing``): what each client's ``pacer`` waits on.

    :attr:`clock`, :attr:`monotonic` and :attr:`sleep` are read at every call, so a test can replace them with a fake
    clock (the clients the app makes also sleep through :attr:`sleep` between retries).
    """

    def __init__(self, store: Store, *, shared: Callable[[], bool], token_limit: Callable[[], int]) -> None:
        self.store = store
        self._shared, self._token_limit = shared, token_limit
        #: the wall clock of shared slots.
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        #: the clock of this process's limiters.
        self.monotonic: Callable[[], float] = time.monotonic
        #: how every wait (pacing, retries) is made.
        self.sleep: Callable[[float], object] = time.sleep
        self._holder = default_holder()
        self._local: KeyedRateLimiter | None = None

    def _local_tokens(self) -> KeyedRateLimiter:
        limit = self._token_limit()
        local = self._local
        if local is None or local.max_calls != limit:
            local = self._local = KeyedRateLimiter(
                limit, TOKEN_LIMIT[1], clock=lambda: self.monotonic(), sleep=lambda s: self.sleep(s)
            )
        return local

    def _shared_limiter(self, key: str, max_calls: int, period: float) -> SharedRateLimiter:
        return SharedRateLimiter(
            self.store, key, max_calls, period, holder=self._holder, clock=lambda: self.clock(),
            sleep=lambda s: self.sleep(s),
        )

    def wait(self, token: str, *, per_token: bool) -> float:
        """Wait until a request with ``token`` may go (see the module docs); returns the seconds waited."""
        key = token_key(token)
        waited = self._local_tokens().acquire(key) if per_token else 0.0
        if self._shared():
            waited += self._shared_limiter("client", *CLIENT_LIMIT).acquire()
            if per_token:
                waited += self._shared_limiter(f"t:{key}", self._token_limit(), TOKEN_LIMIT[1]).acquire()
        return waited

    def pacer(self, *, per_token: bool) -> Callable[[str], float]:
        """A client's ``pacer``: :meth:`wait` with ``per_token`` (the creator's clients) or without (patrons')."""
        return lambda token: self.wait(token, per_token=per_token)
