"""Insight: what the creator's locks and pledges did, month by month and lock by lock, from the audit log.

Over 600 lines: the figures, the recorder of the rows they are made of, and their CSV and text forms are one subject
(each reads the others' row types); split, every part would import every other.

Two kinds of rows feed it, and every figure is a pure function of them (:func:`monthly_figures`,
:func:`pledges_from`, :func:`lock_figures`), so a test builds a known history and checks each number:

* the **audit log** (``patronlock_events``): every change of a patron's state is a row with the events inferred from
  it (``pledge_started``, ``tier_changed``, ``payment_declined``, ``payment_recovered``, ``pledge_cancelled``) and the
  fields it changed as ``{field: [old, new]}``, dated when this site learned of it (``created_at``);
* the **banner views** (``patronlock_banner_views``): which lock's banner a viewer was shown, and why (the decision's
  reason). :func:`record_banner_view` records it (called by
  :func:`flask_patronlock.banners.banner_context`) when a banner is rendered for a real viewer: at most one row per
  viewer, lock, reason and UTC day, and each worker remembers what it wrote today, so a viewer reloading a locked page
  costs one set lookup, not a write.

The monthly figures (see ``docs/insight.rst`` for the words a creator reads):

* **active** -- patrons whose status is active and whose last charge was not declined (the patrons list's "Active"),
  at the start and at the end of each month (this month: now); **payment declined** likewise;
* **new** -- ``pledge_started`` events in the month; **cancelled** -- ``pledge_cancelled``; **declined** --
  ``payment_declined``; **recovered** -- ``payment_recovered``;
* **churn** -- cancelled in the month / active at its start, in %; **decline rate** -- declined in the month / active at
  its start, in %. ``None`` (no figure) for a month that started with no active patron.

A pledge **follows a denial** of a lock when the same person (the same local user, or the same Patreon user) was shown
that lock's banner within :data:`PATRONLOCK_INSIGHT_CREDIT_DAYS` days before the pledge started or was raised; a pledge
is credited once to each lock whose banner came before it. Anonymous visitors are counted (a keyed hash of the day,
address and browser, never the address) but cannot be followed to a pledge.
"""

from __future__ import annotations

import atexit
import csv
import hashlib
import hmac
import io
import logging
import threading
import weakref
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Text, cast, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from .dates import add_months
from .dbutil import transaction
from .formatting import REASON_WORDS, month_text, words
from .formatting import money as formatting_money
from .i18n import format_args
from .policy import payment_declined
from .state import PatronLockState

__all__ = [
    "AuditRow",
    "BannerView",
    "Insight",
    "LockFigures",
    "Month",
    "Pledge",
    "anonymous_key",
    "csv_safe",
    "figures_csv",
    "figures_text",
    "flush_all_banner_views",
    "flush_banner_views",
    "insight",
    "lock_figures",
    "month_label",
    "monthly_figures",
    "patrons_csv",
    "pledge_of",
    "pledges_from",
    "record_banner_view",
]

log = logging.getLogger("flask_patronlock.insight")

#: reasons that are not a denial: nothing was withheld, so nothing is recorded.
NOT_DENIALS = frozenset({"allowed", "admin_bypass", "lock_disabled"})
#: the audit rows that change a patron's state (and carry inferred events).
STATE_KINDS = ("patron_created", "patron_updated", "patron_missing", "revocation_held", "revocation_approved",
               "revocation_rejected", "access_changed")
#: the monthly events counted, by the event name in the audit log.
COUNTED = {"pledge_started": "new", "pledge_cancelled": "cancelled", "payment_declined": "declined",
           "payment_recovered": "recovered"}


# -- rows --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditRow:
    """The part of one audit row insight reads."""

    created_at: datetime
    kind: str
    member_id: str | None
    events: tuple[str, ...] = ()
    #: ``{field: [old, new]}``
    changes: Mapping[str, Sequence[Any]] | None = None
    patreon_user_id: str | None = None
    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class BannerView:
    """One row of ``patronlock_banner_views``: ``viewer`` was shown ``lock``'s banner for ``reason`` on ``day``."""

    day: datetime
    lock: str
    reason: str
    viewer: str
    first_at: datetime
    user_id: str | None = None
    patreon_user_id: str | None = None


