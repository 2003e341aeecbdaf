"""What the settings pages read: patron search, a patron's timeline, the dashboard's numbers. Reads only.

Nothing here writes a patron: "sync this patron now" goes through :meth:`Store.apply
<flask_patronlock.store.Store.apply>` in the view, like every other change.

How the dashboard's history is derived
--------------------------------------

flask-patronlock keeps no table of daily counts; the audit log is the history. Every ``patron_created`` and
``patron_updated`` row records the fields it changed as ``{field: [old, new]}``. :func:`status_history` replays, in
the order they were written, the rows that changed ``patron_status`` or ``last_charge_status`` (or inferred
``payment_declined``), keeping each member's status, and reads the counts off at every month boundary:

* **active** -- ``active_patron`` whose last charge is not ``Declined``;
* **declined** -- ``declined_patron``, or ``active_patron`` whose last charge is ``Declined`` (as
  :func:`flask_patronlock.store.is_declined` says);
* **monthly decline rate** -- the ``patron_updated`` rows of the month whose inferred events include
  ``payment_declined``, divided by the patrons active at the start of that month.

A change is dated when this site learned of it (the row's ``created_at``): the first sync after installing dates
every existing patron to that day, and a change made while no sync or webhook reached the site is dated when one
did. Months before the first audit row have no data (``None``), not zeros.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import String, Text, and_, cast, func, literal, or_, select, type_coerce

from ..dates import add_months
from ..patron import Patron
from ..policy import payment_declined
from ..state import PatronLockState
from ..store import row_to_patron

__all__ = [
    "STATUS_FILTERS",
    "History",
    "PatronPage",
    "patron_timeline",
    "search_patrons",
    "status_history",
    "tier_counts",
]

#: the patron list's status filter: value -> label.
STATUS_FILTERS: dict[str, str] = {
    "": "Any status",
    "active": "Active",
    "declined": "Payment declined",
    "former": "Former patrons",
    "none": "Never pledged (followers, free members)",
    "linked": "Connected to an account here",
    "unlinked": "Not connected to an account here",
    "held": "Revocation held for approval",
    "missing": "Missing from the last syncs",
}

PAGE_SIZE = 50


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


@dataclass(frozen=True, slots=True)
class PatronPage:
    """One page of the patron list."""

    patrons: list[Patron]
    total: int
    page: int
    pages: int


def search_patrons(
    state: PatronLockState, *, q: str = "", status: str = "", tier: str = "", page: int = 1
) -> PatronPage:
    """Patrons of the campaign whose name or e-mail contains ``q`` (or whose member id is ``q``), filtered by
    ``status`` (a key of :data:`STATUS_FILTERS`) and by an entitled ``tier`` id; sorted by name."""
    p, a = state.tables.patrons, state.tables.accounts
    conditions: list[Any] = []
    campaign = state.campaign_id_or_none()
    if campaign:
        conditions.append(p.c.campaign_id == campaign)
    q = q.strip()
    if q:
        pattern = _like(q.lower())
        conditions.append(
            or_(
                func.lower(p.c.full_name).like(pattern, escape="\\"),
                func.lower(p.c.email).like(pattern, escape="\\"),
                p.c.member_id == q,
            )
        )
    declined = or_(
        p.c.patron_status == "declined_patron",
        and_(p.c.patron_status == "active_patron", p.c.last_charge_status == "Declined"),
    )
    if status == "active":
        conditions.append(and_(p.c.patron_status == "active_patron", ~declined))
    elif status == "declined":
        conditions.append(declined)
    elif status == "former":
        conditions.append(p.c.patron_status == "former_patron")
    elif status == "none":
        conditions.append(p.c.patron_status.is_(None))
    elif status == "linked":
        conditions.append(a.c.user_id.is_not(None))
    elif status == "unlinked":
        conditions.append(a.c.user_id.is_(None))
    elif status == "held":
        conditions.append(p.c.held_run_id.is_not(None))
    elif status == "missing":
        conditions.append(p.c.missing_since.is_not(None))
    if tier:
        ids = literal(",", String) + type_coerce(p.c.entitled_tier_ids, String) + literal(",", String)
        conditions.append(ids.like(_like("," + tier + ","), escape="\\"))
    joined = p.outerjoin(a, a.c.patreon_user_id == p.c.patreon_user_id)
    page = max(page, 1)
    with state.store.engine.connect() as conn:
        total = int(conn.execute(select(func.count()).select_from(joined).where(*conditions)).scalar_one())
        rows = conn.execute(
            select(p, a.c.user_id.label("local_user_id"))
            .select_from(joined)
            .where(*conditions)
            .order_by(func.lower(p.c.full_name), p.c.member_id)
            .limit(PAGE_SIZE)
            .offset((page - 1) * PAGE_SIZE)
        ).mappings()
        patrons = [row_to_patron(row) for row in rows]
    return PatronPage(patrons=patrons, total=total, page=page, pages=max(1, -(-total // PAGE_SIZE)))


def patron_timeline(state: PatronLockState, patron: Patron, *, limit: int = 200) -> list[dict[str, Any]]:
    """The audit rows about this patron, newest first: its state changes (by member id) and the links, unlinks and
    re-authorizations of its Patreon account (by Patreon user id)."""
    e = state.tables.events
    about = [e.c.member_id == patron.member_id]
    if patron.patreon_user_id:
        about.append(and_(e.c.member_id.is_(None), e.c.patreon_user_id == patron.patreon_user_id))
    with state.store.engine.connect() as conn:
        rows = conn.execute(select(e).where(or_(*about)).order_by(e.c.id.desc()).limit(limit)).mappings()
        return [dict(row) for row in rows]


def tier_counts(state: PatronLockState) -> list[tuple[str, int]]:
    """Active patrons (``active_patron``) per entitled tier, cheapest tier first; a patron entitled to two tiers
    counts in both, and one with an amount but no tier (Patreon sends that) counts as "No tier"."""
    p = state.tables.patrons
    campaign = state.campaign_id_or_none()
    stmt = (
        select(p.c.entitled_tier_ids, func.count())
        .where(p.c.patron_status == "active_patron")
        .group_by(p.c.entitled_tier_ids)
    )
    if campaign:
        stmt = stmt.where(p.c.campaign_id == campaign)
    counts: Counter[str] = Counter()
    with state.store.engine.connect() as conn:
        for tier_ids, count in conn.execute(stmt):
            for tier_id in tier_ids or ("",):
                counts[tier_id] += int(count)
    tiers = state.settings.current().tiers
    known = sorted((t for t in tiers.values()), key=lambda t: (t.amount_cents, t.id))
    out = [(t.title or t.id, counts.pop(t.id, 0)) for t in known]
    no_tier = counts.pop("", 0)
    out.extend((f"{tier_id} (unknown tier)", n) for tier_id, n in sorted(counts.items()))
    if no_tier:
        out.append(("No tier (amount only)", no_tier))
    return out


@dataclass
class History:
    """Month-by-month counts read off the audit log (see the module docs). ``None``: before the first row."""

    #: ``"2026-03"`` ...
    months: list[str] = field(default_factory=list)
    #: at the end of each month (for the current month: now).
    active: list[int | None] = field(default_factory=list)
    declined: list[int | None] = field(default_factory=list)
    #: active at the start of each month.
    active_at_start: list[int | None] = field(default_factory=list)
    #: ``payment_declined`` updates during each month.
    declines: list[int] = field(default_factory=list)

    @property
    def decline_rate(self) -> list[float | None]:
        """Declines in the month per 100 patrons active at its start (``None`` when none were)."""
        return [
            None if start is None or start == 0 else round(100.0 * n / start, 1)
            for n, start in zip(self.declines, self.active_at_start, strict=True)
        ]


def _month_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _kind_of(status: str | None, charge: str | None) -> str:
    if payment_declined(status, charge):
        return "declined"
    if status == "active_patron":
        return "active"
    return "other"


def _status_rows(state: PatronLockState) -> Iterator[tuple[datetime, str, str | None, Any, str]]:
    e = state.tables.events
    changes = cast(e.c.changes, Text)
    stmt = (
        select(e.c.created_at, e.c.kind, e.c.member_id, e.c.changes, e.c.events)
        .where(e.c.kind.in_(("patron_created", "patron_updated")))
        .where(
            or_(
                changes.like('%"patron_status"%'),
                changes.like('%"last_charge_status"%'),
                e.c.events.like("%payment_declined%"),
            )
        )
        .order_by(e.c.id)
        .execution_options(yield_per=2000)
    )
    with state.store.engine.connect() as conn:
        for row in conn.execute(stmt):
            yield row[0], row[1], row[2], row[3], row[4] or ""


def status_history(state: PatronLockState, now: datetime, *, months: int = 12) -> History:
    """Active and declined patrons at the end of each of the last ``months`` months, and the monthly decline rate,
    replayed from the audit log (see the module docs)."""
    first = add_months(_month_start(now), -(months - 1))
    starts = [add_months(first, i) for i in range(months)]
    history = History(months=[s.strftime("%Y-%m") for s in starts], declines=[0] * months)
    members: dict[str, tuple[str | None, str | None]] = {}
    counts: Counter[str] = Counter()
    seen_any = False
    # boundary k is the start of month k (k = 0..months-1); then "now" closes the last month
    boundaries = [*starts, now]
    at_boundary: list[tuple[int, int] | None] = [None] * len(boundaries)
    next_k = 0

    def close_until(moment: datetime | None) -> None:
        nonlocal next_k
        while next_k < len(boundaries) and (moment is None or moment >= boundaries[next_k]):
            at_boundary[next_k] = (counts["active"], counts["declined"]) if seen_any else None
            next_k += 1

    for created_at, kind, member_id, changed, events in _status_rows(state):
        close_until(created_at)
        if member_id is None:
            continue
        seen_any = True
        old = members.get(member_id, (None, None))
        status, charge = old
        if isinstance(changed, dict):
            if "patron_status" in changed:
                status = changed["patron_status"][1]
            if "last_charge_status" in changed:
                charge = changed["last_charge_status"][1]
        counts[_kind_of(*old)] -= 1 if member_id in members else 0
        members[member_id] = (status, charge)
        counts[_kind_of(status, charge)] += 1
        if kind == "patron_updated" and "payment_declined" in events.split(",") and created_at >= first:
            month = (created_at.year - first.year) * 12 + created_at.month - first.month
            if 0 <= month < months:
                history.declines[month] += 1
    close_until(None)
    for k in range(months):
        start, end = at_boundary[k], at_boundary[k + 1]
        history.active_at_start.append(start[0] if start is not None else None)
        history.active.append(end[0] if end is not None else None)
        history.declined.append(end[1] if end is not None else None)
    return history

