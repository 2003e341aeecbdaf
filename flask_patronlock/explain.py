"""Why may (or may not) this user see this lock? :func:`explain` answers in plain words, step by step.

It runs the same code as a page view: the viewer from the stored link and patron, the rule in force from the settings
cache, :func:`flask_patronlock.policy.explain_steps` (the very code of ``decide``) and the ``access-decision`` filter.
``flask patronlock explain USER LOCK`` prints it.

The rule in words and the explainer's own steps are messages of the ``flask_patronlock`` catalogue, in the site's
locale (the policy's steps, :func:`flask_patronlock.policy.explain_steps`, are English yet).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select

from .i18n import amount_text, day_text, gettext, ngettext
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
    """The rule in plain words, naming tiers by title where known (in the site's locale)."""
    if not rule.enabled:
        return gettext("disabled (everyone may see it)")
    known = tiers or {}
    parts = []
    if rule.tier_ids:
        names = []
        for tier_id in rule.tier_ids:
            tier = known.get(tier_id)
            names.append(
                gettext("%(tier)s (%(amount)s a month)", tier=tier.title or gettext("an untitled tier"),
                        amount=amount_text(tier.amount_cents))
                if tier is not None
                else gettext("a tier Patreon no longer lists")
            )  # fmt: skip
        listed = gettext(" or ").join(names)
        if rule.tier_match == "exact":
            parts.append(ngettext("tier %(tiers)s only", "one of the tiers %(tiers)s only", len(names), tiers=listed))
        else:
            parts.append(gettext("tier %(tiers)s or higher", tiers=listed))
    if rule.min_cents is not None:
        parts.append(gettext("at least %(amount)s a month", amount=amount_text(rule.min_cents)))
    if rule.lifetime_cents is not None:
        parts.append(gettext("lifetime support of at least %(amount)s", amount=amount_text(rule.lifetime_cents)))
    if rule.patron_since_before is not None:
        parts.append(gettext("pledging since before %(date)s", date=day_text(rule.patron_since_before)))
    if rule.drip_months is not None:
        parts.append(ngettext("pledging for at least %(num)d month", "pledging for at least %(num)d months",
                              rule.drip_months))  # fmt: skip
    if rule.patrons_at_publish:
        parts.append(gettext("pledging when each item was published"))
    default = gettext("any member, free or paid") if rule.free_members else gettext("any entitled patron")
    who = (gettext(" and ") if rule.combine == "all" else gettext(" or ")).join(parts) if parts else default
    if rule.free_members and parts:
        who = gettext("%(who)s (free members included)", who=who)
    if rule.public_after is not None:
        return gettext("%(who)s; everyone from %(date)s (early access)", who=who, date=day_text(rule.public_after))
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
    named = repr(target.name)
    if target.name is None:
        source = "one-off"
        steps.append(gettext("Lock: a one-off rule: %(rule)s.", rule=described))
    elif override is not None:
        source = "override"
        set_by = _override_set(override.updated_by, override.updated_at)
        steps.append(gettext("Lock %(lock)s: the creator's override (%(set)s) applies: %(rule)s.", lock=named,
                             set=set_by, rule=described))  # fmt: skip
    elif target.origin == "missing":
        source = "default"
        steps.append(gettext(
            "Lock %(lock)s: no lock has this name (it was deleted on the settings page, or never made), so what uses "
            "it stays locked to everyone but admins until it gets another lock.", lock=named,
        ))  # fmt: skip
    else:
        source = "default"
        if target.origin == "creator":
            steps.append(gettext("Lock %(lock)s: a lock made on the settings page, with no rule set yet: %(rule)s.",
                                 lock=named, rule=described))  # fmt: skip
        else:
            steps.append(gettext("Lock %(lock)s: the default rule declared in code applies: %(rule)s.", lock=named,
                                 rule=described))  # fmt: skip
    if rule != base:
        steps.append(gettext("Filter: a lock-rule receiver changed the rule to: %(rule)s.",
                             rule=describe_rule(rule, snapshot.tiers)))  # fmt: skip

    authenticated = user is not None and bool(getattr(user, "is_authenticated", False))
    if not authenticated:
        steps.append(gettext("Viewer: an anonymous visitor (not signed in)."))
    else:
        user_id = str(user.get_id())
        a = state.tables.accounts
        with state.store.engine.connect() as conn:
            patreon_user_id = conn.execute(select(a.c.patreon_user_id).where(a.c.user_id == user_id)).scalar()
        if patreon_user_id is None:
            steps.append(gettext("Viewer: user %(user)s, signed in; no Patreon account is linked to this user.",
                                 user=user_id))  # fmt: skip
        else:
            steps.append(gettext("Viewer: user %(user)s, signed in, linked to Patreon user %(patreon_user)s.",
                                 user=user_id, patreon_user=patreon_user_id))  # fmt: skip
    bare_id = isinstance(user, _UserId)
    viewer = viewer_for(user, state, is_admin=False if bare_id else None, cached=False)  # the stored truth
    if viewer.linked:
        steps.append(_member_step(viewer, state.campaign_id_or_none()))
    if authenticated:
        has_loader = state.declarations.admin_loader is not None
        if not has_loader:
            steps.append(gettext("Admin: no admin callback is registered, so nobody is an admin."))
        elif bare_id:
            steps.append(gettext(
                "Admin: not checked (explained for a bare user id; pass the user object to ask the admin callback), "
                "taken as not an admin."
            ))  # fmt: skip
        elif viewer.is_admin:
            steps.append(gettext("Admin: the admin callback says this user is an admin."))
        else:
            steps.append(gettext("Admin: the admin callback says this user is not an admin."))
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
        reason = repr(final.reason)
        if final.allowed:
            steps.append(gettext("Filter: an access-decision receiver changed the result to allowed, reason "
                                 "%(reason)s.", reason=reason))  # fmt: skip
        else:
            steps.append(gettext("Filter: an access-decision receiver changed the result to denied, reason "
                                 "%(reason)s.", reason=reason))  # fmt: skip
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


def _member_step(viewer: Viewer, campaign: str | None) -> str:
    """The "Member: ..." step: the stored membership of the viewer's Patreon user, or that there is none."""
    patron = viewer.patron
    if patron is None and campaign:
        return gettext("Member: no membership of campaign %(campaign)s is stored for that Patreon user (never pledged "
                       "or followed, or not synced yet).", campaign=campaign)  # fmt: skip
    if patron is None:
        return gettext("Member: no membership is stored for that Patreon user (never pledged or followed, or not "
                       "synced yet).")  # fmt: skip
    # a trace line of data: the member, then what qualifies it (each a phrase of its own)
    name = f" ({patron.full_name})" if patron.full_name else ""
    of_campaign = gettext(" of campaign %(campaign)s", campaign=campaign) if campaign else ""
    seen = ""
    if patron.observed_at:
        seen = gettext(", as of %(when)s from %(source)s", when=patron.observed_at.isoformat(), source=patron.source)
    return gettext("Member: %(member)s%(details)s.", member=patron.member_id, details=f"{name}{of_campaign}{seen}")


def _override_set(by: str | None, at: datetime | None) -> str:
    """"set by Kopi at 2026-12-01T09:00:00+00:00" and its shorter forms (the override step's parenthesis)."""
    if by and at:
        return gettext("set by %(by)s at %(at)s", by=by, at=at.isoformat())
    if by:
        return gettext("set by %(by)s", by=by)
    if at:
        return gettext("set at %(at)s", at=at.isoformat())
    return gettext("set")


def _who(user: Any, viewer: Viewer) -> str:
    """What the story calls the viewer: their name here, their name on Patreon, or a description."""
    from .comps import user_name

    if user is None or not getattr(user, "is_authenticated", False):
        return gettext("This visitor")
    name = "" if isinstance(user, _UserId) else user_name(user) or ""
    if not name and viewer.patron is not None:
        name = viewer.patron.full_name or ""
    return name or gettext("This user")


def _comp_steps(state: PatronLockState, user: Any, viewer: Viewer, decided: Decision, now: datetime) -> list[str]:
    """The viewer's comps in the creator's words: "Alex has a comp for the lock “masterclass” from you until 4 January
    2027: press copy", and whether it is what opened the lock."""
    from .comps import comp_sentence, get_comp, user_name

    who = user_name(user) or ""
    if not who:
        patron = viewer.patron
        who = (patron.full_name or "") if patron is not None else ""
    if not who:
        bare = isinstance(user, _UserId) or user is None
        who = gettext("This user") if bare else gettext("User %(id)s", id=user.get_id())
    used = decided.comp.id if decided.comp is not None else None
    out = []
    for comp in viewer.comps:
        record = get_comp(state, comp.id) if comp.id is not None else None
        if record is None:
            continue
        sentence = comp_sentence(state, record, who=who, now=now)
        if record.id == used:
            out.append(gettext("Comp: %(comp)s. That comp opens this lock.", comp=sentence))
        elif record.active_at(now):
            out.append(gettext("Comp: %(comp)s. It does not open this lock.", comp=sentence))
        else:
            out.append(gettext("Comp: %(comp)s.", comp=sentence))
    return out
