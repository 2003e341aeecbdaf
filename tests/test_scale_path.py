"""The scaled deployment end to end: two gunicorn instances of one site, a Celery worker and two Celery beats on a real
Redis broker, all on one PostgreSQL schema, against a live sandbox.

What docs/deploying.rst promises for it: one reconcile run per :data:`PATRONLOCK_SYNC_INTERVAL` and never two at
once, each webhook delivery processed once whichever instance received it, and a health report that says ok.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from celery_site import make_site, site_env
from cryptography.fernet import Fernet
from sqlalchemy import select

from flask_patronlock.health import health_report
from flask_patronlock.sandbox import Sandbox
from flask_patronlock.state import get_state
from flask_patronlock.webhooks import dedupe_key, register_webhook

REDIS_URL = os.environ.get("PATRONLOCK_TEST_REDIS_URL")
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.timeout(150),
    pytest.mark.skipif(not REDIS_URL, reason="PATRONLOCK_TEST_REDIS_URL is not set"),
]
INTERVAL = 2.0  # seconds between beat's runs
RUNS = 4  # scheduled runs to watch
CHANGES = 6  # patrons changed on Patreon, each announced by one webhook


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(
    what: str, check: Callable[[], Any], *, procs: list[subprocess.Popen[str]], timeout: float = 60.0
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        for proc in procs:
            assert proc.poll() is None, f"{proc.args[2:6]} exited with {proc.returncode} while waiting for {what}"
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/no-such-page", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means gunicorn serves the site
    except OSError:
        return False


def _post(port: int, headers: dict[str, str], body: bytes) -> str:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/patreon/webhook", data=body, headers=headers, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(response.read().decode()).strip()


@contextmanager
def _processes(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start subprocesses in their own process groups; stop every group when the block ends, however it ends."""
    started: list[tuple[subprocess.Popen[str], Any]] = []

    def start(name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
        log = (tmp_path / f"{name}.log").open("w")
        proc = subprocess.Popen(
            args, env=env, cwd=str(tmp_path), stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        started.append((proc, log))
        return proc

    try:
        yield start
    finally:
        for proc, _ in started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc, log in started:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            log.close()


@pytest.mark.patreon_sandbox(members=40)
def test_two_instances_a_worker_and_beat_on_postgresql(
    tmp_path: Path, patreon_sandbox: Sandbox, postgres_url: str
) -> None:
    assert REDIS_URL is not None
    queue = f"patronlock-scale-{uuid.uuid4().hex[:10]}"
    config = dict(
        patreon_sandbox.config,
        PATRONLOCK_SYNC_INTERVAL=INTERVAL,
        PATRONLOCK_SYNC_PAGE_SIZE=20,
        PATRONLOCK_TOKEN_KEYS=[Fernet.generate_key().decode()],
    )
    app, _ = make_site(postgres_url, config, REDIS_URL, queue)
    state = get_state(app)
    with app.app_context():
        db = app.extensions["sqlalchemy"]
        db.drop_all()  # this session's schema; another test may have left our tables in it
        db.create_all()
    env = site_env(postgres_url, config, REDIS_URL, queue)
    celery_cmd = [sys.executable, "-m", "celery", "-A", "celery_site:celery"]
    ports = [_free_port(), _free_port()]
    runs, deliveries, events = state.tables.sync_runs, state.tables.webhook_deliveries, state.tables.events

    def rows(query: Any) -> list[dict[str, Any]]:
        with state.store.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    with _processes(tmp_path) as start:
        procs = [
            start(f"web{i}", [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "-w", "2",
                              "celery_site:flask_app"], env)
            for i, port in enumerate(ports)
        ]
        # threads, so that two sync tasks could overlap in the worker if the lease did not keep runs one at a time
        worker = [*celery_cmd, "worker", "--pool=threads", "--concurrency=4", "-Q", queue, "--without-gossip",
                  "--without-mingle", "--without-heartbeat", "-l", "INFO"]
        procs.append(start("worker", worker, env))
        # beat on both machines: each sends a sync every interval, and still only one run an interval may happen
        for i in range(2):
            procs.append(start(f"beat{i}", [*celery_cmd, "beat", "-s", str(tmp_path / f"beat{i}"), "-l", "INFO"], env))
        for port in ports:
            _wait_for(f"gunicorn on {port}", lambda port=port: _answers(port), procs=procs)

        # (a) beat: one run per interval, none overlapping
        _wait_for(f"{RUNS} scheduled runs", lambda: len(rows(select(runs).where(runs.c.finished_at.is_not(None))))
                  >= RUNS, timeout=RUNS * INTERVAL * 6, procs=procs)

        # (b) webhooks: registered at instance 0; the sandbox delivers each change over HTTP, alternating instances
        with app.app_context():
            hook, _, stored = register_webhook(state, f"http://127.0.0.1:{ports[0]}/patreon/webhook")
        assert stored
        changed, sent = [], []
        for i in range(CHANGES):
            patreon_sandbox.update_webhook(hook.id, uri=f"http://127.0.0.1:{ports[i % 2]}/patreon/webhook")
            changed.append(patreon_sandbox.add_patron(f"scale{i}@example.com", tier="Gold"))
            flushed = patreon_sandbox.flush_webhooks()
            assert flushed and all(d.status == 200 for d in flushed), [(d.uri, d.status) for d in flushed]
            sent += flushed
            # Patreon retrying the same delivery at the other instance: stored once, processed once
            for delivery in flushed:
                assert _post(ports[(i + 1) % 2], delivery.headers, delivery.body) == "duplicate"
        ids = [m.id for m in changed]

        def all_done() -> bool:
            states = rows(select(deliveries.c.status).where(deliveries.c.member_id.in_(ids)))
            return bool(states) and all(r["status"] == "done" for r in states)

        _wait_for("every delivery done", all_done, procs=procs)
        # one more scheduled run after the webhooks, so runs and webhook work have met
        seen = len(rows(select(runs)))
        _wait_for("a run after the webhooks", lambda: len(rows(select(runs).where(runs.c.finished_at.is_not(None))))
                  > seen, timeout=INTERVAL * 10, procs=procs)

        with app.app_context():
            report = health_report(app)
    assert all(p.returncode is not None for p in procs)

    # (a) every run was a scheduled one, complete, and none started before the previous finished or within 0.9
    # intervals of it (the lease keeps them apart; beat's own guard skips a run that would come too soon)
    all_runs = rows(select(runs).order_by(runs.c.started_at))
    assert len(all_runs) >= RUNS + 1
    assert {r["trigger"] for r in all_runs} == {"beat"}, all_runs
    assert {r["status"] for r in all_runs} == {"complete"}, [(r["status"], r["reason"]) for r in all_runs]
    for before, after in pairwise(all_runs):
        assert before["finished_at"] <= after["started_at"], (before, after)
        assert (after["started_at"] - before["started_at"]).total_seconds() >= INTERVAL * 0.9, (before, after)

    # (b) one delivery row per distinct body, done after one attempt; each change applied once: one grant per member,
    # by the webhook or by a run that saw the patron first, never both
    delivery_rows = rows(select(deliveries).where(deliveries.c.member_id.in_(ids)))
    # a body sent twice (Patreon sends members:create and members:pledge:create with the same document) is one row
    assert sorted(r["dedupe_key"] for r in delivery_rows) == sorted({dedupe_key(d.body) for d in sent})
    assert set(ids) == {d.member_id for d in sent}
    assert all(r["status"] == "done" and r["attempts"] == 1 for r in delivery_rows), delivery_rows
    event_rows = rows(select(events).where(events.c.member_id.in_(ids)))
    applied = Counter((r["member_id"], r["kind"]) for r in event_rows if r["source"] in ("webhook", "sync"))
    assert applied and all(n == 1 for n in applied.values()), event_rows
    for member in changed:
        patron = state.store.get_patron(member.id)
        assert patron is not None and patron.access is True, member.id

    # (c) health
    assert report.status == "ok", [(c.name, c.status, c.summary) for c in report.checks]

    for name in ("web0", "web1", "worker", "beat0", "beat1"):
        log = (tmp_path / f"{name}.log").read_text()
        assert "Traceback" not in log, f"{name}:\n{log}"
