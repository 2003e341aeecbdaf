"""flask_patronlock.contrib.celery with a real Redis broker and a real worker process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from celery_site import make_site, site_env

from flask_patronlock.sandbox import Sandbox
from flask_patronlock.state import get_state

REDIS_URL = os.environ.get("PATRONLOCK_TEST_REDIS_URL")
pytestmark = [
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.timeout(180),
    pytest.mark.skipif(not REDIS_URL, reason="PATRONLOCK_TEST_REDIS_URL is not set"),
]


@pytest.mark.patreon_sandbox(members=120)
def test_runs_and_webhooks_on_a_real_worker(tmp_path: Path, patreon_sandbox: Sandbox) -> None:
    assert REDIS_URL is not None
    db_url = f"sqlite:///{tmp_path / 'site.db'}"
    queue = f"patronlock-test-{uuid.uuid4().hex[:10]}"
    config = dict(patreon_sandbox.config, PATRONLOCK_SYNC_PAGE_SIZE=50)
    app, celery = make_site(db_url, config, REDIS_URL, queue)
    with app.app_context():
        app.extensions["sqlalchemy"].create_all()
    env = site_env(db_url, config, REDIS_URL, queue)
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_site:celery", "worker", "--pool=solo", "-Q", queue,
         "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING"],
        env=env,
        cwd=str(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        state = get_state(app)
        outcome = state.jobs.start_run("celery").get(timeout=90)
        assert outcome["status"] == "complete" and outcome["members_seen"] == 120
        assert state.store.count_entitled(patreon_sandbox.campaign.id) > 0

        client = app.test_client()
        patreon_sandbox.add_webhook("http://site.test/patreon/webhook")
        patreon_sandbox.transport = lambda uri, headers, body: client.post(
            urlsplit(uri).path, data=body, headers=headers
        ).status_code
        member = patreon_sandbox.add_patron("celery@example.com", tier="Gold")
        assert all(d.status == 200 for d in patreon_sandbox.flush_webhooks())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            patron = state.store.get_patron(member.id)
            if patron is not None and patron.access:
                break
            time.sleep(0.2)
        patron = state.store.get_patron(member.id)
        assert patron is not None and patron.access is True and patron.source == "webhook"
        assert celery.conf.beat_schedule["flask-patronlock-sync"]["task"] == "flask_patronlock.sync"
    finally:
        worker.terminate()
        try:
            _, err = worker.communicate(timeout=20)
        except subprocess.TimeoutExpired:  # pragma: no cover
            worker.kill()
            _, err = worker.communicate()
        assert "Traceback" not in (err or ""), err
