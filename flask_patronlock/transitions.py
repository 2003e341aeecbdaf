"""How a patron's state moves: what a member snapshot changes, and the events and access of that transition.

Pure: no database, no Flask. :mod:`flask_patronlock.store` loads the stored :class:`~flask_patronlock.patron.Patron`,
asks :func:`transition` what a snapshot makes of it, and writes the answer; :mod:`flask_patronlock.runs` asks
:class:`AccessContext` the same of a missing mark or a held revocation.

* :func:`merge` copies Patreon's fields and infers what Patreon does not say (paid-through date, declined-since, the
  entitlement last reported);
* :func:`diff` names the fields that changed; :func:`infer_events` the events Patreon's API does not send (pledge
  started, tier changed, charge succeeded, payment declined, decline recovered, pledge cancelled);
* :class:`AccessContext` evaluates :attr:`Patron.access <flask_patronlock.patron.Patron.access>` under the policy
  settings at one moment, and what a snapshot would take away (:data:`LOSSES`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from itertools import compress, repeat
from operator import attrgetter, ne
from typing import Any

from .dates import add_months
from .patreon.types import MemberSnapshot
from .patron import Patron
from .policy import PolicySettings, decline_outstanding, entitlement, payment_declined, settings_fingerprint

#: Where a snapshot may come from.
#: where a change came from. ``clock``: :meth:`Store.refresh_access <flask_patronlock.store.Store.refresh_access>`
#: re-evaluating access as time passed or a policy changed (the scheduler's tick, a run's last step), so its audit rows
#: are never taken for a run's.
SOURCES = frozenset({"oauth", "webhook", "sync", "admin", "clock"})

#: Patron fields that are Patreon's own (copied from the snapshot); the rest are inferred or bookkeeping.
SNAPSHOT_FIELDS: tuple[str, ...] = (
    "campaign_id",
    "patreon_user_id",
    "email",
    "email_verified",
    "full_name",
    "patron_status",
    "last_charge_status",
    "last_charge_date",
    "next_charge_date",
    "entitled_cents",
    "entitled_tier_ids",
    "will_pay_cents",
    "lifetime_cents",
    "pledge_start",
    "pledge_cadence",
    "is_free_trial",
    "is_gifted",
    "is_follower",
)
INFERRED_FIELDS: tuple[str, ...] = (
    "last_entitled_cents",
    "last_entitled_tier_ids",
    "paid_through", "declined_since", "refunded_at", "missing_since", "missing_runs", "held_run_id",
    # the entitlement last announced and when it may change by time alone
    "access", "access_until")
#: Fields whose change is a change of state (observed_at and source only say when and how we learned it).
STATE_FIELDS: tuple[str, ...] = SNAPSHOT_FIELDS + INFERRED_FIELDS

#: A first sighting counts as a pledge *start* (and sends its events) only if the pledge began this recently; older
#: pledges seen for the first time (the first sync after installing) are existing patrons, not news.
NEW_PLEDGE_WINDOW = timedelta(days=31)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What :meth:`Store.apply <flask_patronlock.store.Store.apply>` did with one snapshot (see :func:`transition`)."""

    member_id: str
    #: ``created``, ``updated``, ``unchanged`` (nothing differed), ``stale`` (older than what is stored) or
    #: ``deferred`` (it would take access away and ``defer_revocations`` was asked: nothing was written).
    outcome: str
    patron: Patron | None
    previous: Patron | None
    changes: Mapping[str, tuple[Any, Any]] = field(default_factory=dict)
    events: tuple[str, ...] = ()
    #: what a ``deferred`` snapshot would take away (see :data:`LOSSES`); empty for every other outcome.
    losses: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        """Whether a row was written."""
        return self.outcome in ("created", "updated")


def is_declined(patron: Patron) -> bool:
    """Whether Patreon currently has a declined payment for this patron."""
    return payment_declined(patron.patron_status, patron.last_charge_status)


def _pledging(patron: Patron | None) -> bool:
    return patron is not None and patron.patron_status in ("active_patron", "declined_patron")


#: Patron's fields, in order (the store reads rows into Patrons positionally).
PATRON_FIELDS = tuple(f.name for f in fields(Patron))


