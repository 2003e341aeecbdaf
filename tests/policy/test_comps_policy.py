"""Comps in the pure decision: ``policy.decide`` with :attr:`Viewer.comps` (no database, no Flask)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flask_patronlock.patron import Patron
from flask_patronlock.policy import Comp, LockRule, PolicySettings, Viewer, decide, explain_steps
from tests.policy.test_policy_properties import TIERS, moments, policies, rules, tier_maps, viewers

NOW = datetime(2026, 3, 15, 12, tzinfo=UTC)
SETTINGS = PolicySettings()
LOCKS = ["masterclass", "premium"]

comps = st.builds(
    Comp,
    lock=st.sampled_from(LOCKS),
    expires_at=st.none() | moments,
    id=st.integers(min_value=1, max_value=99),
) | st.builds(
    Comp,
    tier_id=st.sampled_from([*TIERS, "unknown"]),
    expires_at=st.none() | moments,
    id=st.integers(min_value=1, max_value=99),
)
comp_lists = st.lists(comps, max_size=4).map(tuple)
lock_names = st.none() | st.sampled_from(LOCKS)


def comped(viewer: Viewer, found: tuple[Comp, ...]) -> Viewer:
    return dataclasses.replace(viewer, comps=found)


@given(rules, viewers, comp_lists, policies, moments, tier_maps, lock_names)
def test_a_comp_never_reduces_access(
    rule: LockRule, viewer: Viewer, found: tuple[Comp, ...], settings: PolicySettings, now: datetime, tiers: Any,
    lock: str | None,
) -> None:
    without = decide(rule, viewer, settings, now, tiers=tiers, lock=lock)
    with_comps = decide(rule, comped(viewer, found), settings, now, tiers=tiers, lock=lock)
    if without.allowed:
        assert with_comps == without  # an allowing decision is left exactly as it was
    else:
        assert with_comps == without or (with_comps.allowed and with_comps.reason == "comp")
    if with_comps.reason == "comp":
        comp = with_comps.comp
        assert comp is not None and comp in found and comp.active_at(now)  # never past its end
        assert viewer.authenticated
    steps = explain_steps(rule, comped(viewer, found), settings, now, tiers=tiers, lock=lock)
    assert steps[-1].startswith(f"Result: {'allowed' if with_comps.allowed else 'denied'}, reason "
                                f"{with_comps.reason!r}")


@given(rules, viewers, comp_lists, policies, moments, tier_maps, lock_names)
def test_an_ended_comp_counts_for_nothing(
    rule: LockRule, viewer: Viewer, found: tuple[Comp, ...], settings: PolicySettings, now: datetime, tiers: Any,
    lock: str | None,
) -> None:
    ended = tuple(dataclasses.replace(c, expires_at=now - timedelta(microseconds=i)) for i, c in enumerate(found))
    assert decide(rule, comped(viewer, ended), settings, now, tiers=tiers, lock=lock) == decide(
        rule, viewer, settings, now, tiers=tiers, lock=lock
    )


@given(rules, viewers, policies, moments, tier_maps, st.none() | moments)
def test_a_lock_comp_opens_its_lock_for_a_signed_in_viewer(
    rule: LockRule, viewer: Viewer, settings: PolicySettings, now: datetime, tiers: Any, ends: datetime | None
) -> None:
    comp = Comp(lock="masterclass", expires_at=ends, id=1)
    decision = decide(rule, comped(viewer, (comp,)), settings, now, tiers=tiers, lock="masterclass")
    without = decide(rule, viewer, settings, now, tiers=tiers, lock="masterclass")
    assert decision.allowed is (without.allowed or (viewer.authenticated and (ends is None or now < ends)))
    # ... and no other lock, nor a one-off rule
    other = decide(rule, comped(viewer, (comp,)), settings, now, tiers=tiers, lock="premium")
    assert other == decide(rule, viewer, settings, now, tiers=tiers, lock="premium")
    assert decide(rule, comped(viewer, (comp,)), settings, now, tiers=tiers) == decide(
        rule, viewer, settings, now, tiers=tiers
    )


def paid(tier_id: str, cents: int, **kw: Any) -> Patron:
    values: dict[str, Any] = dict(
        member_id="m", patreon_user_id="pu", patron_status="active_patron", last_charge_status="Paid",
        last_charge_date=NOW - timedelta(days=3), entitled_cents=cents, entitled_tier_ids=(tier_id,),
        lifetime_cents=cents * 3, pledge_start=NOW - timedelta(days=90), pledge_cadence=1, observed_at=NOW,
    )
    values.update(kw)
    return Patron(**values)


amount_rules = st.builds(
    LockRule,
    min_cents=st.none() | st.sampled_from([0, 100, 500, 700, 1000, 1500, 2000, 5000]),
    tier_ids=st.lists(st.sampled_from([*TIERS, "unknown"]), unique=True, max_size=2).map(tuple),
    combine=st.sampled_from(["all", "any"]),
)


@given(amount_rules, st.sampled_from(sorted(TIERS)))
def test_a_tier_comp_meets_tier_and_amount_conditions_as_that_tier_would(rule: LockRule, tier_id: str) -> None:
    """Someone with a comp for tier T and nothing else passes a tier/amount rule exactly when a paying patron of
    exactly T would."""
    comp = Comp(tier_id=tier_id, id=1)
    follower = paid("free", 0, patron_status=None, last_charge_status=None)
    for base in (Viewer(authenticated=True, linked=False), Viewer(authenticated=True, linked=True),
                 Viewer(authenticated=True, linked=True, patron=follower)):
        if base.patron is not None and "free" in rule.tier_ids:
            continue  # a lock on the $0 tier admits free members by itself (issue 18): nothing for a comp to add
        assert not decide(rule, base, SETTINGS, NOW, tiers=TIERS).allowed  # nothing but the comp
        with_comp = decide(rule, comped(base, (comp,)), SETTINGS, NOW, tiers=TIERS)
        patron_of_t = decide(rule, Viewer(authenticated=True, linked=True,
                                          patron=paid(tier_id, TIERS[tier_id].amount_cents)), SETTINGS, NOW,
                             tiers=TIERS)
        assert with_comp.allowed is patron_of_t.allowed
        if with_comp.allowed:
            assert (with_comp.reason, with_comp.comp) == ("comp", comp)


def test_a_tier_comp_adds_to_what_a_patron_already_has() -> None:
    silver = Viewer(authenticated=True, linked=True, patron=paid("t5", 500))
    gold_lock = LockRule(tier_ids=("t10",))
    assert decide(gold_lock, silver, SETTINGS, NOW, tiers=TIERS).reason == "amount_too_low"
    with_gold = comped(silver, (Comp(tier_id="t10", id=7),))
    decision = decide(gold_lock, with_gold, SETTINGS, NOW, tiers=TIERS)
    assert (decision.allowed, decision.reason, decision.comp) == (True, "comp", Comp(tier_id="t10", id=7))
    assert decision.entitlement is not None and decision.entitlement.tier_ids == ("t5",)  # the patron's own
    # a lower tier's comp does not help a Gold lock, and the rest of the rule is still the patron's own
    assert not decide(gold_lock, comped(silver, (Comp(tier_id="t5", id=8),)), SETTINGS, NOW, tiers=TIERS).allowed
    veteran = LockRule(tier_ids=("t10",), lifetime_cents=100_000)
    assert decide(veteran, with_gold, SETTINGS, NOW, tiers=TIERS).reason == "amount_too_low"  # still denied ...
    assert decide(veteran, with_gold, SETTINGS, NOW, tiers=TIERS).comp is None  # ... and no comp named


def test_the_comp_that_lasts_longest_is_named() -> None:
    viewer = Viewer(authenticated=True, linked=False, comps=(
        Comp(tier_id="t20", expires_at=NOW + timedelta(days=3), id=1),
        Comp(tier_id="t10", expires_at=NOW + timedelta(days=30), id=2),
        Comp(tier_id="t5", id=3),  # never ends, but does not meet the rule
        Comp(lock="premium", id=4),  # another lock's
    ))
    decision = decide(LockRule(tier_ids=("t10",)), viewer, SETTINGS, NOW, tiers=TIERS, lock="masterclass")
    assert decision.comp is not None and decision.comp.id == 2
    lock_comp = dataclasses.replace(viewer, comps=(*viewer.comps, Comp(lock="masterclass", expires_at=NOW
                                                                       + timedelta(hours=1), id=5)))
    decision = decide(LockRule(tier_ids=("t10",)), lock_comp, SETTINGS, NOW, tiers=TIERS, lock="masterclass")
    assert decision.comp is not None and decision.comp.id == 5  # one for the lock itself comes first


def test_a_comp_ends_at_its_moment_exactly() -> None:
    ends = NOW + timedelta(days=1)
    viewer = Viewer(authenticated=True, linked=False, comps=(Comp(lock="masterclass", expires_at=ends, id=1),))
    rule = LockRule(tier_ids=("t10",))
    assert decide(rule, viewer, SETTINGS, ends - timedelta(microseconds=1), tiers=TIERS, lock="masterclass").allowed
    assert decide(rule, viewer, SETTINGS, ends, tiers=TIERS, lock="masterclass").reason == "not_linked"
    steps = explain_steps(rule, viewer, SETTINGS, ends, tiers=TIERS, lock="masterclass")
    assert any("ended" in step for step in steps)


def test_an_anonymous_viewer_never_uses_a_comp() -> None:
    viewer = Viewer(authenticated=False, linked=False, comps=(Comp(lock="masterclass", id=1),))
    assert decide(LockRule(), viewer, SETTINGS, NOW, lock="masterclass").reason == "anonymous"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of lock and tier_id"),
        ({"lock": "a", "tier_id": "t5"}, "exactly one of lock and tier_id"),
        ({"lock": ""}, "Comp.lock must be"),
        ({"tier_id": "t5", "expires_at": datetime(2027, 1, 4)}, "timezone-aware"),
    ],
)
def test_a_comp_is_checked_when_made(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Comp(**kwargs)
