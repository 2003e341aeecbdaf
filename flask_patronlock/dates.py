"""Calendar arithmetic shared by the store and the policy (pure, no I/O)."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime
from typing import Final

#: What "forever" is in date arithmetic that would overflow ``datetime.max``.
FAR_FUTURE: Final = datetime.max.replace(tzinfo=UTC)


def add_months(moment: datetime, months: int, day: int | None = None) -> datetime:
    """``moment`` plus whole calendar months, on ``day`` (default: ``moment``'s day), clamped to the month's end
    (Jan 31 + 1 month = Feb 28/29); past year 9999 it is :data:`FAR_FUTURE`."""
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    if year > 9999:
        return FAR_FUTURE
    return moment.replace(year=year, month=month, day=min(day or moment.day, calendar.monthrange(year, month)[1]))
