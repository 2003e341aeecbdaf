"""Each scenario of Patreon's billing (``docs/patreon-behaviour.rst``) played on a live sandbox, end to end: the site
learns the two real ways (the sandbox's webhooks flushed into its webhook route, which re-fetches the member, and a
sync run over the sandbox's API), and the site's decision for the patrons the scenario touched is what the catalogue
says."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from sync_helpers import set_policy, sync, webhook_app

from flask_patronlock import signals
from flask_patronlock.patreon.types import TierSnapshot
from flask_patronlock.policy import LockRule, Viewer, decide
from flask_patronlock.sandbox import Member, Sandbox
from flask_patronlock.state import get_state

pytestmark = pytest.mark.timeout(120)

NOW = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)


@pytest.fixture
def site(make_app: Callable[..., Flask], patreon_sandbox: Sandbox) -> Flask:
    return webhook_app(make_app, patreon_sandbox)


def learn(app: Flask, sandbox: Sandbox) -> None:
    """The site hears of every change: the queued webhooks, then a complete sync run."""
    sandbox.flush_webhooks()
    assert sync(app, sandbox).complete


def allowed(app: Flask, sandbox: Sandbox, member: Member, lock: str | LockRule) -> bool:
    """Whether the site lets ``member`` through ``lock`` (a tier title, or a rule) now."""
    state = get_state(app)
    rule = LockRule(tier_ids=(sandbox.tier(lock).id,)) if isinstance(lock, str) else lock
    tiers = {t.id: TierSnapshot(id=t.id, amount_cents=t.amount_cents) for t in sandbox.tiers}
    viewer = Viewer(authenticated=True, linked=True, patron=state.store.get_patron(member.id))
    return decide(rule, viewer, state.store.policy_settings(), sandbox.now, tiers=tiers).allowed


ANY = LockRule()


@pytest.mark.patreon_sandbox(now=NOW)
def test_start_of_month_paid_up_patrons_keep_silver(site: Flask, patreon_sandbox: Sandbox) -> None:
    sb = patreon_sandbox
    set_policy(site, declined="restrict")
    patrons = [sb.add_patron(tier="Silver"), sb.add_patron(tier="Gold")]
    failing = sb.add_patron(tier="Silver")
    learn(site, sb)
    sb.set_fail_charges(failing)
    touched = sb.scenario("start_of_month", hours=6)
    assert {m.id for m in touched} == {m.id for m in [*patrons, failing]}
    learn(site, sb)  # every one of them zeroed: nothing entitled, no tiers
    assert all(allowed(site, sb, m, "Silver") for m in [*patrons, failing])
    sb.advance(hours=7)  # the month's charge runs: the failing card is declined
    learn(site, sb)
    assert all(allowed(site, sb, m, "Silver") for m in patrons)
    assert not allowed(site, sb, failing, "Silver") and not allowed(site, sb, failing, ANY)


@pytest.mark.patreon_sandbox(now=NOW)
def test_declined_for_months_ends_access_after_the_retry_window(site: Flask, patreon_sandbox: Sandbox) -> None:
    sb = patreon_sandbox
    set_policy(site, declined="retry_window", declined_grace_days=7)
    patron = sb.add_patron(tier="Silver")
    learn(site, sb)
    sb.set_fail_charges(patron)
    sb.advance(days=31)  # declined on 15 February, retried through February
    learn(site, sb)
    assert sb.member(patron.id).patron_status == "declined_patron"
    assert allowed(site, sb, patron, "Silver")  # within Patreon's retry window
    sb.scenario("declined_for_months", months=3, members=[patron.id])
    learn(site, sb)
    assert sb.member(patron.id).patron_status == "declined_patron"  # Patreon still lists them, months on
    assert not allowed(site, sb, patron, "Silver") and not allowed(site, sb, patron, ANY)


@pytest.mark.patreon_sandbox(now=NOW)
def test_cancel_after_decline_gets_the_declined_grace_not_a_paid_period(site: Flask, patreon_sandbox: Sandbox) -> None:
    sb = patreon_sandbox
    set_policy(site, declined="grace", declined_grace_days=3, cancelled="paid_period")
    patron = sb.add_patron(tier="Silver")
    learn(site, sb)
    sb.advance(days=20)
    sb.scenario("cancel_after_decline", members=[patron.id])
    learn(site, sb)
    assert allowed(site, sb, patron, "Silver")  # the declined grace, from the decline
    sb.advance(days=4)  # the grace is over; the period paid for (to 15 February) is not
    learn(site, sb)
    assert not allowed(site, sb, patron, "Silver") and not allowed(site, sb, patron, ANY)


@pytest.mark.patreon_sandbox(now=NOW)
def test_annual_bronze_patron_passes_a_bronze_amount_lock(site: Flask, patreon_sandbox: Sandbox) -> None:
    sb = patreon_sandbox
    (patron,) = sb.scenario("annual_pledge", tier="Bronze")
    learn(site, sb)
    assert get_state(site).store.get_patron(patron.id).entitled_cents == 12 * 300  # the annual total
    assert allowed(site, sb, patron, LockRule(min_cents=300)) and allowed(site, sb, patron, "Bronze")
    assert not allowed(site, sb, patron, LockRule(min_cents=500)) and not allowed(site, sb, patron, "Silver")
    sb.advance_months(11)  # still within the year paid for
    learn(site, sb)
    assert allowed(site, sb, patron, LockRule(min_cents=300))


@pytest.mark.patreon_sandbox(now=NOW)
@pytest.mark.parametrize("kind", ["currency", "discount"])
def test_amount_moves_keep_the_tier_and_the_amount_lock(site: Flask, patreon_sandbox: Sandbox, kind: str) -> None:
    sb = patreon_sandbox
    patron = sb.add_patron(tier="Silver")
    learn(site, sb)
    sb.scenario("amount_moves", percent=-3, kind=kind, members=[patron.id])
    learn(site, sb)
    assert get_state(site).store.get_patron(patron.id).entitled_cents == 485
    assert allowed(site, sb, patron, "Silver") and allowed(site, sb, patron, LockRule(min_cents=500))
    assert not allowed(site, sb, patron, "Gold")


@pytest.mark.patreon_sandbox(now=NOW)
def test_charge_dates_missing_nobody_loses_access(site: Flask, patreon_sandbox: Sandbox) -> None:
    sb = patreon_sandbox
    patrons = [sb.add_patron(tier="Silver"), sb.add_patron(tier="Gold"), sb.scenario("annual_pledge", tier="Bronze")[0]]
    learn(site, sb)
    sb.advance(days=30)  # the day before the monthly charges
    learn(site, sb)
    sb.scenario("charge_dates_missing", days=3)
    for _ in range(4):
        sb.advance(hours=20)  # the monthly patrons are charged while their dates are hidden
        learn(site, sb)
        assert all(allowed(site, sb, m, ANY) for m in patrons)
        assert allowed(site, sb, patrons[0], "Silver") and allowed(site, sb, patrons[1], "Gold")
    assert not sb.blanked_attributes


@pytest.mark.patreon_sandbox(now=NOW)
def test_cancel_then_rejoin_sends_no_charge_succeeded(site: Flask, patreon_sandbox: Sandbox) -> None:
    sb = patreon_sandbox
    patron = sb.add_patron(tier="Silver")
    learn(site, sb)
    sb.advance(days=10)
    learn(site, sb)
    charges: list[dict[str, Any]] = []

    def on_charge(sender: Any, **kw: Any) -> None:
        charges.append(kw)

    with signals.charge_succeeded.connected_to(on_charge, sender=site):
        sb.scenario("cancel_then_rejoin", members=[patron.id])
        learn(site, sb)
    assert charges == []
    assert allowed(site, sb, patron, "Silver")


@pytest.mark.patreon_sandbox(now=NOW)
def test_delete_never_paid_ends_access(site: Flask, patreon_sandbox: Sandbox) -> None:
    sb = patreon_sandbox
    (member,) = sb.scenario("delete_never_paid", tier="Bronze", members=[sb.add_patron(tier="Bronze", charge=False).id])
    # the site had seen the unpaid pledge (entitled at once) before it was deleted
    sb.flush_webhooks()
    learn(site, sb)
    assert not allowed(site, sb, member, "Bronze") and not allowed(site, sb, member, ANY)


@pytest.mark.patreon_sandbox(now=NOW)
@pytest.mark.parametrize("settles", [None, "Declined"])
def test_pending_after_decline_recovers_nothing(site: Flask, patreon_sandbox: Sandbox, settles: str | None) -> None:
    sb = patreon_sandbox
    set_policy(site, declined="grace", declined_grace_days=3)
    patron = sb.add_patron(tier="Silver")
    sb.set_fail_charges(patron)
    sb.advance(days=31)
    learn(site, sb)  # declined on 15 February
    sb.scenario("pending_after_decline", settles=settles, hours=24, members=[patron.id])
    learn(site, sb)
    assert sb.member(patron.id).last_charge_status == "Pending"
    sb.advance(days=4)
    learn(site, sb)
    assert not allowed(site, sb, patron, "Silver") and not allowed(site, sb, patron, ANY)


@pytest.mark.patreon_sandbox(now=NOW)
def test_pending_after_decline_that_settles_paid_recovers(site: Flask, patreon_sandbox: Sandbox) -> None:
    sb = patreon_sandbox
    set_policy(site, declined="restrict")
    patron = sb.add_patron(tier="Silver")
    sb.set_fail_charges(patron)
    sb.advance(days=31)
    learn(site, sb)
    assert not allowed(site, sb, patron, "Silver")
    sb.scenario("pending_after_decline", settles="Paid", hours=24, members=[patron.id])
    learn(site, sb)
    assert not allowed(site, sb, patron, "Silver")  # Pending is not Paid
    sb.advance(hours=25)
    learn(site, sb)
    assert allowed(site, sb, patron, "Silver")


@pytest.mark.patreon_sandbox(now=NOW)
@pytest.mark.parametrize("scenario", ["charge_refunded", "charge_fraud"])
def test_refunded_and_fraud_pay_for_nothing(site: Flask, patreon_sandbox: Sandbox, scenario: str) -> None:
    sb = patreon_sandbox
    # a refunded pledge still active is an unpaid one: the first-charge policy decides, here "after the first charge"
    set_policy(site, declined="restrict", cancelled="paid_period", first_charge="after_first_charge")
    patron = sb.add_patron(tier="Silver")
    learn(site, sb)
    assert allowed(site, sb, patron, "Silver")
    sb.scenario(scenario, members=[patron.id])
    learn(site, sb)
    assert not allowed(site, sb, patron, "Silver") and not allowed(site, sb, patron, ANY)


@pytest.mark.patreon_sandbox(now=NOW)
def test_refunded_then_deleted_pays_for_nothing(site: Flask, patreon_sandbox: Sandbox) -> None:
    sb = patreon_sandbox
    set_policy(site, cancelled="paid_period")
    patron = sb.add_patron(tier="Silver")
    learn(site, sb)
    sb.scenario("charge_refunded", members=[patron.id])
    learn(site, sb)
    sb.cancel(patron)  # "patrons must also delete their membership to avoid auto-renewal"
    learn(site, sb)
    assert not allowed(site, sb, patron, "Silver") and not allowed(site, sb, patron, ANY)


@pytest.mark.patreon_sandbox(now=NOW, billing="first_of_month")
def test_first_of_month_billing_keeps_access_through_the_month_paid_for(site: Flask, patreon_sandbox: Sandbox) -> None:
    sb = patreon_sandbox
    set_policy(site, cancelled="paid_period")
    patron = sb.add_patron(tier="Silver")
    learn(site, sb)
    sb.advance(days=17, hours=12)  # 2 February: charged on the 1st
    sb.cancel(patron)
    learn(site, sb)
    assert allowed(site, sb, patron, "Silver")  # paid through 1 March
    sb.travel_to(datetime(2024, 3, 1, 1, tzinfo=UTC))
    learn(site, sb)
    assert not allowed(site, sb, patron, "Silver")


@pytest.mark.patreon_sandbox(now=NOW)
def test_a_downgrade_back_by_webhook_alone_is_applied(site: Flask, patreon_sandbox: Sandbox) -> None:
    sb = patreon_sandbox
    patron = sb.add_patron(tier="Bronze")
    sb.flush_webhooks()
    sb.advance(hours=6)
    sb.change_tier(patron, "Silver")
    sb.flush_webhooks()
    assert allowed(site, sb, patron, "Silver")
    sb.change_tier(patron, "Bronze")  # back where it was: the same document as the charge's members:update
    sb.flush_webhooks()
    assert not allowed(site, sb, patron, "Silver")


@pytest.mark.patreon_sandbox(now=NOW)
def test_pending_after_decline_then_cancelled_gets_no_paid_period(site: Flask, patreon_sandbox: Sandbox) -> None:
    sb = patreon_sandbox
    set_policy(site, declined="restrict", cancelled="paid_period")
    patron = sb.add_patron(tier="Silver")
    sb.set_fail_charges(patron)
    sb.advance(days=31)  # declined on 15 February: January's payment paid to then
    learn(site, sb)
    sb.scenario("pending_after_decline", members=[patron.id])  # listed Pending, nothing paid, next charge 15 March
    learn(site, sb)
    assert not allowed(site, sb, patron, ANY)
    sb.cancel(patron)
    learn(site, sb)
    assert not allowed(site, sb, patron, ANY)