def merge(previous: Patron | None, snapshot: MemberSnapshot, *, observed_at: datetime, source: str) -> Patron:
    """The state after ``snapshot``: Patreon's fields copied, the inferred ones carried forward or recomputed.

    Built in one construction (the write path merges every new member of a 100,000-member first run); ``access`` and
    ``access_until`` are left as they were: :class:`AccessContext` evaluates them.
    """
    user = snapshot.user
    campaign_id, patreon_user_id = snapshot.campaign_id, snapshot.user_id
    email = snapshot.email if snapshot.email is not None else (user.email if user else None)
    email_verified = snapshot.email_verified if snapshot.email_verified is not None else (
        user.email_verified if user else None
    )
    if previous is not None:
        # The identity fields Patreon may omit from a sparse document keep what we knew.
        if campaign_id is None:
            campaign_id = previous.campaign_id
        if patreon_user_id is None:
            patreon_user_id = previous.patreon_user_id
        if email is None:
            email = previous.email
        if email_verified is None:
            email_verified = previous.email_verified
    status, charge_status = snapshot.patron_status, snapshot.last_charge_status
    reported_charge_date, next_charge = snapshot.last_charge_date, snapshot.next_charge_date
    cadence = snapshot.pledge_cadence
    # Patreon has left last_charge_date empty for every patron for days: a member once charged is never "never
    # charged" again, so an empty date keeps the stored one (and a charge is not inferred when it comes back).
    charge_date = reported_charge_date
    if charge_date is None and previous is not None:
        charge_date = previous.last_charge_date
        if charge_status == "Paid" and (
            previous.last_charge_status in ("Pending", "Declined") or snapshot.lifetime_cents > previous.lifetime_cents
        ):
            # a charge went through while the date is hidden (it settled a pending or declined one, or more was
            # paid): it went through by now, and the date Patreon shows later is not a second charge
            charge_date = observed_at

    # paid_through: the end of the period the last successful charge paid for. Never moves backwards on a later
    # snapshot, survives cancellation (cancelled-but-paid keeps access), and is cleared by a refund or fraud.
    paid_through = previous.paid_through if previous else None
    refunded_at = previous.refunded_at if previous else None
    if charge_status == "Paid" and charge_date is not None:
        if next_charge is not None and next_charge > charge_date:
            period_end = next_charge
        else:
            period_end = add_months(charge_date, cadence or 1)
        paid_through = period_end if paid_through is None else max(paid_through, period_end)
    elif charge_status in ("Refunded", "Refunded by Patreon", "Fraud"):
        # remembered: after a refund the patron deletes the pledge ("patrons must also delete their membership to
        # avoid auto-renewal") and Patreon's cancellation says Deleted with the refunded charge's dates, which would
        # otherwise read as a period paid for
        paid_through = None
        stamp = charge_date or observed_at
        refunded_at = stamp if refunded_at is None else max(refunded_at, stamp)

    # declined_since: when the current run of declines began (Patreon retries through the month). Only a Paid charge
    # ends it: Patreon has been seen to list a declined patron as active_patron with a Pending charge, unpaid.
    declined_since = None
    outstanding = previous.declined_since if previous is not None else None
    if payment_declined(status, charge_status):
        if outstanding is not None:
            declined_since = outstanding
        elif charge_status == "Declined" and reported_charge_date is not None:
            declined_since = reported_charge_date
        else:
            declined_since = observed_at
    elif status in ("active_patron", "former_patron") and charge_status != "Paid":
        # still unsettled: listed Pending, or cancelled (Deleted) without a Paid charge since the decline
        declined_since = outstanding

    # What the patron last was entitled to: Patreon zeroes the entitlement on cancellation, but a grace period (paid
    # period, declined grace) grants what they had.
    cents, tier_ids = snapshot.entitled_cents, tuple(snapshot.entitled_tier_ids)
    if cents > 0 or tier_ids:
        last_cents, last_tiers = cents, tier_ids
    elif previous is not None:
        last_cents, last_tiers = previous.last_entitled_cents, previous.last_entitled_tier_ids
    else:
        last_cents, last_tiers = 0, ()

    # Being seen at all ends "missing" and any held revocation of this member (missing_since, missing_runs and
    # held_run_id take their defaults); access is evaluated by AccessContext.
    return Patron(
        snapshot.member_id,
        campaign_id,
        email,
        email_verified,
        snapshot.full_name,
        status,
        charge_status,
        charge_date,
        next_charge,
        cents,
        tier_ids,
        snapshot.will_pay_cents,
        snapshot.lifetime_cents,
        snapshot.pledge_start,
        cadence,
        snapshot.is_free_trial,
        snapshot.is_gifted,
        snapshot.is_follower,
        patreon_user_id,
        observed_at,
        source,
        last_cents,
        last_tiers,
        paid_through,
        declined_since,
        refunded_at,
        None,
        0,
        None,
        None,
        None,
        None,
        previous.local_user_id if previous else None,
    )


