"""The sandbox's records: plain data classes for what Patreon keeps (tiers, users, members, the campaign, tokens,
authorization codes, webhooks with their queued events and delivery attempts, member events, faults), with the
constants, errors and date helpers they share.

Nothing here knows the :class:`~.state.Sandbox` or any other sandbox module: they all import these records, never
the other way round. Money is integer cents; every datetime is timezone-aware UTC.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from ..patreon.types import MEMBER_TRIGGERS

__all__ = [
    "ALL_MEMBER_TRIGGERS",
    "ALL_SCOPES",
    "BILLING_MODES",
    "CREATOR_SCOPES",
    "DECLINE_RETRIES",
    "DECLINE_RETRY_INTERVAL",
    "DEFAULT_USER_SCOPES",
    "FAULT_KINDS",
    "KNOWN_TRIGGERS",
    "Address",
    "AuthCode",
    "Campaign",
    "Delivery",
    "Fault",
    "FaultKind",
    "Member",
    "MemberEvent",
    "NotFoundError",
    "OAuthError",
    "QueuedEvent",
    "SandboxError",
    "Tier",
    "Token",
    "Transport",
    "User",
    "Webhook",
    "aware",
    "iso",
    "midnight",
]

#: the six ``members:*`` webhook triggers Patreon documents (one definition, with Patreon's other documented values).
ALL_MEMBER_TRIGGERS: tuple[str, ...] = MEMBER_TRIGGERS
#: every trigger a webhook may be registered for (``posts:*`` are accepted but never fired by the sandbox).
KNOWN_TRIGGERS: tuple[str, ...] = (*ALL_MEMBER_TRIGGERS, "posts:publish", "posts:update", "posts:delete")

#: every API v2 scope.
ALL_SCOPES: tuple[str, ...] = (
    "identity",
    "identity[email]",
    "identity.memberships",
    "campaigns",
    "w:campaigns.webhook",
    "campaigns.members",
    "campaigns.members[email]",
    "campaigns.members.address",
)
#: the creator's access token has every scope, as Patreon's does.
CREATOR_SCOPES = ALL_SCOPES
#: what a user's token gets when the authorize request names no scope.
DEFAULT_USER_SCOPES: tuple[str, ...] = ("identity", "identity[email]", "identity.memberships")

FaultKind = Literal["error", "rate_limit", "slow", "truncate", "repeat_cursor", "drop", "drift"]
#: the fault kinds :meth:`Sandbox.add_fault` accepts (all act on the members listing).
FAULT_KINDS: tuple[str, ...] = ("error", "rate_limit", "slow", "truncate", "repeat_cursor", "drop", "drift")

#: how a campaign bills monthly pledges: on each patron's anniversary day (Patreon's "subscription billing", the
#: default for campaigns since 2023 and what the fixtures show) or on the 1st of every month (the older billing).
BILLING_MODES: tuple[str, ...] = ("anniversary", "first_of_month")
#: Patreon retries a declined charge "up to six times within the month they are declined".
DECLINE_RETRIES = 6
#: the sandbox's spacing of those retries (Patreon does not publish one; six 4-day steps fit in any month).
DECLINE_RETRY_INTERVAL = timedelta(days=4)

#: ``transport(uri, headers, body) -> HTTP status``; raising counts as a failed attempt.
Transport = Callable[[str, dict[str, str], bytes], int]


class SandboxError(ValueError):
    """A scenario or control request the sandbox cannot carry out (bad argument, impossible transition)."""


class NotFoundError(SandboxError, LookupError):
    """A tier, user, member, webhook or fault that does not exist."""


class OAuthError(Exception):
    """An OAuth error the token endpoint reports as ``{"error": error}`` with ``status``."""

    def __init__(self, error: str, status: int = 400, description: str | None = None) -> None:
        super().__init__(description or error)
        self.error = error
        self.status = status
        self.description = description


# ---------------------------------------------------------------------------------------------------------------
# dates


def midnight(dt: datetime) -> datetime:
    """``dt`` at 00:00 of its day."""
    return dt.replace(hour=0, minute=0, second=0, microsecond=0)


def aware(dt: datetime) -> datetime:
    """``dt`` in UTC. :raises SandboxError: a naive datetime."""
    if dt.tzinfo is None:
        raise SandboxError("datetimes must be timezone-aware")
    return dt.astimezone(UTC)


def iso(dt: datetime | None) -> str | None:
    """Patreon's timestamp format: ``2023-12-29T05:26:19.000+00:00`` (milliseconds, explicit UTC offset).

    ``dt`` must be aware UTC (every datetime of the sandbox is).
    """
    if dt is None:
        return None
    return dt.isoformat(timespec="milliseconds")


# ---------------------------------------------------------------------------------------------------------------
# records


@dataclass(eq=False, slots=True)
class Tier:
    """A reward tier of the campaign. ``patron_count`` is computed when rendered."""

    id: str
    title: str
    amount_cents: int
    created_at: datetime
    description: str = ""
    published: bool = True
    discord_role_ids: list[str] | None = None
    user_limit: int | None = None
    requires_shipping: bool = False
    image_url: str | None = None
    post_count: int = 0
    url: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A plain summary for the ``/_sandbox`` endpoints."""
        return {"id": self.id, "title": self.title, "amount_cents": self.amount_cents, "published": self.published}