@dataclass(frozen=True, slots=True)
class Pledge:
    """A pledge started (``upgrade`` False) or raised (``upgrade`` True), when this site learned of it."""

    at: datetime
    member_id: str
    upgrade: bool
    patreon_user_id: str | None = None
    user_id: str | None = None


# -- monthly figures ---------------------------------------------------------------------------------------------------


@dataclass
class Month:
    """The figures of one calendar month (UTC). Counts of patrons are ``None`` before the audit log begins."""

    start: datetime
    active_at_start: int | None = None
    active_at_end: int | None = None
    declined_at_end: int | None = None
    new: int = 0
    cancelled: int = 0
    declined: int = 0
    recovered: int = 0

    @property
    def label(self) -> str:
        """``"January 2027"`` (in the site's language: ``"Januar 2027"``)."""
        return month_label(self.start)

    @property
    def key(self) -> str:
        """``"2027-01"`` (CSV files, the command line)."""
        return f"{self.start:%Y-%m}"

    def _per_100(self, count: int) -> float | None:
        if not self.active_at_start:
            return None
        return round(100.0 * count / self.active_at_start, 1)

    @property
    def churn(self) -> float | None:
        """Cancelled in the month per 100 patrons active at its start; ``None`` when none were."""
        return self._per_100(self.cancelled)

    @property
    def decline_rate(self) -> float | None:
        """Payments declined in the month per 100 patrons active at its start; ``None`` when none were."""
        return self._per_100(self.declined)


def month_label(when: datetime) -> str:
    """``when``'s calendar month in words, as the site writes it: ``"January 2027"`` (German ``"Januar 2027"``);
    :func:`flask_patronlock.formatting.month_text` outside a request or for English."""
    site_locale, _currency = format_args()
    if site_locale is None:
        return month_text(when)
    from babel.dates import format_skeleton

    return str(format_skeleton("yMMMM", when.date(), locale=site_locale))


def month_start(moment: datetime) -> datetime:
    """Midnight UTC of the first day of ``moment``'s month."""
    return moment.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _kind_of(status: str | None, charge: str | None) -> str:
    if payment_declined(status, charge):
        return "declined"
    if status == "active_patron":
        return "active"
    return "other"


def monthly_figures(rows: Iterable[AuditRow], now: datetime, *, months: int = 12) -> list[Month]:
    """The last ``months`` calendar months up to ``now``'s, replayed from ``rows`` in the order they were written.

    Each row that changed ``patron_status`` or ``last_charge_status`` moves its member between active, declined and
    neither; the counts are read off at every month boundary (and at ``now`` for the current month). Events are counted
    in the month of the row's ``created_at``.
    """
    first = month_start(now)
    first = add_months(first, -(months - 1))
    out = [Month(start=add_months(first, i)) for i in range(months)]
    boundaries = [m.start for m in out] + [now]
    snapshots: list[tuple[int, int] | None] = [None] * len(boundaries)
    members: dict[str, tuple[str | None, str | None]] = {}
    counts: Counter[str] = Counter()
    seen_any = False
    next_k = 0

    def close_until(moment: datetime | None) -> None:
        nonlocal next_k
        # a month's boundary closes before a row written at its very start; "now" closes after every row
        while next_k < len(boundaries) and (moment is None or (next_k < months and moment >= boundaries[next_k])):
            snapshots[next_k] = (counts["active"], counts["declined"]) if seen_any else None
            next_k += 1

    for row in rows:
        if row.created_at > now:
            break  # written after the moment asked about
        close_until(row.created_at)
        if row.member_id is None:
            continue
        seen_any = True
        changed = row.changes if isinstance(row.changes, Mapping) else {}
        if "patron_status" in changed or "last_charge_status" in changed or row.member_id not in members:
            old = members.get(row.member_id, (None, None))
            status, charge = old
            if "patron_status" in changed:
                status = changed["patron_status"][1]
            if "last_charge_status" in changed:
                charge = changed["last_charge_status"][1]
            if row.member_id in members:
                counts[_kind_of(*old)] -= 1
            members[row.member_id] = (status, charge)
            counts[_kind_of(status, charge)] += 1
        if row.created_at >= first:
            index = (row.created_at.year - first.year) * 12 + row.created_at.month - first.month
            if 0 <= index < months:
                for event in row.events:
                    name = COUNTED.get(event)
                    if name is not None:
                        setattr(out[index], name, getattr(out[index], name) + 1)
    close_until(None)
    for k, month in enumerate(out):
        start, end = snapshots[k], snapshots[k + 1]
        month.active_at_start = start[0] if start is not None else None
        month.active_at_end = end[0] if end is not None else None
        month.declined_at_end = end[1] if end is not None else None
    return out


