"""The in-memory Patreon behind the sandbox: campaign, tiers, users, members, tokens, webhooks, clock and faults.

No Flask here: :class:`Sandbox` is a plain, thread-safe object (one :class:`threading.RLock`, ``sandbox.lock``) that
the Flask app in :mod:`.app` serves and that tests drive directly. Everything Patreon would decide on its own
(charging each month, declines, free trials ending) happens when the sandbox clock moves (:meth:`Sandbox.advance`),
never in real time, so tests are deterministic.

Money is integer cents; every datetime is timezone-aware UTC.

Billing follows Patreon's (each behaviour, with its public source, is in ``docs/patreon-behaviour.rst``; the named
scenarios that replay the rarer ones are in :mod:`.scenarios`):

* Annual pledges (``cadence=12``): ``currently_entitled_amount_cents``, ``will_pay_amount_cents`` and each charge
  are the annual total, twelve times the monthly amount (Patreon reports the annual total).
* A new paid pledge is charged at once (the default campaign has ``is_charged_immediately`` true). The next charge
  falls at midnight UTC on the same day of the month ``cadence`` months later (``billing="anniversary"``, like the
  fixtures), or on the 1st of the next month for monthly pledges of a ``billing="first_of_month"`` campaign.
* A declined charge is retried by the clock every :data:`DECLINE_RETRY_INTERVAL`, at most :data:`DECLINE_RETRIES`
  times, within the calendar month of the decline; after that the member stays ``declined_patron`` and is never
  charged again until they pay (:meth:`Sandbox.recover`). The entitled amount and tiers are kept meanwhile.
* Cancelling sets ``former_patron``, ``last_charge_status`` "Deleted", entitled 0, no tiers and keeps
  ``next_charge_date``, exactly like the ``members:pledge:delete`` fixture; a declined member who cancels stays
  listed as ``declined_patron`` ("Declined"), with nothing entitled and nothing to pay.
* Tier changes take effect at once and charge nothing.
* The creator's access token does not expire (real ones do, monthly; a sandbox whose clock jumps months would
  otherwise lock its own tests out), unless a test kills it early (:meth:`Sandbox.expire_creator_token`). Users'
  tokens expire after ``access_token_ttl`` seconds of sandbox time.
* Patreon's per-token limit (100 requests a minute) is off unless :meth:`Sandbox.limit_tokens` turns it on: tests
  that make many requests fast would otherwise wait on real time.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import heapq
import itertools
import random
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from ..dates import add_months
from ..patreon.types import MEMBER_TRIGGERS
from .documents import iso as _iso
from .webhooks import Delivery, QueuedEvent, Transport, WebhookDispatcher, default_transport

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
    "Fault",
    "Member",
    "MemberEvent",
    "NotFoundError",
    "OAuthError",
    "Sandbox",
    "SandboxError",
    "Tier",
    "Token",
    "User",
    "Webhook",
    "add_months",
    "config_from_credentials",
]

def config_from_credentials(credentials: Mapping[str, str]) -> dict[str, Any]:
    """The host-app config keys for a sandbox known by its :meth:`Sandbox.credentials` (what
    ``python -m flask_patronlock.sandbox`` prints first), e.g. one served by another process."""
    return {
        "PATRONLOCK_CLIENT_ID": credentials["client_id"],
        "PATRONLOCK_CLIENT_SECRET": credentials["client_secret"],
        "PATRONLOCK_CREATOR_ACCESS_TOKEN": credentials["creator_access_token"],
        "PATRONLOCK_CAMPAIGN_ID": credentials["campaign_id"],
        "PATRONLOCK_WEBHOOK_SECRETS": [credentials["webhook_secret"]],
        "PATRONLOCK_API_BASE_URL": credentials["api_base"],
        "PATRONLOCK_OAUTH_BASE_URL": credentials["oauth_base"],
    }


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

_CURSOR_PREFIX = "plsb1"

#: how a campaign bills monthly pledges: on each patron's anniversary day (Patreon's "subscription billing", the
#: default for campaigns since 2023 and what the fixtures show) or on the 1st of every month (the older billing).
BILLING_MODES: tuple[str, ...] = ("anniversary", "first_of_month")
#: Patreon retries a declined charge "up to six times within the month they are declined".
DECLINE_RETRIES = 6
#: the sandbox's spacing of those retries (Patreon does not publish one; six 4-day steps fit in any month).
DECLINE_RETRY_INTERVAL = timedelta(days=4)


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


def _midnight(dt: datetime) -> datetime:
    return dt.replace(hour=0, minute=0, second=0, microsecond=0)


def _aware(dt: datetime) -> datetime:
    if dt.tzinfo is None:
        raise SandboxError("datetimes must be timezone-aware")
    return dt.astimezone(UTC)


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
            "last_charge_date": _iso(self.last_charge_date),
            "next_charge_date": _iso(self.next_charge_date),
            "currently_entitled_amount_cents": self.entitled_cents,
            "currently_entitled_tier_ids": list(self.tier_ids),
            "will_pay_amount_cents": self.will_pay_cents,
            "amount_cents": self.amount_cents,
            "campaign_lifetime_support_cents": self.lifetime_cents,
            "pledge_relationship_start": _iso(self.pledge_start),
            "pledge_cadence": self.cadence,
            "is_free_trial": self.is_free_trial,
            "is_gifted": self.is_gifted,
            "fail_charges": self.fail_charges,
            "trial_ends_at": _iso(self.trial_ends_at),
            "gift_ends_at": _iso(self.gift_ends_at),
            "next_retry_date": _iso(self.next_retry_date),
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
            "last_attempted_at": _iso(self.last_attempted_at),
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


# ---------------------------------------------------------------------------------------------------------------
# the sandbox


class Sandbox:
    """All the state of one offline Patreon: a campaign with tiers, users, members, an OAuth client, tokens,
    webhooks, a controllable clock and injectable faults.

    :param campaign_id: the campaign's id (default: derived from ``seed``).
    :param client_id: the OAuth client id (default: random).
    :param client_secret: the OAuth client secret (default: random).
    :param creator_access_token: the creator's access token, with every scope, never expiring (default: random).
    :param creator_refresh_token: its refresh token (default: random).
    :param webhook_secret: the secret of webhooks registered without one, including through the API (default:
        random), so a host app configured with :attr:`config` verifies every delivery.
    :param now: the sandbox clock's start (default: the real time now, to the second). The clock only moves
        when told to.
    :param seed: seeds ids and :meth:`generate_members`; the same seed gives the same ids and members.
    :param access_token_ttl: seconds a user's access token lives (``expires_in``), default 31 days.
    :param code_ttl: seconds an authorization code lives, default 10 minutes.
    :param max_webhook_failures: consecutive failed deliveries after which a webhook is paused.
    :param webhook_retry_delay: the background worker's first retry delay in seconds (doubles, capped at 60).
    :param redirect_uris: allowed redirect URIs for the authorize endpoint; ``None`` allows any.
    :param default_tiers: create Free 0, Bronze 300, Silver 500 and Gold 1000 cents.
    :param billing: ``"anniversary"`` (default) or ``"first_of_month"``; see :data:`BILLING_MODES`.
    """

    def __init__(
        self,
        *,
        campaign_id: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        creator_access_token: str | None = None,
        creator_refresh_token: str | None = None,
        webhook_secret: str | None = None,
        now: datetime | None = None,
        seed: int = 0,
        access_token_ttl: int = 2678400,
        code_ttl: int = 600,
        max_webhook_failures: int = 5,
        webhook_retry_delay: float = 1.0,
        redirect_uris: Iterable[str] | None = None,
        default_tiers: bool = True,
        billing: str = "anniversary",
    ) -> None:
        if billing not in BILLING_MODES:
            raise SandboxError(f"billing must be one of {', '.join(BILLING_MODES)}")
        #: the one lock guarding all state; hold it to read several things consistently.
        self.lock = threading.RLock()
        self.seed = seed
        self._rng = random.Random(seed)
        self._now = _aware(now) if now is not None else datetime.now(UTC).replace(microsecond=0)
        self.access_token_ttl = access_token_ttl
        self.code_ttl = code_ttl
        self.max_webhook_failures = max_webhook_failures
        self.webhook_retry_delay = webhook_retry_delay
        self.redirect_uris: set[str] | None = set(redirect_uris) if redirect_uris is not None else None

        self.client_id = client_id or secrets.token_urlsafe(48)
        self.client_secret = client_secret or secrets.token_urlsafe(48)
        self.webhook_secret = webhook_secret or secrets.token_urlsafe(48)

        #: the sandbox's public URL (set by :class:`~.server.SandboxServer` or by hand); see :attr:`base_url`.
        self._url: str | None = None
        self._learned_url: str | None = None

        self._user_ids = itertools.count(100_000_000 + self._rng.randrange(1_000_000) * 10)
        self._tier_ids = itertools.count(20_000_000 + self._rng.randrange(1_000_000) * 10)
        self._webhook_ids = itertools.count(1000 + self._rng.randrange(1000))
        self._address_ids = itertools.count(1_500_000 + self._rng.randrange(100_000))
        self._member_seq = itertools.count(1)
        self._fault_ids = itertools.count(1)
        self._email_counter = itertools.count(1)

        self._users: dict[str, User] = {}
        self._users_by_email: dict[str, User] = {}
        self._tiers: dict[str, Tier] = {}
        self._members: dict[str, Member] = {}
        self._members_by_user: dict[str, Member] = {}
        #: members ordered by ``seq`` (the listing order) and the parallel list of seqs for bisect.
        self._order: list[Member] = []
        self._order_seqs: list[int] = []
        self._tokens: dict[str, Token] = {}
        self._refresh_tokens: dict[str, Token] = {}
        self._codes: dict[str, AuthCode] = {}
        self._webhooks: dict[str, Webhook] = {}
        #: the faults in force, oldest first.
        self.faults: list[Fault] = []
        self._api_down = False
        #: what the clock does at a set time, beside the members' own billing (scenarios schedule these):
        #: a heap of (when, order, action); an action gets the time and returns the members it changed.
        self._timers: list[tuple[datetime, int, Callable[[datetime], list[Member]]]] = []
        self._timer_order = itertools.count()
        #: member attributes every served document shows as null for now (see ``charge_dates_missing``).
        self.blanked_attributes: frozenset[str] = frozenset()
        #: bumped on every member change.
        self.revision = 0
        #: active patrons per tier id and of the campaign, kept up to date on every change.
        self._tier_counts: dict[str, int] = {}
        self._patron_count = 0
        #: :attr:`events`, :attr:`deliveries` and :attr:`api_log` keep the latest ``log_limit`` entries.
        self.log_limit = 100_000
        #: every ``/api/...`` request answered, in order: ``(method, path, status)`` (token calls included).
        self.api_log: list[tuple[str, str, int]] = []
        #: the per-token limit in force (:meth:`limit_tokens`): ``(max_calls, period)``, or ``None``: no limit.
        self.token_rate_limit: tuple[int, float] | None = None
        #: the clock of :meth:`limit_tokens` (seconds; real time unless a test injects its own).
        self.rate_clock: Callable[[], float] = time.monotonic
        self._token_calls: dict[str, deque[float]] = {}

        #: every ``members:*`` event fired, in order (also when no webhook listens).
        self.events: list[MemberEvent] = []
        #: every webhook delivery attempt, in order.
        self.deliveries: list[Delivery] = []
        #: how deliveries are sent: ``transport(uri, headers, body) -> HTTP status``; swap it to deliver into a
        #: Flask test client. An exception or a non-2xx status is a failed attempt.
        self.transport: Transport = default_transport
        self.dispatcher = WebhookDispatcher(self)

        created = self._now - timedelta(days=400)
        creator = self._new_user(
            email="creator@example.com", full_name="Sandbox Creator", created=created, is_creator=True
        )
        creator.vanity = "sandboxcreator"
        self.campaign = Campaign(
            id=campaign_id or str(10_000_000 + self._rng.randrange(89_999_999)),
            creator_id=creator.id,
            vanity="sandboxcreator",
            created_at=created,
            published_at=created + timedelta(hours=1),
            billing=billing,
        )
        self.creator = creator
        self.creator_access_token = creator_access_token or secrets.token_urlsafe(32)
        self.creator_refresh_token = creator_refresh_token or secrets.token_urlsafe(32)
        creator_token = Token(
            access_token=self.creator_access_token,
            refresh_token=self.creator_refresh_token,
            user_id=creator.id,
            client_id=self.client_id,
            scopes=frozenset(CREATOR_SCOPES),
            issued_at=self._now,
            expires_at=None,
            expires_in=access_token_ttl,
        )
        self._tokens[creator_token.access_token] = creator_token
        self._refresh_tokens[creator_token.refresh_token] = creator_token
        if default_tiers:
            for title, cents in (("Free", 0), ("Bronze", 300), ("Silver", 500), ("Gold", 1000)):
                self.add_tier(title, cents, created_at=created)

    # -- clock -------------------------------------------------------------------------------------------------

    @property
    def now(self) -> datetime:
        """The sandbox clock (aware UTC). It moves only through :meth:`advance`, :meth:`advance_months` and
        :meth:`travel_to`."""
        return self._now

    def advance(self, *, days: float = 0, hours: float = 0, minutes: float = 0, seconds: float = 0) -> list[Member]:
        """Move the clock forward and let Patreon do what falls due: charges, declines, trial and gift ends.

        Each active member whose ``next_charge_date`` passes is charged (``Paid``, ``last_charge_date`` the due
        date, lifetime support up by the charge, next charge ``cadence`` months later), possibly several times;
        members with ``fail_charges`` are declined instead; free trials whose end passes convert to paid pledges
        (and are charged); gifts whose end passes lapse. Every change fires ``members:update``.

        :returns: the members that changed, in the order they were processed.
        """
        delta = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        if delta < timedelta(0):
            raise SandboxError("the clock only moves forward; use travel_to() to set it")
        with self.lock:
            return self._run_clock(self._now + delta)

    def advance_months(self, months: int = 1) -> list[Member]:
        """Move the clock ``months`` calendar months forward (see :meth:`advance`)."""
        if months < 0:
            raise SandboxError("months must be >= 0")
        with self.lock:
            return self._run_clock(add_months(self._now, months))

    def travel_to(self, when: datetime) -> list[Member]:
        """Set the clock. Moving forward processes what falls due (see :meth:`advance`); moving back does not."""
        when = _aware(when)
        with self.lock:
            if when <= self._now:
                self._now = when
                return []
            return self._run_clock(when)

    def _run_clock(self, target: datetime) -> list[Member]:
        changed: list[Member] = []
        while self._timers and self._timers[0][0] <= target:
            at, _, action = heapq.heappop(self._timers)
            changed += self._run_members(max(at, self._now))
            self._now = max(at, self._now)
            changed += action(self._now)
        changed += self._run_members(target)
        self._now = target
        return list(dict.fromkeys(changed))

    def schedule(self, at: datetime, action: Callable[[datetime], list[Member]]) -> None:
        """Have the clock call ``action(at)`` when it passes ``at`` (after the members' own billing up to then);
        the action returns the members it changed. Scenarios use it for what Patreon does later on its own."""
        with self.lock:
            heapq.heappush(self._timers, (_aware(at), next(self._timer_order), action))

    def _run_members(self, target: datetime) -> list[Member]:
        """Everything the members' billing does up to ``target``, in time order per member."""
        changed: list[Member] = []
        for member in list(self._order):
            touched = False
            if member.is_free_trial and member.trial_ends_at is not None and member.trial_ends_at <= target:
                self._convert_trial(member, member.trial_ends_at)
                touched = True
            if member.is_gifted and member.gift_ends_at is not None and member.gift_ends_at <= target:
                self._end_gift(member, member.gift_ends_at)
                touched = True
            while True:
                if (
                    member.patron_status == "active_patron"
                    and not member.is_free_trial
                    and not member.is_gifted
                    and member.amount_cents > 0
                    and member.next_charge_date is not None
                    and member.next_charge_date <= target
                ):
                    self._charge(member, member.next_charge_date)
                    touched = True
                    continue
                retry = member.next_retry_date
                if retry is not None and retry <= target:
                    member.retries_done += 1
                    self._charge(member, retry)
                    touched = True
                    continue
                break
            if touched:
                changed.append(member)
        return changed

    def _next_charge_after(self, member: Member, at: datetime) -> datetime:
        """The charge after one made at ``at``: the 1st of next month (monthly pledges of a first-of-month
        campaign), else the same day of the month ``cadence`` months on; midnight UTC."""
        cadence = member.cadence or 1
        if cadence == 1 and self.campaign.billing == "first_of_month":
            return _midnight(add_months(at, 1, 1))
        return _midnight(add_months(at, cadence, member.anchor_day))

    def _charge(self, member: Member, at: datetime) -> bool:
        """Charge one billing period at ``at``; fires ``members:update``. False when declined (a first decline
        starts the retries; a failed retry counts one)."""
        member.last_charge_date = at
        if member.fail_charges:
            if member.patron_status != "declined_patron" or member.declined_at is None:
                member.declined_at = at
                member.retries_done = 0
            member.last_charge_status = "Declined"
            member.patron_status = "declined_patron"
            self._changed(member, "members:update")
            return False
        member.last_charge_status = "Paid"
        member.patron_status = "active_patron"
        member.declined_at = None
        member.retries_done = 0
        member.lifetime_cents += member.period_cents
        member.entitled_cents = member.period_cents
        if member.held_tier_ids is not None:
            member.tier_ids = member.held_tier_ids
            member.held_tier_ids = None
        member.next_charge_date = self._next_charge_after(member, at)
        self._changed(member, "members:update")
        return True

    def _convert_trial(self, member: Member, at: datetime) -> None:
        member.is_free_trial = False
        member.trial_ends_at = None
        member.cadence = member.cadence or 1
        member.anchor_day = at.day
        self._charge(member, at)

    def _end_gift(self, member: Member, at: datetime) -> None:
        member.gift_ends_at = None
        member.patron_status = "former_patron"
        member.entitled_cents = 0
        member.tier_ids = ()
        member.next_charge_date = None
        self._changed(member, "members:pledge:delete", "members:update")

    # -- URLs and host-app config --------------------------------------------------------------------------------

    @property
    def url(self) -> str | None:
        """The URL the sandbox is served at (scheme, host, port and any mount prefix, no trailing slash), or None."""
        return self._url

    @url.setter
    def url(self, value: str | None) -> None:
        with self.lock:
            self._url = value.rstrip("/") if value else None
            self._clear_caches()

    @property
    def base_url(self) -> str:
        """The URL used in links of documents rendered outside a request (webhook bodies): :attr:`url`, else the
        root the first request came in on, else ``http://localhost``."""
        return self._url or self._learned_url or "http://localhost"

    def learn_url(self, url: str) -> None:
        """Remember where requests arrive (called by the app on its first request) unless :attr:`url` is set."""
        if self._learned_url is None:
            with self.lock:
                self._learned_url = url.rstrip("/")
                if self._url is None:
                    self._clear_caches()

    @property
    def config(self) -> dict[str, Any]:
        """The host-app config keys pointing at this sandbox (``app.config.update(sandbox.config)``).

        :raises RuntimeError: if the sandbox has no URL yet (serve it with :class:`~.server.SandboxServer`, or set
            :attr:`url`).
        """
        if (self._url or self._learned_url) is None:
            raise RuntimeError("the sandbox has no URL yet: serve it with SandboxServer(sandbox).start() or set .url")
        return config_from_credentials(self.credentials())

    def credentials(self) -> dict[str, str]:
        """The CLI's first line: ``api_base``, ``oauth_base``, campaign id, client credentials, tokens, secret."""
        return {
            "api_base": self.base_url,
            "oauth_base": self.base_url,
            "campaign_id": self.campaign.id,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "creator_access_token": self.creator_access_token,
            "creator_refresh_token": self.creator_refresh_token,
            "webhook_secret": self.webhook_secret,
        }

    def _clear_caches(self) -> None:
        for user in self._users.values():
            user.cache = user.fragment = None
        for member in self._members.values():
            member.cache = member.fragment = None

    # -- tiers ------------------------------------------------------------------------------------------------

    @property
    def tiers(self) -> list[Tier]:
        """The campaign's tiers, in creation order."""
        with self.lock:
            return list(self._tiers.values())

    def add_tier(
        self,
        title: str,
        amount_cents: int,
        *,
        description: str = "",
        published: bool = True,
        created_at: datetime | None = None,
        tier_id: str | None = None,
    ) -> Tier:
        """Add a tier; its ``url`` is ``/checkout/<campaign id>?rid=<tier id>`` like Patreon's."""
        if amount_cents < 0:
            raise SandboxError("amount_cents must be >= 0")
        with self.lock:
            tid = tier_id or str(next(self._tier_ids))
            if tid in self._tiers:
                raise SandboxError(f"tier {tid} exists")
            tier = Tier(
                id=tid,
                title=title,
                amount_cents=amount_cents,
                created_at=created_at or self._now,
                description=description,
                published=published,
                url=f"/checkout/{self.campaign.id}?rid={tid}",
            )
            self._tiers[tid] = tier
            self._tier_counts.setdefault(tid, 0)
            return tier

    def tier(self, ref: Tier | str | int) -> Tier:
        """A tier by object, id, or title (case-insensitive).

        :raises NotFoundError: no such tier.
        """
        if isinstance(ref, Tier):
            return ref
        with self.lock:
            key = str(ref)
            if key in self._tiers:
                return self._tiers[key]
            for tier in self._tiers.values():
                if tier.title.lower() == key.lower():
                    return tier
        raise NotFoundError(f"no tier {ref!r}")

    def tier_for_amount(self, amount_cents: int) -> Tier | None:
        """The highest published tier whose amount is at most ``amount_cents`` (what a pledge of that much
        entitles), or None."""
        with self.lock:
            best: Tier | None = None
            for tier in self._tiers.values():
                if (
                    tier.published
                    and tier.amount_cents <= amount_cents
                    and (best is None or tier.amount_cents > best.amount_cents)
                ):
                    best = tier
            return best

    def tier_patron_counts(self) -> tuple[dict[str, int], int]:
        """(active patrons per tier id, active patrons of the campaign), kept up to date incrementally."""
        return self._tier_counts, self._patron_count

    def _count(self, member: Member, gone: bool = False) -> None:
        """Move ``member``'s contribution to the patron counts to its current state (or out, if ``gone``)."""
        old = member.counted_tiers
        new = member.tier_ids if member.patron_status == "active_patron" and not gone else None
        if old == new:
            return
        counts = self._tier_counts
        if old is not None:
            self._patron_count -= 1
            for tid in old:
                counts[tid] = counts.get(tid, 0) - 1
        if new is not None:
            self._patron_count += 1
            for tid in new:
                counts[tid] = counts.get(tid, 0) + 1
        member.counted_tiers = new

    # -- users ------------------------------------------------------------------------------------------------

    def _new_user(
        self,
        *,
        email: str | None,
        full_name: str | None = None,
        email_verified: bool = True,
        created: datetime | None = None,
        is_creator: bool = False,
        user_id: str | None = None,
    ) -> User:
        uid = user_id or str(next(self._user_ids))
        if uid in self._users:
            raise SandboxError(f"user {uid} exists")
        if email is not None and email.lower() in self._users_by_email:
            raise SandboxError(f"a user with email {email!r} exists")
        if not full_name:
            local = (email or f"user{uid}").split("@", 1)[0]
            full_name = local.replace(".", " ").replace("_", " ").title()
        first, _, last = full_name.partition(" ")
        user = User(
            id=uid,
            email=email,
            full_name=full_name,
            first_name=first,
            last_name=last,
            created=created or self._now,
            email_verified=email_verified,
            is_creator=is_creator,
        )
        self._users[uid] = user
        if email is not None:
            self._users_by_email[email.lower()] = user
        return user

    def add_user(
        self,
        email: str | None = None,
        *,
        full_name: str | None = None,
        email_verified: bool = True,
        user_id: str | None = None,
    ) -> User:
        """A Patreon user with no membership (someone who can log in but never pledged).

        :param email: default ``patron<N>@example.com``.
        :param full_name: default derived from the email.
        :raises SandboxError: the email or id is taken.
        """
        with self.lock:
            return self._new_user(
                email=email or self._fresh_email(), full_name=full_name, email_verified=email_verified, user_id=user_id
            )

    def _fresh_email(self) -> str:
        while True:
            email = f"patron{next(self._email_counter)}@example.com"
            if email not in self._users_by_email:
                return email

    @property
    def users(self) -> list[User]:
        """Every user, creator first, in creation order."""
        with self.lock:
            return list(self._users.values())

    def user(self, ref: User | Member | str | int) -> User:
        """A user by object, member, id or email (case-insensitive).

        :raises NotFoundError: no such user.
        """
        if isinstance(ref, User):
            return ref
        with self.lock:
            if isinstance(ref, Member):
                return self._users[ref.user_id]
            key = str(ref)
            user = self._users.get(key) or self._users_by_email.get(key.lower())
            if user is None:
                raise NotFoundError(f"no user {ref!r}")
            return user

    def update_user(
        self,
        ref: User | str,
        *,
        email: str | None = None,
        full_name: str | None = None,
        email_verified: bool | None = None,
    ) -> User:
        """Change a user's email, name or verification; fires ``members:update`` for their membership."""
        with self.lock:
            user = self.user(ref)
            if email is not None and email.lower() != (user.email or "").lower():
                if email.lower() in self._users_by_email:
                    raise SandboxError(f"a user with email {email!r} exists")
                if user.email:
                    self._users_by_email.pop(user.email.lower(), None)
                user.email = email
                self._users_by_email[email.lower()] = user
            if full_name is not None:
                user.full_name = full_name
                user.first_name, _, user.last_name = full_name.partition(" ")
            if email_verified is not None:
                user.email_verified = email_verified
            user.cache = user.fragment = None
            member = self._members_by_user.get(user.id)
            if member is not None:
                self._changed(member, "members:update")
            return user

    # -- members ----------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        """How many members the campaign has."""
        return len(self._members)

    def __bool__(self) -> bool:  # an empty sandbox is still a sandbox (``sandbox or Sandbox()`` must not replace it)
        return True

    @property
    def members(self) -> list[Member]:
        """Every member in listing order."""
        with self.lock:
            return list(self._order)

    def iter_members(self) -> Iterator[Member]:
        """Members in listing order (a snapshot of the order, taken under the lock)."""
        with self.lock:
            order = list(self._order)
        return iter(order)

    def member(self, ref: Member | User | str | int) -> Member:
        """A member by object, member id, user (object, id or email).

        :raises NotFoundError: no such member.
        """
        if isinstance(ref, Member):
            return ref
        with self.lock:
            if isinstance(ref, User):
                found = self._members_by_user.get(ref.id)
            else:
                key = str(ref)
                found = self._members.get(key) or self._members_by_user.get(key)
                if found is None:
                    user = self._users_by_email.get(key.lower())
                    found = self._members_by_user.get(user.id) if user else None
            if found is None:
                raise NotFoundError(f"no member {ref!r}")
            return found

    def member_for_user(self, user_id: str) -> Member | None:
        """The user's membership of the campaign, if any."""
        with self.lock:
            return self._members_by_user.get(user_id)

    def _resolve_user(
        self, user: User | str | None, email: str | None, full_name: str | None, email_verified: bool
    ) -> User:
        if user is not None:
            return self.user(user)
        if email is not None:
            existing = self._users_by_email.get(email.lower())
            if existing is not None:
                return existing
        return self._new_user(email=email or self._fresh_email(), full_name=full_name, email_verified=email_verified)

    def _new_member(self, user: User) -> Member:
        seq = next(self._member_seq)
        member_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        while member_id in self._members:
            member_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        member = Member(
            id=member_id,
            user_id=user.id,
            campaign_id=self.campaign.id,
            seq=seq,
            pledge_start=self._now,
            anchor_day=self._now.day,
        )
        self._members[member.id] = member
        self._members_by_user[user.id] = member
        self._order.append(member)
        self._order_seqs.append(seq)
        return member

    def _resolve_amount(self, tier: Tier | str | int | None, amount_cents: int | None) -> tuple[Tier | None, int]:
        if tier is not None:
            t = self.tier(tier)
            return t, t.amount_cents if amount_cents is None else amount_cents
        if amount_cents is None:
            raise SandboxError("give a tier or an amount_cents")
        if amount_cents < 0:
            raise SandboxError("amount_cents must be >= 0")
        return self.tier_for_amount(amount_cents), amount_cents

    def add_patron(
        self,
        email: str | None = None,
        *,
        tier: Tier | str | int | None = None,
        amount_cents: int | None = None,
        full_name: str | None = None,
        email_verified: bool = True,
        cadence: int = 1,
        user: User | str | None = None,
        charge: bool = True,
        fail_charges: bool = False,
        address: dict[str, Any] | None = None,
        note: str = "",
    ) -> Member:
        """A user pledges to the campaign.

        :param email: the user's email; an existing user with it is reused, else a user is created (default email
            ``patron<N>@example.com``).
        :param tier: tier object, id or title. Without it, ``amount_cents`` picks the highest tier at or below it.
        :param amount_cents: the monthly pledge (default: the tier's amount).
        :param cadence: 1 (monthly) or 12 (annual: ``currently_entitled_amount_cents``, each charge and
            ``will_pay_amount_cents`` are the annual total, twelve times the monthly amount, as Patreon reports).
        :param user: an existing user (object, id or email) instead of ``email``.
        :param charge: charge at once (Patreon's ``is_charged_immediately``). If false the pledge is unpaid:
            ``last_charge_*`` null and the first charge falls due when the next one would (a month from now, or
            the 1st of next month for a first-of-month campaign).
        :param fail_charges: the first and every later charge is declined (until :meth:`recover`).
        :param address: shipping address fields (``line_1``, ``city``, ``country``...).
        :returns: the member. A pledge at a $0 tier makes a free member (``patron_status`` null).
        :raises SandboxError: the user is already an active or declined patron (use :meth:`change_tier`), or a
            bad argument.

        Fires ``members:create`` (new member) or ``members:update`` (a former member pledging again), then
        ``members:pledge:create``; then ``members:update`` for the charge.
        """
        if cadence not in (1, 12):
            raise SandboxError("cadence must be 1 or 12")
        with self.lock:
            resolved, amount = self._resolve_amount(tier, amount_cents)
            the_user = self._resolve_user(user, email, full_name, email_verified)
            member = self._members_by_user.get(the_user.id)
            if member is not None and self._pledges(member):
                raise SandboxError(f"user {the_user.id} already pledges; use change_tier()")
            is_new = member is None
            if member is None:
                member = self._new_member(the_user)
            self._reset_billing(member)
            member.note = note
            if address is not None:
                member.address = Address(id=str(next(self._address_ids)), created_at=self._now, **address)
            member.tier_ids = (resolved.id,) if resolved is not None else ()
            member.is_free_trial = False
            member.is_gifted = False
            member.trial_ends_at = member.gift_ends_at = None
            if amount == 0:
                member.patron_status = None
                member.amount_cents = 0
                member.entitled_cents = 0
                member.cadence = None
                member.last_charge_status = member.last_charge_date = member.next_charge_date = None
                self._changed(member, "members:create" if is_new else "members:update")
                return member
            member.amount_cents = amount
            member.cadence = cadence
            member.entitled_cents = member.period_cents
            member.patron_status = "active_patron"
            member.pledge_start = self._now
            member.anchor_day = self._now.day
            member.fail_charges = fail_charges
            if not charge:
                member.last_charge_status = member.last_charge_date = None
                member.next_charge_date = self._next_charge_after(member, self._now)
            self._changed(member, "members:create" if is_new else "members:update", "members:pledge:create")
            if charge:
                self._charge(member, self._now)
            return member

    def change_tier(
        self, ref: Member | User | str, tier: Tier | str | int | None = None, *, amount_cents: int | None = None
    ) -> Member:
        """Move a pledging member to another tier or amount (up or down), at once, without a charge.

        Fires ``members:pledge:update`` and ``members:update``.

        :raises SandboxError: the member does not pledge, or the new amount is 0 (use :meth:`cancel`).
        """
        with self.lock:
            member = self.member(ref)
            if not self._pledges(member):
                raise SandboxError(f"member {member.id} does not pledge; use add_patron()")
            resolved, amount = self._resolve_amount(tier, amount_cents)
            if amount <= 0:
                raise SandboxError("a pledge of 0 is a cancellation; use cancel()")
            member.amount_cents = amount
            member.entitled_cents = member.period_cents
            member.tier_ids = (resolved.id,) if resolved is not None else ()
            self._changed(member, "members:pledge:update", "members:update")
            return member

    def cancel(self, ref: Member | User | str) -> Member:
        """The member deletes their pledge: ``former_patron``, ``last_charge_status`` "Deleted", entitled 0, no
        tiers, ``next_charge_date`` kept (like the ``members:pledge:delete`` fixture). A declined member who cancels
        stays listed as ``declined_patron`` with ``last_charge_status`` "Declined" (Patreon keeps listing them so
        for months), with nothing entitled, ``will_pay_amount_cents`` 0 and no more retries.

        Fires ``members:pledge:delete`` and ``members:update``.
        """
        with self.lock:
            member = self.member(ref)
            if member.patron_status == "former_patron" or member.pledge_deleted:
                raise SandboxError(f"member {member.id} already cancelled")
            if member.patron_status == "declined_patron":
                member.pledge_deleted = True
            else:
                member.patron_status = "former_patron"
                member.last_charge_status = "Deleted"
            member.held_tier_ids = None
            member.entitled_cents = 0
            member.tier_ids = ()
            member.is_free_trial = False
            member.trial_ends_at = None
            member.gift_ends_at = None
            self._changed(member, "members:pledge:delete", "members:update")
            return member

    def decline(self, ref: Member | User | str) -> Member:
        """A charge is declined now: ``declined_patron``, ``last_charge_status`` "Declined", ``last_charge_date``
        now. Entitled amount and tiers are kept. The member's card keeps failing (``fail_charges``), so the clock's
        retries through the rest of the month fail too, until :meth:`recover` (or ``set_fail_charges(m, False)``
        before a retry).

        Fires ``members:update``.
        """
        with self.lock:
            member = self.member(ref)
            if not self._pledges(member):
                raise SandboxError(f"member {member.id} does not pledge")
            member.fail_charges = True
            member.declined_at = None
            self._charge(member, self._now)
            return member

    def recover(self, ref: Member | User | str) -> Member:
        """A declined member's payment goes through now: ``active_patron``, "Paid", ``last_charge_date`` now,
        lifetime support up, next charge ``cadence`` months on. Clears ``fail_charges``.

        Fires ``members:update``.
        """
        with self.lock:
            member = self.member(ref)
            if member.patron_status != "declined_patron" or member.pledge_deleted:
                raise SandboxError(f"member {member.id} is not declined (or cancelled)")
            member.fail_charges = False
            member.anchor_day = self._now.day
            self._charge(member, self._now)
            return member

    def set_fail_charges(self, ref: Member | User | str, fail: bool = True) -> Member:
        """Mark a member's future charges (and retries) to be declined (or not). Fires nothing by itself."""
        with self.lock:
            member = self.member(ref)
            member.fail_charges = fail
            return member

    def _new_pledge(
        self,
        tier: Tier | str | int,
        user: User | str | None,
        email: str | None,
        full_name: str | None,
        email_verified: bool,
    ) -> tuple[Tier, Member, bool]:
        """The tier, the user's member (made if new) set active, and whether it is new; a user who already pledges
        is an error. Call with the lock held."""
        resolved = self.tier(tier)
        the_user = self._resolve_user(user, email, full_name, email_verified)
        member = self._members_by_user.get(the_user.id)
        if member is not None and self._pledges(member):
            raise SandboxError(f"user {the_user.id} already pledges")
        is_new = member is None
        if member is None:
            member = self._new_member(the_user)
        self._reset_billing(member)
        member.patron_status = "active_patron"
        return resolved, member, is_new

    @staticmethod
    def _pledges(member: Member) -> bool:
        """The member has a live pledge (active or declined, not deleted)."""
        return member.patron_status in ("active_patron", "declined_patron") and not member.pledge_deleted

    @staticmethod
    def _reset_billing(member: Member) -> None:
        """Forget a previous pledge's decline, cancellation and held tiers (the member pledges anew)."""
        member.declined_at = None
        member.retries_done = 0
        member.pledge_deleted = False
        member.held_tier_ids = None

    def start_free_trial(
        self,
        email: str | None = None,
        *,
        tier: Tier | str | int,
        days: int = 7,
        user: User | str | None = None,
        full_name: str | None = None,
        email_verified: bool = True,
    ) -> Member:
        """A user starts a free trial of ``tier``: active, ``is_free_trial`` true, entitled to the tier, no charge,
        ``will_pay`` 0 and ``pledge_cadence`` null (like the free-trial fixture). When the clock passes the end
        the trial converts to a monthly pledge and is charged (declined if ``fail_charges``).

        Fires ``members:create`` or ``members:update``, then ``members:pledge:create``.
        """
        with self.lock:
            resolved, member, is_new = self._new_pledge(tier, user, email, full_name, email_verified)
            member.is_free_trial = True
            member.is_gifted = False
            member.trial_ends_at = self._now + timedelta(days=days)
            member.amount_cents = resolved.amount_cents
            member.entitled_cents = resolved.amount_cents
            member.tier_ids = (resolved.id,)
            member.cadence = None
            member.pledge_start = self._now
            member.last_charge_status = member.last_charge_date = member.next_charge_date = None
            self._changed(member, "members:create" if is_new else "members:update", "members:pledge:create")
            return member

    def gift_membership(
        self,
        email: str | None = None,
        *,
        tier: Tier | str | int,
        months: int = 1,
        user: User | str | None = None,
        full_name: str | None = None,
        email_verified: bool = True,
    ) -> Member:
        """Someone gifts ``months`` of ``tier``: active, ``is_gifted`` true, entitled to the tier, nothing to pay.
        When the clock passes the end the gift lapses (``former_patron``, entitled 0).

        Fires ``members:create`` or ``members:update``, then ``members:pledge:create``.
        """
        with self.lock:
            resolved, member, is_new = self._new_pledge(tier, user, email, full_name, email_verified)
            member.is_gifted = True
            member.is_free_trial = False
            member.gift_ends_at = add_months(self._now, months)
            member.amount_cents = resolved.amount_cents
            member.entitled_cents = resolved.amount_cents
            member.tier_ids = (resolved.id,)
            member.cadence = 1
            member.pledge_start = self._now
            member.last_charge_status = member.last_charge_date = None
            member.next_charge_date = None
            self._changed(member, "members:create" if is_new else "members:update", "members:pledge:create")
            return member

    def delete_member(self, ref: Member | User | str) -> Member:
        """Remove the membership entirely (it disappears from the listing). Fires ``members:delete`` with the last
        state of the member. The user stays."""
        with self.lock:
            member = self.member(ref)
            # counted out first: the body, like Patreon's, includes the campaign's patron_count without them (so it is
            # never byte-identical to an earlier delivery, which the receiver would take for a duplicate)
            self._changed(member, "members:delete", gone=True)
            del self._members[member.id]
            self._members_by_user.pop(member.user_id, None)
            index = bisect.bisect_left(self._order_seqs, member.seq)
            del self._order[index]
            del self._order_seqs[index]
            self.revision += 1
            return member

    def generate_members(self, count: int, *, seed: int | None = None) -> list[Member]:
        """Add ``count`` members quickly, deterministically for a given ``seed`` (default: the sandbox's), with a
        mix like a real campaign: about 75% active (half Bronze, 30% Silver, 20% Gold; a tenth of them annual;
        2% on a free trial, 1% gifted), 7% declined, 13% former and 5% free members, pledged over the last
        three years with charges and lifetime support to match. Fires no webhook events (they are existing
        patrons). Records are compact; documents are rendered when asked for and cached.
        """
        if count < 0:
            raise SandboxError("count must be >= 0")
        with self.lock:
            rng = random.Random(f"members:{self.seed if seed is None else seed}:{len(self._order_seqs)}")
            tiers = sorted((t for t in self._tiers.values() if t.amount_cents > 0), key=lambda t: t.amount_cents)
            free_tiers = [t for t in self._tiers.values() if t.amount_cents == 0]
            if not tiers:
                raise SandboxError("the campaign has no paid tier")
            weights = [0.5, 0.3, 0.2] if len(tiers) == 3 else [1.0 / len(tiers)] * len(tiers)
            cumulative = list(itertools.accumulate(weights))
            now = self._now
            first_of_month = self.campaign.billing == "first_of_month"
            created: list[Member] = []
            new_member = Member
            new_user = User
            users = self._users
            by_email = self._users_by_email
            for _ in range(count):
                uid = str(next(self._user_ids))
                email = f"patron{uid}@example.com"
                if email in by_email or uid in users:
                    raise SandboxError(f"generated user {uid} collides with an existing user")
                name = f"Patron {uid}"
                months = rng.randrange(0, 36)
                start = now - timedelta(days=months * 30 + rng.randrange(1, 29), seconds=rng.randrange(86400))
                user = new_user(
                    id=uid,
                    email=email,
                    full_name=name,
                    first_name="Patron",
                    last_name=uid,
                    created=start - timedelta(days=rng.randrange(1, 400)),
                    email_verified=rng.random() < 0.97,
                )
                users[uid] = user
                by_email[email] = user
                seq = next(self._member_seq)
                member_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
                while member_id in self._members:
                    member_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
                member = new_member(
                    id=member_id,
                    user_id=uid,
                    campaign_id=self.campaign.id,
                    seq=seq,
                    pledge_start=start,
                    anchor_day=start.day,
                )
                roll = rng.random()
                tier = tiers[bisect.bisect_left(cumulative, rng.random() * cumulative[-1])]
                periods = months + 1
                if roll < 0.05 and free_tiers:
                    member.tier_ids = (free_tiers[0].id,)
                else:
                    cadence = 12 if rng.random() < 0.1 else 1
                    # the charges so far: at the start, then every `cadence` months up to now
                    k = months // cadence
                    while k > 0 and add_months(start, k * cadence) > now:
                        k -= 1
                    while add_months(start, (k + 1) * cadence) <= now:
                        k += 1
                    periods = k + 1
                    member.cadence = cadence
                    member.amount_cents = tier.amount_cents
                    member.last_charge_date = add_months(start, k * cadence)
                    member.next_charge_date = _midnight(add_months(start, periods * cadence))
                    if cadence == 1 and first_of_month and start < _midnight(now.replace(day=1)):
                        # charged up front, then on every 1st since
                        member.last_charge_date = _midnight(now.replace(day=1))
                        member.next_charge_date = _midnight(add_months(now, 1, 1))
                    if member.next_charge_date <= now:  # the midnight of today: keep it in the future
                        member.next_charge_date = _midnight(now + timedelta(days=1))
                    if roll < 0.80:
                        member.patron_status = "active_patron"
                        member.last_charge_status = "Paid"
                        member.entitled_cents = tier.amount_cents * cadence
                        member.tier_ids = (tier.id,)
                        member.lifetime_cents = periods * cadence * tier.amount_cents
                        extra = rng.random()
                        if extra < 0.02:
                            member.is_free_trial = True
                            member.cadence = None
                            member.lifetime_cents = 0
                            member.last_charge_status = member.last_charge_date = member.next_charge_date = None
                            member.trial_ends_at = now + timedelta(days=rng.randrange(1, 8))
                        elif extra < 0.03:
                            member.is_gifted = True
                            member.lifetime_cents = 0
                            member.last_charge_status = member.last_charge_date = member.next_charge_date = None
                            member.gift_ends_at = now + timedelta(days=rng.randrange(1, 31))
                    elif roll < 0.87:
                        member.patron_status = "declined_patron"
                        member.last_charge_status = "Declined"
                        member.entitled_cents = tier.amount_cents * cadence
                        member.tier_ids = (tier.id,)
                        member.lifetime_cents = (periods - 1) * cadence * tier.amount_cents
                        member.fail_charges = True
                    else:
                        member.patron_status = "former_patron"
                        member.last_charge_status = "Deleted"
                        member.lifetime_cents = max(1, periods - 1) * cadence * tier.amount_cents
                self._members[member.id] = member
                self._members_by_user[uid] = member
                self._order.append(member)
                self._order_seqs.append(seq)
                self._count(member)
                created.append(member)
            self.revision += 1
            return created

    # -- change tracking and webhooks ------------------------------------------------------------------------------

    def _changed(self, member: Member, *events: str, gone: bool = False) -> None:
        member.version += 1
        member.cache = member.fragment = None
        self.revision += 1
        self._count(member, gone=gone)
        log = self.events
        for event in events:
            log.append(MemberEvent(event=event, member_id=member.id, at=self._now, version=member.version))
        if len(log) > self.log_limit:
            del log[: len(log) - self.log_limit]
        self.dispatcher.enqueue(member, events)

    @property
    def webhooks(self) -> list[Webhook]:
        """Registered webhooks, oldest first."""
        with self.lock:
            return list(self._webhooks.values())

    def webhook(self, webhook_id: str) -> Webhook:
        """A webhook by id. :raises NotFoundError: no such webhook."""
        with self.lock:
            try:
                return self._webhooks[str(webhook_id)]
            except KeyError:
                raise NotFoundError(f"no webhook {webhook_id!r}") from None

    def add_webhook(
        self,
        uri: str,
        triggers: Iterable[str] = ALL_MEMBER_TRIGGERS,
        *,
        secret: str | None = None,
        client_id: str | None = None,
    ) -> Webhook:
        """Register a webhook (what ``POST /api/oauth2/v2/webhooks`` does).

        :param secret: default :attr:`webhook_secret`, so the host app's configured secret verifies it.
        :raises SandboxError: an unknown trigger, no trigger, or a URI that is not http(s).
        """
        trigger_list = list(dict.fromkeys(triggers))
        if not trigger_list:
            raise SandboxError("at least one trigger is required")
        unknown = [t for t in trigger_list if t not in KNOWN_TRIGGERS]
        if unknown:
            raise SandboxError(f"unknown triggers: {', '.join(unknown)}")
        if not uri.startswith(("http://", "https://")):
            raise SandboxError("uri must be an http(s) URL")
        with self.lock:
            webhook = Webhook(
                id=str(next(self._webhook_ids)),
                uri=uri,
                triggers=trigger_list,
                secret=secret or self.webhook_secret,
                campaign_id=self.campaign.id,
                client_id=client_id or self.client_id,
            )
            self._webhooks[webhook.id] = webhook
            return webhook

    def update_webhook(
        self,
        webhook_id: str,
        *,
        uri: str | None = None,
        triggers: Iterable[str] | None = None,
        paused: bool | None = None,
    ) -> Webhook:
        """Change a webhook (what ``PATCH /api/oauth2/v2/webhooks/<id>`` does). Unpausing resets
        ``num_consecutive_times_failed`` and wakes delivery of the queued events (the background worker sends them;
        :meth:`flush_webhooks` sends them now)."""
        with self.lock:
            webhook = self.webhook(webhook_id)
            if uri is not None:
                if not uri.startswith(("http://", "https://")):
                    raise SandboxError("uri must be an http(s) URL")
                webhook.uri = uri
            if triggers is not None:
                trigger_list = list(dict.fromkeys(triggers))
                unknown = [t for t in trigger_list if t not in KNOWN_TRIGGERS]
                if unknown or not trigger_list:
                    raise SandboxError(f"bad triggers: {', '.join(unknown) or 'none given'}")
                webhook.triggers = trigger_list
            if paused is not None:
                if paused:
                    webhook.paused = True
                else:
                    webhook.paused = False
                    webhook.num_consecutive_times_failed = 0
                    webhook.retry_not_before = 0.0
        if paused is False:
            self.dispatcher.wake()
        return webhook

    def delete_webhook(self, webhook_id: str) -> None:
        """Remove a webhook and drop its queued events."""
        with self.lock:
            webhook = self.webhook(webhook_id)
            del self._webhooks[webhook.id]

    def flush_webhooks(self) -> list[Delivery]:
        """Deliver every queued event of every unpaused webhook now, in order, in this thread.

        Each webhook's queue goes until empty or until one attempt fails (one retry per webhook per flush: call
        again to retry); a failure counts towards pausing. The state lock is not held while the transport runs,
        so a receiver may call back into the sandbox.

        :returns: the attempts made, in order (also appended to :attr:`deliveries`).
        """
        return self.dispatcher.flush()

    def pending_deliveries(self) -> int:
        """How many events wait in webhook queues (paused webhooks included)."""
        with self.lock:
            return sum(len(w.queue) for w in self._webhooks.values())

    def start_webhook_worker(self) -> None:
        """Deliver in the background: a daemon thread sends queued events as they come, retrying failures with
        exponential backoff from :attr:`webhook_retry_delay`. The CLI starts it; tests usually flush instead."""
        self.dispatcher.start()

    def stop_webhook_worker(self, timeout: float = 5.0) -> None:
        """Stop the background worker (queued events stay queued)."""
        self.dispatcher.stop(timeout)

    # -- OAuth and tokens -----------------------------------------------------------------------------------------

    def check_client(self, client_id: str | None, client_secret: str | None = None) -> bool:
        """True if ``client_id`` (and ``client_secret``, when given) are the sandbox's OAuth client's."""
        if client_id is None or not secrets.compare_digest(client_id, self.client_id):
            return False
        return client_secret is None or secrets.compare_digest(client_secret, self.client_secret)

    @staticmethod
    def parse_scopes(scope: str | None) -> frozenset[str]:
        """Scopes from a space- (or comma-) separated string."""
        if not scope:
            return frozenset()
        return frozenset(s for s in scope.replace(",", " ").split() if s)

    def issue_token(
        self,
        user: User | str,
        *,
        scopes: Iterable[str] | None = None,
        expires_in: int | None = None,
        client_id: str | None = None,
    ) -> Token:
        """Issue an access/refresh token pair for ``user`` without the OAuth dance.

        :param scopes: default :data:`DEFAULT_USER_SCOPES`.
        :param expires_in: seconds (sandbox time), default :attr:`access_token_ttl`.
        """
        with self.lock:
            the_user = self.user(user)
            ttl = self.access_token_ttl if expires_in is None else expires_in
            token = Token(
                access_token=secrets.token_urlsafe(32),
                refresh_token=secrets.token_urlsafe(32),
                user_id=the_user.id,
                client_id=client_id or self.client_id,
                scopes=frozenset(DEFAULT_USER_SCOPES if scopes is None else scopes),
                issued_at=self._now,
                expires_at=self._now + timedelta(seconds=ttl),
                expires_in=ttl,
            )
            self._tokens[token.access_token] = token
            self._refresh_tokens[token.refresh_token] = token
            return token

    def token_for(
        self, user: User | Member | str, *, scopes: Iterable[str] | None = None, expires_in: int | None = None
    ) -> str:
        """An access token for ``user`` (object, member, id or email), issued without the OAuth dance."""
        with self.lock:
            the_user = self.user(user)
            return self.issue_token(the_user, scopes=scopes, expires_in=expires_in).access_token

    def authenticate(self, access_token: str | None) -> Token | None:
        """The live token for a bearer string, or None (unknown, revoked or expired on the sandbox clock)."""
        if not access_token:
            return None
        with self.lock:
            token = self._tokens.get(access_token)
            if token is None or (token.expires_at is not None and token.expires_at <= self._now):
                return None
            return token

    def revoke_token(self, access_token: str) -> None:
        """Make an access token (and its refresh token) stop working."""
        with self.lock:
            token = self._tokens.pop(access_token, None)
            if token is not None:
                self._refresh_tokens.pop(token.refresh_token, None)

    def expire_creator_token(self) -> str:
        """The creator's access token dies now, early (as real ones sometimes do): the API answers 401 to it, while
        its refresh token still works. Returns the dead token."""
        with self.lock:
            self._tokens.pop(self.creator_access_token, None)
            return self.creator_access_token

    def revoke_creator_refresh_token(self) -> None:
        """Patreon stops accepting the creator's refresh token: refreshing it answers ``invalid_grant``."""
        with self.lock:
            self._refresh_tokens.pop(self.creator_refresh_token, None)

    def limit_tokens(
        self, max_calls: int = 100, period: float = 60.0, *, clock: Callable[[], float] | None = None
    ) -> None:
        """Limit every access token to ``max_calls`` API requests per ``period`` seconds, as Patreon does (100 a
        minute): a request over the limit answers 429 with ``retry_after_seconds`` and ``Retry-After`` saying when
        the token's oldest counted request leaves the window. Off by default.

        :param clock: seconds, for the window (default real time; tests pass the fake clock their client sleeps on).
        """
        if max_calls < 1 or period <= 0:
            raise SandboxError("max_calls must be >= 1 and period positive")
        with self.lock:
            self.token_rate_limit = (max_calls, period)
            if clock is not None:
                self.rate_clock = clock
            self._token_calls.clear()

    def take_token_call(self, access_token: str) -> float:
        """Count one API request of ``access_token`` against :meth:`limit_tokens`: ``0.0`` when it may go, else the
        seconds until it may (nothing counted)."""
        with self.lock:
            if self.token_rate_limit is None:
                return 0.0
            max_calls, period = self.token_rate_limit
            now = self.rate_clock()
            calls = self._token_calls.setdefault(access_token, deque())
            while calls and calls[0] + period <= now:
                calls.popleft()
            if len(calls) >= max_calls:
                return calls[0] + period - now
            calls.append(now)
            return 0.0

    def log_api(self, method: str, path: str, status: int) -> None:
        """Record an answered ``/api/...`` request in :attr:`api_log`."""
        with self.lock:
            self.api_log.append((method, path, status))
            if len(self.api_log) > self.log_limit:
                del self.api_log[: len(self.api_log) - self.log_limit]

    def create_code(
        self,
        *,
        client_id: str,
        redirect_uri: str,
        user: User | str,
        scopes: Iterable[str],
        code_challenge: str | None = None,
        code_challenge_method: str | None = None,
    ) -> str:
        """An authorization code, as the authorize page issues on Approve."""
        with self.lock:
            the_user = self.user(user)
            code = AuthCode(
                code=secrets.token_urlsafe(24),
                client_id=client_id,
                redirect_uri=redirect_uri,
                user_id=the_user.id,
                scopes=frozenset(scopes),
                expires_at=self._now + timedelta(seconds=self.code_ttl),
                code_challenge=code_challenge,
                code_challenge_method=code_challenge_method,
            )
            self._codes[code.code] = code
            return code.code

    def exchange_code(
        self, *, client_id: str, code: str | None, redirect_uri: str | None, code_verifier: str | None = None
    ) -> Token:
        """``grant_type=authorization_code``: the code is single-use, bound to the client and redirect URI,
        checked against its PKCE challenge, and expires after :attr:`code_ttl` seconds of sandbox time.

        :raises OAuthError: ``invalid_request`` (400) for a missing code, ``invalid_grant`` (401) otherwise.
        """
        if not code:
            raise OAuthError("invalid_request", 400, "code is required")
        with self.lock:
            record = self._codes.get(code)
            if record is None or record.used:
                raise OAuthError("invalid_grant", 401, "unknown or already used code")
            if record.expires_at <= self._now:
                raise OAuthError("invalid_grant", 401, "the code expired")
            if record.client_id != client_id:
                raise OAuthError("invalid_grant", 401, "the code was issued to another client")
            if redirect_uri != record.redirect_uri:
                raise OAuthError("invalid_grant", 401, "redirect_uri does not match the authorize request")
            if record.code_challenge is not None:
                if not code_verifier:
                    raise OAuthError("invalid_grant", 401, "code_verifier is required")
                digest = hashlib.sha256(code_verifier.encode("ascii", "replace")).digest()
                expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
                if not secrets.compare_digest(expected, record.code_challenge):
                    raise OAuthError("invalid_grant", 401, "code_verifier does not match code_challenge")
            record.used = True
            return self.issue_token(record.user_id, scopes=record.scopes, client_id=client_id)

    def refresh(self, *, client_id: str, refresh_token: str | None) -> Token:
        """``grant_type=refresh_token``: rotate. The old refresh token stops working and a new pair is issued
        (the old access token lives on until it expires).

        :raises OAuthError: ``invalid_request`` (400) for a missing token, ``invalid_grant`` (401) otherwise.
        """
        if not refresh_token:
            raise OAuthError("invalid_request", 400, "refresh_token is required")
        with self.lock:
            old = self._refresh_tokens.get(refresh_token)
            if old is None or old.client_id != client_id:
                raise OAuthError("invalid_grant", 401, "unknown or already used refresh token")
            del self._refresh_tokens[refresh_token]
            if old.expires_at is None:  # the creator's pair stays non-expiring
                new = Token(
                    access_token=secrets.token_urlsafe(32),
                    refresh_token=secrets.token_urlsafe(32),
                    user_id=old.user_id,
                    client_id=old.client_id,
                    scopes=old.scopes,
                    issued_at=self._now,
                    expires_at=None,
                    expires_in=self.access_token_ttl,
                )
                self._tokens[new.access_token] = new
                self._refresh_tokens[new.refresh_token] = new
                self.creator_access_token = new.access_token
                self.creator_refresh_token = new.refresh_token
                return new
            return self.issue_token(old.user_id, scopes=old.scopes, client_id=old.client_id)

    # -- pagination cursors ----------------------------------------------------------------------------------------

    @staticmethod
    def encode_cursor(after_seq: int, page: int) -> str:
        """An opaque cursor: the page after member ``after_seq``, which is page number ``page``."""
        raw = f"{_CURSOR_PREFIX}:{after_seq}:{page}".encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    @staticmethod
    def decode_cursor(cursor: str) -> tuple[int, int]:
        """(after_seq, page) from a cursor. :raises SandboxError: not a cursor this sandbox issued."""
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
            prefix, seq, page = raw.split(":")
            if prefix != _CURSOR_PREFIX:
                raise ValueError(prefix)
            return int(seq), int(page)
        except (ValueError, UnicodeDecodeError):
            raise SandboxError(f"invalid cursor {cursor!r}") from None

    def page_of_members(self, after_seq: int, count: int) -> tuple[list[Member], int | None]:
        """Up to ``count`` members after ``after_seq`` in listing order, and the seq to continue after (None at the
        end). Call with the lock held to render consistently."""
        with self.lock:
            start = bisect.bisect_right(self._order_seqs, after_seq)
            page = self._order[start : start + count]
            more = start + count < len(self._order)
            return page, (page[-1].seq if more and page else None)

    # -- faults ---------------------------------------------------------------------------------------------------

    def add_fault(
        self,
        kind: FaultKind | str,
        *,
        page: int | None = None,
        times: int | None = 1,
        status: int = 500,
        retry_after: int = 30,
        seconds: float = 1.0,
        count: int = 1,
        field: str | None = None,
        value: Any = None,
        remove: bool = False,
        status_of: str | None = None,
    ) -> Fault:
        """Inject a fault into ``GET /campaigns/<id>/members``.

        :param kind: ``"error"`` (answer ``status``, default 500, in Patreon's error format), ``"rate_limit"``
            (429 with ``retry_after_seconds`` = ``retry_after`` and a ``Retry-After`` header), ``"slow"`` (sleep
            ``seconds`` then answer), ``"truncate"`` (200 with the JSON body cut in half), ``"repeat_cursor"``
            (the page's next cursor is the one that fetched it, i.e. the previous page's), ``"drop"`` (the page
            silently omits ``count`` members while ``meta.pagination.total`` still counts them), ``"drift"`` (Patreon's
            data changes shape: every member of the page, or those whose ``patron_status`` is ``status_of``, serves
            ``value`` for ``field`` -- an attribute name, or ``"relationships.<name>"`` for a relationship's
            ``data`` -- or, with ``remove``, leaves it out).
        :param page: the 1-based page it hits (``None``: every page).
        :param times: how many times it fires (``None``: every time, e.g. an exhausted rate limit).
        """
        if kind not in FAULT_KINDS:
            raise SandboxError(f"unknown fault kind {kind!r}; one of {', '.join(FAULT_KINDS)}")
        if page is not None and page < 1:
            raise SandboxError("page is 1-based")
        if times is not None and times < 1:
            raise SandboxError("times must be >= 1 or None")
        if kind == "error" and not 400 <= status <= 599:
            raise SandboxError("status must be an HTTP error status")
        if kind == "drift" and not field:
            raise SandboxError("a drift fault needs the field it changes")
        with self.lock:
            fault = Fault(
                id=str(next(self._fault_ids)),
                kind=kind,
                page=page,
                times=times,
                status=status,
                retry_after=retry_after,
                seconds=seconds,
                count=count,
                field=field,
                value=value,
                remove=remove,
                status_of=status_of,
            )
            self.faults.append(fault)
            return fault

    def remove_fault(self, fault_id: str) -> None:
        """Remove one fault. :raises NotFoundError: no such fault."""
        with self.lock:
            for index, fault in enumerate(self.faults):
                if fault.id == str(fault_id):
                    del self.faults[index]
                    return
        raise NotFoundError(f"no fault {fault_id!r}")

    def clear_faults(self) -> None:
        """Remove every fault and bring the API back up."""
        with self.lock:
            self.faults.clear()
            self._api_down = False

    def take_faults(self, page: int) -> list[Fault]:
        """The faults that fire for ``page`` of the members listing now (one per kind, oldest first; every ``drift``
        fault, each changing its own field), using up one-shot ones."""
        with self.lock:
            fired: list[Fault] = []
            kinds: set[str] = set()
            for fault in list(self.faults):
                if (fault.page is None or fault.page == page) and (fault.kind not in kinds or fault.kind == "drift"):
                    kinds.add(fault.kind)
                    fault.hits += 1
                    fired.append(fault)
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self.faults.remove(fault)
            return fired

    @property
    def api_down(self) -> bool:
        """When true every ``/api/...`` call (API v2 and the token endpoint) answers 503."""
        return self._api_down

    @api_down.setter
    def api_down(self, value: bool) -> None:
        with self.lock:
            self._api_down = bool(value)

    # -- summary --------------------------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """A plain overview (``GET /_sandbox/state``): ids, clock, tiers, member counts by status, webhooks,
        faults, queued deliveries. No secrets except the public ids."""
        with self.lock:
            by_status: dict[str, int] = {}
            for member in self._order:
                key = member.patron_status or "none"
                by_status[key] = by_status.get(key, 0) + 1
            counts, patrons = self.tier_patron_counts()
            return {
                "url": self.url,
                "now": _iso(self._now),
                "campaign_id": self.campaign.id,
                "client_id": self.client_id,
                "creator_user_id": self.creator.id,
                "tiers": [dict(t.to_dict(), patron_count=counts.get(t.id, 0)) for t in self._tiers.values()],
                "members": len(self._members),
                "patron_count": patrons,
                "members_by_status": by_status,
                "users": len(self._users),
                "webhooks": [w.to_dict() for w in self._webhooks.values()],
                "pending_deliveries": sum(len(w.queue) for w in self._webhooks.values()),
                "deliveries": len(self.deliveries),
                "events": len(self.events),
                "faults": [f.to_dict() for f in self.faults],
                "api_down": self._api_down,
                "billing": self.campaign.billing,
                "blanked_attributes": sorted(self.blanked_attributes),
                "scheduled": len(self._timers),
            }

    # -- scenarios --------------------------------------------------------------------------------------------------

    def scenario(self, name: str, **params: Any) -> list[Member]:
        """Play one of Patreon's documented behaviours (see :data:`.scenarios.SCENARIOS` and
        ``docs/patreon-behaviour.rst``) on this sandbox's members.

        :returns: the members it acted on.
        :raises SandboxError: an unknown scenario or a bad parameter.
        """
        from .scenarios import play

        with self.lock:
            return play(self, name, **params)
