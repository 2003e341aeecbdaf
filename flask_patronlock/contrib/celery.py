"""Celery tasks for reconcile runs and webhook work, plus a beat schedule, for sites that outgrow one machine.

::

    from celery import Celery
    from flask_patronlock.contrib.celery import init_celery

    app = create_app()                                   # with PATRONLOCK_JOBS = "celery"
    celery = Celery("site", broker="redis://localhost:6379/0")
    init_celery(celery, app)                             # in the web processes *and* the worker

    # celery -A site.celery worker      (processes webhooks and runs)
    # celery -A site.celery beat        (a run every PATRONLOCK_SYNC_INTERVAL, a retry sweep every minute)

Tasks (names are stable, for routing): ``flask_patronlock.sync`` (one reconcile run; returns the run as a dict, or
``{"status": "already_running"}``), ``flask_patronlock.webhook`` (process one stored delivery), and
``flask_patronlock.tick`` (retry due deliveries, re-evaluate access that time changed, revoke comps that ended). Each
runs inside the Flask app's context. The sync lease still guards runs, so beat on two machines cannot start two runs
at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Flask

from ..jobs import expire_due_comps
from ..state import get_state

__all__ = ["PatronLockTasks", "init_celery"]


@dataclass(frozen=True)
class PatronLockTasks:
    """The tasks :func:`init_celery` registered."""

    sync: Any
    webhook: Any
    tick: Any


def init_celery(celery: Any, app: Flask, *, beat: bool = True) -> PatronLockTasks:
    """Register flask-patronlock's tasks on ``celery`` for ``app``, and (``beat=True``) its beat schedule.

    Also makes ``app``'s :class:`~flask_patronlock.jobs.Jobs` send work to these tasks when
    :data:`PATRONLOCK_JOBS` is ``"celery"``.
    """
    state = get_state(app)

    @celery.task(name="flask_patronlock.sync", ignore_result=False)
    def sync_task(trigger: str = "celery") -> dict[str, Any]:
        from ..sync import AlreadyRunning, result_dict, run_sync

        interval = float(app.config["PATRONLOCK_SYNC_INTERVAL"])
        with app.app_context():
            try:
                result = run_sync(app, trigger=trigger, min_interval=interval * 0.9 if trigger == "beat" else None)
            except AlreadyRunning:
                return {"status": "already_running"}
        return result_dict(result)

    @celery.task(name="flask_patronlock.webhook", ignore_result=True)
    def webhook_task(delivery_id: int) -> None:
        from ..webhooks import process_delivery

        with app.app_context():
            process_delivery(app, int(delivery_id))

    @celery.task(name="flask_patronlock.tick", ignore_result=True)
    def tick_task() -> None:
        with app.app_context():
            state.jobs.retry_due()
            state.store.refresh_access()
            expire_due_comps(app)

    if beat:
        schedule = dict(celery.conf.beat_schedule or {})
        schedule["flask-patronlock-sync"] = {
            "task": "flask_patronlock.sync",
            "schedule": float(app.config["PATRONLOCK_SYNC_INTERVAL"]),
            "args": ("beat",),
        }
        schedule["flask-patronlock-tick"] = {"task": "flask_patronlock.tick", "schedule": 60.0}
        celery.conf.beat_schedule = schedule
    tasks = PatronLockTasks(sync=sync_task, webhook=webhook_task, tick=tick_task)
    state.jobs.celery_tasks = tasks
    return tasks
