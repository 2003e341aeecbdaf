"""Amounts, dates and plain numbers as text: the one place they are written (pure: no Flask, no I/O).

Every page, banner, flash message, explanation and policy trace writes an amount with :func:`money` and a date with
:func:`date_text`, so a change of how they read (another currency layout, the viewer's locale) is made here once.
"""

from __future__ import annotations

from datetime import datetime

__all__ = ["date_text", "money", "month_text", "number"]


def money(cents: int | None, symbol: str = "") -> str:
    """``1250`` -> ``"12.50"``, or ``"$12.50"`` with ``symbol="$"`` (``PATRONLOCK_CURRENCY_SYMBOL`` on pages);
    ``None`` -> ``""`` (an empty form field, no amount to show)."""
    if cents is None:
        return ""
    return f"{symbol}{cents // 100}.{cents % 100:02d}"


def date_text(when: datetime, *, day_first: bool = False, now: datetime | None = None) -> str:
    """``"January 4, 2027"`` (patrons' pages and banners), or ``"4 January 2027"`` with ``day_first`` (the settings
    pages). With ``now``, the year is left out when it is ``now``'s (``"4 January"``)."""
    year = "" if now is not None and when.year == now.year else str(when.year)
    if day_first:
        return f"{when.day} {when:%B} {year}".rstrip()
    return f"{when:%B} {when.day}, {year}" if year else f"{when:%B} {when.day}"


def month_text(when: datetime) -> str:
    """``"January 2027"``: a calendar month in words (the dashboard's months)."""
    return f"{when:%B} {when.year}"


def number(value: float) -> str:
    """``12.5`` -> ``"12.5"``, ``3.0`` -> ``"3"``: at most one decimal, no trailing zero (chart labels)."""
    return f"{value:.1f}".rstrip("0").rstrip(".")
