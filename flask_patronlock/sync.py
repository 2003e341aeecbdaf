"""Reconcile runs: read every member of the campaign from Patreon and make the stored state agree.

A run, in order:

1. takes the ``sync`` lease (one run at a time across every process and machine; a second start raises
   :class:`AlreadyRunning`) and records a ``patronlock_sync_runs`` row;
2. pages through the campaign's members (1,000 a page) and applies each page through
   :meth:`~flask_patronlock.store.Store.apply_many` with ``source="sync"`` and ``defer_revocations=True``: grants,
   updates and no-ops are written at once; snapshots that would take access, all entitled tiers or all entitled cents
   away from an entitled patron are kept aside, so nothing is taken away before the whole run has been seen. A page
   whose shape drifted (:class:`~flask_patronlock.patreon.errors.SchemaDrift`, or pledging members listed as never
   pledged) is not applied and ends the run, incomplete;
3. decides whether the run is **complete**: every page read and parsed, the last page without a next cursor, no
   cursor or member repeated, no empty page pointing onwards, and the members seen within a slack of Patreon's
   ``total`` (:func:`total_slack`; or no total reported). Anything else makes it **incomplete**: the updates and
   grants stay, the deferred revocations are dropped (counted in ``detail``), nobody is marked missing, and
   ``reason`` says why;
4. after a complete run, stored members the run did not see are *missing*. Together with the deferred revocations
   they are what the run would revoke (an entitled patron's first missing mark counts too: it starts the countdown).
   They, their audit rows and the run row's ``complete`` and counts commit in one transaction. If that trips the
   breaker (:meth:`~flask_patronlock.policy.PolicySettings.breaker_trips` against the patrons entitled now), they are
   **held** for the creator (``flask patronlock sync approve RUN`` / ``reject RUN``), the reason says what changed on
   which pages (logged at WARNING) and the ``revocations-held`` signal fires; otherwise the deferred snapshots are
   applied and the missing marks made;
5. refreshes the campaign's tier catalogue (one more request) only when the stored one is older than
   ``PATRONLOCK_TIERS_MAX_AGE`` seconds, was never read, or a page named a tier id it does not know. This comes after
   the pages and the revocation decisions: access never depends on the catalogue (entitlement reads each member's own
   amounts and tier ids), so a run over a fresh catalogue makes only its member page requests;
6. re-evaluates access that time alone changed, links patrons to local users by e-mail when matching is on and the
   host vouches for the local address (:func:`match_emails`), finishes the run row, releases the lease and sends
   ``sync-finished`` (and ``sync-incomplete`` when it made ``PATRONLOCK_SYNC_ALERT_AFTER`` incomplete runs in a row).

The lease is renewed after every page and by a heartbeat thread; each database step is retried on a fresh connection
when the connection is lost (``PATRONLOCK_SYNC_DB_ATTEMPTS``), and a run that still cannot reach the database ends
``failed`` with the reason on its row. See docs/sync.rst, "When a run dies".

Over 600 lines: one run's state machine (:class:`_Run`, about 480 lines) holds the page loop, the completeness rules,
the breaker and the run row, which change together; the helpers around it (heartbeat, prefetch, run queries) are
small and serve only it.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from flask import Flask
from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from . import signals
from .collector import heap_frozen
from .errors import PatronLockError
from .leases import Lease
from .models import is_row_id
from .patreon.errors import PatreonError, SchemaDrift
from .patreon.ratelimit import TOKEN_LIMIT
from .patreon.types import MemberPage, MemberSnapshot
from .state import PatronLockState, get_state
from .store import ApplyResult

if TYPE_CHECKING:
    from .patreon.client import PatreonClient

__all__ = [
    "SYNC_LEASE", "AlreadyRunning", "DatabaseUnavailable", "Progress", "RunResult", "incomplete_streak", "last_run",
    "list_runs", "run_sync",
]

log = logging.getLogger("flask_patronlock.sync")

#: the name of the lease that makes runs one at a time.
SYNC_LEASE = "sync"

#: a run's row shows its progress at most this many seconds late while pages change nothing (a page that changes
#: something saves it in its own transaction, so the row always counts exactly the changes committed).
PROGRESS_EVERY = 2.0


class AlreadyRunning(PatronLockError):
    """Another run holds the sync lease."""


class DatabaseUnavailable(PatronLockError):
    """A run could not even start: the database connection was lost at every attempt (there is no run row to say
    so; a run that started records the same loss on its row and returns ``status="failed"`` instead)."""


class _DatabaseLost(Exception):
    """A run's database step lost its connection at every attempt."""

    def __init__(self, what: str, attempts: int, exc: DBAPIError) -> None:
        cause = exc.orig if exc.orig is not None else exc
        first_line = (str(cause).strip().splitlines() or [""])[0][:200]
        self.reason = (
            f"database connection lost ({what}: {type(cause).__name__}: {first_line}) after {attempts} attempt(s)"
        )
        super().__init__(self.reason)


class _AlreadyFinal(Exception):
    """The run's row was made final by an earlier attempt whose commit was not acknowledged (or by another run)."""


_T = TypeVar("_T")


