"""Entitlement against Patreon's real billing behaviour: one test per behaviour of the catalogue, each driving the real
write path (:meth:`Store.apply`) with snapshots shaped as Patreon sends them, and the real :func:`policy.decide`.

The behaviours (see docs/policies.rst, "Patreon's billing, and what the policy does about it"):

* start of month: Patreon zeroes the entitled amount and blanks the tiers of paid-up patrons on the 1st until the
  month's charge runs;
* declines never end on their own: Patreon lists a patron as ``declined_patron`` for months;
* ``declined_patron/Declined`` then ``active_patron/Pending`` is no recovery: only a ``Paid`` charge is;
* the real ``members:pledge:delete`` payload says ``last_charge_status: "Deleted"``;
* annual pledges are reported as the annual total (often discounted);
* amounts move with currency and first-month discounts;
* ``last_charge_date`` may be empty for every patron for days;
* a cancel-then-rejoin shows ``Deleted`` -> ``Paid`` with the same charge date, and no charge happened.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from connect_site import capture
from flask import Flask
from patreon_fixtures import fixture_json
from sqlalchemy import MetaData, create_engine, insert, select
from sqlalchemy.pool import StaticPool

from flask_patronlock import signals
from flask_patronlock.models import tables_for
from flask_patronlock.patreon.jsonapi import parse_member_document
from flask_patronlock.patreon.types import MemberSnapshot, TierSnapshot
from flask_patronlock.patron import Patron
from flask_patronlock.policy import Decision, LockRule, PolicySettings, Viewer, decide
from flask_patronlock.settings import get_policy_settings
from flask_patronlock.state import get_state
from flask_patronlock.store import ApplyResult, Store

TIERS = {
    "t5": TierSnapshot(id="t5", title="Fan", amount_cents=500),
    "t10": TierSnapshot(id="t10", title="Supporter", amount_cents=1000),
    "t20": TierSnapshot(id="t20", title="Patron", amount_cents=2000),
}
TIER_LOCK = LockRule(tier_ids=("t10",))
AMOUNT_LOCK = LockRule(min_cents=1000)
DAY = timedelta(days=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


class Site:
    """One store on an in-memory database, with its own clock and policy, deciding as a page view does."""

    def __init__(self, policy: PolicySettings | None = None, now: datetime | None = None) -> None:
        self.policy = policy or PolicySettings()
        self.now = now or utc(2026, 1, 1)
        engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
        metadata = MetaData()
        self.tables = tables_for(metadata)
        metadata.create_all(engine)
        self.store = Store(lambda: engine, self.tables, clock=lambda: self.now, policy_settings=lambda: self.policy)

    def see(self, snapshot: MemberSnapshot, at: datetime, *, source: str = "webhook") -> ApplyResult:
        """Patreon says ``snapshot`` at ``at`` (the clock moves there first)."""
        self.now = at
        return self.store.apply(snapshot, source=source, observed_at=at)

    def patron(self, member_id: str = "m1") -> Patron:
        patron = self.store.get_patron(member_id)
        assert patron is not None
        return patron

    def decide(self, rule: LockRule, member_id: str = "m1", at: datetime | None = None) -> Decision:
        viewer = Viewer(authenticated=True, linked=True, patron=self.patron(member_id))
        return decide(rule, viewer, self.policy, at or self.now, tiers=TIERS)

    def allowed(self, member_id: str = "m1", at: datetime | None = None) -> tuple[bool, bool]:
        """(tier lock, amount lock) for this member."""
        return self.decide(TIER_LOCK, member_id, at).allowed, self.decide(AMOUNT_LOCK, member_id, at).allowed

    def audit_events(self) -> list[str]:
        e = self.tables.events
        with self.store.engine.connect() as conn:
            return [row.events for row in conn.execute(select(e.c.events).order_by(e.c.id))]


def member(**kw: Any) -> MemberSnapshot:
    """A monthly $10 (Supporter) patron billed on the 1st, last charged 1 March 2026."""
    values: dict[str, Any] = dict(
        member_id="m1",
        campaign_id="c1",
        user_id="u1",
        email="kopi@example.com",
        full_name="Kopi",
        patron_status="active_patron",
        last_charge_status="Paid",
        last_charge_date=utc(2026, 3, 1, 4),
        next_charge_date=utc(2026, 4, 1),
        entitled_cents=1000,
        entitled_tier_ids=("t10",),
        will_pay_cents=1000,
        lifetime_cents=3000,
        pledge_start=utc(2026, 1, 1, 4),
        pledge_cadence=1,
    )
    values.update(kw)
    return MemberSnapshot(**values)


ZEROED: dict[str, Any] = {"entitled_cents": 0, "entitled_tier_ids": ()}
ACCESS = {"access-granted", "access-revoked", "tier-changed"}


#: every signal a billing change may send.
SIGNALS = (signals.patron_changed, *signals.EVENT_SIGNALS.values(), signals.access_granted, signals.access_revoked)


def names(seen: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [name for name, _ in seen]


# -- start of month -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pending", [False, True], ids=["last-month-paid", "charge-pending"])
def test_start_of_month_zeroing_keeps_what_was_paid_for(pending: bool) -> None:
    site = Site()
    site.see(member(), utc(2026, 3, 1, 5))
    assert site.allowed() == (True, True)
    # 1 April: Patreon zeroes the amount and blanks the tiers until the month's charge runs (3 April here)
    zeroed = member(**ZEROED)
    if pending:
        zeroed = zeroed.replace(last_charge_status="Pending", last_charge_date=utc(2026, 4, 1, 4))
    with capture(*SIGNALS) as seen:
        first = site.see(zeroed, utc(2026, 4, 1, 6))
        assert site.allowed() == (True, True)
        assert site.allowed(at=utc(2026, 4, 3)) == (True, True)  # still pending two days on
        charged = site.see(
            member(last_charge_date=utc(2026, 4, 3, 4), next_charge_date=utc(2026, 5, 1), lifetime_cents=4000),
            utc(2026, 4, 3, 5),
        )
    assert first.events == ()
    assert charged.events == ("charge_succeeded",)
    assert not ACCESS & set(names(seen)), names(seen)
    assert site.audit_events()[-2:] == ["", "charge_succeeded"]
    assert site.allowed() == (True, True)


# -- declines ----------------------------------------------------------------------------------------------------------


def declined(at: datetime, **kw: Any) -> MemberSnapshot:
    return member(patron_status="declined_patron", last_charge_status="Declined", last_charge_date=at, **kw)


def test_declines_end_with_patreons_retry_window() -> None:
    """Patreon retries within the month of the decline and then lists the patron as declined for months: the
    ``retry_window`` policy keeps access to the end of that month (or the grace days, if later), not for ever."""
    site = Site(PolicySettings(declined="retry_window", declined_grace_days=3))
    site.see(member(), utc(2026, 3, 1, 5))
    site.see(declined(utc(2026, 4, 1, 4)), utc(2026, 4, 1, 5))
    for retry in (4, 8, 12, 16, 20, 24):  # six retries, all declined
        site.see(declined(utc(2026, 4, retry, 4)), utc(2026, 4, retry, 5))
    assert site.allowed(at=utc(2026, 4, 30, 23)) == (True, True)
    assert site.decide(TIER_LOCK, at=utc(2026, 5, 1)).reason == "payment_declined"
    assert site.decide(TIER_LOCK, at=utc(2026, 4, 1, 5) + 180 * DAY).reason == "payment_declined"
    # a decline on the 30th still gets the grace days
    late = Site(PolicySettings(declined="retry_window", declined_grace_days=3))
    late.see(member(), utc(2026, 3, 1, 5))
    late.see(declined(utc(2026, 4, 30, 4)), utc(2026, 4, 30, 5))
    assert late.allowed(at=utc(2026, 5, 3, 3)) == (True, True)
    assert late.allowed(at=utc(2026, 5, 3, 4)) == (False, False)


def test_declines_keep_access_for_ever_no_more_under_the_old_setting() -> None:
    """``until_patreon_gives_up`` read from stored settings is the bounded ``retry_window``."""
    migrated = PolicySettings.from_dict({"declined": "until_patreon_gives_up"})
    assert migrated.declined == "retry_window"
    site = Site(migrated)
    site.see(member(), utc(2026, 3, 1, 5))
    site.see(declined(utc(2026, 4, 2, 4)), utc(2026, 4, 2, 5))
    assert site.decide(TIER_LOCK, at=utc(2026, 4, 2, 5) + 180 * DAY).reason == "payment_declined"


def test_stored_until_patreon_gives_up_is_migrated(app_ctx: Flask) -> None:
    state = get_state()
    with state.store.transaction() as conn:
        conn.execute(
            insert(state.tables.settings).values(
                key="policy", value={"declined": "until_patreon_gives_up", "declined_grace_days": 5}
            )
        )
        state.store.bump_settings_version(conn, by="test")
    state.settings.invalidate()
    policy = get_policy_settings()
    assert (policy.declined, policy.declined_grace_days) == ("retry_window", 5)


def test_decline_recovered_only_by_a_paid_charge() -> None:
    site = Site(PolicySettings(declined="restrict"))
    site.see(member(), utc(2026, 3, 1, 5))
    down = site.see(declined(utc(2026, 4, 1, 4)), utc(2026, 4, 1, 5))
    assert down.events == ("payment_declined", "access_revoked")
    # Patreon flips the patron back to active with a Pending charge: nothing was paid
    with capture(*SIGNALS) as seen:
        pending = site.see(
            member(last_charge_status="Pending", last_charge_date=utc(2026, 4, 5, 4)), utc(2026, 4, 5, 5)
        )
    assert "payment_recovered" not in pending.events and "access_granted" not in pending.events
    assert "payment-recovered" not in names(seen)
    assert site.decide(TIER_LOCK).reason == "payment_declined"
    # a Pending retry that is declined again is the same decline, not a new one
    again = site.see(declined(utc(2026, 4, 9, 4)), utc(2026, 4, 9, 5))
    assert "payment_declined" not in again.events
    paid = site.see(member(last_charge_date=utc(2026, 4, 12, 4), next_charge_date=utc(2026, 5, 1)), utc(2026, 4, 12, 5))
    assert paid.events == ("charge_succeeded", "payment_recovered", "access_granted")
    assert site.allowed() == (True, True)


# -- cancelled but paid ----------------------------------------------------------------------------------------------


def test_cancelled_but_paid_first_seen_with_a_deleted_charge() -> None:
    """The real members:pledge:delete payload (``Deleted``, next charge 29 January 2024), first seen by the site."""
    snapshot = parse_member_document(fixture_json("members_pledge_delete.json"))
    assert (snapshot.patron_status, snapshot.last_charge_status) == ("former_patron", "Deleted")
    site = Site()
    result = site.see(snapshot, utc(2024, 1, 2))
    assert result.patron is not None and result.patron.access is True
    rule = LockRule()
    assert site.decide(rule, snapshot.member_id, utc(2024, 1, 28, 23)).allowed
    after = site.decide(rule, snapshot.member_id, utc(2024, 1, 29))
    assert (after.allowed, after.reason) == (False, "former_patron")
    assert not Site(PolicySettings(cancelled="at_once")).store.apply(
        snapshot, source="webhook", observed_at=utc(2024, 1, 2)
    ).patron.access  # type: ignore[union-attr]


def test_cancelled_after_a_missed_charge_keeps_the_period_paid_for() -> None:
    """The site saw the March charge, missed April's, then sees the cancellation: April's period is paid for."""
    site = Site()
    site.see(member(), utc(2026, 3, 1, 5))
    cancelled = member(
        patron_status="former_patron", last_charge_status="Deleted", last_charge_date=utc(2026, 4, 1, 4),
        next_charge_date=utc(2026, 5, 1), lifetime_cents=4000, **ZEROED,
    )
    result = site.see(cancelled, utc(2026, 4, 10))
    assert result.events == ("pledge_cancelled",)
    assert site.allowed(at=utc(2026, 4, 30, 23)) == (True, True)
    assert site.allowed(at=utc(2026, 5, 1)) == (False, False)


def test_cancelled_after_a_decline_has_no_paid_period() -> None:
    site = Site()
    site.see(member(), utc(2026, 3, 1, 5))
    cancelled = member(
        patron_status="former_patron", last_charge_status="Declined", last_charge_date=utc(2026, 4, 1, 4),
        next_charge_date=utc(2026, 5, 1), **ZEROED,
    )
    site.see(cancelled, utc(2026, 4, 3))
    assert site.decide(TIER_LOCK).reason == "former_patron"


# -- amounts ---------------------------------------------------------------------------------------------------------


def test_annual_pledge_reported_as_the_discounted_annual_total() -> None:
    """$10 a month paid yearly at 10% off: Patreon reports 10800 cents a year, 900 a month."""
    site = Site()
    annual = member(entitled_cents=10800, will_pay_cents=10800, pledge_cadence=12, next_charge_date=utc(2027, 3, 1))
    site.see(annual, utc(2026, 3, 1, 5))
    assert site.patron().entitled_cents == 10800
    assert site.allowed() == (True, True)
    assert not site.decide(LockRule(min_cents=1001)).allowed  # counts as $10, not as $108
    # zeroed on 1 April (no charge due for eleven months): still what was paid for
    site.see(annual.replace(**ZEROED), utc(2026, 4, 1, 6))
    assert site.allowed() == (True, True)


@pytest.mark.parametrize("cents", [970, 500, 1], ids=["currency", "first-month-discount", "token"])
def test_amount_locks_count_an_entitled_tier_at_its_amount(cents: int) -> None:
    site = Site()
    site.see(member(entitled_cents=cents), utc(2026, 3, 1, 5))
    assert site.allowed() == (True, True)
    assert not site.decide(LockRule(min_cents=1001)).allowed
    # without a tier the cents are all there is
    site.see(member(entitled_cents=970, entitled_tier_ids=(), member_id="m2", user_id="u2"), utc(2026, 3, 1, 6))
    assert site.decide(AMOUNT_LOCK, "m2").reason == "amount_too_low"


# -- missing charge dates, events that did not happen ----------------------------------------------------------------


def test_missing_charge_dates_change_nothing() -> None:
    site = Site()
    site.see(member(), utc(2026, 3, 1, 5))
    with capture(*SIGNALS) as seen:
        outage = site.see(member(last_charge_date=None), utc(2026, 3, 10))
        back = site.see(member(), utc(2026, 3, 14))
    assert outage.events == () and back.events == ()
    assert "charge-succeeded" not in names(seen)
    assert site.patron().last_charge_date == utc(2026, 3, 1, 4)
    assert site.allowed() == (True, True)
    # a cancellation during the outage still keeps the paid period
    site.see(
        member(patron_status="former_patron", last_charge_status="Deleted", last_charge_date=None, **ZEROED),
        utc(2026, 3, 20),
    )
    assert site.allowed(at=utc(2026, 3, 31)) == (True, True)
    assert site.allowed(at=utc(2026, 4, 1)) == (False, False)


def test_charge_succeeded_not_inferred_for_a_cancel_then_rejoin() -> None:
    site = Site()
    site.see(member(), utc(2026, 3, 1, 5))
    cancelled = site.see(
        member(patron_status="former_patron", last_charge_status="Deleted", **ZEROED), utc(2026, 3, 10)
    )
    assert cancelled.events == ("pledge_cancelled",)
    rejoined = site.see(member(), utc(2026, 3, 12))
    assert "charge_succeeded" not in rejoined.events
    assert rejoined.events == ("pledge_started",)
    # a pending charge that goes through is a charge, even on the same date
    site.see(member(last_charge_status="Pending", last_charge_date=utc(2026, 4, 1, 4)), utc(2026, 4, 1, 5))
    paid = site.see(member(last_charge_date=utc(2026, 4, 1, 4), next_charge_date=utc(2026, 5, 1)), utc(2026, 4, 1, 9))
    assert paid.events == ("charge_succeeded",)


def test_a_charge_while_charge_dates_are_missing_is_inferred_once() -> None:
    site = Site()
    site.see(member(), utc(2026, 3, 1, 5))
    site.see(declined(utc(2026, 4, 1, 4)), utc(2026, 4, 1, 5))
    # the retry of 5 April goes through while Patreon hides every charge date
    recovered = site.see(member(last_charge_date=None, next_charge_date=utc(2026, 5, 1), lifetime_cents=4000),
                         utc(2026, 4, 5, 5))
    assert recovered.events[:2] == ("charge_succeeded", "payment_recovered")
    shown = site.see(member(last_charge_date=utc(2026, 4, 5, 4), next_charge_date=utc(2026, 5, 1),
                            lifetime_cents=4000), utc(2026, 4, 7))
    assert shown.events == ()
    # first seen while the dates are hidden: the date showing later is no charge, a later charge is
    other = Site()
    other.see(member(last_charge_date=None), utc(2026, 3, 10))
    assert other.see(member(), utc(2026, 3, 14)).events == ()
    charged = other.see(member(last_charge_date=utc(2026, 4, 1, 4), next_charge_date=utc(2026, 5, 1),
                               lifetime_cents=4000), utc(2026, 4, 1, 5))
    assert charged.events == ("charge_succeeded",)
