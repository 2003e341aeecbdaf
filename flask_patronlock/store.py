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

The store is split along its seams: what a snapshot changes is :mod:`flask_patronlock.transitions` (pure), the SQL
helpers are :mod:`flask_patronlock.dbutil`, a run's revocations and their approval :mod:`flask_patronlock.runs`, the
tier catalogue and settings version :mod:`flask_patronlock.catalogue`. :class:`Store` keeps apply, the reads, and
a method for each of those (its public face), which delegates; :meth:`Store.load_for_update`,
:meth:`Store.apply_locked`, :meth:`Store.write_transitions` and :meth:`Store.send` are the write steps
:mod:`flask_patronlock.runs` shares.

Over 600 lines: one class, the write path and the reads that share its row layout and cached statements.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
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
from sqlalchemy.engine import Dialect

from . import firstseen, runs, signals
from .catalogue import Catalogue
from .dbutil import CHUNK, executemany, executemany_sqlite, json_ready, json_rows, rows_from_json, transaction
from .models import Tables, ids_chunk, ids_value, in_ids
from .patreon.jsonapi import is_patreon_id
from .patreon.types import MemberSnapshot, TierSnapshot
from .patron import Patron
from .policy import PolicySettings
from .transitions import (
    COMPARED,
    EVENT_COLUMNS,
    INSERT_COLUMNS,
    PATRON_COLUMNS,
    PATRON_FIELDS,
    SOURCES,
    AccessContext,
    ApplyResult,
    changes_dict,
    columns_of,
    compared_of,
    diff,
    effective_entitlement,
    older_than_stored,
    optional_agree,
    transition,
)

log = logging.getLogger("flask_patronlock.store")


assert PATRON_FIELDS[-1] == "local_user_id"  # load_for_update builds Patrons positionally


