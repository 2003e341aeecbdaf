"""The sandbox's stored state and what every part of it reads: the records and their indexes, the clock's reading,
the URLs and host-app config, tiers, users and members by reference, and the members listing's pages.

:class:`SandboxCore` declares that state; :class:`~.state.Sandbox` builds it (its ``__init__``) and adds what
changes it through mixins (:mod:`.webhooks`, :mod:`.billing`, :mod:`.oauth`, :mod:`.faults`). Documents and webhook
delivery read a sandbox through this class, so nothing below :mod:`.state` imports it.
"""

from __future__ import annotations

import base64
import bisect
import itertools
import random
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from .entities import Member, NotFoundError, SandboxError, Tier, User

if TYPE_CHECKING:
    from .entities import AuthCode, Campaign, Delivery, Fault, MemberEvent, Token, Transport, Webhook

__all__ = ["SandboxCore", "config_from_credentials"]

_CURSOR_PREFIX = "plsb1"

_R = TypeVar("_R")


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


def _found(record: _R | None, kind: str, ref: object) -> _R:
    """``record``, looked up by ``ref``; :class:`NotFoundError` naming both when there is none."""
    if record is None:
        raise NotFoundError(f"no {kind} {ref!r}")
    return record


class SandboxCore:
    """The state of one offline Patreon and the reads over it (see the module docstring); use
    :class:`~.state.Sandbox`, which builds it. Hold :attr:`lock` to read several things consistently."""

    lock: threading.RLock
    seed: int
    campaign: Campaign
    creator: User
    client_id: str
    client_secret: str
    webhook_secret: str
    creator_access_token: str
    creator_refresh_token: str
    access_token_ttl: int
    code_ttl: int
    max_webhook_failures: int
    webhook_retry_delay: float
    redirect_uris: set[str] | None
    faults: list[Fault]
    blanked_attributes: frozenset[str]
    revision: int
    log_limit: int
    api_log: list[tuple[str, str, int]]
    token_rate_limit: tuple[int, float] | None
    rate_clock: Callable[[], float]
    events: list[MemberEvent]
    deliveries: list[Delivery]
    transport: Transport
    _rng: random.Random
    _now: datetime
    _url: str | None
    _learned_url: str | None
    _user_ids: itertools.count[int]
    _tier_ids: itertools.count[int]
    _webhook_ids: itertools.count[int]
    _address_ids: itertools.count[int]
    _member_seq: itertools.count[int]
    _fault_ids: itertools.count[int]
    _email_counter: itertools.count[int]
    _users: dict[str, User]
    _users_by_email: dict[str, User]
    _tiers: dict[str, Tier]
    _members: dict[str, Member]
    _members_by_user: dict[str, Member]
    _order: list[Member]
    _order_seqs: list[int]
    _tokens: dict[str, Token]
    _refresh_tokens: dict[str, Token]
    _codes: dict[str, AuthCode]
    _webhooks: dict[str, Webhook]
    _api_down: bool
    _timers: list[tuple[datetime, int, Callable[[datetime], list[Member]]]]
    _timer_order: itertools.count[int]
    _tier_counts: dict[str, int]
    _patron_count: int
    _token_calls: dict[str, deque[float]]

    # -- clock -------------------------------------------------------------------------------------------------

    @property
    def now(self) -> datetime:
        """The sandbox clock (aware UTC). It moves only through :meth:`advance`, :meth:`advance_months` and
        :meth:`travel_to`."""
        return self._now

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
                url=f"/checkout/{self.campaign.id}?rid={tid}",
                title=title,
                amount_cents=amount_cents,
                description=description,
                published=published,
                created_at=created_at or self._now,
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
            return _found(self._users.get(key) or self._users_by_email.get(key.lower()), "user", ref)

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
        if isinstance(ref, User):
            with self.lock:
                return _found(self._members_by_user.get(ref.id), "member", ref)
        with self.lock:
            key = str(ref)
            found = self._members.get(key) or self._members_by_user.get(key)
            if found is None:
                user = self._users_by_email.get(key.lower())
                found = self._members_by_user.get(user.id) if user else None
            return _found(found, "member", ref)

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
