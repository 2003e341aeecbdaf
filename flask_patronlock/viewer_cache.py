"""The per-worker viewer cache: a page view's one query, kept for at most ``PATRONLOCK_VIEWER_CACHE_SECONDS``.

What a lock decision needs to know about the signed-in user is their **viewer record**: whether they linked a Patreon
account, and the stored :class:`~flask_patronlock.patron.Patron` of that account (or ``None``), held as a
:class:`~flask_patronlock.policy.Viewer` that is not an admin (the admin callback is asked on every request). Reading
it is the one indexed query of a page view (:meth:`flask_patronlock.store.Store.viewer_record`). Each app keeps, per
worker process, an LRU cache of those records by local user id, so a user browsing several pages costs one query per
``PATRONLOCK_VIEWER_CACHE_SECONDS`` instead of one per page.

Only the stored record is cached, never a decision: :func:`~flask_patronlock.policy.decide` still runs on every
request with the current time, so a grace period that ends or a drip lock that opens does so exactly on time.

How long a record can be stale:

* changes committed by **this** worker (a webhook or sync handled here, ``store.apply``, link or unlink) drop the
  user's entry at once (:func:`flask_patronlock.viewers.forget_cached_viewer`, called by the ``patron-changed``,
  ``patron-linked`` and ``patron-unlinked`` receivers);
* the viewer's **own** actions (connect, "refresh my status", unlink) stamp their session
  (:func:`flask_patronlock.viewers.current_viewer_changed`): on any worker, an entry read before the stamp is not
  used, so their next page reads fresh;
* changes made by **others** elsewhere (a webhook or sync on another worker, an admin) reach every other worker within
  ``PATRONLOCK_VIEWER_CACHE_SECONDS``.

Set ``PATRONLOCK_VIEWER_CACHE_SECONDS = 0`` to read the database on every request.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from .policy import Viewer

__all__ = ["ViewerCache"]

# Invalidation generations are kept per stripe of user ids, not per user: constant memory, and a forget that happens
# while another thread is reading the same stripe only costs that read its cache entry (it is still returned).
_STRIPES = 256


class ViewerCache:
    """One app's cache of viewer records by local user id: bounded (least recently used entries go first), each entry
    kept for at most ``ttl()`` seconds, and safe to share between the threads of a worker.

    :param ttl: seconds an entry may be used (read on every lookup, so a config change applies at once); ``<= 0``
        turns the cache off.
    :param max_entries: the most entries kept (read when an entry is added).
    :param clock: a monotonic clock in seconds, for expiry (tests pass a controlled one).
    :param wall_clock: seconds since the epoch, comparable across processes: when each entry was read, against the
        stamps :func:`flask_patronlock.viewers.current_viewer_changed` puts in sessions.
    """

    def __init__(
        self,
        ttl: Callable[[], float],
        *,
        max_entries: Callable[[], int] = lambda: 10_000,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._ttl = ttl
        self._max_entries = max_entries
        self.clock = clock
        self.wall_clock = wall_clock
        #: user id -> (expires at, on ``clock``; read at, on ``wall_clock``; the viewer record)
        self._entries: OrderedDict[str, tuple[float, float, Viewer]] = OrderedDict()
        self._generations = [0] * _STRIPES
        self._lock = threading.Lock()

    def get(
        self,
        user_id: str,
        load: Callable[[], Viewer],
        *,
        not_before: float | None = None,
    ) -> Viewer:
        """The record of ``user_id``: the cached one if it is younger than the TTL and was read at or after
        ``not_before`` (a ``wall_clock`` time), else ``load()``'s, which is then cached.

        An entry is cached only if nothing forgot ``user_id`` while ``load()`` ran, so a read that raced a change
        never brings the old state back.
        """
        ttl = self._ttl()
        if ttl <= 0:
            return load()
        entries = self._entries
        with self._lock:
            now = self.clock()
            entry = entries.get(user_id)
            if entry is not None and now < entry[0] and (not_before is None or entry[1] >= not_before):
                entries.move_to_end(user_id)
                return entry[2]
            stripe = hash(user_id) % _STRIPES
            generation = self._generations[stripe]
        read_at = self.wall_clock()
        record = load()
        with self._lock:
            if self._generations[stripe] == generation:
                entries[user_id] = (now + ttl, read_at, record)
                entries.move_to_end(user_id)
                limit = max(int(self._max_entries()), 1)
                while len(entries) > limit:
                    entries.popitem(last=False)
        return record

    def forget(self, user_id: str | None = None) -> None:
        """Drop the entry of ``user_id`` (``None``: every entry); a read of it already under way is not cached."""
        with self._lock:
            if user_id is None:
                self._entries.clear()
                self._generations = [g + 1 for g in self._generations]
            else:
                self._entries.pop(user_id, None)
                self._generations[hash(user_id) % _STRIPES] += 1

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, user_id: object) -> bool:
        """Whether an entry (fresh or expired) is held for ``user_id``."""
        return user_id in self._entries
