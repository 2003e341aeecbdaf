"""Keeping Python's cyclic garbage collector off the heap a reconcile run did not make.

A run allocates millions of short-lived objects, and every few pages enough of them have lived long enough that
CPython's collector makes a full collection, which walks *every* tracked object in the process: the site's modules,
Flask, SQLAlchemy and all they hold, which exist before the run starts and outlive it. Measured on a small site
(``bench/sync_100k.py``, about 100,000 tracked objects before the run), those full collections were some 1.2-1.4
seconds of a first 100,000-member run and about a sixth of an unchanged one; a real site's heap is larger, and each
collection costs in proportion to it.

:func:`heap_frozen` moves the objects alive when a run starts into the collector's permanent generation
(:func:`gc.freeze`) for the run, so its collections walk only what the run itself made, and hands them back
(:func:`gc.unfreeze`) when the last run of the process ends. Nothing is lost meanwhile: an object made before the run
that becomes cyclic garbage during it is collected once the run ends (objects without cycles are freed at once as
always; the collector only looks for cycles).

It leaves the collector alone when the site has switched it off (:func:`gc.disable`), and when objects are already
frozen: a site that froze its heap itself (e.g. after importing its app, before forking its workers, to keep the
pages shared) keeps its own arrangement, and a run never unfreezes what someone else froze before it. Objects the
site freezes *while* a run is on are thawed with the run's when it ends: the collector cannot tell them apart without
walking the whole heap (:func:`gc.get_freeze_count` counts one by one, some 10 ms per 250,000 objects, which a test
suite making thousands of small runs over a heap of millions would pay at every run); a site freezes at start-up,
before forking, not while it serves. An interpreter without :func:`gc.freeze` (PyPy) is left alone too.
``PATRONLOCK_SYNC_FREEZE_HEAP = False`` turns it off.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["heap_frozen"]

#: CPython's collector has a permanent generation; other interpreters (PyPy) have no gc.freeze() and are left alone
_CAN_FREEZE = all(hasattr(gc, name) for name in ("freeze", "unfreeze", "get_freeze_count"))

_lock = threading.Lock()
#: runs of this process inside heap_frozen() now
_users = 0
#: whether the first of them froze the heap (False: the collector is left alone)
_ours = False


@contextmanager
def heap_frozen(enabled: bool = True) -> Iterator[bool]:
    """Freeze the objects alive now for the duration of the ``with`` block (see the module docs); yields whether they
    are frozen by this or an overlapping run of the process. Re-entrant and thread-safe: runs that overlap share one
    freeze, and the last one to end thaws it."""
    global _users, _ours
    if not (enabled and _CAN_FREEZE):
        yield False
        return
    with _lock:
        if _users == 0:
            # an empty permanent generation is counted at once; a site's own freeze is counted (once per run) only
            # to be left alone
            _ours = gc.isenabled() and gc.get_freeze_count() == 0
            if _ours:
                gc.freeze()
        _users += 1
        frozen = _ours
    try:
        yield frozen
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _ours:
                gc.unfreeze()
                _ours = False
