"""The explainer's answer as a short story a creator reads in one breath (pure: no Flask, no I/O).

"Sam pledged Silver ($5.00 a month) on 3 March 2026. Their payment on 1 December 2026 was declined; under your 7-day
grace they kept access until 8 December 2026. They can't see 'masterclass' because it needs Gold ($10.00 a month)
or higher."

:func:`story` is fed what :func:`flask_patronlock.explain.explain` already has -- the stored patron, the
entitlement the policy gave them, the decision and the rule in words -- and tells it in three parts: the pledge, what
happened to it (the entitlement's ``basis``), and the lock. The step-by-step trace stays behind "details".

Each sentence is one message of the ``flask_patronlock`` catalogue, with named placeholders, so it reads in the site's
locale (German: "Sam wurde am 3. März 2026 Patron mit Silver (5,00 $ im Monat)."); dates and amounts are written by
:mod:`flask_patronlock.i18n`. Without Flask-Babel, or outside an app, it is English.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from .i18n import amount_text, day_text, gettext, ngettext
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
        parts = [gettext("%(who)s is not signed in on this site.", who=who)]
    elif not linked:
        parts = [gettext(
            "%(who)s has not connected a Patreon account on this site, so Patreon's records can't be matched to them.",
            who=who,
        )]  # fmt: skip
    elif patron is None:
        parts = [gettext("%(who)s connected Patreon, but is not a member of the campaign.", who=who)]
    else:
        parts = [_pledge(who, patron, tiers)]
        happened = _what_happened(patron, entitlement, policy, now)
        if happened:
            parts.append(happened)
    parts.append(_lock_sentence(lock, needs, decision, now))
    return " ".join(parts)


def _day(when: datetime) -> str:
    return day_text(when)


def _tier_words(tier_ids: tuple[str, ...], tiers: Mapping[str, TierSnapshot]) -> str:
    names = [tiers[t].title for t in tier_ids if t in tiers and tiers[t].title]
    return gettext(" and ").join(names)


def _pledge(who: str, patron: Patron, tiers: Mapping[str, TierSnapshot]) -> str:
    """"Sam pledged Silver ($5.00 a month) on 3 March 2026." and its variants."""
    if patron.patron_status is None:
        return gettext("%(who)s follows the campaign on Patreon but has never pledged.", who=who)
    tier_ids = patron.entitled_tier_ids or patron.last_entitled_tier_ids
    cents = patron.entitled_cents or patron.last_entitled_cents
    cadence = patron.pledge_cadence or 1
    tier = _tier_words(tier_ids, tiers)
    amount = ngettext("%(amount)s a month", "%(amount)s every %(num)d months", cadence, amount=amount_text(cents))
    what = f"{tier} ({amount})" if tier and cents else tier or (amount if cents else "")
    if patron.pledge_start is None:
        if what:
            return gettext("%(who)s pledged %(what)s.", who=who, what=what)
        return gettext("%(who)s pledged.", who=who)
    since = _day(patron.pledge_start)
    if what:
        return gettext("%(who)s pledged %(what)s on %(date)s.", who=who, what=what, date=since)
    return gettext("%(who)s pledged on %(date)s.", who=who, date=since)


def _what_happened(patron: Patron, ent: Entitlement, policy: PolicySettings, now: datetime) -> str:
    """What the policy made of the pledge, from the entitlement's ``basis``."""
    basis = ent.basis
    charged = _day(patron.last_charge_date) if patron.last_charge_date is not None else None
    until = ent.until
    keep = until is not None and until > now  # "they keep access until ..." (else: "kept")
    if basis == "fraud":
        if charged is None:
            return gettext("Patreon marked their payment as fraud, so they have no access.")
        return gettext("Patreon marked their payment on %(date)s as fraud, so they have no access.", date=charged)
    if basis.startswith("declined"):
        return _declined(patron, basis, until, keep, charged, policy)
    if basis == "cancelled_paid_period" and until is not None:
        if keep:
            return gettext("They cancelled; they keep access until %(date)s, the end of what they paid for.",
                           date=_day(until))  # fmt: skip
        return gettext("They cancelled; they kept access until %(date)s, the end of what they paid for.",
                       date=_day(until))  # fmt: skip
    if basis == "cancelled":
        return gettext("Their membership has ended.")
    if basis == "missing_grace" and until is not None:
        if keep:
            return gettext("Patreon no longer lists them; they keep access until %(date)s in case that is a glitch.",
                           date=_day(until))  # fmt: skip
        return gettext("Patreon no longer lists them; they kept access until %(date)s in case that is a glitch.",
                       date=_day(until))  # fmt: skip
    if basis in ("missing", "missing_grace"):
        return gettext("Patreon no longer lists them, so their access ended.")
    if basis in ("free_trial", "free_trial_not_counted"):
        if basis == "free_trial":
            return gettext("Theirs is a free trial, which your policy counts.")
        return gettext("Theirs is a free trial, which your policy does not count.")
    if basis in ("gifted", "gifted_not_counted"):
        if basis == "gifted":
            return gettext("Theirs is a gifted membership, which your policy counts.")
        return gettext("Theirs is a gifted membership, which your policy does not count.")
    if basis == "first_charge_pending":
        if ent.entitled:
            return gettext(
                "Their first payment has not gone through yet; under your policy they have access meanwhile."
            )  # fmt: skip
        return gettext("Their first payment has not gone through yet; under your policy access waits for it.")
    if basis == "refunded":
        return gettext("Their last payment was refunded.")
    if basis == "paid" and charged is not None:
        return gettext("Their last payment on %(date)s went through.", date=charged)
    return ""


