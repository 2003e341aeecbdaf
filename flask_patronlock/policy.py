"""Who is owed what, and may this viewer see this lock: pure functions, no I/O, no Flask, no clock.

Two steps, both pure and both fed the time as ``now`` (a timezone-aware UTC datetime, like every datetime here):

* :func:`entitlement` turns a stored :class:`~flask_patronlock.patron.Patron` and the creator's
  :class:`PolicySettings` into an :class:`Entitlement`: a state (``active``, ``grace``, ``restricted``, ``former``,
  ``none``), the monthly-equivalent cents and tier ids it is owed, and a ``basis`` naming the rule that decided.
* :func:`decide` checks a :class:`LockRule` for a :class:`Viewer` and returns a :class:`Decision` whose ``reason`` is
  one of :data:`REASONS`. :func:`explain_steps` runs the very same code and returns the plain-English steps it took.

Everything that decides access goes through :func:`decide`; nothing else reads tiers or amounts to decide.

Over 600 lines: the whole policy, both pure steps and their explanations, in one place a reader can check against
:doc:`/policies` and the behaviour catalogue; its parts are tested together by the property tests.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any, Final, Literal

from .dates import FAR_FUTURE, add_months
from .formatting import money
from .patreon.types import TierSnapshot
from .patron import Patron

__all__ = [
    "ALLOWING_REASONS",
    "ENTITLEMENT_RULES_VERSION",
    "ENTITLEMENT_SETTINGS",
    "REASONS",
    "REASON_ADMIN_BYPASS",
    "REASON_ALLOWED",
    "REASON_AMOUNT_TOO_LOW",
    "REASON_ANONYMOUS",
    "REASON_COMP",
    "REASON_DRIP_NOT_REACHED",
    "REASON_FORMER_PATRON",
    "REASON_LIFETIME_TOO_LOW",
    "REASON_LOCK_DISABLED",
    "REASON_LOCK_UNAVAILABLE",
    "REASON_NOT_A_MEMBER",
    "REASON_NOT_A_PATRON",
    "REASON_NOT_LINKED",
    "REASON_NOT_PATRON_AT_DATE",
    "REASON_PAYMENT_DECLINED",
    "REASON_PUBLIC",
    "REASON_WRONG_TIER",
    "STATES",
    "Comp",
    "Decision",
    "Entitlement",
    "LockRule",
    "PolicySettings",
    "Viewer",
    "decide",
    "decide_unavailable",
    "decline_outstanding",
    "entitlement",
    "explain_steps",
    "payment_declined",
    "settings_fingerprint",
]

Reason = Literal[
    "anonymous",
    "not_linked",
    "not_a_patron",
    "amount_too_low",
    "payment_declined",
    "former_patron",
    "not_patron_at_date",
    "drip_not_reached",
    "lifetime_too_low",
    "lock_unavailable",
    "lock_disabled",
    "admin_bypass",
    "allowed",
    "comp",
    "wrong_tier",
    "public",
    "not_a_member",
]
State = Literal["active", "grace", "restricted", "former", "none"]
DeclinedPolicy = Literal["restrict", "grace", "retry_window"]
CancelledPolicy = Literal["paid_period", "at_once"]
FirstChargePolicy = Literal["entitled_at_once", "after_first_charge"]
Combine = Literal["all", "any"]
TierMatch = Literal["or_higher", "exact"]

#: not signed in.
REASON_ANONYMOUS: Final = "anonymous"
#: signed in, but no Patreon account linked.
REASON_NOT_LINKED: Final = "not_linked"
#: linked, but not a member of the campaign, or a member owed nothing (follower, free trial not counted, ...).
REASON_NOT_A_PATRON: Final = "not_a_patron"
#: linked, but not a member of the campaign at all (not even a free one), and the lock admits free members
#: (:attr:`LockRule.free_members`, or a lock on a $0 tier): joining for free opens it.
REASON_NOT_A_MEMBER: Final = "not_a_member"
#: entitled, but to too little: cents or tier below the lock's, or the lock's tier is unknown.
REASON_AMOUNT_TOO_LOW: Final = "amount_too_low"
#: entitled, but to another tier than the ones an exact-tier lock (``tier_match="exact"``) is for: paying more does
#: not help, changing tier does.
REASON_WRONG_TIER: Final = "wrong_tier"
#: the payment was declined and the declined-payment policy no longer keeps access (or the charge was fraud).
REASON_PAYMENT_DECLINED: Final = "payment_declined"
#: the pledge ended (and any paid period with it), or the member vanished from complete sync runs.
REASON_FORMER_PATRON: Final = "former_patron"
#: the lock is for patrons who pledged before a date; this pledge started later (waiting will not help).
REASON_NOT_PATRON_AT_DATE: Final = "not_patron_at_date"
#: the lock drips: it opens after N months of pledging, at :attr:`Decision.available_at` (waiting will help).
REASON_DRIP_NOT_REACHED: Final = "drip_not_reached"
#: lifetime support below the lock's threshold.
REASON_LIFETIME_TOO_LOW: Final = "lifetime_too_low"
#: the content names a lock that no longer exists (a creator deleted it) or never did: it stays locked to everyone but
#: admins until the creator picks another lock for it.
REASON_LOCK_UNAVAILABLE: Final = "lock_unavailable"
#: the lock is switched off: everyone may see it.
REASON_LOCK_DISABLED: Final = "lock_disabled"
#: the viewer is an admin of the site.
REASON_ADMIN_BYPASS: Final = "admin_bypass"
#: the lock's early access is over (:attr:`LockRule.public_after` has passed): everyone may see it.
REASON_PUBLIC: Final = "public"
#: every condition of the lock holds.
REASON_ALLOWED: Final = "allowed"
#: the lock would deny, but the creator gave the viewer a comp (:class:`Comp`) for it or for a tier that meets it.
REASON_COMP: Final = "comp"

#: an entitlement state that is owed nothing: the denial's reason and what is missing.
_UNENTITLED: Final[dict[str, tuple[Reason, str]]] = {
    "restricted": (REASON_PAYMENT_DECLINED, "a successful payment"),
    "former": (REASON_FORMER_PATRON, "an active pledge"),
    "none": (REASON_NOT_A_PATRON, "a pledge to this campaign"),
}

#: the closed set of :attr:`Decision.reason` values.
REASONS: Final[frozenset[str]] = frozenset(
    {
        REASON_ANONYMOUS,
        REASON_NOT_LINKED,
        REASON_NOT_A_PATRON,
        REASON_AMOUNT_TOO_LOW,
        REASON_PAYMENT_DECLINED,
        REASON_FORMER_PATRON,
        REASON_NOT_PATRON_AT_DATE,
        REASON_DRIP_NOT_REACHED,
        REASON_LIFETIME_TOO_LOW,
        REASON_LOCK_UNAVAILABLE,
        REASON_LOCK_DISABLED,
        REASON_ADMIN_BYPASS,
        REASON_ALLOWED,
        REASON_COMP,
        REASON_WRONG_TIER,
        REASON_PUBLIC,
        REASON_NOT_A_MEMBER,
    }
)
#: the reasons that come with ``allowed=True``.
ALLOWING_REASONS: Final[frozenset[str]] = frozenset(
    {REASON_ALLOWED, REASON_LOCK_DISABLED, REASON_ADMIN_BYPASS, REASON_COMP, REASON_PUBLIC}
)
#: the :attr:`Entitlement.state` values; only ``active`` and ``grace`` are owed anything.
STATES: Final[frozenset[str]] = frozenset({"active", "grace", "restricted", "former", "none"})

_DECLINED: Final = ("restrict", "grace", "retry_window")
#: what stored settings said before ``retry_window`` replaced it (it kept access for as long as Patreon listed the
#: patron as declined, which is for months); :meth:`PolicySettings.from_dict` reads it as ``retry_window``.
_LEGACY_DECLINED: Final = {"until_patreon_gives_up": "retry_window"}
_CANCELLED: Final = ("paid_period", "at_once")
_FIRST_CHARGE: Final = ("entitled_at_once", "after_first_charge")
_COMBINE: Final = ("all", "any")
_TIER_MATCH: Final = ("or_higher", "exact")
_REFUNDED: Final = frozenset({"Refunded", "Refunded by Patreon"})
_MAX_DAYS: Final = 3650
_MAX_MONTHS: Final = 1200
_FAR_FUTURE: Final = FAR_FUTURE


def _bad(owner: str, key: str, value: object, expected: str) -> ValueError:
    return ValueError(f"{owner}.{key} must be {expected}, not {value!r}")


def _check_int(
    owner: str, key: str, value: object, low: int, high: int | None = None, *, optional: bool = False
) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        span = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
        raise _bad(owner, key, value, f"{span}{' or None' if optional else ''}")


def _check_bool(owner: str, key: str, value: object) -> None:
    if not isinstance(value, bool):
        raise _bad(owner, key, value, "true or false")


def _check_choice(owner: str, key: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise _bad(owner, key, value, "one of " + ", ".join(repr(c) for c in choices))


def _known_keys(owner: str, data: object, names: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ValueError(f"{owner} must be a mapping, not {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in names)
    if unknown:
        raise ValueError(f"{owner} has unknown key(s): {', '.join(unknown)}")
    return data


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicySettings:
    """The creator's access policies (editable on the settings page, stored as JSON via :meth:`to_dict`).

    Constructing one validates every field and raises :class:`ValueError` naming the bad key and value.
    """

    #: a declined payment: ``restrict`` at once, ``grace`` for :attr:`declined_grace_days`, or keep access through
    #: Patreon's ``retry_window``: to the end of the calendar month (UTC) of the first decline, when Patreon stops
    #: retrying, or for :attr:`declined_grace_days` if that ends later.
    #:
    #: .. versionchanged:: 0.1.0
    #:    ``retry_window`` replaces ``until_patreon_gives_up``, which kept access for as long as Patreon listed the
    #:    patron as declined (for months, even after they cancel); stored settings saying it are read as
    #:    ``retry_window``.
    declined: DeclinedPolicy = "grace"
    #: days of access after a payment is first declined, under ``declined="grace"``, and at least this long under
    #: ``retry_window`` (0 to 3650).
    declined_grace_days: int = 7
    #: a cancelled pledge keeps access until the end of the ``paid_period``, or loses it ``at_once``.
    cancelled: CancelledPolicy = "paid_period"
    #: a pledge whose first charge has not succeeded yet: ``entitled_at_once`` (generous) or ``after_first_charge``.
    first_charge: FirstChargePolicy = "entitled_at_once"
    #: Patreon free trials are entitled to their tier.
    count_free_trials: bool = True
    #: gifted memberships are entitled to their tier.
    count_gifted: bool = True
    #: a member absent from this many complete sync runs in a row loses access ...
    missing_runs: int = 2
    #: ... or this many hours after the first complete run that missed them, whichever comes first; ``None``: the
    #: run count alone decides (1 to 87600).
    missing_hours: int | None = 48
    #: the breaker holds a sync run that would revoke more than ``max(breaker_min_patrons, breaker_fraction * total)``.
    breaker_min_patrons: int = 25
    #: see :attr:`breaker_min_patrons`; a fraction in (0, 1].
    breaker_fraction: float = 0.10

    def __post_init__(self) -> None:
        o = "PolicySettings"
        if self.declined in _LEGACY_DECLINED:
            raise _bad(
                o, "declined", self.declined,
                f"one of {', '.join(repr(c) for c in _DECLINED)} ({self.declined!r} was replaced by "
                f"{_LEGACY_DECLINED[self.declined]!r}, which ends with Patreon's retries)",
            )
        _check_choice(o, "declined", self.declined, _DECLINED)
        _check_int(o, "declined_grace_days", self.declined_grace_days, 0, _MAX_DAYS)
        _check_choice(o, "cancelled", self.cancelled, _CANCELLED)
        _check_choice(o, "first_charge", self.first_charge, _FIRST_CHARGE)
        _check_bool(o, "count_free_trials", self.count_free_trials)
        _check_bool(o, "count_gifted", self.count_gifted)
        _check_int(o, "missing_runs", self.missing_runs, 1)
        _check_int(o, "missing_hours", self.missing_hours, 1, _MAX_DAYS * 24, optional=True)
        _check_int(o, "breaker_min_patrons", self.breaker_min_patrons, 0)
        fraction = self.breaker_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction <= 1:
            raise _bad(o, "breaker_fraction", fraction, "a number in (0, 1]")
        object.__setattr__(self, "breaker_fraction", float(fraction))

    def to_dict(self) -> dict[str, Any]:
        """Every setting by name, JSON-ready."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PolicySettings:
        """Settings from :meth:`to_dict` output; missing keys take their defaults. A ``declined`` stored by an earlier
        version as ``until_patreon_gives_up`` is read as ``retry_window`` (the migration of stored settings).

        :raises ValueError: on an unknown key or a bad value, naming it.
        """
        values = dict(_known_keys("PolicySettings", data, _SETTINGS_KEYS))
        declined = values.get("declined")
        if isinstance(declined, str) and declined in _LEGACY_DECLINED:
            values["declined"] = _LEGACY_DECLINED[declined]
        return cls(**values)

    def breaker_trips(self, revoking: int, total: int) -> bool:
        """Whether a sync run that would revoke ``revoking`` of ``total`` patrons must be held for approval."""
        return revoking > max(self.breaker_min_patrons, self.breaker_fraction * total)


