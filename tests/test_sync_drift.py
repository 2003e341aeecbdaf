"""API drift never revokes: reconcile runs against the live sandbox whose members pages change shape (a field absent,
an unknown value, a type change, a transition Patreon never makes), on one page and on every page."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sync_helpers import revoked_in_run, sandbox_app, set_policy, sync

from flask_patronlock import signals
from flask_patronlock.extension import get_state
from flask_patronlock.sandbox import Sandbox
from flask_patronlock.sync import RunResult

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def sb_app(make_app: Callable[..., Flask], patreon_sandbox: Sandbox) -> Flask:
    return sandbox_app(make_app, patreon_sandbox)


def stored(app: Flask) -> dict[str, tuple[Any, ...]]:
    """What access depends on, for every stored member."""
    store = get_state(app).store
    out = {}
    for member_id in sorted(store.member_ids(get_state(app).campaign_id("test"))):
        p = store.get_patron(member_id)
        assert p is not None
        out[member_id] = (p.access, p.patron_status, p.last_charge_status, p.entitled_cents, p.entitled_tier_ids)
    return out


def run_logged(app: Flask, sandbox: Sandbox, caplog: pytest.LogCaptureFixture) -> tuple[RunResult, list[str]]:
    finished: list[RunResult] = []

    def on_finished(sender: Any, **kw: Any) -> None:
        finished.append(kw["run"])

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="flask_patronlock.sync"), signals.sync_finished.connected_to(
        on_finished, sender=app
    ):
        run = sync(app, sandbox)
    assert [r.run_id for r in finished] == [run.run_id]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.endswith("sync")]
    return run, warnings


#: (fault parameters, the field the reason must name)
SHAPE_DRIFT: list[Any] = [
    pytest.param({"field": "patron_status", "remove": True}, "attribute 'patron_status' absent", id="status-absent"),
    pytest.param(
        {"field": "patron_status", "value": "active"},
        "attribute 'patron_status' is a value Patreon does not document",
        id="status-unknown",
    ),
    pytest.param(
        {"field": "last_charge_status", "value": "Settled"},
        "attribute 'last_charge_status' is a value Patreon does not document",
        id="charge-status-unknown",
    ),
    pytest.param(
        {"field": "currently_entitled_amount_cents", "value": "1000"},
        "attribute 'currently_entitled_amount_cents' is str instead of an integer",
        id="cents-type",
    ),
    pytest.param(
        {"field": "currently_entitled_amount_cents", "remove": True},
        "attribute 'currently_entitled_amount_cents' absent",
        id="cents-absent",
    ),
    pytest.param(
        {"field": "relationships.currently_entitled_tiers", "remove": True},
        "relationship 'currently_entitled_tiers' absent",
        id="tiers-absent",
    ),
    pytest.param(
        {"field": "patron_status", "value": None, "status_of": "active_patron"},
        "attribute 'patron_status' null ('never pledged') on",
        id="active-to-never-pledged",
    ),
]


@pytest.mark.patreon_sandbox(members=200)
@pytest.mark.parametrize("where", ["page-2", "every-page"])
@pytest.mark.parametrize(("drift", "field"), SHAPE_DRIFT)
def test_drift_makes_the_run_incomplete_and_changes_nothing(
    sb_app: Flask,
    patreon_sandbox: Sandbox,
    caplog: pytest.LogCaptureFixture,
    drift: dict[str, Any],
    field: str,
    where: str,
) -> None:
    sandbox = patreon_sandbox
    set_policy(sb_app, cancelled="at_once", missing_runs=1)
    assert sync(sb_app, sandbox).complete
    before = stored(sb_app)
    assert sum(1 for v in before.values() if v[0]) > 100 and any(v[1] is None for v in before.values())
    page = 2 if where == "page-2" else None
    sandbox.add_fault("drift", page=page, times=1 if page else None, **drift)

    run, warnings = run_logged(sb_app, sandbox, caplog)
    assert run.status == "incomplete" and not run.complete and run.revoked == 0
    expected_page = "page 2: " if page else "page 1: "
    assert run.reason is not None and run.reason.startswith(expected_page + "SchemaDrift: ") and field in run.reason
    assert any(run.reason in w for w in warnings), warnings
    assert revoked_in_run(sb_app, run.run_id) == 0
    assert stored(sb_app) == before  # nobody lost access, tiers, cents or a status; nothing was half-applied

    sandbox.clear_faults()
    healed = sync(sb_app, sandbox)
    assert healed.complete and healed.revoked == 0 and healed.changed == 0
    assert stored(sb_app) == before
