"""The richer access rules of issue 18: exact tiers, early access (public after a date), "patrons when this was
published" per item, free members -- each alone, combined with the older conditions under ``all`` and ``any``, with
comps, and round-tripped through storage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from flask_patronlock.patreon.types import TierSnapshot
from flask_patronlock.policy import Comp, Decision, LockRule, PolicySettings, Viewer, decide, explain_steps
from tests.helpers.patrons import patron

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
MUSIC = TierSnapshot(id="music", title="Music", amount_cents=500)
COMICS = TierSnapshot(id="comics", title="Comics", amount_cents=500)
BOTH = TierSnapshot(id="both", title="Everything", amount_cents=1500)
FREE = TierSnapshot(id="free", title="Free", amount_cents=0)
TIERS = {t.id: t for t in (MUSIC, COMICS, BOTH, FREE)}
DEFAULTS = PolicySettings()


def paid(tier: TierSnapshot, **kw: Any) -> Viewer:
    """A signed-in, linked patron paying for ``tier`` since a year before NOW."""
    values: dict[str, Any] = {
        "patron_status": "active_patron",
        "last_charge_status": "Paid",
        "last_charge_date": NOW - 10 * DAY,
        "entitled_cents": tier.amount_cents,
        "entitled_tier_ids": (tier.id,),
        "pledge_start": NOW - 365 * DAY,
        "lifetime_cents": tier.amount_cents * 12,
        "paid_through": NOW + 20 * DAY,
    }
    values.update(kw)
    return Viewer(authenticated=True, linked=True, patron=patron(values))


def see(rule: LockRule, viewer: Viewer, **kw: Any) -> Decision:
    return decide(rule, viewer, DEFAULTS, kw.pop("now", NOW), tiers=kw.pop("tiers", TIERS), **kw)


# -- exact tiers -------------------------------------------------------------------------------------------------------


def test_a_music_patron_does_not_open_a_comics_only_lock() -> None:
    """The bug the issue checked: a $5 "Music" patron opened a $5 "Comics" lock."""
    ladder = LockRule(tier_ids=("comics",))
    exact = LockRule(tier_ids=("comics",), tier_match="exact")
    assert see(ladder, paid(MUSIC)).allowed  # "Comics or higher": the same price passes, as before
    denied = see(exact, paid(MUSIC))
    assert (denied.allowed, denied.reason, denied.missing) == (False, "wrong_tier", "one of tiers comics")
    assert see(exact, paid(COMICS)).reason == "allowed"


def test_exact_tiers_admit_any_of_the_set_and_nothing_dearer() -> None:
    rule = LockRule(tier_ids=("comics", "music"), tier_match="exact")
    assert see(rule, paid(MUSIC)).allowed and see(rule, paid(COMICS)).allowed
    assert see(rule, paid(BOTH)).reason == "wrong_tier"  # dearer, but not one of them
    assert see(rule, paid(COMICS, entitled_tier_ids=(), entitled_cents=5000)).reason == "wrong_tier"
    assert see(LockRule(tier_ids=("comics",), tier_match="exact"), paid(BOTH)).reason == "wrong_tier"


def test_exact_tiers_combine_with_other_conditions() -> None:
    rule = LockRule(tier_ids=("comics",), tier_match="exact", lifetime_cents=100_000)
    assert see(rule, paid(COMICS)).reason == "lifetime_too_low"
    assert see(LockRule(**{**_kw(rule), "combine": "any"}), paid(COMICS)).allowed
    assert see(LockRule(**{**_kw(rule), "combine": "any"}), paid(MUSIC)).reason == "wrong_tier"


def test_a_tier_comp_meets_an_exact_lock_only_for_its_own_tier() -> None:
    rule = LockRule(tier_ids=("comics",), tier_match="exact")
    music_fan = paid(MUSIC)
    comped = Viewer(authenticated=True, linked=True, patron=music_fan.patron, comps=(Comp(tier_id="comics"),))
    assert see(rule, comped).reason == "comp"
    other = Viewer(authenticated=True, linked=True, patron=music_fan.patron, comps=(Comp(tier_id="both"),))
    assert see(rule, other).reason == "wrong_tier"


def test_exact_tiers_explained() -> None:
    steps = explain_steps(LockRule(tier_ids=("comics",), tier_match="exact"), paid(MUSIC), DEFAULTS, NOW, tiers=TIERS)
    assert any("one of tiers comics exactly" in step and "not met" in step for step in steps)
    assert steps[-1].startswith("Result: denied, reason 'wrong_tier'")


def test_tier_match_is_stored_and_old_rules_read_as_the_ladder() -> None:
    rule = LockRule(tier_ids=("comics",), tier_match="exact")
    assert LockRule.from_dict(rule.to_dict()) == rule
    old = {"min_cents": None, "tier_ids": ["comics"], "lifetime_cents": None, "patron_since_before": None,
           "drip_months": None, "enabled": True, "combine": "all"}  # a rule stored before issue 18
    assert LockRule.from_dict(old).tier_match == "or_higher"
    with pytest.raises(ValueError, match=r"LockRule\.tier_match must be one of .or_higher., .exact."):
        LockRule.from_dict({"tier_match": "same"})


def _kw(rule: LockRule) -> dict[str, Any]:
    return {k: getattr(rule, k) for k in rule.to_dict()}


# -- early access ------------------------------------------------------------------------------------------------------

OPENS = datetime(2027, 1, 4, tzinfo=UTC)
ANONYMOUS = Viewer(authenticated=False, linked=False)


def test_early_access_lets_patrons_in_now_and_everyone_after_the_date() -> None:
    rule = LockRule(tier_ids=("comics",), public_after=OPENS)
    assert see(rule, paid(COMICS)).reason == "allowed"
    early = see(rule, ANONYMOUS)
    assert (early.allowed, early.reason, early.public_at) == (False, "anonymous", OPENS)
    assert see(rule, paid(MUSIC, entitled_cents=300, entitled_tier_ids=("free",))).public_at == OPENS
    for viewer in (ANONYMOUS, paid(MUSIC), Viewer(authenticated=True, linked=False)):
        later = see(rule, viewer, now=OPENS)
        assert (later.allowed, later.reason, later.public_at) == (True, "public", None)
    assert see(rule, ANONYMOUS, now=OPENS - timedelta(microseconds=1)).reason == "anonymous"


def test_early_access_ends_whatever_the_other_conditions() -> None:
    rule = LockRule(lifetime_cents=10**6, drip_months=100, patron_since_before=NOW - 1000 * DAY, public_after=OPENS)
    assert see(rule, paid(COMICS)).reason == "not_patron_at_date"
    assert see(dataclass_any(rule), paid(COMICS)).reason == "not_patron_at_date"  # none met: the first one's
    assert see(rule, paid(COMICS), now=OPENS).reason == "public"
    assert see(LockRule(public_after=OPENS, enabled=False), ANONYMOUS).reason == "lock_disabled"
    admin = Viewer(authenticated=True, linked=False, is_admin=True)
    assert see(rule, admin).reason == "admin_bypass"


def test_early_access_keeps_comps_working_and_the_denial_says_when() -> None:
    rule = LockRule(tier_ids=("both",), public_after=OPENS)
    comped = Viewer(authenticated=True, linked=True, patron=paid(MUSIC).patron, comps=(Comp(lock="bundle"),))
    assert see(rule, comped, lock="bundle").reason == "comp"
    denied = see(rule, comped, lock="other")
    assert (denied.reason, denied.public_at) == ("amount_too_low", OPENS)


def test_early_access_explained_and_stored() -> None:
    rule = LockRule(tier_ids=("comics",), public_after=OPENS)
    before = explain_steps(rule, ANONYMOUS, DEFAULTS, NOW, tiers=TIERS)
    assert "Early access: until 2027-01-04T00:00:00+00:00 only those the lock lets in may see it." in before
    after = explain_steps(rule, ANONYMOUS, DEFAULTS, OPENS, tiers=TIERS)
    assert after[-1] == "Result: allowed, reason 'public'."
    assert LockRule.from_dict(rule.to_dict()) == rule
    assert LockRule.from_dict({"public_after": "2027-01-04"}).public_after == OPENS
    with pytest.raises(ValueError, match="public_after"):
        LockRule.from_dict({"public_after": "next spring"})
    with pytest.raises(ValueError, match="public_after"):
        LockRule(public_after=datetime(2027, 1, 4))


def dataclass_any(rule: LockRule) -> LockRule:
    return LockRule(**{**_kw(rule), "combine": "any"})


# -- patrons when this was published ----------------------------------------------------------------------------------

JOINED = NOW - 365 * DAY  # paid()'s pledge start


@pytest.mark.parametrize(
    ("published_at", "reason"),
    [
        (JOINED + DAY, "allowed"),
        (JOINED, "allowed"),  # pledging at that very moment
        (JOINED - DAY, "not_patron_at_date"),
        (None, "allowed"),  # the page gave no date: the condition is not checked
    ],
)
def test_patrons_when_each_item_was_published(published_at: datetime | None, reason: str) -> None:
    rule = LockRule(tier_ids=("comics",), patrons_at_publish=True)
    decision = see(rule, paid(COMICS), published_at=published_at)
    assert decision.reason == reason
    if reason == "not_patron_at_date":
        assert decision.pledged_by == published_at and decision.missing == f"a pledge started by {published_at.date()}"
    assert see(LockRule(tier_ids=("comics",)), paid(COMICS), published_at=published_at).allowed  # flag off: no effect


def test_the_publish_date_condition_combines_like_the_others() -> None:
    old_post = JOINED - 30 * DAY
    rule = LockRule(patrons_at_publish=True, lifetime_cents=10**6, combine="any")
    assert see(rule, paid(COMICS), published_at=old_post).reason == "lifetime_too_low"  # none met: the first one's
    assert see(LockRule(**{**_kw(rule), "combine": "all"}), paid(COMICS), published_at=old_post).reason == (
        "lifetime_too_low"
    )
    assert see(LockRule(**{**_kw(rule), "lifetime_cents": None}), paid(COMICS), published_at=old_post).reason == (
        "not_patron_at_date"
    )
    assert see(LockRule(**{**_kw(rule), "lifetime_cents": 0}), paid(COMICS), published_at=old_post).allowed
    unknown_start = paid(COMICS, pledge_start=None)
    assert see(LockRule(patrons_at_publish=True), unknown_start, published_at=NOW).reason == "not_patron_at_date"
    both = LockRule(patrons_at_publish=True, patron_since_before=JOINED + DAY)
    assert see(both, paid(COMICS), published_at=JOINED + DAY).allowed
    denied = see(both, paid(COMICS), published_at=JOINED - DAY)
    assert denied.pledged_by == JOINED - DAY  # the item's date, not the lock's
    early = LockRule(patrons_at_publish=True, public_after=OPENS)
    assert see(early, paid(COMICS), published_at=JOINED - DAY).public_at == OPENS
    assert see(early, paid(COMICS), published_at=JOINED - DAY, now=OPENS).reason == "public"


def test_a_tier_comp_keeps_the_viewers_own_pledge_date() -> None:
    rule = LockRule(tier_ids=("both",), patrons_at_publish=True)
    comped = Viewer(authenticated=True, linked=True, patron=paid(MUSIC).patron, comps=(Comp(tier_id="both"),))
    assert see(rule, comped, published_at=JOINED + DAY).reason == "comp"
    assert see(rule, comped, published_at=JOINED - DAY).reason == "amount_too_low"
    lock_comp = Viewer(authenticated=True, linked=True, patron=paid(MUSIC).patron, comps=(Comp(lock="x"),))
    assert see(rule, lock_comp, lock="x", published_at=JOINED - DAY).reason == "comp"


def test_the_publish_date_condition_explained_and_stored() -> None:
    rule = LockRule(patrons_at_publish=True)
    steps = explain_steps(rule, paid(COMICS), DEFAULTS, NOW, tiers=TIERS, published_at=JOINED - DAY)
    assert any(s.startswith("Condition: pledging when this was published") and "not met" in s for s in steps)
    steps = explain_steps(rule, paid(COMICS), DEFAULTS, NOW, tiers=TIERS)
    assert any("not checked, the page gave no publish date" in s for s in steps)
    assert LockRule.from_dict(rule.to_dict()) == rule and not LockRule.from_dict({}).patrons_at_publish
    with pytest.raises(ValueError, match="patrons_at_publish"):
        LockRule.from_dict({"patrons_at_publish": "yes"})