# -- which lock brought pledges ----------------------------------------------------------------------------------------


def _raised(changes: Mapping[str, Sequence[Any]]) -> bool:
    """Whether a ``tier_changed`` row's ``changes`` raise the monthly amount: the new entitled cents above the old
    ones, or -- when Patreon had zeroed them at the start of the month -- above the amount remembered then."""
    entitled = changes.get("entitled_cents")
    if entitled is None or len(entitled) != 2:
        return False
    old, new = int(entitled[0] or 0), int(entitled[1] or 0)
    if old == 0:
        remembered = changes.get("last_entitled_cents")
        # unchanged: what is remembered now is what was remembered before (the new amount, when there is one)
        old = int(remembered[0] or 0) if remembered is not None and len(remembered) == 2 else new
    return new > old


def pledge_of(row: AuditRow) -> Pledge | None:
    """The pledge ``row`` records: started (``pledge_started``) or raised (``tier_changed`` to more cents a month:
    Patreon's zeroing at the start of a month and a cut are not raises); ``None`` for any other row."""
    if row.member_id is None:
        return None
    if "pledge_started" in row.events:
        return Pledge(row.created_at, row.member_id, False, row.patreon_user_id, row.user_id)
    if "tier_changed" in row.events and isinstance(row.changes, Mapping) and _raised(row.changes):
        return Pledge(row.created_at, row.member_id, True, row.patreon_user_id, row.user_id)
    return None


def pledges_from(rows: Iterable[AuditRow]) -> list[Pledge]:
    """The pledges started and raised in ``rows`` (see :func:`pledge_of`)."""
    return [pledge for pledge in map(pledge_of, rows) if pledge is not None]


@dataclass
class LockFigures:
    """One lock's denials (viewer-days, by reason) and the pledges that followed them."""

    lock: str
    #: reason -> viewer-days on which the banner was shown for it.
    denials: dict[str, int] = field(default_factory=dict)
    #: distinct viewers shown the banner.
    viewers: int = 0
    #: pledges started within the credit window after a banner of this lock.
    pledges: int = 0
    #: pledges raised likewise.
    upgrades: int = 0

    @property
    def total(self) -> int:
        """Viewer-days denied, all reasons together."""
        return sum(self.denials.values())


