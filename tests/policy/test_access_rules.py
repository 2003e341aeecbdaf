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


# -- free members ------------------------------------------------------------------------------------------------------


def free_member(**kw: Any) -> Viewer:
    """A member on the campaign's Free tier, as Patreon reports one: no patron status, nothing entitled in cents."""
    values: dict[str, Any] = {
        "patron_status": None,
        "last_charge_status": None,
        "last_charge_date": None,
        "entitled_cents": 0,
        "entitled_tier_ids": ("free",),
        "pledge_start": None,
        "lifetime_cents": 0,
        "paid_through": None,
    }
    values.update(kw)
    return Viewer(authenticated=True, linked=True, patron=patron(values))


NOBODY = Viewer(authenticated=True, linked=True)  # linked to a Patreon account that is no member at all


def test_a_lock_on_the_free_tier_lets_free_members_in() -> None:
    """The issue's check: a lock on the Free tier told the free member to "Pledge Free on Patreon"."""
    rule = LockRule(tier_ids=("free",))
    assert see(rule, free_member()).reason == "allowed"
    assert see(rule, paid(MUSIC)).reason == "allowed"  # Free or higher
    assert see(rule, NOBODY).reason == "not_a_member"
    assert see(rule, free_member(), tiers=None).reason == "not_a_patron"  # the tier's price unknown: as before
    assert see(LockRule(tier_ids=("free",), tier_match="exact"), paid(MUSIC)).reason == "wrong_tier"


def test_free_members_are_held_to_the_rest_of_the_lock_as_0_dollar_members() -> None:
    members = LockRule(free_members=True)
    assert see(members, free_member()).reason == "allowed"
    assert see(members, free_member(entitled_tier_ids=())).reason == "allowed"  # a member with no tier at all
    assert see(members, paid(COMICS)).reason == "allowed"
    assert see(members, NOBODY).reason == "not_a_member"
    assert see(LockRule(), free_member()).reason == "not_a_patron"  # without it, as before
    gold = LockRule(free_members=True, tier_ids=("comics",))
    assert see(gold, free_member()).reason == "not_a_patron"  # only a pledge helps: "Pledge Comics"
    assert see(LockRule(free_members=True, min_cents=100), free_member()).reason == "not_a_patron"
    assert see(LockRule(free_members=True, drip_months=1), free_member()).reason == "drip_not_reached"
    assert see(LockRule(free_members=True, min_cents=100, combine="any", lifetime_cents=0), free_member()).allowed


def test_a_member_patreon_no_longer_lists_is_no_free_member_under_any_declined_policy() -> None:
    """Found by the generosity property: a declined patron missing from complete sync runs past the limit was let
    through a lock on the Free tier under ``restrict`` (a restricted entitlement skips the missing-member rule) but
    not under a grace period (where the rule made them former). Gone from Patreon is gone under every policy."""
    gone = paid(BOTH, last_charge_status="Declined", declined_since=NOW - 2 * DAY, entitled_cents=0,
                entitled_tier_ids=(), missing_runs=DEFAULTS.missing_runs, missing_since=NOW - DAY)
    rule = LockRule(tier_ids=("free",))
    for declined in ("restrict", "grace", "retry_window"):
        settings = PolicySettings(declined=declined, declined_grace_days=0)
        decision = decide(rule, gone, settings, NOW, tiers=TIERS)
        assert not decision.allowed and decision.reason in ("payment_declined", "former_patron"), (declined, decision)
    held = paid(BOTH, last_charge_status="Declined", declined_since=NOW - 2 * DAY, entitled_cents=0,
                entitled_tier_ids=("free",), missing_runs=DEFAULTS.missing_runs, missing_since=NOW - DAY, held_run_id=7)
    # a held revocation waits for the creator: until then the member still counts as one (a $0 member here)
    assert decide(rule, held, PolicySettings(declined="restrict"), NOW, tiers=TIERS).allowed


def test_a_declined_or_former_member_counts_as_free_never_at_their_old_tier() -> None:
    declined = paid(BOTH, patron_status="declined_patron", last_charge_status="Declined",
                    declined_since=NOW - 60 * DAY)
    former = paid(BOTH, patron_status="former_patron", paid_through=NOW - 60 * DAY, next_charge_date=None,
                  last_charge_date=NOW - 90 * DAY)
    for viewer, reason in ((declined, "payment_declined"), (former, "former_patron")):
        assert see(LockRule(tier_ids=("both",)), viewer).reason == reason
        assert see(LockRule(tier_ids=("both",), free_members=True), viewer).reason == reason  # their old tier: no
        assert see(LockRule(free_members=True), viewer).reason == "allowed"
    gone = paid(COMICS, missing_since=NOW - 30 * DAY, missing_runs=5)
    assert see(LockRule(free_members=True), gone).reason == "former_patron"  # no longer on Patreon's list


def test_free_members_explained_and_stored() -> None:
    steps = explain_steps(LockRule(free_members=True), free_member(), DEFAULTS, NOW, tiers=TIERS)
    assert any(step.startswith("The lock admits free members: the viewer is a member") for step in steps)
    steps = explain_steps(LockRule(tier_ids=("free",)), NOBODY, DEFAULTS, NOW, tiers=TIERS)
    assert "The lock admits free members, but this Patreon account is not a member of the campaign." in steps
    rule = LockRule(free_members=True)
    assert LockRule.from_dict(rule.to_dict()) == rule and not LockRule.from_dict({}).free_members