def _connection_lost(exc: DBAPIError) -> bool:
    """Whether ``exc`` is the kind a fresh connection may not hit again (a dropped or terminated connection, a
    server restarting, SQLite's "database is locked" or I/O errors), not a bug in a statement."""
    return bool(exc.connection_invalidated) or isinstance(exc, (OperationalError, InterfaceError))


def _retrying(what: str, attempts: int, step: Callable[[], _T]) -> _T:
    """``step()``, tried again (at most ``attempts`` times in all) when it loses its database connection.

    SQLAlchemy invalidates a connection that failed with a disconnect and the pool's older connections with it, so
    the next attempt checks out a fresh one. Each step is one transaction (or reads only), so an attempt that failed
    left nothing behind, and an attempt whose commit landed unacknowledged is caught by the step itself (the
    revocation phase finds its row already final).
    """
    attempts = max(1, attempts)
    for attempt in range(1, attempts + 1):
        try:
            return step()
        except DBAPIError as exc:
            if not _connection_lost(exc):
                raise
            if attempt >= attempts:
                raise _DatabaseLost(what, attempts, exc) from exc
            log.warning(
                "sync: the database connection was lost while %s (%s); attempt %d of %d",
                what, type(exc.orig or exc).__name__, attempt + 1, attempts,
            )
            time.sleep(min(0.25 * 2 ** (attempt - 1), 4.0))
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a run is, sent to the ``progress`` callback after each page."""

    run_id: int
    pages: int
    members: int
    #: Patreon's ``total`` as last reported (``None`` before the first page or when Patreon did not say).
    total: int | None


@dataclass(slots=True)
class RunResult:
    """What a run did (also stored on its ``patronlock_sync_runs`` row)."""

    run_id: int
    #: ``complete``, ``incomplete``, ``held`` (complete, revocations wait for approval), ``failed`` (an unexpected
    #: error, re-raised) or ``skipped`` (a scheduled run found a recent one).
    status: str
    complete: bool = False
    reason: str | None = None
    pages: int = 0
    members_seen: int = 0
    total_reported: int | None = None
    #: member rows written by the run (created or updated), including applied revocations.
    changed: int = 0
    #: patrons whose access the run took away.
    revoked: int = 0
    #: revocations held for approval.
    held: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    #: the rest: ``api_requests``, ``deferred``, ``dropped``, ``missing_marked``, ``created``, ``updated``,
    #: ``unchanged``, ``stale``, ``access_refreshed``, ``linked``, ``tiers``.
    detail: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for logs and the CLI."""
        words = {True: "complete", False: "INCOMPLETE"}[self.complete] if self.status != "held" else "complete, HELD"
        if self.status == "failed":
            words = "FAILED"
        line = (
            f"run {self.run_id}: {words}; {self.pages} page(s), {self.members_seen} member(s) of "
            f"{self.total_reported if self.total_reported is not None else '?'}; {self.changed} changed, "
            f"{self.revoked} revoked, {self.held} held"
        )
        if self.reason:
            line += f"; reason: {self.reason}"
        return line


def _now(state: PatronLockState) -> datetime:
    return state.store.clock().astimezone(UTC)


def run_sync(
    app: Flask | None = None,
    *,
    trigger: str = "manual",
    client: PatreonClient | None = None,
    progress: Callable[[Progress], None] | None = None,
    min_interval: float | None = None,
) -> RunResult:
    """Run one reconcile pass now (see the module docs). Needs the app (default ``current_app``), not a request.

    :param trigger: recorded on the run: ``manual``, ``cron``, ``schedule``, ``celery`` ...
    :param client: the Patreon client (default: the creator's, from the configuration).
    :param progress: called after each page.
    :param min_interval: skip (``status="skipped"``) when a run started less than this many seconds ago: how several
        schedulers (one per gunicorn worker) make one run per interval between them.
    :raises AlreadyRunning: another run holds the lease.
    :raises ConfigurationError: the campaign id or creator token is not configured.
    """
    state = get_state(app)
    store = state.store
    cfg = state.app.config
    campaign_id = state.campaign_id("a reconcile run")
    own_client = client is None
    lease = Lease(store, SYNC_LEASE, ttl=float(cfg["PATRONLOCK_SYNC_LEASE_SECONDS"]))
    attempts = int(cfg["PATRONLOCK_SYNC_DB_ATTEMPTS"])
    try:
        acquired = _retrying("taking the sync lease", attempts, lease.acquire)
    except _DatabaseLost as exc:
        log.error("sync run not started: %s", exc.reason)
        raise DatabaseUnavailable(f"the sync run could not start: {exc.reason}") from None
    if not acquired:
        held = lease.current()
        raise AlreadyRunning(f"a sync run is already running ({held[0] if held else 'another worker'})")
    try:
        if min_interval is not None:
            last = last_run(state.app)
            started = last.started_at if last is not None else None
            if last is not None and started is not None and _now(state) - started < timedelta(seconds=min_interval):
                return RunResult(run_id=last.run_id, status="skipped", started_at=started)
        if client is None:
            client = state.creator_client("a reconcile run")
            # a run has time: wait out a 429 of the per-token limit (at most its minute) rather than give up the run
            client.max_backoff = max(client.max_backoff, TOKEN_LIMIT[1])
        try:
            try:
                run = _Run(state, campaign_id, client, lease, trigger, progress)
            except _DatabaseLost as exc:
                log.error("sync run not started: %s", exc.reason)
                raise DatabaseUnavailable(f"the sync run could not start: {exc.reason}") from None
            # the collector walks only what the run makes, not the site's whole heap every few pages
            with heap_frozen(bool(cfg["PATRONLOCK_SYNC_FREEZE_HEAP"])):
                return run.run()
        finally:
            if own_client:
                client.close()
    finally:
        try:
            lease.release()
        except DBAPIError as exc:  # the lease expires by itself within its TTL
            log.warning("sync: could not release the sync lease (%s); it expires by itself", type(exc).__name__)


