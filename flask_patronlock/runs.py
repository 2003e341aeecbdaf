"""Reconcile runs' revocations: missing marks, the breaker's held revocations, and the creator's decision on them.

Each function here is patron state and, like :meth:`Store.apply <flask_patronlock.store.Store.apply>`, writes through
the store in one transaction with the members locked, an audit row per changed patron, and signals only after the
commit. :class:`~flask_patronlock.store.Store` keeps them as methods (``store.approve_run(...)``), which call these.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, insert, select, update

from . import signals
from .dbutil import CHUNK, json_ready
from .models import is_row_id
from .patreon.types import MemberSnapshot, UserSnapshot
from .transitions import AccessContext, ApplyResult

if TYPE_CHECKING:  # the store calls these with itself; only its type is needed here
    from .store import Store


def mark_missing(
    store: Store, run_id: int, member_ids: Sequence[str], *, seen_before: datetime, now: datetime | None = None
) -> list[ApplyResult]:
    """A complete run did not see ``member_ids``: count one more missed run for each (up to the policy's
    ``missing_runs``) and start the missing clock (``missing_since``); access follows the policy.

    A member whose stored state was observed after ``seen_before`` (the run's start) is skipped: something (a
    webhook) saw them during the run, so they are not missing.
    """
    with store.transaction() as conn:
        results = _mark_missing_locked(store, conn, run_id, member_ids, seen_before=seen_before, now=now)
    store.send(results, source="sync", run_id=run_id)
    return results


def _mark_missing_locked(
    store: Store,
    conn: Connection,
    run_id: int,
    member_ids: Sequence[str],
    *,
    seen_before: datetime,
    now: datetime | None,
) -> list[ApplyResult]:
    now = now or store.clock()
    settings = store.policy_settings()
    access = AccessContext(settings, now)
    stored = store.load_for_update(conn, list(member_ids))
    pairs = []
    for patron in stored.values():
        if patron.observed_at is not None and patron.observed_at > seen_before:
            continue
        runs = patron.missing_runs + 1 if patron.missing_runs < settings.missing_runs else patron.missing_runs
        pairs.append((patron, patron.replace(missing_since=patron.missing_since or now, missing_runs=runs)))
    return store.write_transitions(conn, pairs, access, kind="patron_missing", source="sync", run_id=run_id)


def apply_run_revocations(
    store: Store,
    run_id: int,
    snapshots: Sequence[tuple[MemberSnapshot, datetime]],
    missing_ids: Sequence[str],
    *,
    seen_before: datetime,
    finish: Callable[[Connection, list[ApplyResult]], None],
) -> list[ApplyResult]:
    """A complete run's revocation phase in **one** transaction: apply the snapshots it set aside (each with its
    ``observed_at``, oldest first, as :meth:`Store.apply_many <flask_patronlock.store.Store.apply_many>` would),
    mark ``missing_ids`` missing (as :func:`mark_missing`), then call ``finish(conn, results)``, where the run writes
    its own row. The revocations, their audit rows and the run row that counts them commit together or not at all;
    signals are sent after. ``finish`` may raise to roll everything back (a run that finds its row already final).
    """
    results: list[ApplyResult] = []
    by_time: dict[datetime, list[MemberSnapshot]] = {}
    for snapshot, observed_at in snapshots:
        by_time.setdefault(observed_at.astimezone(UTC), []).append(snapshot)
    with store.transaction() as conn:
        for observed_at, snaps in sorted(by_time.items()):
            results += store.apply_locked(conn, snaps, source="sync", observed_at=observed_at, run_id=run_id)
        if missing_ids:
            results += _mark_missing_locked(store, conn, run_id, missing_ids, seen_before=seen_before, now=None)
        finish(conn, results)
    store.send(results, source="sync", run_id=run_id)
    return results


def hold_revocations(
    store: Store,
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
    missed_at = missed_at or store.clock()
    access = AccessContext(store.policy_settings(), store.clock())
    held = store.tables.held_revocations
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
    with store.transaction() as conn:
        if rows:
            conn.execute(insert(held), rows)
        stored = store.load_for_update(conn, [str(r["member_id"]) for r in rows])
        pairs = [(p, p.replace(held_run_id=run_id)) for p in stored.values()]
        results = store.write_transitions(
            conn, pairs, access, kind="revocation_held", source="sync", run_id=run_id
        )
        store.record_event(
            conn, "run_held", source="sync", run_id=run_id, detail={"revoking": len(rows), "total": total}
        )
        if finish is not None:
            finish(conn, results)
    store.send(results, source="sync", run_id=run_id)
    signals.send_action(
        signals.revocations_held,
        store.sender,
        strict=store._strict_signals(),
        run_id=run_id,
        revoking=len(rows),
        total=total,
        member_ids=tuple(r["member_id"] for r in rows),
        reason=reason,
        losses=dict(losses or {}),
    )
    return results


def held_revocations(store: Store, run_id: int) -> list[dict[str, Any]]:
    """The revocations a held run waits to make: ``member_id``, ``kind`` (``snapshot`` or ``missing``),
    ``observed_at`` and the stored patron's name and e-mail (for the settings page)."""
    h, p = store.tables.held_revocations, store.tables.patrons
    if not is_row_id(run_id):
        return []
    stmt = (
        select(h.c.member_id, h.c.kind, h.c.observed_at, p.c.full_name, p.c.email)
        .outerjoin(p, p.c.member_id == h.c.member_id)
        .where(h.c.run_id == run_id)
        .order_by(h.c.member_id)
    )
    with store.engine.connect() as conn:
        return [dict(row) for row in conn.execute(stmt).mappings()]


