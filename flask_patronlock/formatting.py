"""Amounts, dates and plain numbers as text: the one place they are written (pure: no Flask, no I/O).

Every page, banner, flash message, explanation and policy trace writes an amount with :func:`money` and a date with
:func:`date_text`, so a change of how they read (another currency layout, the viewer's locale) is made here once.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

__all__ = [
    "ENTITLEMENT_WORDS",
    "EVENT_WORDS",
    "PATRON_STATUS_WORDS",
    "REASON_WORDS",
    "SOURCE_WORDS",
    "countdown_text",
    "date_text",
    "moment_text",
    "money",
    "month_text",
    "number",
    "words",
]


def N_(string: str) -> str:
    """Mark ``string`` for extraction into the ``flask_patronlock`` catalogue (``make translations``) without
    translating it: this module is pure, so the tables below stay English here and are translated where they are
    shown, by :func:`flask_patronlock.i18n.words`."""
    return string


#: Patreon's ``patron_status`` in a creator's words (``None``: the member never pledged, e.g. a follower).
PATRON_STATUS_WORDS: dict[str | None, str] = {
    "active_patron": N_("pledging"),
    "declined_patron": N_("pledging, payment declined"),
    "former_patron": N_("former patron"),
    None: N_("never pledged"),
}
#: what :func:`flask_patronlock.policy.entitlement` says, in words ("Access now: ...").
ENTITLEMENT_WORDS: dict[str | None, str] = {
    "active": N_("yes"),
    "grace": N_("yes, in a grace period"),
    "restricted": N_("no, until a payment goes through"),
    "former": N_("no, the membership ended"),
    "none": N_("no"),
    None: N_("no"),
}
#: where a change came from (audit rows' and stored patrons' ``source``).
SOURCE_WORDS: dict[str | None, str] = {
    "oauth": N_("the patron connecting Patreon"),
    "webhook": N_("a message from Patreon"),
    "sync": N_("a reconcile run"),
    "admin": N_("the settings page"),
    "cli": N_("the command line"),
    "scheduler": N_("the scheduler"),
    "clock": N_("time passing (a paid or grace period ended)"),
    "user": N_("the patron, on this site"),
    "feed": N_("a private feed"),
    None: N_("unknown"),
}
#: a decision's reason, as the answer to "why?" (the banners' titles for denials).
REASON_WORDS: dict[str | None, str] = {
    "anonymous": N_("not signed in"),
    "not_linked": N_("signed in, but Patreon is not connected"),
    "not_a_patron": N_("not a patron"),
    "amount_too_low": N_("the pledge is below the lock's tier"),
    "payment_declined": N_("the payment was declined"),
    "former_patron": N_("the membership ended"),
    "not_patron_at_date": N_("joined after the lock's date"),
    "drip_not_reached": N_("not pledged long enough yet"),
    "lifetime_too_low": N_("lifetime support is too low"),
    "lock_disabled": N_("the lock is switched off"),
    "admin_bypass": N_("an admin of this site sees everything"),
    "allowed": N_("every condition of the lock holds"),
    "comp": N_("a comp you granted"),
    "wrong_tier": N_("the pledge is not one of the lock's tiers"),
    "not_a_member": N_("not a member"),
    "public": N_("open to everyone now"),
    "lock_unavailable": N_("the lock no longer exists"),
}
#: what the audit log records (an audit row's ``kind``) and what a change of state was inferred to be (its
#: ``events``), as the patron's timeline shows them.
EVENT_WORDS: dict[str | None, str] = {
    "patron_created": N_("patron created"),
    "patron_updated": N_("patron updated"),
    "patron_missing": N_("patron missing"),
    "access_changed": N_("access changed"),
    "account_linked": N_("account linked"),
    "account_reauthorized": N_("account reauthorized"),
    "account_unlinked": N_("account unlinked"),
    "account_needs_reauth": N_("account needs reauth"),
    "revocation_held": N_("revocation held"),
    "revocation_approved": N_("revocation approved"),
    "revocation_rejected": N_("revocation rejected"),
    "comp_granted": N_("comp granted"),
    "comp_revoked": N_("comp revoked"),
    "comp_expired": N_("comp expired"),
    "feed_token_created": N_("feed token created"),
    "feed_token_rotated": N_("feed token rotated"),
    "pledge_started": N_("pledge started"),
    "pledge_cancelled": N_("pledge cancelled"),
    "tier_changed": N_("tier changed"),
    "charge_succeeded": N_("charge succeeded"),
    "payment_declined": N_("payment declined"),
    "payment_recovered": N_("payment recovered"),
    "access_granted": N_("access granted"),
    "access_revoked": N_("access revoked"),
}


def words(table: dict[str | None, str], code: str | None) -> str:
    """``code`` in words from one of the tables above; a code the table does not know is shown with its
    underscores as spaces (a newer Patreon status reads "some new status", never raises)."""
    if code in table:
        return table[code]
    return str(code).replace("_", " ")


def money(cents: int | None, symbol: str = "", *, locale: str | None = None, currency: str | None = None) -> str:
    """``1250`` -> ``"12.50"``, or ``"$12.50"`` with ``symbol="$"`` (``PATRONLOCK_CURRENCY_SYMBOL`` on pages);
    ``None`` -> ``""`` (an empty form field, no amount to show).

    With ``locale`` or ``currency`` (an ISO code, ``"USD"`` if only ``locale`` is given), Babel writes it in that
    locale's format (``symbol`` is then unused): ``"12,50\xa0$"`` for ``locale="de"``, ``"\u20ac12.50"`` for
    ``currency="EUR"`` (English). :func:`flask_patronlock.i18n.money` passes the site's."""
    if cents is None:
        return ""
    if locale is not None or currency is not None:
        from babel.numbers import format_currency

        return str(format_currency(Decimal(cents) / 100, currency or "USD", locale=locale or "en"))
    return f"{symbol}{cents // 100}.{cents % 100:02d}"