class _Run:
    def __init__(
        self,
        state: PatronLockState,
        campaign_id: str,
        client: PatreonClient,
        lease: Lease,
        trigger: str,
        progress: Callable[[Progress], None] | None,
    ) -> None:
        self.state, self.store = state, state.store
        self.campaign_id, self.client, self.lease = campaign_id, client, lease
        self.progress = progress
        self.trigger = trigger[:16]
        self.page_size = int(state.app.config["PATRONLOCK_SYNC_PAGE_SIZE"])
        self.started_at = _now(state)
        self.requests_before = client.request_count
        cfg = state.app.config
        self.attempts = int(cfg["PATRONLOCK_SYNC_DB_ATTEMPTS"])
        run_id = self._db("recording the run", self._start_row)
        self.result = RunResult(run_id=run_id, status="running", started_at=self.started_at)
        self.seen: set[str] = set()
        self.deferred: list[tuple[MemberSnapshot, datetime]] = []
        #: kind of loss (transitions.LOSSES) -> the page number of each deferred snapshot with it
        self.losses: dict[str, list[int]] = {}
        self.counts: dict[str, int] = {"created": 0, "updated": 0, "unchanged": 0, "stale": 0, "deferred": 0}
        self.last_renew = time.monotonic()
        #: a page's transaction found the lease taken (see _apply_page)
        self.lease_lost = False
        #: when the run row's progress was last saved; whether the last page wrote nothing, and whether it had
        #: members found unchanged (see _apply_page)
        self.progress_saved, self.idle, self.settling = time.monotonic(), True, True
        self.heartbeat = _Heartbeat(lease, run_id)
        self.tiers_checked_at, self.known_tiers = self._db(
            "reading the tier catalogue", lambda: self.store.tiers_checked(campaign_id)
        )
        self.unknown_tiers: set[str] = set()
        self.empty_pages: list[int] = []

    def _db(self, what: str, step: Callable[[], _T]) -> _T:
        return _retrying(what, self.attempts, step)

    def _start_row(self) -> int:
        runs = self.store.tables.sync_runs
        with self.store.transaction() as conn:
            # Whoever holds the lease is the only run alive: a row still "running" is one whose process stopped
            # (killed, a crash, a deploy) before it could say how it ended. Its other columns stay as they are: a
            # run stopped after its revocation phase committed still says complete, and how many it revoked.
            conn.execute(
                update(runs)
                .where(runs.c.status == "running")
                .values(
                    status="failed",
                    reason="interrupted: the process running it stopped before it finished",
                    finished_at=self.started_at,
                )
            )
            run_id = conn.execute(
                insert(runs).values(trigger=self.trigger, status="running", started_at=self.started_at)
            ).inserted_primary_key
        assert run_id is not None
        return int(run_id[0])

    # -- the run ------------------------------------------------------------------------------------------------

    def run(self) -> RunResult:
        result = self.result
        signals.send_action(
            signals.sync_started,
            self.state.app,
            strict=self.store._strict_signals(),
            run_id=result.run_id,
            trigger=self.trigger,
            started_at=result.started_at,
        )
        try:
            with self.heartbeat:
                reason = self._read_pages()
                if reason is None:
                    reason = self._check_complete()
                if reason is None:
                    self._finish_complete()
            if reason is not None:
                result.status, result.complete, result.reason = "incomplete", False, reason
                result.detail["dropped"] = len(self.deferred)
                if self.deferred:
                    log.warning(
                        "sync run %d is incomplete (%s): %d revocation(s) it saw were not applied",
                        result.run_id,
                        reason,
                        len(self.deferred),
                    )
            self._refresh_tiers()
            self._after()
        except _DatabaseLost as exc:
            # Not a bug to re-raise: the database went away (a failover, a restart, a terminated backend) for longer
            # than the retries. The row says so (once the database answers again), and the result is returned.
            result.status, result.reason = "failed", exc.reason[:500]
            log.error("sync run %d gave up: %s", result.run_id, exc.reason)
            if self._save_final():
                self._finished()
            return result
        except BaseException as exc:
            result.status = "failed"
            result.reason = f"{type(exc).__name__}: {exc}"[:500]
            self._save_final()
            raise
        if not self._save_final():
            result.status = "failed"
            result.reason = "database connection lost while recording the run's end; the next run marks it interrupted"
            return result
        self._finished()
        return result

    def _save_final(self) -> bool:
        """Record the run's end (with retries); ``False`` when even that lost the database (logged: the next run
        marks the row interrupted)."""
        try:
            self._db("recording the run's end", self._save)
        except _DatabaseLost as exc:
            log.error("sync run %d ended (%s) but its row could not be written: %s", self.result.run_id,
                      self.result.reason or self.result.status, exc.reason)
            return False
        return True

    def _finished(self) -> None:
        result = self.result
        signals.send_action(
            signals.sync_finished, self.state.app, strict=self.store._strict_signals(), run=result
        )
        log.info("%s", result.summary())
        if result.complete:
            return
        try:
            streak, last_complete = self._db("counting incomplete runs", lambda: _streak(self.state))
        except _DatabaseLost:
            return
        after = int(self.state.app.config["PATRONLOCK_SYNC_ALERT_AFTER"])
        if after < 1 or streak < after:
            return
        since = (last_complete.finished_at or last_complete.started_at) if last_complete is not None else None
        log.warning(
            "%d sync runs in a row were incomplete (the latest: %s); nobody has lost access through a sync since %s",
            streak, result.reason, since.isoformat() if since is not None else "the first run",
        )
        if streak == after:
            signals.send_action(
                signals.sync_incomplete,
                self.state.app,
                strict=self.store._strict_signals(),
                run=result,
                streak=streak,
                last_complete=last_complete,
            )

    def _tiers_stale(self) -> str | None:
        """Why the stored tier catalogue must be read again, or ``None`` when it is fresh enough."""
        if self.tiers_checked_at is None:
            return "never read"
        if self.unknown_tiers:
            return "unknown tier"
        max_age = float(self.state.app.config["PATRONLOCK_TIERS_MAX_AGE"])
        if _now(self.state) - self.tiers_checked_at.astimezone(UTC) >= timedelta(seconds=max_age):
            return "stale"
        return None

    def _refresh_tiers(self) -> None:
        why = self._tiers_stale()
        if why is None:
            self.result.detail["tiers"] = "fresh"
            return
        try:
            changed = self._db(
                "storing the tier catalogue",
                lambda: refresh_tiers(self.state.app, client=self.client, campaign_id=self.campaign_id),
            )
        except PatreonError as exc:
            self.result.detail["tiers"] = f"not refreshed: {type(exc).__name__}"
            log.warning("sync run %d could not refresh the tiers: %s", self.result.run_id, exc)
            return
        self.result.detail["tiers"] = f"{'changed' if changed else 'unchanged'} ({why})"

    def _read_pages(self) -> str | None:
        """Apply every page; the reason the run is incomplete, or ``None`` when every page was read.

        The next page is fetched and parsed in a helper thread while this one is applied (Patreon's side of a page
        and our writes overlap); pages are still applied one at a time, in order.
        """
        pages = self.client.iter_member_pages(self.campaign_id, page_size=self.page_size)
        prefetch = _Prefetch(pages, lambda: _now(self.state), self.campaign_id)
        try:
            return self._apply_pages(prefetch)
        finally:
            prefetch.close()

    def _apply_pages(self, prefetch: _Prefetch) -> str | None:
        result = self.result
        number = 0
        while True:
            number += 1
            try:
                page, observed_at = prefetch.next()
            except PatreonError as exc:
                reason = f"page {number}: {type(exc).__name__}: {exc}"[:500]
                if isinstance(exc, SchemaDrift):
                    self._drifted(reason)
                return reason
            if page is None:
                return None
            if page.total is not None:
                result.total_reported = page.total
            if page.raw_count != len(page.members):
                return f"page {number}: {page.raw_count - len(page.members)} member(s) could not be parsed"
            if page.raw_count == 0 and page.next_cursor is not None:
                self.empty_pages.append(number)
            members = [m for m in page.members if m.campaign_id in (None, self.campaign_id)]
            unpledged = self._db(f"checking page {number}", functools.partial(self._unpledged, members))
            if unpledged is not None:
                reason = f"page {number}: SchemaDrift: {unpledged}"[:500]
                self._drifted(reason)
                return reason
            self._db(f"applying page {number}", functools.partial(self._apply_page, members, observed_at, number))
            if self.progress is not None:
                self.progress(Progress(result.run_id, result.pages, result.members_seen, result.total_reported))
            if self.heartbeat.lost.is_set() or self.lease_lost or not self._db("renewing the sync lease", self._renew):
                return (
                    "the sync lease was lost: another run took over after PATRONLOCK_SYNC_LEASE_SECONDS without "
                    "renewal"
                )

    def _unpledged(self, members: list[MemberSnapshot]) -> str | None:
        """Drift no single document shows: members stored as pledging whom the page lists with no ``patron_status``
        ("never pledged"), a transition Patreon never makes (a pledge ends as ``former_patron``). ``None`` when none."""
        nulls = [m.member_id for m in members if m.patron_status is None]
        pledging = self.store.pledging_among(nulls) if nulls else set()
        if not pledging:
            return None
        first = next(m for m in nulls if m in pledging)
        return (
            f"attribute 'patron_status' null ('never pledged') on {len(pledging)} of {len(members)} member(s) stored "
            f"as pledging (first: member {first!r}), a change Patreon never makes"
        )

    def _drifted(self, reason: str) -> None:
        log.warning(
            "sync run %d stopped: %s. Patreon's data changed shape; the page was not applied and the run is "
            "incomplete, so nobody loses access over it",
            self.result.run_id,
            reason,
        )

    def _apply_page(self, members: list[MemberSnapshot], observed_at: datetime, number: int) -> None:
        """Apply page ``number`` and record the run's progress on its row in the same transaction (so the row always
        counts the changes its audit rows show); one attempt of a retried step, so nothing here counts until it
        commits. A page that changes nothing writes nothing: its progress is saved with the next page that changes
        something, or on its own when the row's was saved :data:`PROGRESS_EVERY` seconds ago or more."""
        result = self.result
        seen = self.seen
        fresh = [m for m in members if m.member_id not in seen]  # the client raises on repeats; be safe anyway
        seen_after = len(seen) + len({m.member_id for m in fresh})  # (not a copy of the run's whole set a page)
        changed = [0]
        saved = [False]
        renewed: list[bool | None] = [None]

        def progress(conn: Connection, outcomes: list[ApplyResult]) -> None:
            changed[0] = sum(1 for o in outcomes if o.outcome != "deferred" and o.changed)
            self._save_progress(conn, pages=result.pages + 1, seen=seen_after, changed=result.changed + changed[0])
            saved[0] = True
            if time.monotonic() - self.last_renew >= 1:  # due: renewed in this transaction, not a commit of its own
                renewed[0] = self.lease.renew_in(conn)

        outcomes: list[ApplyResult] = []
        if fresh:
            known = self.known_tiers
            outcomes = self.store.apply_many(
                fresh,
                source="sync",
                observed_at=observed_at,
                run_id=result.run_id,
                defer_revocations=True,
                # nearly every member of a run is unchanged: found without reading whole rows (but after a page with
                # none unchanged, as on a first run, the next likely has none either: not asked, one query less)
                load_unchanged=not self.settling,
                also=progress,
                # after a page that wrote nothing, the next is likely the same: a page that changes nothing then
                # takes no write lock and makes no commit (progress is saved below, every PROGRESS_EVERY seconds)
                read_first=self.idle,
            )
            tiers = {t for m in fresh for t in m.entitled_tier_ids}
            if not tiers <= known:
                self.unknown_tiers |= tiers - known
        if not saved[0] and (not fresh or time.monotonic() - self.progress_saved >= PROGRESS_EVERY):
            with self.store.transaction() as conn:
                progress(conn, [])
        if saved[0]:
            self.progress_saved = time.monotonic()
        if renewed[0] is not None:
            self.last_renew = time.monotonic()
            self.lease_lost = self.lease_lost or not renewed[0]
        self.idle = not saved[0] or changed[0] == 0
        self.settling = not fresh or any(o.outcome == "unchanged" for o in outcomes)
        self.seen.update(m.member_id for m in fresh)
        for snapshot, outcome in zip(fresh, outcomes, strict=True):
            self.counts[outcome.outcome] += 1
            if outcome.outcome == "deferred":
                self.deferred.append((snapshot, observed_at))
                for kind in outcome.losses:
                    self.losses.setdefault(kind, []).append(number)
        result.changed += changed[0]
        result.pages += 1
        result.members_seen = len(self.seen)

    def _renew(self) -> bool:
        """Renew the lease after a page (at most once a second; the heartbeat renews it between pages too). A page
        that wrote renewed it in its own transaction when it was due (see _apply_page): then this does nothing."""
        if time.monotonic() - self.last_renew < 1:
            return True
        self.last_renew = time.monotonic()
        return self.lease.renew()

    def _check_complete(self) -> str | None:
        """Why a run whose cursor chain ended cleanly is still incomplete, or ``None`` (see docs/sync.rst)."""
        if self.empty_pages:
            pages = ", ".join(str(n) for n in self.empty_pages[:10])
            return f"page(s) {pages} came back empty but pointed to a next page"
        total = self.result.total_reported
        if total is None:
            return None  # Patreon did not say; the cursor chain, the breaker and the missing-twice rule decide
        slack = total_slack(self.state.app, total)
        if abs(len(self.seen) - total) > slack:
            return (
                f"saw {len(self.seen)} member(s) but Patreon reported a total of {total} "
                f"(more than {slack} apart)"
            )
        return None

    def _finish_complete(self) -> None:
        """Decide and commit the revocation phase. The revocations (or the held ones), their audit rows and the run
        row's counts commit in one transaction; a retried attempt that finds its row already final (the first
        attempt's commit landed unacknowledged) reads the row back instead of revoking twice."""
        try:
            self._db("revoking", self._revoke)
        except _AlreadyFinal:
            self._reload_row()

    def _revoke(self) -> None:
        result, store = self.result, self.store
        changed_before = result.changed
        unseen = self._unseen()
        entitled_unseen = store.entitled_among(unseen) if unseen else set()
        revoking = len(self.deferred) + len(entitled_unseen)
        total = store.count_entitled(self.campaign_id)
        settings = store.policy_settings()
        losses = {kind: len(pages) for kind, pages in self.losses.items()}
        if entitled_unseen:
            losses["missing"] = len(entitled_unseen)
        result.detail.update(unseen=len(unseen), revoking=revoking, entitled=total, losses=losses)
        if revoking and settings.breaker_trips(revoking, total):
            reason = (
                f"{self._what_changed(len(entitled_unseen))}: the run would take something away from {revoking:,} of "
                f"{total:,} entitled patron(s), more than the breaker allows (max({settings.breaker_min_patrons}, "
                f"{settings.breaker_fraction:.0%})); approve or reject it"
            )
            log.warning("sync run %d is HELD: %s", result.run_id, reason)

            def held(conn: Connection, _results: list[ApplyResult]) -> None:
                self._final_row(conn, status="held", reason=reason, held=revoking, revoked=0, changed=changed_before)

            store.hold_revocations(
                result.run_id,
                self.deferred,
                sorted(entitled_unseen),
                total=total,
                missed_at=_now(self.state),
                finish=held,
                reason=reason,
                losses=losses,
            )
            result.status, result.complete, result.reason, result.held = "held", True, reason, revoking
            others = [m for m in unseen if m not in entitled_unseen]
            if others:  # not entitled: a mark revokes nobody; a lost connection here leaves them for the next run
                marked = self._db(
                    "marking missing members",
                    lambda: store.mark_missing(result.run_id, others, seen_before=self.started_at),
                )
                result.detail["missing_marked"] = sum(1 for r in marked if r.changed)
            return

        def complete(conn: Connection, applied: list[ApplyResult]) -> None:
            self._final_row(
                conn,
                status="running",  # the rest of the run (tiers, time, e-mail links) follows; the row says complete
                reason=None,
                held=0,
                revoked=sum(1 for r in applied if "access_revoked" in r.events),
                changed=changed_before + sum(1 for r in applied if r.changed),
            )

        applied = store.apply_run_revocations(
            result.run_id, self.deferred, unseen, seen_before=self.started_at, finish=complete
        )
        result.status, result.complete = "complete", True
        result.detail["missing_marked"] = sum(1 for r in applied[len(self.deferred) :] if r.changed)
        result.changed = changed_before + sum(1 for r in applied if r.changed)
        result.revoked = sum(1 for r in applied if "access_revoked" in r.events)

    def _final_row(
        self, conn: Connection, *, status: str, reason: str | None, held: int, revoked: int, changed: int
    ) -> None:
        """Inside the revocation phase's transaction: the run row says complete and counts what it revoked. Only a row
        still running and not complete is updated; otherwise the phase already committed (or another run marked this
        one interrupted) and everything is rolled back."""
        runs = self.store.tables.sync_runs
        detail = {**self.result.detail, **self.counts}
        updated = conn.execute(
            update(runs)
            .where(runs.c.id == self.result.run_id, runs.c.status == "running", runs.c.complete.is_(False))
            .values(
                status=status, complete=True, reason=reason, held=held, revoked=revoked, changed=changed,
                pages=self.result.pages, members_seen=len(self.seen), total_reported=self.result.total_reported,
                detail=detail,
            )
        ).rowcount
        if not updated:
            raise _AlreadyFinal(self.result.run_id)

    def _reload_row(self) -> None:
        found = get_run(self.state.app, self.result.run_id)
        result = self.result
        if found is None or not found.complete:
            raise RuntimeError(f"sync run {result.run_id}: its row was changed by someone else during the run")
        result.status = "complete" if found.status == "running" else found.status
        result.complete, result.reason = True, found.reason
        result.held, result.revoked, result.changed = found.held, found.revoked, found.changed
        result.detail.update(found.detail)

    def _what_changed(self, missing: int) -> str:
        """What a held run would take away, kind by kind, with the pages it saw it on."""
        words = {
            "access": "access ended for {n} patron(s) on {pages}",
            "tiers": "tiers emptied for {n} patron(s) on {pages}",
            "cents": "entitled cents fell to 0 for {n} patron(s) on {pages}",
        }
        parts = [
            words[kind].format(n=f"{len(self.losses[kind]):,}", pages=_page_ranges(self.losses[kind]))
            for kind in words
            if kind in self.losses
        ]
        if missing:
            parts.append(f"{missing:,} entitled patron(s) missing from the listing")
        return "; ".join(parts)

    def _unseen(self) -> list[str]:
        """The stored members of the campaign this complete run did not see."""
        store = self.store
        # Every member applied as created, updated or unchanged is stored under this campaign now; when the campaign
        # has no more rows than those, nobody is unseen (the common case), without reading 100,000 ids to find out.
        confirmed = self.counts["created"] + self.counts["updated"] + self.counts["unchanged"]
        if confirmed == len(self.seen) and store.count_members(self.campaign_id) == confirmed:
            return []
        return sorted(store.member_ids(self.campaign_id) - self.seen)

    def _after(self) -> None:
        result, store = self.result, self.store
        if result.complete:  # an incomplete run revokes nobody, not even by time (the scheduler's tick does that)
            refreshed = self._db("re-evaluating access", store.refresh_access)
            result.detail["access_refreshed"] = len(refreshed)
            result.revoked += sum(1 for r in refreshed if "access_revoked" in r.events)
        if self.state.app.config["PATRONLOCK_SYNC_MATCH_EMAILS"] and self.seen:
            if self.state.declarations.verified_users_by_email is None:
                log.warning(
                    "PATRONLOCK_SYNC_MATCH_EMAILS is on but no @patronlock.verified_users_by_email is registered: "
                    "sync run %d linked nobody by e-mail",
                    result.run_id,
                )
            result.detail["linked"] = len(
                self._db(
                    "linking by e-mail", lambda: match_emails(self.state, sorted(self.seen), run_id=result.run_id)
                )
            )

    def _save_progress(self, conn: Connection, *, pages: int, seen: int, changed: int) -> None:
        """Record how far the run got on its row, in the page's transaction (the settings page shows it while it
        runs, and a run that dies leaves a row that counts the changes it committed)."""
        result, runs = self.result, self.store.tables.sync_runs
        conn.execute(
            update(runs)
            .where(runs.c.id == result.run_id)
            .values(pages=pages, members_seen=seen, total_reported=result.total_reported, changed=changed)
        )

    def _save(self) -> None:
        result = self.result
        result.finished_at = _now(self.state)
        result.detail.update(self.counts)
        result.detail["api_requests"] = self.client.request_count - self.requests_before
        runs = self.store.tables.sync_runs
        values = {name: getattr(result, name) for name in _RUN_COLUMNS}
        with self.store.transaction() as conn:
            conn.execute(update(runs).where(runs.c.id == result.run_id).values(detail=dict(result.detail), **values))


