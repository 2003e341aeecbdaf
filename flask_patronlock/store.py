"""The single write path: every change to a patron's stored state goes through :meth:`Store.apply`.

``apply`` takes what Patreon said about a member (a :class:`~flask_patronlock.patreon.types.MemberSnapshot`), where it
came from and when it was observed, and in one transaction:

1. locks the stored rows of those members (``SELECT … FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite, so
   read-then-write never races another worker and SQLite never answers "database is locked" on the upgrade);
2. skips any snapshot older than what is stored (never older over newer), and any that changes nothing;
3. merges the snapshot with the stored state, inferring what Patreon does not say (paid-through date, declined-since)
   and the events of the transition (pledge started, tier changed, charge succeeded, payment declined, decline
   recovered, pledge cancelled);
4. writes the rows with a conditional upsert — insert-if-absent, then update-where-not-newer — and one audit row per
   changed patron (none for a no-op);
5. commits, and only then sends the signals.

Nothing else in flask-patronlock writes ``patronlock_patrons``. The store knows nothing of Flask requests; it needs an
engine, the tables, and a sender for signals.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any

from sqlalchemy import (
    Boolean,
    Connection,
    Engine,
    Integer,
    and_,
    bindparam,
    func,
    insert,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.types import JSON

from . import signals
from .dates import add_months
from .models import Tables, ids_value, in_ids, is_row_id
from .patreon.jsonapi import is_patreon_id
from .patreon.types import MemberSnapshot, TierSnapshot, UserSnapshot
from .patron import Patron
from .policy import PolicySettings, decline_outstanding, entitlement, payment_declined, settings_fingerprint

log = logging.getLogger("flask_patronlock.store")

#: Where a snapshot may come from.
#: where a change came from. ``clock``: :meth:`Store.refresh_access` re-evaluating access as time passed or a policy
#: changed (the scheduler's tick, a run's last step), so its audit rows are never taken for a run's.
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
    # issue 5: the entitlement last announced and when it may change by time alone
    "access", "access_until")
#: Fields whose change is a change of state (observed_at and source only say when and how we learned it).
STATE_FIELDS: tuple[str, ...] = SNAPSHOT_FIELDS + INFERRED_FIELDS
#: Columns of an audit row written by Store._write_events, in its order.
_EVENT_COLUMNS: tuple[str, ...] = (
    "created_at", "observed_at", "member_id", "patreon_user_id", "user_id", "kind", "source", "run_id", "events",
    "changes", "detail",
)
#: Columns of patronlock_patrons written from a Patron.
_COLUMNS: tuple[str, ...] = ("member_id", *STATE_FIELDS, "access_policy", "observed_at", "source")
_columns_of = attrgetter(*_COLUMNS)
_INSERT_COLUMNS: tuple[str, ...] = (*_COLUMNS, "updated_at")

#: A first sighting counts as a pledge *start* (and sends its events) only if the pledge began this recently; older
#: pledges seen for the first time (the first sync after installing) are existing patrons, not news.
NEW_PLEDGE_WINDOW = timedelta(days=31)

# SQLite's default limit on bound parameters is 32766 since 3.32; stay well under it for older builds too.
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What :meth:`Store.apply` did with one snapshot."""

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


_ALL_FIELDS = tuple(f.name for f in fields(Patron))


