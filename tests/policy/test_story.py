"""The explainer's story: the pledge, what happened to it, and the lock, in plain sentences, for each thing the policy
can make of a pledge (the entitlement's basis) and each kind of decision."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from flask_patronlock.explain import describe_rule
from flask_patronlock.patron import Patron
from flask_patronlock.policy import LockRule, PolicySettings, Viewer, decide, entitlement
from flask_patronlock.story import story
from tests.helpers.constants import GOLD, SILVER
from tests.helpers.patrons import patron

TIERS = {t.id: t for t in (SILVER, GOLD)}
MARCH_3 = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)
DEC_1 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
GOLD_LOCK = LockRule(tier_ids=(GOLD.id,))


def tell(who: Patron | None, rule: LockRule = GOLD_LOCK, *, now: datetime, policy: PolicySettings | None = None,
         linked: bool = True, authenticated: bool = True, lock: str = "Masterclass") -> str:  # fmt: skip
    policy = policy or PolicySettings()
    viewer = Viewer(authenticated=authenticated, linked=linked, patron=who)
    decision = decide(rule, viewer, policy, now, tiers=TIERS)
    return story(
        who="Sam", lock=lock, needs=describe_rule(rule, TIERS), decision=decision, patron=who,
        authenticated=authenticated, linked=linked, entitlement=entitlement(who, policy, now), policy=policy,
        tiers=TIERS, now=now,
    )  # fmt: skip


def sam(**kw: Any) -> Patron:
    return patron(pledge_start=MARCH_3, full_name="Sam", **kw)


def test_the_issue_s_example_reads_as_written() -> None:
    declined = sam(patron_status="declined_patron", last_charge_status="Declined", last_charge_date=DEC_1,
                   declined_since=DEC_1)  # fmt: skip
    text = tell(declined, now=DEC_1 + timedelta(days=10), policy=PolicySettings(declined="grace"))
    assert text == (
        "Sam pledged Silver (5.00 a month) on 3 March 2026. Their payment on 1 December 2026 was declined; under "
        "your 7-day grace they kept access until 8 December 2026, and have none until a payment goes through. So "
        "they can't see 'Masterclass' for now; it needs tier Gold (10.00 a month) or higher."
    )


def test_inside_the_grace_the_story_says_keep_not_kept() -> None:
    declined = sam(patron_status="declined_patron", last_charge_status="Declined", last_charge_date=DEC_1,
                   declined_since=DEC_1)  # fmt: skip
    text = tell(declined, LockRule(tier_ids=(SILVER.id,)), now=DEC_1 + timedelta(days=2))
    assert "under your 7-day grace they keep access until 8 December 2026" in text
    assert text.endswith("They can see 'Masterclass', which needs tier Silver (5.00 a month) or higher.")


@pytest.mark.parametrize(
    ("fields", "policy", "expected"),
    [
        ({"last_charge_date": DEC_1}, PolicySettings(), "Their last payment on 1 December 2026 went through."),
        ({"patron_status": "declined_patron", "last_charge_status": "Declined", "last_charge_date": DEC_1,
          "declined_since": DEC_1}, PolicySettings(declined="restrict"),
         "Their payment on 1 December 2026 was declined; under your policy access stops until a payment goes through."),
        ({"patron_status": "declined_patron", "last_charge_status": "Declined", "last_charge_date": DEC_1,
          "declined_since": DEC_1}, PolicySettings(declined="retry_window"),
         "Patreon retries through the month, and under your policy they keep access until 1 January 2027."),
        ({"patron_status": "former_patron", "last_charge_status": "Paid", "last_charge_date": DEC_1,
          "paid_through": DEC_1 + timedelta(days=31)}, PolicySettings(),
         "They cancelled; they keep access until 1 January 2027, the end of what they paid for."),
        ({"patron_status": "former_patron", "last_charge_status": "Paid", "last_charge_date": DEC_1},
         PolicySettings(cancelled="at_once"), "Their membership has ended."),
        ({"patron_status": "active_patron", "last_charge_status": "Fraud", "last_charge_date": DEC_1},
         PolicySettings(), "Patreon marked their payment on 1 December 2026 as fraud, so they have no access."),
        ({"is_free_trial": True, "last_charge_status": None, "last_charge_date": None}, PolicySettings(),
         "Theirs is a free trial, which your policy counts."),
        ({"patron_status": None, "entitled_cents": 0, "entitled_tier_ids": ()}, PolicySettings(),
         "Sam follows the campaign on Patreon but has never pledged."),
    ],
)  # fmt: skip
def test_what_happened_to_the_pledge(fields: dict[str, Any], policy: PolicySettings, expected: str) -> None:
    assert expected in tell(sam(**fields), now=DEC_1 + timedelta(days=2), policy=policy)


@pytest.mark.parametrize(
    ("rule", "viewer", "expected"),
    [
        (GOLD_LOCK, {"authenticated": False, "linked": False},
         "Sam is not signed in on this site. They can't see 'Masterclass' until they sign in; it needs tier Gold"),
        (GOLD_LOCK, {"linked": False}, "Sam has not connected a Patreon account on this site"),
        (LockRule(enabled=False), {}, "Everyone can see 'Masterclass': the lock is switched off."),
        (LockRule(drip_months=12), {}, "They can't see 'Masterclass' yet: it needs pledging for at least 12 months, "
                                       "so it opens for them on 3 March 2027."),
        (LockRule(patron_since_before=datetime(2026, 1, 1, tzinfo=UTC)), {},
         "They can't see 'Masterclass' because it needs pledging since before 1 January 2026."),
        (LockRule(lifetime_cents=10_000), {},
         "They can't see 'Masterclass' because it needs lifetime support of at least 100.00."),
    ],
)  # fmt: skip
def test_the_lock_sentence(rule: LockRule, viewer: dict[str, bool], expected: str) -> None:
    who = None if viewer.get("linked") is False else sam(last_charge_date=DEC_1)
    assert expected in tell(who, rule, now=DEC_1 + timedelta(days=2), **viewer)


def test_no_story_has_an_id_an_iso_date_a_code_or_a_gap() -> None:
    now = DEC_1 + timedelta(days=2)
    shapes = [GOLD_LOCK, LockRule(tier_ids=(SILVER.id,)), LockRule(min_cents=700), LockRule(lifetime_cents=1),
              LockRule(drip_months=1), LockRule(patron_since_before=MARCH_3), LockRule(enabled=False),
              LockRule(tier_ids=("gone",)), LockRule(min_cents=100, drip_months=2, combine="any")]  # fmt: skip
    pledges = [sam(), sam(patron_status="former_patron"), sam(patron_status="declined_patron",
               last_charge_status="Declined", declined_since=DEC_1), sam(patron_status=None), None]  # fmt: skip
    for rule in shapes:
        for who in pledges:
            for linked in (True, False):
                text = tell(who, rule, now=now, linked=linked and who is not None)
                assert not re.search(r"\d{4}-\d{2}-\d{2}|\bt\d+\b|\bgone\b|_|\{|\s[.,;:]|\bNone\b|  ", text), text