def row_to_patron(row: Mapping[Any, Any], local_user_id: str | None = None) -> Patron:
    """A :class:`Patron` from a ``patronlock_patrons`` row mapping."""
    values = {name: row[name] for name in PATRON_FIELDS if name in row}
    values["local_user_id"] = local_user_id if local_user_id is not None else row.get("local_user_id")
    return Patron(**values)


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
    :param settings_changed: called after a settings-version bump of the store's own (a tier refresh) committed, so
        this process's settings cache re-reads at once instead of after its check interval.
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
        settings_changed: Callable[[], None] | None = None,
    ) -> None:
        self._engine = engine
        #: returns the creator's current policy settings; :attr:`Patron.access` is evaluated under them.
        self.policy_settings = policy_settings
        self._statements: dict[Any, Any] = {}  # selects built once per store (building costs more than running)
        self.tables = tables
        self.sender = sender
        self._strict_signals = strict_signals
        self.clock = clock
        #: the tier catalogue and the settings version, on the same engine and (read through) the same clock.
        self.catalogue = Catalogue(engine, tables, clock=lambda: self.clock(), settings_changed=settings_changed)

    #: create members with no stored row through :func:`flask_patronlock.firstseen.create` (tests turn it off to
    #: compare it with the general transition, which creates them one by one).
    _first_seen_in_bulk = True

    @property
    def engine(self) -> Engine:
        """The engine in use."""
        return self._engine()

    def transaction(self) -> AbstractContextManager[Connection]:
        """A write transaction that takes SQLite's write lock up front (see
        :func:`~flask_patronlock.dbutil.transaction`)."""
        return transaction(self.engine)

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
        read_first: bool = False,
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
        :param read_first: with ``load_unchanged=False``, first ask which members are settled in a plain read,
            without the write lock; when every one is, open no write transaction at all (nothing to write, nothing to
            commit) and do not call ``also``. Otherwise the snapshots are applied as without it (settled again under
            the lock). A sync run asks for this after a page that changed nothing: an unchanged run then takes no
            write lock and makes no commit (a disk flush each) for its pages. Answering from the read is what the
            locked path would answer at that moment: a member found settled is written nothing either way.
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
        if read_first and not load_unchanged:
            access = AccessContext(self.policy_settings(), self.clock(), defer_revocations)
            with self.engine.connect() as conn:
                settled = self._settled(conn, snapshots, access, observed_at)
            if len(settled) == len(snapshots):
                return [ApplyResult(member_id, "unchanged", None, None) for member_id in ids]
        with self.transaction() as conn:
            results = self.apply_locked(
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
        self.send(results, source=source, run_id=run_id)
        return results

    def apply_locked(
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
        """:meth:`apply_many` inside ``conn``, a :meth:`transaction` the caller holds (a run's revocation phase applies
        several batches and writes its own row in one); the caller sends the signals (:meth:`send`) after the
        commit."""
        access = AccessContext(self.policy_settings(), self.clock(), defer_revocations)
        results: dict[str, ApplyResult] = {}
        snapshots_left = list(snapshots)
        if not load_unchanged:
            settled = self._settled(conn, snapshots, access, observed_at)
            if settled:
                for member_id in settled:
                    results[member_id] = ApplyResult(member_id, "unchanged", None, None)
                snapshots_left = [s for s in snapshots if s.member_id not in settled]
        stored = self.load_for_update(conn, [s.member_id for s in snapshots_left])
        new_user_ids = {
            s.user_id for s in snapshots_left if s.member_id not in stored and s.user_id is not None
        }
        links = self._local_users(conn, new_user_ids) if new_user_ids else {}

        # Members with no stored row are created in bulk, straight from their snapshots (a first run: every member).
        created: Mapping[str, ApplyResult] = {}
        fresh = [s for s in snapshots_left if s.member_id not in stored] if self._first_seen_in_bulk else []
        if fresh:
            created, taken = firstseen.create(
                self, conn, fresh, links, access=access, observed_at=observed_at, source=source, run_id=run_id
            )
            results.update(created)
            if taken:  # inserted by another transaction after we looked (PostgreSQL): applied to their rows below
                stored.update(self.load_for_update(conn, [s.member_id for s in taken]))
            snapshots_left = [s for s in snapshots_left if s.member_id not in created]

        creates: list[Patron] = []
        for snapshot in snapshots_left:
            previous = stored.get(snapshot.member_id)
            result = transition(snapshot, previous, links, observed_at=observed_at, source=source, access=access)
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
                stored_now = self.load_for_update(conn, raced)
                for snapshot in snapshots_left:
                    if snapshot.member_id in stored_now:
                        results[snapshot.member_id] = transition(
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
        executemany(
            conn,
            self.tables.events,
            EVENT_COLUMNS,
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

    def load_for_update(self, conn: Connection, member_ids: Sequence[str]) -> dict[str, Patron]:
        """The stored patrons among ``member_ids``, their rows locked until ``conn`` commits (PostgreSQL; on SQLite
        the :meth:`transaction` holds the write lock)."""
        dialect = conn.dialect.name
        stmt = self._statements.get(("load_for_update", dialect))
        if stmt is None:
            p, a = self.tables.patrons, self.tables.accounts
            # Columns in Patron's field order, so each row becomes a Patron positionally (a sync loads 1,000 a page).
            columns = [p.c[name] for name in PATRON_FIELDS[:-1]] + [a.c.user_id.label("local_user_id")]
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
        size = ids_chunk(dialect)
        for start in range(0, len(member_ids), size):
            chunk = sorted(member_ids[start : start + size])  # one lock order for every writer: no deadlocks
            # fetchall: one call, not one per row
            for row in conn.execute(stmt, {"ids": ids_value(chunk, dialect)}).all():
                out[row[0]] = Patron(*row)
        return out

    def _settled(
        self, conn: Connection, snapshots: Sequence[MemberSnapshot], access: AccessContext, observed_at: datetime
    ) -> set[str]:
        """The members among ``snapshots`` for whom applying would change nothing, found without reading whole rows:
        what :func:`~flask_patronlock.transitions.transition` decides from
        :func:`~flask_patronlock.transitions.same_as_stored` and
        :meth:`~flask_patronlock.transitions.AccessContext.unchanged`, asked of
        the database. A member is settled when its row

        * is not newer than ``observed_at`` (else the snapshot is stale, which ``transition`` reports),
        * has no missing mark or held revocation for being seen to clear,
        * has its access evaluated under the current policy settings (``access_policy``) and not due to change by
          time (``access_until`` unset or after now: :func:`~flask_patronlock.policy.entitlement` only ever ends an
          entitlement as time passes, at ``until``),

        and its Patreon fields equal the snapshot's (compared here, on just those columns).
        """
        by_id = {s.member_id: s for s in snapshots}
        dialect = conn.dialect.name
        stmt, processors = self._settled_statement(conn.dialect)
        width = len(COMPARED)
        settled: set[str] = set()
        ids, size = list(by_id), ids_chunk(dialect)
        for start in range(0, len(ids), size):
            chunk = ids[start : start + size]
            ids_in = ids_value(chunk, dialect)
            params = {"ids": ids_in, "observed_at": observed_at, "key": access.key, "now": access.now}
            rows: Iterable[Sequence[Any]]
            if dialect == "sqlite":
                decoded = rows_from_json(conn.execute(stmt, params).scalar_one())
                for raw in decoded:
                    for index, process in processors:
                        raw[index] = process(raw[index])
                rows = decoded
            else:
                rows = conn.execute(stmt, params).all()
            for row in rows:
                values = tuple(row)
                snapshot = by_id[values[width]]
                if compared_of(snapshot) == values[:width] and optional_agree(snapshot, *values[width + 1 :]):
                    settled.add(snapshot.member_id)
        return settled

    def _settled_statement(self, engine_dialect: Dialect) -> tuple[Any, list[tuple[int, Callable[[Any], Any]]]]:
        """The select of :meth:`_settled` and, on SQLite, the result processors of its columns by position.

        On SQLite the rows come back as ONE value (:func:`~flask_patronlock.dbutil.json_rows`: one step for the whole
        chunk, so the query runs beside a run's parsing of its next page), whose columns are converted here as
        SQLAlchemy would have."""
        # Built once: constructing the select costs more than a page's worth of comparing. Booleans come back as
        # SQLite's 0/1 (equal to False/True in a comparison) instead of through a processor each.
        dialect = engine_dialect.name
        cached = self._statements.get(("settled", dialect))
        if cached is None:
            p = self.tables.patrons
            columns = [
                type_coerce(p.c[name], Integer) if isinstance(p.c[name].type, Boolean) else p.c[name]
                for name in (*COMPARED, "member_id", "campaign_id", "patreon_user_id", "email", "email_verified")
            ]
            where = (
                in_ids(p.c.member_id, dialect),
                p.c.observed_at <= bindparam("observed_at", type_=p.c.observed_at.type),
                p.c.missing_since.is_(None),
                p.c.missing_runs == 0,
                p.c.held_run_id.is_(None),
                p.c.access.is_not(None),
                p.c.access_policy == bindparam("key", type_=p.c.access_policy.type),
                or_(p.c.access_until.is_(None), p.c.access_until > bindparam("now", type_=p.c.access_until.type)),
            )
            processors: list[tuple[int, Callable[[Any], Any]]] = []
            if dialect == "sqlite":
                for index, column in enumerate(columns):
                    process = column.type._cached_result_processor(engine_dialect, None)
                    if process is not None:
                        processors.append((index, process))
                stmt = select(json_rows(*columns)).where(*where)
            else:
                stmt = select(*columns).where(*where)
            cached = self._statements[("settled", dialect)] = (stmt, processors)
        return cached

    def _note_evaluated(self, conn: Connection, results: Iterable[ApplyResult], access: AccessContext) -> None:
        """Record that the unchanged members among ``results`` had their access evaluated under ``access``'s settings
        (a silent write: not a change of state, so no audit row or signal), where it was another policy's."""
        stale = [
            r.member_id for r in results
            if r.outcome == "unchanged" and r.previous is not None and r.previous.access_policy != access.key
        ]
        p = self.tables.patrons
        for start in range(0, len(stale), CHUNK):
            conn.execute(
                update(p).where(p.c.member_id.in_(stale[start : start + CHUNK])).values(access_policy=access.key)
            )

    def _local_users(self, conn: Connection, patreon_user_ids: Iterable[str]) -> dict[str, str]:
        dialect = conn.dialect.name
        stmt = self._statements.get(("local_users", dialect))
        if stmt is None:
            a = self.tables.accounts
            stmt = select(a.c.patreon_user_id, a.c.user_id).where(in_ids(a.c.patreon_user_id, dialect))
            self._statements[("local_users", dialect)] = stmt
        ids, size = list(patreon_user_ids), ids_chunk(dialect)
        out: dict[str, str] = {}
        for start in range(0, len(ids), size):
            rows = conn.execute(stmt, {"ids": ids_value(ids[start : start + size], dialect)})
            out.update({patreon_user_id: user_id for patreon_user_id, user_id in rows})
        return out

    def _row(self, patron: Patron, now: datetime) -> dict[str, Any]:
        row = {name: getattr(patron, name) for name in PATRON_COLUMNS}
        row["updated_at"] = now
        return row

    def _insert_absent(self, conn: Connection, patrons: list[Patron]) -> set[str]:
        """Insert rows that do not exist yet; returns the member ids this statement inserted."""
        table, now = self.tables.patrons, self.clock()
        dialect = conn.dialect.name
        if dialect == "sqlite":
            # SQLite holds the write lock (BEGIN IMMEDIATE): nothing can have raced us, and executemany without
            # RETURNING is the fastest path for a first sync of 100,000 members.
            executemany_sqlite(
                conn,
                table,
                INSERT_COLUMNS,
                [(*columns_of(p), now) for p in patrons],
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
        columns = [c for c in PATRON_COLUMNS if c != "member_id"]
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

    def send(self, results: Iterable[ApplyResult], *, source: str, run_id: int | None) -> None:
        """Send the signals of the changed ``results``: ``patron-changed``, then each inferred event's (after the
        commit that wrote them)."""
        strict = self._strict_signals()
        for result in results:
            if not result.changed:
                continue
            common = {"patron": result.patron, "previous": result.previous, "source": source, "run_id": run_id}
            signals.send_action(
                signals.patron_changed,
                self.sender,
                strict=strict,
                changes=changes_dict(result.changes),
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

    # -- patron state besides a snapshot: missing marks, held revocations, access by time, e-mail links ---------------
    #
    # Each method below (and each of flask_patronlock.runs) is patron state and, like apply(), writes in one
    # transaction with the members locked, an audit row per changed patron, and signals only after the commit.

    def write_transitions(
        self,
        conn: Connection,
        pairs: Iterable[tuple[Patron, Patron]],
        access: AccessContext,
        *,
        kind: str,
        source: str,
        run_id: int | None,
        detail: Mapping[str, Any] | None = None,
    ) -> list[ApplyResult]:
        """Write each ``(previous, current)`` pair that changed (access re-evaluated), with an audit row of ``kind``,
        inside ``conn``; the caller sends the signals (:meth:`send`) after the commit."""
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
            stored = self.load_for_update(conn, [snapshot.member_id]).get(snapshot.member_id)
            if stored is not None and older_than_stored(snapshot, stored):
                return ApplyResult(snapshot.member_id, "stale", stored, stored)
            results = self.apply_locked(
                conn,
                [snapshot],
                source=source,
                observed_at=observed_at.astimezone(UTC),
                run_id=None,
                defer_revocations=defer_revocations,
            )
        self.send(results, source=source, run_id=None)
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
        access = AccessContext(self.policy_settings(), now or self.clock())
        out: set[str] = set()
        for start in range(0, len(member_ids), CHUNK):
            with self.engine.connect() as conn:
                for patron in self._load(conn, member_ids[start : start + CHUNK]).values():
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
            on_sqlite = conn.dialect.name == "sqlite"
            columns = (p.c.member_id, p.c.patron_status)
            for start in range(0, len(member_ids), CHUNK):
                # filtered here, not in SQL: with a condition on patron_status SQLite's planner walks the status index
                # (every active patron) instead of looking the few ids up by key, 40 % of an unchanged run's time
                chunk = member_ids[start : start + CHUNK]
                rows: Iterable[Sequence[Any]]
                if on_sqlite:  # one step (see dbutil.json_rows)
                    stmt = select(json_rows(*columns)).where(p.c.member_id.in_(chunk))
                    rows = rows_from_json(conn.execute(stmt).scalar_one())
                else:
                    rows = conn.execute(select(*columns).where(p.c.member_id.in_(chunk)))
                out.update(member_id for member_id, status in rows if status in pledging)
        return out

    def _load(self, conn: Connection, member_ids: Sequence[str], *, for_update: bool = False) -> dict[str, Patron]:
        if for_update:
            return self.load_for_update(conn, member_ids)
        p, a = self.tables.patrons, self.tables.accounts
        out: dict[str, Patron] = {}
        for start in range(0, len(member_ids), CHUNK):
            stmt = (
                select(p, a.c.user_id.label("local_user_id"))
                .outerjoin(a, a.c.patreon_user_id == p.c.patreon_user_id)
                .where(p.c.member_id.in_(list(member_ids[start : start + CHUNK])))
            )
            for row in conn.execute(stmt).mappings():
                out[row["member_id"]] = row_to_patron(row)
        return out

    # -- reconcile runs' revocations: written in flask_patronlock.runs, called as the store's methods -----------------

    mark_missing = runs.mark_missing
    apply_run_revocations = runs.apply_run_revocations
    hold_revocations = runs.hold_revocations
    held_revocations = runs.held_revocations
    approve_run = runs.approve_run
    reject_run = runs.reject_run

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
        access = AccessContext(self.policy_settings(), now)
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
        for start in range(0, len(member_ids), CHUNK):
            with self.transaction() as conn:
                stored = self.load_for_update(conn, member_ids[start : start + CHUNK])
                chunk = self.write_transitions(
                    conn, [(patron, patron) for patron in stored.values()], access,
                    kind="access_changed", source="clock", run_id=None,
                )
            self.send(chunk, source="clock", run_id=None)
            results += [r for r in chunk if r.changed]
        return results

    def unlinked_verified_emails(self, member_ids: Sequence[str]) -> dict[str, str]:
        """``{patreon_user_id: email}`` of those members whose e-mail Patreon verified and who are not linked to a
        local user yet."""
        p, a = self.tables.patrons, self.tables.accounts
        out: dict[str, str] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(member_ids), CHUNK):
                stmt = (
                    select(p.c.patreon_user_id, p.c.email)
                    .outerjoin(a, a.c.patreon_user_id == p.c.patreon_user_id)
                    .where(
                        p.c.member_id.in_(list(member_ids[start : start + CHUNK])),
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

    # -- the page-view read ------------------------------------------------------------------------------------------

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
        columns = [p.c[name] for name in PATRON_FIELDS if name != "local_user_id"]
        return (
            select(*columns, a.c.user_id.label("local_user_id"))
            .select_from(a)
            .outerjoin(p, on)
            .where(a.c.user_id == bindparam("pl_user_id"))
            .limit(1)
        )

    # -- the tier catalogue and the settings version (flask_patronlock.catalogue) ------------------------------------

    def settings_version(self) -> int:
        """See :meth:`Catalogue.settings_version <flask_patronlock.catalogue.Catalogue.settings_version>`."""
        return self.catalogue.settings_version()

    def bump_settings_version(self, conn: Connection, *, by: str | None = None) -> int:
        """See :meth:`Catalogue.bump_settings_version <flask_patronlock.catalogue.Catalogue.bump_settings_version>`."""
        return self.catalogue.bump_settings_version(conn, by=by)

    def tiers(self, campaign_id: str | None = None) -> list[TierSnapshot]:
        """See :meth:`Catalogue.tiers <flask_patronlock.catalogue.Catalogue.tiers>`."""
        return self.catalogue.tiers(campaign_id)

    def replace_tiers(self, campaign_id: str, tiers: Sequence[TierSnapshot]) -> bool:
        """See :meth:`Catalogue.replace_tiers <flask_patronlock.catalogue.Catalogue.replace_tiers>`."""
        return self.catalogue.replace_tiers(campaign_id, tiers)

    def tiers_checked(self, campaign_id: str) -> tuple[datetime | None, set[str]]:
        """See :meth:`Catalogue.tiers_checked <flask_patronlock.catalogue.Catalogue.tiers_checked>`."""
        return self.catalogue.tiers_checked(campaign_id)
