"""describe_access: what the flash messages and the status page say a patron has, from policy.entitlement."""

from __future__ import annotations

from datetime import timedelta

import pytest

from flask_patronlock import Patron
from flask_patronlock.policy import PolicySettings
from flask_patronlock.views import describe_access
from tests.helpers.constants import SILVER
from tests.helpers.constants import T0 as NOW
from tests.helpers.patrons import patron

TIERS = {SILVER.id: SILVER}


CASES: list[tuple[str, Patron | None, PolicySettings, str]] = [
    ("no membership", None, PolicySettings(), "We found no pledge to this creator on that Patreon account"),
    ("active with a known tier", patron(), PolicySettings(),
     "You're a Silver patron: posts for Silver and below are unlocked."),
    ("active, tier unknown", patron(entitled_tier_ids=("t9",)), PolicySettings(),
     "You're a patron at $5.00 a month: posts for $5.00 a month and below are unlocked."),
    ("odd cents", patron(entitled_tier_ids=(), entitled_cents=550), PolicySettings(), "at $5.50 a month"),
    ("annual pledge counts monthly", patron(entitled_tier_ids=(), entitled_cents=6000, pledge_cadence=12),
     PolicySettings(), "at $5.00 a month"),
    ("declined, in grace", patron(patron_status="declined_patron", last_charge_status="Declined",
                                  declined_since=NOW - timedelta(days=1)), PolicySettings(),
     "Patreon could not charge your last payment. You're still a Silver patron for now and posts for Silver and below "
     "are unlocked until March 7, 2026 (in 6 days); please update your payment method on Patreon."),
    ("declined, restricted", patron(patron_status="declined_patron", last_charge_status="Declined"),
     PolicySettings(declined="restrict"), "Patreon could not charge your payment, so patron posts are locked"),
    ("cancelled, paid period left", patron(patron_status="former_patron", last_charge_status="Deleted",
                                           entitled_cents=0, entitled_tier_ids=(), last_entitled_cents=500,
                                           last_entitled_tier_ids=("t5",), paid_through=NOW + timedelta(days=10),
                                           next_charge_date=NOW + timedelta(days=10)),
     PolicySettings(), "Your pledge has ended, but you paid through this period: posts for Silver and below are "
     "unlocked until March 11, 2026 (in 10 days)."),
    ("cancelled", patron(patron_status="former_patron", last_charge_status="Deleted", entitled_cents=0,
                         entitled_tier_ids=()), PolicySettings(cancelled="at_once"),
     "Your pledge to this creator has ended"),
    ("follower", patron(patron_status=None, entitled_cents=0, entitled_tier_ids=(), last_charge_status=None),
     PolicySettings(), "follows this creator but has no paid pledge"),
    ("free trial not counted", patron(is_free_trial=True, last_charge_status=None),
     PolicySettings(count_free_trials=False), "Free trials don't unlock posts on this site"),
    ("gift not counted", patron(is_gifted=True), PolicySettings(count_gifted=False),
     "Gifted memberships don't unlock posts"),
    ("first charge pending", patron(last_charge_status=None, last_charge_date=None),
     PolicySettings(first_charge="after_first_charge"), "Your pledge unlocks posts once Patreon charges"),
]  # fmt: skip


@pytest.mark.parametrize(("why", "who", "settings", "expected"), CASES, ids=[c[0] for c in CASES])
def test_describe_access(why: str, who: Patron | None, settings: PolicySettings, expected: str) -> None:
    assert expected in describe_access(who, TIERS, NOW, settings)


def test_currency_symbol() -> None:
    text = describe_access(patron(entitled_tier_ids=(), entitled_cents=1234), {}, NOW, currency="£")
    assert text == "You're a patron at £12.34 a month: posts for £12.34 a month and below are unlocked."


def test_the_countdown_counts_calendar_days() -> None:
    from flask_patronlock.formatting import countdown_text

    assert countdown_text(NOW + timedelta(hours=2), NOW) == "today"
    assert countdown_text(NOW - timedelta(days=3), NOW) == "today"
    assert countdown_text(NOW + timedelta(hours=13), NOW) == "tomorrow"  # 12:00 + 13 h is the next day
    assert countdown_text(NOW + timedelta(days=5), NOW) == "in 5 days"