def lock_figures(
    views: Iterable[BannerView],
    pledges: Iterable[Pledge],
    *,
    credit_days: int,
    links: Mapping[str, str] | None = None,
) -> list[LockFigures]:
    """Per lock (most denied first): the denials by reason, and each pledge credited to every lock whose banner the
    same person was shown within ``credit_days`` days before it (at most once per lock and pledge).

    A banner view and a pledge are the same person's when they share the local user id, or the Patreon user id: the
    view's own, or the one ``links`` (local user id -> Patreon user id) says that user connected since.
    """
    links = links or {}
    by_lock: dict[str, LockFigures] = {}
    viewers: dict[str, set[str]] = defaultdict(set)
    by_person: dict[str, list[BannerView]] = defaultdict(list)
    for view in views:
        figures = by_lock.setdefault(view.lock, LockFigures(view.lock))
        figures.denials[view.reason] = figures.denials.get(view.reason, 0) + 1
        viewers[view.lock].add(view.viewer)
        patreon = view.patreon_user_id or (links.get(view.user_id) if view.user_id else None)
        if view.user_id:
            by_person["u:" + view.user_id].append(view)
        if patreon:
            by_person["p:" + patreon].append(view)
    window = timedelta(days=credit_days)
    for pledge in pledges:
        keys = []
        if pledge.user_id:
            keys.append("u:" + pledge.user_id)
        if pledge.patreon_user_id:
            keys.append("p:" + pledge.patreon_user_id)
        credited: set[str] = set()
        for key in keys:
            for view in by_person.get(key, ()):
                if view.lock not in credited and pledge.at - window <= view.first_at <= pledge.at:
                    credited.add(view.lock)
        for lock in credited:
            if pledge.upgrade:
                by_lock[lock].upgrades += 1
            else:
                by_lock[lock].pledges += 1
    for lock, figures in by_lock.items():
        figures.viewers = len(viewers[lock])
    return sorted(by_lock.values(), key=lambda f: (-f.total, f.lock))


# -- reading the database ----------------------------------------------------------------------------------------------


#: the changed fields insight reads (the rest of an audit row's changes are left behind).
_READ_CHANGES = frozenset({"patron_status", "last_charge_status", "entitled_cents", "last_entitled_cents"})


def audit_rows(state: PatronLockState) -> Iterator[AuditRow]:
    """The audit rows insight reads, in the order written: those about a member of the campaign (when one is set) that
    changed the patron's status or last charge, or carry a counted event, a start or a change of tier (a charge that
    went through, a link, a feed token are left in the database)."""
    e = state.tables.events
    changes = cast(e.c.changes, Text)
    wanted = [changes.like('%"patron_status"%'), changes.like('%"last_charge_status"%')]
    wanted += [e.c.events.like(f"%{name}%") for name in (*COUNTED, "tier_changed")]
    stmt = (
        select(e.c.created_at, e.c.kind, e.c.member_id, e.c.events, e.c.changes, e.c.patreon_user_id, e.c.user_id)
        .where(e.c.kind.in_(STATE_KINDS), e.c.member_id.is_not(None), or_(*wanted))
        .order_by(e.c.id)
        .execution_options(yield_per=2000)
    )
    campaign = state.campaign_id_or_none()
    if campaign:  # the campaign's members only, as the patrons list shows them
        p = state.tables.patrons
        stmt = stmt.where(e.c.member_id.in_(select(p.c.member_id).where(p.c.campaign_id == campaign)))
    with state.store.engine.connect() as conn:
        for created_at, kind, member_id, events, changed, patreon_user_id, user_id in conn.execute(stmt):
            kept = {k: v for k, v in changed.items() if k in _READ_CHANGES} if isinstance(changed, dict) else None
            yield AuditRow(created_at, kind, member_id, tuple(events.split(",")) if events else (), kept,
                           patreon_user_id, user_id)


def banner_views(state: PatronLockState, *, since: datetime) -> list[BannerView]:
    """The banner views recorded on or after ``since``'s day."""
    v = state.tables.banner_views
    stmt = select(v.c.day, v.c.lock, v.c.reason, v.c.viewer, v.c.first_at, v.c.user_id, v.c.patreon_user_id).where(
        v.c.day >= _day(since)
    )
    with state.store.engine.connect() as conn:
        return [BannerView(*row) for row in conn.execute(stmt)]


def account_links(state: PatronLockState) -> dict[str, str]:
    """Local user id -> the Patreon user id it is connected to."""
    a = state.tables.accounts
    with state.store.engine.connect() as conn:
        return {str(u): str(p) for u, p in conn.execute(select(a.c.user_id, a.c.patreon_user_id))}


@dataclass
class Insight:
    """Everything the dashboard, the CSV export and ``flask patronlock insight`` show."""

    months: list[Month]
    locks: list[LockFigures]
    credit_days: int
    #: the first banner view counted (``None``: none recorded yet).
    views_since: datetime | None = None


