"""The explainer's answer as a short story a creator reads in one breath (pure: no Flask, no I/O).

"Sam pledged Silver ($5.00 a month) on 3 March 2026. Their payment on 1 December 2026 was declined; under your 7-day
grace they kept access until 8 December 2026. They can't see 'masterclass' because it needs Gold ($10.00 a month)
or higher."

:func:`story` is fed what :func:`flask_patronlock.explain.explain` already has -- the stored patron, the
entitlement the policy gave them, the decision and the rule in words -- and tells it in three parts: the pledge, what
happened to it (the entitlement's ``basis``), and the lock. The step-by-step trace stays behind "details".
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from .formatting import date_text, money
from .patreon.types import TierSnapshot
from .patron import Patron
from .policy import Decision, Entitlement, PolicySettings

__all__ = ["story"]


def story(
    *,
    who: str,
    lock: str,
    needs: str,
    decision: Decision,
    patron: Patron | None,
    authenticated: bool,
    linked: bool,
    entitlement: Entitlement,
    policy: PolicySettings,
    tiers: Mapping[str, TierSnapshot],
    now: datetime,
) -> str:
    """The decision of ``lock`` for ``who`` as a few plain sentences.

    :param who: the viewer's name ("Sam"), or a phrase ("This visitor").
    :param lock: the lock's name as the creator knows it.
    :param needs: what the lock asks, in words (:func:`flask_patronlock.explain.describe_rule`).
    :param entitlement: what :func:`flask_patronlock.policy.entitlement` gave ``patron`` at ``now``.
    """
    if not authenticated:
        parts = [f"{who} is not signed in on this site."]
    elif not linked:
        parts = [f"{who} has not connected a Patreon account on this site, so Patreon's records can't be matched "
                 "to them."]  # fmt: skip
    elif patron is None:
        parts = [f"{who} connected Patreon, but is not a member of the campaign."]
    else:
        parts = [_pledge(who, patron, tiers)]
        happened = _what_happened(patron, entitlement, policy, now)
        if happened:
            parts.append(happened)
    parts.append(_lock_sentence(lock, needs, decision, now))
    return " ".join(parts)


def _day(when: datetime) -> str:
    return date_text(when, day_first=True)


def _tier_words(tier_ids: tuple[str, ...], tiers: Mapping[str, TierSnapshot]) -> str:
    names = [tiers[t].title for t in tier_ids if t in tiers and tiers[t].title]
    return " and ".join(names)


def _pledge(who: str, patron: Patron, tiers: Mapping[str, TierSnapshot]) -> str:
    """"Sam pledged Silver ($5.00 a month) on 3 March 2026." and its variants."""
    if patron.patron_status is None:
        return f"{who} follows the campaign on Patreon but has never pledged."
    tier_ids = patron.entitled_tier_ids or patron.last_entitled_tier_ids
    cents = patron.entitled_cents or patron.last_entitled_cents
    cadence = patron.pledge_cadence or 1
    tier = _tier_words(tier_ids, tiers)
    amount = f"{money(cents)} a month" if cadence == 1 else f"{money(cents)} every {cadence} months"
    what = f"{tier} ({amount})" if tier and cents else tier or (amount if cents else "")
    pledged = f"pledged {what}" if what else "pledged"
    since = f" on {_day(patron.pledge_start)}" if patron.pledge_start is not None else ""
    return f"{who} {pledged}{since}."


def _what_happened(patron: Patron, ent: Entitlement, policy: PolicySettings, now: datetime) -> str:
    """What the policy made of the pledge, from the entitlement's ``basis``."""
    basis = ent.basis
    charged = f" on {_day(patron.last_charge_date)}" if patron.last_charge_date is not None else ""
    until = ent.until
    keep = ("keep" if until is not None and until > now else "kept")
    if basis.startswith("declined") or basis == "fraud":
        declined = f"Their payment{charged} was declined"
        if basis == "fraud":
            return f"Patreon marked their payment{charged} as fraud, so they have no access."
        if basis == "declined_restrict":
            return f"{declined}; under your policy access stops until a payment goes through."
        if basis == "declined_grace" and until is not None:
            days = policy.declined_grace_days
            return f"{declined}; under your {days}-day grace they {keep} access until {_day(until)}."
        if basis == "declined_retry_window" and until is not None:
            return (f"{declined}; Patreon retries through the month, and under your policy they {keep} access until "
                    f"{_day(until)}.")  # fmt: skip
        start = patron.declined_since or patron.last_charge_date
        if basis == "declined_grace_over" and policy.declined == "grace" and start is not None:
            ended = start + timedelta(days=policy.declined_grace_days)
            return (f"{declined}; under your {policy.declined_grace_days}-day grace they kept access until "
                    f"{_day(ended)}, and have none until a payment goes through.")  # fmt: skip
        return f"{declined}; their grace is over, so they have no access until a payment goes through."
    if basis == "cancelled_paid_period" and until is not None:
        return f"They cancelled; they {keep} access until {_day(until)}, the end of what they paid for."
    if basis == "cancelled":
        return "Their membership has ended."
    if basis in ("missing", "missing_grace"):
        if basis == "missing_grace" and until is not None:
            return f"Patreon no longer lists them; they {keep} access until {_day(until)} in case that is a glitch."
        return "Patreon no longer lists them, so their access ended."
    if basis in ("free_trial", "gifted", "free_trial_not_counted", "gifted_not_counted"):
        kind = "free trial" if basis.startswith("free_trial") else "gifted membership"
        counted = "does not count" if basis.endswith("not_counted") else "counts"
        return f"Theirs is a {kind}, which your policy {counted}."
    if basis == "first_charge_pending":
        if ent.entitled:
            return "Their first payment has not gone through yet; under your policy they have access meanwhile."
        return "Their first payment has not gone through yet; under your policy access waits for it."
    if basis == "refunded":
        return "Their last payment was refunded."
    if basis == "paid" and patron.last_charge_date is not None:
        return f"Their last payment{charged} went through."
    return ""


def _lock_sentence(lock: str, needs: str, decision: Decision, now: datetime) -> str:
    """"They can't see 'masterclass' because it needs Gold ($10.00 a month) or higher." and its variants."""
    reason = decision.reason
    name = f"'{lock}'"
    if decision.allowed:
        if reason == "admin_bypass":
            return f"They can see {name}: admins of this site see everything."
        if reason == "lock_disabled":
            return f"Everyone can see {name}: the lock is switched off."
        if reason == "public":
            return f"Everyone can see {name} now: its early access for patrons has ended."
        if reason == "comp":
            return f"They can see {name} through a comp you granted."
        return f"They can see {name}, which needs {needs}."
    if reason == "anonymous":
        return f"They can't see {name} until they sign in; it needs {needs}."
    if reason == "not_linked":
        return f"They can't see {name} until they connect Patreon here; it needs {needs}."
    if reason == "drip_not_reached" and decision.available_at is not None:
        return f"They can't see {name} yet: it needs {needs}, so it opens for them on {_day(decision.available_at)}."
    if reason == "not_a_member":
        return f"They can't see {name} until they join the campaign on Patreon (free or paid); it needs {needs}."
    if reason == "lock_unavailable":
        return f"Nobody but an admin can see {name}: the lock it names was deleted, so it stays locked."
    if reason == "payment_declined":
        return f"So they can't see {name} for now; it needs {needs}."
    if reason == "former_patron":
        return f"So they can't see {name} unless they pledge again; it needs {needs}."
    return f"They can't see {name} because it needs {needs}."