def date_text(
    when: datetime, *, day_first: bool = False, now: datetime | None = None, locale: str | None = None
) -> str:
    """``"January 4, 2027"`` (patrons' pages and banners), or ``"4 January 2027"`` with ``day_first`` (the settings
    pages). With ``now``, the year is left out when it is ``now``'s (``"4 January"``).

    With ``locale``, Babel writes it in that locale's long format (``"4. Januar 2027"``, ``"4. Januar"`` for
    ``locale="de"``; ``day_first`` is then the locale's business). :func:`flask_patronlock.i18n.date_text` passes
    the site's."""
    year = "" if now is not None and when.year == now.year else str(when.year)
    if locale is not None:
        from babel.dates import format_date, format_skeleton

        if year:
            return str(format_date(when, "long", locale=locale))
        return str(format_skeleton("MMMMd", when, locale=locale))
    if day_first:
        return f"{when.day} {when:%B} {year}".rstrip()
    return f"{when:%B} {when.day}, {year}" if year else f"{when:%B} {when.day}"


def month_text(when: datetime, *, locale: str | None = None) -> str:
    """``"January 2027"``: a calendar month in words (the dashboard's months); with ``locale``, Babel's
    (``"Januar 2027"`` for ``locale="de"``)."""
    if locale is not None:
        from babel.dates import format_skeleton

        return str(format_skeleton("yMMMM", when, locale=locale))
    return f"{when:%B} {when.year}"


def countdown_text(when: datetime, now: datetime) -> str:
    """How far off ``when`` is, counted in the calendar days of UTC: ``"today"``, ``"tomorrow"``, ``"in 5 days"``
    (``"today"`` for a moment already past: what it ends has ended today at the latest)."""
    days = (when.date() - now.date()).days
    if days <= 0:
        return "today"
    return "tomorrow" if days == 1 else f"in {days} days"


def moment_text(when: datetime, *, now: datetime | None = None, locale: str | None = None) -> str:
    """``"7 December 2026, 11:18 UTC"`` (the settings pages' times; every stored time is UTC). With ``now``, the year
    is left out when it is ``now``'s. With ``locale``, the date and the time are Babel's (``"7. Dezember 2026, 11:18
    UTC"`` for ``locale="de"``)."""
    if locale is not None:
        from babel.dates import format_time

        clock = format_time(when, "short", tzinfo=when.tzinfo, locale=locale)
        return f"{date_text(when, now=now, locale=locale)}, {clock} UTC"
    return f"{date_text(when, day_first=True, now=now)}, {when:%H:%M} UTC"


def number(value: float) -> str:
    """``12.5`` -> ``"12.5"``, ``3.0`` -> ``"3"``: at most one decimal, no trailing zero (chart labels)."""
    return f"{value:.1f}".rstrip("0").rstrip(".")