# merge() builds Patrons positionally, in this order:
assert tuple(f.name for f in fields(Patron)) == (
    "member_id", "campaign_id", "email", "email_verified", "full_name", "patron_status",
    "last_charge_status", "last_charge_date", "next_charge_date", "entitled_cents", "entitled_tier_ids",
    "will_pay_cents", "lifetime_cents", "pledge_start", "pledge_cadence", "is_free_trial", "is_gifted", "is_follower",
    "patreon_user_id", "observed_at", "source", "last_entitled_cents", "last_entitled_tier_ids", "paid_through",
    "declined_since", "refunded_at", "missing_since", "missing_runs", "held_run_id", "access", "access_until",
    "access_policy", "local_user_id",
), "Patron's fields changed: update merge()"


def diff(previous: Patron | None, current: Patron) -> dict[str, tuple[Any, Any]]:
    """Fields whose value changed, as ``{name: (old, new)}``; every set field when there was no previous state."""
    values = _state_of(current)
    # "is not" first: most fields of a new patron are None like their default, and an identity test skips the slower
    # rich comparison (a datetime against None); no field's value differs from itself
    if previous is None:
        return {
            name: (None, value) for name, default, value in zip(STATE_FIELDS, _EMPTY_STATE, values, strict=True)
            if value is not default and value != default
        } or {"patron_status": (None, current.patron_status)}
    old = _state_of(previous)
    if old == values:
        return {}
    return {name: (a, b) for name, a, b in zip(STATE_FIELDS, old, values, strict=True) if a is not b and a != b}


class CreatedChanges(Mapping[str, tuple[Any, Any]]):
    """``diff(None, patron)`` read from the patron itself: each set field as ``(None, value)``, built when asked.

    A first run keeps a page's 1,000 results alive while it writes them; as a dict each would hold some twenty
    ``(None, value)`` pairs, and that many live containers make Python's collector walk the whole heap every few
    pages. Equal to the dict :func:`diff` returns (``==`` either way); :meth:`as_dict` builds that dict in one step.
    """

    __slots__ = ("_names", "_patron")

    def __init__(self, patron: Patron) -> None:
        # the fields whose value != their default, as diff() picks them, selected in C
        names = tuple(compress(STATE_FIELDS, map(ne, _state_of(patron), _EMPTY_STATE))) or ("patron_status",)
        self._patron = patron
        # one tuple per distinct set of fields (a handful a campaign), not one per patron
        self._names = _NAMES.setdefault(names, names) if len(_NAMES) < 4096 else names

    def as_dict(self) -> dict[str, tuple[Any, Any]]:
        """The changes as the plain dict :func:`diff` returns."""
        names, values = self.set_fields()
        return dict(zip(names, zip(repeat(None), values), strict=True))

    def set_fields(self) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        """The names of the set fields and their values (the new side of each pair), in :data:`STATE_FIELDS`' order.
        The names tuple is shared by every patron with the same fields set."""
        names = self._names
        getter = _GETTERS.get(names)
        if getter is None:
            getter = _getter(names)
            if len(_GETTERS) < 4096:
                _GETTERS[names] = getter
        return names, getter(self._patron)

    def __getitem__(self, name: str) -> tuple[Any, Any]:
        if name not in self._names:
            raise KeyError(name)
        return (None, getattr(self._patron, name))

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __repr__(self) -> str:
        return f"CreatedChanges({self.as_dict()!r})"


def _getter(names: tuple[str, ...]) -> Callable[[Patron], tuple[Any, ...]]:
    """``names`` of a patron as one tuple, read in C."""
    get = attrgetter(*names)
    if len(names) == 1:
        return lambda patron: (get(patron),)
    return get


_NAMES: dict[tuple[str, ...], tuple[str, ...]] = {}
_GETTERS: dict[tuple[str, ...], Callable[[Patron], tuple[Any, ...]]] = {}


def changes_dict(changes: Mapping[str, tuple[Any, Any]]) -> dict[str, tuple[Any, Any]]:
    """A fresh plain dict of ``changes`` (an :class:`ApplyResult`'s, a dict or a :class:`CreatedChanges`)."""
    return changes.as_dict() if type(changes) is CreatedChanges else dict(changes)


