"""Typed snapshots of what Patreon's API v2 says, parsed from JSON:API documents.

These are plain frozen dataclasses with no Flask in sight: the client returns them, the sandbox is tested against
them, and :func:`flask_patronlock.store.Store.apply` is the only thing that turns them into stored state.

Every datetime here is timezone-aware UTC. Money is in integer cents.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypedDict

__all__ = [
    "CHARGE_STATUSES",
    "MEMBER_ATTRIBUTES",
    "MEMBER_TRIGGERS",
    "PATRON_STATUSES",
    "CampaignSnapshot",
    "Identity",
    "MemberFields",
    "MemberPage",
    "MemberSnapshot",
    "TierSnapshot",
    "TokenSet",
    "UserSnapshot",
    "WebhookChanges",
    "WebhookSnapshot",
]

#: every member attribute Patreon's API serves (the client asks for all but ``note``; the sandbox serves all).
MEMBER_ATTRIBUTES: tuple[str, ...] = (
    "campaign_lifetime_support_cents",
    "currently_entitled_amount_cents",
    "email",
    "full_name",
    "is_follower",
    "is_free_trial",
    "is_gifted",
    "last_charge_date",
    "last_charge_status",
    "lifetime_support_cents",
    "next_charge_date",
    "note",
    "patron_status",
    "pledge_cadence",
    "pledge_relationship_start",
    "will_pay_amount_cents",
)

#: ``patron_status`` values Patreon documents; ``None`` means the user never pledged (a follower, or a free member).
PATRON_STATUSES = ("active_patron", "declined_patron", "former_patron")

#: the six ``members:*`` webhook triggers Patreon documents (what ``webhooks register`` subscribes to, and what the
#: sandbox fires).
MEMBER_TRIGGERS: tuple[str, ...] = (
    "members:create",
    "members:update",
    "members:delete",
    "members:pledge:create",
    "members:pledge:update",
    "members:pledge:delete",
)

#: ``last_charge_status`` values Patreon documents.
CHARGE_STATUSES = (
    "Paid",
    "Declined",
    "Deleted",
    "Pending",
    "Refunded",
    "Fraud",
    "Refunded by Patreon",
    "Other",
    "Partially Refunded",
    "Free Trial",
)


@dataclass(frozen=True, slots=True)
class TierSnapshot:
    """One reward tier of a campaign."""

    id: str
    title: str = ""
    amount_cents: int = 0
    published: bool = True
    description: str = ""
    url: str | None = None
    patron_count: int | None = None
    discord_role_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UserSnapshot:
    """A Patreon user (the person, not their membership)."""

    id: str
    full_name: str = ""
    email: str | None = None
    #: ``is_email_verified``; ``None`` when Patreon did not send it (the scope or fields did not ask for it).
    email_verified: bool | None = None
    image_url: str | None = None
    url: str | None = None
    vanity: str | None = None


@dataclass(frozen=True, slots=True)
class MemberFields:
    """The member fields Patreon reports, shared by what it says (:class:`MemberSnapshot`) and what is stored of it
    (:class:`flask_patronlock.patron.Patron`): one list, so the two cannot drift apart.

    ``entitled_tier_ids`` may be empty while ``entitled_cents`` is not (Patreon's own payloads do this), so nothing
    downstream may assume a tier exists for an entitled amount.
    """

    member_id: str
    campaign_id: str | None = None
    email: str | None = None
    email_verified: bool | None = None
    full_name: str = ""
    patron_status: str | None = None
    last_charge_status: str | None = None
    last_charge_date: datetime | None = None
    next_charge_date: datetime | None = None
    entitled_cents: int = 0
    entitled_tier_ids: tuple[str, ...] = ()
    will_pay_cents: int = 0
    #: ``campaign_lifetime_support_cents`` (falls back to the deprecated ``lifetime_support_cents``).
    lifetime_cents: int = 0
    pledge_start: datetime | None = None
    #: months per billing period (1 monthly, 12 annual); ``None`` when Patreon does not say (e.g. free trials).
    pledge_cadence: int | None = None
    is_free_trial: bool = False
    is_gifted: bool = False
    is_follower: bool = False


@dataclass(frozen=True, slots=True)
class MemberSnapshot(MemberFields):
    """What Patreon says about one member of one campaign at one moment: :class:`MemberFields`, the Patreon user it
    belongs to, and what the document included beside it."""

    user_id: str | None = None
    #: tiers included in the document (may include tiers the member is *not* entitled to).
    tiers: tuple[TierSnapshot, ...] = ()
    user: UserSnapshot | None = None

    def replace(self, **changes: object) -> MemberSnapshot:
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class CampaignSnapshot:
    """A creator's campaign with its tiers."""

    id: str
    creation_name: str = ""
    vanity: str | None = None
    url: str | None = None
    pledge_url: str | None = None
    patron_count: int | None = None
    is_monthly: bool = True
    creator_user_id: str | None = None
    tiers: tuple[TierSnapshot, ...] = ()


@dataclass(frozen=True, slots=True)
class Identity:
    """``/identity``: the user who authorized, and their memberships (to the campaigns the token may see)."""

    user: UserSnapshot
    memberships: tuple[MemberSnapshot, ...] = ()

    def membership_for(self, campaign_id: str) -> MemberSnapshot | None:
        """The membership to ``campaign_id``, if the user has one."""
        for member in self.memberships:
            if member.campaign_id == campaign_id:
                return member
        return None


@dataclass(frozen=True, slots=True)
class MemberPage:
    """One page of ``/campaigns/{id}/members``."""

    members: tuple[MemberSnapshot, ...]
    #: ``meta.pagination.cursors.next``; ``None`` on the last page.
    next_cursor: str | None
    #: ``meta.pagination.total`` as Patreon reported it on this page, ``None`` if absent.
    total: int | None
    #: the cursor that was sent to get this page (``None`` for the first page).
    cursor: str | None = None
    #: how many ``member`` resources the document held (before any were skipped as unparseable).
    raw_count: int = 0


@dataclass(frozen=True, slots=True)
class WebhookSnapshot:
    """A webhook registered on a campaign."""

    id: str
    uri: str
    triggers: tuple[str, ...] = ()
    paused: bool = False
    num_consecutive_times_failed: int = 0
    last_attempted_at: datetime | None = None
    secret: str | None = None
    campaign_id: str | None = None


@dataclass(frozen=True, slots=True)
class TokenSet:
    """An OAuth token pair. Refresh tokens are single-use: store the new pair every time."""

    access_token: str
    refresh_token: str | None = None
    expires_at: datetime | None = None
    scope: tuple[str, ...] = field(default_factory=tuple)
    token_type: str = "Bearer"

    def __repr__(self) -> str:  # never print secrets in logs or tracebacks
        return (
            f"TokenSet(access_token='***', refresh_token='***', expires_at={self.expires_at!r}, scope={self.scope!r})"
        )


class WebhookChanges(TypedDict, total=False):
    """What ``PATCH /webhooks/{id}`` changes (each optional; ``None`` leaves it as it is): the URI, the triggers, and
    whether the webhook is paused (unpausing makes Patreon resend what failed)."""

    uri: str | None
    triggers: Iterable[str] | None
    paused: bool | None
