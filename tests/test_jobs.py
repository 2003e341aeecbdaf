"""jobs: the thread mode, the scheduler (one run per interval between many workers), stopping cleanly."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
from flask import Flask
from sync_helpers import count, sandbox_app

from flask_patronlock.errors import ConfigurationError
from flask_patronlock.sandbox import Sandbox
from flask_patronlock.state import get_state
from flask_patronlock.sync import list_runs

pytestmark = pytest.mark.timeout(120)


@pytest.mark.patreon_sandbox(members=0)
def test_thread_mode_acknowledges_first_and_processes_after(
    make_app: Callable[..., Flask], patreon_sandbox: Sandbox
) -> None:
    app = sandbox_app(make_app, patreon_sandbox, PATRONLOCK_JOBS="thread")
    jobs = get_state(app).jobs
    client = app.test_client()
    patreon_sandbox.add_webhook("http://site.test/patreon/webhook")
    patreon_sandbox.transport = lambda uri, headers, body: client.post(
        urlsplit(uri).path, data=body, headers=headers
    ).status_code
    try:
        member = patreon_sandbox.add_patron("ann@example.com", tier="Gold")
        assert all(d.status == 200 for d in patreon_sandbox.flush_webhooks())
        assert jobs.wait_idle(30)
        patron = get_state(app).store.get_patron(member.id)
        assert patron is not None and patron.access is True
        thread = jobs.start_run("manual")
        thread.join(60)
        assert list_runs(app)[0].complete
    finally:
        jobs.stop()
    assert jobs._worker is None and jobs._scheduler is None


@pytest.mark.patreon_sandbox(members=30)
def test_schedulers_of_many_workers_make_one_run_per_interval(
    make_app: Callable[..., Flask], patreon_sandbox: Sandbox
) -> None:
    workers = [sandbox_app(make_app, patreon_sandbox, PATRONLOCK_SYNC_INTERVAL=1800) for _ in range(3)]
    for app in workers:
        get_state(app).jobs.tick()
    assert count(workers[0], "sync_runs") == 1
    patreon_sandbox.advance(minutes=31)
    for app in workers:
        get_state(app).jobs._next_run = 0.0  # each worker's own timer is due again
        get_state(app).jobs.tick()
    assert count(workers[0], "sync_runs") == 2


def test_scheduler_is_off_in_tests_and_on_by_default_elsewhere(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    jobs = get_state(app).jobs
    assert app.testing and not jobs.scheduler_enabled()
    app.testing = False
    assert jobs.scheduler_enabled()
    app.config["PATRONLOCK_JOBS"] = "celery"
    assert not jobs.scheduler_enabled()
    with pytest.raises(ConfigurationError, match="init_celery"):
        jobs.submit_webhook(1)
    app.config["PATRONLOCK_JOBS"] = "carrier-pigeon"
    with pytest.raises(ConfigurationError, match="PATRONLOCK_JOBS"):
        jobs.submit_webhook(1)


def test_scheduler_starts_lazily_on_first_request_and_stops(make_app: Callable[..., Flask]) -> None:
    app = make_app(PATRONLOCK_SCHEDULER=True, PATRONLOCK_SYNC_INTERVAL=0)
    jobs = get_state(app).jobs
    assert jobs._scheduler is None
    app.test_client().get("/nothing-here")
    try:
        assert jobs._scheduler is not None and jobs._scheduler.is_alive()
    finally:
        jobs.stop(timeout=10)
    assert jobs._scheduler is None


@pytest.mark.patreon_sandbox(members=0)
def test_a_policy_change_is_re_evaluated_by_any_worker_s_tick(
    make_app: Callable[..., Flask], patreon_sandbox: Sandbox
) -> None:
    """A worker that started after the creator changed the policy (so never saw the old settings) still re-evaluates
    the accesses evaluated under the old policy: the rows say which policy they were evaluated under."""
    from flask_patronlock.settings import set_policy_settings
    from flask_patronlock.sync import run_sync

    first = sandbox_app(make_app, patreon_sandbox, PATRONLOCK_SYNC_INTERVAL=0)
    member = patreon_sandbox.add_patron("ann@example.com", tier="Gold")
    with first.app_context():
        run_sync(first)
        patreon_sandbox.cancel(member)  # cancelled, but paid: entitled until the period's end under "paid_period"
        run_sync(first)
        assert get_state(first).store.get_patron(member.id).access is True  # type: ignore[union-attr]
        set_policy_settings({"cancelled": "at_once"}, by="test")
    later = sandbox_app(make_app, patreon_sandbox, PATRONLOCK_SYNC_INTERVAL=0)  # no run: the tick alone
    get_state(later).jobs.tick()
    with later.app_context():
        patron = get_state(later).store.get_patron(member.id)
        assert patron is not None and patron.access is False
        history = get_state(later).store.history(member.id)
    assert history[0]["kind"] == "access_changed"  # newest first
    # the tick's row says the clock did it, never a sync run (it has no run to account for it)
    assert history[0]["source"] == "clock" and history[0]["run_id"] is None
