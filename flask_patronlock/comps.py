"""Comps: access the creator grants by hand -- a friend, a press copy, a goodwill month after a refund.

A comp is for a local user of the site, a Patreon member of the campaign, or a Patreon user (whatever their
membership), and opens one named lock, or counts "as if entitled to" one tier, with a note and an optional end. It is
stored in ``patronlock_comps``; every grant, revoke and expiry writes an audit row (``comp_granted``, ``comp_revoked``,
``comp_expired``) with its source: ``admin`` (the settings page), ``cli`` (``flask patronlock comp``) or ``scheduler``.

How a page view sees it: every write bumps the settings version, so each worker's settings cache
(:mod:`flask_patronlock.settings_cache`) reloads the open comps within ``PATRONLOCK_SETTINGS_CHECK_SECONDS`` (at once
in the worker that wrote); the viewer (:mod:`flask_patronlock.viewers`) carries the comps of the user and of their
stored patron into :func:`flask_patronlock.policy.decide` as :attr:`Viewer.comps
<flask_patronlock.policy.Viewer.comps>`. No query per page view, and no viewer to forget. ``decide`` never counts a
comp at or after its end, whether or not the scheduler has revoked it yet; the scheduler (:meth:`Jobs.tick
<flask_patronlock.jobs.Jobs.tick>`, Celery's tick) then revokes it (:func:`expire_comps`) so the record says so.

Every function takes the app's state (``get_state()``) first, so the settings page, the command line and the jobs
call the same code.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any, Final, Literal

from sqlalchemy import and_, func, or_, select, update

from .declarations import UnknownLockError
from .i18n import date_text as local_date
from .i18n import day_text, gettext
from .i18n import money as site_money
from .patron import Patron
from .policy import Comp
from .state import PatronLockState

__all__ = [
    "GRANT_SOURCES",
    "MAX_NOTE",
    "CompError",
    "CompRecord",
    "access_label",
    "comp_sentence",
    "comps_about",
    "expire_comps",
    "get_comp",
    "grant_comp",
    "list_comps",
    "load_user",
    "resolve_member",
    "resolve_tier",
    "revoke_comp",
    "subject_label",
    "user_name",
]

log = logging.getLogger("flask_patronlock.comps")

#: where a grant or a revoke may come from; expiry is always the ``scheduler``'s.
GRANT_SOURCES: Final = ("admin", "cli")
#: the longest note, in characters.
MAX_NOTE: Final = 500

Field = Literal["who", "user", "member", "patreon_user", "access", "lock", "tier", "note", "expires_at"]
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class CompError(ValueError):
    """A comp that cannot be granted or revoked, said in plain words; :attr:`field` names the input at fault (``who``,
    ``user``, ``member``, ``patreon_user``, ``access``, ``lock``, ``tier``, ``note``, ``expires_at``), so a form shows
    the message next to it."""

    def __init__(self, field: Field, message: str, *, others: Iterable[tuple[Field, str]] = ()) -> None:
        super().__init__(message)
        self.field = field
        #: every problem found, this one first: ``(field, message)``.
        self.errors: list[tuple[Field, str]] = [(field, message), *others]


@dataclass(frozen=True, slots=True)
class CompRecord:
    """A stored comp, open or ended."""

    id: int
    #: who it is for: exactly one of a local user id, a member id and a Patreon user id.
    user_id: str | None
    member_id: str | None
    patreon_user_id: str | None
    #: what it opens: exactly one of a named lock and a tier id.
    lock: str | None
    tier_id: str | None
    note: str
    expires_at: datetime | None
    granted_by: str | None
    #: ``admin`` or ``cli``.
    granted_source: str
    created_at: datetime
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    #: ``admin``, ``cli``, or ``scheduler`` (it expired).
    revoked_source: str | None = None

    @property
    def comp(self) -> Comp:
        """What a decision needs of it (:class:`~flask_patronlock.policy.Comp`)."""
        return Comp(id=self.id, lock=self.lock, tier_id=self.tier_id, expires_at=self.expires_at)

    def active_at(self, now: datetime) -> bool:
        """Whether it counts at ``now``: not revoked, and not past its end."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    @property
    def expired(self) -> bool:
        """Whether it ended by reaching its end date (the scheduler revoked it), rather than by hand."""
        return self.revoked_source == "scheduler"


