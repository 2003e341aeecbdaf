"""The Sync page against the sandbox: Sync now, complete / incomplete (why) / held runs, approving and rejecting held
revocations, progress while a run runs, the webhook's registration and health, and the checklist's last steps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import insert, select

from flask_patronlock.settings import set_policy_settings
from flask_patronlock.webhooks import stored_webhook
from tests.helpers.admin import ADMIN_PREFIX, AdminSite, make_admin_site, sync_admin_site


@pytest.fixture
def site(make_app: Callable[..., Flask], patreon_sandbox: Any) -> AdminSite:
    return sync_admin_site(make_app, patreon_sandbox)


def html(site: AdminSite, path: str) -> str:
    return str(site.get(ADMIN_PREFIX + path).get_data(as_text=True))


def runs(site: AdminSite) -> list[dict[str, Any]]:
    r = site.state.tables.sync_runs
    with site.state.store.engine.connect() as conn:
        return [dict(row) for row in conn.execute(select(r).order_by(r.c.id)).mappings()]


def test_sync_now_reads_every_member_and_completes_the_checklist(site: AdminSite) -> None:
    assert 'data-step="sync"' in html(site, "/setup")
    response = site.post(ADMIN_PREFIX + "/sync/start")
    assert response.status_code == 302
    [run] = runs(site)
    assert run["status"] == "complete" and run["members_seen"] == 6 and run["trigger"] == "admin"
    page = html(site, "/sync")
    assert f'data-run="{run["id"]}" data-status="complete"' in page and 'http-equiv="refresh"' not in page
    setup = html(site, "/setup")
    assert "The last complete sync read all 6 members on" in setup
    assert "Patron 3" in html(site, "/patrons")
    detail = html(site, f"/sync/runs/{run['id']}")
    assert "complete" in detail and "api requests" in detail


def test_an_incomplete_run_says_why_and_revokes_nobody(site: AdminSite, patreon_sandbox: Any) -> None:
    site.post(ADMIN_PREFIX + "/sync/start")
    patreon_sandbox.add_fault("error", page=2, times=None)
    patreon_sandbox.delete_member(patreon_sandbox.member("p0@example.com"))
    site.post(ADMIN_PREFIX + "/sync/start")
    last = runs(site)[-1]
    assert last["status"] == "incomplete" and last["reason"]
    page = html(site, f"/sync/runs/{last['id']}")
    assert "took nobody's access away" in page and "page 2" in page
    assert last["reason"][:20] in html(site, "/sync").replace("&#39;", "'")


def hold_a_run(site: AdminSite, patreon_sandbox: Any) -> dict[str, Any]:
    """A run the breaker holds: 3 patrons gone from Patreon, more than it allows."""
    with site.app.app_context():
        set_policy_settings({"breaker_min_patrons": 1, "breaker_fraction": 0.1}, by="test")
    site.post(ADMIN_PREFIX + "/sync/start")
    for i in range(3):
        patreon_sandbox.delete_member(patreon_sandbox.member(f"p{i}@example.com"))
    site.post(ADMIN_PREFIX + "/sync/start")
    held = runs(site)[-1]
    return held


def test_runs_that_keep_stopping_are_told_to_the_creator_in_plain_words(site: AdminSite, patreon_sandbox: Any) -> None:
    site.post(ADMIN_PREFIX + "/sync/start")
    patreon_sandbox.add_fault("error", page=2, times=None)
    for n in range(1, 4):
        site.post(ADMIN_PREFIX + "/sync/start")
        page = html(site, "/sync")
        assert ("data-sync-alert" in page) == (n == 3)
    assert "The last 3 syncs could not read every patron from Patreon" in page
    day = runs(site)[0]["finished_at"]
    assert f"the last sync that could finished on {day.day} {day:%B %Y}" in page
    assert "<details><summary>Details</summary>" in page and "page 2" in page
    setup = html(site, "/setup")
    assert "The last 3 syncs could not read every patron from Patreon, so nobody who stopped pledging" in setup
    patreon_sandbox.clear_faults()
    site.post(ADMIN_PREFIX + "/sync/start")
    assert "data-sync-alert" not in html(site, "/sync")


def test_a_held_run_is_reviewed_then_approved(site: AdminSite, patreon_sandbox: Any) -> None:
    held = hold_a_run(site, patreon_sandbox)
    assert held["status"] == "held" and held["held"] == 3
    assert "Waiting for your approval" in html(site, "/sync")
    page = html(site, f"/sync/runs/{held['id']}")
    assert "3 patrons would lose access" in page and "Patron 1" in page and "missing from the run" in page
    assert site.post(f"{ADMIN_PREFIX}/sync/runs/{held['id']}/approve").status_code == 302
    decided = runs(site)[-1]
    assert decided["decided_by"] == "admin"
    page = html(site, f"/sync/runs/{held['id']}")
    assert "3 held changes applied" in page and "Approve: take their access away" not in page
    again = site.post(f"{ADMIN_PREFIX}/sync/runs/{held['id']}/approve")
    assert again.status_code == 302 and "not held" in html(site, f"/sync/runs/{held['id']}")


def test_a_held_run_is_rejected_and_everyone_keeps_access(site: AdminSite, patreon_sandbox: Any) -> None:
    held = hold_a_run(site, patreon_sandbox)
    assert site.post(f"{ADMIN_PREFIX}/sync/runs/{held['id']}/reject").status_code == 302
    p = site.state.tables.patrons
    with site.state.store.engine.connect() as conn:
        assert conn.execute(select(p.c.held_run_id).where(p.c.held_run_id.is_not(None))).first() is None
    assert "everyone it held keeps access" in html(site, f"/sync/runs/{held['id']}")
    assert site.get(ADMIN_PREFIX + "/sync/runs/999").status_code == 404


def test_a_running_run_shows_its_progress_and_the_page_refreshes(site: AdminSite) -> None:
    r = site.state.tables.sync_runs
    with site.state.store.transaction() as conn:
        conn.execute(insert(r).values(trigger="schedule", status="running", pages=3, members_seen=3000,
                                      total_reported=10000, started_at=site.state.store.clock()))
    page = html(site, "/sync")
    assert '<meta http-equiv="refresh" content="2">' in page
    assert 'value="3000"' in page and "3 pages read, 3000 members of 10000" in page


def test_register_the_webhook_and_see_its_health(site: AdminSite, patreon_sandbox: Any) -> None:
    assert "No webhook is registered" in html(site, "/sync")
    response = site.post(ADMIN_PREFIX + "/sync/webhook", {"back": "setup"})
    assert response.status_code == 302 and response.headers["Location"].endswith("/setup")
    stored = stored_webhook(site.state)
    assert stored is not None and stored["uri"] == "http://site.test/patreon/webhook"
    [hook] = patreon_sandbox.webhooks
    assert hook.uri == "http://site.test/patreon/webhook"
    page = html(site, "/sync")
    assert 'data-webhook-health="ok"' in page
    assert "Patreon reports no failed delivery" in html(site, "/setup")
    patreon_sandbox.update_webhook(hook.id, paused=True)
    page = html(site, "/sync?check=1")
    assert 'data-webhook-health="paused"' in page and "paused by Patreon" in page
    assert "paused the webhook" in html(site, "/setup")
    site.post(ADMIN_PREFIX + "/sync/webhook")  # registering again unpauses it
    assert 'data-webhook-health="ok"' in html(site, "/sync")


def test_sync_needs_the_creator_and_the_campaign(make_app: Callable[..., Flask]) -> None:
    site = make_admin_site(make_app, PATRONLOCK_JOBS="inline")
    site.post(ADMIN_PREFIX + "/sync/start")
    assert "PATRONLOCK_CREATOR_ACCESS_TOKEN" in html(site, "/sync")
    assert runs(site) == []
