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
from flask_patronlock.policy import entitlement
from flask_patronlock.sandbox import Sandbox
from flask_patronlock.sandbox.scenarios import _paid_up
from flask_patronlock.state import get_state
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


# -- the breaker counts every loss: access, tiers, cents -------------------------------------------------------------


def entitlements(app: Flask) -> dict[str, Any]:
    """Each stored member's entitlement as the policy computes it now."""
    state = get_state(app)
    store = state.store
    settings, now = store.policy_settings(), store.clock()
    out = {}
    for member_id in sorted(store.member_ids(state.campaign_id("test"))):
        out[member_id] = entitlement(store.get_patron(member_id), settings, now)
    return out


def nothing_lost(before: dict[str, Any], after: dict[str, Any], ended: frozenset[str] = frozenset()) -> None:
    """Nobody entitled ``before`` lost access, tiers or cents ``after``, but the ``ended`` whose pledge really ended."""
    for member_id, was in before.items():
        if not was.entitled or member_id in ended:
            continue
        now = after[member_id]
        assert now.entitled, member_id
        assert not (was.tier_ids and not now.tier_ids), member_id
        assert not (was.monthly_cents > 0 and now.monthly_cents <= 0), member_id


def held_run(
    app: Flask, sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> tuple[RunResult, list[str], list[dict[str, Any]]]:
    held: list[dict[str, Any]] = []

    def on_held(sender: Any, **kw: Any) -> None:
        held.append(kw)

    with signals.revocations_held.connected_to(on_held, sender=app):
        run, warnings = run_logged(app, sandbox, caplog)
    return run, warnings, held


def assert_held(run: RunResult, warnings: list[str], held: list[dict[str, Any]], *phrases: str) -> None:
    assert run.status == "held" and run.complete and run.revoked == 0 and run.held > 25
    assert run.reason is not None
    for phrase in phrases:
        assert phrase in run.reason, run.reason
    assert any(run.reason in w and "HELD" in w for w in warnings), warnings
    assert len(held) == 1 and held[0]["run_id"] == run.run_id and held[0]["reason"] == run.reason
    assert held[0]["revoking"] == run.held == len(held[0]["member_ids"])


#: (fault parameters, what the held run's reason says, the kind of loss)
LOSS_DRIFT: list[Any] = [
    pytest.param(
        {"field": "relationships.currently_entitled_tiers", "value": []}, "tiers emptied for", "tiers", id="tiers"
    ),
    pytest.param(
        {"field": "currently_entitled_amount_cents", "value": 0}, "entitled cents fell to 0 for", "cents", id="cents"
    ),
]


@pytest.mark.patreon_sandbox(members=200)
@pytest.mark.parametrize("where", ["page-2", "every-page"])
@pytest.mark.parametrize(("drift", "phrase", "kind"), LOSS_DRIFT)
def test_lost_tiers_or_cents_trip_the_breaker(
    sb_app: Flask,
    patreon_sandbox: Sandbox,
    caplog: pytest.LogCaptureFixture,
    drift: dict[str, Any],
    phrase: str,
    kind: str,
    where: str,
) -> None:
    """Well-formed pages that empty the tiers or zero the cents of still-active patrons: the breaker counts those losses
    (it used to count only access) and holds the run; approving applies them, rejecting keeps everything."""
    sandbox, store = patreon_sandbox, get_state(sb_app).store
    assert sync(sb_app, sandbox).complete
    before, rows = entitlements(sb_app), stored(sb_app)
    page = 2 if where == "page-2" else None
    sandbox.add_fault("drift", page=page, times=1 if page else None, **drift)
    run, warnings, held = held_run(sb_app, sandbox, caplog)
    pages = "on page 2" if page else "on pages 1-4"
    assert_held(run, warnings, held, f"{phrase} ", pages)
    assert held[0]["losses"][kind] == run.held and run.detail["losses"] == held[0]["losses"]
    # the entitled keep every stored field; the others lose nothing by the change, which is applied to them
    entitled = {m for m, ent in before.items() if ent.entitled}
    after = stored(sb_app)
    assert {m: after[m] for m in entitled} == {m: rows[m] for m in entitled}
    assert revoked_in_run(sb_app, run.run_id) == 0
    nothing_lost(before, entitlements(sb_app))
    store.reject_run(run.run_id, by="creator")
    after = stored(sb_app)
    assert {m: after[m] for m in entitled} == {m: rows[m] for m in entitled}
    nothing_lost(before, entitlements(sb_app))


@pytest.mark.patreon_sandbox(members=200)
def test_start_of_month_zeroes_revoke_nobody(
    sb_app: Flask, patreon_sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    """Patreon zeroes paid-up patrons on the 1st: a run then either finds the policy keeps what they paid for (no loss
    counted) or holds the losses for the creator; nobody loses access, tiers or cents."""
    sandbox = patreon_sandbox
    assert sync(sb_app, sandbox).complete
    zeroed = sandbox.scenario("start_of_month", hours=6)
    assert len(zeroed) > 100
    # the month that passed really ended some memberships (a gift runs out): those may go, nobody else
    ended = frozenset(m.id for m in sandbox.members if m.patron_status not in ("active_patron", "declined_patron"))
    before = entitlements(sb_app)
    run, warnings, held = held_run(sb_app, sandbox, caplog)
    if run.status == "held":
        assert_held(run, warnings, held, "tiers emptied for", "entitled cents fell to 0 for", "pages 1-4")
    else:
        assert run.status == "complete" and not held
    nothing_lost(before, entitlements(sb_app), ended)
    assert not {m.id for m in zeroed} & ended


@pytest.mark.patreon_sandbox(members=60)
def test_one_patron_zeroed_is_applied_and_keeps_access(sb_app: Flask, patreon_sandbox: Sandbox) -> None:
    sandbox = patreon_sandbox
    assert sync(sb_app, sandbox).complete
    paid_up = [m.id for m in sandbox.members if _paid_up(m) and (m.cadence or 1) == 1 and m.tier_ids]
    (one,) = sandbox.scenario("start_of_month", hours=6, members=paid_up[:1])
    run = sync(sb_app, sandbox)
    assert run.status == "complete" and run.revoked == 0
    patron = get_state(sb_app).store.get_patron(one.id)
    assert patron is not None and patron.entitled_cents == 0 and patron.entitled_tier_ids == () and patron.access


@pytest.mark.patreon_sandbox(members=200)
def test_a_genuine_mass_cancellation_is_held_not_applied(
    sb_app: Flask, patreon_sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox = patreon_sandbox
    set_policy(sb_app, cancelled="at_once")
    assert sync(sb_app, sandbox).complete
    doomed = [m.id for m in sandbox.members if m.patron_status == "active_patron"][::2]
    for member_id in doomed:
        sandbox.cancel(member_id)
    rows = stored(sb_app)
    run, warnings, held = held_run(sb_app, sandbox, caplog)
    assert_held(run, warnings, held, "access ended for", "on pages 1-4")
    assert held[0]["losses"]["access"] == run.held
    after = stored(sb_app)
    assert all(rows[m][0] for m in doomed) and all(after[m][0] for m in doomed)
    get_state(sb_app).store.approve_run(run.run_id, by="creator")
    after = stored(sb_app)
    assert not any(after[m][0] for m in doomed)


@pytest.mark.patreon_sandbox(members=40)
def test_a_genuinely_gone_member_is_revoked_after_two_complete_runs(sb_app: Flask, patreon_sandbox: Sandbox) -> None:
    sandbox = patreon_sandbox
    set_policy(sb_app, missing_runs=2, missing_hours=None)
    assert sync(sb_app, sandbox).complete
    gone = next(m.id for m in sandbox.members if m.patron_status == "active_patron" and m.tier_ids)
    sandbox.delete_member(gone)
    first = sync(sb_app, sandbox)
    assert first.status == "complete" and first.revoked == 0 and stored(sb_app)[gone][0] is True
    second = sync(sb_app, sandbox)
    assert second.status == "complete" and second.revoked == 1 and stored(sb_app)[gone][0] is False
