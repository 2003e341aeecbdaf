"""The stored state of one patron: what Patreon last said, plus what flask-patronlock inferred from the changes.

:class:`Patron` is what the store reads back and what :func:`flask_patronlock.policy.decide` decides on. It is a plain
frozen dataclass so the policy stays a pure function that tests can feed directly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime

from .patreon.types import MemberFields


@dataclass(frozen=True, slots=True)
class Patron(MemberFields):
    """One member of the campaign as stored, linked (or not yet) to a local user: what Patreon last said
    (:class:`~flask_patronlock.patreon.types.MemberFields`), and what flask-patronlock inferred from the changes."""

    patreon_user_id: str | None = None
    #: when the snapshot this state came from was observed (the guard against older-over-newer writes).
    observed_at: datetime | None = None
    #: where that snapshot came from: ``oauth``, ``webhook``, ``sync``, ``admin``.
    source: str | None = None

    # -- inferred by the store from state changes (Patreon does not send these) --
    #: the entitlement last seen non-zero: Patreon zeroes it on cancellation, but a grace period grants what was paid.
    last_entitled_cents: int = 0
    last_entitled_tier_ids: tuple[str, ...] = ()
    #: the end of the last period a successful charge paid for (cancelled-but-paid patrons keep access until then).
    paid_through: datetime | None = None
    #: when the current run of declined payments began; ``None`` while payments are fine.
    declined_since: datetime | None = None
    #: the date of the last charge seen refunded or deemed fraud (Patreon keeps showing that charge's date and next
    #: charge date after the pledge is deleted): a period end read from a charge no later than this was not paid for.
    refunded_at: datetime | None = None
    #: when a complete sync run first did not see this member; ``None`` while seen.
    missing_since: datetime | None = None
    #: how many complete runs in a row did not see this member.
    missing_runs: int = 0
    #: a sync run whose revocation of this patron waits for the creator's approval.
    held_run_id: int | None = None
    #: the entitlement last announced (``access-granted`` / ``access-revoked``): whether
    #: :func:`flask_patronlock.policy.entitlement` said ``active`` or ``grace``; ``None`` before the first evaluation.
    access: bool | None = None
    #: when that entitlement may change by time alone (a grace period's end, a paid period's end, the missing limit);
    #: :meth:`flask_patronlock.store.Store.refresh_access` re-evaluates patrons whose moment has come.
    access_until: datetime | None = None
    #: which policy settings ``access`` was evaluated under (:func:`flask_patronlock.policy.settings_fingerprint`):
    #: a creator's policy change leaves every stored ``access`` to be re-evaluated, and this finds them.
    access_policy: str | None = None
    #: the local user this member is linked to, if any (from the linked-accounts table).
    local_user_id: str | None = None

    def replace(self, **changes: object) -> Patron:
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