def merge(previous: Patron | None, snapshot: MemberSnapshot, *, observed_at: datetime, source: str) -> Patron:
    """The state after ``snapshot``: Patreon's fields copied, the inferred ones carried forward or recomputed.

    Built in one construction (the write path merges every new member of a 100,000-member first run); ``access`` and
    ``access_until`` are left as they were: :class:`_AccessContext` evaluates them.
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
    # held_run_id take their defaults); access is evaluated by _AccessContext.
    return Patron(
        snapshot.member_id,
        campaign_id,
        patreon_user_id,
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
    "member_id", "campaign_id", "patreon_user_id", "email", "email_verified", "full_name", "patron_status",
    "last_charge_status", "last_charge_date", "next_charge_date", "entitled_cents", "entitled_tier_ids",
    "will_pay_cents", "lifetime_cents", "pledge_start", "pledge_cadence", "is_free_trial", "is_gifted", "is_follower",
    "observed_at", "source", "last_entitled_cents", "last_entitled_tier_ids", "paid_through", "declined_since",
    "refunded_at", "missing_since", "missing_runs", "held_run_id", "access", "access_until", "access_policy",
    "local_user_id",
), "Patron's fields changed: update merge()"


def diff(previous: Patron | None, current: Patron) -> dict[str, tuple[Any, Any]]:
    """Fields whose value changed, as ``{name: (old, new)}``; every set field when there was no previous state."""
    values = _state_of(current)
    if previous is None:
        return {
            name: (None, value) for name, default, value in zip(STATE_FIELDS, _EMPTY_STATE, values, strict=True)
            if value != default
        } or {"patron_status": (None, current.patron_status)}
    old = _state_of(previous)
    if old == values:
        return {}
    return {name: (a, b) for name, a, b in zip(STATE_FIELDS, old, values, strict=True) if a != b}


#: a patron's STATE_FIELDS as one tuple (read in C: diff() runs for every written member).
_state_of = attrgetter(*STATE_FIELDS)
_EMPTY_PATRON = Patron(member_id="")
_SET = object.__setattr__
_EMPTY_STATE: tuple[Any, ...] = _state_of(_EMPTY_PATRON)


def _replace(patron: Patron, **changes: Any) -> Patron:
    """``patron.replace(**changes)`` without dataclasses.replace's per-call field introspection (the write path
    makes two per member of a 100,000-member run). Only for names that are Patron fields."""
    new = object.__new__(Patron)
    for name in _ALL_FIELDS:
        _SET(new, name, changes[name] if name in changes else getattr(patron, name))
    return new


# -- bulk inserts without per-row statement overhead (issue 5: a first run writes 100,000 rows) ------------------------

def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def json_ready(value: Any) -> Any:
    """``value`` with datetimes as ISO 8601 strings and tuples as lists, all the way down: what any database's JSON
    column takes (the audit rows' ``changes`` hold datetimes and tuples of tier ids)."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is dict:
        return {k: json_ready(v) for k, v in value.items()}
    if kind is tuple or kind is list:
        return [json_ready(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


_SQLITE_INSERTS: dict[tuple[int, tuple[str, ...], str | None], tuple[str, list[tuple[int, Any]]]] = {}


def _sqlite_insert_plan(
    conn: Connection, table: Any, names: tuple[str, ...], skip_conflicts_on: str | None
) -> tuple[str, list[tuple[int, Any]]]:
    """The ``INSERT`` for ``names`` and, by position, the bind processors of the columns that have one."""
    key = (id(table), names, skip_conflicts_on)
    cached = _SQLITE_INSERTS.get(key)
    if cached is None:
        dialect = conn.dialect
        quote = dialect.identifier_preparer.quote
        sql = (
            f"INSERT INTO {quote(table.name)} ({', '.join(quote(n) for n in names)}) "
            f"VALUES ({', '.join('?' for _ in names)})"
        )
        if skip_conflicts_on is not None:
            sql += f" ON CONFLICT ({quote(skip_conflicts_on)}) DO NOTHING"
        processors: list[tuple[int, Any]] = []
        for index, name in enumerate(names):
            column_type = table.c[name].type
            if isinstance(column_type, JSON) and getattr(dialect, "_json_serializer", None) is None:
                # What the JSON type stores (json.dumps, None as 'null'), in one C-level call that also writes the
                # datetimes and tuples json_ready() would have converted first.
                processors.append((index, _dumps_json))
                continue
            process = column_type._cached_bind_processor(dialect)
            if process is not None:
                processors.append((index, process))
        cached = (sql, processors)
        _SQLITE_INSERTS[key] = cached
    return cached


def _json_encoder() -> Callable[[Any], str]:
    """``json.JSONEncoder(default=_json_default).encode``, with its C encoder built once: ``encode()`` builds one at
    every call, and a first run encodes 100,000 audit rows' changes (no circular-reference check: they are acyclic)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return json.JSONEncoder(default=_json_default).encode
    escape = json.encoder.encode_basestring_ascii
    chunks = make(None, _json_default, escape, None, ": ", ", ", False, False, True)
    return lambda value: "".join(chunks(value, 0))


_encode_json = _json_encoder()


def _dumps_json(value: Any) -> str:
    return "null" if value is None else _encode_json(value)


def _executemany_sqlite(
    conn: Connection,
    table: Any,
    names: tuple[str, ...],
    rows: Iterable[Sequence[Any]],
    *,
    skip_conflicts_on: str | None = None,
) -> None:
    """``INSERT`` ``rows`` (value sequences in the order of ``names``) through the DBAPI's executemany on SQLite: the
    columns' own bind processors convert the values (so what is stored is exactly what SQLAlchemy would store), but
    no statement is compiled and no parameter dict is built per row."""
    sql, processors = _sqlite_insert_plan(conn, table, names, skip_conflicts_on)
    params = []
    for row in rows:
        values = list(row)
        for index, process in processors:
            values[index] = process(values[index])
        params.append(tuple(values))
    if params:
        conn.exec_driver_sql(sql, params)


def _executemany(conn: Connection, table: Any, names: tuple[str, ...], rows: Sequence[Sequence[Any]]) -> None:
    """A plain multi-row ``INSERT`` of value sequences in the order of ``names`` (JSON columns' values may hold
    datetimes and tuples)."""
    if not rows:
        return
    if conn.dialect.name == "sqlite":
        _executemany_sqlite(conn, table, names, rows)
        return
    json_columns = {n for n in names if isinstance(table.c[n].type, JSON)}
    conn.execute(
        insert(table),
        [{n: json_ready(v) if n in json_columns else v for n, v in zip(names, row, strict=True)} for row in rows],
    )


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


# -- access: the entitlement last announced (issue 5) ------------------------------------------------------------------


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
class _AccessContext:
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


_PATRON_FIELDS = tuple(f.name for f in fields(Patron))
assert _PATRON_FIELDS[-1] == "local_user_id"  # _load_for_update builds Patrons positionally


#: The fields a snapshot and a stored Patron share by name and must agree on for the snapshot to change nothing.
_COMPARED: tuple[str, ...] = (
    "patron_status", "last_charge_date", "entitled_cents", "last_charge_status", "next_charge_date",
    "entitled_tier_ids", "will_pay_cents", "lifetime_cents", "pledge_start", "pledge_cadence", "is_free_trial",
    "is_gifted", "is_follower", "full_name",
)
_compared_of = attrgetter(*_COMPARED)  # of a MemberSnapshot or a Patron, as one tuple


def _optional_agree(
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


def _same_as_stored(snapshot: MemberSnapshot, stored: Patron) -> bool:
    """Whether applying ``snapshot`` to ``stored`` would change nothing (see :func:`merge`): same Patreon fields, and
    no missing mark or held revocation for being seen to clear. (:meth:`Store._settled` asks the same in SQL.)"""
    if stored.missing_since is not None or stored.missing_runs or stored.held_run_id is not None:
        return False
    return _compared_of(snapshot) == _compared_of(stored) and _optional_agree(
        snapshot, stored.campaign_id, stored.patreon_user_id, stored.email, stored.email_verified
    )


def row_to_patron(row: Mapping[Any, Any], local_user_id: str | None = None) -> Patron:
    """A :class:`Patron` from a ``patronlock_patrons`` row mapping."""
    values = {name: row[name] for name in _PATRON_FIELDS if name in row}
    values["local_user_id"] = local_user_id if local_user_id is not None else row.get("local_user_id")
    return Patron(**values)


# -- SQLite's one writer (issue 5: webhook acknowledgements and runs share it) ----------------------------------------
#
# SQLite lets one connection write at a time. A writer that finds the lock taken is put to sleep by SQLite's busy
# handler -- 1 ms, then 2, 5, 10 ... 100 ms between tries -- although a write here holds it for well under a
# millisecond: under a burst of webhooks most of an acknowledgement's time went to those sleeps. So writers of one
# process queue on a lock of their own (handed over at once), and a writer waiting for another process retries every
# fraction of a millisecond instead.

_WRITE_LOCKS: dict[str, threading.RLock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()
#: how long a writer waits for SQLite's write lock before "database is locked" (SQLite's own busy timeout, as before).
SQLITE_BUSY_SECONDS = 30.0


def sqlite_write_lock(engine: Engine) -> threading.RLock:
    """The lock this process's writers to ``engine``'s SQLite database take before SQLite's own (re-entrant, so a
    nested write on the same thread fails as SQLite would instead of waiting on itself)."""
    database = engine.url.database
    # one lock per database file however the URL names it (in-memory databases share one: harmless, writes are short)
    key = os.path.realpath(database) if database and database != ":memory:" else str(engine.url)
    lock = _WRITE_LOCKS.get(key)
    if lock is None:
        with _WRITE_LOCKS_GUARD:
            lock = _WRITE_LOCKS.setdefault(key, threading.RLock())
    return lock


def begin_immediate(dbapi_connection: Any, *, timeout: float = SQLITE_BUSY_SECONDS) -> None:
    """``BEGIN IMMEDIATE`` on a DBAPI sqlite3 connection, retrying every fraction of a millisecond (up to 5 ms apart)
    while another process writes, for up to ``timeout`` seconds; then "database is locked" as SQLite would say it.
    Statements inside the transaction keep a ``timeout`` busy timeout (a commit in rollback-journal mode waits for
    readers)."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA busy_timeout = 0")
        try:
            deadline, pause = time.monotonic() + timeout, 0.0002
            while True:
                try:
                    cursor.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError as exc:
                    if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() >= deadline:
                        raise
                time.sleep(pause)
                pause = min(pause * 2, 0.005)
        finally:  # also when giving up: the pooled connection's other users keep waiting as SQLite does
            cursor.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    finally:
        cursor.close()


class Store:
    """Reads and writes flask-patronlock's state on one engine.

    :param engine: a callable returning the SQLAlchemy engine (Flask-SQLAlchemy's ``db.engine`` needs an app
        context, so the engine is looked up when used, not when the store is made).
    :param tables: the tables from :func:`flask_patronlock.models.tables_for`.
    :param sender: the object signals are sent with (the Flask application).
    :param strict_signals: re-raise exceptions from signal receivers instead of logging them.
    :param clock: the current time (tests pass a controlled clock).
    :param policy_settings: the creator's current :class:`~flask_patronlock.policy.PolicySettings` (called when
        needed; the settings page's store is wired here). Default: ``PolicySettings()``.
    """

    def __init__(
        self,
        engine: Callable[[], Engine],
        tables: Tables,
        *,
        sender: Any = None,
        strict_signals: Callable[[], bool] = lambda: False,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        policy_settings: Callable[[], PolicySettings] = PolicySettings,
    ) -> None:
        self._engine = engine
        #: returns the creator's current policy settings; :attr:`Patron.access` is evaluated under them.
        self.policy_settings = policy_settings
        self._statements: dict[Any, Any] = {}  # selects built once per store (building costs more than running)
        self.tables = tables
        self.sender = sender
        self._strict_signals = strict_signals
        self.clock = clock
        #: called after this store committed a settings-version bump of its own (the tier catalogue), so this
        #: process's settings cache re-reads at once instead of after its check interval (issue 7).
        self.settings_changed: Callable[[], None] | None = None

    #: create members with no stored row through :func:`flask_patronlock.firstseen.create` (tests turn it off to
    #: compare it with the general transition below, which creates them one by one).
    _first_seen_in_bulk = True

    @property
    def engine(self) -> Engine:
        """The engine in use."""
        return self._engine()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction that takes SQLite's write lock up front (``BEGIN IMMEDIATE``).

        A deferred SQLite transaction that reads and then writes fails at once with "database is locked" when another
        connection wrote in between; taking the lock first makes it wait instead (see :func:`sqlite_write_lock`).
        """
        engine = self.engine
        on_sqlite = engine.dialect.name == "sqlite"
        with sqlite_write_lock(engine) if on_sqlite else nullcontext(), engine.connect() as conn:
            if on_sqlite:
                conn.begin()  # SQLAlchemy's side of the transaction (pysqlite sends nothing for it) ...
                begin_immediate(conn.connection.dbapi_connection)  # ... and SQLite's, with the write lock
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    # -- the single write path --------------------------------------------------------------------------------------

    def apply(
        self,
        snapshot: MemberSnapshot,
        *,
        source: str,
        observed_at: datetime,
        run_id: int | None = None,
        defer_revocations: bool = False,
    ) -> ApplyResult:
        """Apply one member snapshot. See :meth:`apply_many`."""
        return self.apply_many(
            [snapshot], source=source, observed_at=observed_at, run_id=run_id, defer_revocations=defer_revocations
        )[0]

    def apply_many(
        self,
        snapshots: Sequence[MemberSnapshot],
        *,
        source: str,
        observed_at: datetime,
        run_id: int | None = None,
        defer_revocations: bool = False,
        load_unchanged: bool = True,
        also: Callable[[Connection, list[ApplyResult]], None] | None = None,
    ) -> list[ApplyResult]:
        """Apply snapshots in one transaction, then send signals for what changed.

        :param source: ``oauth``, ``webhook``, ``sync`` or ``admin``; recorded on the row and its audit entry.
        :param observed_at: when Patreon said this (timezone-aware). A snapshot older than the stored one is skipped.
        :param run_id: the sync run, when ``source`` is ``sync``.
        :param defer_revocations: write nothing for a snapshot that would take something away from a patron who is
            entitled now (under :attr:`policy_settings` at the store's clock): access, or all their entitled tiers, or
            all their entitled cents (:data:`LOSSES`); its result has ``outcome="deferred"`` with its ``losses``, and
            the caller decides later (a sync run defers them until it knows whether the breaker trips).
        :param load_unchanged: ``False`` lets the store answer for members it can tell are unchanged without reading
            their whole stored state (see :meth:`_settled`): their results are ``unchanged`` with ``patron`` and
            ``previous`` ``None``. A sync run asks for this: nearly every member of nearly every run is unchanged.
        :param also: called with the open connection and the results before the commit, so what it writes commits
            with them or not at all (a sync run records its progress on its row this way).
        :raises ValueError: an unknown source, a naive ``observed_at``, or the same member twice in one call.
        :returns: one :class:`ApplyResult` per snapshot, in order.
        """
        if source not in SOURCES:
            raise ValueError(f"source must be one of {sorted(SOURCES)}, not {source!r}")
        if observed_at.tzinfo is None:
            raise ValueError("observed_at must be timezone-aware")
        observed_at = observed_at.astimezone(UTC)
        ids = [s.member_id for s in snapshots]
        if len(set(ids)) != len(ids):
            raise ValueError("apply_many got the same member twice; apply them in separate calls, oldest first")
        if not snapshots:
            return []
        with self.transaction() as conn:
            results = self._apply_locked(
                conn,
                snapshots,
                source=source,
                observed_at=observed_at,
                run_id=run_id,
                defer_revocations=defer_revocations,
                load_unchanged=load_unchanged,
            )
            if also is not None:
                also(conn, results)
        self._send(results, source=source, run_id=run_id)
        return results

    def _apply_locked(
        self,
        conn: Connection,
        snapshots: Sequence[MemberSnapshot],
        *,
        source: str,
        observed_at: datetime,
        run_id: int | None,
        defer_revocations: bool = False,
        load_unchanged: bool = True,
    ) -> list[ApplyResult]:
        access = _AccessContext(self.policy_settings(), self.clock(), defer_revocations)
        results: dict[str, ApplyResult] = {}
        snapshots_left = list(snapshots)
        if not load_unchanged:
            settled = self._settled(conn, snapshots, access, observed_at)
            if settled:
                for member_id in settled:
                    results[member_id] = ApplyResult(member_id, "unchanged", None, None)
                snapshots_left = [s for s in snapshots if s.member_id not in settled]
        stored = self._load_for_update(conn, [s.member_id for s in snapshots_left])
        new_user_ids = {
            s.user_id for s in snapshots_left if s.member_id not in stored and s.user_id is not None
        }
        links = self._local_users(conn, new_user_ids) if new_user_ids else {}

        # Members with no stored row are created in bulk, straight from their snapshots (a first run: every member).
        created: Mapping[str, ApplyResult] = {}
        fresh = [s for s in snapshots_left if s.member_id not in stored] if self._first_seen_in_bulk else []
        if fresh:
            # firstseen is built from this module's pieces (merge, the SQLite inserts): imported here, not above
            from . import firstseen

            created, taken = firstseen.create(
                self, conn, fresh, links, access=access, observed_at=observed_at, source=source, run_id=run_id
            )
            results.update(created)
            if taken:  # inserted by another transaction after we looked (PostgreSQL): applied to their rows below
                stored.update(self._load_for_update(conn, [s.member_id for s in taken]))
            snapshots_left = [s for s in snapshots_left if s.member_id not in created]

        creates: list[Patron] = []
        for snapshot in snapshots_left:
            previous = stored.get(snapshot.member_id)
            result = self._transition(snapshot, previous, links, observed_at=observed_at, source=source, access=access)
            results[snapshot.member_id] = result
            if result.outcome == "created":
                assert result.patron is not None
                creates.append(result.patron)

        if creates:
            inserted = self._insert_absent(conn, creates)
            raced = [p.member_id for p in creates if p.member_id not in inserted]
            if raced:
                # Another transaction inserted these members after we looked (PostgreSQL only: SQLite holds the write
                # lock). Their rows are committed now; lock them and redo the transition against them.
                stored_now = self._load_for_update(conn, raced)
                for snapshot in snapshots_left:
                    if snapshot.member_id in stored_now:
                        results[snapshot.member_id] = self._transition(
                            snapshot,
                            stored_now[snapshot.member_id],
                            links,
                            observed_at=observed_at,
                            source=source,
                            access=access,
                        )

        updates = [r.patron for r in results.values() if r.outcome == "updated" and r.patron is not None]
        if updates:
            self._update_not_newer(conn, updates)
        self._note_evaluated(conn, results.values(), access)

        changed = [r for r in results.values() if r.changed and r.member_id not in created]  # created: written
        if changed:
            kinds = {"created": "patron_created", "updated": "patron_updated"}
            self._write_events(
                conn,
                [
                    (observed_at, r.member_id, r.patron, kinds[r.outcome], source, run_id, r.events, r.changes, None)
                    for r in changed
                ],
            )
        return [results[s.member_id] for s in snapshots]

    def _write_events(
        self,
        conn: Connection,
        entries: Sequence[
            tuple[
                datetime | None, str, Patron | None, str, str, int | None, tuple[str, ...],
                Mapping[str, tuple[Any, Any]], Mapping[str, Any] | None,
            ]
        ],
    ) -> None:
        """One audit row per ``(observed_at, member_id, patron, kind, source, run_id, events, changes, detail)``: the
        changes as ``{field: [old, new]}`` and the patron's user ids, all created now."""
        now = self.clock()
        _executemany(
            conn,
            self.tables.events,
            _EVENT_COLUMNS,
            [
                (
                    now,
                    observed_at,
                    member_id,
                    patron.patreon_user_id if patron else None,
                    patron.local_user_id if patron else None,
                    kind,
                    source,
                    run_id,
                    ",".join(events),
                    changes,  # {name: (old, new)}: JSON arrays, datetimes in ISO 8601 (see _executemany)
                    detail or None,
                )
                for observed_at, member_id, patron, kind, source, run_id, events, changes, detail in entries
            ],
        )

    def _transition(
        self,
        snapshot: MemberSnapshot,
        previous: Patron | None,
        links: Mapping[str, str],
        *,
        observed_at: datetime,
        source: str,
        access: _AccessContext | None = None,
    ) -> ApplyResult:
        if previous is not None and previous.observed_at is not None and previous.observed_at > observed_at:
            return ApplyResult(snapshot.member_id, "stale", previous, previous)
        if (
            previous is not None
            and _same_as_stored(snapshot, previous)
            and (access is None or access.unchanged(previous))
        ):
            # The common case of every sync run: Patreon says what we stored and time changed nothing. merge() would
            # return the stored state, so skip building it.
            return ApplyResult(snapshot.member_id, "unchanged", previous, previous)
        current = merge(previous, snapshot, observed_at=observed_at, source=source)
        if previous is None and current.patreon_user_id is not None and current.patreon_user_id in links:
            current = current.replace(local_user_id=links[current.patreon_user_id])
        access_events: tuple[str, ...] = ()
        if access is not None:
            current, access_events = access.evaluate(previous, current, observed_at=observed_at, owned=True)
            losses = access.losses(previous, current) if access.defer else ()
            if losses:
                return ApplyResult(
                    snapshot.member_id, "deferred", current, previous, diff(previous, current), losses=losses
                )
        changes = diff(previous, current)
        if previous is not None and not changes:
            return ApplyResult(snapshot.member_id, "unchanged", previous, previous)
        events = infer_events(previous, current, observed_at=observed_at) + access_events
        return ApplyResult(
            snapshot.member_id, "created" if previous is None else "updated", current, previous, changes, events
        )

    def _load_for_update(self, conn: Connection, member_ids: Sequence[str]) -> dict[str, Patron]:
        dialect = conn.dialect.name
        stmt = self._statements.get(("load_for_update", dialect))
        if stmt is None:
            p, a = self.tables.patrons, self.tables.accounts
            # Columns in Patron's field order, so each row becomes a Patron positionally (a sync loads 1,000 a page).
            columns = [p.c[name] for name in _PATRON_FIELDS[:-1]] + [a.c.user_id.label("local_user_id")]
            stmt = (
                select(*columns)
                .outerjoin(a, a.c.patreon_user_id == p.c.patreon_user_id)
                .where(in_ids(p.c.member_id, dialect))
                .order_by(p.c.member_id)
            )
            if dialect == "postgresql":
                stmt = stmt.with_for_update(of=p)
            self._statements[("load_for_update", dialect)] = stmt
        out: dict[str, Patron] = {}
        for start in range(0, len(member_ids), _CHUNK):
            chunk = sorted(member_ids[start : start + _CHUNK])  # one lock order for every writer: no deadlocks
            # fetchall: one call, not one per row
            for row in conn.execute(stmt, {"ids": ids_value(chunk, dialect)}).all():
                out[row[0]] = Patron(*row)
        return out

    def _settled(
        self, conn: Connection, snapshots: Sequence[MemberSnapshot], access: _AccessContext, observed_at: datetime
    ) -> set[str]:
        """The members among ``snapshots`` for whom applying would change nothing, found without reading whole rows:
        what :meth:`_transition` decides from :func:`_same_as_stored` and :meth:`_AccessContext.unchanged`, asked of
        the database. A member is settled when its row

        * is not newer than ``observed_at`` (else the snapshot is stale, which :meth:`_transition` reports),
        * has no missing mark or held revocation for being seen to clear,
        * has its access evaluated under the current policy settings (``access_policy``) and not due to change by
          time (``access_until`` unset or after now: :func:`~flask_patronlock.policy.entitlement` only ever ends an
          entitlement as time passes, at ``until``),

        and its Patreon fields equal the snapshot's (compared here, on just those columns).
        """
        by_id = {s.member_id: s for s in snapshots}
        stmt = self._settled_statement(conn.dialect.name)
        width = len(_COMPARED)
        settled: set[str] = set()
        ids, dialect = list(by_id), conn.dialect.name
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            ids_in = ids_value(chunk, dialect)
            params = {"ids": ids_in, "observed_at": observed_at, "key": access.key, "now": access.now}
            for row in conn.execute(stmt, params).all():
                values = tuple(row)
                snapshot = by_id[values[width]]
                if _compared_of(snapshot) == values[:width] and _optional_agree(snapshot, *values[width + 1 :]):
                    settled.add(snapshot.member_id)
        return settled

    def _settled_statement(self, dialect: str) -> Any:
        # Built once: constructing the select costs more than a page's worth of comparing. Booleans come back as
        # SQLite's 0/1 (equal to False/True in a comparison) instead of through a processor each.
        stmt = self._statements.get(("settled", dialect))
        if stmt is None:
            p = self.tables.patrons
            columns = [
                type_coerce(p.c[name], Integer) if isinstance(p.c[name].type, Boolean) else p.c[name]
                for name in (*_COMPARED, "member_id", "campaign_id", "patreon_user_id", "email", "email_verified")
            ]
            stmt = select(*columns).where(
                in_ids(p.c.member_id, dialect),
                p.c.observed_at <= bindparam("observed_at", type_=p.c.observed_at.type),
                p.c.missing_since.is_(None),
                p.c.missing_runs == 0,
                p.c.held_run_id.is_(None),
                p.c.access.is_not(None),
                p.c.access_policy == bindparam("key", type_=p.c.access_policy.type),
                or_(p.c.access_until.is_(None), p.c.access_until > bindparam("now", type_=p.c.access_until.type)),
            )
            self._statements[("settled", dialect)] = stmt
        return stmt

    def _note_evaluated(self, conn: Connection, results: Iterable[ApplyResult], access: _AccessContext) -> None:
        """Record that the unchanged members among ``results`` had their access evaluated under ``access``'s settings
        (a silent write: not a change of state, so no audit row or signal), where it was another policy's."""
        stale = [
            r.member_id for r in results
            if r.outcome == "unchanged" and r.previous is not None and r.previous.access_policy != access.key
        ]
        p = self.tables.patrons
        for start in range(0, len(stale), _CHUNK):
            conn.execute(
                update(p).where(p.c.member_id.in_(stale[start : start + _CHUNK])).values(access_policy=access.key)
            )

    def _local_users(self, conn: Connection, patreon_user_ids: Iterable[str]) -> dict[str, str]:
        a = self.tables.accounts
        ids = list(patreon_user_ids)
        out: dict[str, str] = {}
        for start in range(0, len(ids), _CHUNK):
            rows = conn.execute(
                select(a.c.patreon_user_id, a.c.user_id).where(a.c.patreon_user_id.in_(ids[start : start + _CHUNK]))
            )
            out.update({row.patreon_user_id: row.user_id for row in rows})
        return out

    def _row(self, patron: Patron, now: datetime) -> dict[str, Any]:
        row = {name: getattr(patron, name) for name in _COLUMNS}
        row["updated_at"] = now
        return row

    def _insert_absent(self, conn: Connection, patrons: list[Patron]) -> set[str]:
        """Insert rows that do not exist yet; returns the member ids this statement inserted."""
        table, now = self.tables.patrons, self.clock()
        dialect = conn.dialect.name
        if dialect == "sqlite":
            # SQLite holds the write lock (BEGIN IMMEDIATE): nothing can have raced us, and executemany without
            # RETURNING is the fastest path for a first sync of 100,000 members.
            _executemany_sqlite(
                conn,
                table,
                _INSERT_COLUMNS,
                [(*_columns_of(p), now) for p in patrons],
                skip_conflicts_on="member_id",
            )
            return {p.member_id for p in patrons}
        rows = [self._row(p, now) for p in patrons]
        if dialect != "postgresql":  # a plain insert (a concurrent insert then fails loudly instead of racing silently)
            conn.execute(insert(table), rows)
            return {p.member_id for p in patrons}
        stmt = postgresql.insert(table).on_conflict_do_nothing(index_elements=["member_id"])
        inserted = conn.execute(stmt.returning(table.c.member_id), rows).scalars().all()
        return set(inserted)

    def _update_not_newer(self, conn: Connection, patrons: list[Patron]) -> None:
        """Update rows, each only where the stored snapshot is not newer than ours (the conditional half)."""
        table, now = self.tables.patrons, self.clock()
        columns = [c for c in _COLUMNS if c != "member_id"]
        stmt = (
            update(table)
            .where(
                and_(
                    table.c.member_id == bindparam("b_member_id"),
                    or_(table.c.observed_at.is_(None), table.c.observed_at <= bindparam("b_observed_at")),
                )
            )
            .values({c: bindparam(f"v_{c}") for c in [*columns, "updated_at"]})
        )
        params = []
        for patron in patrons:
            row = self._row(patron, now)
            param = {f"v_{k}": v for k, v in row.items() if k != "member_id"}
            param["b_member_id"] = patron.member_id
            param["b_observed_at"] = patron.observed_at
            params.append(param)
        conn.execute(stmt, params)

    def _send(self, results: Iterable[ApplyResult], *, source: str, run_id: int | None) -> None:
        strict = self._strict_signals()
        for result in results:
            if not result.changed:
                continue
            common = {"patron": result.patron, "previous": result.previous, "source": source, "run_id": run_id}
            signals.send_action(
                signals.patron_changed,
                self.sender,
                strict=strict,
                changes=dict(result.changes),
                events=result.events,
                **common,
            )
            for name in result.events:
                extra: dict[str, Any] = {}
                if name == "tier_changed" and result.patron is not None:
                    before = effective_entitlement(result.previous)[0] if result.previous else 0
                    after = effective_entitlement(result.patron)[0]
                    extra["direction"] = "up" if after > before else "down" if after < before else "same"
                elif name == "charge_succeeded" and result.patron is not None:
                    extra["charged_at"] = result.patron.last_charge_date
                signals.send_action(signals.EVENT_SIGNALS[name], self.sender, strict=strict, **common, **extra)

    # -- reads ------------------------------------------------------------------------------------------------------

    def get_patron(self, member_id: str) -> Patron | None:
        """The stored patron with this member id (``None`` for one that cannot be a Patreon id)."""
        if not is_patreon_id(member_id):
            return None
        p, a = self.tables.patrons, self.tables.accounts
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    select(p, a.c.user_id.label("local_user_id"))
                    .outerjoin(a, a.c.patreon_user_id == p.c.patreon_user_id)
                    .where(p.c.member_id == member_id)
                )
                .mappings()
                .first()
            )
        return row_to_patron(row) if row else None

    def patron_for_user(self, user_id: str, campaign_id: str | None = None) -> Patron | None:
        """The stored patron linked to the local user ``user_id`` (one indexed join; what a page view reads)."""
        p, a = self.tables.patrons, self.tables.accounts
        stmt = (
            select(p, a.c.user_id.label("local_user_id"))
            .join(a, a.c.patreon_user_id == p.c.patreon_user_id)
            .where(a.c.user_id == str(user_id))
        )
        if campaign_id is not None:
            stmt = stmt.where(p.c.campaign_id == campaign_id)
        with self.engine.connect() as conn:
            row = conn.execute(stmt.limit(1)).mappings().first()
        return row_to_patron(row) if row else None

    def history(self, member_id: str, *, limit: int = 200) -> list[dict[str, Any]]:
        """The audit rows of one member, newest first."""
        e = self.tables.events
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(e).where(e.c.member_id == member_id).order_by(e.c.id.desc()).limit(limit)
            ).mappings()
            return [dict(row) for row in rows]

    def record_event(
        self,
        conn: Connection,
        kind: str,
        *,
        source: str,
        member_id: str | None = None,
        patreon_user_id: str | None = None,
        user_id: str | None = None,
        run_id: int | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Write an audit row that is not a patron state change (a link, an unlink, a held run) inside ``conn``."""
        conn.execute(
            insert(self.tables.events).values(
                created_at=self.clock(),
                observed_at=None,
                member_id=member_id,
                patreon_user_id=patreon_user_id,
                user_id=user_id,
                kind=kind,
                source=source,
                run_id=run_id,
                events="",
                changes=None,
                detail={k: json_ready(v) for k, v in (detail or {}).items()},
            )
        )

    # -- reconcile runs: missing marks, held revocations, access by time, tiers, e-mail links (issue 5) ---------------
    #
    # Each method below is patron state (or the campaign's catalogue) and, like apply(), writes in one transaction with
    # the members locked, an audit row per changed patron, and signals only after the commit.

    def _write_transitions(
        self,
        conn: Connection,
        pairs: Iterable[tuple[Patron, Patron]],
        access: _AccessContext,
        *,
        kind: str,
        source: str,
        run_id: int | None,
        detail: Mapping[str, Any] | None = None,
    ) -> list[ApplyResult]:
        """Write each ``(previous, current)`` pair that changed (access re-evaluated), with an audit row of ``kind``."""
        results: list[ApplyResult] = []
        for previous, proposed in pairs:
            current, events = access.evaluate(previous, proposed, observed_at=access.now)
            changes = diff(previous, current)
            if not changes:
                results.append(ApplyResult(previous.member_id, "unchanged", previous, previous))
                continue
            results.append(ApplyResult(previous.member_id, "updated", current, previous, changes, events))
        self._note_evaluated(conn, results, access)
        changed = [r for r in results if r.changed]
        if changed:
            self._update_not_newer(conn, [r.patron for r in changed if r.patron is not None])
            self._write_events(
                conn,
                [
                    (r.patron.observed_at if r.patron else None, r.member_id, r.patron, kind, source, run_id, r.events,
                     r.changes, detail)
                    for r in changed
                ],
            )
        return results

    def apply_if_not_older(
        self, snapshot: MemberSnapshot, *, source: str, observed_at: datetime, defer_revocations: bool = False
    ) -> ApplyResult:
        """Apply a snapshot of unknown age (a webhook payload while the API is unreachable) only where it is not older
        than the stored state by its own dates: a later last charge, more lifetime support or a later pledge start
        stored means the payload is older (``outcome="stale"``). Then as :meth:`apply` with ``observed_at`` (and
        ``defer_revocations``: a payload that would take access away writes nothing, ``outcome="deferred"``)."""
        if observed_at.tzinfo is None:
            raise ValueError("observed_at must be timezone-aware")
        with self.transaction() as conn:
            stored = self._load_for_update(conn, [snapshot.member_id]).get(snapshot.member_id)
            if stored is not None and _older_than_stored(snapshot, stored):
                return ApplyResult(snapshot.member_id, "stale", stored, stored)
            results = self._apply_locked(
                conn,
                [snapshot],
                source=source,
                observed_at=observed_at.astimezone(UTC),
                run_id=None,
                defer_revocations=defer_revocations,
            )
        self._send(results, source=source, run_id=None)
        return results[0]

    def member_ids(self, campaign_id: str) -> set[str]:
        """The member ids stored for ``campaign_id``."""
        p = self.tables.patrons
        with self.engine.connect() as conn:
            return set(conn.execute(select(p.c.member_id).where(p.c.campaign_id == campaign_id)).scalars())

    def count_members(self, campaign_id: str) -> int:
        """How many members are stored for ``campaign_id``."""
        p = self.tables.patrons
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).where(p.c.campaign_id == campaign_id)).scalar_one())

    def count_entitled(self, campaign_id: str) -> int:
        """How many stored patrons of ``campaign_id`` have access (as last evaluated)."""
        p = self.tables.patrons
        with self.engine.connect() as conn:
            stmt = select(func.count()).where(p.c.campaign_id == campaign_id, p.c.access.is_(True))
            return int(conn.execute(stmt).scalar_one())

    def entitled_among(self, member_ids: Sequence[str], *, now: datetime | None = None) -> set[str]:
        """Which of ``member_ids`` are entitled at ``now`` (default: the clock) under the current settings."""
        access = _AccessContext(self.policy_settings(), now or self.clock())
        out: set[str] = set()
        for start in range(0, len(member_ids), _CHUNK):
            with self.engine.connect() as conn:
                for patron in self._load(conn, member_ids[start : start + _CHUNK]).values():
                    if access.entitled_now(patron):
                        out.add(patron.member_id)
        return out

    def pledging_among(self, member_ids: Sequence[str]) -> set[str]:
        """Which of ``member_ids`` are stored as pledging (``active_patron`` or ``declined_patron``): members Patreon
        never lists as "never pledged" again (a sync run takes a page saying so for drift)."""
        p = self.tables.patrons
        out: set[str] = set()
        pledging = ("active_patron", "declined_patron")
        with self.engine.connect() as conn:
            for start in range(0, len(member_ids), _CHUNK):
                # filtered here, not in SQL: with a condition on patron_status SQLite's planner walks the status index
                # (every active patron) instead of looking the few ids up by key, 40 % of an unchanged run's time
                chunk = member_ids[start : start + _CHUNK]
                rows = conn.execute(select(p.c.member_id, p.c.patron_status).where(p.c.member_id.in_(chunk)))
                out.update(member_id for member_id, status in rows if status in pledging)
        return out

    def _load(self, conn: Connection, member_ids: Sequence[str], *, for_update: bool = False) -> dict[str, Patron]:
        if for_update:
            return self._load_for_update(conn, member_ids)
        p, a = self.tables.patrons, self.tables.accounts
        out: dict[str, Patron] = {}
        for start in range(0, len(member_ids), _CHUNK):
            stmt = (
                select(p, a.c.user_id.label("local_user_id"))
                .outerjoin(a, a.c.patreon_user_id == p.c.patreon_user_id)
                .where(p.c.member_id.in_(list(member_ids[start : start + _CHUNK])))
            )
            for row in conn.execute(stmt).mappings():
                out[row["member_id"]] = row_to_patron(row)
        return out

    def mark_missing(
        self, run_id: int, member_ids: Sequence[str], *, seen_before: datetime, now: datetime | None = None
    ) -> list[ApplyResult]:
        """A complete run did not see ``member_ids``: count one more missed run for each (up to the policy's
        ``missing_runs``) and start the missing clock (``missing_since``); access follows the policy.

        A member whose stored state was observed after ``seen_before`` (the run's start) is skipped: something (a
        webhook) saw them during the run, so they are not missing.
        """
        with self.transaction() as conn:
            results = self._mark_missing_locked(conn, run_id, member_ids, seen_before=seen_before, now=now)
        self._send(results, source="sync", run_id=run_id)
        return results

    def _mark_missing_locked(
        self, conn: Connection, run_id: int, member_ids: Sequence[str], *, seen_before: datetime, now: datetime | None
    ) -> list[ApplyResult]:
        now = now or self.clock()
        settings = self.policy_settings()
        access = _AccessContext(settings, now)
        stored = self._load_for_update(conn, list(member_ids))
        pairs = []
        for patron in stored.values():
            if patron.observed_at is not None and patron.observed_at > seen_before:
                continue
            runs = patron.missing_runs + 1 if patron.missing_runs < settings.missing_runs else patron.missing_runs
            pairs.append((patron, patron.replace(missing_since=patron.missing_since or now, missing_runs=runs)))
        return self._write_transitions(conn, pairs, access, kind="patron_missing", source="sync", run_id=run_id)

    def apply_run_revocations(
        self,
        run_id: int,
        snapshots: Sequence[tuple[MemberSnapshot, datetime]],
        missing_ids: Sequence[str],
        *,
        seen_before: datetime,
        finish: Callable[[Connection, list[ApplyResult]], None],
    ) -> list[ApplyResult]:
        """A complete run's revocation phase in **one** transaction: apply the snapshots it set aside (each with its
        ``observed_at``, oldest first, as :meth:`apply_many` would), mark ``missing_ids`` missing (as
        :meth:`mark_missing`), then call ``finish(conn, results)``, where the run writes its own row. The revocations,
        their audit rows and the run row that counts them commit together or not at all; signals are sent after.
        ``finish`` may raise to roll everything back (a run that finds its row already final).
        """
        results: list[ApplyResult] = []
        by_time: dict[datetime, list[MemberSnapshot]] = {}
        for snapshot, observed_at in snapshots:
            by_time.setdefault(observed_at.astimezone(UTC), []).append(snapshot)
        with self.transaction() as conn:
            for observed_at, snaps in sorted(by_time.items()):
                results += self._apply_locked(conn, snaps, source="sync", observed_at=observed_at, run_id=run_id)
            if missing_ids:
                results += self._mark_missing_locked(conn, run_id, missing_ids, seen_before=seen_before, now=None)
            finish(conn, results)
        self._send(results, source="sync", run_id=run_id)
        return results

    def hold_revocations(
        self,
        run_id: int,
        snapshots: Sequence[tuple[MemberSnapshot, datetime]],
        missing_ids: Sequence[str],
        *,
        total: int,
        missed_at: datetime | None = None,
        finish: Callable[[Connection, list[ApplyResult]], None] | None = None,
        reason: str | None = None,
        losses: Mapping[str, int] | None = None,
    ) -> list[ApplyResult]:
        """Hold a run's revocations for the creator's approval (the breaker tripped).

        ``snapshots`` (each with its ``observed_at``) would take access, tiers or cents away; ``missing_ids`` are
        entitled patrons the run did not see; ``reason`` (what changed) and ``losses`` (patrons per kind of loss) are
        passed on to the signal. They are stored in ``patronlock_held_revocations`` and each patron's
        ``held_run_id`` is set (an audit row each); nothing is revoked. ``finish(conn, results)``, if given, runs
        before the commit (the run records itself held in the same transaction). Sends ``revocations-held`` after the
        commit.
        """
        missed_at = missed_at or self.clock()
        access = _AccessContext(self.policy_settings(), self.clock())
        held = self.tables.held_revocations
        rows = [
            {
                "run_id": run_id,
                "member_id": snap.member_id,
                "kind": "snapshot",
                "snapshot": snapshot_to_json(snap),
                "observed_at": observed,
            }
            for snap, observed in snapshots
        ]
        rows += [
            {"run_id": run_id, "member_id": member_id, "kind": "missing", "snapshot": None, "observed_at": missed_at}
            for member_id in missing_ids
            if member_id not in {snap.member_id for snap, _ in snapshots}
        ]
        with self.transaction() as conn:
            if rows:
                conn.execute(insert(held), rows)
            stored = self._load_for_update(conn, [str(r["member_id"]) for r in rows])
            pairs = [(p, p.replace(held_run_id=run_id)) for p in stored.values()]
            results = self._write_transitions(
                conn, pairs, access, kind="revocation_held", source="sync", run_id=run_id
            )
            self.record_event(
                conn, "run_held", source="sync", run_id=run_id, detail={"revoking": len(rows), "total": total}
            )
            if finish is not None:
                finish(conn, results)
        self._send(results, source="sync", run_id=run_id)
        signals.send_action(
            signals.revocations_held,
            self.sender,
            strict=self._strict_signals(),
            run_id=run_id,
            revoking=len(rows),
            total=total,
            member_ids=tuple(r["member_id"] for r in rows),
            reason=reason,
            losses=dict(losses or {}),
        )
        return results

    def held_revocations(self, run_id: int) -> list[dict[str, Any]]:
        """The revocations a held run waits to make: ``member_id``, ``kind`` (``snapshot`` or ``missing``),
        ``observed_at`` and the stored patron's name and e-mail (for the settings page)."""
        h, p = self.tables.held_revocations, self.tables.patrons
        if not is_row_id(run_id):
            return []
        stmt = (
            select(h.c.member_id, h.c.kind, h.c.observed_at, p.c.full_name, p.c.email)
            .outerjoin(p, p.c.member_id == h.c.member_id)
            .where(h.c.run_id == run_id)
            .order_by(h.c.member_id)
        )
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(stmt).mappings()]

    def _decide_run(self, run_id: int, status: str, by: str | None) -> None:
        """Claim a held run for one decision (a second approve or reject of the same run fails)."""
        r = self.tables.sync_runs
        if not is_row_id(run_id):
            raise LookupError(f"there is no sync run {run_id}")
        with self.transaction() as conn:
            claimed = conn.execute(
                update(r)
                .where(r.c.id == run_id, r.c.status == "held")
                .values(status=status, decided_at=self.clock(), decided_by=by)
            ).rowcount
            if not claimed:
                current = conn.execute(select(r.c.status).where(r.c.id == run_id)).scalar()
                if current is None:
                    raise LookupError(f"there is no sync run {run_id}")
                raise ValueError(f"sync run {run_id} is {current}, not held: there is nothing to decide")

    def approve_run(self, run_id: int, *, by: str | None = None) -> list[ApplyResult]:
        """Apply a held run's revocations: its snapshots through :meth:`apply_many` with their original
        ``observed_at`` (so anything newer, e.g. a later webhook, still wins), and its missing marks for the patrons
        it still holds.

        :raises LookupError: no such run. :raises ValueError: the run is not held (already decided, or never held).
        """
        self._decide_run(run_id, "approved", by)
        h = self.tables.held_revocations
        with self.engine.connect() as conn:
            rows = conn.execute(select(h).where(h.c.run_id == run_id).order_by(h.c.observed_at)).mappings().all()
        results: list[ApplyResult] = []
        by_time: dict[datetime, list[MemberSnapshot]] = {}
        missing: list[tuple[str, datetime]] = []
        for row in rows:
            if row["kind"] == "snapshot" and row["snapshot"] is not None:
                by_time.setdefault(row["observed_at"], []).append(snapshot_from_json(row["snapshot"]))
            else:
                missing.append((row["member_id"], row["observed_at"]))
        for observed, snaps in sorted(by_time.items()):
            for start in range(0, len(snaps), _CHUNK):
                results += self.apply_many(
                    snaps[start : start + _CHUNK], source="sync", observed_at=observed, run_id=run_id
                )
        if missing:
            settings = self.policy_settings()
            access = _AccessContext(settings, self.clock())
            missed_at = dict(missing)
            with self.transaction() as conn:
                stored = self._load_for_update(conn, list(missed_at))
                pairs = []
                for patron in stored.values():
                    if patron.held_run_id != run_id:
                        continue  # seen since, or held again by a later run
                    runs = min(patron.missing_runs + 1, max(settings.missing_runs, patron.missing_runs))
                    pairs.append(
                        (
                            patron,
                            patron.replace(
                                missing_since=patron.missing_since or missed_at[patron.member_id],
                                missing_runs=runs,
                                held_run_id=None,
                            ),
                        )
                    )
                marked = self._write_transitions(
                    conn, pairs, access, kind="revocation_approved", source="admin", run_id=run_id
                )
            self._send(marked, source="admin", run_id=run_id)
            results += marked
        self._finish_decision(run_id, "run_approved", by, len(rows))
        return results

    def reject_run(self, run_id: int, *, by: str | None = None) -> list[ApplyResult]:
        """Discard a held run's revocations: its patrons keep access (their ``held_run_id`` is cleared).

        :raises LookupError: no such run. :raises ValueError: the run is not held.
        """
        self._decide_run(run_id, "rejected", by)
        p = self.tables.patrons
        access = _AccessContext(self.policy_settings(), self.clock())
        with self.transaction() as conn:
            ids = list(conn.execute(select(p.c.member_id).where(p.c.held_run_id == run_id)).scalars())
            stored = self._load_for_update(conn, ids)
            pairs = [(patron, patron.replace(held_run_id=None)) for patron in stored.values()]
            results = self._write_transitions(
                conn, pairs, access, kind="revocation_rejected", source="admin", run_id=run_id
            )
        self._send(results, source="admin", run_id=run_id)
        self._finish_decision(run_id, "run_rejected", by, len(ids))
        return results

    def _finish_decision(self, run_id: int, kind: str, by: str | None, count: int) -> None:
        h = self.tables.held_revocations
        with self.transaction() as conn:
            conn.execute(h.delete().where(h.c.run_id == run_id))
            self.record_event(conn, kind, source="admin", user_id=by, run_id=run_id, detail={"held": count})

    def refresh_access(
        self, *, now: datetime | None = None, member_ids: Sequence[str] | None = None
    ) -> list[ApplyResult]:
        """Re-evaluate :attr:`Patron.access` where time alone may have changed it (a grace period or paid period
        ended, the missing limit passed) or the creator changed the policy settings since it was evaluated
        (:attr:`Patron.access_policy`), announcing each flip once (``access-granted`` / ``access-revoked``, an audit
        row ``access_changed`` with source ``clock``). Whichever process calls this first after a policy change
        re-evaluates everyone.

        :param member_ids: re-evaluate just these, due or not.
        """
        now = now or self.clock()
        access = _AccessContext(self.policy_settings(), now)
        p = self.tables.patrons
        if member_ids is None:
            stmt = select(p.c.member_id).where(
                or_(
                    p.c.access.is_(None),
                    and_(p.c.access_until.is_not(None), p.c.access_until <= now),
                    p.c.access_policy.is_(None),
                    p.c.access_policy != access.key,
                )
            )
            with self.engine.connect() as conn:
                member_ids = list(conn.execute(stmt).scalars())
        results: list[ApplyResult] = []
        for start in range(0, len(member_ids), _CHUNK):
            with self.transaction() as conn:
                stored = self._load_for_update(conn, member_ids[start : start + _CHUNK])
                chunk = self._write_transitions(
                    conn, [(patron, patron) for patron in stored.values()], access,
                    kind="access_changed", source="clock", run_id=None,
                )
            self._send(chunk, source="clock", run_id=None)
            results += [r for r in chunk if r.changed]
        return results

    def unlinked_verified_emails(self, member_ids: Sequence[str]) -> dict[str, str]:
        """``{patreon_user_id: email}`` of those members whose e-mail Patreon verified and who are not linked to a
        local user yet."""
        p, a = self.tables.patrons, self.tables.accounts
        out: dict[str, str] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(member_ids), _CHUNK):
                stmt = (
                    select(p.c.patreon_user_id, p.c.email)
                    .outerjoin(a, a.c.patreon_user_id == p.c.patreon_user_id)
                    .where(
                        p.c.member_id.in_(list(member_ids[start : start + _CHUNK])),
                        p.c.email_verified.is_(True),
                        p.c.email.is_not(None),
                        p.c.patreon_user_id.is_not(None),
                        a.c.id.is_(None),
                    )
                )
                out.update({row.patreon_user_id: row.email for row in conn.execute(stmt)})
        return out

    def link_accounts(
        self, links: Mapping[str, str], *, source: str, run_id: int | None = None, how: str = "email"
    ) -> list[tuple[str, str]]:
        """Link Patreon users to local users (``{patreon_user_id: user_id}``) where neither is linked yet, with an
        audit row ``account_linked`` each; returns the ``(patreon_user_id, user_id)`` pairs linked.

        These links are made without the Patreon account's owner (no consent, no tokens): they are stored with
        ``origin=how`` (``email``), which gives access to the patron's content but never lets Log in with Patreon
        into the local account (:attr:`~flask_patronlock.accounts.LinkedAccount.consented`)."""
        if how == "oauth":
            raise ValueError("link_accounts links without the owner's consent; OAuth links go through Accounts.link")
        a = self.tables.accounts
        linked: list[tuple[str, str]] = []
        with self.transaction() as conn:
            ins: Any = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(a)
            now = self.clock()
            for patreon_user_id, user_id in links.items():
                result = conn.execute(
                    ins.values(
                        user_id=str(user_id),
                        patreon_user_id=patreon_user_id,
                        scope="",
                        needs_reauth=False,
                        origin=how,
                        created_at=now,
                        updated_at=now,
                    )
                    .on_conflict_do_nothing()
                    .returning(a.c.id)
                ).first()
                if result is not None:
                    linked.append((patreon_user_id, str(user_id)))
                    self.record_event(
                        conn,
                        "account_linked",
                        source=source,
                        patreon_user_id=patreon_user_id,
                        user_id=str(user_id),
                        run_id=run_id,
                        detail={"how": how},
                    )
        return linked

    # -- locks: the page-view read, the tier catalogue and the settings version (issue 4) ------------------------------
    #
    # None of this is patron state: tiers are the campaign's catalogue, and the version row only says "something that
    # every worker caches has changed". Writing them outside apply() keeps apply() the single writer of patrons.

    #: the patronlock_settings row whose ``version`` counts every write to settings, lock overrides and tiers.
    VERSION_KEY = "_version"

    def viewer_record(self, user_id: str, campaign_id: str | None = None) -> tuple[bool, Patron | None]:
        """Whether the local user ``user_id`` has linked a Patreon account, and the stored patron of that account (of
        ``campaign_id`` when given): the one indexed query a page view makes."""
        by_campaign = campaign_id is not None
        stmt = self._statements.get(("viewer", by_campaign))
        if stmt is None:
            stmt = self._statements[("viewer", by_campaign)] = self._viewer_statement(by_campaign)
        with self.engine.connect() as conn:
            row = conn.execute(stmt, {"pl_user_id": str(user_id), "pl_campaign_id": campaign_id}).first()
        if row is None:
            return False, None
        if row[0] is None:  # linked, but no member of the campaign stored
            return True, None
        return True, Patron(*row)

    def _viewer_statement(self, by_campaign: bool) -> Any:
        # Built once (constructing a select costs more than running it on an indexed key). The columns come in the
        # order of Patron's fields, so a row becomes a Patron positionally, without a dict per request.
        p, a = self.tables.patrons, self.tables.accounts
        on = a.c.patreon_user_id == p.c.patreon_user_id
        if by_campaign:
            on = and_(on, p.c.campaign_id == bindparam("pl_campaign_id"))
        columns = [p.c[name] for name in _PATRON_FIELDS if name != "local_user_id"]
        return (
            select(*columns, a.c.user_id.label("local_user_id"))
            .select_from(a)
            .outerjoin(p, on)
            .where(a.c.user_id == bindparam("pl_user_id"))
            .limit(1)
        )

    def settings_version(self) -> int:
        """The current settings version (0 before the first write)."""
        s = self.tables.settings
        with self.engine.connect() as conn:
            value = conn.execute(select(s.c.version).where(s.c.key == self.VERSION_KEY)).scalar()
        return int(value or 0)

    def bump_settings_version(self, conn: Connection, *, by: str | None = None) -> int:
        """Add one to the settings version inside ``conn`` (the caller's write transaction); returns the new version.

        Every worker compares this one integer to decide whether its cached settings, overrides and tiers are stale.
        """
        s = self.tables.settings
        now = self.clock()
        if conn.dialect.name in ("postgresql", "sqlite"):
            ins: Any = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(s)
            stmt = (
                ins.values(key=self.VERSION_KEY, value=None, version=1, updated_by=by, updated_at=now)
                .on_conflict_do_update(
                    index_elements=["key"],
                    set_={"version": s.c.version + 1, "updated_by": by, "updated_at": now},
                )
                .returning(s.c.version)
            )
            return int(conn.execute(stmt).scalar_one())
        updated = conn.execute(
            update(s).where(s.c.key == self.VERSION_KEY).values(version=s.c.version + 1, updated_by=by, updated_at=now)
        )
        if not updated.rowcount:
            conn.execute(insert(s).values(key=self.VERSION_KEY, value=None, version=1, updated_by=by, updated_at=now))
        return int(conn.execute(select(s.c.version).where(s.c.key == self.VERSION_KEY)).scalar_one())

    def tiers(self, campaign_id: str | None = None) -> list[TierSnapshot]:
        """The stored tier catalogue (of ``campaign_id`` when given), cheapest first."""
        t = self.tables.tiers
        stmt = select(t).order_by(t.c.amount_cents, t.c.id)
        if campaign_id is not None:
            stmt = stmt.where(t.c.campaign_id == campaign_id)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).mappings().all()
        return [_row_to_tier(row) for row in rows]

    def replace_tiers(self, campaign_id: str, tiers: Sequence[TierSnapshot]) -> bool:
        """Make the stored catalogue of ``campaign_id`` exactly ``tiers`` (what a sync read from Patreon).

        Tiers no longer listed are deleted; the settings version is bumped only when something changed, so every
        worker re-reads the catalogue within ``PATRONLOCK_SETTINGS_CHECK_SECONDS``. Returns whether anything changed.
        """
        t = self.tables.tiers
        wanted = {tier.id: tier for tier in tiers}
        if len(wanted) != len(tiers):
            raise ValueError("replace_tiers got the same tier id twice")
        with self.transaction() as conn:
            stored = {
                row["id"]: row for row in conn.execute(select(t).where(t.c.campaign_id == campaign_id)).mappings()
            }
            now = self.clock()
            changed = False
            gone = [tier_id for tier_id in stored if tier_id not in wanted]
            if gone:
                conn.execute(t.delete().where(t.c.id.in_(gone)))
                changed = True
            for tier in tiers:
                values = _tier_values(tier)
                row = stored.get(tier.id)
                if row is not None and all(row[k] == v for k, v in values.items()):
                    continue
                changed = True
                if row is None:
                    # the id may belong to another campaign's row (a tier moved): replace it
                    conn.execute(t.delete().where(t.c.id == tier.id))
                    conn.execute(insert(t).values(id=tier.id, campaign_id=campaign_id, updated_at=now, **values))
                else:
                    conn.execute(update(t).where(t.c.id == tier.id).values(updated_at=now, **values))
            if changed:
                self.bump_settings_version(conn, by="sync")
            self._record_tiers_checked(conn, campaign_id, now)
        if changed and self.settings_changed is not None:
            self.settings_changed()
        return changed

    #: the ``patronlock_settings`` key prefix whose row's ``updated_at`` says when a campaign's tiers were last read
    #: from Patreon (whether or not they changed). Not a setting: writing it does not bump the settings version.
    TIERS_CHECKED_PREFIX = "tiers-checked:"

    def _record_tiers_checked(self, conn: Connection, campaign_id: str, now: datetime) -> None:
        s = self.tables.settings
        key = (self.TIERS_CHECKED_PREFIX + campaign_id)[:100]
        if not conn.execute(update(s).where(s.c.key == key).values(updated_at=now, updated_by="sync")).rowcount:
            conn.execute(insert(s).values(key=key, value=None, version=0, updated_by="sync", updated_at=now))

    def tiers_checked(self, campaign_id: str) -> tuple[datetime | None, set[str]]:
        """When the tiers of ``campaign_id`` were last read from Patreon (``None``: never) and the stored tier ids."""
        s, t = self.tables.settings, self.tables.tiers
        key = (self.TIERS_CHECKED_PREFIX + campaign_id)[:100]
        with self.engine.connect() as conn:
            at = conn.execute(select(s.c.updated_at).where(s.c.key == key)).scalar()
            ids = set(conn.execute(select(t.c.id).where(t.c.campaign_id == campaign_id)).scalars())
        return at, ids