#: Columns of an audit row written by Store._write_events, in its order.
EVENT_COLUMNS: tuple[str, ...] = (
    "created_at", "observed_at", "member_id", "patreon_user_id", "user_id", "kind", "source", "run_id", "events",
    "changes", "detail",
)
#: Columns of patronlock_patrons written from a Patron.
PATRON_COLUMNS: tuple[str, ...] = ("member_id", *STATE_FIELDS, "access_policy", "observed_at", "source")
columns_of = attrgetter(*PATRON_COLUMNS)
INSERT_COLUMNS: tuple[str, ...] = (*PATRON_COLUMNS, "updated_at")

#: a patron's STATE_FIELDS as one tuple (read in C: diff() runs for every written member).
_state_of = attrgetter(*STATE_FIELDS)
_EMPTY_PATRON = Patron(member_id="")
_SET = object.__setattr__
_EMPTY_STATE: tuple[Any, ...] = _state_of(_EMPTY_PATRON)


def _replace(patron: Patron, **changes: Any) -> Patron:
    """``patron.replace(**changes)`` without dataclasses.replace's per-call field introspection (the write path
    makes two per member of a 100,000-member run). Only for names that are Patron fields."""
    new = object.__new__(Patron)
    for name in PATRON_FIELDS:
        _SET(new, name, changes[name] if name in changes else getattr(patron, name))
    return new


def effective_entitlement(patron: Patron) -> tuple[int, frozenset[str]]:
    """The entitled cents and tiers ``patron`` stands for: Patreon's report, or -- when it names no tier (zeroed at
    the start of a month, blanked on cancellation) -- what the store remembers (``last_entitled_*``)."""
    if patron.entitled_tier_ids:
        return patron.entitled_cents, frozenset(patron.entitled_tier_ids)
    return max(patron.entitled_cents, patron.last_entitled_cents), frozenset(patron.last_entitled_tier_ids)


def _charged(previous: Patron, current: Patron) -> bool:
    """Whether a charge went through between ``previous`` and ``current``: ``Paid`` with a later charge date, or the
    same date that was ``Pending`` or ``Declined`` before, or a first charge date (where Patreon hid the date of a
    ``Paid`` charge, only with more lifetime support or a later next charge). ``Deleted`` -> ``Paid`` on the same
    date is a cancelled pledge taken up again, with no charge."""
    if current.last_charge_status != "Paid" or current.last_charge_date is None:
        return False
    before = previous.last_charge_date
    if before is None:
        if previous.last_charge_status != "Paid":
            return True  # a first charge
        # Paid before, its date hidden (first seen in an outage of charge dates): a charge only if more was paid
        # or the next charge moved on, not because the date is shown again
        after, then = current.next_charge_date, previous.next_charge_date
        return current.lifetime_cents > previous.lifetime_cents or (
            after is not None and then is not None and after > then
        )
    if current.last_charge_date > before:
        return True
    return current.last_charge_date == before and previous.last_charge_status in ("Pending", "Declined")


def infer_events(previous: Patron | None, current: Patron, *, observed_at: datetime) -> tuple[str, ...]:
    """The events Patreon's API does not send, inferred from the transition ``previous`` -> ``current``.

    A member seen for the first time is compared with "never pledged" only when the pledge began within
    :data:`NEW_PLEDGE_WINDOW` of ``observed_at``; otherwise the first sighting is not news and infers nothing.
    Each event is one that happened: ``tier_changed`` compares :func:`effective_entitlement` (Patreon's zeroing is
    not a change), ``charge_succeeded`` needs a charge (:func:`_charged`), ``payment_recovered`` a ``Paid`` charge
    settling a decline (:func:`~flask_patronlock.policy.decline_outstanding`).
    """
    if previous is None:
        start = current.pledge_start
        if start is None or observed_at - start > NEW_PLEDGE_WINDOW:
            return ()
        previous = Patron(member_id=current.member_id)
    events: list[str] = []
    was_pledging, is_pledging = _pledging(previous), _pledging(current)
    if current.patron_status == "active_patron" and not was_pledging:
        events.append("pledge_started")
    if was_pledging and is_pledging and effective_entitlement(previous) != effective_entitlement(current):
        events.append("tier_changed")
    if _charged(previous, current):
        events.append("charge_succeeded")
    was_declined, now_declined = decline_outstanding(previous), decline_outstanding(current)
    if now_declined and not was_declined:
        events.append("payment_declined")
    if (
        was_declined
        and not now_declined
        and current.patron_status == "active_patron"
        and current.last_charge_status == "Paid"
    ):
        events.append("payment_recovered")
    if current.patron_status == "former_patron" and was_pledging:
        events.append("pledge_cancelled")
    return tuple(events)


