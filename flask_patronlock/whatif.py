"""What a change of a lock or of the access policies would do, before it is saved: who would gain access, who would
lose it (issue 17, item 5).

Computed from stored state only: every stored patron of the campaign, with their comps, decided with
:func:`flask_patronlock.policy.decide` under the rule or policy in force and under the proposed one. Each patron is
counted as if they had connected their Patreon account here (that is what they would get once they do); admins and
visitors who are not signed in are not patrons. The ``lock-rule`` and ``access-decision`` filters of add-ons are not
folded in: the what-if is about the creator's own rules. Nothing is written and Patreon is not called.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import select

from .declarations import Lock
from .i18n import gettext
from .patron import Patron
from .policy import LockRule, PolicySettings, Viewer, decide
from .settings_cache import SettingsSnapshot
from .state import PatronLockState, get_state
from .store import row_to_patron

__all__ = ["AccessChange", "lock_change", "lock_deletion", "policy_change"]


@dataclass(frozen=True, slots=True)
class AccessChange:
    """Who a proposed change would let in and shut out, among the stored patrons."""

    #: the names of the patrons who would gain access (to the lock; for a policy, to at least one lock).
    gained: tuple[str, ...]
    #: the names of the patrons who would lose it.
    lost: tuple[str, ...]
    #: how many stored patrons were considered.
    patrons: int
    #: the change opens the lock to everyone, visitors who are not signed in included (it switches it off).
    opens_to_everyone: bool = False

    @property
    def changes_anything(self) -> bool:
        """Whether anyone would gain or lose access, or the lock would open to everyone."""
        return bool(self.gained or self.lost or self.opens_to_everyone)


def _name(patron: Patron) -> str:
    return patron.full_name or patron.email or gettext("a patron without a name on Patreon")


def _stored_viewers(state: PatronLockState, snapshot: SettingsSnapshot) -> Iterator[tuple[str, Viewer]]:
    """Each stored patron of the campaign as a connected viewer with their comps, and their name."""
    p, a = state.tables.patrons, state.tables.accounts
    stmt = select(p, a.c.user_id.label("local_user_id")).outerjoin(a, a.c.patreon_user_id == p.c.patreon_user_id)
    campaign = state.campaign_id_or_none()
    if campaign is not None:
        stmt = stmt.where(p.c.campaign_id == campaign)
    with state.store.engine.connect() as conn:
        rows = conn.execute(stmt.order_by(p.c.full_name, p.c.member_id)).mappings().all()
    for row in rows:
        patron = row_to_patron(row)
        comps = snapshot.comps_for(patron.local_user_id, patron)
        yield _name(patron), Viewer(authenticated=True, linked=True, patron=patron, comps=comps)


def lock_change(lock: Lock, rule: LockRule, *, state: PatronLockState | None = None) -> AccessChange:
    """What saving ``rule`` as the rule of the named lock ``lock`` would change, compared with its rule in force."""
    state = state if state is not None else get_state()
    snapshot = state.settings.current()
    now = state.store.clock()
    before, after = snapshot.base_rule_for(lock), snapshot.resolve(rule)
    gained: list[str] = []
    lost: list[str] = []
    total = 0
    for name, viewer in _stored_viewers(state, snapshot):
        total += 1
        was = decide(before, viewer, snapshot.policy, now, tiers=snapshot.tiers, lock=lock.name).allowed
        will = decide(after, viewer, snapshot.policy, now, tiers=snapshot.tiers, lock=lock.name).allowed
        if will and not was:
            gained.append(name)
        elif was and not will:
            lost.append(name)
    return AccessChange(tuple(gained), tuple(lost), total, opens_to_everyone=before.enabled and not after.enabled)


def lock_deletion(lock: Lock, *, state: PatronLockState | None = None) -> AccessChange:
    """What deleting the named lock ``lock`` would change for what still uses it: everyone it lets in now loses
    access (content on a deleted lock stays locked to everyone but admins)."""
    state = state if state is not None else get_state()
    snapshot = state.settings.current()
    now = state.store.clock()
    rule = snapshot.base_rule_for(lock)
    lost: list[str] = []
    total = 0
    for name, viewer in _stored_viewers(state, snapshot):
        total += 1
        if decide(rule, viewer, snapshot.policy, now, tiers=snapshot.tiers, lock=lock.name).allowed:
            lost.append(name)
    return AccessChange((), tuple(lost), total)


def policy_change(policy: PolicySettings, *, state: PatronLockState | None = None) -> AccessChange:
    """What saving ``policy`` as the access policies would change: a patron gains access if some lock would let them
    in that does not now, and loses it if some lock that lets them in now would not (both can happen)."""
    state = state if state is not None else get_state()
    snapshot = state.settings.current()
    now = state.store.clock()
    rules = [(lock.name, snapshot.base_rule_for(lock)) for lock in snapshot.all_locks(state.declarations.locks)]
    gained: list[str] = []
    lost: list[str] = []
    total = 0
    for name, viewer in _stored_viewers(state, snapshot):
        total += 1
        more = less = False
        for lock_name, rule in rules:
            was = decide(rule, viewer, snapshot.policy, now, tiers=snapshot.tiers, lock=lock_name).allowed
            will = decide(rule, viewer, policy, now, tiers=snapshot.tiers, lock=lock_name).allowed
            more = more or (will and not was)
            less = less or (was and not will)
        if more:
            gained.append(name)
        if less:
            lost.append(name)
    return AccessChange(tuple(gained), tuple(lost), total)