_SETTINGS_KEYS: Final = frozenset(f.name for f in fields(PolicySettings))

#: The settings :func:`entitlement` reads; the others (the breaker's) only decide whether a sync run is held.
ENTITLEMENT_SETTINGS: Final = (
    "declined", "declined_grace_days", "cancelled", "first_charge", "count_free_trials", "count_gifted",
    "missing_runs", "missing_hours",
)


#: The version of :func:`entitlement`'s rules, counted in :func:`settings_fingerprint`: a release that changes what a
#: stored patron is owed bumps it, so every access evaluated under the old rules is evaluated again (by
#: :meth:`~flask_patronlock.store.Store.refresh_access` or the next sync), as after a policy change.
#: 2: Patreon's billing behaviour (start-of-month zeroing, only a ``Paid`` charge recovers a decline, the
#: ``retry_window``, cancelled-but-paid first seen with a ``Deleted`` charge).
ENTITLEMENT_RULES_VERSION: Final = 2


@lru_cache(maxsize=32)
def settings_fingerprint(settings: PolicySettings) -> str:
    """A short digest of the settings :func:`entitlement` reads (:data:`ENTITLEMENT_SETTINGS`) and of
    :data:`ENTITLEMENT_RULES_VERSION`, the same in every process. The store keeps it beside each patron's evaluated
    access (:attr:`Patron.access_policy`), so a policy change (or new rules) finds every access evaluated under the
    old one, and an unchanged member whose access was evaluated under the current one needs no evaluation at all."""
    values: dict[str, Any] = {name: getattr(settings, name) for name in ENTITLEMENT_SETTINGS}
    values["__rules__"] = ENTITLEMENT_RULES_VERSION
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def _parse_datetime(owner: str, key: str, value: object) -> datetime | None:
    """An aware datetime from a datetime, a date or an ISO string; naive values and bare dates are taken as UTC."""
    if value is None or isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise _bad(owner, key, value, "an ISO 8601 date or datetime") from None
    else:
        raise _bad(owner, key, value, "an ISO 8601 date or datetime")
    if parsed is not None and parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