class _Heartbeat:
    """Renews the sync lease every third of its TTL from a thread while the run reads and applies pages.

    The run also renews after every page, but one page can take longer than the TTL (Patreon slow, a 429's wait, the
    client's retries): without a heartbeat a live run would lose its lease mid-page and a second run could start. The
    heartbeat dies with the process, so a killed run stops renewing and its lease expires within one TTL. It stops
    with the pages and the revocation phase; the run's remaining steps are short and bounded.
    """

    def __init__(self, lease: Lease, run_id: int) -> None:
        self.lease, self.run_id = lease, run_id
        self.every = max(0.5, lease.ttl.total_seconds() / 3)
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            try:
                if not self.lease.renew():
                    self.lost.set()
                    return
            except Exception as exc:  # a lost connection: the next beat (or the page's renewal) tries again
                log.warning("sync run %d could not renew its lease: %s", self.run_id, type(exc).__name__)

    def __enter__(self) -> _Heartbeat:
        self._thread = threading.Thread(target=self._beat, name="patronlock-sync-lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


def _page_ranges(numbers: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"pages 1-3, 7"``."""
    pages = sorted(set(numbers))
    spans: list[str] = []
    start = prev = pages[0]
    for n in [*pages[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        spans.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ("page " if len(pages) == 1 else "pages ") + ", ".join(spans)


_set_attr = object.__setattr__


class _Prefetch:
    """Fetch the next item of ``pages`` in a daemon thread while the caller works on the current one."""

    _END = object()

    def __init__(self, pages: Iterator[MemberPage], clock: Callable[[], datetime], campaign_id: str) -> None:
        self._pages, self._clock, self._campaign_id = pages, clock, campaign_id
        self._queue: queue.Queue[tuple[Any, datetime | None, BaseException | None]] = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fetch, name="patronlock-sync-fetch", daemon=True)
        self._thread.start()

    def _put(self, item: tuple[Any, datetime | None, BaseException | None]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _fetch(self) -> None:
        while not self._stop.is_set():
            observed_at = self._clock()  # the state is at least this new: it was asked for after this moment
            try:
                page = next(self._pages, self._END)
            except BaseException as exc:
                self._put((None, None, exc))
                return
            if page is self._END:
                self._put((self._END, None, None))
                return
            assert isinstance(page, MemberPage)
            for member in page.members:
                if member.campaign_id is None:
                    # The campaign's members listing does not repeat the campaign on each member. These snapshots
                    # were parsed a moment ago and nobody else holds them: fill it in place (a replace() per member
                    # costs more than the rest of a no-op apply).
                    _set_attr(member, "campaign_id", self._campaign_id)
            if not self._put((page, observed_at, None)):
                return

    def next(self) -> tuple[MemberPage | None, datetime]:
        """The next page and when it was asked for; ``(None, …)`` after the last; raises what fetching raised."""
        item, observed_at, error = self._queue.get()
        if error is not None:
            raise error
        if item is self._END:
            return None, self._clock()
        assert observed_at is not None
        return item, observed_at

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def match_emails(state: PatronLockState, member_ids: list[str], *, run_id: int | None = None) -> list[tuple[str, str]]:
    """Link the unlinked patrons among ``member_ids`` whose e-mail Patreon verified to the local users the host's
    :meth:`~flask_patronlock.PatronLock.verified_users_by_email` returns for that address (compared
    case-insensitively): only users whose address the host itself verified. Nothing else (``user_by_email``, the
    deprecated ``users_by_email``) ever makes a run link. The links are ``origin="email"``: the patron's access, never
    a way to log in with Patreon. Returns the links made."""
    finder = state.declarations.verified_users_by_email
    if finder is None:
        return []
    candidates = state.store.unlinked_verified_emails(member_ids)
    if not candidates:
        return []
    by_email: dict[str, list[str]] = {}
    for patreon_user_id, email in candidates.items():
        by_email.setdefault(email.strip().lower(), []).append(patreon_user_id)
    found = finder(sorted(by_email))
    links: dict[str, str] = {}
    for email, user_id in found.items():
        owners = by_email.get(email.strip().lower(), [])
        if user_id is not None and len(owners) == 1:  # two Patreon users with one address: link neither
            links[owners[0]] = str(user_id)
    if not links:
        return []
    return state.store.link_accounts(links, source="sync", run_id=run_id, how="email")


#: RunResult fields stored as patronlock_sync_runs columns of the same name (besides id, started_at and detail).
_RUN_COLUMNS = (
    "status", "complete", "reason", "pages", "members_seen", "total_reported", "changed", "revoked", "held",
    "finished_at",
)


def total_slack(app: Flask | None, total: int) -> int:
    """How far a complete run's count of members may be from Patreon's ``total``:
    ``max(PATRONLOCK_SYNC_TOTAL_SLACK, PATRONLOCK_SYNC_TOTAL_SLACK_PERCENT % of total)`` (see docs/sync.rst)."""
    cfg = get_state(app).app.config
    absolute = int(cfg["PATRONLOCK_SYNC_TOTAL_SLACK"])
    percent = float(cfg["PATRONLOCK_SYNC_TOTAL_SLACK_PERCENT"])
    return max(absolute, int(total * percent / 100))


def _streak(state: PatronLockState) -> tuple[int, RunResult | None]:
    runs = state.tables.sync_runs
    with state.store.engine.connect() as conn:
        last_id = conn.execute(select(func.max(runs.c.id)).where(runs.c.complete.is_(True))).scalar()
        stmt = select(func.count()).where(runs.c.status != "running", runs.c.complete.is_(False))
        if last_id is not None:
            stmt = stmt.where(runs.c.id > last_id)
        streak = int(conn.execute(stmt).scalar_one())
        row = conn.execute(select(runs).where(runs.c.id == last_id)).mappings().first() if last_id else None
    return streak, _row_to_result(row) if row is not None else None


def incomplete_streak(app: Flask | None = None) -> tuple[int, RunResult | None]:
    """How many runs in a row, up to the latest finished one, were not complete (incomplete or failed), and the
    latest complete run (``None`` if there never was one). A run still running does not count either way."""
    return _streak(get_state(app))


def _row_to_result(row: Mapping[Any, Any]) -> RunResult:
    values = {name: row[name] for name in _RUN_COLUMNS}
    values["complete"] = bool(values["complete"])
    return RunResult(
        run_id=int(row["id"]), started_at=row["started_at"], detail=dict(row["detail"] or {}), **values
    )


def refresh_tiers(
    app: Flask | None = None, *, client: PatreonClient | None = None, campaign_id: str | None = None
) -> bool:
    """Read the campaign's tiers from Patreon and store them (one request), so locks can name tiers at once: what a
    run does when the catalogue is stale, for a site that wants its tiers now (at start-up, after setup).

    :param client: the Patreon client (default: the creator's, from the configuration).
    :param campaign_id: default: the configured campaign.
    :returns: whether the stored catalogue changed.
    :raises ConfigurationError: the campaign or the creator's token is not configured.
    :raises PatreonError: Patreon could not be read.
    """
    state = get_state(app)
    campaign_id = campaign_id or state.campaign_id("reading the campaign's tiers")
    own_client = client is None
    if client is None:
        client = state.creator_client("reading the campaign's tiers")
    try:
        campaign = client.campaign(campaign_id)
    finally:
        if own_client:
            client.close()
    return state.store.replace_tiers(campaign_id, campaign.tiers)


def list_runs(app: Flask | None = None, *, limit: int = 20, status: str | None = None) -> list[RunResult]:
    """The most recent runs, newest first (``status="held"`` for the ones waiting for a decision)."""
    state = get_state(app)
    runs = state.tables.sync_runs
    stmt = select(runs).order_by(runs.c.id.desc()).limit(limit)
    if status is not None:
        stmt = stmt.where(runs.c.status == status)
    with state.store.engine.connect() as conn:
        return [_row_to_result(row) for row in conn.execute(stmt).mappings()]


def last_run(app: Flask | None = None) -> RunResult | None:
    """The most recent run, if any."""
    runs = list_runs(app, limit=1)
    return runs[0] if runs else None


def get_run(app: Flask | None, run_id: int) -> RunResult | None:
    """One run by id (``None`` for an id no run can have)."""
    state = get_state(app)
    if not is_row_id(run_id):
        return None
    runs = state.tables.sync_runs
    with state.store.engine.connect() as conn:
        row = conn.execute(select(runs).where(runs.c.id == run_id)).mappings().first()
    return _row_to_result(row) if row else None


def result_dict(result: RunResult) -> dict[str, Any]:
    """``result`` as JSON-ready values (for Celery task results and logs)."""
    out = asdict(result)
    for key in ("started_at", "finished_at"):
        if out[key] is not None:
            out[key] = out[key].isoformat()
    return out