def _record(row: Mapping[Any, Any]) -> CompRecord:
    return CompRecord(
        id=int(row["id"]),
        user_id=row["user_id"],
        member_id=row["member_id"],
        patreon_user_id=row["patreon_user_id"],
        lock=row["lock"],
        tier_id=row["tier_id"],
        note=row["note"] or "",
        expires_at=row["expires_at"],
        granted_by=row["granted_by"],
        granted_source=row["granted_source"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        revoked_by=row["revoked_by"],
        revoked_source=row["revoked_source"],
    )


# -- reading -----------------------------------------------------------------------------------------------------------


def get_comp(state: PatronLockState, comp_id: int) -> CompRecord | None:
    """The comp ``comp_id``, open or ended, or ``None``."""
    c = state.tables.comps
    with state.store.engine.connect() as conn:
        row = conn.execute(select(c).where(c.c.id == comp_id)).mappings().first()
    return _record(row) if row is not None else None


def list_comps(state: PatronLockState, *, ended: bool = False, limit: int = 500) -> list[CompRecord]:
    """The open comps (not revoked; some may be past their end until the scheduler revokes them), newest first; with
    ``ended``, the revoked and expired ones instead, most recently ended first."""
    c = state.tables.comps
    stmt = select(c).limit(limit)
    if ended:
        stmt = stmt.where(c.c.revoked_at.is_not(None)).order_by(c.c.revoked_at.desc(), c.c.id.desc())
    else:
        stmt = stmt.where(c.c.revoked_at.is_(None)).order_by(c.c.id.desc())
    with state.store.engine.connect() as conn:
        return [_record(row) for row in conn.execute(stmt).mappings()]


def comps_about(state: PatronLockState, patron: Patron, *, limit: int = 100) -> list[CompRecord]:
    """Every comp (open first, then ended) for this patron: by member id, by Patreon user id, and for the local user
    their Patreon account is linked to."""
    c = state.tables.comps
    about = [c.c.member_id == patron.member_id]
    if patron.patreon_user_id:
        about.append(c.c.patreon_user_id == patron.patreon_user_id)
    if patron.local_user_id:
        about.append(c.c.user_id == patron.local_user_id)
    stmt = select(c).where(or_(*about)).order_by(c.c.revoked_at.is_not(None), c.c.id.desc()).limit(limit)
    with state.store.engine.connect() as conn:
        return [_record(row) for row in conn.execute(stmt).mappings()]


def resolve_member(state: PatronLockState, text: str) -> Patron:
    """The stored member a creator means by ``text``: a member id, or the e-mail address of exactly one member.

    :raises CompError: (field ``member``) when no stored member, or more than one, matches.
    """
    wanted = text.strip()
    if not wanted:
        raise CompError("member", gettext("Write the member's e-mail address or Patreon member id."))
    if _CONTROL.search(wanted) or len(wanted) > 320:
        raise CompError("member", gettext("That is not an e-mail address or a Patreon member id."))
    found = state.store.get_patron(wanted) if len(wanted) <= 64 else None
    if found is not None:
        return found
    if "@" in wanted:
        p = state.tables.patrons
        campaign = state.campaign_id_or_none()
        stmt = select(p.c.member_id).where(func.lower(p.c.email) == wanted.lower()).limit(2)
        if campaign:
            stmt = stmt.where(p.c.campaign_id == campaign)
        with state.store.engine.connect() as conn:
            ids = list(conn.execute(stmt).scalars())
        if len(ids) > 1:
            several = gettext("More than one member has the e-mail %(email)s: use the Patreon member id.", email=wanted)
            raise CompError("member", several)
        if ids:
            patron = state.store.get_patron(ids[0])
            if patron is not None:
                return patron
    raise CompError(
        "member",
        gettext(
            "No Patreon member %(member)s is known here. Check the spelling, or sync first if they joined just now.",
            member=wanted,
        ),
    )


def resolve_tier(state: PatronLockState, text: str) -> str:
    """The id of the campaign's tier a creator means by ``text``: its id or its title (any case).

    :raises CompError: (field ``tier``) for an unknown or ambiguous tier, listing the tiers there are.
    """
    snapshot = state.settings.current()
    wanted = text.strip()
    if wanted in snapshot.tiers:
        return wanted
    ids = snapshot.tier_ids_by_title.get(wanted.casefold(), ())
    if len(ids) == 1:
        return ids[0]
    if len(ids) > 1:
        several = gettext("More than one tier is called %(tier)s: give the tier's id.", tier=repr(wanted))
        raise CompError("tier", several)
    names = ", ".join(t.title or t.id for t in sorted(snapshot.tiers.values(), key=lambda t: (t.amount_cents, t.id)))
    if names:
        raise CompError(
            "tier", gettext("The campaign has no tier called %(tier)s (the tiers are %(tiers)s).", tier=repr(wanted),
                            tiers=names)
        )
    raise CompError(
        "tier", gettext("The campaign has no tier called %(tier)s (no tiers are stored yet: sync first).",
                        tier=repr(wanted))
    )


# -- writing -----------------------------------------------------------------------------------------------------------


def _text(value: str | None) -> str | None:
    stripped = value.strip() if value is not None else ""
    return stripped or None


def load_user(state: PatronLockState, user_id: str) -> Any:
    """The host's user ``user_id`` from Flask-Login's user loader; ``None`` when it finds none, cannot parse the id,
    or the site has no user loader."""
    manager = getattr(state.app, "login_manager", None)
    loader = getattr(manager, "user_callback", None)
    if loader is None:
        return None
    try:
        return loader(user_id)
    except Exception:  # a host loader that cannot parse this id (e.g. not a number): no such user
        log.exception("the user_loader failed for user id %r", user_id)
        return None


def user_name(user: Any) -> str | None:
    """What a creator calls a host user: their ``name``, ``username`` or ``email``, whichever is set first."""
    for attr in ("name", "username", "email"):
        value = getattr(user, attr, None) if user is not None else None
        if value:
            return str(value)
    return None


def _check_user(state: PatronLockState, user_id: str) -> None:
    if len(user_id) > 64 or _CONTROL.search(user_id):
        raise CompError("user", gettext("That is not an account id of this site."))
    if getattr(getattr(state.app, "login_manager", None), "user_callback", None) is None:
        return  # the site has no user loader to ask: the id is taken as it is
    if load_user(state, user_id) is None:
        raise CompError("user", gettext("This site has no account %(user)s.", user=repr(user_id)))


def _check_patreon_user(state: PatronLockState, patreon_user_id: str) -> None:
    if len(patreon_user_id) > 64 or _CONTROL.search(patreon_user_id):
        raise CompError("patreon_user", gettext("That is not a Patreon user id."))
    p, a = state.tables.patrons, state.tables.accounts
    with state.store.engine.connect() as conn:
        known = conn.execute(select(p.c.member_id).where(p.c.patreon_user_id == patreon_user_id).limit(1)).first()
        if known is None:
            known = conn.execute(select(a.c.id).where(a.c.patreon_user_id == patreon_user_id).limit(1)).first()
    if known is None:
        raise CompError(
            "patreon_user",
            gettext(
                "No Patreon user %(user)s is known here (no member of the campaign, no connected account).",
                user=patreon_user_id,
            ),
        )


def _check_lock(state: PatronLockState, lock: str) -> None:
    snapshot = state.settings.current()
    try:
        snapshot.find_lock(state.declarations.locks, lock)
    except UnknownLockError:
        names = ", ".join(snapshot.lock_names(state.declarations.locks)) or gettext("none are declared")
        message = gettext("This site has no lock called %(lock)s (the locks: %(locks)s).", lock=repr(lock), locks=names)
        raise CompError("lock", message) from None


def _end(expires_at: datetime | date | None, now: datetime) -> datetime | None:
    if expires_at is None:
        return None
    if not isinstance(expires_at, datetime):
        expires_at = datetime.combine(expires_at, time(), tzinfo=UTC)  # a date: from the start of that day (UTC)
    elif expires_at.tzinfo is None:
        raise CompError("expires_at", gettext("The end needs a time zone (or give a date)."))
    if expires_at <= now:
        today = local_date(now, day_first=True)
        raise CompError("expires_at", gettext("The end must be in the future (after %(date)s).", date=today))
    return expires_at.astimezone(UTC)


def grant_comp(
    state: PatronLockState,
    *,
    user_id: str | None = None,
    member_id: str | None = None,
    patreon_user_id: str | None = None,
    lock: str | None = None,
    tier: str | None = None,
    note: str = "",
    expires_at: datetime | date | None = None,
    by: str | None = None,
    source: Literal["admin", "cli"] = "admin",
) -> CompRecord:
    """Grant a comp: to exactly one of the local user ``user_id``, the stored member ``member_id`` (a member id, or
    the e-mail address of exactly one member: :func:`resolve_member`) or the Patreon user ``patreon_user_id``, for
    exactly one of the declared lock ``lock`` or the tier ``tier`` (its id or title), ending at ``expires_at`` (a date:
    at the start of that day, UTC; ``None``: never). Written with an audit row (``comp_granted``, ``source``, ``by`` in
    its detail) and a settings-version bump in one transaction; every worker honours it within
    ``PATRONLOCK_SETTINGS_CHECK_SECONDS``.

    :raises CompError: naming the field at fault, in plain words; every other problem found is in its
        :attr:`~CompError.errors`, so a form shows them all at once.
    """
    if source not in GRANT_SOURCES:
        raise ValueError(f"source must be one of {', '.join(GRANT_SOURCES)}, not {source!r}")
    now = state.store.clock()
    problems: list[CompError] = []

    def check(step: Callable[[], Any]) -> Any:
        try:
            return step()
        except CompError as exc:
            problems.append(exc)
            return None

    user_id, member_id, patreon_user_id = _text(user_id), _text(member_id), _text(patreon_user_id)
    if sum(value is not None for value in (user_id, member_id, patreon_user_id)) != 1:
        problems.append(
            CompError("who", gettext("Say who the comp is for: one account on this site, or one Patreon member."))
        )
    elif user_id is not None:
        check(lambda: _check_user(state, user_id))
    elif member_id is not None:
        wanted: str = member_id
        patron = check(lambda: resolve_member(state, wanted))
        member_id = patron.member_id if patron is not None else member_id
    elif patreon_user_id is not None:
        check(lambda: _check_patreon_user(state, patreon_user_id))
    lock, tier = _text(lock), _text(tier)
    tier_id: str | None = None
    if (lock is None) == (tier is None):
        problems.append(CompError("access", gettext("Choose what the comp opens: one lock, or one tier.")))
    elif lock is not None:
        check(lambda: _check_lock(state, lock))
    elif tier is not None:
        tier_id = check(lambda: resolve_tier(state, tier))
    note = (note or "").strip()
    if len(note) > MAX_NOTE:
        too_long = gettext("Keep the note to %(max)d characters (it has %(now)d).", max=MAX_NOTE, now=len(note))
        problems.append(CompError("note", too_long))
    elif "\x00" in note:
        problems.append(CompError("note", gettext("The note holds a character that cannot be stored.")))
    end = check(lambda: _end(expires_at, now))
    if problems:
        first = problems[0]
        raise CompError(first.field, str(first), others=[(p.field, str(p)) for p in problems[1:]])
    values: dict[str, Any] = {
        "user_id": user_id,
        "member_id": member_id,
        "patreon_user_id": patreon_user_id,
        "lock": lock,
        "tier_id": tier_id,
        "note": note,
        "expires_at": end,
        "granted_by": by,
        "granted_source": source,
        "created_at": now,
    }
    c = state.tables.comps
    store = state.store
    with store.transaction() as conn:
        comp_id = int(conn.execute(c.insert().values(**values).returning(c.c.id)).scalar_one())
        store.bump_settings_version(conn, by=by or source)
        store.record_event(
            conn, "comp_granted", source=source, user_id=user_id, member_id=member_id,
            patreon_user_id=patreon_user_id,
            detail={"comp": comp_id, "lock": lock, "tier": tier_id, "note": note, "expires_at": end, "by": by},
        )
    state.settings.invalidate()
    return CompRecord(id=comp_id, **values)


def revoke_comp(
    state: PatronLockState, comp_id: int, *, by: str | None = None, source: Literal["admin", "cli"] = "admin"
) -> CompRecord:
    """Revoke the open comp ``comp_id`` now (its row stays, stamped); audited as ``comp_revoked``. Every worker stops
    honouring it within ``PATRONLOCK_SETTINGS_CHECK_SECONDS``.

    :raises LookupError: no comp ``comp_id``.
    :raises CompError: it had already ended (field ``who``).
    """
    if source not in GRANT_SOURCES:
        raise ValueError(f"source must be one of {', '.join(GRANT_SOURCES)}, not {source!r}")
    c = state.tables.comps
    store = state.store
    now = store.clock()
    with store.transaction() as conn:
        row = conn.execute(select(c).where(c.c.id == comp_id)).mappings().first()
        if row is None:
            raise LookupError(f"There is no comp {comp_id}.")
        done = conn.execute(
            update(c).where(and_(c.c.id == comp_id, c.c.revoked_at.is_(None)))
            .values(revoked_at=now, revoked_by=by, revoked_source=source)
        ).rowcount
        if not done:
            ended = _record(row)
            if ended.revoked_at is None:
                raise CompError("who", gettext("That comp had already ended (earlier)."))
            when = local_date(ended.revoked_at, day_first=True)
            raise CompError("who", gettext("That comp had already ended (%(date)s).", date=when))
        store.bump_settings_version(conn, by=by or source)
        store.record_event(
            conn, "comp_revoked", source=source, user_id=row["user_id"], member_id=row["member_id"],
            patreon_user_id=row["patreon_user_id"],
            detail={"comp": comp_id, "lock": row["lock"], "tier": row["tier_id"], "by": by},
        )
    state.settings.invalidate()
    return _record({**row, "revoked_at": now, "revoked_by": by, "revoked_source": source})


def expire_comps(state: PatronLockState, *, now: datetime | None = None) -> list[CompRecord]:
    """Revoke every open comp whose end has come (``revoked_source="scheduler"``), each audited as ``comp_expired``;
    the comps it revoked. The scheduler calls it on every tick; it queries only when this worker's settings cache
    holds a comp past its end, and two workers running it at once revoke (and audit) each comp once."""
    now = now if now is not None else state.store.clock()
    snapshot = state.settings.current()
    if not any(
        comp.expires_at is not None and comp.expires_at <= now for found in snapshot.comps.values() for comp in found
    ):
        return []
    c = state.tables.comps
    store = state.store
    expired: list[CompRecord] = []
    with store.transaction() as conn:
        due = conn.execute(
            select(c).where(and_(c.c.revoked_at.is_(None), c.c.expires_at.is_not(None), c.c.expires_at <= now))
        ).mappings().all()
        for row in due:
            done = conn.execute(
                update(c).where(and_(c.c.id == row["id"], c.c.revoked_at.is_(None)))
                .values(revoked_at=now, revoked_by=None, revoked_source="scheduler")
            ).rowcount
            if not done:
                continue  # another worker expired it meanwhile
            store.record_event(
                conn, "comp_expired", source="scheduler", user_id=row["user_id"], member_id=row["member_id"],
                patreon_user_id=row["patreon_user_id"],
                detail={
                    "comp": row["id"], "lock": row["lock"], "tier": row["tier_id"], "expires_at": row["expires_at"],
                },
            )
            expired.append(_record({**row, "revoked_at": now, "revoked_source": "scheduler"}))
        if expired:
            store.bump_settings_version(conn, by="scheduler")
    if expired:
        state.settings.invalidate()
    return expired


# -- words -------------------------------------------------------------------------------------------------------------


def subject_label(state: PatronLockState, record: CompRecord) -> str:
    """Who ``record`` is for, as a creator knows them: the account's name or e-mail (from the site's user loader), or
    the member's name or e-mail; the id only when nothing else is known."""
    if record.user_id is not None:
        return user_name(load_user(state, record.user_id)) or gettext("account %(id)s", id=record.user_id)
    patron: Patron | None = None
    if record.member_id is not None:
        patron = state.store.get_patron(record.member_id)
    elif record.patreon_user_id is not None:
        p = state.tables.patrons
        with state.store.engine.connect() as conn:
            member_id = conn.execute(
                select(p.c.member_id).where(p.c.patreon_user_id == record.patreon_user_id).limit(1)
            ).scalar()
        patron = state.store.get_patron(member_id) if member_id is not None else None
    if patron is not None and (patron.full_name or patron.email):
        return patron.full_name or str(patron.email)
    if record.member_id is not None:
        return gettext("Patreon member %(id)s", id=record.member_id)
    return gettext("Patreon user %(id)s", id=record.patreon_user_id)


def access_label(state: PatronLockState, record: CompRecord) -> str:
    """What ``record`` opens, in words: ``the lock “Masterclass”`` (its title, else its name) or ``the Gold tier
    ($10.00 a month)``."""
    snapshot = state.settings.current()
    if record.lock is not None:
        try:
            lock = snapshot.find_lock(state.declarations.locks, record.lock)
        except UnknownLockError:
            return gettext("the lock “%(lock)s” (deleted since)", lock=record.lock)
        return gettext("the lock “%(lock)s”", lock=lock.display_name)
    tier = snapshot.tiers.get(record.tier_id or "")
    if tier is None:
        return gettext("a tier that is no longer offered (%(id)s)", id=record.tier_id)
    return gettext("the %(tier)s tier (%(amount)s a month)", tier=tier.title or tier.id,
                   amount=site_money(tier.amount_cents))


def comp_sentence(state: PatronLockState, record: CompRecord, *, who: str | None = None,
                  now: datetime | None = None) -> str:
    """One sentence for creators: "Alex has a comp for the lock “Masterclass” from you until 4 January 2027: press copy"
    (or "had ... ; it ended on ..." / "it was revoked on ..."). ``who`` defaults to :func:`subject_label`."""
    now = now if now is not None else state.store.clock()
    who = who if who is not None else subject_label(state, record)
    what = access_label(state, record)
    note = f": {record.note}" if record.note else ""
    if record.active_at(now):
        end = record.expires_at
        if end is None:
            return gettext("%(who)s has a comp for %(what)s from you with no end date%(note)s", who=who, what=what,
                           note=note)
        return gettext("%(who)s has a comp for %(what)s from you until %(day)s%(note)s", who=who, what=what,
                       day=day_text(end), note=note)
    if record.revoked_at is not None and not record.expired:
        return gettext("%(who)s had a comp for %(what)s from you; it was revoked on %(day)s%(note)s", who=who,
                       what=what, day=day_text(record.revoked_at), note=note)
    end = record.expires_at or record.revoked_at or now
    return gettext("%(who)s had a comp for %(what)s from you until %(day)s; it has ended%(note)s", who=who, what=what,
                   day=day_text(end), note=note)
