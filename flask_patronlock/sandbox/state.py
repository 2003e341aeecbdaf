"""The in-memory Patreon behind the sandbox: :class:`Sandbox`, one facade over a campaign with tiers, users,
members, tokens, webhooks, a clock and faults.

No Flask here: :class:`Sandbox` is a plain, thread-safe object (one :class:`threading.RLock`, ``sandbox.lock``) that
the Flask app in :mod:`.app` serves and that tests drive directly. Its parts live beside it, each a mixin over
:class:`~.core.SandboxCore` (the stored state and its reads): :mod:`.billing` (the clock and pledges, with how billing
follows Patreon's), :mod:`.webhooks` (change events and webhooks), :mod:`.oauth` (codes and tokens), :mod:`.faults`;
the records are in :mod:`.entities`. This module builds the state and keeps what spans the parts: users' and members'
changes, generated members, the summary and the scenarios.

Money is integer cents; every datetime is timezone-aware UTC.
"""

from __future__ import annotations

import bisect
import itertools
import random
import secrets
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from ..dates import add_months
from .billing import BillingMixin
from .entities import BILLING_MODES, CREATOR_SCOPES, Campaign, Member, SandboxError, Token, User, aware, iso, midnight
from .faults import FaultsMixin
from .oauth import OAuthMixin
from .webhooks import WebhookDispatcher, default_transport

__all__ = ["Sandbox"]


# ---------------------------------------------------------------------------------------------------------------
# the sandbox


class Sandbox(BillingMixin, OAuthMixin, FaultsMixin):
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
        self._now = aware(now) if now is not None else datetime.now(UTC).replace(microsecond=0)
        self.access_token_ttl = access_token_ttl
        self.code_ttl = code_ttl
        self.max_webhook_failures = max_webhook_failures
        self.webhook_retry_delay = webhook_retry_delay
        self.redirect_uris = set(redirect_uris) if redirect_uris is not None else None

        self.client_id = client_id or secrets.token_urlsafe(48)
        self.client_secret = client_secret or secrets.token_urlsafe(48)
        self.webhook_secret = webhook_secret or secrets.token_urlsafe(48)

        #: the sandbox's public URL (set by :class:`~.server.SandboxServer` or by hand); see :attr:`base_url`.
        self._url = None
        self._learned_url = None

        self._user_ids = itertools.count(100_000_000 + self._rng.randrange(1_000_000) * 10)
        self._tier_ids = itertools.count(20_000_000 + self._rng.randrange(1_000_000) * 10)
        self._webhook_ids = itertools.count(1000 + self._rng.randrange(1000))
        self._address_ids = itertools.count(1_500_000 + self._rng.randrange(100_000))
        self._member_seq = itertools.count(1)
        self._fault_ids = itertools.count(1)
        self._email_counter = itertools.count(1)

        self._users = {}
        self._users_by_email = {}
        self._tiers = {}
        self._members = {}
        self._members_by_user = {}
        #: members ordered by ``seq`` (the listing order) and the parallel list of seqs for bisect.
        self._order = []
        self._order_seqs = []
        self._tokens = {}
        self._refresh_tokens = {}
        self._codes = {}
        self._webhooks = {}
        #: the faults in force, oldest first.
        self.faults = []
        self._api_down = False
        #: what the clock does at a set time, beside the members' own billing (scenarios schedule these):
        #: a heap of (when, order, action); an action gets the time and returns the members it changed.
        self._timers = []
        self._timer_order = itertools.count()
        #: member attributes every served document shows as null for now (see ``charge_dates_missing``).
        self.blanked_attributes = frozenset()
        #: bumped on every member change.
        self.revision = 0
        #: active patrons per tier id and of the campaign, kept up to date on every change.
        self._tier_counts = {}
        self._patron_count = 0
        #: :attr:`events`, :attr:`deliveries` and :attr:`api_log` keep the latest ``log_limit`` entries.
        self.log_limit = 100_000
        #: every ``/api/...`` request answered, in order: ``(method, path, status)`` (token calls included).
        self.api_log = []
        #: the per-token limit in force (:meth:`limit_tokens`): ``(max_calls, period)``, or ``None``: no limit.
        self.token_rate_limit = None
        #: the clock of :meth:`limit_tokens` (seconds; real time unless a test injects its own).
        self.rate_clock = time.monotonic
        self._token_calls = {}

        #: every ``members:*`` event fired, in order (also when no webhook listens).
        self.events = []
        #: every webhook delivery attempt, in order.
        self.deliveries = []
        #: how deliveries are sent: ``transport(uri, headers, body) -> HTTP status``; swap it to deliver into a
        #: Flask test client. An exception or a non-2xx status is a failed attempt.
        self.transport = default_transport
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

    # -- users and members ------------------------------------------------------------------------------------

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
                    member.next_charge_date = midnight(add_months(start, periods * cadence))
                    if cadence == 1 and first_of_month and start < midnight(now.replace(day=1)):
                        # charged up front, then on every 1st since
                        member.last_charge_date = midnight(now.replace(day=1))
                        member.next_charge_date = midnight(add_months(now, 1, 1))
                    if member.next_charge_date <= now:  # the midnight of today: keep it in the future
                        member.next_charge_date = midnight(now + timedelta(days=1))
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

    def log_api(self, method: str, path: str, status: int) -> None:
        """Record an answered ``/api/...`` request in :attr:`api_log`."""
        with self.lock:
            self.api_log.append((method, path, status))
            if len(self.api_log) > self.log_limit:
                del self.api_log[: len(self.api_log) - self.log_limit]

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
                "now": iso(self._now),
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

    # -- saving and loading ----------------------------------------------------------------------------------------

    def dump_state(self) -> dict[str, Any]:
        """Everything this sandbox remembers as a JSON-ready dict, for :meth:`load_state` after a restart (what is
        kept and what is not: :mod:`.persistence`).

        :raises SandboxError: something is scheduled that is not a scenario's and so cannot be saved.
        """
        from .persistence import dump_state  # lazily: persistence builds a Sandbox, so it imports this module

        return dump_state(self)

    @classmethod
    def load_state(cls, data: dict[str, Any]) -> Sandbox:
        """A sandbox in the state :meth:`dump_state` saved; its ids go on from where they stood.

        :raises SandboxError: ``data`` is not a saved sandbox this version can read.
        """
        from .persistence import load_state  # lazily: persistence builds a Sandbox, so it imports this module

        return load_state(data, sandbox_class=cls)

    # -- scenarios --------------------------------------------------------------------------------------------------

    def scenario(self, name: str, **params: Any) -> list[Member]:
        """Play one of Patreon's documented behaviours (see :data:`.scenarios.SCENARIOS` and
        ``docs/patreon-behaviour.rst``) on this sandbox's members.

        :returns: the members it acted on.
        :raises SandboxError: an unknown scenario or a bad parameter.
        """
        # lazily: the scenarios drive a Sandbox (their type hints import this module), so the facade reaches them
        # only when one is played
        from .scenarios import play

        with self.lock:
            return play(self, name, **params)
