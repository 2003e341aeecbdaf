"""The live self-check against the sandbox: a clean campaign has no findings; each kind of drift Patreon could ship is
named; saved findings carry nothing personal and replay as a sandbox scenario; ``check --live`` writes nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from flask import Flask
from sqlalchemy import func, select
from sync_helpers import sandbox_app

from flask_patronlock.livecheck import LiveCheckReport, live_check
from flask_patronlock.sandbox import Sandbox
from flask_patronlock.state import get_state

pytestmark = [pytest.mark.timeout(120), pytest.mark.patreon_sandbox(members=8)]


@pytest.fixture
def sb_app(make_app: Callable[..., Flask], patreon_sandbox: Sandbox) -> Flask:
    patreon_sandbox.add_webhook("http://site.test/patreon/webhook")
    return sandbox_app(make_app, patreon_sandbox)


def check(app: Flask) -> LiveCheckReport:
    with app.app_context():
        return live_check(app)


def cli(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=["patronlock", "check", "--live", *args])


def kinds(report: LiveCheckReport) -> set[tuple[str, str, str]]:
    return {(f.kind, f.where, f.field) for f in report.findings}


def test_clean_sandbox_has_no_findings(sb_app: Flask) -> None:
    report = check(sb_app)
    assert report.findings == [] and not report.drifting
    assert report.members_read > 0 and report.total is not None
    result = cli(sb_app)
    assert result.exit_code == 0, result.output
    assert "look as expected" in result.output


def test_missing_access_field_is_named_and_fails(sb_app: Flask, patreon_sandbox: Sandbox) -> None:
    patreon_sandbox.add_fault("drift", field="last_charge_status", remove=True, times=None)
    report = check(sb_app)
    assert ("missing_field", "members page", "last_charge_status") in kinds(report)
    assert report.drifting
    result = cli(sb_app)
    assert result.exit_code == 1, result.output
    assert "'last_charge_status' is missing" in result.output and "DRIFT" in result.output


def test_unknown_status_value(sb_app: Flask, patreon_sandbox: Sandbox) -> None:
    patreon_sandbox.add_fault("drift", field="patron_status", value="paused_patron", times=None)
    report = check(sb_app)
    found = [f for f in report.findings if f.kind == "unknown_value"]
    assert [(f.field, f.value) for f in found] == [("patron_status", "paused_patron")], report.findings
    assert found[0].blocking and found[0].count == report.members_read
    assert cli(sb_app).exit_code == 1


def test_type_change(sb_app: Flask, patreon_sandbox: Sandbox) -> None:
    patreon_sandbox.add_fault("drift", field="currently_entitled_amount_cents", value="500", times=None)
    report = check(sb_app)
    assert [(f.kind, f.field, f.value_type) for f in report.findings] == [
        ("type_changed", "currently_entitled_amount_cents", "str")
    ]


def test_new_attribute_is_informational(sb_app: Flask, patreon_sandbox: Sandbox) -> None:
    patreon_sandbox.add_fault("drift", field="membership_kind", value="standard", times=None)
    report = check(sb_app)
    assert [(f.kind, f.field, f.value_type, f.blocking) for f in report.findings] == [
        ("new_field", "membership_kind", "str", False)
    ]
    result = cli(sb_app)
    assert result.exit_code == 0, result.output
    assert "Patreon added 'membership_kind' (str)" in result.output and "informational" in result.output


def test_total_mismatch(sb_app: Flask, patreon_sandbox: Sandbox) -> None:
    patreon_sandbox.add_fault("drop", page=1, times=None)
    report = check(sb_app)
    assert ("total_mismatch", "members page", "meta.pagination.total") in kinds(report)
    assert report.drifting


SHAPE = [
    {"field": "patron_status", "remove": True},
    {"field": "last_charge_status", "value": "Settled"},
    {"field": "pledge_cadence", "value": "monthly"},
    {"field": "membership_kind", "value": 3},
]


def comparable(report: LiveCheckReport) -> set[tuple[Any, ...]]:
    return {(f.kind, f.where, f.field, f.value_type, f.value, f.blocking) for f in report.findings}


def test_saved_findings_are_anonymous_and_replay(sb_app: Flask, patreon_sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox = patreon_sandbox
    for drift in SHAPE:
        sandbox.add_fault("drift", times=None, **drift)
    sandbox.add_fault("drop", page=1, times=None)
    seen = check(sb_app)
    assert {(f.kind, f.field) for f in seen.findings} >= {
        ("missing_field", "patron_status"),
        ("unknown_value", "last_charge_status"),
        ("type_changed", "pledge_cadence"),
        ("new_field", "membership_kind"),
        ("total_mismatch", "meta.pagination.total"),
    }
    path = tmp_path / "findings.json"
    result = cli(sb_app, "--save", str(path))
    assert result.exit_code == 1, result.output
    text = path.read_text()
    saved = json.loads(text)
    assert len(saved["findings"]) == len(seen.findings)
    secrets = set()
    for member in sandbox.members:
        user = sandbox.user(member)
        secrets |= {member.id, user.id, user.email or "", user.full_name}
    leaked = [value for value in secrets if value in text]
    assert leaked == [], leaked

    sandbox.clear_faults()
    assert check(sb_app).findings == []
    sandbox.scenario("replay_live_check", path=str(path))
    assert comparable(check(sb_app)) == comparable(seen)
    sandbox.clear_faults()
    sandbox.scenario("replay_live_check", findings=saved)
    assert comparable(check(sb_app)) == comparable(seen)


def row_counts(app: Flask) -> dict[str, int]:
    state = get_state(app)
    with state.store.engine.connect() as conn:
        return {
            table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in state.tables.all()
        }


def test_check_live_writes_nothing(sb_app: Flask, patreon_sandbox: Sandbox) -> None:
    from sync_helpers import sync

    assert sync(sb_app, patreon_sandbox).complete
    patreon_sandbox.add_fault("drift", field="patron_status", value="paused_patron", times=None)
    before = row_counts(sb_app)
    assert sum(before.values()) > 0
    result = cli(sb_app)
    assert result.exit_code == 1, result.output
    assert row_counts(sb_app) == before


def test_save_needs_live(sb_app: Flask, tmp_path: Path) -> None:
    result = sb_app.test_cli_runner().invoke(args=["patronlock", "check", "--save", str(tmp_path / "x.json")])
    assert result.exit_code == 2 and "--save goes with --live" in result.output


def test_parser_refusal_is_saved_without_the_member_id(sb_app: Flask, patreon_sandbox: Sandbox, tmp_path: Path) -> None:
    """A cosmetic field of the wrong type: not drift the access check names, but the parser refuses the page (and
    its message quotes the member's id, which the saved file must not)."""
    patreon_sandbox.add_fault("drift", field="is_follower", value="no", times=None)
    report = check(sb_app)
    malformed = [f for f in report.findings if f.kind == "malformed"]
    assert len(malformed) == 1 and malformed[0].blocking and "is_follower" in malformed[0].detail
    path = tmp_path / "findings.json"
    assert cli(sb_app, "--save", str(path)).exit_code == 1
    text = path.read_text()
    assert "is_follower" in text
    assert [m.id for m in patreon_sandbox.members if m.id in text] == []
    assert any(m.id in malformed[0].detail for m in patreon_sandbox.members), malformed[0].detail  # what was scrubbed


def test_webhook_paused_and_missing(sb_app: Flask, patreon_sandbox: Sandbox) -> None:
    (hook,) = patreon_sandbox.webhooks
    patreon_sandbox.update_webhook(hook.id, paused=True)
    report = check(sb_app)
    assert [(f.kind, f.blocking) for f in report.findings] == [("webhook_paused", False)]
    result = cli(sb_app)
    assert result.exit_code == 0 and "paused" in result.output
    patreon_sandbox.delete_webhook(hook.id)
    assert [f.kind for f in check(sb_app).findings] == ["webhook_missing"]


def test_scheduler_runs_it_and_the_health_view_shows_drift(
    make_app: Callable[..., Flask], patreon_sandbox: Sandbox
) -> None:
    from flask_patronlock.health import health_report
    from flask_patronlock.livecheck import stored_summary

    off = sandbox_app(make_app, patreon_sandbox)  # testing: the scheduler is off, so is the live check
    get_state(off).jobs.tick()
    assert stored_summary(off) is None

    app = sandbox_app(make_app, patreon_sandbox, PATRONLOCK_SCHEDULER=True)
    patreon_sandbox.add_fault("drift", field="patron_status", value="paused_patron", times=None)
    get_state(app).jobs._next_run = float("inf")  # only the live check is due
    get_state(app).jobs.tick()
    summary = stored_summary(app)
    assert summary is not None and summary["drifting"] and summary["blocking"] == 1
    with app.app_context():
        drift = health_report(app).check("drift")
    assert drift.status == "warning" and "paused_patron" in drift.detail

    patreon_sandbox.clear_faults()
    get_state(app).jobs._next_live_check = 0.0
    get_state(app).jobs.tick()  # a check stored minutes ago counts: not read again
    assert stored_summary(app) == summary
    patreon_sandbox.advance(days=1)
    get_state(app).jobs._next_live_check = 0.0
    get_state(app).jobs.tick()
    summary = stored_summary(app)
    assert summary is not None and not summary["drifting"]
    with app.app_context():
        assert health_report(app).check("drift").status == "ok"
