"""Concrete scenarios for flask_patronlock.policy: entitlement per policy and status, decide per reason, validation."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from flask_patronlock.patron import Patron
from flask_patronlock.policy import (
    ALLOWING_REASONS,
    REASONS,
    Decision,
    Entitlement,
    LockRule,
    PolicySettings,
    Viewer,
    decide,
    entitlement,
    explain_steps,
)
from tests.helpers.constants import FREE, GOLD, RUBY, SILVER
from tests.helpers.patrons import patron

NOW = datetime(2024, 6, 15, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
TIERS = {tier.id: tier for tier in (FREE, SILVER, GOLD, RUBY)}
DEFAULTS = PolicySettings()
PAID: dict[str, Any] = {
    "patron_status": "active_patron",
    "last_charge_status": "Paid",
    "last_charge_date": NOW - 10 * DAY,
    "next_charge_date": None,
    "entitled_cents": 1000,
    "entitled_tier_ids": ("t10",),
    "lifetime_cents": 5000,
    "pledge_start": datetime(2023, 1, 10, tzinfo=UTC),
    "pledge_cadence": 1,
    "observed_at": NOW - DAY,
    "paid_through": NOW + 20 * DAY,
}


def check(
    p: Patron | None, settings: PolicySettings = DEFAULTS, now: datetime = NOW
) -> tuple[str, str, datetime | None]:
    ent = entitlement(p, settings, now)
    return ent.state, ent.basis, ent.until


def see(rule: LockRule, p: Patron | None = None, settings: PolicySettings = DEFAULTS, **kw: Any) -> Decision:
    viewer = Viewer(authenticated=True, linked=True, patron=p if p is not None else patron(PAID))
    return decide(rule, viewer, settings, kw.pop("now", NOW), tiers=kw.pop("tiers", TIERS), **kw)


DECLINED = {"patron_status": "declined_patron", "last_charge_status": "Declined", "declined_since": NOW - 3 * DAY}
FORMER = {"patron_status": "former_patron"}
UNPAID = {"last_charge_status": None, "last_charge_date": None, "paid_through": None, "lifetime_cents": 0}
RESTRICT = {"declined": "restrict"}
GIVES_UP = {"declined": "retry_window"}
AFTER = {"first_charge": "after_first_charge"}
H = timedelta(hours=1)

# fmt: off
ENTITLEMENT_CASES: list[tuple[str, dict[str, Any], dict[str, Any], str, datetime | None]] = [
    # id, patron changes, settings, "state basis", until
    ("paid", {}, {}, "active paid", None),
    ("follower", {"patron_status": None, "last_charge_status": None, "is_follower": True}, {}, "none not_pledged",
     None),
    ("unknown status", {"patron_status": "weird"}, {}, "none unknown_status", None),
    # first charge
    ("pending first, at once", {**UNPAID, "last_charge_status": "Pending"}, {}, "active first_charge_pending", None),
    ("no charge, at once", UNPAID, {}, "active first_charge_pending", None),
    ("no charge, after first", UNPAID, AFTER, "none first_charge_pending", None),
    ("pending renewal, after first", {"last_charge_status": "Pending"}, AFTER, "active charge_pending", None),
    ("deleted, paid before", {"last_charge_status": "Deleted", "paid_through": None}, {}, "active charge_pending",
     None),
    ("other, never paid", {**UNPAID, "last_charge_status": "Other"}, AFTER, "none first_charge_pending", None),
    # free trial / gifted
    ("trial counted", {**UNPAID, "is_free_trial": True}, AFTER, "active free_trial", None),
    ("trial not counted", {**UNPAID, "is_free_trial": True}, {"count_free_trials": False},
     "none free_trial_not_counted", None),
    ("gift counted", {**UNPAID, "is_gifted": True}, AFTER, "active gifted", None),
    ("gift not counted", {**UNPAID, "is_gifted": True}, {"count_gifted": False}, "none gifted_not_counted", None),
    ("declined trial is declined", {**DECLINED, "is_free_trial": True}, RESTRICT, "restricted declined_restrict", None),
    # declined x policy
    ("declined restrict", DECLINED, RESTRICT, "restricted declined_restrict", None),
    ("declined grace inside", DECLINED, {}, "grace declined_grace", NOW + 4 * DAY),
    ("declined grace over", {**DECLINED, "declined_since": NOW - 8 * DAY}, {}, "restricted declined_grace_over", None),
    ("declined grace exactly over", {**DECLINED, "declined_since": NOW - 7 * DAY}, {},
     "restricted declined_grace_over", None),
    ("declined grace 0 days", DECLINED, {"declined_grace_days": 0}, "restricted declined_grace_over", None),
    ("declined grace from charge date", {**DECLINED, "declined_since": None, "last_charge_date": NOW - 2 * DAY}, {},
     "grace declined_grace", NOW + 5 * DAY),
    ("declined grace from observed_at",
     {**DECLINED, "declined_since": None, "last_charge_date": None, "observed_at": NOW - 6 * DAY}, {},
     "grace declined_grace", NOW + DAY),
    ("declined grace, no date", {**DECLINED, "declined_since": None, "last_charge_date": None, "observed_at": None},
     {}, "restricted declined_grace_over", None),
    ("declined long ago: the retry window is over", {**DECLINED, "declined_since": NOW - 300 * DAY}, GIVES_UP,
     "restricted declined_grace_over", None),
    ("retry window: to the end of the month", {**DECLINED, "declined_since": NOW - 12 * DAY}, GIVES_UP,
     "grace declined_retry_window", datetime(2024, 7, 1, tzinfo=UTC)),
    ("retry window: the grace days if later", {**DECLINED, "declined_since": NOW - 3 * DAY},
     {**GIVES_UP, "declined_grace_days": 30}, "grace declined_retry_window", NOW + 27 * DAY),
    ("declined then Pending is still declined", {"last_charge_status": "Pending", "declined_since": NOW - DAY},
     RESTRICT, "restricted declined_restrict", None),
    ("zeroed at the start of the month", {"entitled_cents": 0, "entitled_tier_ids": (), "last_entitled_cents": 1000,
     "last_entitled_tier_ids": ("t10",)}, {}, "active paid", None),
    ("active_patron, Declined charge", {"last_charge_status": "Declined", "declined_since": NOW - DAY}, {},
     "grace declined_grace", NOW + 6 * DAY),
    ("given up: former", {**FORMER, "last_charge_status": "Declined", "paid_through": NOW - DAY}, GIVES_UP,
     "former cancelled", None),
    # fraud / refunds
    ("fraud restricts at once", {"last_charge_status": "Fraud"}, GIVES_UP, "restricted fraud", None),
    ("refunded, at once", {"last_charge_status": "Refunded"}, {}, "active refunded", None),
    ("refunded, after first", {"last_charge_status": "Refunded by Patreon"}, AFTER, "none refunded", None),
    ("former refunded: no paid period", {**FORMER, "last_charge_status": "Refunded"}, {}, "former cancelled", None),
    # cancelled x policy
    ("cancelled before paid_through", FORMER, {}, "grace cancelled_paid_period", NOW + 20 * DAY),
    ("cancelled after paid_through", {**FORMER, "paid_through": NOW - DAY, "last_charge_date": NOW - 32 * DAY}, {},
     "former cancelled", None),
    ("cancelled at paid_through", {**FORMER, "paid_through": NOW, "last_charge_date": NOW - 31 * DAY}, {},
     "former cancelled", None),
    ("cancelled, first seen with a Deleted charge",
     {**FORMER, "paid_through": None, "last_charge_status": "Deleted", "next_charge_date": NOW + 5 * DAY}, {},
     "grace cancelled_paid_period", NOW + 5 * DAY),
    ("cancelled, a charge missed: the report's period is later",
     {**FORMER, "paid_through": NOW - DAY, "last_charge_status": "Deleted", "next_charge_date": NOW + 5 * DAY}, {},
     "grace cancelled_paid_period", NOW + 5 * DAY),
    ("cancelled after a refund: the report's period was refunded",
     {**FORMER, "paid_through": None, "last_charge_status": "Deleted", "last_charge_date": NOW - 25 * DAY,
      "next_charge_date": NOW + 5 * DAY, "refunded_at": NOW - 25 * DAY}, {}, "former cancelled", None),
    ("cancelled, paid again after a refund",
     {**FORMER, "paid_through": None, "last_charge_status": "Deleted", "last_charge_date": NOW - 10 * DAY,
      "next_charge_date": NOW + 20 * DAY, "refunded_at": NOW - 40 * DAY}, {},
     "grace cancelled_paid_period", NOW + 20 * DAY),
    ("cancelled, never charged", {**FORMER, **UNPAID, "last_charge_status": "Deleted", "next_charge_date": NOW + DAY},
     {}, "former cancelled", None),
    ("cancelled at once", FORMER, {"cancelled": "at_once"}, "former cancelled", None),
    ("cancelled, paid_through from charge",
     {**FORMER, "paid_through": None, "last_charge_date": datetime(2024, 6, 1, tzinfo=UTC)}, {},
     "grace cancelled_paid_period", datetime(2024, 7, 1, tzinfo=UTC)),
    ("cancelled annual, paid_through from charge",
     {**FORMER, "paid_through": None, "pledge_cadence": 12, "last_charge_date": datetime(2024, 1, 31, tzinfo=UTC)},
     {}, "grace cancelled_paid_period", datetime(2025, 1, 31, tzinfo=UTC)),
    ("cancelled, nothing known", {**FORMER, **UNPAID}, {}, "former cancelled", None),
    # missing from sync
    ("missing 1 run", {"missing_since": NOW - 5 * H, "missing_runs": 1}, {}, "grace missing_grace", NOW + 43 * H),
    ("missing 2 runs", {"missing_since": NOW - H, "missing_runs": 2}, {}, "former missing", None),
    ("missing 48 hours", {"missing_since": NOW - 48 * H, "missing_runs": 1}, {}, "former missing", None),
    ("missing, hours off", {"missing_since": NOW - 300 * DAY, "missing_runs": 1}, {"missing_hours": None},
     "grace missing_grace", None),
    ("missing, 5 runs / 100 h", {"missing_since": NOW - DAY, "missing_runs": 4},
     {"missing_runs": 5, "missing_hours": 100}, "grace missing_grace", NOW + 76 * H),
    ("missing grace ends first", {**DECLINED, "missing_since": NOW - DAY, "missing_runs": 1}, {},
     "grace missing_grace", NOW + DAY),
    ("missing does not revive restricted", {**DECLINED, "missing_since": NOW - DAY, "missing_runs": 1}, RESTRICT,
     "restricted declined_restrict", None),
    ("held run keeps access", {"missing_since": NOW - 10 * DAY, "missing_runs": 5, "held_run_id": 7}, {},
     "active paid", None),
    ("held run keeps grace", {**FORMER, "missing_since": NOW - 10 * DAY, "missing_runs": 5, "held_run_id": 7}, {},
     "grace cancelled_paid_period", NOW + 20 * DAY),
    ("held run, base former",
     {**FORMER, **UNPAID, "missing_runs": 5, "held_run_id": 7}, {},
     "former cancelled", None),
]
# fmt: on


@pytest.mark.parametrize(
    ("changes", "settings", "expected", "until"), [pytest.param(*case[1:], id=case[0]) for case in ENTITLEMENT_CASES]
)
def test_entitlement_table(
    changes: dict[str, Any], settings: dict[str, Any], expected: str, until: datetime | None
) -> None:
    state, basis = expected.split()
    assert check(patron(PAID, **changes), PolicySettings(**settings)) == (state, basis, until)


def test_no_patron_is_none() -> None:
    assert check(None) == ("none", "no_patron", None)


def test_grace_turns_into_restricted_exactly_after_n_days() -> None:
    p = patron(PAID, **DECLINED)
    assert check(p, now=NOW + 4 * DAY - timedelta(microseconds=1))[0] == "grace"
    assert check(p, now=NOW + 4 * DAY)[0] == "restricted"


def test_amounts_count_only_when_entitled() -> None:
    ent = entitlement(patron(PAID), PolicySettings(), NOW)
    assert (ent.monthly_cents, ent.tier_ids, ent.lifetime_cents, ent.since) == (
        1000,
        ("t10",),
        5000,
        PAID["pledge_start"],
    )
    assert ent.entitled
    former = entitlement(patron(PAID, **FORMER), PolicySettings(cancelled="at_once"), NOW)
    assert (former.state, former.monthly_cents, former.tier_ids, former.lifetime_cents) == ("former", 0, (), 5000)
    assert not former.entitled
    grace = entitlement(patron(PAID, **DECLINED), PolicySettings(), NOW)
    assert (grace.state, grace.monthly_cents, grace.tier_ids) == ("grace", 1000, ("t10",))


@pytest.mark.parametrize(
    ("cents", "cadence", "monthly"),
    [(12000, 12, 1000), (1000, 1, 1000), (1000, None, 1000), (1000, 0, 1000), (10000, 12, 833), (3000, 3, 1000)],
)
def test_annual_cadence_is_a_monthly_equivalent(cents: int, cadence: int | None, monthly: int) -> None:
    assert (
        entitlement(patron(PAID, entitled_cents=cents, pledge_cadence=cadence), PolicySettings(), NOW).monthly_cents
        == monthly
    )


def test_annual_pledge_against_monthly_minimum() -> None:
    annual = patron(PAID, entitled_cents=12000, pledge_cadence=12, entitled_tier_ids=())
    assert see(LockRule(min_cents=1000), annual).allowed
    assert see(LockRule(min_cents=1001), annual).reason == "amount_too_low"
    assert see(LockRule(tier_ids=("t10",)), annual).allowed


# -- decide: one scenario per reason --------------------------------------------------------------------------------


def test_lock_disabled_wins_over_everything() -> None:
    d = decide(
        LockRule(min_cents=10**6, enabled=False), Viewer(authenticated=False, linked=False), PolicySettings(), NOW
    )
    assert (d.allowed, d.reason, d.entitlement) == (True, "lock_disabled", None)


def test_admin_bypass() -> None:
    d = decide(
        LockRule(min_cents=10**6), Viewer(authenticated=True, linked=False, is_admin=True), PolicySettings(), NOW
    )
    assert (d.allowed, d.reason) == (True, "admin_bypass")


def test_anonymous_and_not_linked() -> None:
    rule = LockRule(min_cents=100)
    anonymous = decide(rule, Viewer(authenticated=False, linked=False), PolicySettings(), NOW)
    assert (anonymous.allowed, anonymous.reason) == (False, "anonymous")
    unlinked = decide(rule, Viewer(authenticated=True, linked=False, patron=patron(PAID)), PolicySettings(), NOW)
    assert (unlinked.allowed, unlinked.reason) == (False, "not_linked")


def test_linked_without_patron_is_not_a_patron() -> None:
    d = decide(LockRule(), Viewer(authenticated=True, linked=True), PolicySettings(), NOW)
    assert (d.allowed, d.reason, d.entitlement) == (False, "not_a_patron", Entitlement(state="none", basis="no_patron"))


@pytest.mark.parametrize(
    ("changes", "settings", "reason"),
    [
        pytest.param({"patron_status": None, "last_charge_status": None}, {}, "not_a_patron", id="follower"),
        pytest.param(UNPAID, {"first_charge": "after_first_charge"}, "not_a_patron", id="unpaid first"),
        pytest.param({"is_gifted": True}, {"count_gifted": False}, "not_a_patron", id="gift not counted"),
        pytest.param(DECLINED, {"declined": "restrict"}, "payment_declined", id="declined restrict"),
        pytest.param(DECLINED, {}, "allowed", id="declined grace"),
        pytest.param({"last_charge_status": "Fraud"}, {}, "payment_declined", id="fraud"),
        pytest.param(FORMER, {}, "allowed", id="cancelled paid period"),
        pytest.param(FORMER, {"cancelled": "at_once"}, "former_patron", id="cancelled at once"),
        pytest.param({"missing_since": NOW - 3 * DAY, "missing_runs": 1}, {}, "former_patron", id="missing"),
        pytest.param({"missing_since": NOW - 3 * DAY, "missing_runs": 3, "held_run_id": 1}, {}, "allowed", id="held"),
    ],
)
def test_status_reasons(changes: dict[str, Any], settings: dict[str, Any], reason: str) -> None:
    d = see(LockRule(min_cents=500), patron(PAID, **changes), PolicySettings(**settings))
    assert (d.allowed, d.reason) == (reason == "allowed", reason)
    assert d.entitlement is not None


def test_rule_without_conditions_allows_any_entitled_patron() -> None:
    assert see(LockRule(), patron(PAID, entitled_cents=0, entitled_tier_ids=())).reason == "allowed"


@pytest.mark.parametrize(
    ("rule", "changes", "reason"),
    [
        pytest.param(LockRule(min_cents=1000), {}, "allowed", id="cents equal"),
        pytest.param(LockRule(min_cents=1001), {}, "amount_too_low", id="cents below"),
        pytest.param(LockRule(tier_ids=("t10",)), {}, "allowed", id="same tier"),
        pytest.param(LockRule(tier_ids=("t5",)), {}, "allowed", id="higher tier"),
        pytest.param(LockRule(tier_ids=("t20",)), {}, "amount_too_low", id="lower tier"),
        pytest.param(LockRule(tier_ids=("t20", "t5")), {}, "allowed", id="or higher than the cheapest"),
        pytest.param(
            LockRule(tier_ids=("t20",)),
            {"entitled_cents": 5000},
            "amount_too_low",
            id="extra cents on a lower tier do not buy a higher tier",
        ),
        pytest.param(
            LockRule(tier_ids=("t10",)),
            {"entitled_tier_ids": (), "entitled_cents": 1000},
            "allowed",
            id="no tier: cents compared",
        ),
        pytest.param(
            LockRule(tier_ids=("t10",)),
            {"entitled_tier_ids": (), "entitled_cents": 999},
            "amount_too_low",
            id="no tier: cents too low",
        ),
        pytest.param(
            LockRule(tier_ids=("t10",)),
            {"entitled_tier_ids": ("gone",), "entitled_cents": 1500},
            "allowed",
            id="unknown entitled tier: cents compared",
        ),
        pytest.param(
            LockRule(tier_ids=("nope",)),
            {"entitled_tier_ids": ("nope",)},
            "allowed",
            id="unknown required tier held exactly",
        ),
        pytest.param(
            LockRule(tier_ids=("free",)),
            {"entitled_tier_ids": ("free",), "entitled_cents": 0},
            "allowed",
            id="free tier lock, free member",
        ),
        pytest.param(
            LockRule(min_cents=1),
            {"entitled_tier_ids": ("free",), "entitled_cents": 0},
            "amount_too_low",
            id="free tier is not paid",
        ),
        pytest.param(
            LockRule(tier_ids=("t5",)),
            {"entitled_tier_ids": ("free",), "entitled_cents": 0},
            "amount_too_low",
            id="free tier below paid tier",
        ),
        pytest.param(LockRule(min_cents=500, tier_ids=("t20",)), {}, "amount_too_low", id="all: tier fails"),
        pytest.param(LockRule(min_cents=500, tier_ids=("t20",), combine="any"), {}, "allowed", id="any: cents pass"),
        pytest.param(
            LockRule(min_cents=5000, lifetime_cents=10**6, combine="any"),
            {},
            "amount_too_low",
            id="any: all fail, first reason",
        ),
        pytest.param(LockRule(patron_since_before=datetime(2023, 2, 1, tzinfo=UTC)), {}, "allowed", id="since ok"),
        pytest.param(
            LockRule(patron_since_before=datetime(2023, 1, 10, tzinfo=UTC)),
            {},
            "not_patron_at_date",
            id="since same moment is not before",
        ),
        pytest.param(
            LockRule(patron_since_before=datetime(2030, 1, 1, tzinfo=UTC)),
            {"pledge_start": None},
            "not_patron_at_date",
            id="since unknown",
        ),
        pytest.param(LockRule(lifetime_cents=5000), {}, "allowed", id="lifetime equal"),
        pytest.param(LockRule(lifetime_cents=5001), {}, "lifetime_too_low", id="lifetime below"),
        pytest.param(LockRule(drip_months=17), {}, "allowed", id="drip reached"),
        pytest.param(LockRule(drip_months=18), {}, "drip_not_reached", id="drip not reached"),
        pytest.param(
            LockRule(min_cents=100, lifetime_cents=10**6, drip_months=100),
            {},
            "lifetime_too_low",
            id="all: first unmet in order",
        ),
    ],
)
def test_rule_conditions(rule: LockRule, changes: dict[str, Any], reason: str) -> None:
    d = see(rule, patron(PAID, **changes))
    assert (d.allowed, d.reason) == (reason == "allowed", reason)
    assert d.required_tier_ids == rule.tier_ids


def test_unknown_required_tier_denies_and_says_why() -> None:
    d = see(LockRule(tier_ids=("gone",)), patron(PAID, entitled_cents=10**6))
    assert (d.allowed, d.reason, d.required_cents) == (False, "amount_too_low", None)
    assert d.missing is not None and "gone" in d.missing and "known tiers" in d.missing
    assert see(LockRule(tier_ids=("t10",)), tiers=None).allowed  # held exactly: no amounts needed
    assert see(LockRule(tier_ids=("t5",)), tiers=None).reason == "amount_too_low"


def test_required_cents() -> None:
    assert see(LockRule(tier_ids=("t20", "t5"))).required_cents == 500
    assert see(LockRule(min_cents=700, tier_ids=("t5",))).required_cents == 700
    assert see(LockRule(min_cents=700, tier_ids=("t5",), combine="any")).required_cents == 500
    assert see(LockRule(lifetime_cents=1)).required_cents is None


def test_drip_available_at() -> None:
    p = patron(PAID, pledge_start=datetime(2024, 1, 31, 9, tzinfo=UTC))
    d = see(LockRule(drip_months=5), p)
    assert (d.reason, d.available_at) == ("drip_not_reached", datetime(2024, 6, 30, 9, tzinfo=UTC))
    assert d.missing is not None and "2024-06-30" in d.missing
    assert see(LockRule(drip_months=1), p, now=datetime(2024, 2, 29, 9, tzinfo=UTC)).allowed  # Jan 31 + 1 = Feb 29
    assert not see(LockRule(drip_months=1), p, now=datetime(2024, 2, 29, 8, tzinfo=UTC)).allowed
    unknown = see(LockRule(drip_months=1), patron(PAID, pledge_start=None))
    assert (unknown.reason, unknown.available_at) == ("drip_not_reached", None)


def test_decisions_use_the_closed_reason_set() -> None:
    assert "drip_not_reached" in REASONS and "comp" in REASONS and "wrong_tier" in REASONS and "not_a_member" in REASONS
    assert "lock_unavailable" in REASONS
    assert len(REASONS) == 17
    assert {"allowed", "lock_disabled", "admin_bypass", "comp", "public"} == ALLOWING_REASONS


# -- explain_steps -----------------------------------------------------------------------------------------------


def test_explain_steps_follow_decide() -> None:
    p = patron(PAID, **DECLINED)
    steps = explain_steps(
        LockRule(min_cents=500, lifetime_cents=6000),
        Viewer(authenticated=True, linked=True, patron=p),
        PolicySettings(),
        NOW,
        tiers=TIERS,
    )
    text = "\n".join(steps)
    assert "linked" in steps[0]
    assert "declined_patron" in text and "'grace' policy keeps access for 7 day(s)" in text
    assert "Entitlement: grace until 2024-06-19" in text
    assert "at least 5.00 a month; the entitlement is 10.00 a month: met" in text
    assert "lifetime support of at least 60.00" in text and "not met" in steps[-2]
    assert steps[-1].startswith("Result: denied, reason 'lifetime_too_low'")


@pytest.mark.parametrize(
    ("viewer", "rule", "needle"),
    [
        (Viewer(authenticated=False, linked=False), LockRule(), "not signed in"),
        (Viewer(authenticated=True, linked=False), LockRule(), "not linked"),
        (Viewer(authenticated=True, linked=True, is_admin=True), LockRule(), "admin"),
        (Viewer(authenticated=True, linked=True), LockRule(enabled=False), "disabled"),
        (Viewer(authenticated=True, linked=True, patron=patron(PAID)), LockRule(), "no condition"),
        (
            Viewer(
                authenticated=True, linked=True, patron=patron(PAID, missing_runs=9, missing_since=NOW, held_run_id=3)
            ),
            LockRule(),
            "held for approval",
        ),
        (
            Viewer(authenticated=True, linked=True, patron=patron(PAID, entitled_tier_ids=())),
            LockRule(tier_ids=("t5",)),
            "no known tier but 10.00 a month",
        ),
        (Viewer(authenticated=True, linked=True, patron=patron(PAID)), LockRule(drip_months=100), "drip_not_reached"),
    ],
)
def test_explain_steps_cover_each_branch(viewer: Viewer, rule: LockRule, needle: str) -> None:
    steps = explain_steps(rule, viewer, PolicySettings(), NOW, tiers=TIERS)
    decision = decide(rule, viewer, PolicySettings(), NOW, tiers=TIERS)
    assert any(needle in step for step in steps), steps
    assert steps[-1].startswith(f"Result: {'allowed' if decision.allowed else 'denied'}, reason {decision.reason!r}")


def test_every_basis_has_an_explanation() -> None:
    for case in ENTITLEMENT_CASES:
        p = patron(PAID, **case[1])
        steps = explain_steps(
            LockRule(), Viewer(authenticated=True, linked=True, patron=p), PolicySettings(**case[2]), NOW
        )
        policy = next(step for step in steps if step.startswith("Policy: "))
        assert policy != f"Policy: {case[3].split()[1]}.", policy  # an English sentence, not the machine basis


# -- settings and rule validation ----------------------------------------------------------------------------------


def test_settings_defaults_and_round_trip() -> None:
    s = PolicySettings()
    assert s.to_dict() == {
        "declined": "grace",
        "declined_grace_days": 7,
        "cancelled": "paid_period",
        "first_charge": "entitled_at_once",
        "count_free_trials": True,
        "count_gifted": True,
        "missing_runs": 2,
        "missing_hours": 48,
        "breaker_min_patrons": 25,
        "breaker_fraction": 0.1,
    }
    assert PolicySettings.from_dict({}) == s
    custom = PolicySettings(declined="restrict", missing_hours=None, breaker_fraction=1)
    assert custom.breaker_fraction == 1.0 and isinstance(custom.breaker_fraction, float)
    assert PolicySettings.from_dict(custom.to_dict()) == custom


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"declined": "forgive"}, "declined"),
        ({"declined_grace_days": -1}, "declined_grace_days"),
        ({"declined_grace_days": "7"}, "'7'"),
        ({"declined_grace_days": 10**9}, "declined_grace_days"),
        ({"cancelled": "never"}, "cancelled"),
        ({"first_charge": None}, "first_charge"),
        ({"count_free_trials": "yes"}, "count_free_trials"),
        ({"count_gifted": 1}, "count_gifted"),
        ({"missing_runs": 0}, "missing_runs"),
        ({"missing_runs": True}, "missing_runs"),
        ({"missing_hours": 0}, "missing_hours"),
        ({"breaker_min_patrons": -5}, "breaker_min_patrons"),
        ({"breaker_fraction": 0}, "breaker_fraction"),
        ({"breaker_fraction": 1.5}, "breaker_fraction"),
        ({"breaker_fraction": "0.1"}, "breaker_fraction"),
        ({"grace_days": 3}, "unknown key(s): grace_days"),
    ],
)
def test_settings_validation_names_the_key(data: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError, match="PolicySettings") as info:
        PolicySettings.from_dict(data)
    assert needle in str(info.value)


def test_settings_from_dict_needs_a_mapping() -> None:
    with pytest.raises(ValueError, match="mapping"):
        PolicySettings.from_dict([("declined", "grace")])  # type: ignore[arg-type]


def test_breaker() -> None:
    s = PolicySettings()
    assert not s.breaker_trips(25, 100) and s.breaker_trips(26, 100)
    assert not s.breaker_trips(100, 1000) and s.breaker_trips(101, 1000)


def test_rule_round_trip_and_date_parsing() -> None:
    rule = LockRule(
        min_cents=500,
        tier_ids=("t5", "t10"),
        lifetime_cents=0,
        patron_since_before=datetime(2024, 1, 1, tzinfo=UTC),
        drip_months=3,
        enabled=False,
        combine="any",
    )
    data = rule.to_dict()
    assert data["tier_ids"] == ["t5", "t10"] and data["patron_since_before"] == "2024-01-01T00:00:00+00:00"
    assert LockRule.from_dict(data) == rule
    assert LockRule.from_dict({}) == LockRule()
    assert LockRule.from_dict({"patron_since_before": "2024-01-01"}).patron_since_before == datetime(
        2024, 1, 1, tzinfo=UTC
    )
    assert LockRule.from_dict({"patron_since_before": date(2024, 1, 1)}).patron_since_before == datetime(
        2024, 1, 1, tzinfo=UTC
    )
    assert LockRule.from_dict({"patron_since_before": "2024-01-01T05:00:00+05:00"}).patron_since_before == datetime(
        2024, 1, 1, tzinfo=UTC
    )
    assert LockRule(tier_ids=["a"]).tier_ids == ("a",)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"min_cents": -1}, "min_cents"),
        ({"min_cents": 1.5}, "min_cents"),
        ({"lifetime_cents": -100}, "lifetime_cents"),
        ({"tier_ids": "t5"}, "tier_ids"),
        ({"tier_ids": ["t5", ""]}, "tier_ids"),
        ({"tier_ids": [5]}, "tier_ids"),
        ({"patron_since_before": "last tuesday"}, "patron_since_before"),
        ({"patron_since_before": 20240101}, "patron_since_before"),
        ({"drip_months": -1}, "drip_months"),
        ({"drip_months": 5000}, "drip_months"),
        ({"enabled": "no"}, "enabled"),
        ({"combine": "some"}, "combine"),
        ({"min_cent": 5}, "unknown key(s): min_cent"),
    ],
)
def test_rule_validation_names_the_problem(data: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError, match="LockRule") as info:
        LockRule.from_dict(data)
    assert needle in str(info.value)


def test_rule_rejects_naive_datetime_in_code() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        LockRule(patron_since_before=datetime(2024, 1, 1))


def test_values_are_frozen() -> None:
    with pytest.raises(AttributeError):
        PolicySettings().declined = "restrict"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        LockRule().min_cents = 5  # type: ignore[misc]