@dataclass(eq=False, slots=True)
class User:
    """A Patreon user (the person, not their membership)."""

    id: str
    email: str | None
    full_name: str
    first_name: str
    last_name: str
    created: datetime
    email_verified: bool = True
    vanity: str | None = None
    about: str | None = None
    is_creator: bool = False
    hide_pledges: bool = True
    like_count: int = 0
    #: rendered attributes, cached until the user changes (see :mod:`.documents`).
    cache: dict[str, Any] | None = field(default=None, repr=False)
    #: (rendering signature, JSON text) of the last listing render, cached until the user changes.
    fragment: tuple[int, str] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """A plain summary for the ``/_sandbox`` endpoints."""
        return {
            "id": self.id,
            "email": self.email,
            "full_name": self.full_name,
            "email_verified": self.email_verified,
            "is_creator": self.is_creator,
        }


@dataclass(eq=False, slots=True)
class Address:
    """A shipping address a member entered for the campaign."""

    id: str
    addressee: str | None = None
    line_1: str | None = None
    line_2: str | None = None
    postal_code: str | None = None
    city: str = ""
    state: str | None = None
    country: str = "US"
    phone_number: str | None = None
    created_at: datetime | None = None
    confirmed: bool = True


@dataclass(eq=False, slots=True)
class Member:
    """One member of the campaign: a compact record, rendered lazily and cached until it changes.

    ``amount_cents`` is the monthly pledge; a charge (and an annual pledge's entitled amount) is
    :attr:`period_cents`, ``amount_cents * cadence``.
    """

    id: str
    user_id: str
    campaign_id: str
    seq: int
    patron_status: str | None = None
    last_charge_status: str | None = None
    last_charge_date: datetime | None = None
    next_charge_date: datetime | None = None
    entitled_cents: int = 0
    tier_ids: tuple[str, ...] = ()
    amount_cents: int = 0
    lifetime_cents: int = 0
    pledge_start: datetime | None = None
    cadence: int | None = None
    #: day of the month charges fall on.
    anchor_day: int = 1
    is_free_trial: bool = False
    is_gifted: bool = False
    is_follower: bool = False
    note: str = ""
    #: when true, every charge (by the clock or on recovery) is declined until :meth:`Sandbox.recover`.
    fail_charges: bool = False
    trial_ends_at: datetime | None = None
    gift_ends_at: datetime | None = None
    address: Address | None = None
    #: when the charge now declined was first declined (the retries count from it); None when not declined.
    declined_at: datetime | None = None
    #: retries of that charge made so far.
    retries_done: int = 0
    #: the member deleted their pledge while declined: still listed ``declined_patron``, but nothing is owed.
    pledge_deleted: bool = False
    #: tiers held back while the start-of-month charge run is pending (see the ``start_of_month`` scenario).
    held_tier_ids: tuple[str, ...] | None = None
    #: bumped on every change.
    version: int = 0
    #: the tiers this member is counted under in the patron counts (None: not counted as an active patron).
    counted_tiers: tuple[str, ...] | None = field(default=None, repr=False)
    #: rendered attributes, cached until the member changes (see :mod:`.documents`).
    cache: dict[str, Any] | None = field(default=None, repr=False)
    #: (rendering signature, JSON text) of the last listing render, cached until the member changes.
    fragment: tuple[int, str] | None = field(default=None, repr=False)

    @property
    def period_cents(self) -> int:
        """What one billing period costs: the monthly amount times the cadence (an annual pledge's annual total)."""
        return self.amount_cents * (self.cadence or 1)

    @property
    def will_pay_cents(self) -> int:
        """``will_pay_amount_cents``: what the next charge takes (0 for former, free, trial, gifted and cancelled
        members)."""
        if (
            self.patron_status not in ("active_patron", "declined_patron")
            or self.is_free_trial
            or self.is_gifted
            or self.pledge_deleted
        ):
            return 0
        return self.period_cents

    @property
    def next_retry_date(self) -> datetime | None:
        """When the clock next retries a declined charge (None: not declined, cancelled, or retries exhausted)."""
        if self.patron_status != "declined_patron" or self.pledge_deleted or self.declined_at is None:
            return None
        if self.retries_done >= DECLINE_RETRIES:
            return None
        at = self.declined_at + DECLINE_RETRY_INTERVAL * (self.retries_done + 1)
        if (at.year, at.month) != (self.declined_at.year, self.declined_at.month):
            return None
        return at

    def to_dict(self) -> dict[str, Any]:
        """A plain summary for the ``/_sandbox`` endpoints (not a JSON:API document)."""
        return {
            "id": self.id,
            "user_id": self.user_id,
            "patron_status": self.patron_status,
            "last_charge_status": self.last_charge_status,
            "last_charge_date": iso(self.last_charge_date),
            "next_charge_date": iso(self.next_charge_date),
            "currently_entitled_amount_cents": self.entitled_cents,
            "currently_entitled_tier_ids": list(self.tier_ids),
            "will_pay_amount_cents": self.will_pay_cents,
            "amount_cents": self.amount_cents,
            "campaign_lifetime_support_cents": self.lifetime_cents,
            "pledge_relationship_start": iso(self.pledge_start),
            "pledge_cadence": self.cadence,
            "is_free_trial": self.is_free_trial,
            "is_gifted": self.is_gifted,
            "fail_charges": self.fail_charges,
            "trial_ends_at": iso(self.trial_ends_at),
            "gift_ends_at": iso(self.gift_ends_at),
            "next_retry_date": iso(self.next_retry_date),
            "pledge_deleted": self.pledge_deleted,
        }