def insight(state: PatronLockState, now: datetime | None = None, *, months: int = 12) -> Insight:
    """The figures of the last ``months`` months (see the module docs), read from the database."""
    now = now if now is not None else state.store.clock()
    first = add_months(month_start(now), -(months - 1))
    credit_days = int(state.app.config["PATRONLOCK_INSIGHT_CREDIT_DAYS"])
    flush_banner_views(state)  # this worker's views of the last seconds count too
    pledges: list[Pledge] = []

    def rows() -> Iterator[AuditRow]:  # one pass over the audit log: the pledges are picked up on the way
        for row in audit_rows(state):
            pledge = pledge_of(row)
            if pledge is not None and first <= pledge.at <= now:
                pledges.append(pledge)
            yield row

    monthly = monthly_figures(rows(), now, months=months)
    views = banner_views(state, since=first)
    return Insight(
        months=monthly,
        locks=lock_figures(views, pledges, credit_days=credit_days, links=account_links(state)),
        credit_days=credit_days,
        views_since=min((v.first_at for v in views), default=None),
    )


# -- recording banner views --------------------------------------------------------------------------------------------


def _day(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


class _Recorder:
    """One worker's banner views: what it recorded today (keys of ``(lock, reason, viewer)``, forgotten when the day
    changes, or all at once past :data:`MAX_REMEMBERED`: the unique index still keeps a second row out), and the rows
    not written yet. A page view never writes: the first view of the day queues a row, and a timer writes the queue
    :data:`PATRONLOCK_INSIGHT_FLUSH_SECONDS` later in one statement (so a denied page never waits for SQLite's write
    lock behind a sync); :func:`flush_banner_views` writes it at once, and so does the process's exit."""

    MAX_REMEMBERED = 50_000
    #: a queue this long is written at once.
    MAX_PENDING = 1_000

    def __init__(self, engine: Any, table: Any) -> None:
        self.engine = engine
        self.table = table
        self.day: datetime | None = None
        self.keys: set[tuple[str, str, str]] = set()
        self.pending: list[dict[str, Any]] = []
        self.timer: threading.Timer | None = None
        self.lock = threading.Lock()
        #: held while rows are written: a flush returns only once every write begun before it has ended (so whoever
        #: flushes before disposing the engine never leaves a timer's connection open behind it)
        self.writing = threading.Lock()

    def add(self, day: datetime, key: tuple[str, str, str], row: dict[str, Any], delay: float) -> bool:
        """Queue ``row`` unless ``key`` was recorded today; whether it was queued."""
        with self.lock:
            if day != self.day or len(self.keys) >= self.MAX_REMEMBERED:
                self.day, self.keys = day, set()
            if key in self.keys:
                return False
            self.keys.add(key)
            self.pending.append(row)
            if self.timer is None:
                wait = 0.0 if len(self.pending) >= self.MAX_PENDING else delay
                self.timer = threading.Timer(wait, self.flush)
                self.timer.daemon = True
                self.timer.start()
            return True

    def flush(self) -> int:
        """Write the queued rows (a duplicate another worker wrote is skipped); how many were queued."""
        with self.writing:
            return self._flush()

    def _flush(self) -> int:
        with self.lock:
            rows, self.pending = self.pending, []
            if self.timer is not None and self.timer is not threading.current_thread():
                self.timer.cancel()
            self.timer = None
        if not rows:
            return 0
        try:
            dialect = self.engine.dialect.name
            if dialect == "postgresql":
                stmt: Any = pg_insert(self.table).on_conflict_do_nothing()
            elif dialect == "sqlite":
                stmt = sqlite_insert(self.table).on_conflict_do_nothing()
            else:  # pragma: no cover - other databases: a duplicate fails the batch on the unique index (logged)
                stmt = self.table.insert()
            with transaction(self.engine) as conn:
                conn.execute(stmt, rows)
        except Exception:
            log.warning("recording %d banner view(s) failed; they are not counted", len(rows), exc_info=True)
        return len(rows)


# by app (the state is a dataclass: not hashable)
_recorders: weakref.WeakKeyDictionary[Any, _Recorder] = weakref.WeakKeyDictionary()
_recorders_lock = threading.Lock()


def _recorder(state: PatronLockState) -> _Recorder:
    with _recorders_lock:
        recorder = _recorders.get(state.app)
        if recorder is None:
            recorder = _recorders[state.app] = _Recorder(state.store.engine, state.tables.banner_views)
        return recorder


def flush_banner_views(state: PatronLockState) -> int:
    """Write this worker's queued banner views now (:func:`insight` does, before it reads); how many there were."""
    with _recorders_lock:
        recorder = _recorders.get(state.app)
    return recorder.flush() if recorder is not None else 0


@atexit.register
def flush_all_banner_views() -> None:
    """Write every app's queued banner views in this process now (at exit; and before a test disposes its engine)."""
    with _recorders_lock:
        recorders = list(_recorders.values())
    for recorder in recorders:
        recorder.flush()


def anonymous_key(secret: str | bytes | None, day: datetime, address: str | None, browser: str) -> str:
    """The viewer key of an anonymous visitor on ``day``: a keyed hash of the day, address and browser (never the
    address itself; a new one every day, so visitors cannot be followed across days)."""
    secret_bytes = secret if isinstance(secret, bytes) else str(secret or "").encode()
    seen = f"{day:%Y-%m-%d}\x00{address or ''}\x00{browser}".encode()
    return "a:" + hmac.new(secret_bytes, b"banner-view\x00" + seen, hashlib.sha256).hexdigest()[:24]


def record_banner_view(
    state: PatronLockState,
    *,
    lock: str | None,
    reason: str,
    viewer: str,
    user_id: str | None,
    patreon_user_id: str | None,
    now: datetime,
) -> bool:
    """Record that ``viewer`` (``"u:<user id>"`` or an :func:`anonymous_key`) was shown ``lock``'s banner for
    ``reason`` at ``now``: at most one row per viewer, lock, reason and UTC day. The first call of the day in this
    worker queues a row (a duplicate from another worker is skipped by the unique index); later calls only look up a
    set.
    Returns whether a row was queued (see :class:`_Recorder`: written within
    :data:`PATRONLOCK_INSIGHT_FLUSH_SECONDS`, or at once with 0)."""
    config = state.app.config
    if reason in NOT_DENIALS or not config["PATRONLOCK_INSIGHT_RECORD"]:
        return False
    day = _day(now)
    name = lock or ""
    row = {
        "day": day, "lock": name[:100], "reason": reason[:32], "viewer": viewer[:80], "user_id": user_id,
        "patreon_user_id": patreon_user_id, "first_at": now,
    }
    delay = float(config["PATRONLOCK_INSIGHT_FLUSH_SECONDS"])
    recorder = _recorder(state)
    if not recorder.add(day, (name, reason, viewer), row, delay):
        return False
    if delay <= 0:
        recorder.flush()
    return True


# -- CSV ---------------------------------------------------------------------------------------------------------------

#: cells starting with these are formulas to a spreadsheet: written with a leading apostrophe.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: Any) -> str:
    """``value`` as a CSV cell a spreadsheet shows as text: one starting with ``= + - @`` (or a tab or carriage
    return) gets a leading apostrophe, so ``=HYPERLINK(...)`` in a patron's name is never run as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for row in rows:
        writer.writerow([csv_safe(cell) for cell in row])
        if buffer.tell() > 16_384:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def figures_text(figures: Insight) -> Iterator[str]:
    """The figures as lines of plain text (``flask patronlock insight``): the months, then the locks in words."""

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:g}%" if isinstance(value, float) else str(value)

    yield (f"{'Month':<15}{'Active at start':>16}{'New':>6}{'Cancelled':>11}{'Declined':>10}{'Recovered':>11}"
           f"{'Churn':>8}{'Declines':>10}{'Active at end':>15}")
    for m in figures.months:
        yield (f"{m.label:<15}{cell(m.active_at_start):>16}{m.new:>6}{m.cancelled:>11}{m.declined:>10}"
               f"{m.recovered:>11}{cell(m.churn):>8}{cell(m.decline_rate):>10}{cell(m.active_at_end):>15}")
    yield ""
    if not figures.locks:
        yield "No visitor has been shown a lock's banner in these months."
        return
    days = figures.credit_days
    yield f"What each lock's banner brought (pledges and upgrades within {days} day{'' if days == 1 else 's'}):"
    for lock in figures.locks:
        reasons = ", ".join(f"{words(REASON_WORDS, r)}: {n}" for r, n in sorted(lock.denials.items()))
        yield (f"  {lock.lock or 'rules written in code'}: {lock.viewers} visitor(s) shown its banner ({reasons}); "
               f"{lock.pledges} pledge(s) and {lock.upgrades} upgrade(s) followed")


def _rate(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def figures_csv(figures: Insight) -> Iterator[str]:
    """The monthly figures, then the figures per lock, as CSV text (two tables, a blank line between)."""
    yield from _csv(
        ("month", "active at start", "active at end", "payment declined at end", "new", "cancelled", "declined",
         "recovered", "churn %", "decline rate %"),
        (
            (m.key, "" if m.active_at_start is None else m.active_at_start,
             "" if m.active_at_end is None else m.active_at_end,
             "" if m.declined_at_end is None else m.declined_at_end,
             m.new, m.cancelled, m.declined, m.recovered, _rate(m.churn), _rate(m.decline_rate))
            for m in figures.months
        ),
    )
    yield "\r\n"
    reasons = sorted({reason for lock in figures.locks for reason in lock.denials})
    yield from _csv(
        ("lock", "viewers shown a banner", "denials", *(f"denials: {r}" for r in reasons),
         f"pledges within {figures.credit_days} days", f"upgrades within {figures.credit_days} days"),
        (
            (lock.lock or "(rule written in code)", lock.viewers, lock.total,
             *(lock.denials.get(r, 0) for r in reasons), lock.pledges, lock.upgrades)
            for lock in figures.locks
        ),
    )


_STATUS_WORDS = {"active_patron": "Active", "former_patron": "Former patron"}


def patrons_csv(state: PatronLockState) -> Iterator[str]:
    """Every stored patron of the campaign as CSV text: name, e-mail, status, tiers by name, amounts, dates (UTC,
    ``YYYY-MM-DD``), and the local user connected to it."""
    symbol = state.app.config["PATRONLOCK_CURRENCY_SYMBOL"] or ""  # read now: the rows are written after the request

    def money(cents: int | None) -> str:
        return formatting_money(cents, symbol)

    p, a = state.tables.patrons, state.tables.accounts
    tiers = state.settings.current().tiers
    campaign = state.campaign_id_or_none()
    stmt = (
        select(p, a.c.user_id.label("local_user_id"))
        .select_from(p.outerjoin(a, a.c.patreon_user_id == p.c.patreon_user_id))
        .order_by(p.c.full_name, p.c.member_id)
        .execution_options(yield_per=1000)
    )
    if campaign:
        stmt = stmt.where(p.c.campaign_id == campaign)

    def date(value: datetime | None) -> str:
        return f"{value:%Y-%m-%d}" if value is not None else ""

    def rows() -> Iterator[Sequence[Any]]:
        with state.store.engine.connect() as conn:
            for row in conn.execute(stmt).mappings():
                status = row["patron_status"]
                if payment_declined(status, row["last_charge_status"]):
                    words = "Payment declined"
                else:
                    words = _STATUS_WORDS.get(status or "", "Never pledged")
                tier_names = [tiers[t].title or t if t in tiers else t for t in row["entitled_tier_ids"]]
                yield (
                    row["full_name"], row["email"] or "", words, "; ".join(tier_names), money(row["entitled_cents"]),
                    money(row["lifetime_cents"]), date(row["pledge_start"]), row["last_charge_status"] or "",
                    date(row["last_charge_date"]), date(row["paid_through"]), row["local_user_id"] or "",
                    row["member_id"],
                )

    yield from _csv(
        ("name", "email", "status", "tiers", "monthly amount", "lifetime support", "pledge start", "last charge",
         "last charge date", "paid through", "user id here", "Patreon member id"),
        rows(),
    )
