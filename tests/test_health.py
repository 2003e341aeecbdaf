"""The health view tells the truth: each fault is made for real against the live sandbox (a page that answers 503,
drift in Patreon's pages, a breaker-held run, the creator's refresh token refused, webhook deliveries that fail or
sit unprocessed, no complete run for days), then the report, the settings page's panel, ``flask patronlock check`` /
``health`` and the JSON endpoint (status code and who may read it) are checked against it."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from adminhelpers import ADMIN_PREFIX, AdminSite, sandbox_admin_site
from flask import Flask
from sync_helpers import sync

from flask_patronlock.health import Health, health_report, when_in_words
from flask_patronlock.patreon.signatures import sign
from flask_patronlock.sandbox import Sandbox
from flask_patronlock.sync import run_sync
from flask_patronlock.webhooks import register_webhook

pytestmark = pytest.mark.timeout(120)

TOKEN = "health-token-8f3a0c"
HEALTH = "/patreon/health"
WEBHOOK = "/patreon/webhook"


def _site(make_app: Callable[..., Flask], sandbox: Sandbox, **extra: Any) -> AdminSite:
    return sandbox_admin_site(make_app, sandbox, 200, **extra)


@pytest.fixture
def site(make_app: Callable[..., Flask], patreon_sandbox: Sandbox) -> AdminSite:
    """A site on a 200-member sandbox, the creator token from the configuration, a health token set."""
    return _site(make_app, patreon_sandbox, PATRONLOCK_HEALTH_TOKEN=TOKEN)


def statuses(health: Health) -> dict[str, str]:
    return {c.name: c.status for c in health.checks}


def healthy(site: AdminSite, sandbox: Sandbox) -> None:
    """A complete run and a registered webhook: everything ok."""
    assert sync(site.app, sandbox).complete
    with site.app.app_context():
        register_webhook(site.state, "http://site.test" + WEBHOOK)
    report = health_report(site.app)
    assert report.status == "ok", report.as_dict()


def endpoint(site: AdminSite, token: str | None = TOKEN, user: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    client = site.app.test_client()
    if user is not None:
        client.environ_base["HTTP_X_USER"] = user
    return client.get(HEALTH, headers=headers)


def panel(site: AdminSite, page: str = "/setup") -> str:
    html: str = site.get(ADMIN_PREFIX + page).get_data(as_text=True)
    start = html.index('data-health="')
    return html[start : html.index("</section>", start)]


def cli(site: AdminSite, *args: str) -> Any:
    return site.app.test_cli_runner().invoke(args=["patronlock", *args])


# -- words -----------------------------------------------------------------------------------------------------------


def test_when_in_words() -> None:
    now = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)
    assert when_in_words(now - timedelta(hours=3), now) == "4 December, 3 hours ago"
    assert when_in_words(now - timedelta(minutes=1), now) == "4 December, 1 minute ago"
    assert when_in_words(now - timedelta(seconds=20), now) == "4 December, just now"
    assert when_in_words(now - timedelta(days=340), now) == "29 December 2025, 340 days ago"


# -- a healthy site, and no complete run ---------------------------------------------------------------------------


@pytest.mark.patreon_sandbox
def test_no_complete_run_fails_then_a_sync_and_a_webhook_make_it_ok(site: AdminSite, patreon_sandbox: Sandbox) -> None:
    report = health_report(site.app)
    assert report.status == "failing" and statuses(report)["last_complete_run"] == "failing"
    assert statuses(report)["webhook"] == "warning"  # none registered
    assert report.check("incomplete_runs").message == "No sync has run yet."
    answer = endpoint(site)
    assert answer.status_code == 503 and answer.get_json()["status"] == "failing"
    assert answer.headers["Cache-Control"] == "no-store"
    assert "No sync has read every patron" in panel(site)
    result = cli(site, "health")
    assert result.exit_code == 1 and "failing  last complete run" in result.output

    healthy(site, patreon_sandbox)
    answer = endpoint(site)
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    body = answer.get_json()
    assert body["status"] == "ok" and {c["name"] for c in body["checks"]} == {
        "last_complete_run", "incomplete_runs", "drift", "held_runs", "creator_token", "webhook"
    }
    text = panel(site, "/dashboard")
    assert 'data-health="ok"' in text and "Everything works" in text
    assert f"{patreon_sandbox.now.day} {patreon_sandbox.now:%B}, just now" in text
    assert patreon_sandbox.now.isoformat()[:10] not in text.split("<details>")[0]  # no ISO date outside the details
    assert cli(site, "health").exit_code == 0
    as_json = cli(site, "health", "--json")
    assert as_json.exit_code == 0 and json.loads(as_json.output)["status"] == "ok"


@pytest.mark.patreon_sandbox
def test_the_last_complete_run_ages_into_a_warning_then_a_failure(site: AdminSite, patreon_sandbox: Sandbox) -> None:
    healthy(site, patreon_sandbox)
    done = patreon_sandbox.now
    patreon_sandbox.advance(hours=2)  # PATRONLOCK_SYNC_INTERVAL is 30 minutes: older than twice that
    report = health_report(site.app)
    check = report.check("last_complete_run")
    assert report.status == "warning" and check.status == "warning"
    assert check.data["age_seconds"] == 7200 and "2 hours ago" in check.message
    assert endpoint(site).status_code == 200  # a warning does not page anybody
    assert cli(site, "health").exit_code == 0

    patreon_sandbox.advance(days=1, minutes=1)
    report = health_report(site.app)
    assert report.status == "failing" and report.check("last_complete_run").status == "failing"
    assert endpoint(site).status_code == 503
    assert f"{done.day} {done:%B}, 1 day ago" in panel(site)
    checked = cli(site, "check")
    assert checked.exit_code == 1 and "FAILING  last complete run:" in checked.output
    assert "ok       tables" in checked.output  # the existing lines stay


# -- incomplete runs and drift -----------------------------------------------------------------------------------


@pytest.mark.patreon_sandbox
def test_incomplete_runs_warn_then_fail_after_the_alert_threshold(site: AdminSite, patreon_sandbox: Sandbox) -> None:
    healthy(site, patreon_sandbox)
    patreon_sandbox.add_fault("error", page=2, status=503, times=None)
    first = sync(site.app, patreon_sandbox, max_retries=0)
    assert first.status == "incomplete" and first.reason
    report = health_report(site.app)
    check = report.check("incomplete_runs")
    assert check.status == "warning" and report.status == "warning"
    assert check.data["streak"] == 1 and check.data["latest_reason"] == first.reason
    assert first.reason in check.detail and "503" in check.detail
    assert first.reason not in check.message and "the next one tries again" in check.message

    for _ in range(2):
        assert not sync(site.app, patreon_sandbox, max_retries=0).complete
    report = health_report(site.app)
    assert report.check("incomplete_runs").status == "failing" and report.check("incomplete_runs").data["streak"] == 3
    assert report.status == "failing" and endpoint(site).status_code == 503
    text = panel(site)
    assert "The last 3 syncs in a row could not read every patron" in text and first.reason[:20] in text

    patreon_sandbox.clear_faults()
    assert sync(site.app, patreon_sandbox).complete
    assert health_report(site.app).status == "ok" and endpoint(site).status_code == 200


@pytest.mark.patreon_sandbox
def test_drift_in_patreons_pages_fails_until_a_run_reads_them_again(site: AdminSite, patreon_sandbox: Sandbox) -> None:
    healthy(site, patreon_sandbox)
    patreon_sandbox.add_fault("drift", page=2, times=1, field="patron_status", value="active")
    run = sync(site.app, patreon_sandbox)
    assert run.status == "incomplete" and run.reason and "SchemaDrift" in run.reason
    report = health_report(site.app)
    drift = report.check("drift")
    assert drift.status == "failing" and drift.data["run_id"] == run.run_id and run.reason in drift.detail
    assert report.status == "failing" and endpoint(site).status_code == 503
    assert "changed shape" in panel(site)
    assert sync(site.app, patreon_sandbox).complete
    assert health_report(site.app).check("drift").status == "ok"


@pytest.mark.patreon_sandbox
def test_a_held_run_waits_for_a_decision_and_names_the_emptied_tiers(
    site: AdminSite, patreon_sandbox: Sandbox
) -> None:
    healthy(site, patreon_sandbox)
    patreon_sandbox.add_fault("drift", field="relationships.currently_entitled_tiers", value=[], times=None)
    run = sync(site.app, patreon_sandbox)
    assert run.status == "held" and run.held > 25
    report = health_report(site.app)
    held, drift = report.check("held_runs"), report.check("drift")
    assert held.status == "warning" and held.data == {"run_ids": [run.run_id], "held": run.held}
    assert f"{run.held:,} patrons" in held.message and "Sync page" in held.message
    assert drift.status == "warning" and drift.data["losses"]["tiers"] == run.held and "no tiers" in drift.message
    assert report.status == "warning" and endpoint(site).status_code == 200
    assert "waits for your decision" in panel(site, "/dashboard")

    site.state.store.reject_run(run.run_id, by="admin")
    report = health_report(site.app)
    assert report.check("held_runs").status == "ok" and report.check("drift").status == "ok"


# -- the creator token -------------------------------------------------------------------------------------------


@pytest.mark.patreon_sandbox
def test_a_refused_creator_token_fails_the_report(site: AdminSite, patreon_sandbox: Sandbox) -> None:
    healthy(site, patreon_sandbox)
    patreon_sandbox.revoke_creator_refresh_token()
    patreon_sandbox.expire_creator_token()
    result = run_sync(site.app)
    assert result.status == "incomplete"
    report = health_report(site.app)
    creator = report.check("creator_token")
    assert creator.status == "failing" and creator.data["failure"] == "invalid_grant"
    assert creator.data["state"] == "needs_reauth" and "Reconnect" in creator.message
    assert report.status == "failing" and endpoint(site).status_code == 503
    assert endpoint(site).get_json()["checks"][4]["name"] == "creator_token"
    assert "stopped accepting the site" in panel(site)
    checked = cli(site, "check")
    assert checked.exit_code == 1 and "DEGRADED creator token" in checked.output
    assert checked.output.count("creator token") == 1  # reported once, by the existing line


# -- webhook deliveries ------------------------------------------------------------------------------------------


def _deliver(site: AdminSite, sandbox: Sandbox, body: bytes) -> int:
    headers = {"X-Patreon-Event": "members:update", "Content-Type": "application/json",
               "X-Patreon-Signature": sign(body, sandbox.webhook_secret)}
    return site.app.test_client().post(WEBHOOK, data=body, headers=headers).status_code


def _member_body(member_id: str, campaign_id: str, cents: int) -> bytes:
    attrs = {"patron_status": "active_patron", "last_charge_status": "Paid",
             "last_charge_date": "2026-01-01T00:00:00.000+00:00", "currently_entitled_amount_cents": cents,
             "pledge_relationship_start": "2025-06-01T00:00:00.000+00:00"}
    rels = {"currently_entitled_tiers": {"data": []}, "campaign": {"data": {"type": "campaign", "id": campaign_id}}}
    data = {"type": "member", "id": member_id, "attributes": attrs, "relationships": rels}
    return json.dumps({"data": data}).encode()


@pytest.mark.patreon_sandbox
def test_failed_webhook_deliveries_warn_for_a_day(site: AdminSite, patreon_sandbox: Sandbox) -> None:
    healthy(site, patreon_sandbox)
    campaign = site.state.campaign_id()
    assert _deliver(site, patreon_sandbox, _member_body("gone-1", campaign, 2**70)) == 200  # malformed: failed
    report = health_report(site.app)
    hook = report.check("webhook")
    assert hook.status == "warning" and hook.data["failed_24h"] == 1 and hook.data["registered"]
    assert "1 message from Patreon could not be applied" in hook.message
    assert report.status == "warning" and endpoint(site).status_code == 200
    assert "could not be applied" in panel(site)
    patreon_sandbox.advance(hours=25)
    assert sync(site.app, patreon_sandbox).complete
    assert health_report(site.app).check("webhook").status == "ok"


@pytest.mark.patreon_sandbox
def test_deliveries_nobody_processes_fail_the_report(site: AdminSite, patreon_sandbox: Sandbox) -> None:
    healthy(site, patreon_sandbox)
    site.app.config["PATRONLOCK_JOBS"] = "thread"
    site.state.jobs.submit_webhook = lambda delivery_id: None  # type: ignore[method-assign]  # a worker that is down
    member = next(m for m in patreon_sandbox.members if m.patron_status == "active_patron")
    assert _deliver(site, patreon_sandbox, _member_body(member.id, site.state.campaign_id(), 500)) == 200
    assert health_report(site.app).check("webhook").status == "ok"  # just arrived
    patreon_sandbox.advance(minutes=16)
    report = health_report(site.app)
    hook = report.check("webhook")
    assert hook.status == "failing" and hook.data["stuck"] == 1 and "background worker" in hook.message
    assert report.status == "failing" and endpoint(site).status_code == 503
    site.state.jobs.retry_due()
    assert health_report(site.app).check("webhook").status == "ok"


@pytest.mark.patreon_sandbox
def test_a_webhook_patreon_paused_warns_once_the_sync_page_has_heard_it(
    site: AdminSite, patreon_sandbox: Sandbox
) -> None:
    healthy(site, patreon_sandbox)
    (hook,) = [w for w in patreon_sandbox.webhooks if w.uri == "http://site.test" + WEBHOOK]
    patreon_sandbox.update_webhook(hook.id, paused=True)
    assert health_report(site.app).check("webhook").status == "ok"  # the report never asks Patreon
    assert site.get(ADMIN_PREFIX + "/sync?check=1").status_code == 200  # the Sync page asks, and remembers
    report = health_report(site.app)
    check = report.check("webhook")
    assert check.status == "warning" and check.data["patreon"]["paused"] is True
    assert "Patreon paused the webhook" in check.message and report.status == "warning"
    assert "Patreon paused the webhook" in panel(site)
    again = cli(site, "webhooks", "register", "--url", "http://site.test" + WEBHOOK)
    assert again.exit_code == 0, again.output
    assert health_report(site.app).check("webhook").status == "ok"  # registering again unpauses it
    status = cli(site, "webhooks", "status")
    assert status.exit_code == 0 and "paused: no" in status.output
    assert health_report(site.app).check("webhook").data["patreon"]["paused"] is False


# -- who may read the endpoint ---------------------------------------------------------------------------------


@pytest.mark.patreon_sandbox
def test_the_endpoint_needs_the_token_or_an_admin(site: AdminSite, patreon_sandbox: Sandbox) -> None:
    healthy(site, patreon_sandbox)
    anonymous = endpoint(site, token=None)
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    assert "checks" not in (anonymous.get_json() or {})
    assert endpoint(site, token="wrong").status_code == 401
    assert endpoint(site, token=TOKEN + "x").status_code == 401
    assert endpoint(site, token="").status_code == 401
    assert site.app.test_client().get(HEALTH, headers={"Authorization": TOKEN}).status_code == 401  # no scheme
    assert endpoint(site, token=None, user="bob").status_code == 401  # signed in, not an admin
    assert endpoint(site, token=TOKEN).status_code == 200
    assert endpoint(site, token=None, user="admin").status_code == 200


@pytest.mark.patreon_sandbox
def test_without_a_token_the_endpoint_is_only_there_for_admins(
    make_app: Callable[..., Flask], patreon_sandbox: Sandbox
) -> None:
    site = _site(make_app, patreon_sandbox)
    assert endpoint(site, token=None).status_code == 404
    assert endpoint(site, token="anything").status_code == 404
    assert endpoint(site, token=None, user="bob").status_code == 404
    admin = endpoint(site, token=None, user="admin")
    assert admin.status_code == 503 and admin.get_json()["status"] == "failing"  # no complete run yet


def test_a_site_lock_does_not_hide_the_endpoint(make_app: Callable[..., Flask]) -> None:
    app = make_app(PATRONLOCK_HEALTH_TOKEN=TOKEN, PATRONLOCK_SITE_LOCK="premium")
    from flask_patronlock.state import get_state

    get_state(app).extension.lock("premium", min_cents=100)
    answer = app.test_client().get(HEALTH, headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 503 and answer.get_json()["checks"]
