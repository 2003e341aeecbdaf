"""A thread-safe sliding-window rate limiter for calls to Patreon.

Patreon throttles per client; a process running many threads (or several :class:`PatreonClient` instances) should
stay under the limit together, so by default every client talking to the same API base shares one limiter
(:func:`shared_rate_limiter`). Across processes the 429 handling in the client is the backstop.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["RateLimiter", "shared_rate_limiter"]


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
        waited = 0.0
        while True:
            wait = self.try_acquire()
            if wait <= 0:
                return waited
            self._sleep(wait)
            waited += wait

    def reset(self) -> None:
        """Forget every recorded call."""
        with self._lock:
            self._calls.clear()

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
