"""What the settings pages read: patron search, a patron's timeline, patrons by tier. Reads only.

Nothing here writes a patron: "sync this patron now" goes through :meth:`Store.apply
<flask_patronlock.store.Store.apply>` in the view, like every other change. The dashboard's figures over time are
:mod:`flask_patronlock.insight`'s.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import String, and_, func, literal, or_, select, type_coerce

from ..i18n import N_, gettext
from ..patron import Patron
from ..state import PatronLockState
from ..store import row_to_patron

__all__ = [
    "STATUS_FILTERS",
    "PatronPage",
    "patron_timeline",
    "search_patrons",
    "tier_counts",
]

#: the patron list's status filter: value -> label (English; the page shows it through the catalogue).
STATUS_FILTERS: dict[str, str] = {
    "": N_("Any status"),
    "active": N_("Active"),
    "declined": N_("Payment declined"),
    "former": N_("Former patrons"),
    "none": N_("Never pledged (followers, free members)"),
    "linked": N_("Connected to an account here"),
    "unlinked": N_("Not connected to an account here"),
    "held": N_("Revocation held for approval"),
    "missing": N_("Missing from the last syncs"),
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
    out.extend((gettext("%(tier)s (unknown tier)", tier=tier_id), n) for tier_id, n in sorted(counts.items()))
    if no_tier:
        out.append((gettext("No tier (amount only)"), no_tier))
    return out