@dataclass(eq=False, slots=True)
class Campaign:
    """The creator's campaign (the sandbox has exactly one)."""

    id: str
    creator_id: str
    vanity: str
    created_at: datetime
    published_at: datetime
    creation_name: str = "sandbox things"
    summary: str | None = None
    one_liner: str | None = None
    pay_per_name: str = "month"
    is_monthly: bool = True
    is_charged_immediately: bool = True
    is_nsfw: bool = False
    discord_server_id: str | None = None
    google_analytics_id: str | None = None
    #: one of :data:`BILLING_MODES` (not an API attribute: Patreon does not expose it).
    billing: str = "anniversary"

    @property
    def pledge_url(self) -> str:
        """Relative (to the Patreon host) checkout URL, like Patreon's ``/checkout/<campaign id>``."""
        return f"/checkout/{self.id}"


@dataclass(eq=False, slots=True)
class Token:
    """An OAuth token pair issued to ``user_id`` for ``client_id``."""

    access_token: str
    refresh_token: str
    user_id: str
    client_id: str
    scopes: frozenset[str]
    issued_at: datetime
    #: ``None``: never expires (the creator's token).
    expires_at: datetime | None
    expires_in: int

    def __repr__(self) -> str:
        return f"Token(user_id={self.user_id!r}, scopes={sorted(self.scopes)!r}, expires_at={self.expires_at!r})"

    def response(self) -> dict[str, Any]:
        """The token endpoint's JSON answer."""
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "expires_in": self.expires_in,
            "scope": " ".join(sorted(self.scopes)),
            "token_type": "Bearer",
            "version": "0.0.1",
        }


@dataclass(eq=False, slots=True)
class AuthCode:
    """An authorization code: single use, bound to client and redirect URI, optionally to a PKCE challenge."""

    code: str
    client_id: str
    redirect_uri: str
    user_id: str
    scopes: frozenset[str]
    expires_at: datetime
    code_challenge: str | None = None
    code_challenge_method: str | None = None
    used: bool = False


