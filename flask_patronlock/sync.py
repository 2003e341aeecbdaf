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
   cursor or member repeated, and as many members as Patreon's ``total``. Anything else makes it **incomplete**: the
   updates and grants stay, the deferred revocations are dropped (counted in ``detail``), nobody is marked missing,
   and ``reason`` says why;
4. after a complete run, stored members the run did not see are *missing*. Together with the deferred revocations
   they are what the run would revoke (an entitled patron's first missing mark counts too: it starts the countdown).
   If that trips the breaker (:meth:`~flask_patronlock.policy.PolicySettings.breaker_trips` against the patrons
   entitled now), they are **held** for the creator (``flask patronlock sync approve RUN`` / ``reject RUN``), the
   reason says what changed on which pages (logged at WARNING) and the ``revocations-held`` signal fires; otherwise
   the deferred snapshots are applied and the missing marks made;
5. refreshes the campaign's tier catalogue (one more request) only when the stored one is older than
   ``PATRONLOCK_TIERS_MAX_AGE`` seconds, was never read, or a page named a tier id it does not know. This comes after
   the pages and the revocation decisions: access never depends on the catalogue (entitlement reads each member's own
   amounts and tier ids), so a run over a fresh catalogue makes only its member page requests;
6. re-evaluates access that time alone changed, links patrons to local users by e-mail when matching is on and the
   host vouches for the local address (:func:`match_emails`), finishes the run row, releases the lease and sends
   ``sync-finished``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from flask import Flask
from sqlalchemy import insert, select, update

from . import signals
from .errors import PatronLockError
from .extension import PatronLockState, get_state
from .leases import Lease
from .patreon.errors import PatreonError, SchemaDrift
from .patreon.types import MemberPage, MemberSnapshot

if TYPE_CHECKING:
    from .patreon.client import PatreonClient

__all__ = ["SYNC_LEASE", "AlreadyRunning", "Progress", "RunResult", "last_run", "list_runs", "run_sync"]

log = logging.getLogger("flask_patronlock.sync")

#: the name of the lease that makes runs one at a time.
SYNC_LEASE = "sync"


class AlreadyRunning(PatronLockError):
    """Another run holds the sync lease."""


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
    if not lease.acquire():
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
        try:
            return _Run(state, campaign_id, client, lease, trigger, progress).run()
        finally:
            if own_client:
                client.close()
    finally:
        lease.release()


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
        runs = self.store.tables.sync_runs
        with self.store.transaction() as conn:
            # Whoever holds the lease is the only run alive: a row still "running" is one whose process stopped
            # (killed, a crash, a deploy) before it could say how it ended.
            conn.execute(
                update(runs)
                .where(runs.c.status == "running")
                .values(
                    status="failed",
                    complete=False,
                    reason="interrupted: the process running it stopped before it finished",
                    finished_at=self.started_at,
                )
            )
            run_id = conn.execute(
                insert(runs).values(trigger=trigger[:16], status="running", started_at=self.started_at)
            ).inserted_primary_key
        assert run_id is not None
        self.result = RunResult(run_id=int(run_id[0]), status="running", started_at=self.started_at)
        self.seen: set[str] = set()
        self.deferred: list[tuple[MemberSnapshot, datetime]] = []
        #: kind of loss (store.LOSSES) -> the page number of each deferred snapshot with it
        self.losses: dict[str, list[int]] = {}
        self.counts: dict[str, int] = {"created": 0, "updated": 0, "unchanged": 0, "stale": 0, "deferred": 0}
        self.last_renew = time.monotonic()
        self.tiers_checked_at, self.known_tiers = self.store.tiers_checked(campaign_id)
        self.unknown_tiers: set[str] = set()

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
            reason = self._read_pages()
            if reason is None:
                reason = self._check_complete()
            if reason is None:
                self._finish_complete()
            else:
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
        except BaseException as exc:
            result.status, result.complete = "failed", False
            result.reason = f"{type(exc).__name__}: {exc}"[:500]
            self._save()
            raise
        self._save()
        signals.send_action(
            signals.sync_finished, self.state.app, strict=self.store._strict_signals(), run=result
        )
        log.info("%s", result.summary())
        return result

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
            changed = refresh_tiers(self.state.app, client=self.client, campaign_id=self.campaign_id)
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
            members = [m for m in page.members if m.campaign_id in (None, self.campaign_id)]
            unpledged = self._unpledged(members)
            if unpledged is not None:
                reason = f"page {number}: SchemaDrift: {unpledged}"[:500]
                self._drifted(reason)
                return reason
            self._apply_page(members, observed_at, number)
            result.pages += 1
            result.members_seen = len(self.seen)
            if self.progress is not None:
                self.progress(Progress(result.run_id, result.pages, result.members_seen, result.total_reported))
            self._save_progress()
            if not self._renew():
                return "the sync lease was lost (the run took longer than PATRONLOCK_SYNC_LEASE_SECONDS per page)"

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
        fresh = [m for m in members if m.member_id not in self.seen]  # the client raises on repeats; be safe anyway
        self.seen.update(m.member_id for m in fresh)
        if not fresh:
            return
        known = self.known_tiers
        for m in fresh:
            for tier_id in m.entitled_tier_ids:
                if tier_id not in known:
                    self.unknown_tiers.add(tier_id)
        outcomes = self.store.apply_many(
            fresh,
            source="sync",
            observed_at=observed_at,
            run_id=self.result.run_id,
            defer_revocations=True,
            load_unchanged=False,  # nearly every member of a run is unchanged: found without reading whole rows
        )
        for snapshot, outcome in zip(fresh, outcomes, strict=True):
            self.counts[outcome.outcome] += 1
            if outcome.outcome == "deferred":
                self.deferred.append((snapshot, observed_at))
                for kind in outcome.losses:
                    self.losses.setdefault(kind, []).append(number)
            elif outcome.changed:
                self.result.changed += 1

    def _renew(self) -> bool:
        if time.monotonic() - self.last_renew < 5:
            return True
        self.last_renew = time.monotonic()
        return self.lease.renew()

    def _check_complete(self) -> str | None:
        total = self.result.total_reported
        if total is None:
            return "Patreon did not report a member total, so the run cannot know it saw everyone"
        if len(self.seen) != total:
            return f"saw {len(self.seen)} member(s) but Patreon reported a total of {total}"
        return None

    def _finish_complete(self) -> None:
        result, store = self.result, self.store
        result.complete = True
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
            result.status = "held"
            result.reason = (
                f"{self._what_changed(len(entitled_unseen))}: the run would take something away from {revoking:,} of "
                f"{total:,} entitled patron(s), more than the breaker allows (max({settings.breaker_min_patrons}, "
                f"{settings.breaker_fraction:.0%})); approve or reject it"
            )
            log.warning("sync run %d is HELD: %s", result.run_id, result.reason)
            store.hold_revocations(
                result.run_id,
                self.deferred,
                sorted(entitled_unseen),
                total=total,
                missed_at=_now(self.state),
                reason=result.reason,
                losses=losses,
            )
            result.held = revoking
            others = [m for m in unseen if m not in entitled_unseen]
            if others:
                marked = store.mark_missing(result.run_id, others, seen_before=self.started_at)
                result.detail["missing_marked"] = sum(1 for r in marked if r.changed)
            return
        result.status = "complete"
        applied = []
        by_time: dict[datetime, list[MemberSnapshot]] = {}
        for snapshot, observed_at in self.deferred:
            by_time.setdefault(observed_at, []).append(snapshot)
        for observed_at, snaps in sorted(by_time.items()):
            applied += store.apply_many(snaps, source="sync", observed_at=observed_at, run_id=result.run_id)
        marked = store.mark_missing(result.run_id, unseen, seen_before=self.started_at) if unseen else []
        result.detail["missing_marked"] = sum(1 for r in marked if r.changed)
        for r in [*applied, *marked]:
            if r.changed:
                result.changed += 1
            if "access_revoked" in r.events:
                result.revoked += 1

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
            refreshed = store.refresh_access()
            result.detail["access_refreshed"] = len(refreshed)
            result.revoked += sum(1 for r in refreshed if "access_revoked" in r.events)
        if self.state.app.config["PATRONLOCK_SYNC_MATCH_EMAILS"] and self.seen:
            if self.state.extension.verified_email_finder() is None:
                log.warning(
                    "PATRONLOCK_SYNC_MATCH_EMAILS is on but no @patronlock.verified_users_by_email is registered: "
                    "sync run %d linked nobody by e-mail",
                    result.run_id,
                )
            result.detail["linked"] = len(match_emails(self.state, sorted(self.seen), run_id=result.run_id))

    def _save_progress(self) -> None:
        """Record how far the run got on its row after each page (the settings page shows it while it runs)."""
        result, runs = self.result, self.store.tables.sync_runs
        with self.store.engine.begin() as conn:
            conn.execute(
                update(runs)
                .where(runs.c.id == result.run_id)
                .values(pages=result.pages, members_seen=result.members_seen, total_reported=result.total_reported)
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
    finder = state.extension.verified_email_finder()
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
    """One run by id."""
    state = get_state(app)
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