@dataclass(frozen=True, slots=True, kw_only=True)
class LockRule:
    """What a lock asks of an entitled patron. A rule with no condition set lets in every entitled patron.

    Constructing one validates it and raises :class:`ValueError` naming the problem.
    """

    #: at least this many cents a month (monthly equivalent; an annual pledge counts a twelfth).
    min_cents: int | None = None
    #: any of these tiers, or (under ``tier_match="or_higher"``) any tier costing at least the cheapest of them.
    tier_ids: tuple[str, ...] = ()
    #: how :attr:`tier_ids` is read: ``or_higher`` ("this tier or higher", the ladder) or ``exact`` (only a patron
    #: entitled to one of these very tiers: a $5 "Music" patron does not open a $5 "Comics" lock).
    tier_match: TierMatch = "or_higher"
    #: at least this much lifetime support to the campaign, in cents.
    lifetime_cents: int | None = None
    #: the current pledge started before this moment (timezone-aware).
    patron_since_before: datetime | None = None
    #: the current pledge started at least this many calendar months ago.
    drip_months: int | None = None
    #: "patrons at the time this was published": the current pledge started no later than the item's publish date,
    #: which the site passes with each decision (``published_at``); without one the condition is not checked.
    patrons_at_publish: bool = False
    #: free members count: a member of the campaign with no paid pledge (Patreon's free membership, a $0 tier, or
    #: a pledge that ended or was declined) is held to the rule's conditions as a $0 member instead of being denied.
    #: A lock naming a $0 tier (the campaign's Free tier) admits free members without it.
    free_members: bool = False
    #: early access: until this moment (timezone-aware) the lock's conditions apply; from it on, everyone may see it
    #: (reason ``public``), as Patreon's early-access posts do.
    public_after: datetime | None = None
    #: a disabled lock lets everyone in.
    enabled: bool = True
    #: ``all``: every condition set must hold; ``any``: one of them is enough.
    combine: Combine = "all"

    def __post_init__(self) -> None:
        o = "LockRule"
        _check_int(o, "min_cents", self.min_cents, 0, optional=True)
        tier_ids = self.tier_ids
        if isinstance(tier_ids, str) or not isinstance(tier_ids, tuple | list):
            raise _bad(o, "tier_ids", tier_ids, "a sequence of tier id strings")
        for tier_id in tier_ids:
            if not isinstance(tier_id, str) or not tier_id:
                raise _bad(o, "tier_ids", tier_ids, "a sequence of non-empty tier id strings")
        object.__setattr__(self, "tier_ids", tuple(tier_ids))
        _check_choice(o, "tier_match", self.tier_match, _TIER_MATCH)
        _check_int(o, "lifetime_cents", self.lifetime_cents, 0, optional=True)
        before = self.patron_since_before
        if before is not None and (not isinstance(before, datetime) or before.tzinfo is None):
            raise _bad(o, "patron_since_before", before, "a timezone-aware datetime or None")
        _check_int(o, "drip_months", self.drip_months, 0, _MAX_MONTHS, optional=True)
        _check_bool(o, "patrons_at_publish", self.patrons_at_publish)
        _check_bool(o, "free_members", self.free_members)
        public = self.public_after
        if public is not None and (not isinstance(public, datetime) or public.tzinfo is None):
            raise _bad(o, "public_after", public, "a timezone-aware datetime or None")
        _check_bool(o, "enabled", self.enabled)
        _check_choice(o, "combine", self.combine, _COMBINE)

    def to_dict(self) -> dict[str, Any]:
        """The rule as JSON-ready values (tier ids as a list, the date as ISO 8601)."""
        return {
            "min_cents": self.min_cents,
            "tier_ids": list(self.tier_ids),
            "tier_match": self.tier_match,
            "lifetime_cents": self.lifetime_cents,
            "patron_since_before": None if self.patron_since_before is None else self.patron_since_before.isoformat(),
            "drip_months": self.drip_months,
            "patrons_at_publish": self.patrons_at_publish,
            "free_members": self.free_members,
            "public_after": None if self.public_after is None else self.public_after.isoformat(),
            "enabled": self.enabled,
            "combine": self.combine,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LockRule:
        """A rule from :meth:`to_dict` output; missing keys take their defaults (so a rule stored by an earlier
        version reads as it did). ``patron_since_before`` and ``public_after`` may be an ISO date or datetime; without
        a time zone it is taken as UTC.

        :raises ValueError: on an unknown key, a negative amount, a bad date or any other bad value, naming it.
        """
        values = dict(_known_keys("LockRule", data, _RULE_KEYS))
        for key in _RULE_MOMENTS:
            if key in values:
                values[key] = _parse_datetime("LockRule", key, values[key])
        return cls(**values)


_RULE_KEYS: Final = frozenset(f.name for f in fields(LockRule))
_RULE_MOMENTS: Final = ("patron_since_before", "public_after")


@dataclass(frozen=True, slots=True, kw_only=True)
class Entitlement:
    """What a patron is owed at one moment.

    ``monthly_cents`` and ``tier_ids`` are non-zero only in the ``active`` and ``grace`` states. ``basis`` names the
    rule that produced the state (see :func:`entitlement`).
    """

    state: State
    #: which rule produced the state: a short machine string, e.g. ``paid`` or ``declined_grace``.
    basis: str
    #: monthly-equivalent entitled cents (annual pledges divided by their cadence).
    monthly_cents: int = 0
    tier_ids: tuple[str, ...] = ()
    #: lifetime support to the campaign, whatever the state.
    lifetime_cents: int = 0
    #: when the current pledge started.
    since: datetime | None = None
    #: when a ``grace`` ends; ``None`` for no set end (and in every other state).
    until: datetime | None = None

    @property
    def entitled(self) -> bool:
        """Whether this is owed anything now (``active`` or ``grace``)."""
        return self.state == "active" or self.state == "grace"


@dataclass(frozen=True, slots=True, kw_only=True)
class Comp:
    """Access the creator granted by hand (a friend, a press copy, a goodwill month): to one named lock, or "as if
    entitled to" one tier, until ``expires_at`` (``None``: until revoked). Stored in ``patronlock_comps``
    (:mod:`flask_patronlock.comps`); :func:`decide` reads the ones on :attr:`Viewer.comps`.

    Constructing one validates it and raises :class:`ValueError` naming the problem.
    """

    #: the named lock it opens ...
    lock: str | None = None
    #: ... or the tier it counts as (the tier's id).
    tier_id: str | None = None
    #: the moment it stops counting (timezone-aware); ``None``: it does not end by itself.
    expires_at: datetime | None = None
    #: its row id in ``patronlock_comps`` (``None`` for one made in code).
    id: int | None = None

    def __post_init__(self) -> None:
        o = "Comp"
        if (self.lock is None) == (self.tier_id is None):
            raise ValueError(f"{o} needs exactly one of lock and tier_id, not {self.lock!r} and {self.tier_id!r}")
        for key in ("lock", "tier_id"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value):
                raise _bad(o, key, value, "a non-empty string or None")
        expires = self.expires_at
        if expires is not None and (not isinstance(expires, datetime) or expires.tzinfo is None):
            raise _bad(o, "expires_at", expires, "a timezone-aware datetime or None")

    def active_at(self, now: datetime) -> bool:
        """Whether it counts at ``now``: never at or after :attr:`expires_at`, whether or not the scheduler has
        revoked it yet."""
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True, slots=True, kw_only=True)
class Viewer:
    """Who is looking: a site user, perhaps linked to a stored patron."""

    authenticated: bool
    linked: bool
    is_admin: bool = False
    patron: Patron | None = None
    #: the comps the creator gave this user or their Patreon membership (expired ones included: :func:`decide` skips
    #: them).
    comps: tuple[Comp, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The answer of :func:`decide`: allowed or not, and why (one of :data:`REASONS`)."""

    allowed: bool
    reason: Reason
    #: the viewer's entitlement; ``None`` when the decision did not need one (disabled lock, admin, not linked ...).
    entitlement: Entitlement | None = None
    #: the monthly cents the amount condition asks for (the minimum cents or the cheapest known required tier).
    required_cents: int | None = None
    required_tier_ids: tuple[str, ...] = ()
    #: a short human explanation of what is missing, for banners and the explainer.
    missing: str | None = None
    #: when a drip lock opens for this viewer.
    available_at: datetime | None = None
    #: on a ``not_patron_at_date`` denial, the moment the pledge had to have started by: the lock's
    #: :attr:`~LockRule.patron_since_before`, or the item's publish date (:attr:`~LockRule.patrons_at_publish`).
    pledged_by: datetime | None = None
    #: the comp that let the viewer in (reason ``comp``).
    comp: Comp | None = None
    #: an early-access lock's :attr:`LockRule.public_after`, on a denial made before it: when the lock opens to
    #: everyone.
    public_at: datetime | None = None


_NO_PATRON: Final = Entitlement(state="none", basis="no_patron")


def _plus(moment: datetime, delta: timedelta) -> datetime:
    try:
        return moment + delta
    except OverflowError:
        return _FAR_FUTURE


def _state(
    patron: Patron, state: State, basis: str, until: datetime | None = None, *, paid: bool = False
) -> Entitlement:
    """An entitlement of ``state``; ``paid``: the patron paid for what the store remembers (``last_entitled_*``), so a
    report without tiers does not take it away (always the case in ``grace``)."""
    if state != "active" and state != "grace":
        return Entitlement(
            state=state, basis=basis, lifetime_cents=patron.lifetime_cents, since=patron.pledge_start, until=None
        )
    cents, tier_ids = max(patron.entitled_cents, 0), patron.entitled_tier_ids
    if not tier_ids and (paid or state == "grace"):
        # Patreon reports 0 cents and no tiers once a pledge is cancelled, may while declined, and does for paid-up
        # patrons from the 1st of a month until that month's charge runs: what was paid for is what the store
        # remembers in last_entitled_* (the last entitlement Patreon reported, updated from every non-zero report,
        # so equal to the report whenever the report names an amount).
        cents, tier_ids = max(cents, patron.last_entitled_cents, 0), patron.last_entitled_tier_ids
    cadence = patron.pledge_cadence
    return Entitlement(
        state=state,
        basis=basis,
        monthly_cents=cents // cadence if cadence is not None and cadence > 1 else cents,
        tier_ids=tier_ids,
        lifetime_cents=patron.lifetime_cents,
        since=patron.pledge_start,
        until=until,
    )


def _unpaid(patron: Patron, settings: PolicySettings, basis: str) -> Entitlement:
    return _state(patron, "active" if settings.first_charge == "entitled_at_once" else "none", basis)


def payment_declined(patron_status: str | None, last_charge_status: str | None) -> bool:
    """Whether Patreon currently has a declined payment: a ``declined_patron``, or an ``active_patron`` whose last
    charge was ``Declined`` (Patreon keeps retrying through the month). The one definition the policy, the store's
    inferred events and the settings page's charts share (see also :func:`decline_outstanding`)."""
    return patron_status == "declined_patron" or (
        patron_status == "active_patron" and last_charge_status == "Declined"
    )


def decline_outstanding(patron: Patron) -> bool:
    """Whether ``patron`` has a declined payment that no ``Paid`` charge has settled: Patreon says so
    (:func:`payment_declined`), or it did (``declined_since`` is set) and now lists the patron as ``active_patron``
    with a last charge other than ``Paid`` (Patreon has been seen to flip a declined patron to ``Pending`` without
    any payment). Only a ``Paid`` charge recovers a decline."""
    status = patron.patron_status
    return payment_declined(status, patron.last_charge_status) or (
        status == "active_patron" and patron.declined_since is not None and patron.last_charge_status != "Paid"
    )


def _month_end(moment: datetime) -> datetime:
    """The first instant (UTC) of the calendar month after ``moment``'s."""
    start = moment.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return add_months(start, 1)


def _paid_period_end(patron: Patron) -> datetime | None:
    """The end of the period a former patron paid for: the stored ``paid_through`` (from a ``Paid`` charge the store
    saw) or -- the member first seen already cancelled, or after a missed webhook -- the end Patreon's report shows,
    whichever is later. The report's end is ``next_charge_date`` (when after the last charge), else the last charge
    plus the cadence, whatever the last charge status says, unless it says the charge failed (``Declined``; fraud
    and refunds never reach here), a decline no ``Paid`` charge settled was outstanding when they cancelled
    (``declined_since``), the last charge is one the store saw refunded (``refunded_at``: the cancellation then says
    ``Deleted`` with the refunded charge's dates), or nothing says the member was ever charged (no charge date, no
    lifetime support).
    """
    end = patron.paid_through
    charged, last = patron.last_charge_date, patron.next_charge_date
    if patron.declined_since is not None:
        # cancelled with a decline no Paid charge settled: Patreon's dates then speak of the failed (or Pending,
        # unpaid) charge, and only what the store saw paid counts
        return end
    if patron.last_charge_status == "Declined" or (charged is None and patron.lifetime_cents <= 0):
        return end
    if patron.refunded_at is not None and (charged is None or charged <= patron.refunded_at):
        # the report's dates speak of a charge that was refunded (or fraud): nothing paid for it
        return end
    if last is None or (charged is not None and last <= charged):
        last = None if charged is None else add_months(charged, max(patron.pledge_cadence or 1, 1))
    if last is not None and (end is None or last > end):
        end = last
    return end


def _before_missing(patron: Patron, settings: PolicySettings, now: datetime) -> Entitlement:
    """The entitlement from Patreon's statuses and the policies, before the missing-from-sync rule."""
    status, charge = patron.patron_status, patron.last_charge_status
    if status == "former_patron":
        if settings.cancelled == "paid_period" and charge not in _REFUNDED and charge != "Fraud":
            paid_through = _paid_period_end(patron)
            if paid_through is not None and now < paid_through:
                return _state(patron, "grace", "cancelled_paid_period", paid_through)
        return _state(patron, "former", "cancelled")
    if status not in ("active_patron", "declined_patron", None):
        return _state(patron, "none", "unknown_status")
    if charge == "Fraud" and status is not None:
        return _state(patron, "restricted", "fraud")
    if decline_outstanding(patron):
        if settings.declined == "restrict":
            return _state(patron, "restricted", "declined_restrict")
        start = patron.declined_since or patron.last_charge_date or patron.observed_at
        if start is not None:
            until = _plus(start, timedelta(days=settings.declined_grace_days))
            basis = "declined_grace"
            if settings.declined == "retry_window":
                until, basis = max(until, _month_end(start)), "declined_retry_window"
            if now < until:
                return _state(patron, "grace", basis, until)
        return _state(patron, "restricted", "declined_grace_over")
    if patron.is_free_trial:
        return (
            _state(patron, "active", "free_trial")
            if settings.count_free_trials
            else _state(patron, "none", "free_trial_not_counted")
        )
    if patron.is_gifted:
        return (
            _state(patron, "active", "gifted")
            if settings.count_gifted
            else _state(patron, "none", "gifted_not_counted")
        )
    if status is None:
        return _state(patron, "none", "not_pledged")
    if charge == "Paid":
        return _state(patron, "active", "paid", paid=True)
    if charge in _REFUNDED:
        return _unpaid(patron, settings, "refunded")
    if patron.paid_through is not None or patron.lifetime_cents > 0:
        return _state(patron, "active", "charge_pending", paid=True)
    return _unpaid(patron, settings, "first_charge_pending")


def _entitlement(
    patron: Patron | None, settings: PolicySettings, now: datetime, steps: list[str] | None
) -> Entitlement:
    if patron is None:
        return _NO_PATRON
    base = _before_missing(patron, settings, now)
    entitled = base.state == "active" or base.state == "grace"  # base.entitled, without the property call
    if not entitled or (patron.missing_since is None and patron.missing_runs <= 0):
        return base
    if patron.held_run_id is not None:
        if steps is not None:
            steps.append(
                f"Missing from {patron.missing_runs} complete sync run(s), but sync run {patron.held_run_id}'s "
                "revocation is held for approval, so the missing-member rule is not applied."
            )
        return base
    deadline = _missing_deadline(patron, settings)
    if patron.missing_runs >= settings.missing_runs or (deadline is not None and now >= deadline):
        return _state(patron, "former", "missing")
    until = deadline if base.until is None or (deadline is not None and deadline < base.until) else base.until
    return _state(patron, "grace", "missing_grace", until)


def _missing_deadline(patron: Patron, settings: PolicySettings) -> datetime | None:
    """When a member missing from complete sync runs is gone by the hours limit (``None``: no such limit)."""
    if patron.missing_since is not None and settings.missing_hours is not None:
        return _plus(patron.missing_since, timedelta(hours=settings.missing_hours))
    return None


def _gone(patron: Patron, settings: PolicySettings, now: datetime) -> bool:
    """Whether the missing-from-sync rule says ``patron`` is no longer a member of the campaign, whatever their
    entitlement: missing from ``settings.missing_runs`` complete runs or past ``settings.missing_hours``, and no
    held revocation waits for the creator."""
    if patron.held_run_id is not None or (patron.missing_since is None and patron.missing_runs <= 0):
        return False
    deadline = _missing_deadline(patron, settings)
    return patron.missing_runs >= settings.missing_runs or (deadline is not None and now >= deadline)


def entitlement(patron: Patron | None, settings: PolicySettings, now: datetime) -> Entitlement:
    """What ``patron`` is owed at ``now`` under ``settings``. Rules, first match wins (``basis`` in brackets):

    * no patron: ``none`` [``no_patron``].
    * ``former_patron``: under ``cancelled="paid_period"``, ``grace`` until the end of the period paid for while
      ``now`` is before it [``cancelled_paid_period``]: the latest of ``paid_through`` (from a ``Paid`` charge the
      store saw), ``next_charge_date`` and the last charge date plus the cadence in months -- the last two whatever
      the last charge status says (Patreon's cancellation says ``Deleted``), unless it is ``Declined``, it is a charge
      the store saw refunded or deemed fraud (``refunded_at``), or nothing shows the member was ever charged (no
      charge date, no lifetime support). Otherwise, under ``at_once``, or when
      the last charge was refunded or fraud: ``former`` [``cancelled``].
    * a status Patreon does not document: ``none`` [``unknown_status``].
    * a pledging member (active or declined) whose last charge is ``Fraud``: ``restricted`` at once whatever the
      declined policy [``fraud``].
    * a decline no ``Paid`` charge has settled (:func:`decline_outstanding`: ``declined_patron``, an ``active_patron``
      whose last charge is ``Declined``, or one Patreon flipped back to ``active_patron`` without a ``Paid`` charge):
      under ``restrict``, ``restricted`` [``declined_restrict``]; under ``grace``, ``grace`` until N days after
      ``declined_since`` (falling back to ``last_charge_date``, then ``observed_at``) [``declined_grace``]; under
      ``retry_window``, ``grace`` until the end of the calendar month (UTC) of that date -- Patreon retries within the
      month of the decline -- or N days after it if that is later [``declined_retry_window``]; then ``restricted``,
      also when no date is known [``declined_grace_over``]. Patreon keeps listing a declined patron as
      ``declined_patron`` for months, even after they cancel: no policy keeps access for that long.
    * free trials and gifted memberships (status active or none): ``active`` when counted [``free_trial``,
      ``gifted``], else ``none`` [``free_trial_not_counted``, ``gifted_not_counted``].
    * no ``patron_status`` (a follower, never pledged): ``none`` [``not_pledged``].
    * ``active_patron`` whose last charge is ``Paid``: ``active`` [``paid``], with what was paid for (below).
    * ``active_patron`` whose last charge was ``Refunded`` (or ``Refunded by Patreon``): an unpaid period, so the
      first-charge policy decides: ``active`` under ``entitled_at_once``, else ``none`` [``refunded``].
    * ``active_patron`` with no charge, or ``Pending``, ``Deleted``, ``Other``: ``active`` if they ever paid
      (``paid_through`` set or lifetime support above 0) [``charge_pending``], with what was paid for (below); else the
      first-charge policy decides: ``active`` under ``entitled_at_once``, ``none`` under ``after_first_charge``
      [``first_charge_pending``].

    Then the missing-from-sync rule, for a member that would be ``active`` or ``grace`` and has ``missing_since`` set
    (or ``missing_runs`` above 0): ``former`` once ``missing_runs`` reaches ``settings.missing_runs`` or
    ``settings.missing_hours`` have passed since ``missing_since``, whichever comes first [``missing``]; ``grace``
    until then [``missing_grace``]. The hours clock runs between runs, so a member gone from Patreon loses access even
    if syncing stops; the breaker cannot hold that, only revocations that a run makes. When ``held_run_id`` is set, a
    revocation waits for the creator's approval and the rule is skipped: the entitlement is the one above.

    Cents and tiers count only in ``active`` and ``grace``; ``monthly_cents`` is ``entitled_cents`` divided (rounding
    down) by ``pledge_cadence`` when that is above 1 (Patreon reports an annual pledge as the annual total).

    What was paid for: Patreon zeroes ``currently_entitled_amount_cents`` and blanks ``currently_entitled_tiers`` of
    paid-up patrons from the 1st of a month until that month's charge runs, and of cancelled patrons at once. So a
    report without tiers, in any ``grace`` and in ``active`` [``paid``, ``charge_pending``], grants the tiers the
    store remembers (``last_entitled_tier_ids``, the last tiers Patreon reported) and the larger of the reported and
    the remembered cents: the zeroing changes no decision. A patron who never paid (``first_charge_pending``, free
    trials, gifts, refunds) is owed only what the report says.
    """
    return _entitlement(patron, settings, now, None)


# (met, reason when not met, what is missing, the moment it names: when a drip opens, or a date condition's cut-off)
_Outcome = tuple[bool, Reason, str | None, datetime | None]
_MET: Final[_Outcome] = (True, REASON_ALLOWED, None, None)
_Tiers = Mapping[str, TierSnapshot]
# the explanation's steps, or None when nobody asked (a page view): build no text then
_Steps = list[str] | None


def _note(steps: list[str], condition: str, met: bool) -> None:
    """Record the outcome of one of the rule's conditions in the explanation's ``steps``."""
    steps.append(f"Condition: {condition}: {'met' if met else 'not met'}.")


def _tier_cents(ent: Entitlement, tiers: Mapping[str, TierSnapshot]) -> int | None:
    """The price of the dearest known tier the entitlement holds, ``None`` if it holds no known tier."""
    best: int | None = None
    for tier_id in ent.tier_ids:
        tier = tiers.get(tier_id)
        if tier is not None and (best is None or tier.amount_cents > best):
            best = tier.amount_cents
    return best


def _check_min_cents(rule: LockRule, ent: Entitlement, tiers: _Tiers, now: datetime, steps: _Steps) -> _Outcome | None:
    if rule.min_cents is None:
        return None
    # Patreon moves the reported amount with currency rates, first-month and annual discounts: a patron entitled to
    # a tier counts at least at that tier's price.
    tier_cents = _tier_cents(ent, tiers) if ent.tier_ids else None
    have = ent.monthly_cents if tier_cents is None or tier_cents <= ent.monthly_cents else tier_cents
    met = have >= rule.min_cents
    if steps is not None:
        counted = "" if have == ent.monthly_cents else f" (counted at its tier's {money(have)})"
        entitled = money(ent.monthly_cents)
        _note(steps, f"at least {money(rule.min_cents)} a month; the entitlement is {entitled} a month{counted}", met)
    if met:
        return _MET
    return (False, REASON_AMOUNT_TOO_LOW, f"{money(rule.min_cents - have)} more a month", None)


def _check_tiers(rule: LockRule, ent: Entitlement, tiers: _Tiers, now: datetime, steps: _Steps) -> _Outcome | None:
    wanted = rule.tier_ids
    if not wanted:
        return None
    named = ", ".join(wanted)
    exact = rule.tier_match == "exact"
    for tier_id in ent.tier_ids:
        if tier_id in wanted:
            if steps is not None:
                wording = f"one of tiers {named}" if exact else f"tier {named} or higher"
                _note(steps, f"{wording}; the patron is entitled to tier {tier_id}", True)
            return _MET
    if exact:
        # only the tiers named: a patron of another tier (dearer or not) or with cents but no tier is not in
        if steps is not None:
            held = ", ".join(ent.tier_ids) if ent.tier_ids else "none"
            _note(steps, f"one of tiers {named} exactly; the patron is entitled to tier(s) {held}", False)
        return (False, REASON_WRONG_TIER, f"one of tiers {named}", None)
    cheapest: int | None = None
    for tier_id in wanted:
        tier = tiers.get(tier_id)
        if tier is not None and (cheapest is None or tier.amount_cents < cheapest):
            cheapest = tier.amount_cents
    if cheapest is None:
        why = f"tier {named} is not among the campaign's known tiers, so no amount can be compared (sync the tiers?)"
        if steps is not None:
            steps.append(f"Condition: tier {named} or higher: not met, {why}.")
        return (False, REASON_AMOUNT_TOO_LOW, why, None)
    best = _tier_cents(ent, tiers)
    if best is None:  # Patreon may send cents with no tier, or a tier we do not know: compare the cents
        met, have = ent.monthly_cents >= cheapest, f"no known tier but {money(ent.monthly_cents)} a month"
    else:
        met, have = best >= cheapest, f"a tier of {money(best)} a month"
    if steps is not None:
        _note(steps, f"tier {named} ({money(cheapest)} a month) or higher; the patron has {have}", met)
    return _MET if met else (False, REASON_AMOUNT_TOO_LOW, f"tier {named} or higher", None)


def _check_since(rule: LockRule, ent: Entitlement, tiers: _Tiers, now: datetime, steps: _Steps) -> _Outcome | None:
    before = rule.patron_since_before
    if before is None:
        return None
    met = ent.since is not None and ent.since < before
    if steps is not None:
        started = "an unknown date" if ent.since is None else ent.since.isoformat()
        _note(steps, f"pledging since before {before.isoformat()}; the pledge started {started}", met)
    return _MET if met else (False, REASON_NOT_PATRON_AT_DATE, f"a pledge started before {before.date()}", before)


def _check_published(ent: Entitlement, published_at: datetime, steps: _Steps) -> _Outcome:
    """``patrons_at_publish`` for an item published at ``published_at``: the pledge started no later than that."""
    met = ent.since is not None and ent.since <= published_at
    if steps is not None:
        started = "an unknown date" if ent.since is None else ent.since.isoformat()
        published = published_at.isoformat()
        _note(steps, f"pledging when this was published ({published}); the pledge started {started}", met)
    if met:
        return _MET
    return (False, REASON_NOT_PATRON_AT_DATE, f"a pledge started by {published_at.date()}", published_at)


def _check_lifetime(rule: LockRule, ent: Entitlement, tiers: _Tiers, now: datetime, steps: _Steps) -> _Outcome | None:
    if rule.lifetime_cents is None:
        return None
    met = ent.lifetime_cents >= rule.lifetime_cents
    if steps is not None:
        least, given = money(rule.lifetime_cents), money(ent.lifetime_cents)
        _note(steps, f"lifetime support of at least {least}; the patron has given {given}", met)
    if met:
        return _MET
    return (False, REASON_LIFETIME_TOO_LOW, f"{money(rule.lifetime_cents - ent.lifetime_cents)} more support", None)


def _check_drip(rule: LockRule, ent: Entitlement, tiers: _Tiers, now: datetime, steps: _Steps) -> _Outcome | None:
    if rule.drip_months is None:
        return None
    opens = None if ent.since is None else add_months(ent.since, rule.drip_months)
    met = opens is not None and now >= opens
    if steps is not None:
        when = "an unknown date (the pledge start is unknown)" if opens is None else opens.isoformat()
        _note(steps, f"pledging for {rule.drip_months} month(s), reached at {when}", met)
    if met:
        return _MET
    if opens is None:
        return (False, REASON_DRIP_NOT_REACHED, "a known pledge start date", None)
    return (
        False,
        REASON_DRIP_NOT_REACHED,
        f"{rule.drip_months} month(s) of pledging, reached on {opens.date()}",
        opens,
    )


_CHECKS: Final = (_check_min_cents, _check_tiers, _check_since, _check_lifetime, _check_drip)


def _required_cents(rule: LockRule, tiers: Mapping[str, TierSnapshot]) -> int | None:
    cheapest: int | None = None
    for tier_id in rule.tier_ids:
        tier = tiers.get(tier_id)
        if tier is not None and (cheapest is None or tier.amount_cents < cheapest):
            cheapest = tier.amount_cents
    if rule.min_cents is None or cheapest is None:
        return rule.min_cents if cheapest is None else cheapest
    return max(rule.min_cents, cheapest) if rule.combine == "all" else min(rule.min_cents, cheapest)


_EMPTY_TIERS: Final[Mapping[str, TierSnapshot]] = {}

_BASIS_TEXT: Final = {
    "no_patron": "no membership of this campaign is stored for this account",
    "unknown_status": "Patreon sent a patron status this version does not know, so nothing is owed",
    "cancelled": "the pledge ended; the cancelled policy is {s.cancelled!r}, so access ends",
    "cancelled_paid_period": "the pledge ended, but the 'paid_period' policy keeps access until the paid period ends",
    "fraud": "Patreon marked the last charge as fraud: access is restricted whatever the declined policy",
    "declined_restrict": "the payment was declined and the declined policy is 'restrict'",
    "declined_grace": "the payment was declined; the 'grace' policy keeps access for {s.declined_grace_days} day(s)",
    "declined_grace_over": "the payment was declined, no payment has gone through since, and the grace period is over",
    "declined_retry_window": "the payment was declined; the 'retry_window' policy keeps access while Patreon retries: "
    "to the end of the month of the first decline, or {s.declined_grace_days} day(s) if that is later",
    "free_trial": "a free trial, and free trials count",
    "free_trial_not_counted": "a free trial, and free trials do not count",
    "gifted": "a gifted membership, and gifts count",
    "gifted_not_counted": "a gifted membership, and gifts do not count",
    "not_pledged": "a follower or free member who never pledged",
    "paid": "the last charge was paid",
    "refunded": "the last charge was refunded; the first-charge policy is {s.first_charge!r}",
    "charge_pending": "the last charge has not gone through yet, but an earlier one did",
    "first_charge_pending": "the first charge has not gone through yet; the first-charge policy is {s.first_charge!r}",
    "missing": "the member was missing from complete sync runs past the limit ({s.missing_runs} run(s) or "
    "{s.missing_hours} hour(s))",
    "missing_grace": "the member is missing from complete sync runs but still inside the limit ({s.missing_runs} "
    "run(s) or {s.missing_hours} hour(s))",
}


def _decide(
    rule: LockRule,
    viewer: Viewer,
    settings: PolicySettings,
    now: datetime,
    tiers: Mapping[str, TierSnapshot] | None,
    steps: list[str] | None,
    lock: str | None = None,
    published_at: datetime | None = None,
) -> Decision:
    decision = _decide_inner(rule, viewer, settings, now, tiers, steps, published_at)
    if viewer.comps and not decision.allowed:
        decision = _decide_comps(decision, rule, lock, viewer, now, tiers, steps, published_at)
    if rule.public_after is not None and not decision.allowed:
        decision = replace(decision, public_at=rule.public_after)
    if steps is not None:
        verdict = "allowed" if decision.allowed else "denied"
        extra = f" ({decision.missing})" if decision.missing else ""
        steps.append(f"Result: {verdict}, reason {decision.reason!r}{extra}.")
    return decision


def _decide_inner(
    rule: LockRule,
    viewer: Viewer,
    settings: PolicySettings,
    now: datetime,
    tiers: Mapping[str, TierSnapshot] | None,
    steps: list[str] | None,
    published_at: datetime | None = None,
) -> Decision:
    if not rule.enabled:
        if steps is not None:
            steps.append("The lock is disabled: everyone may see it.")
        return Decision(allowed=True, reason=REASON_LOCK_DISABLED, required_tier_ids=rule.tier_ids)
    public = rule.public_after
    if public is not None:
        if now >= public:
            if steps is not None:
                steps.append(f"Early access ended at {public.isoformat()}: everyone may see it now.")
            return Decision(allowed=True, reason=REASON_PUBLIC, required_tier_ids=rule.tier_ids)
        if steps is not None:
            steps.append(f"Early access: until {public.isoformat()} only those the lock lets in may see it.")
    if viewer.is_admin:
        if steps is not None:
            steps.append("The viewer is an admin: admins bypass locks.")
        return Decision(allowed=True, reason=REASON_ADMIN_BYPASS, required_tier_ids=rule.tier_ids)
    if not viewer.authenticated:
        if steps is not None:
            steps.append("The viewer is not signed in.")
        return Decision(allowed=False, reason=REASON_ANONYMOUS, required_tier_ids=rule.tier_ids, missing="signing in")
    if not viewer.linked:
        if steps is not None:
            steps.append("The viewer is signed in but has not linked a Patreon account.")
        return Decision(
            allowed=False, reason=REASON_NOT_LINKED, required_tier_ids=rule.tier_ids, missing="a linked Patreon account"
        )
    patron = viewer.patron
    if steps is not None:
        steps.append("The viewer is signed in and linked to Patreon.")
        if patron is not None:
            charged = f" on {patron.last_charge_date.isoformat()}" if patron.last_charge_date else ""
            steps.append(
                f"Patreon status: {patron.patron_status or 'none (never pledged)'}; last charge: "
                f"{patron.last_charge_status or 'none'}{charged}."
            )
    ent = _entitlement(patron, settings, now, steps)
    if steps is not None:
        steps.append("Policy: " + _BASIS_TEXT.get(ent.basis, ent.basis).format(s=settings) + ".")
        until = f" until {ent.until.isoformat()}" if ent.until is not None else ""
        tier_text = ", tiers " + ", ".join(ent.tier_ids) if ent.tier_ids else ""
        steps.append(f"Entitlement: {ent.state}{until}, {money(ent.monthly_cents)} a month{tier_text}.")
    unentitled = _UNENTITLED.get(ent.state)
    if unentitled is not None and (rule.free_members or _names_free_tier(rule, tiers)):
        gone = patron is not None and _gone(patron, settings, now)
        return _free_member(rule, patron, ent, now, tiers, steps, published_at, unentitled, gone=gone)
    if unentitled is not None:
        return Decision(
            allowed=False,
            reason=unentitled[0],
            entitlement=ent,
            required_tier_ids=rule.tier_ids,
            missing=unentitled[1],
        )
    return _conditions(rule, ent, now, tiers, steps, published_at)


def _names_free_tier(rule: LockRule, tiers: Mapping[str, TierSnapshot] | None) -> bool:
    """Whether ``rule`` names a tier ``tiers`` knows to cost nothing (the campaign's Free tier)."""
    if not rule.tier_ids or not tiers:
        return False
    for tier_id in rule.tier_ids:
        tier = tiers.get(tier_id)
        if tier is not None and tier.amount_cents <= 0:
            return True
    return False


def _free_member(
    rule: LockRule,
    patron: Patron | None,
    ent: Entitlement,
    now: datetime,
    tiers: Mapping[str, TierSnapshot] | None,
    steps: list[str] | None,
    published_at: datetime | None,
    unentitled: tuple[Reason, str],
    *,
    gone: bool = False,
) -> Decision:
    """A lock that admits free members, for a viewer owed nothing: no membership at all is ``not_a_member``; a member
    gone from Patreon (missing from complete sync runs) keeps the denial of ``ent``; any other stored member is held
    to the rule's conditions as a $0 member holding only the $0 tiers Patreon lists for them (never a paid tier a
    declined or ended pledge still shows) -- unless ``gone``: Patreon no longer lists them, whatever their
    entitlement (the missing-from-sync rule). Where only money would help (the amount or tier conditions), the denial
    is ``ent``'s own (pledge, update the payment method, rejoin), with ``ent``; any other (a drip, a date, lifetime
    support) is the condition's."""
    if patron is None:
        if steps is not None:
            steps.append("The lock admits free members, but this Patreon account is not a member of the campaign.")
        return Decision(
            allowed=False,
            reason=REASON_NOT_A_MEMBER,
            entitlement=ent,
            required_tier_ids=rule.tier_ids,
            missing="a membership of this campaign (free or paid)",
        )
    if ent.basis == "missing" or gone:
        if steps is not None and ent.basis != "missing":
            steps.append("The lock admits free members, but Patreon no longer lists this member (missing from complete "
                         "sync runs past the limit).")
        return Decision(
            allowed=False, reason=unentitled[0], entitlement=ent, required_tier_ids=rule.tier_ids, missing=unentitled[1]
        )
    known = _EMPTY_TIERS if tiers is None else tiers
    free_tiers = tuple(t for t in patron.entitled_tier_ids if t in known and known[t].amount_cents <= 0)
    if steps is not None:
        steps.append(
            "The lock admits free members: the viewer is a member of the campaign without a paid pledge, so the "
            "lock's conditions are checked for a free membership ($0 a month"
            + (f", tiers {', '.join(free_tiers)})." if free_tiers else ").")
        )
    free = Entitlement(
        state=ent.state,
        basis=ent.basis,
        monthly_cents=0,
        tier_ids=free_tiers,
        lifetime_cents=ent.lifetime_cents,
        since=ent.since,
    )
    decision = _conditions(rule, free, now, tiers, steps, published_at)
    if decision.reason == REASON_AMOUNT_TOO_LOW or decision.reason == REASON_WRONG_TIER:
        # what a paid tier would fix is what the member's own state says: pledge, update the card, rejoin
        return replace(decision, reason=unentitled[0], entitlement=ent, missing=unentitled[1])
    return decision


def _conditions(
    rule: LockRule,
    ent: Entitlement,
    now: datetime,
    tiers: Mapping[str, TierSnapshot] | None,
    steps: list[str] | None,
    published_at: datetime | None = None,
) -> Decision:
    """The rule's conditions for an entitled ``ent``: the last step of :func:`decide`, and what a tier comp is held
    to (:func:`_comp_meets`)."""
    known = _EMPTY_TIERS if tiers is None else tiers
    any_mode = rule.combine == "any"
    failed: _Outcome | None = None
    conditions = 0
    # The checks of the conditions the rule sets, in _CHECKS order (each check also returns None for an unset one; not
    # calling those is what a page view saves).
    checks = []
    if rule.min_cents is not None:
        checks.append(_check_min_cents)
    if rule.tier_ids:
        checks.append(_check_tiers)
    if rule.patron_since_before is not None:
        checks.append(_check_since)
    if rule.lifetime_cents is not None:
        checks.append(_check_lifetime)
    if rule.drip_months is not None:
        checks.append(_check_drip)
    if rule.patrons_at_publish:
        if published_at is not None:
            checks.append(lambda *_: _check_published(ent, published_at, steps))
        elif steps is not None:
            steps.append(
                "Condition: pledging when this was published: not checked, the page gave no publish date "
                "(published_at)."
            )
    for check in checks:
        result = check(rule, ent, known, now, steps)
        if result is None:
            continue
        conditions += 1
        if result[0]:
            if any_mode:  # one met condition is enough
                failed = None
                break
        elif not any_mode:  # one unmet condition denies
            failed = result
            break
        elif failed is None:
            failed = result
    if steps is not None and not conditions:
        steps.append("The lock sets no condition: every entitled patron may see it.")
    met, reason, missing, moment = _MET if failed is None else failed
    return Decision(
        allowed=met,
        reason=REASON_ALLOWED if met else reason,
        entitlement=ent,
        required_cents=_required_cents(rule, known),
        required_tier_ids=rule.tier_ids,
        missing=missing,
        available_at=moment if reason == REASON_DRIP_NOT_REACHED else None,
        pledged_by=moment if reason == REASON_NOT_PATRON_AT_DATE else None,
    )


def decide_unavailable(viewer: Viewer) -> Decision:
    """The decision for content whose lock no longer exists (a creator deleted it) or never did: it fails closed.
    An admin passes (``admin_bypass``: they need to see what to fix); anyone else is denied ``lock_unavailable``."""
    if viewer.is_admin:
        return Decision(allowed=True, reason=REASON_ADMIN_BYPASS)
    return Decision(allowed=False, reason=REASON_LOCK_UNAVAILABLE, missing="a lock that exists")


def decide(
    rule: LockRule,
    viewer: Viewer,
    settings: PolicySettings,
    now: datetime,
    *,
    tiers: Mapping[str, TierSnapshot] | None = None,
    lock: str | None = None,
    published_at: datetime | None = None,
) -> Decision:
    """May ``viewer`` see what ``rule`` (the rule of the named lock ``lock``, if it is one) locks at ``now``? First
    match wins:

    1. a disabled lock: allowed, ``lock_disabled``; an early-access lock at or after its ``public_after``: allowed,
       ``public`` (before it, a denial carries the moment as :attr:`Decision.public_at`);
    2. an admin: allowed, ``admin_bypass``;
    3. not signed in: ``anonymous``;
    4. not linked to Patreon: ``not_linked``;
    5. the :func:`entitlement` is ``none`` (or no patron is stored): ``not_a_patron``; ``restricted``:
       ``payment_declined``; ``former``: ``former_patron``;
    6. the rule's conditions, in this order: ``min_cents`` (monthly-equivalent cents, or the price of the dearest
       known tier the patron is entitled to if that is more -- Patreon's reported amount moves with currency rates
       and first-month and annual discounts; a $0 Free tier does not satisfy a positive minimum), ``tier_ids`` (an
       entitled tier among them, else the best known entitled tier costs at least the cheapest known required tier,
       else -- no entitled tier known in ``tiers`` -- the monthly cents reach that amount; a required tier unknown in
       ``tiers`` can only be met by holding it exactly, and denies ``amount_too_low`` saying why in ``missing``), all
       ``amount_too_low``; under ``tier_match="exact"``, ``tier_ids`` is met only by an entitled tier among them
       (``wrong_tier`` otherwise); ``patron_since_before``
       (``not_patron_at_date``, with ``pledged_by``); ``lifetime_cents`` (``lifetime_too_low``); ``drip_months``
       (``drip_not_reached``, with ``available_at``); ``patrons_at_publish``, when ``published_at`` (the item's
       publish date, timezone-aware) is given: the pledge started no later than it (``not_patron_at_date``, with
       ``pledged_by``). Under ``combine="all"`` the first unmet condition denies; under ``"any"`` the first
       met one allows, and if none is met the first unmet one's reason is given.
    7. everything met (or no condition set): allowed, ``allowed``.
    8. denied, but one of the viewer's :attr:`~Viewer.comps` that has not expired at ``now`` is for ``lock``, or for
       a tier that meets the rule (:func:`_decide_comps`): allowed, ``comp``, with :attr:`Decision.comp`. A comp only
       ever turns a denial into access: it never changes an allowing decision.

    An unmet drip has its own reason, ``drip_not_reached``, the one addition to the design's set: unlike
    ``not_patron_at_date`` (pledged too late, waiting will never help), it says "wait until ``available_at``", and a
    banner keyed on the reason alone must be able to tell the two apart.

    Paying extra on a lower tier does not unlock a higher tier once the tiers are known (Patreon does the same); only
    without a known tier are cents compared, and then an annual pledge's monthly equivalent (often discounted) may fall
    below a tier's monthly price.
    """
    decision = _decide_inner(rule, viewer, settings, now, tiers, None, published_at)  # _decide without steps
    if viewer.comps and not decision.allowed:
        decision = _decide_comps(decision, rule, lock, viewer, now, tiers, None, published_at)
    if rule.public_after is not None and not decision.allowed:
        # before public_after (after it _decide_inner let everyone in): say when the lock opens to everyone
        return replace(decision, public_at=rule.public_after)
    return decision


def explain_steps(
    rule: LockRule,
    viewer: Viewer,
    settings: PolicySettings,
    now: datetime,
    *,
    tiers: Mapping[str, TierSnapshot] | None = None,
    lock: str | None = None,
    published_at: datetime | None = None,
) -> list[str]:
    """The plain-English steps :func:`decide` takes for these arguments, ending with the result (same code path)."""
    steps: list[str] = []
    _decide(rule, viewer, settings, now, tiers, steps, lock, published_at)
    return steps


# -- comps ------------------------------------------------------------------------------------------------------------


def _decide_comps(
    denied: Decision,
    rule: LockRule,
    lock: str | None,
    viewer: Viewer,
    now: datetime,
    tiers: Mapping[str, TierSnapshot] | None,
    steps: list[str] | None,
    published_at: datetime | None = None,
) -> Decision:
    """The viewer's comps, after ``denied``: the comp that lets them in (one for ``lock`` first, then the one that
    lasts longest), or ``denied`` unchanged. A lock comp opens its lock whatever the rule; a tier comp counts as being
    entitled to that tier (its tier id, at least its price a month), with the rest of the rule -- lifetime support,
    pledge dates -- still the viewer's own. An expired comp never counts, whether or not it was revoked yet."""
    if not viewer.authenticated:
        return denied
    best: Comp | None = None
    for comp in viewer.comps:
        if not comp.active_at(now):
            if steps is not None:
                ended = comp.expires_at.isoformat() if comp.expires_at is not None else "?"
                steps.append(f"Comp: {_comp_text(comp)} ended at {ended}, so it does not count.")
            continue
        if comp.lock is not None:
            met = comp.lock == lock
            if not met:
                continue  # a comp for another lock says nothing about this one
        else:
            met = _comp_meets(comp, rule, viewer, denied.entitlement, now, tiers, published_at)
        if steps is not None:
            until = "with no end date" if comp.expires_at is None else f"until {comp.expires_at.isoformat()}"
            outcome = "it opens this lock" if met else "that tier does not meet this lock"
            steps.append(f"Comp: {_comp_text(comp)}, {until}: {outcome}.")
        if met and (best is None or _lasts_longer(comp, best, lock)):
            best = comp
    if best is None:
        return denied
    return Decision(
        allowed=True,
        reason=REASON_COMP,
        entitlement=denied.entitlement,
        required_cents=denied.required_cents,
        required_tier_ids=rule.tier_ids,
        comp=best,
    )


def _comp_meets(
    comp: Comp,
    rule: LockRule,
    viewer: Viewer,
    ent: Entitlement | None,
    now: datetime,
    tiers: Mapping[str, TierSnapshot] | None,
    published_at: datetime | None = None,
) -> bool:
    """Whether the tier comp ``comp`` meets ``rule``: the rule's conditions for the viewer's entitlement (``ent``,
    ``None`` when none was needed) with the comp's tier added, as a patron entitled to that tier would be."""
    tier_id = comp.tier_id
    assert tier_id is not None
    tier = tiers.get(tier_id) if tiers is not None else None
    price = tier.amount_cents if tier is not None else 0
    if ent is not None and ent.entitled:
        ids = ent.tier_ids if tier_id in ent.tier_ids else (*ent.tier_ids, tier_id)
        comped = Entitlement(
            state=ent.state, basis=ent.basis, monthly_cents=max(ent.monthly_cents, price), tier_ids=ids,
            lifetime_cents=ent.lifetime_cents, since=ent.since, until=ent.until,
        )
    else:
        patron = viewer.patron
        comped = Entitlement(
            state="active",
            basis="comp",
            monthly_cents=price,
            tier_ids=(tier_id,),
            lifetime_cents=patron.lifetime_cents if patron is not None else 0,
            since=patron.pledge_start if patron is not None else None,
        )
    return _conditions(rule, comped, now, tiers, None, published_at).allowed


def _lasts_longer(comp: Comp, best: Comp, lock: str | None) -> bool:
    """Whether ``comp`` is a better reason to let the viewer in than ``best``: one for the lock itself beats one for
    a tier, then the one that ends later (never is latest)."""
    if (comp.lock is not None) != (best.lock is not None):
        return comp.lock is not None
    if best.expires_at is None:
        return False
    return comp.expires_at is None or comp.expires_at > best.expires_at


def _comp_text(comp: Comp) -> str:
    return f"a comp for lock {comp.lock!r}" if comp.lock is not None else f"a comp for tier {comp.tier_id}"