@dataclass(eq=False, slots=True)
class Webhook:
    """A webhook registered by the OAuth client on the campaign, with its queue of undelivered events."""

    id: str
    uri: str
    triggers: list[str]
    secret: str
    campaign_id: str
    client_id: str
    paused: bool = False
    num_consecutive_times_failed: int = 0
    last_attempted_at: datetime | None = None
    queue: deque[QueuedEvent] = field(default_factory=deque, repr=False)
    #: ``time.monotonic()`` before which the background worker will not retry (flush ignores it).
    retry_not_before: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A plain summary for the ``/_sandbox`` endpoints."""
        return {
            "id": self.id,
            "uri": self.uri,
            "triggers": list(self.triggers),
            "paused": self.paused,
            "num_consecutive_times_failed": self.num_consecutive_times_failed,
            "last_attempted_at": iso(self.last_attempted_at),
            "queued": len(self.queue),
        }


@dataclass(eq=False, slots=True)
class MemberEvent:
    """One ``members:*`` event the sandbox fired (whether or not any webhook listened)."""

    event: str
    member_id: str
    at: datetime
    version: int


@dataclass(eq=False, slots=True)
class Fault:
    """A fault injected into the members listing (see :meth:`Sandbox.add_fault`)."""

    id: str
    kind: str
    #: 1-based page number it hits; ``None``: every page.
    page: int | None = None
    #: how many more times it fires; ``None``: every time (persistent, e.g. an exhausted rate limit).
    times: int | None = 1
    status: int = 500
    retry_after: int = 30
    seconds: float = 1.0
    count: int = 1
    hits: int = 0
    #: member ids a ``drop`` fault left out, in order.
    dropped_ids: list[str] = field(default_factory=list)
    #: what a ``drift`` fault changes on the page's members: an attribute (``"patron_status"``) or a relationship
    #: (``"relationships.currently_entitled_tiers"``).
    field: str | None = None
    #: ``drift``: the value served instead (an attribute's value, or a relationship's ``data``); ``None`` is null.
    value: Any = None
    #: ``drift``: leave the attribute or relationship out altogether instead of serving ``value``.
    remove: bool = False
    #: ``drift``: change only members whose ``patron_status`` is this (``None``: every member of the page).
    status_of: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A plain summary for the ``/_sandbox`` endpoints."""
        return {
            "id": self.id,
            "kind": self.kind,
            "page": self.page,
            "times": self.times,
            "status": self.status,
            "retry_after": self.retry_after,
            "seconds": self.seconds,
            "count": self.count,
            "hits": self.hits,
            "dropped_ids": list(self.dropped_ids),
            "field": self.field,
            "value": self.value,
            "remove": self.remove,
            "status_of": self.status_of,
        }


@dataclass(eq=False, slots=True)
class QueuedEvent:
    """An event waiting in one webhook's queue."""

    id: str
    event: str
    member_id: str
    body: bytes
    created_at: datetime
    attempts: int = 0


@dataclass(eq=False, slots=True)
class Delivery:
    """One delivery attempt, as logged in ``sandbox.deliveries``."""

    webhook_id: str
    uri: str
    event: str
    member_id: str
    event_id: str
    headers: dict[str, str]
    body: bytes = field(repr=False)
    #: the receiver's status, or None when the transport raised.
    status: int | None
    error: str | None
    attempted_at: datetime
    #: 1 for the first attempt of this event, 2 for the first retry...
    attempt: int

    @property
    def ok(self) -> bool:
        """The receiver answered 2xx."""
        return self.status is not None and 200 <= self.status < 300

    @property
    def signature(self) -> str:
        """The ``X-Patreon-Signature`` header sent."""
        return self.headers["X-Patreon-Signature"]

    def json(self) -> Any:
        """The body, parsed."""
        return json.loads(self.body)

    def to_dict(self) -> dict[str, Any]:
        """A plain summary for the ``/_sandbox`` endpoints (body as text)."""
        return {
            "webhook_id": self.webhook_id,
            "uri": self.uri,
            "event": self.event,
            "member_id": self.member_id,
            "event_id": self.event_id,
            "status": self.status,
            "error": self.error,
            "ok": self.ok,
            "attempt": self.attempt,
            "attempted_at": self.attempted_at.isoformat(),
            "headers": dict(self.headers),
            "body": self.body.decode("utf-8"),
        }
