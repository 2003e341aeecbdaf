"""How background work runs: webhook processing, reconcile runs, and the scheduler that starts them.

One small interface, :class:`Jobs` (``get_state().jobs``), three modes chosen by :data:`PATRONLOCK_JOBS`:

``thread`` (default)
    Webhook work goes to a worker thread of the process that received it (a daemon thread, started on first use);
    :meth:`Jobs.start_run` starts a run in its own thread. The embedded scheduler (a daemon thread started lazily on
    the first request, or by :meth:`Jobs.start_scheduler`) starts a run every :data:`PATRONLOCK_SYNC_INTERVAL`,
    retries webhook deliveries that are due, and re-evaluates access that time changed. Under gunicorn every worker
    has a scheduler, but the sync lease and the "a run started less than an interval ago" check make one run per
    interval between them.
``inline``
    Work runs at once in the caller (tests, tiny sites; a webhook's acknowledgement then waits for it).
``celery``
    Work becomes tasks of your Celery app (see :mod:`flask_patronlock.contrib.celery`, which also sets up beat).

Nothing is lost if a process dies: a delivery is stored before it is acknowledged, and the scheduler's sweep (or
``flask patronlock webhooks retry``) picks up deliveries that are pending, due for a retry, or were claimed by a
worker that crashed.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
import weakref
from typing import Any

from flask import Flask

from .errors import ConfigurationError
from .state import get_state

__all__ = ["MODES", "Jobs", "init_jobs"]

log = logging.getLogger("flask_patronlock.jobs")

#: the values :data:`PATRONLOCK_JOBS` takes.
MODES = ("thread", "inline", "celery")

_all_jobs: weakref.WeakSet[Jobs] = weakref.WeakSet()


def init_jobs(app: Flask) -> Jobs:
    """Start the app's :class:`Jobs` (``get_state(app).jobs``, made with the state) lazily, on the first request: the
    scheduler, when it is enabled."""
    jobs = get_state(app).jobs

    @app.before_request
    def _patronlock_start_scheduler() -> None:
        if not jobs._scheduler_checked:
            jobs._scheduler_checked = True
            if jobs.scheduler_enabled():
                jobs.start_scheduler()

    return jobs


class Jobs:
    """Runs flask-patronlock's background work for one app (see the module docs)."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        #: set by :func:`flask_patronlock.contrib.celery.init_celery`: the registered tasks.
        self.celery_tasks: Any = None
        self._queue: queue.Queue[tuple[int, float] | None] = queue.Queue()
        self._last_ack = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._scheduler: threading.Thread | None = None
        self._runs: list[threading.Thread] = []
        self._scheduler_checked = False
        self._next_run = 0.0
        self._next_live_check = 0.0
        _all_jobs.add(self)

    @property
    def mode(self) -> str:
        """The configured mode (read each time, so tests may switch it)."""
        mode = str(self.app.config.get("PATRONLOCK_JOBS") or "thread")
        if mode not in MODES:
            raise ConfigurationError(f"PATRONLOCK_JOBS must be one of {', '.join(MODES)}, not {mode!r}")
        return mode

    def _celery(self) -> Any:
        if self.celery_tasks is None:
            raise ConfigurationError(
                "PATRONLOCK_JOBS is 'celery' but no Celery app was set up: call "
                "flask_patronlock.contrib.celery.init_celery(celery_app, flask_app)"
            )
        return self.celery_tasks

    # -- webhooks ---------------------------------------------------------------------------------------------------

    def submit_webhook(self, delivery_id: int) -> None:
        """Process a stored webhook delivery (see :func:`flask_patronlock.webhooks.process_delivery`)."""
        mode = self.mode
        if mode == "inline":
            self._process(delivery_id)
        elif mode == "celery":
            self._celery().webhook.delay(delivery_id)
        else:
            self._ensure_worker()
            now = time.monotonic()
            self._last_ack = now
            self._queue.put((delivery_id, now))

    def _process(self, delivery_id: int) -> None:
        from .webhooks import process_delivery

        with self.app.app_context():
            process_delivery(self.app, delivery_id)

    def _ensure_worker(self) -> None:
        with self._lock:
            if self._worker is not None and self._worker.is_alive():
                return
            self._stop.clear()
            self._worker = threading.Thread(target=self._work, name="patronlock-webhooks", daemon=True)
            self._worker.start()

    def _work(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=1.0)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if item is None:
                return
            delivery_id, queued_at = item
            try:
                self._yield_to_acknowledgements(queued_at)
                self._process(delivery_id)
            except Exception:  # never let one delivery kill the worker; the sweep retries it
                log.exception("processing webhook delivery %s failed", delivery_id)
            finally:
                self._queue.task_done()

    #: while webhooks keep arriving, processing waits until this many seconds pass without one ...
    ACK_QUIET_SECONDS = 0.1
    #: ... but never delays a delivery's processing by more than this.
    MAX_DEFER_SECONDS = 30.0

    def _yield_to_acknowledgements(self, queued_at: float) -> None:
        """Acknowledge first, work after: during a burst of deliveries this process's CPU (and the database's one
        writer, on SQLite) goes to acknowledging them -- Patreon waits on those -- and the re-fetching starts
        when the burst pauses, or at the latest :attr:`MAX_DEFER_SECONDS` after a delivery arrived."""
        while not self._stop.is_set():
            now = time.monotonic()
            if now - self._last_ack >= self.ACK_QUIET_SECONDS or now - queued_at >= self.MAX_DEFER_SECONDS:
                return
            time.sleep(self.ACK_QUIET_SECONDS / 2)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until the webhook queue is empty and nothing is being processed (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return False

    def retry_due(self, *, limit: int = 100) -> int:
        """Process (in this thread) the deliveries that are pending or due for a retry; how many were tried."""
        from .webhooks import due_deliveries

        ids = due_deliveries(get_state(self.app), limit=limit)
        for delivery_id in ids:
            try:
                self._process(delivery_id)
            except Exception:
                log.exception("retrying webhook delivery %d failed", delivery_id)
        return len(ids)

    # -- runs ----------------------------------------------------------------------------------------------------

    def start_run(self, trigger: str = "manual") -> Any:
        """Start a reconcile run: inline returns its :class:`~flask_patronlock.sync.RunResult` (or raises
        :class:`~flask_patronlock.sync.AlreadyRunning`); thread mode starts it in a thread and returns the thread;
        celery mode queues the task and returns its ``AsyncResult``."""
        mode = self.mode
        if mode == "celery":
            return self._celery().sync.delay(trigger)
        if mode == "inline":
            return self._run(trigger)
        thread = threading.Thread(target=self._run_quietly, args=(trigger,), name="patronlock-sync", daemon=True)
        with self._lock:
            self._runs = [t for t in self._runs if t.is_alive()]
            self._runs.append(thread)
        thread.start()
        return thread

    def _run(self, trigger: str, min_interval: float | None = None) -> Any:
        from .sync import run_sync

        with self.app.app_context():
            return run_sync(self.app, trigger=trigger, min_interval=min_interval)

    def _run_quietly(self, trigger: str, min_interval: float | None = None) -> None:
        from .sync import AlreadyRunning

        try:
            self._run(trigger, min_interval)
        except AlreadyRunning:
            log.info("sync run not started (%s): another run is in progress", trigger)
        except Exception:
            log.exception("sync run (%s) failed", trigger)

    # -- the scheduler -------------------------------------------------------------------------------------------

    def scheduler_enabled(self) -> bool:
        """Whether :data:`PATRONLOCK_SCHEDULER` asks for the embedded scheduler here."""
        setting = self.app.config.get("PATRONLOCK_SCHEDULER")
        if setting is None:
            return not self.app.testing and self.mode != "celery"
        return bool(setting)

    def start_scheduler(self) -> None:
        """Start the scheduler thread (idempotent)."""
        with self._lock:
            if self._scheduler is not None and self._scheduler.is_alive():
                return
            self._stop.clear()
            self._scheduler = threading.Thread(target=self._schedule, name="patronlock-scheduler", daemon=True)
            self._scheduler.start()
        log.info("flask-patronlock scheduler started (a run every %ss)", self.app.config["PATRONLOCK_SYNC_INTERVAL"])

    def _schedule(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("flask-patronlock scheduler tick failed")
            interval = float(self.app.config["PATRONLOCK_SYNC_INTERVAL"])
            self._stop.wait(max(1.0, min(60.0, interval / 4)))

    def tick(self) -> None:
        """One scheduler step: start a run when one is due, retry due webhook deliveries, re-evaluate access that
        time changed, revoke the comps that reached their end. (The scheduler calls this; tests and cron-like callers
        may too.)"""
        interval = float(self.app.config["PATRONLOCK_SYNC_INTERVAL"])
        now = time.monotonic()
        if interval > 0 and now >= self._next_run:
            self._next_run = now + interval
            # A little less than the interval, so a run that started late in the last tick still counts as due.
            self._run_quietly("schedule", min_interval=interval * 0.9)
        if self._stop.is_set():
            return
        self._live_check_if_due(now)
        self.retry_due()
        with self.app.app_context():
            # The due ones: time passed their access_until, or a policy change (the settings page, any process) left
            # their access evaluated under other settings.
            get_state(self.app).store.refresh_access()
            expire_due_comps(self.app)

    def _live_check_if_due(self, now: float) -> None:
        """The daily live self-check (:mod:`flask_patronlock.livecheck`), every
        :data:`PATRONLOCK_LIVE_CHECK_INTERVAL`, only where the scheduler is on; its summary goes to the health view."""
        interval = float(self.app.config.get("PATRONLOCK_LIVE_CHECK_INTERVAL") or 0)
        if interval <= 0 or now < self._next_live_check or not self.scheduler_enabled():
            return
        self._next_live_check = now + interval
        from .livecheck import scheduled_live_check

        try:
            with self.app.app_context():
                report = scheduled_live_check(self.app, interval)
        except Exception:
            log.exception("flask-patronlock live check failed")
            return
        if report is not None and report.drifting:
            log.warning("live check: Patreon's answers changed shape: %s",
                        "; ".join(f.describe() for f in report.blocking))

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the scheduler and the webhook worker (queued deliveries stay stored and are picked up later)."""
        self._stop.set()
        self._queue.put(None)
        deadline = time.monotonic() + timeout
        for thread in [self._scheduler, self._worker, *self._runs]:
            if thread is not None and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._scheduler = self._worker = None
            self._runs = []
            self._queue = queue.Queue()


def expire_due_comps(app: Flask) -> None:
    """Revoke ``app``'s comps that reached their end (:func:`flask_patronlock.comps.expire_comps`), logging each; a
    failure is logged, never raised (a decision never counts an expired comp anyway)."""
    from .comps import expire_comps

    try:
        for record in expire_comps(get_state(app)):
            log.info("comp %s ended (it was for %s)", record.id, record.lock or f"tier {record.tier_id}")
    except Exception:
        log.exception("revoking expired comps failed; the next tick tries again")


@atexit.register
def _stop_all() -> None:  # pragma: no cover - interpreter exit
    for jobs in list(_all_jobs):
        jobs.stop(timeout=5.0)