def _tier_values(tier: TierSnapshot) -> dict[str, Any]:
    return {
        "title": tier.title or "",
        "amount_cents": int(tier.amount_cents),
        "published": bool(tier.published),
        "description": tier.description or "",
        "url": tier.url,
        "patron_count": tier.patron_count,
    }


def _row_to_tier(row: Mapping[Any, Any]) -> TierSnapshot:
    return TierSnapshot(
        id=row["id"],
        title=row["title"] or "",
        amount_cents=int(row["amount_cents"] or 0),
        published=bool(row["published"]),
        description=row["description"] or "",
        url=row["url"],
        patron_count=row["patron_count"],
    )


def _older_than_stored(snapshot: MemberSnapshot, stored: Patron) -> bool:
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


# -- snapshots kept for later (held revocations, webhook retries) ----------------------------------------------------


def snapshot_to_json(snapshot: MemberSnapshot) -> dict[str, Any]:
    """``snapshot`` as JSON-ready values (without the page's tier catalogue); :func:`snapshot_from_json` reads it."""
    out: dict[str, Any] = {}
    for f in fields(MemberSnapshot):
        if f.name == "tiers":
            continue
        value = getattr(snapshot, f.name)
        if f.name == "user" and value is not None:
            value = {uf.name: getattr(value, uf.name) for uf in fields(UserSnapshot)}
        out[f.name] = json_ready(value)
    return out


_SNAPSHOT_DATES = ("last_charge_date", "next_charge_date", "pledge_start")


def snapshot_from_json(data: Mapping[str, Any]) -> MemberSnapshot:
    """The snapshot :func:`snapshot_to_json` stored."""
    values = {k: v for k, v in data.items() if k in {f.name for f in fields(MemberSnapshot)}}
    for name in _SNAPSHOT_DATES:
        if values.get(name) is not None:
            values[name] = datetime.fromisoformat(values[name])
    values["entitled_tier_ids"] = tuple(values.get("entitled_tier_ids") or ())
    user = values.get("user")
    if user is not None:
        values["user"] = UserSnapshot(**user)
    return MemberSnapshot(**values)