def _decide_run(store: Store, run_id: int, status: str, by: str | None) -> None:
    """Claim a held run for one decision (a second approve or reject of the same run fails)."""
    r = store.tables.sync_runs
    if not is_row_id(run_id):
        raise LookupError(f"there is no sync run {run_id}")
    with store.transaction() as conn:
        claimed = conn.execute(
            update(r)
            .where(r.c.id == run_id, r.c.status == "held")
            .values(status=status, decided_at=store.clock(), decided_by=by)
        ).rowcount
        if not claimed:
            current = conn.execute(select(r.c.status).where(r.c.id == run_id)).scalar()
            if current is None:
                raise LookupError(f"there is no sync run {run_id}")
            raise ValueError(f"sync run {run_id} is {current}, not held: there is nothing to decide")


def approve_run(store: Store, run_id: int, *, by: str | None = None) -> list[ApplyResult]:
    """Apply a held run's revocations: its snapshots through :meth:`Store.apply_many
    <flask_patronlock.store.Store.apply_many>` with their original ``observed_at`` (so anything newer, e.g. a later
    webhook, still wins), and its missing marks for the patrons it still holds.

    :raises LookupError: no such run. :raises ValueError: the run is not held (already decided, or never held).
    """
    _decide_run(store, run_id, "approved", by)
    h = store.tables.held_revocations
    with store.engine.connect() as conn:
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
        for start in range(0, len(snaps), CHUNK):
            results += store.apply_many(
                snaps[start : start + CHUNK], source="sync", observed_at=observed, run_id=run_id
            )
    if missing:
        settings = store.policy_settings()
        access = AccessContext(settings, store.clock())
        missed_at = dict(missing)
        with store.transaction() as conn:
            stored = store.load_for_update(conn, list(missed_at))
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
            marked = store.write_transitions(
                conn, pairs, access, kind="revocation_approved", source="admin", run_id=run_id
            )
        store.send(marked, source="admin", run_id=run_id)
        results += marked
    _finish_decision(store, run_id, "run_approved", by, len(rows))
    return results


def reject_run(store: Store, run_id: int, *, by: str | None = None) -> list[ApplyResult]:
    """Discard a held run's revocations: its patrons keep access (their ``held_run_id`` is cleared).

    :raises LookupError: no such run. :raises ValueError: the run is not held.
    """
    _decide_run(store, run_id, "rejected", by)
    p = store.tables.patrons
    access = AccessContext(store.policy_settings(), store.clock())
    with store.transaction() as conn:
        ids = list(conn.execute(select(p.c.member_id).where(p.c.held_run_id == run_id)).scalars())
        stored = store.load_for_update(conn, ids)
        pairs = [(patron, patron.replace(held_run_id=None)) for patron in stored.values()]
        results = store.write_transitions(
            conn, pairs, access, kind="revocation_rejected", source="admin", run_id=run_id
        )
    store.send(results, source="admin", run_id=run_id)
    _finish_decision(store, run_id, "run_rejected", by, len(ids))
    return results


def _finish_decision(store: Store, run_id: int, kind: str, by: str | None, count: int) -> None:
    h = store.tables.held_revocations
    with store.transaction() as conn:
        conn.execute(h.delete().where(h.c.run_id == run_id))
        store.record_event(conn, kind, source="admin", user_id=by, run_id=run_id, detail={"held": count})


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
