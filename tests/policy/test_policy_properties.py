"""Property tests for flask_patronlock.policy over statuses, charges, dates, cadences, policies and rules."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from flask_patronlock.patreon.types import CHARGE_STATUSES, PATRON_STATUSES, TierSnapshot
from flask_patronlock.patron import Patron
from flask_patronlock.policy import (
    ALLOWING_REASONS,
    REASONS,
    LockRule,
    PolicySettings,
    Viewer,
    decide,
    entitlement,
    explain_steps,
    settings_fingerprint,
)

TIERS = {
    "free": TierSnapshot(id="free", amount_cents=0),
    "t5": TierSnapshot(id="t5", amount_cents=500),
    "t10": TierSnapshot(id="t10", amount_cents=1000),
    "t20": TierSnapshot(id="t20", amount_cents=2000),
}
TIER_IDS = [*TIERS, "unknown"]

moments = st.datetimes(min_value=datetime(2015, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC))
maybe_moment = st.none() | moments
cents = st.integers(min_value=0, max_value=100_000)
rarely = st.sampled_from([False, False, False, True])
tier_ids = st.lists(st.sampled_from(TIER_IDS), unique=True, max_size=3).map(tuple)

patrons = st.builds(
    Patron,
    member_id=st.just("m"),
    patron_status=st.sampled_from([*PATRON_STATUSES, *PATRON_STATUSES, None, "weird"]),
    last_charge_status=st.sampled_from([*CHARGE_STATUSES, None]),
    last_charge_date=maybe_moment,
    entitled_cents=cents,
    entitled_tier_ids=tier_ids,
    lifetime_cents=cents,
    pledge_start=maybe_moment,
    pledge_cadence=st.sampled_from([None, 0, 1, 3, 6, 12]),
    is_free_trial=rarely,
    is_gifted=rarely,
    observed_at=maybe_moment,
    last_entitled_cents=st.just(0) | cents,
    last_entitled_tier_ids=tier_ids,
    next_charge_date=maybe_moment,
    paid_through=maybe_moment,
    declined_since=maybe_moment,
    missing_since=st.none() | st.none() | moments,
    missing_runs=st.integers(min_value=0, max_value=4),
    held_run_id=st.none() | st.integers(min_value=1, max_value=9),
)

policies = st.builds(
    PolicySettings,
    declined=st.sampled_from(["restrict", "grace", "retry_window"]),
    declined_grace_days=st.integers(min_value=0, max_value=3650),
    cancelled=st.sampled_from(["paid_period", "at_once"]),
    first_charge=st.sampled_from(["entitled_at_once", "after_first_charge"]),
    count_free_trials=st.booleans(),
    count_gifted=st.booleans(),
    missing_runs=st.integers(min_value=1, max_value=5),
    missing_hours=st.none() | st.integers(min_value=1, max_value=87600),
)

rules = st.builds(
    LockRule,
    min_cents=st.none() | cents,
    tier_ids=tier_ids,
    tier_match=st.sampled_from(["or_higher", "exact"]),
    lifetime_cents=st.none() | cents,
    patron_since_before=maybe_moment,
    drip_months=st.none() | st.integers(min_value=0, max_value=1200),
    patrons_at_publish=rarely,
    free_members=rarely,
    public_after=st.none() | st.none() | moments,
    enabled=rarely.map(lambda off: not off),
    combine=st.sampled_from(["all", "any"]),
)

viewers = st.builds(
    Viewer,
    authenticated=st.booleans(),
    linked=st.booleans(),
    is_admin=st.booleans(),
    patron=st.none() | patrons,
)

tier_maps = st.sampled_from([TIERS, {}, {"t10": TIERS["t10"]}, None])


def linked(patron: Patron) -> Viewer:
    return Viewer(authenticated=True, linked=True, patron=patron)


@given(rules, viewers, policies, moments, tier_maps)
def test_decide_never_raises_and_speaks_in_reasons(
    rule: LockRule, viewer: Viewer, settings: PolicySettings, now: datetime, tiers: Any
) -> None:
    decision = decide(rule, viewer, settings, now, tiers=tiers)
    assert decision.reason in REASONS
    assert decision.allowed is (decision.reason in ALLOWING_REASONS)
    assert decision.required_tier_ids == rule.tier_ids
    steps = explain_steps(rule, viewer, settings, now, tiers=tiers)
    assert steps[-1].startswith(f"Result: {'allowed' if decision.allowed else 'denied'}, reason {decision.reason!r}")
    if decision.available_at is not None:
        assert decision.reason == "drip_not_reached" and decision.available_at > now


@given(patrons, policies, moments)
def test_entitlement_amounts(patron: Patron, settings: PolicySettings, now: datetime) -> None:
    ent = entitlement(patron, settings, now)
    assert ent.lifetime_cents == patron.lifetime_cents
    if ent.entitled:
        if patron.entitled_tier_ids:  # the report names tiers: it is what the patron is owed
            assert ent.tier_ids == patron.entitled_tier_ids
            reported = patron.entitled_cents
        else:  # no tier reported (zeroed, blanked): what was paid for, when anything was
            assert ent.tier_ids in ((), patron.last_entitled_tier_ids)
            reported = max(patron.entitled_cents, patron.last_entitled_cents)
        assert 0 <= ent.monthly_cents <= reported
        if patron.pledge_cadence == 12:
            assert ent.monthly_cents in (patron.entitled_cents // 12, reported // 12)
    else:
        assert (ent.monthly_cents, ent.tier_ids, ent.until) == (0, (), None)
    assert (ent.state == "grace") or ent.until is None


@given(rules, patrons, policies, moments, tier_maps, cents)
def test_more_cents_never_denies(
    rule: LockRule, patron: Patron, settings: PolicySettings, now: datetime, tiers: Any, extra: int
) -> None:
    richer = patron.replace(entitled_cents=patron.entitled_cents + extra)
    if decide(rule, linked(patron), settings, now, tiers=tiers).allowed:
        assert decide(rule, linked(richer), settings, now, tiers=tiers).allowed


def _generous(settings: PolicySettings, data: st.DataObject) -> PolicySettings:
    """A policy at least as generous as ``settings`` along one or more dimensions."""
    changes: dict[str, Any] = {}
    if settings.declined == "restrict":
        changes["declined"] = data.draw(st.sampled_from(["restrict", "grace", "retry_window"]))
    elif settings.declined == "grace":
        changes["declined"] = data.draw(st.sampled_from(["grace", "retry_window"]))
    # more days, but never past the 3650 PolicySettings accepts
    changes["declined_grace_days"] = min(settings.declined_grace_days + data.draw(st.integers(0, 30)), 3650)
    if settings.cancelled == "at_once":
        changes["cancelled"] = data.draw(st.sampled_from(["at_once", "paid_period"]))
    if settings.first_charge == "after_first_charge":
        changes["first_charge"] = data.draw(st.sampled_from(["after_first_charge", "entitled_at_once"]))
    changes["count_free_trials"] = settings.count_free_trials or data.draw(st.booleans())
    changes["count_gifted"] = settings.count_gifted or data.draw(st.booleans())
    changes["missing_runs"] = settings.missing_runs + data.draw(st.integers(0, 3))
    if settings.missing_hours is not None:
        changes["missing_hours"] = data.draw(st.none() | st.integers(settings.missing_hours, 87600))
    return dataclasses.replace(settings, **changes)


@given(rules, patrons, policies, moments, tier_maps, st.data())
def test_a_more_generous_policy_never_denies_what_a_stricter_allows(
    rule: LockRule, patron: Patron, strict: PolicySettings, now: datetime, tiers: Any, data: st.DataObject
) -> None:
    generous = _generous(strict, data)
    if entitlement(patron, strict, now).entitled:
        assert entitlement(patron, generous, now).entitled
    if decide(rule, linked(patron), strict, now, tiers=tiers).allowed:
        assert decide(rule, linked(patron), generous, now, tiers=tiers).allowed


@given(patrons, policies, moments)
def test_a_rule_without_conditions_allows_every_entitled_patron(
    patron: Patron, settings: PolicySettings, now: datetime
) -> None:
    ent = entitlement(patron, settings, now)
    decision = decide(LockRule(), linked(patron), settings, now)
    assert decision.allowed is ent.entitled
    assert decision.entitlement == ent


@given(rules, patrons, policies, moments, tier_maps)
def test_restricted_former_and_none_are_never_let_in_by_a_rule(
    rule: LockRule, patron: Patron, settings: PolicySettings, now: datetime, tiers: Any
) -> None:
    rule = dataclasses.replace(rule, public_after=None)  # an early-access lock ends up open to everyone
    ent = entitlement(patron, settings, now)
    state = ent.state
    decision = decide(rule, linked(patron), settings, now, tiers=tiers)
    admits_free = rule.free_members or any(
        t in (tiers or {}) and tiers[t].amount_cents == 0 for t in rule.tier_ids
    )
    if state in ("restricted", "former", "none") and not admits_free:
        expected = {"restricted": "payment_declined", "former": "former_patron", "none": "not_a_patron"}[state]
        assert decision.reason == ("lock_disabled" if not rule.enabled else expected)
    elif state in ("restricted", "former", "none") and rule.enabled and decision.allowed:
        # a lock that admits free members holds a member owed nothing to its conditions as a $0 member, and only
        # a member still on Patreon's list: one gone from complete sync runs is denied as before
        assert ent.basis != "missing" and decision.entitlement is not None
        assert decision.entitlement.monthly_cents == 0
        assert all(tiers[t].amount_cents == 0 for t in decision.entitlement.tier_ids)
    admin = decide(rule, Viewer(authenticated=True, linked=True, is_admin=True, patron=patron), settings, now)
    assert admin.allowed


@given(patrons, policies, moments, st.integers(min_value=1, max_value=10**8))
def test_access_only_ever_ends_as_time_passes(
    patron: Patron, settings: PolicySettings, now: datetime, seconds: int
) -> None:
    earlier, later = entitlement(patron, settings, now), entitlement(patron, settings, now + timedelta(seconds=seconds))
    if later.entitled:
        assert earlier.entitled
    if earlier.state == "restricted":
        assert later.state == "restricted"
    if earlier.state == "grace" and earlier.until is not None and now + timedelta(seconds=seconds) >= earlier.until:
        assert later.state in ("restricted", "former")
    # What the store's settled path relies on: before ``until`` nothing about access changes with time.
    if earlier.entitled and (earlier.until is None or now + timedelta(seconds=seconds) < earlier.until):
        assert later.entitled and later.until == earlier.until


@given(patrons, policies, moments, st.integers(min_value=0, max_value=10**6), st.floats(min_value=0.01, max_value=1))
def test_only_the_fingerprinted_settings_change_an_entitlement(
    patron: Patron, settings: PolicySettings, now: datetime, min_patrons: int, fraction: float
) -> None:
    """Patron.access_policy records settings_fingerprint(); the settings it leaves out must not matter."""
    other = dataclasses.replace(settings, breaker_min_patrons=min_patrons, breaker_fraction=fraction)
    assert settings_fingerprint(other) == settings_fingerprint(settings)
    assert entitlement(patron, other, now) == entitlement(patron, settings, now)


@given(rules, patrons, policies, moments, tier_maps, st.integers(min_value=1, max_value=10**8))
def test_without_drip_a_later_moment_never_grants_more(
    rule: LockRule, patron: Patron, settings: PolicySettings, now: datetime, tiers: Any, seconds: int
) -> None:
    rule = dataclasses.replace(rule, drip_months=None, public_after=None)  # both open with time, by design
    if decide(rule, linked(patron), settings, now + timedelta(seconds=seconds), tiers=tiers).allowed:
        assert decide(rule, linked(patron), settings, now, tiers=tiers).allowed


@given(rules, patrons, policies, moments, tier_maps)
def test_any_is_at_least_as_permissive_as_all(
    rule: LockRule, patron: Patron, settings: PolicySettings, now: datetime, tiers: Any
) -> None:
    all_rule, any_rule = dataclasses.replace(rule, combine="all"), dataclasses.replace(rule, combine="any")
    if decide(all_rule, linked(patron), settings, now, tiers=tiers).allowed:
        assert decide(any_rule, linked(patron), settings, now, tiers=tiers).allowed


@given(moments, st.integers(min_value=0, max_value=1200), moments)
def test_drip_opens_at_available_at(start: datetime, months: int, now: datetime) -> None:
    patron = Patron(member_id="m", patron_status="active_patron", last_charge_status="Paid", pledge_start=start)
    rule, settings = LockRule(drip_months=months), PolicySettings()
    decision = decide(rule, linked(patron), settings, now)
    if not decision.allowed:
        assert decision.reason == "drip_not_reached"
        assert decision.available_at is not None and decision.available_at > now
        assert decide(rule, linked(patron), settings, decision.available_at).allowed
        assert not decide(rule, linked(patron), settings, decision.available_at - timedelta(microseconds=1)).allowed


@given(policies, rules)
def test_settings_and_rules_survive_json(settings: PolicySettings, rule: LockRule) -> None:
    assert PolicySettings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings
    assert LockRule.from_dict(json.loads(json.dumps(rule.to_dict()))) == rule


@given(rules, patrons, policies, moments, tier_maps)
def test_exact_tiers_never_allow_more_than_the_ladder(
    rule: LockRule, patron: Patron, settings: PolicySettings, now: datetime, tiers: Any
) -> None:
    exact, ladder = dataclasses.replace(rule, tier_match="exact"), dataclasses.replace(rule, tier_match="or_higher")
    decision = decide(exact, linked(patron), settings, now, tiers=tiers)
    if decision.allowed:
        assert decide(ladder, linked(patron), settings, now, tiers=tiers).allowed
    if decision.reason == "wrong_tier":  # only an exact lock says so, and only for an entitled patron
        assert decision.entitlement is not None and decision.entitlement.entitled
        assert not set(decision.entitlement.tier_ids) & set(rule.tier_ids)
    assert decide(ladder, linked(patron), settings, now, tiers=tiers).reason != "wrong_tier"


@given(rules, viewers, policies, moments, tier_maps, moments)
def test_early_access_is_the_rule_until_the_date_then_everyone(
    rule: LockRule, viewer: Viewer, settings: PolicySettings, now: datetime, tiers: Any, opens: datetime
) -> None:
    early = dataclasses.replace(rule, public_after=opens)
    plain = decide(dataclasses.replace(rule, public_after=None), viewer, settings, now, tiers=tiers)
    decision = decide(early, viewer, settings, now, tiers=tiers)
    if now >= opens:
        assert decision.allowed and decision.reason in ("public", "lock_disabled")
    else:
        assert decision == (plain if plain.allowed else dataclasses.replace(plain, public_at=opens))
    if decision.public_at is not None:
        assert not decision.allowed and decision.public_at == opens > now
        assert decide(early, viewer, settings, opens, tiers=tiers).allowed


@given(rules, patrons, policies, moments, tier_maps, moments, st.integers(min_value=0, max_value=10**8))
def test_a_later_publish_date_never_denies_what_an_earlier_allows(
    rule: LockRule, patron: Patron, settings: PolicySettings, now: datetime, tiers: Any, published: datetime,
    seconds: int,
) -> None:
    """"Patrons at the time": whoever pledged by an item's date pledged by any later item's date too; and a
    denial for the date names it."""
    rule = dataclasses.replace(rule, patrons_at_publish=True)
    earlier = decide(rule, linked(patron), settings, now, tiers=tiers, published_at=published)
    later = published + timedelta(seconds=seconds)
    if earlier.allowed:
        assert decide(rule, linked(patron), settings, now, tiers=tiers, published_at=later).allowed
    if earlier.reason == "not_patron_at_date":
        assert earlier.pledged_by in (published, rule.patron_since_before)
    without = decide(dataclasses.replace(rule, patrons_at_publish=False), linked(patron), settings, now, tiers=tiers)
    assert decide(rule, linked(patron), settings, now, tiers=tiers) == without  # no date given: not checked


@given(rules, patrons, policies, moments, tier_maps)
def test_admitting_free_members_never_denies_what_it_allowed_and_never_pays_more(
    rule: LockRule, patron: Patron, settings: PolicySettings, now: datetime, tiers: Any
) -> None:
    """free_members only widens who is held to the conditions: whatever the lock let in without it, it lets in with
    it; and a member let in only as a free member would be let in by the same rule asking no money."""
    strict, free = dataclasses.replace(rule, free_members=False), dataclasses.replace(rule, free_members=True)
    if decide(strict, linked(patron), settings, now, tiers=tiers).allowed:
        assert decide(free, linked(patron), settings, now, tiers=tiers).allowed
    decision = decide(free, linked(patron), settings, now, tiers=tiers)
    if decision.allowed and decision.entitlement is not None and not decision.entitlement.entitled:
        assert rule.min_cents in (None, 0) or rule.combine == "any"
    nobody = decide(free, Viewer(authenticated=True, linked=True), settings, now, tiers=tiers)
    assert nobody.reason == ("not_a_member" if free.enabled and (free.public_after is None or now < free.public_after)
                             else nobody.reason)