# -- access: the entitlement last announced ---------------------------------------------------------------------------


def access_events(previous: Patron | None, current: Patron, *, observed_at: datetime) -> tuple[str, ...]:
    """``access_granted`` / ``access_revoked`` when :attr:`Patron.access` flips between ``previous`` and ``current``.

    A first sighting announces a grant only when the pledge is news (began within :data:`NEW_PLEDGE_WINDOW`), like
    :func:`infer_events`; a row never evaluated before (``access`` is ``None``) is evaluated silently.
    """
    if current.access is None:
        return ()
    if previous is None:
        start = current.pledge_start
        if current.access and start is not None and observed_at - start <= NEW_PLEDGE_WINDOW:
            return ("access_granted",)
        return ()
    if previous.access is None or previous.access == current.access:
        return ()
    return ("access_granted",) if current.access else ("access_revoked",)


#: What a snapshot can take away from a patron who is entitled now, as the policy computes the entitlement (so what a
#: grace keeps is no loss): ``access`` (no longer entitled), ``tiers`` (still entitled, but the entitled tiers
#: emptied) and ``cents`` (still entitled, but the monthly entitled cents fell to 0). A sync run defers every such
#: snapshot and the breaker counts them.
LOSSES: tuple[str, ...] = ("access", "tiers", "cents")


@dataclass(slots=True)
class AccessContext:
    """The settings and the moment one write transaction evaluates :attr:`Patron.access` under."""

    settings: PolicySettings
    now: datetime
    defer: bool = False
    #: :func:`~flask_patronlock.policy.settings_fingerprint` of :attr:`settings`, stored as Patron.access_policy.
    key: str = field(init=False)

    def __post_init__(self) -> None:
        self.key = settings_fingerprint(self.settings)

    def evaluate(
        self, previous: Patron | None, current: Patron, *, observed_at: datetime, owned: bool = False
    ) -> tuple[Patron, tuple[str, ...]]:
        """``current`` with its access evaluated now, and the access events of ``previous`` -> that.

        :param owned: ``current`` was built for this call and nobody else holds it (what :func:`merge` returns): its
            two access fields are filled in place instead of copying all the others.
        """
        ent = entitlement(current, self.settings, self.now)
        until = ent.until if ent.entitled else None
        if current.access is not ent.entitled or current.access_until != until or current.access_policy != self.key:
            if owned:
                _SET(current, "access", ent.entitled)
                _SET(current, "access_until", until)
                _SET(current, "access_policy", self.key)
            else:
                current = _replace(current, access=ent.entitled, access_until=until, access_policy=self.key)
        events = access_events(previous, current, observed_at=observed_at)
        if "access_revoked" in events and ent.basis == "missing":
            events = ("pledge_cancelled", *events)  # gone from complete runs: the pledge ended as far as we can tell
        return current, events

    def unchanged(self, patron: Patron) -> bool:
        """Whether evaluating ``patron`` now would leave its ``access`` and ``access_until`` as stored."""
        ent = entitlement(patron, self.settings, self.now)
        return patron.access is ent.entitled and patron.access_until == (ent.until if ent.entitled else None)

    def entitled_now(self, patron: Patron | None) -> bool:
        return patron is not None and entitlement(patron, self.settings, self.now).entitled

    def losses(self, previous: Patron | None, current: Patron) -> tuple[str, ...]:
        """What ``previous`` -> ``current`` (evaluated) takes away now, among :data:`LOSSES`."""
        if previous is None:
            return ()
        before = entitlement(previous, self.settings, self.now)
        if not before.entitled:
            return ()
        if current.access is False:
            return ("access",)
        after = entitlement(current, self.settings, self.now)
        lost: tuple[str, ...] = ()
        if before.tier_ids and not after.tier_ids:
            lost += ("tiers",)
        if before.monthly_cents > 0 and after.monthly_cents <= 0:
            lost += ("cents",)
        return lost


