"""The oracle of what a patron has paid for, written from the catalogue of Patreon's billing behaviour
(``docs/patreon-behaviour.rst``), not from ``policy.py``. Shared by the snapshot oracle (``test_billing_oracle.py``)
and the live-sandbox oracle (``test_billing_sandbox_oracle.py``)."""

from __future__ import annotations

from datetime import datetime, timedelta

from flask_patronlock.dates import add_months
from flask_patronlock.policy import PolicySettings


def month_start(moment: datetime) -> datetime:
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month(moment: datetime) -> datetime:
    return add_months(month_start(moment), 1)


def owed(
    policy: PolicySettings,
    now: datetime,
    *,
    declined_at: datetime | None,
    cancelled: bool,
    paid_until: datetime | None,
    paid: bool,
) -> bool:
    """Whether a patron is owed its tier at ``now``, in the creator's ``policy``'s words:

    * an unpaid decline (whatever Patreon lists, cancelled or not): nothing under ``restrict``; ``declined_grace_days``
      from the first decline under ``grace``; and under ``retry_window`` at least to the end of the month of the first
      decline, when Patreon stops retrying;
    * a cancelled pledge: under ``cancelled="paid_period"`` until the end of the period paid for (``paid_until``);
    * an active pledge: its tier once it has paid (a charge may be pending; nothing lapses until a decline says so).
    """
    if declined_at is not None:
        if policy.declined == "restrict":
            return False
        end = declined_at + timedelta(days=policy.declined_grace_days)
        if policy.declined == "retry_window":
            end = max(end, next_month(declined_at))
        return now < end
    if cancelled:
        return policy.cancelled == "paid_period" and paid_until is not None and now < paid_until
    return paid
