"""Thread-safe sliding-window rate limiters for calls to Patreon.

Patreon throttles twice: each API client to 100 requests per 2 seconds (:data:`CLIENT_LIMIT`), and each access token
to 100 requests a minute (:data:`TOKEN_LIMIT`). A process running many threads (or several :class:`PatreonClient`
instances) should stay under both together, so by default every client talking to the same API base shares one
limiter (:func:`shared_rate_limiter`), and :class:`KeyedRateLimiter` keeps one limiter per token, known by
:func:`token_key` only. Pacing across processes is the app's (:mod:`flask_patronlock.pacing`); the 429 handling in the
client is the backstop.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["CLIENT_LIMIT", "TOKEN_LIMIT", "KeyedRateLimiter", "RateLimiter", "shared_rate_limiter", "token_key",
           "wait_for_slot"]

#: Patreon's limit per API client: (requests, seconds).
CLIENT_LIMIT = (100, 2.0)
#: Patreon's limit per access token: (requests, seconds).
TOKEN_LIMIT = (100, 60.0)


def token_key(token: str) -> str:
    """A short one-way name for an access token (16 hex digits of its SHA-256): what limiters and logs key a token
    by, never the token itself."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:16]


def wait_for_slot(try_acquire: Callable[[], float], sleep: Callable[[float], object]) -> float:
    """Call ``try_acquire`` (``0.0``: a slot was taken; else the seconds until one frees) until it takes a slot,
    sleeping as long as it says in between; returns the total seconds slept."""
    waited = 0.0
    while True:
        wait = try_acquire()
        if wait <= 0:
            return waited
        sleep(wait)
        waited += wait


class RateLimiter:
    """Allow at most ``max_calls`` calls in any ``period`` seconds (a sliding window log).

    :meth:`acquire` blocks until a call is allowed; it is safe to call from many threads at once. The clock and the
    sleep function are injectable so tests can run on a fake clock.

    :param max_calls: calls allowed per window.
    :param period: the window, in seconds.
    :param clock: a monotonic clock (seconds).
    :param sleep: how to wait.
    """

    def __init__(
        self,
        max_calls: int = 100,
        period: float = 2.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if max_calls < 1:
            raise ValueError("max_calls must be at least 1")
        if period <= 0:
            raise ValueError("period must be positive")
        self.max_calls = max_calls
        self.period = period
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        # times of the last max_calls calls, oldest first
        self._calls: deque[float] = deque()

    def try_acquire(self) -> float:
        """Take a slot if one is free now.

        :returns: ``0.0`` if the call may go ahead (the slot is taken), otherwise how many seconds until one frees
            up (no slot is taken).
        """
        with self._lock:
            now = self._clock()
            calls = self._calls
            if len(calls) >= self.max_calls:
                wait = calls[0] + self.period - now
                if wait > 0:
                    return wait
                calls.popleft()
            calls.append(now)
            return 0.0

    def acquire(self) -> float:
        """Block until a call is allowed, and take its slot.

        :returns: the total seconds spent waiting.
        """
        return wait_for_slot(self.try_acquire, self._sleep)

    def reset(self) -> None:
        """Forget every recorded call."""
        with self._lock:
            self._calls.clear()

    def idle(self) -> bool:
        """Whether no recorded call is inside the window any more (the limiter can be forgotten)."""
        with self._lock:
            return not self._calls or self._calls[-1] + self.period <= self._clock()

    def __repr__(self) -> str:
        return f"RateLimiter(max_calls={self.max_calls!r}, period={self.period!r})"


_shared: dict[str, RateLimiter] = {}
_shared_lock = threading.Lock()


def shared_rate_limiter(api_base: str, *, max_calls: int = 100, period: float = 2.0) -> RateLimiter:
    """The process-wide limiter for ``api_base`` (created on first use with ``max_calls`` per ``period``).

    Every :class:`~flask_patronlock.patreon.client.PatreonClient` without an explicit ``rate_limiter`` uses this, so
    all clients of one API base in a process share one budget.
    """
    key = api_base.rstrip("/")
    with _shared_lock:
        limiter = _shared.get(key)
        if limiter is None:
            limiter = _shared[key] = RateLimiter(max_calls, period)
        return limiter


class KeyedRateLimiter:
    """A :class:`RateLimiter` of ``max_calls`` per ``period`` for each key (a :func:`token_key`), made on first use.

    Keys whose window emptied are forgotten once more than ``max_keys`` are held, so memory stays bounded however many
    tokens a process sees. The clock and sleep are those of each limiter (injectable, as for :class:`RateLimiter`).
    """

    def __init__(
        self,
        max_calls: int = TOKEN_LIMIT[0],
        period: float = TOKEN_LIMIT[1],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
        max_keys: int = 10_000,
    ) -> None:
        self.max_calls, self.period, self.max_keys = max_calls, period, max_keys
        self._clock, self._sleep = clock, sleep
        self._limiters: dict[str, RateLimiter] = {}
        self._lock = threading.Lock()

    def limiter(self, key: str) -> RateLimiter:
        """The limiter of ``key``."""
        with self._lock:
            limiter = self._limiters.get(key)
            if limiter is None:
                if len(self._limiters) >= self.max_keys:
                    for old in [k for k, v in self._limiters.items() if v.idle()]:
                        del self._limiters[old]
                limiter = self._limiters[key] = RateLimiter(
                    self.max_calls, self.period, clock=self._clock, sleep=self._sleep
                )
            return limiter

    def acquire(self, key: str) -> float:
        """Block until ``key`` may make a call, and take its slot; returns the seconds spent waiting."""
        return self.limiter(key).acquire()

    def __repr__(self) -> str:
        return f"KeyedRateLimiter(max_calls={self.max_calls!r}, period={self.period!r})"
