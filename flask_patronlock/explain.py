"""Why may (or may not) this user see this lock? :func:`explain` answers in plain words, step by step.

It runs the same code as a page view: the viewer from the stored link and patron, the rule in force from the settings
cache, :func:`flask_patronlock.policy.explain_steps` (the very code of ``decide``) and the ``access-decision`` filter.
``flask patronlock explain USER LOCK`` prints it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select

from .formatting import date_text, money
from .locks import Lock, as_lock, evaluate, published_moment
from .patreon.types import TierSnapshot
from .policy import Decision, LockRule, Viewer, entitlement, explain_steps
from .state import PatronLockState, get_state
from .story import story
from .viewers import viewer_for

__all__ = ["Explanation", "describe_rule", "explain"]


@dataclass(frozen=True, slots=True)
class Explanation:
    """The decision of one lock for one user, with every step in plain words."""

    lock: Lock
    rule: LockRule
    #: where the rule came from: ``default`` (declared in code), ``override`` (the creator's) or ``one-off``.
    source: Literal["default", "override", "one-off"]
    #: the decision that applies (after the ``access-decision`` filter).
    decision: Decision
    steps: tuple[str, ...]
    #: the answer in a few plain sentences (:func:`flask_patronlock.story.story`): the pledge, what happened to it,
    #: and the lock; ``steps`` are the trace behind it.
    story: str = ""

    def __str__(self) -> str:
        return "\n".join(f"{i}. {step}" for i, step in enumerate(self.steps, 1))


def describe_rule(rule: LockRule, tiers: dict[str, TierSnapshot] | None = None) -> str:
    """The rule in plain words, naming tiers by title where known."""
    if not rule.enabled:
        return "disabled (everyone may see it)"
    known = tiers or {}
    parts = []
    if rule.tier_ids:
        names = []
        for tier_id in rule.tier_ids:
            tier = known.get(tier_id)
            names.append(
                f"{tier.title or 'an untitled tier'} ({money(tier.amount_cents)} a month)"
                if tier is not None
                else "a tier Patreon no longer lists"
            )
        if rule.tier_match == "exact":
            parts.append(("tier " if len(names) == 1 else "one of the tiers ") + " or ".join(names) + " only")
        else:
            parts.append("tier " + " or ".join(names) + " or higher")
    if rule.min_cents is not None:
        parts.append(f"at least {money(rule.min_cents)} a month")
    if rule.lifetime_cents is not None:
        parts.append(f"lifetime support of at least {money(rule.lifetime_cents)}")
    if rule.patron_since_before is not None:
        parts.append(f"pledging since before {date_text(rule.patron_since_before, day_first=True)}")
    if rule.drip_months is not None:
        months = rule.drip_months
        parts.append(f"pledging for at least {months} month{'' if months == 1 else 's'}")
    if rule.patrons_at_publish:
        parts.append("pledging when each item was published")
    default = "any member, free or paid" if rule.free_members else "any entitled patron"
    who = (" and " if rule.combine == "all" else " or ").join(parts) if parts else default
    if rule.free_members and parts:
        who = f"{who} (free members included)"
    if rule.public_after is not None:
        return f"{who}; everyone from {date_text(rule.public_after, day_first=True)} (early access)"
    return who


class _UserId:
    """A stand-in for a host user known only by id (when the app has no Flask-Login user loader)."""

    is_authenticated = True

    def __init__(self, user_id: str) -> None:
        self._id = user_id

    def get_id(self) -> str:
        return self._id


def explain(
    user: Any, lock: str | Lock, *, now: datetime | None = None, published_at: datetime | None = None
) -> Explanation:
    """Explain the decision of ``lock`` for ``user``, as a page view of that user would make it now.

    :param user: the host's user object (anything with ``get_id()`` and ``is_authenticated``, as Flask-Login wants),
        a user id (str or int; the user is taken as signed in, and is no admin unless a user object says so), or
        ``None`` for an anonymous visitor.
    :param lock: a declared lock's name, or a :class:`~flask_patronlock.locks.Lock`.
    :param now: the moment to decide at (default: the store's clock).
    :param published_at: the publish date of the item, for a lock on "patrons at the time this was published"
        (a datetime, date or ISO string; UTC when naive).
    :raises UnknownLockError: for a lock name never declared.
    """
    state = get_state()
    target = as_lock(lock)
    published_at = published_moment(published_at)
    snapshot = state.settings.current()
    now = now if now is not None else state.store.clock()
    if isinstance(user, str | int):
        user = _UserId(str(user))
    steps: list[str] = []

    override = snapshot.overrides.get(target.name) if target.name is not None else None
    rule = snapshot.rule_for(target)
    base = snapshot.base_rule_for(target)
    source: Literal["default", "override", "one-off"]
    described = describe_rule(base, snapshot.tiers)
    if target.name is None:
        source = "one-off"
        steps.append(f"Lock: a one-off rule: {described}.")
    elif override is not None:
        source = "override"
        who = f" by {override.updated_by}" if override.updated_by else ""
        when = f" at {override.updated_at.isoformat()}" if override.updated_at else ""
        steps.append(f"Lock {target.name!r}: the creator's override (set{who}{when}) applies: {described}.")
    elif target.origin == "missing":
        source = "default"
        steps.append(
            f"Lock {target.name!r}: no lock has this name (it was deleted on the settings page, or never made), so "
            "what uses it stays locked to everyone but admins until it gets another lock."
        )
    else:
        source = "default"
        what = "a lock made on the settings page, with no rule set yet" if target.origin == "creator" else (
            "the default rule declared in code applies"
        )
        steps.append(f"Lock {target.name!r}: {what}: {described}.")
    if rule != base:
        steps.append(f"Filter: a lock-rule receiver changed the rule to: {describe_rule(rule, snapshot.tiers)}.")

    authenticated = user is not None and bool(getattr(user, "is_authenticated", False))
    if not authenticated:
        steps.append("Viewer: an anonymous visitor (not signed in).")
    else:
        user_id = str(user.get_id())
        a = state.tables.accounts
        with state.store.engine.connect() as conn:
            patreon_user_id = conn.execute(select(a.c.patreon_user_id).where(a.c.user_id == user_id)).scalar()
        if patreon_user_id is None:
            steps.append(f"Viewer: user {user_id}, signed in; no Patreon account is linked to this user.")
        else:
            steps.append(f"Viewer: user {user_id}, signed in, linked to Patreon user {patreon_user_id}.")
    bare_id = isinstance(user, _UserId)
    viewer = viewer_for(user, state, is_admin=False if bare_id else None, cached=False)  # the stored truth
    if viewer.linked:
        campaign = state.campaign_id_or_none()
        of_campaign = f" of campaign {campaign}" if campaign else ""
        patron = viewer.patron
        if patron is None:
            steps.append(
                f"Member: no membership{of_campaign} is stored for that Patreon user (never pledged or followed, or "
                "not synced yet)."
            )
        else:
            name = f" ({patron.full_name})" if patron.full_name else ""
            seen = f", as of {patron.observed_at.isoformat()} from {patron.source}" if patron.observed_at else ""
            steps.append(f"Member: {patron.member_id}{name}{of_campaign}{seen}.")
    if authenticated:
        has_loader = state.declarations.admin_loader is not None
        if not has_loader:
            steps.append("Admin: no admin callback is registered, so nobody is an admin.")
        elif bare_id:
            steps.append("Admin: not checked (explained for a bare user id; pass the user object to ask the admin "
                         "callback), taken as not an admin.")
        else:
            steps.append(f"Admin: the admin callback says this user is {'' if viewer.is_admin else 'not '}an admin.")
    if target.origin != "missing":
        steps.extend(
            explain_steps(
                rule, viewer, snapshot.policy, now, tiers=snapshot.tiers, lock=target.name, published_at=published_at
            )
        )
    _rule, decided, final = evaluate(
        target, viewer, user=user, state=state, snapshot=snapshot, now=now, published_at=published_at
    )
    if viewer.comps:
        steps.extend(_comp_steps(state, user, viewer, decided, now))
    if final != decided:
        verdict = "allowed" if final.allowed else "denied"
        steps.append(f"Filter: an access-decision receiver changed the result to {verdict}, reason {final.reason!r}.")
    told = story(
        who=_who(user, viewer),
        lock=target.label,
        needs=describe_rule(rule, snapshot.tiers),
        decision=final,
        patron=viewer.patron,
        authenticated=authenticated,
        linked=viewer.linked,
        entitlement=entitlement(viewer.patron, snapshot.policy, now),
        policy=snapshot.policy,
        tiers=snapshot.tiers,
        now=now,
    )
    return Explanation(lock=target, rule=rule, source=source, decision=final, steps=tuple(steps), story=told)


def _who(user: Any, viewer: Viewer) -> str:
    """What the story calls the viewer: their name here, their name on Patreon, or a description."""
    from .comps import user_name

    if user is None or not getattr(user, "is_authenticated", False):
        return "This visitor"
    name = "" if isinstance(user, _UserId) else user_name(user) or ""
    if not name and viewer.patron is not None:
        name = viewer.patron.full_name or ""
    return name or "This user"


def _comp_steps(state: PatronLockState, user: Any, viewer: Viewer, decided: Decision, now: datetime) -> list[str]:
    """The viewer's comps in the creator's words: "Alex has a comp for 'masterclass' from you until 4 January 2027:
    press copy", and whether it is what opened the lock."""
    from .comps import comp_sentence, get_comp, user_name

    who = user_name(user) or ""
    if not who:
        patron = viewer.patron
        who = (patron.full_name or "") if patron is not None else ""
    if not who:
        who = "This user" if isinstance(user, _UserId) or user is None else f"User {user.get_id()}"
    used = decided.comp.id if decided.comp is not None else None
    out = []
    for comp in viewer.comps:
        record = get_comp(state, comp.id) if comp.id is not None else None
        if record is None:
            continue
        sentence = comp_sentence(state, record, who=who, now=now)
        if record.id == used:
            out.append(f"Comp: {sentence}. That comp opens this lock.")
        elif record.active_at(now):
            out.append(f"Comp: {sentence}. It does not open this lock.")
        else:
            out.append(f"Comp: {sentence}.")
    return out
