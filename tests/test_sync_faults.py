"""Runs that die or lose their database at every phase: nobody locked out who should not be, every audit row of a
run accounted for by its run row, and the next run able to start within the lease's TTL."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from sync_helpers import access_of, fast_client, revoked_in_run, sandbox_app, set_policy, sync

from flask_patronlock import runs as runs_module
from flask_patronlock import signals
from flask_patronlock import sync as sync_module
from flask_patronlock.extension import get_state
from flask_patronlock.leases import Lease
from flask_patronlock.patreon.types import MemberPage
from flask_patronlock.sandbox import Sandbox
from flask_patronlock.store import Store
from flask_patronlock.sync import SYNC_LEASE, AlreadyRunning, incomplete_streak, list_runs, run_sync

pytestmark = pytest.mark.timeout(180)

TTL = 45  # the default PATRONLOCK_SYNC_LEASE_SECONDS


@pytest.fixture
def sb_app(make_app: Callable[..., Flask], patreon_sandbox: Sandbox) -> Flask:
    app = sandbox_app(make_app, patreon_sandbox, PATRONLOCK_SYNC_PAGE_SIZE=10)
    set_policy(app, cancelled="at_once", missing_runs=1)
    return app


def doom(sandbox: Sandbox) -> list[str]:
    """Cancel three active patrons and delete two: five revocations, under the breaker."""
    ids = [m.id for m in sandbox.members if m.patron_status == "active_patron" and not m.is_free_trial][:5]
    for member_id in ids[:3]:
        sandbox.cancel(member_id)
    for member_id in ids[3:]:
        sandbox.delete_member(member_id)
    return ids


def assert_consistent(app: Flask) -> None:
    """Every run's row counts the access_revoked audit rows that carry its id (no time passes in these tests, so a
    run revokes only in its revocation phase), and only a complete run has any."""
    for run in list_runs(app, limit=100):
        audit = revoked_in_run(app, run.run_id)
        assert audit == run.revoked, (run, audit)
        if audit:
            assert run.complete, run


def assert_nobody_wrongly_locked_out(app: Flask, sandbox: Sandbox) -> None:
    active = [m.id for m in sandbox.members if m.patron_status == "active_patron"]
    assert all(access_of(app, m) is not False for m in active)


def assert_the_dead_run_is_accounted_for(app: Flask, sandbox: Sandbox, doomed: list[str], *, revoked: bool) -> None:
    """After a run died (its lease never released): records consistent, nobody wrongly locked out, the next run
    blocked until the lease's TTL passed, then it marks the dead one interrupted and revokes what the dead one did
    not (``revoked``: the dead run's revocation phase had committed)."""
    assert_consistent(app)
    assert_nobody_wrongly_locked_out(app, sandbox)
    with pytest.raises(AlreadyRunning):  # the dead run's lease: nobody released it
        sync(app, sandbox)
    sandbox.advance(seconds=TTL + 1)
    after = sync(app, sandbox)
    assert after.complete
    dead = list_runs(app)[1]
    assert dead.status == "failed" and (dead.reason or "").startswith("interrupted")
    assert dead.complete == revoked and (dead.revoked == len(doomed)) == revoked
    assert_consistent(app)
    assert_nobody_wrongly_locked_out(app, sandbox)
    assert all(access_of(app, m) is False for m in doomed)
    assert dead.revoked + after.revoked == len(doomed)


class Killed(BaseException):
    """What SIGKILL does to a run, in-process: it stops where it is and runs no handler of its own."""


KILL_POINTS = ["start", "page", "revocation-transaction", "after-revocations", "time", "last-step"]


@pytest.fixture
def kill_at(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """``kill_at(point)``: the next run dies there, and (a process that died) never records its end nor gives its
    lease back."""
    dead = {"yes": False}

    def die(*_: Any, **__: Any) -> Any:
        dead["yes"] = True
        raise Killed

    def arm(point: str) -> None:
        if point == "start":
            monkeypatch.setattr(sync_module._Run, "_read_pages", die)
        elif point == "page":
            original = Store.apply_many
            calls = {"n": 0}

            def second_page(self: Store, *args: Any, **kw: Any) -> Any:
                calls["n"] += 1
                if calls["n"] == 2:
                    die()
                return original(self, *args, **kw)

            monkeypatch.setattr(Store, "apply_many", second_page)
        elif point == "revocation-transaction":  # after the set-aside snapshots were applied, before the commit
            monkeypatch.setattr(runs_module, "_mark_missing_locked", die)
        elif point == "after-revocations":
            monkeypatch.setattr(sync_module._Run, "_refresh_tiers", die)
        elif point == "time":
            monkeypatch.setattr(Store, "refresh_access", die)
        elif point == "last-step":
            monkeypatch.setattr(sync_module._Run, "_save", die)
        original_save = sync_module._Run._save

        def save(self: Any) -> None:
            if dead["yes"]:
                raise Killed
            original_save(self)

        if point != "last-step":
            monkeypatch.setattr(sync_module._Run, "_save", save)
        original_release = Lease.release
        monkeypatch.setattr(Lease, "release", lambda self: None if dead["yes"] else original_release(self))

    yield arm


@pytest.mark.patreon_sandbox(members=60)
@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_run_killed_at_any_phase_leaves_truthful_records(
    sb_app: Flask, patreon_sandbox: Sandbox, kill_at: Callable[[str], None], monkeypatch: pytest.MonkeyPatch,
    point: str,
) -> None:
    sandbox = patreon_sandbox
    assert sync(sb_app, sandbox).complete
    doomed = doom(sandbox)
    kill_at(point)
    with pytest.raises(Killed):
        sync(sb_app, sandbox)
    monkeypatch.undo()
    set_policy(sb_app, cancelled="at_once", missing_runs=1)
    after_revocations = point in ("after-revocations", "time", "last-step")
    assert_the_dead_run_is_accounted_for(sb_app, sandbox, doomed, revoked=after_revocations)


@pytest.mark.patreon_sandbox(members=60)
@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_run_that_raises_at_any_phase_says_so_and_releases_its_lease(
    sb_app: Flask, patreon_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    sandbox = patreon_sandbox
    assert sync(sb_app, sandbox).complete
    doomed = doom(sandbox)

    def boom(*_: Any, **__: Any) -> Any:
        raise RuntimeError("injected")

    target = {
        "start": (sync_module._Run, "_read_pages"), "page": (Store, "apply_many"),
        "revocation-transaction": (runs_module, "_mark_missing_locked"), "after-revocations": (sync_module._Run,
        "_refresh_tiers"), "time": (Store, "refresh_access"), "last-step": (sync_module._Run, "_finished"),
    }[point]
    monkeypatch.setattr(*target, boom)
    with pytest.raises(RuntimeError, match="injected"):
        sync(sb_app, sandbox)
    monkeypatch.undo()
    set_policy(sb_app, cancelled="at_once", missing_runs=1)
    failed = list_runs(sb_app)[0]
    if point != "last-step":  # the last step runs after the row is final
        assert failed.status == "failed" and failed.reason == "RuntimeError: injected"
    assert_consistent(sb_app)
    assert_nobody_wrongly_locked_out(sb_app, sandbox)
    after = sync(sb_app, sandbox)  # at once: the lease was released
    assert after.complete
    assert_consistent(sb_app)
    assert all(access_of(sb_app, m) is False for m in doomed)
    assert failed.revoked + after.revoked == len(doomed)


def lost_connection() -> OperationalError:
    return OperationalError("UPDATE patronlock_patrons ...", {}, sqlite3.OperationalError("disk I/O error"))


def fail_times(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, times: int, *, after: bool = False) -> None:
    """``owner.name`` raises a lost connection ``times`` times (``after``: once its work is done, as a commit whose
    answer never arrived), then works."""
    original = getattr(owner, name)
    left = {"n": times}

    def flaky(*args: Any, **kw: Any) -> Any:
        if not after and left["n"] > 0:
            left["n"] -= 1
            raise lost_connection()
        out = original(*args, **kw)
        if after and left["n"] > 0:
            left["n"] -= 1
            raise lost_connection()
        return out

    monkeypatch.setattr(owner, name, flaky)


@pytest.mark.patreon_sandbox(members=60)
@pytest.mark.parametrize(
    ("owner", "name", "after"),
    [
        pytest.param(Store, "apply_many", False, id="page"),
        pytest.param(runs_module, "_mark_missing_locked", False, id="revocation-transaction"),
        pytest.param(Store, "send", True, id="revocation-commit-unacknowledged"),
        pytest.param(Store, "refresh_access", False, id="time"),
        pytest.param(sync_module._Run, "_save", False, id="last-step"),
    ],
)
def test_a_lost_database_connection_is_retried(
    sb_app: Flask, patreon_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, after: bool
) -> None:
    sandbox = patreon_sandbox
    assert sync(sb_app, sandbox).complete
    doomed = doom(sandbox)
    fail_times(monkeypatch, owner, name, 1, after=after)
    run = sync(sb_app, sandbox)
    monkeypatch.undo()
    assert run.complete and run.status == "complete" and run.revoked == len(doomed)
    assert list_runs(sb_app)[0].revoked == len(doomed)
    assert_consistent(sb_app)
    assert all(access_of(sb_app, m) is False for m in doomed)
    store = get_state(sb_app).store
    gone = [m for m in doomed if store.get_patron(m).patron_status != "former_patron"]  # type: ignore[union-attr]
    assert all(store.get_patron(m).missing_runs == 1 for m in gone)  # type: ignore[union-attr]  # marked once


@pytest.mark.patreon_sandbox(members=60)
@pytest.mark.parametrize(("owner", "name"), [(Store, "apply_many"), (runs_module, "_mark_missing_locked")])
def test_a_database_lost_for_good_ends_the_run_with_a_row_that_says_why(
    sb_app: Flask, patreon_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, owner: Any, name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sandbox = patreon_sandbox
    assert sync(sb_app, sandbox).complete
    doomed = doom(sandbox)
    fail_times(monkeypatch, owner, name, 1000)
    run = sync(sb_app, sandbox)  # returned, not raised: the row is the record
    monkeypatch.undo()
    assert run.status == "failed" and not run.complete
    stored = list_runs(sb_app)[0]
    assert stored.status == "failed" and stored.reason == run.reason
    assert stored.reason is not None and stored.reason.startswith("database connection lost (")
    assert stored.reason.endswith("after 3 attempt(s)") and "disk I/O error" in stored.reason
    assert "gave up: database connection lost" in caplog.text
    assert_consistent(sb_app)
    assert_nobody_wrongly_locked_out(sb_app, sandbox)
    assert all(access_of(sb_app, m) is True for m in doomed)
    assert Lease(get_state(sb_app).store, SYNC_LEASE).current() is None
    assert sync(sb_app, sandbox).revoked == len(doomed)


@pytest.mark.patreon_sandbox(members=60)
def test_the_lease_lasts_under_a_minute_and_a_heartbeat_keeps_a_slow_page_alive(
    make_app: Callable[..., Flask], patreon_sandbox: Sandbox
) -> None:
    app = sandbox_app(make_app, patreon_sandbox, PATRONLOCK_SYNC_LEASE_SECONDS=1)
    assert get_state(sandbox_app(make_app, patreon_sandbox)).app.config["PATRONLOCK_SYNC_LEASE_SECONDS"] <= 60
    get_state(app).store.clock = lambda: datetime.now(UTC)  # the lease expires in real time here
    patreon_sandbox.add_fault("slow", page=2, seconds=2.5)  # one page longer than the TTL
    with fast_client(patreon_sandbox) as client:
        run = run_sync(app, client=client)
    assert run.complete, run.reason
    assert [r.status for r in list_runs(app)] == ["complete"]


class _Thinned:
    """A client whose pages lose half their members and whose documents carry no total (an API bug)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def iter_member_pages(self, *args: Any, **kw: Any) -> Iterator[MemberPage]:
        for page in self.inner.iter_member_pages(*args, **kw):
            kept = page.members[::2]
            yield MemberPage(kept, page.next_cursor, None, page.cursor, len(kept))


@pytest.mark.patreon_sandbox(members=200)
@pytest.mark.parametrize("how", ["half-the-pages-empty", "half-of-each-page-and-no-total"])
def test_patreon_returning_fewer_members_revokes_nobody(
    make_app: Callable[..., Flask], patreon_sandbox: Sandbox, how: str
) -> None:
    sandbox = patreon_sandbox
    app = sandbox_app(make_app, sandbox)  # pages of 50, default policies: missing twice, breaker max(25, 10%)
    assert sync(app, sandbox).complete
    store = get_state(app).store
    entitled = store.count_entitled(sandbox.campaign.id)
    if how == "half-the-pages-empty":
        for page in (1, 3):
            sandbox.add_fault("drop", page=page, count=50, times=None)
        run = sync(app, sandbox)
        assert not run.complete and run.status == "incomplete"
    else:
        with fast_client(sandbox) as client:
            run = run_sync(app, client=_Thinned(client))  # type: ignore[arg-type]
        assert run.complete and run.status == "held" and run.revoked == 0  # the breaker
    assert store.count_entitled(sandbox.campaign.id) == entitled
    assert revoked_in_run(app, run.run_id) == 0


@pytest.mark.patreon_sandbox(members=100)
def test_a_count_within_the_slack_of_total_completes_and_missing_needs_two_runs(
    make_app: Callable[..., Flask], patreon_sandbox: Sandbox
) -> None:
    sandbox = patreon_sandbox
    app = sandbox_app(make_app, sandbox, PATRONLOCK_SYNC_PAGE_SIZE=20)
    assert sync(app, sandbox).complete
    dropped = sandbox.add_fault("drop", page=2, count=2, times=None)  # total says 2 more than the pages hold
    run = sync(app, sandbox)
    assert run.complete and run.total_reported == run.members_seen + 2 and run.revoked == 0
    missing = [p for p in get_state(app).store.member_ids(sandbox.campaign.id)
               if get_state(app).store.get_patron(p).missing_runs == 1]  # type: ignore[union-attr]
    assert len(missing) == 2 and all(access_of(app, m) is not False for m in missing)
    sandbox.remove_fault(dropped.id)
    assert sync(app, sandbox).complete
    assert all(get_state(app).store.get_patron(m).missing_runs == 0 for m in missing)  # type: ignore[union-attr]
    sandbox.add_fault("drop", page=2, count=7, times=None)  # outside max(5, 1% of 100)
    assert not sync(app, sandbox).complete


@pytest.mark.patreon_sandbox(members=30)
def test_consecutive_incomplete_runs_raise_an_alert(
    make_app: Callable[..., Flask], patreon_sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox = patreon_sandbox
    app = sandbox_app(make_app, sandbox, PATRONLOCK_SYNC_PAGE_SIZE=10, PATRONLOCK_SYNC_ALERT_AFTER=3)
    assert sync(app, sandbox).complete
    sandbox.add_fault("error", page=2, status=503, times=None)
    alerts: list[dict[str, Any]] = []

    def on_alert(sender: Any, **kw: Any) -> None:
        alerts.append(kw)

    with signals.sync_incomplete.connected_to(on_alert, sender=app):
        for n in range(1, 5):
            run = sync(app, sandbox)
            assert not run.complete
            assert incomplete_streak(app)[0] == n
            assert len(alerts) == (0 if n < 3 else 1)
    assert alerts[0]["streak"] == 3 and alerts[0]["last_complete"].run_id == 1
    assert "3 sync runs in a row were incomplete" in caplog.text
    assert "4 sync runs in a row were incomplete" in caplog.text
    sandbox.clear_faults()
    assert sync(app, sandbox).complete and incomplete_streak(app)[0] == 0


# -- PostgreSQL: a real SIGKILL, a real terminated backend ----------------------------------------------------------

KILLED_CHILD = textwrap.dedent(
    """
    import json, sys, time
    from datetime import datetime
    from flask import Flask
    from flask_sqlalchemy import SQLAlchemy
    from flask_patronlock import PatronLock
    from flask_patronlock.extension import get_state
    from flask_patronlock.policy import PolicySettings
    from flask_patronlock import runs as runs_module
    from flask_patronlock import sync as sync_module

    config, now, point = json.loads(sys.argv[1]), datetime.fromisoformat(sys.argv[2]), sys.argv[3]
    app = Flask("killed")
    app.config.update(config)
    db = SQLAlchemy()
    db.init_app(app)
    PatronLock(app, db=db)
    store = get_state(app).store
    store.clock = lambda: now
    policy = PolicySettings(cancelled="at_once", missing_runs=1)
    store.policy_settings = lambda: policy

    def wait_here(*args, **kw):
        print("STOPPED", flush=True)
        time.sleep(600)

    if point == "revocation-transaction":
        original = runs_module._mark_missing_locked
        def inside(*args, **kw):
            out = original(*args, **kw)  # the snapshots and the marks are written, not committed
            wait_here()
            return out
        runs_module._mark_missing_locked = inside
    else:
        sync_module._Run._refresh_tiers = wait_here
    with app.app_context():
        sync_module.run_sync(app)
    """
)


@pytest.mark.patreon_sandbox(members=60)
@pytest.mark.parametrize("point", ["revocation-transaction", "after-revocations"])
def test_sigkill_of_a_process_running_a_sync_on_postgresql(
    postgres_url: str, make_app: Callable[..., Flask], patreon_sandbox: Sandbox, db_url: str, point: str,
) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("the PostgreSQL run of this test kills a real process")
    sandbox = patreon_sandbox
    app = sandbox_app(make_app, sandbox, PATRONLOCK_SYNC_PAGE_SIZE=10)
    set_policy(app, cancelled="at_once", missing_runs=1)
    assert sync(app, sandbox).complete
    doomed = doom(sandbox)
    config = dict(sandbox.config, SQLALCHEMY_DATABASE_URI=db_url, PATRONLOCK_SYNC_PAGE_SIZE=10, TESTING=True)
    with subprocess.Popen(
        [sys.executable, "-c", KILLED_CHILD, json.dumps(config), sandbox.now.isoformat(), point],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(Path(__file__).parent.parent),
    ) as child:
        try:
            assert child.stdout is not None and child.stderr is not None
            line = child.stdout.readline()
            if line.strip() != "STOPPED":
                child.kill()
                pytest.fail(f"the child did not stop where asked: {line!r} {child.stderr.read()}")
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
    # PostgreSQL rolls back the dead backend's open transaction as soon as it notices the socket closed
    engine = create_engine(db_url)
    with engine.connect() as conn:
        for _ in range(100):
            busy = conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state LIKE 'idle in transaction%' AND application_name = ''"
            )).scalar_one()
            if not busy:
                break
            time.sleep(0.1)
    engine.dispose()
    assert_the_dead_run_is_accounted_for(app, sandbox, doomed, revoked=point == "after-revocations")


@pytest.mark.patreon_sandbox(members=60)
def test_a_terminated_postgresql_backend_is_retried(
    make_app: Callable[..., Flask], patreon_sandbox: Sandbox, db_url: str
) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("pg_terminate_backend is PostgreSQL's")
    sandbox = patreon_sandbox
    name = f"plsync-{uuid.uuid4().hex[:10]}"
    app = sandbox_app(
        make_app, sandbox, PATRONLOCK_SYNC_PAGE_SIZE=10,
        SQLALCHEMY_ENGINE_OPTIONS={"connect_args": {"application_name": name}},
    )
    set_policy(app, cancelled="at_once", missing_runs=1)
    assert sync(app, sandbox).complete
    doomed = doom(sandbox)
    admin = create_engine(db_url)
    terminated: list[int] = []

    def terminate(*_: Any) -> None:
        if terminated:
            return
        with admin.connect() as conn:  # this run's connections, nobody else's
            terminated.extend(conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :n"), {"n": name}
            ).scalars())

    with fast_client(sandbox) as client:
        run = run_sync(app, client=client, progress=terminate)
    admin.dispose()
    assert terminated and all(terminated)
    assert run.complete and run.revoked == len(doomed), run.reason
    assert_consistent(app)
    assert all(access_of(app, m) is False for m in doomed)