def _declined(
    patron: Patron, basis: str, until: datetime | None, keep: bool, charged: str | None, policy: PolicySettings
) -> str:
    """"Their payment on 1 December 2026 was declined; under your 7-day grace they keep access until ..." and the
    other declined bases: the declined payment, then what the policy made of it."""
    if charged is None:
        declined = gettext("Their payment was declined")
    else:
        declined = gettext("Their payment on %(date)s was declined", date=charged)
    days = policy.declined_grace_days
    if basis == "declined_restrict":
        return gettext("%(declined)s; under your policy access stops until a payment goes through.", declined=declined)
    if basis == "declined_grace" and until is not None:
        if keep:
            return ngettext(
                "%(declined)s; under your %(num)d-day grace they keep access until %(date)s.",
                "%(declined)s; under your %(num)d-day grace they keep access until %(date)s.",
                days, declined=declined, date=_day(until),
            )  # fmt: skip
        return ngettext(
            "%(declined)s; under your %(num)d-day grace they kept access until %(date)s.",
            "%(declined)s; under your %(num)d-day grace they kept access until %(date)s.",
            days, declined=declined, date=_day(until),
        )  # fmt: skip
    if basis == "declined_retry_window" and until is not None:
        if keep:
            return gettext(
                "%(declined)s; Patreon retries through the month, and under your policy they keep access until "
                "%(date)s.", declined=declined, date=_day(until),
            )  # fmt: skip
        return gettext(
            "%(declined)s; Patreon retries through the month, and under your policy they kept access until %(date)s.",
            declined=declined, date=_day(until),
        )  # fmt: skip
    start = patron.declined_since or patron.last_charge_date
    if basis == "declined_grace_over" and policy.declined == "grace" and start is not None:
        return ngettext(
            "%(declined)s; under your %(num)d-day grace they kept access until %(date)s, and have none until a "
            "payment goes through.",
            "%(declined)s; under your %(num)d-day grace they kept access until %(date)s, and have none until a "
            "payment goes through.",
            days, declined=declined, date=_day(start + timedelta(days=days)),
        )  # fmt: skip
    return gettext("%(declined)s; their grace is over, so they have no access until a payment goes through.",
                   declined=declined)  # fmt: skip


def _lock_sentence(lock: str, needs: str, decision: Decision, now: datetime) -> str:
    """"They can't see 'masterclass' because it needs Gold ($10.00 a month) or higher." and its variants."""
    reason = decision.reason
    if decision.allowed:
        if reason == "admin_bypass":
            return gettext("They can see '%(lock)s': admins of this site see everything.", lock=lock)
        if reason == "lock_disabled":
            return gettext("Everyone can see '%(lock)s': the lock is switched off.", lock=lock)
        if reason == "public":
            return gettext("Everyone can see '%(lock)s' now: its early access for patrons has ended.", lock=lock)
        if reason == "comp":
            return gettext("They can see '%(lock)s' through a comp you granted.", lock=lock)
        return gettext("They can see '%(lock)s', which needs %(needs)s.", lock=lock, needs=needs)
    if reason == "anonymous":
        return gettext("They can't see '%(lock)s' until they sign in; it needs %(needs)s.", lock=lock, needs=needs)
    if reason == "not_linked":
        return gettext("They can't see '%(lock)s' until they connect Patreon here; it needs %(needs)s.",
                       lock=lock, needs=needs)  # fmt: skip
    if reason == "drip_not_reached" and decision.available_at is not None:
        return gettext("They can't see '%(lock)s' yet: it needs %(needs)s, so it opens for them on %(date)s.",
                       lock=lock, needs=needs, date=_day(decision.available_at))  # fmt: skip
    if reason == "not_a_member":
        return gettext(
            "They can't see '%(lock)s' until they join the campaign on Patreon (free or paid); it needs %(needs)s.",
            lock=lock, needs=needs,
        )  # fmt: skip
    if reason == "lock_unavailable":
        return gettext("Nobody but an admin can see '%(lock)s': the lock it names was deleted, so it stays locked.",
                       lock=lock)  # fmt: skip
    if reason == "payment_declined":
        return gettext("So they can't see '%(lock)s' for now; it needs %(needs)s.", lock=lock, needs=needs)
    if reason == "former_patron":
        return gettext("So they can't see '%(lock)s' unless they pledge again; it needs %(needs)s.", lock=lock,
                       needs=needs)  # fmt: skip
    return gettext("They can't see '%(lock)s' because it needs %(needs)s.", lock=lock, needs=needs)
