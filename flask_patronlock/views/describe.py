"""What a patron has on this site, in words: the sentence of the connect flash messages and of the status page."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from flask import current_app

from ..formatting import date_text, money
from ..i18n import countdown_text, format_args, gettext
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
    locale, code = format_args()
    return describe_access(patron, tiers, now, snapshot.policy, currency=currency, locale=locale, currency_code=code)


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
    locale: str | None = None,
    currency_code: str | None = None,
) -> str:
    """One or two sentences saying what ``patron`` has on this site now, from
    :func:`~flask_patronlock.policy.entitlement` (never from comparing tiers or amounts here), and the next step when
    nothing is unlocked.

    :param tiers: tier titles by id (the identity's tiers, and those synced into ``patronlock_tiers``).
    :param settings: the creator's access policy (default: the defaults).
    :param currency: put before amounts (``PATRONLOCK_CURRENCY_SYMBOL``).
    :param locale: with ``currency_code``, how amounts and dates are written (see
        :func:`flask_patronlock.formatting.money`); the sentences are in the current request's locale.
    """
    ent: Entitlement = entitlement(patron, settings or PolicySettings(), now)
    titles = [tiers[t].title for t in ent.tier_ids if t in tiers and tiers[t].title]
    if titles:
        joined = gettext(" and ").join(titles)
        what = gettext("a %(tiers)s patron", tiers=joined)
        unlocked = gettext("posts for %(tiers)s and below are unlocked", tiers=joined)
    elif ent.monthly_cents:
        amount = money(ent.monthly_cents, currency, locale=locale, currency=currency_code)
        what = gettext("a patron at %(amount)s a month", amount=amount)
        unlocked = gettext("posts for %(amount)s a month and below are unlocked", amount=amount)
    else:
        what, unlocked = gettext("a patron"), gettext("posts for patrons at your level are unlocked")
    until = (
        gettext(
            " until %(date)s (%(countdown)s)",
            date=date_text(ent.until, locale=locale),
            countdown=countdown_text(ent.until, now),
        )
        if ent.until is not None
        else ""
    )
    if ent.state == "active":
        return gettext("You're %(what)s: %(unlocked)s.", what=what, unlocked=unlocked)
    if ent.state == "grace":
        if ent.basis == "cancelled_paid_period":
            return gettext(
                "Your pledge has ended, but you paid through this period: %(unlocked)s%(until)s.",
                unlocked=unlocked, until=until,
            )
        if ent.basis.startswith("declined"):
            return gettext(
                "Patreon could not charge your last payment. You're still %(what)s for now and %(unlocked)s%(until)s; "
                "please update your payment method on Patreon.",
                what=what, unlocked=unlocked, until=until,
            )
        return gettext("You're %(what)s: %(unlocked)s%(until)s.", what=what, unlocked=unlocked, until=until)
    if ent.state == "restricted":
        return gettext(
            "Patreon could not charge your payment, so patron posts are locked for now. Update your payment method "
            "on Patreon, then refresh your status here."
        )
    if ent.state == "former":
        return gettext(
            "Your pledge to this creator has ended, so patron posts are locked. If you pledge again on Patreon, "
            "refresh your status here and they unlock at once."
        )
    if patron is None:
        return gettext(
            "We found no pledge to this creator on that Patreon account, so nothing is unlocked yet. This site and "
            "Patreon are separate accounts: if you pledged with another Patreon account, connect that one instead; "
            "if you pledge now, refresh your status here afterwards."
        )
    if ent.basis == "free_trial_not_counted":
        return gettext(
            "Free trials don't unlock posts on this site; they unlock once Patreon charges your first payment."
        )
    if ent.basis == "gifted_not_counted":
        return gettext(
            "Gifted memberships don't unlock posts on this site. Pledge on Patreon, then refresh your status here."
        )
    if ent.basis in ("first_charge_pending", "refunded"):
        return gettext(
            "Your pledge unlocks posts once Patreon charges your payment. When it has gone through, refresh your "
            "status here."
        )
    if ent.basis == "not_pledged":
        return gettext(
            "That Patreon account follows this creator but has no paid pledge, so nothing is unlocked yet. Pledge on "
            "Patreon, then refresh your status here."
        )
    return gettext("Your Patreon membership does not unlock posts on this site right now.")
