"""What a patron has on this site, in words: the sentence of the connect flash messages and of the status page."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from flask import current_app

from ..formatting import countdown_text, date_text, money
from ..patreon.types import MemberSnapshot, TierSnapshot, UserSnapshot
from ..patron import Patron
from ..policy import Entitlement, PolicySettings, entitlement
from ..state import get_state


def _describe(patron: Patron | None, member: MemberSnapshot | None, now: datetime) -> str:
    """:func:`describe_access` with the creator's policy, the synced tier catalogue (plus the tiers the identity
    named) and the site's currency symbol; all from the per-process settings cache, no query."""
    snapshot = get_state().settings.current()
    tiers = dict(snapshot.tiers)
    if member is not None:
        tiers.update({t.id: t for t in member.tiers if t.title or t.id not in tiers})
    currency = current_app.config.get("PATRONLOCK_CURRENCY_SYMBOL") or ""
    return describe_access(patron, tiers, now, snapshot.policy, currency=currency)


def _mask_email(email: str | None) -> str | None:
    if not email or "@" not in email:
        return None
    local = email.split("@", 1)[0]
    return f"{local}@…"


def _account_label(patreon_user: UserSnapshot | None, detail: Mapping[str, Any] | None = None) -> str:
    email = patreon_user.email if patreon_user else (detail or {}).get("email")
    name = patreon_user.full_name if patreon_user else (detail or {}).get("full_name")
    return _mask_email(email) or (str(name) if name else "")


def describe_access(
    patron: Patron | None,
    tiers: Mapping[str, TierSnapshot],
    now: datetime,
    settings: PolicySettings | None = None,
    *,
    currency: str = "$",
) -> str:
    """One or two sentences saying what ``patron`` has on this site now, from
    :func:`~flask_patronlock.policy.entitlement` (never from comparing tiers or amounts here), and the next step when
    nothing is unlocked.

    :param tiers: tier titles by id (the identity's tiers, and those synced into ``patronlock_tiers``).
    :param settings: the creator's access policy (default: the defaults).
    :param currency: put before amounts (``PATRONLOCK_CURRENCY_SYMBOL``).
    """
    ent: Entitlement = entitlement(patron, settings or PolicySettings(), now)
    titles = [tiers[t].title for t in ent.tier_ids if t in tiers and tiers[t].title]
    if titles:
        what = f"a {' and '.join(titles)} patron"
        unlocked = f"posts for {' and '.join(titles)} and below are unlocked"
    elif ent.monthly_cents:
        amount = money(ent.monthly_cents, currency)
        what = f"a patron at {amount} a month"
        unlocked = f"posts for {amount} a month and below are unlocked"
    else:
        what, unlocked = "a patron", "posts for patrons at your level are unlocked"
    until = f" until {date_text(ent.until)} ({countdown_text(ent.until, now)})" if ent.until is not None else ""
    if ent.state == "active":
        return f"You're {what}: {unlocked}."
    if ent.state == "grace":
        if ent.basis == "cancelled_paid_period":
            return f"Your pledge has ended, but you paid through this period: {unlocked}{until}."
        if ent.basis.startswith("declined"):
            return (
                f"Patreon could not charge your last payment. You're still {what} for now and {unlocked}{until}; "
                "please update your payment method on Patreon."
            )
        return f"You're {what}: {unlocked}{until}."
    if ent.state == "restricted":
        return (
            "Patreon could not charge your payment, so patron posts are locked for now. Update your payment method "
            "on Patreon, then refresh your status here."
        )
    if ent.state == "former":
        return (
            "Your pledge to this creator has ended, so patron posts are locked. If you pledge again on Patreon, "
            "refresh your status here and they unlock at once."
        )
    if patron is None:
        return (
            "We found no pledge to this creator on that Patreon account, so nothing is unlocked yet. This site and "
            "Patreon are separate accounts: if you pledged with another Patreon account, connect that one instead; "
            "if you pledge now, refresh your status here afterwards."
        )
    if ent.basis == "free_trial_not_counted":
        return "Free trials don't unlock posts on this site; they unlock once Patreon charges your first payment."
    if ent.basis == "gifted_not_counted":
        return "Gifted memberships don't unlock posts on this site. Pledge on Patreon, then refresh your status here."
    if ent.basis in ("first_charge_pending", "refunded"):
        return (
            "Your pledge unlocks posts once Patreon charges your payment. When it has gone through, refresh your "
            "status here."
        )
    if ent.basis == "not_pledged":
        return (
            "That Patreon account follows this creator but has no paid pledge, so nothing is unlocked yet. Pledge on "
            "Patreon, then refresh your status here."
        )
    return "Your Patreon membership does not unlock posts on this site right now."