#: The fields a snapshot and a stored Patron share by name and must agree on for the snapshot to change nothing.
COMPARED: tuple[str, ...] = (
    "patron_status", "last_charge_date", "entitled_cents", "last_charge_status", "next_charge_date",
    "entitled_tier_ids", "will_pay_cents", "lifetime_cents", "pledge_start", "pledge_cadence", "is_free_trial",
    "is_gifted", "is_follower", "full_name",
)
compared_of = attrgetter(*COMPARED)  # of a MemberSnapshot or a Patron, as one tuple


def optional_agree(
    snapshot: MemberSnapshot,
    campaign_id: str | None,
    patreon_user_id: str | None,
    email: str | None,
    email_verified: bool | None,
) -> bool:
    """Whether what ``snapshot`` says of the fields Patreon may leave out (campaign, user, e-mail: ``None`` when not
    sent, so merge() keeps the stored value) agrees with the stored values."""
    user = snapshot.user
    new_email = snapshot.email if snapshot.email is not None else (user.email if user else None)
    verified = snapshot.email_verified if snapshot.email_verified is not None else (
        user.email_verified if user else None
    )
    return (
        (snapshot.campaign_id is None or snapshot.campaign_id == campaign_id)
        and (snapshot.user_id is None or snapshot.user_id == patreon_user_id)
        and (new_email is None or new_email == email)
        and (verified is None or verified == email_verified)
    )


def same_as_stored(snapshot: MemberSnapshot, stored: Patron) -> bool:
    """Whether applying ``snapshot`` to ``stored`` would change nothing (see :func:`merge`): same Patreon fields, and
    no missing mark or held revocation for being seen to clear. (the store's ``_settled`` asks the same in SQL.)"""
    if stored.missing_since is not None or stored.missing_runs or stored.held_run_id is not None:
        return False
    return compared_of(snapshot) == compared_of(stored) and optional_agree(
        snapshot, stored.campaign_id, stored.patreon_user_id, stored.email, stored.email_verified
    )


def older_than_stored(snapshot: MemberSnapshot, stored: Patron) -> bool:
    """Whether ``snapshot`` says less than ``stored`` about things that only move forward."""
    if stored.last_charge_date is not None and (
        snapshot.last_charge_date is None or snapshot.last_charge_date < stored.last_charge_date
    ):
        return True
    if snapshot.lifetime_cents < stored.lifetime_cents:
        return True
    return (
        stored.pledge_start is not None
        and snapshot.pledge_start is not None
        and snapshot.pledge_start < stored.pledge_start
    )


def transition(
    snapshot: MemberSnapshot,
    previous: Patron | None,
    links: Mapping[str, str],
    *,
    observed_at: datetime,
    source: str,
    access: AccessContext | None = None,
) -> ApplyResult:
    """What ``snapshot`` makes of the stored ``previous`` (``None``: never stored) as an :class:`ApplyResult`,
    nothing written: ``stale``, ``unchanged``, ``deferred`` (``access.defer`` and it takes something away),
    ``created`` or ``updated``.

    :param links: ``{patreon_user_id: local user id}`` of the accounts linked already, for a member seen first.
    :param access: evaluate :attr:`Patron.access <flask_patronlock.patron.Patron.access>` under these settings.
    """
    if previous is not None and previous.observed_at is not None and previous.observed_at > observed_at:
        return ApplyResult(snapshot.member_id, "stale", previous, previous)
    if (
        previous is not None
        and same_as_stored(snapshot, previous)
        and (access is None or access.unchanged(previous))
    ):
        # The common case of every sync run: Patreon says what we stored and time changed nothing. merge() would
        # return the stored state, so skip building it.
        return ApplyResult(snapshot.member_id, "unchanged", previous, previous)
    current = merge(previous, snapshot, observed_at=observed_at, source=source)
    if previous is None and current.patreon_user_id is not None and current.patreon_user_id in links:
        current = current.replace(local_user_id=links[current.patreon_user_id])
    announced: tuple[str, ...] = ()
    if access is not None:
        current, announced = access.evaluate(previous, current, observed_at=observed_at, owned=True)
        losses = access.losses(previous, current) if access.defer else ()
        if losses:
            return ApplyResult(
                snapshot.member_id, "deferred", current, previous, diff(previous, current), losses=losses
            )
    changes = diff(previous, current)
    if previous is not None and not changes:
        return ApplyResult(snapshot.member_id, "unchanged", previous, previous)
    events = infer_events(previous, current, observed_at=observed_at) + announced
    return ApplyResult(
        snapshot.member_id, "created" if previous is None else "updated", current, previous, changes, events
    )
