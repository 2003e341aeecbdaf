"""Locks: declared named locks, one-off rules, the ``@locked`` decorator, site-wide and path locks, locked files.

Every decision goes through :func:`flask_patronlock.policy.decide`, fed with

* the viewer: Flask-Login's ``current_user``, whether that user linked a Patreon account, and the stored patron,
  read in ONE indexed query, kept in the worker's :class:`~flask_patronlock.viewers.ViewerCache` for at most
  ``PATRONLOCK_VIEWER_CACHE_SECONDS`` (see :func:`viewer_changed`, :func:`forget_viewer`) and in
  ``g._patronlock_viewer`` for the request;
* the rule: the creator's override of a named lock, else its default, tier titles resolved to ids, from the
  per-process :class:`~flask_patronlock.settings.SettingsCache` (no query per request);
* the creator's :class:`~flask_patronlock.policy.PolicySettings` and the tier catalogue, from the same cache.

The decision is then folded through the ``access-decision`` filter (:data:`flask_patronlock.signals.access_decision`).
A page view never calls Patreon. Every response of a request that made a decision is marked
``Cache-Control: private`` and ``Vary: Cookie``.
"""

from __future__ import annotations

import functools
import logging
import mimetypes
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from inspect import iscoroutinefunction
from typing import TYPE_CHECKING, Any, TypeVar, cast

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    g,
    has_app_context,
    has_request_context,
    request,
    send_file,
    send_from_directory,
    session,
)
from flask.sessions import NullSession
from flask_login import current_user
from werkzeug.exceptions import Forbidden
from werkzeug.local import LocalProxy

from . import signals
from .config import as_list
from .errors import ConfigurationError, PatronLockError
from .paths import path_locks_for
from .patron import Patron
from .policy import Combine, Decision, LockRule, Viewer, decide

if TYPE_CHECKING:
    from werkzeug.wrappers import Response as WerkzeugResponse

    from .extension import PatronLockState
    from .settings import SettingsSnapshot
    from .store import Store

__all__ = [
    "Lock",
    "LockDeclarations",
    "LockRegistry",
    "LockedError",
    "UnknownLockError",
    "can_view",
    "current_patron",
    "current_viewer",
    "decision_for",
    "forget_viewer",
    "lock_exempt",
    "locked",
    "make_rule",
    "require",
    "send_locked_file",
    "viewer_changed",
]

log = logging.getLogger("flask_patronlock.locks")

F = TypeVar("F", bound=Callable[..., Any])

#: Request methods that never meet a lock (CORS preflight), as in Flask-Login's ``login_required``.
EXEMPT_METHODS = frozenset({"OPTIONS"})

_G_VIEWER = "_patronlock_viewer"
_G_USER = "_patronlock_user"
_G_DECISIONS = "_patronlock_decisions"
_G_PRIVATE = "_patronlock_private"


class UnknownLockError(PatronLockError, LookupError):
    """A lock name that was never declared with :meth:`PatronLock.lock <LockDeclarations.lock>`."""


@dataclass(frozen=True, slots=True)
class Lock:
    """A lock: a named one declared in code (creators may override its rule), or a one-off rule (``name=None``).

    ``rule.tier_ids`` may hold tier titles as well as ids; they are resolved against the campaign's tiers when a
    decision is made.
    """

    name: str | None
    rule: LockRule
    description: str = ""

    @property
    def label(self) -> str:
        """The name, or ``"(one-off rule)"``."""
        return self.name if self.name is not None else "(one-off rule)"


def make_rule(
    *,
    tier: str | None = None,
    tiers: tuple[str, ...] | list[str] = (),
    min_cents: int | None = None,
    lifetime_cents: int | None = None,
    patron_since_before: datetime | date | str | None = None,
    drip_months: int | None = None,
    combine: Combine = "all",
    enabled: bool = True,
) -> LockRule:
    """A :class:`~flask_patronlock.policy.LockRule` from friendly arguments.

    :param tier: one tier, by title (case-insensitive) or id: "this tier or higher".
    :param tiers: several tiers: any of them, or any tier costing at least the cheapest of them.
    :param min_cents: at least this many cents a month.
    :param lifetime_cents: at least this much lifetime support, in cents.
    :param patron_since_before: only patrons whose current pledge started before this moment (a date, a datetime, or
        an ISO string; without a time zone it is UTC).
    :param drip_months: only patrons who have pledged for at least this many months.
    :param combine: ``"all"`` conditions must hold, or ``"any"`` one of them.
    :raises ValueError: on a bad value, naming it.
    """
    if isinstance(tiers, str):
        raise ValueError("tiers must be a list of tier titles or ids; use tier= for one")
    tier_refs = ([tier] if tier is not None else []) + list(tiers)
    return LockRule.from_dict(
        {
            "min_cents": min_cents,
            "tier_ids": tier_refs,
            "lifetime_cents": lifetime_cents,
            "patron_since_before": patron_since_before,
            "drip_months": drip_months,
            "combine": combine,
            "enabled": enabled,
        }
    )


class LockRegistry:
    """The named locks declared on one :class:`~flask_patronlock.PatronLock` extension."""

    def __init__(self) -> None:
        self._locks: dict[str, Lock] = {}

    def add(self, lock: Lock) -> Lock:
        """Declare ``lock``. Declaring the same name again with a different rule is an error (two places in the code
        would disagree about what the lock means).

        :raises ValueError: on a one-off lock or a conflicting declaration.
        """
        if lock.name is None or not lock.name.strip():
            raise ValueError("a declared lock needs a name")
        if len(lock.name) > 100:
            raise ValueError("a lock name may be at most 100 characters")
        existing = self._locks.get(lock.name)
        if existing is not None and existing != lock:
            raise ValueError(f"lock {lock.name!r} is already declared with a different rule or description")
        self._locks[lock.name] = lock
        return lock

    def get(self, name: str) -> Lock:
        """The lock declared as ``name``.

        :raises UnknownLockError: naming the declared locks.
        """
        try:
            return self._locks[name]
        except KeyError:
            known = ", ".join(sorted(self._locks)) or "none"
            raise UnknownLockError(
                f"no lock named {name!r} is declared (declared: {known}). Declare it with "
                f"patronlock.lock({name!r}, ...), or use a one-off rule such as @locked(tier='Gold')."
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._locks

    def __iter__(self) -> Iterator[Lock]:
        return iter(list(self._locks.values()))

    def __len__(self) -> int:
        return len(self._locks)


class LockDeclarations:
    """The lock-related part of :class:`~flask_patronlock.PatronLock`: declaring locks and the admin callback."""

    locks: LockRegistry
    _admin_loader: Callable[[Any], bool] | None

    def _init_locks(self) -> None:
        self.locks = LockRegistry()
        self._admin_loader = None

    def lock(
        self,
        name: str,
        *,
        description: str = "",
        tier: str | None = None,
        tiers: tuple[str, ...] | list[str] = (),
        min_cents: int | None = None,
        lifetime_cents: int | None = None,
        patron_since_before: datetime | date | str | None = None,
        drip_months: int | None = None,
        combine: Combine = "all",
        enabled: bool = True,
    ) -> Lock:
        """Declare the named lock ``name`` with its default rule (see :func:`make_rule` for the arguments). Creators
        may override the rule (:func:`flask_patronlock.settings.set_lock_override`); the override wins.

        ::

            patronlock.lock("premium", tier="Gold", description="Gold posts")
            patronlock.lock("early", patron_since_before="2026-01-01", description="For the first patrons")

        :returns: the :class:`Lock`, usable wherever a lock name is.
        :raises ValueError: on a bad rule or a conflicting declaration of the same name.
        """
        rule = make_rule(
            tier=tier,
            tiers=tiers,
            min_cents=min_cents,
            lifetime_cents=lifetime_cents,
            patron_since_before=patron_since_before,
            drip_months=drip_months,
            combine=combine,
            enabled=enabled,
        )
        return self.locks.add(Lock(name=name, rule=rule, description=description))

    def admin_loader(self, callback: Callable[[Any], bool]) -> Callable[[Any], bool]:
        """Register the callback that says whether a signed-in user is an admin of the site (admins bypass every
        lock, with reason ``admin_bypass``). It is called with Flask-Login's ``current_user`` (never an anonymous
        user), at most once per request::

            @patronlock.admin_loader
            def is_admin(user):
                return user.is_admin
        """
        self._admin_loader = callback
        return callback


# -- the viewer ------------------------------------------------------------------------------------------------------


# The proxies' own getters, bound once: the page-view path resolves each context object once and then uses the real
# object, instead of paying for a proxy lookup (about a microsecond) at every attribute access.
_app_now: Callable[[], Flask] = current_app._get_current_object  # type: ignore[attr-defined]
_g_now: Callable[[], Any] = g._get_current_object
_request_now: Callable[[], Any] = request._get_current_object  # type: ignore[attr-defined]
_session_now: Callable[[], Any] = session._get_current_object  # type: ignore[attr-defined]
_user_now: Callable[[], Any] = current_user._get_current_object


def _state() -> PatronLockState:
    try:  # get_state() without an import per call: this is on every page view
        state: PatronLockState = _app_now().extensions["patronlock"]
    except KeyError:
        from .extension import get_state

        return get_state()  # raises the error that says how to fix it
    return state


def _current_user(app: Flask) -> Any:
    """Flask-Login's current user, or ``None`` outside a request or when the app has no LoginManager."""
    if not has_request_context() or getattr(app, "login_manager", None) is None:
        return None
    user = vars(_g_now()).get("_login_user")  # where Flask-Login keeps current_user once loaded
    return user if user is not None else _user_now()


#: The viewer of everyone not signed in (viewers are immutable, so one will do).
_ANONYMOUS = Viewer(authenticated=False, linked=False)


def viewer_for(
    user: Any,
    state: PatronLockState,
    *,
    is_admin: bool | None = None,
    cached: bool = True,
    not_before: float | None = None,
) -> Viewer:
    """The :class:`~flask_patronlock.policy.Viewer` for a host user object (``None`` or an anonymous user: an
    anonymous viewer). ``is_admin`` given skips the admin callback.

    For a signed-in user the link and stored patron come from the worker's viewer cache (at most
    ``PATRONLOCK_VIEWER_CACHE_SECONDS`` old, and read at or after ``not_before``, a ``time.time()`` stamp), else from
    one database query; ``cached=False`` always queries (and leaves the cache alone).
    """
    if user is None or not getattr(user, "is_authenticated", False):
        return _ANONYMOUS
    return _signed_in_viewer(user, state, is_admin=is_admin, cached=cached, not_before=not_before)


def _signed_in_viewer(
    user: Any, state: PatronLockState, *, is_admin: bool | None, cached: bool, not_before: float | None
) -> Viewer:
    """:func:`viewer_for` once ``user`` is known to be authenticated."""
    user_id = user.get_id()
    if user_id is None:
        return _ANONYMOUS
    user_id = str(user_id)
    store = state.store
    campaign_id = state.campaign_id_or_none()
    if cached:
        viewer = state.viewers.get(user_id, lambda: _read_viewer(store, user_id, campaign_id), not_before=not_before)
    else:
        viewer = _read_viewer(store, user_id, campaign_id)
    if is_admin is None:
        loader = state.extension._admin_loader
        is_admin = bool(loader(user)) if loader is not None else False
    if is_admin:
        return Viewer(authenticated=True, linked=viewer.linked, is_admin=True, patron=viewer.patron)
    return viewer


def _read_viewer(store: Store, user_id: str, campaign_id: str | None) -> Viewer:
    """The viewer record of a signed-in user, from the database: linked? the stored patron (never an admin)."""
    linked, patron = store.viewer_record(user_id, campaign_id)
    return Viewer(authenticated=True, linked=linked, patron=patron)


def current_viewer(state: PatronLockState | None = None) -> Viewer:
    """The current request's viewer (signed in? linked? admin? the stored patron), loaded once per request, from the
    worker's viewer cache when it holds a record young enough (see :func:`viewer_changed`)."""
    request_values = vars(_g_now())
    viewer: Viewer | None = request_values.get(_G_VIEWER)
    if viewer is None:
        viewer = _load_viewer(state if state is not None else _state(), request_values)
    return viewer


def _load_viewer(state: PatronLockState, request_values: dict[str, Any]) -> Viewer:
    """Load the request's viewer into ``g`` (``request_values`` is ``vars(g)``), with the user it is for."""
    user = _current_user(state.app)
    if user is None or not getattr(user, "is_authenticated", False):
        viewer = _ANONYMOUS
    else:
        viewer = _signed_in_viewer(user, state, is_admin=None, cached=True, not_before=_session_stamp())
    request_values[_G_USER] = user
    request_values[_G_VIEWER] = viewer
    return viewer


def use_viewer(viewer: Viewer, user: Any = None) -> None:
    """Make ``viewer`` (the host ``user``'s) the current request's viewer: every decision made after this in the
    request (``@locked``, :func:`can_view`, templates) is made for it. For requests that say who they are some other
    way than the session cookie (a private feed's token, :mod:`flask_patronlock.feeds`)."""
    request_values = vars(_g_now())
    request_values.pop(_G_DECISIONS, None)
    request_values[_G_USER] = user
    request_values[_G_VIEWER] = viewer


def _get_current_patron() -> Patron | None:
    return current_viewer().patron


#: The stored :class:`~flask_patronlock.patron.Patron` linked to the signed-in user, or ``None`` (anonymous, not
#: linked, or no membership stored). Loaded lazily, once per request, and cached in ``g``. Being a proxy, test it with
#: ``if current_patron:`` rather than ``is None``.
current_patron: Patron | None = cast("Patron | None", LocalProxy(_get_current_patron))


def _forget_request_viewer(*args: Any, **kwargs: Any) -> None:
    """Flask-Login logged a user in or out during the request: the request's viewer and decisions are stale."""
    if has_app_context():
        for name in (_G_VIEWER, _G_USER, _G_DECISIONS):
            g.pop(name, None)


# -- the viewer cache: forgetting and session stamps -------------------------------------------------------------------

#: The session key of the viewer-changed stamp (a ``time.time()`` float): entries of the viewer cache read before it
#: are not used for this session, on any worker.
SESSION_STAMP_KEY = "_patronlock_vstamp"


def _session_stamp() -> float | None:
    if not has_request_context():
        return None
    stamp = _session_now().get(SESSION_STAMP_KEY)
    return float(stamp) if isinstance(stamp, (int, float)) and not isinstance(stamp, bool) else None


def _request_user_id(app: Flask) -> str | None:
    """The id of the user signed in to the current request of ``app``, if Flask-Login loaded one (never loads it)."""
    if not has_request_context() or current_app._get_current_object() is not app:  # type: ignore[attr-defined]
        return None
    user = g.get(_G_USER)
    if user is None:
        user = g.get("_login_user")  # Flask-Login's per-request user, set once current_user was used
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    user_id = user.get_id()
    return str(user_id) if user_id is not None else None


def forget_viewer(user_id: str | None = None, *, app: Flask | None = None) -> None:
    """Drop this worker's cached viewer record of the local user ``user_id`` (``None``: of every user) in ``app``
    (default: the current app), so the next page view of that user in this worker reads the database. In a request of
    that app for that user (or with ``None``), the request's loaded viewer and decisions are dropped too.

    flask-patronlock calls it after every change it commits (``patron-changed``, ``patron-linked``,
    ``patron-unlinked``); call it after changing ``patronlock_accounts`` or ``patronlock_patrons`` any other way.
    Other workers see the change within ``PATRONLOCK_VIEWER_CACHE_SECONDS``; for the viewer's own actions use
    :func:`viewer_changed`, which reaches every worker at once.
    """
    target: Any = app if app is not None else current_app._get_current_object()  # type: ignore[attr-defined]
    state: PatronLockState | None = target.extensions.get("patronlock")
    if state is None:
        raise RuntimeError("flask-patronlock is not registered on this app")
    key = str(user_id) if user_id is not None else None
    state.viewers.forget(key)
    in_request = has_request_context() and current_app._get_current_object() is target  # type: ignore[attr-defined]
    if in_request and (key is None or _request_user_id(target) == key):
        _forget_request_viewer()


def viewer_changed() -> None:
    """The signed-in viewer's own link or membership just changed (they connected Patreon, refreshed their status, or
    unlinked): call it in that request, after the change is committed.

    It forgets this worker's cached record of the viewer (:func:`forget_viewer`) and stamps the viewer's session, so
    that on every worker a record read before now is not used for this session: their very next page is fresh,
    wherever it is served. (A ``patron-changed``, ``patron-linked`` or ``patron-unlinked`` signal about the user
    signed in to the current request also stamps the session, but a refresh that finds nothing new sends none: call
    this anyway.) Without a session (no ``SECRET_KEY``) only this worker's record is forgotten.

    :raises RuntimeError: outside a request (use :func:`forget_viewer` there).
    """
    if not has_request_context():
        raise RuntimeError("viewer_changed() stamps the session of a request; outside a request use forget_viewer()")
    state = _state()
    user = _current_user(state.app)
    user_id = user.get_id() if user is not None and getattr(user, "is_authenticated", False) else None
    _stamp_session(state)
    if user_id is not None:
        forget_viewer(str(user_id), app=state.app)
    else:
        _forget_request_viewer()


def _stamp_session(state: PatronLockState) -> None:
    if isinstance(session._get_current_object(), NullSession):  # type: ignore[attr-defined]
        return  # no session (no SECRET_KEY): other workers see the change within PATRONLOCK_VIEWER_CACHE_SECONDS
    # A stamp never moves backwards (two workers' clocks may differ slightly).
    stamp = state.viewers.wall_clock()
    previous = _session_stamp()
    session[SESSION_STAMP_KEY] = stamp if previous is None else max(stamp, previous)


def _on_user_changed(app: Any, user_ids: tuple[str | None, ...]) -> None:
    state: PatronLockState | None = getattr(app, "extensions", {}).get("patronlock")
    if state is None:
        return
    current = _request_user_id(app)
    for user_id in {str(u) for u in user_ids if u is not None}:
        forget_viewer(user_id, app=app)
        if user_id == current:
            _stamp_session(state)


def _on_patron_changed(sender: Any, *, patron: Patron | None = None, previous: Patron | None = None,
                       **kwargs: Any) -> None:
    """``patron-changed`` (sent after commit): the stored patron of its linked local user (before and after) moved."""
    _on_user_changed(sender, (getattr(patron, "local_user_id", None), getattr(previous, "local_user_id", None)))


def _on_link_changed(sender: Any, *, user_id: Any = None, **kwargs: Any) -> None:
    """``patron-linked`` / ``patron-unlinked`` (sent after commit): the local user's link moved."""
    _on_user_changed(sender, (str(user_id) if user_id is not None else None,))


# -- deciding --------------------------------------------------------------------------------------------------------

LockLike = str | Lock | None


def as_lock(
    lock: LockLike = None, rule_kwargs: Mapping[str, Any] | None = None, *, state: PatronLockState | None = None
) -> Lock:
    """A :class:`Lock` from a declared name, a :class:`Lock`, or one-off rule arguments (see :func:`make_rule`)."""
    if isinstance(lock, str) and not rule_kwargs:  # the common case first
        return (state if state is not None else _state()).extension.locks.get(lock)
    if rule_kwargs:
        if lock is not None:
            raise TypeError("pass a lock name or rule arguments, not both")
        return Lock(name=None, rule=make_rule(**rule_kwargs))
    if isinstance(lock, Lock):
        return lock
    if lock is None:
        return Lock(name=None, rule=LockRule())  # every entitled patron
    if isinstance(lock, str):
        return _state().extension.locks.get(lock)
    raise TypeError(f"a lock is a name, a Lock or rule arguments, not {type(lock).__name__}")


def evaluate(
    lock: Lock,
    viewer: Viewer,
    *,
    user: Any = None,
    state: PatronLockState | None = None,
    snapshot: SettingsSnapshot | None = None,
    now: datetime | None = None,
) -> tuple[LockRule, Decision, Decision]:
    """Decide ``lock`` for ``viewer``: the rule in force, the decision of :func:`~flask_patronlock.policy.decide`,
    and the decision after the ``access-decision`` filter (what is used)."""
    state = state if state is not None else _state()
    snapshot = snapshot if snapshot is not None else state.settings.current()
    now = now if now is not None else state.store.clock()
    rule = snapshot.rule_for(lock)
    decided = decide(rule, viewer, snapshot.policy, now, tiers=snapshot.tiers)
    final = decided
    if signals.access_decision.receivers:
        strict = bool(state.app.config["PATRONLOCK_STRICT_SIGNALS"])
        folded = signals.apply_filter(
            signals.access_decision,
            state.app,
            decided,
            strict=strict,
            lock=lock.name,
            rule=rule,
            viewer=viewer,
            user=user,
            now=now,
        )
        if isinstance(folded, Decision):
            final = folded
        else:
            message = f"an access-decision receiver returned {type(folded).__name__}, not a Decision; ignored"
            if strict:
                raise TypeError(message)
            log.error(message)
    return rule, decided, final


def decision_for(lock: LockLike = None, **rule_kwargs: Any) -> Decision:
    """The :class:`~flask_patronlock.policy.Decision` of ``lock`` (a declared name, a :class:`Lock`, or one-off rule
    arguments) for the current viewer; made once per request and lock. Marks the response ``Cache-Control:
    private``."""
    state = _state()
    return _decision(state, as_lock(lock, rule_kwargs, state=state))


def _decision(state: PatronLockState, target: Lock) -> Decision:
    """``decision_for`` once the lock is resolved: the request's decision of ``target``, made at most once."""
    # g's attributes are its __dict__ (Flask's _AppCtxGlobals): reading and writing them there skips a Python-level
    # __getattr__ (which raises for a missing name) and __setattr__ per access.
    request_values = vars(_g_now())
    key: Any = target.name if target.name is not None else target
    cache: dict[Any, Decision] | None = request_values.get(_G_DECISIONS)
    if cache is None:
        cache = request_values[_G_DECISIONS] = {}
        request_values[_G_PRIVATE] = True
    decision = cache.get(key)
    if decision is None:
        viewer = request_values.get(_G_VIEWER)
        if viewer is None:
            viewer = _load_viewer(state, request_values)
        decision = evaluate(target, viewer, user=request_values.get(_G_USER), state=state)[2]
        cache[key] = decision
    return decision


def can_view(lock: LockLike = None, **rule_kwargs: Any) -> bool:
    """Whether the current viewer may see ``lock`` (a declared name, a :class:`Lock`, or one-off rule arguments),
    in Python (``if can_view("premium"): ...``) and in templates (``{% if can_view("premium") %}``)."""
    return decision_for(lock, **rule_kwargs).allowed


def require(lock: LockLike = None, **rule_kwargs: Any) -> Decision:
    """The allowing decision of ``lock`` for the current viewer.

    :raises LockedError: when the viewer may not see it.
    """
    state = _state()
    target = as_lock(lock, rule_kwargs, state=state)
    decision = _decision(state, target)
    if not decision.allowed:
        raise LockedError(target, decision)
    return decision


class LockedError(Forbidden, PatronLockError):
    """A viewer met a lock they may not pass: a ``403 Forbidden`` carrying the lock and the decision.

    Unless the app handles it (``@app.errorhandler(LockedError)``, or a generic 403 handler), it is rendered as
    ``patronlock/locked.html`` (which extends ``PATRONLOCK_BASE_TEMPLATE``) with the banner for the decision's reason,
    or as JSON ``{"error": "locked", "lock": ..., "reason": ..., "message": ..., "action_url": ...}`` when the
    request prefers JSON. The status is 403 for anonymous visitors too: 401 would promise an HTTP authentication
    challenge (``WWW-Authenticate``) that a cookie-login site does not make; the banner links to the login page.
    """

    def __init__(self, lock: Lock, decision: Decision) -> None:
        self.lock = lock
        self.decision = decision
        super().__init__(description=f"Locked ({lock.label}): {decision.reason}")

    @property
    def lock_name(self) -> str | None:
        """The lock's name (``None`` for a one-off rule)."""
        return self.lock.name

    @property
    def reason(self) -> str:
        """The decision's reason."""
        return self.decision.reason

    def get_response(
        self,
        environ: Any = None,
        scope: dict[str, Any] | None = None,
    ) -> WerkzeugResponse:
        """The banner page, or JSON when the request prefers it (only inside a request of a PatronLock app)."""
        if not has_request_context() or "patronlock" not in current_app.extensions:
            return super().get_response(environ, scope)  # type: ignore[return-value]
        from .banners import locked_response

        return locked_response(self)


# -- decorators ------------------------------------------------------------------------------------------------------


def locked(lock: LockLike | Callable[..., Any] = None, /, **rule_kwargs: Any) -> Any:
    """Lock a view: ``@locked("premium")`` (a declared lock), ``@locked(tier="Gold")`` or ``@locked(min_cents=500)``
    (a one-off rule, see :func:`make_rule`), or bare ``@locked`` (any entitled patron).

    A viewer who may not pass gets :class:`LockedError` (403). ``OPTIONS`` requests pass through; async views work
    (through ``current_app.ensure_sync``). Put it below ``@app.route`` and, if used, below ``@login_required``.
    """
    if callable(lock) and not isinstance(lock, Lock) and not rule_kwargs:
        return _decorate(Lock(name=None, rule=LockRule()), lock)
    if rule_kwargs:
        if lock is not None:
            raise TypeError("pass a lock name or rule arguments, not both")
        target: str | Lock = Lock(name=None, rule=make_rule(**rule_kwargs))  # validated now, at import time
    elif isinstance(lock, str | Lock):
        target = lock
    elif lock is None:
        target = Lock(name=None, rule=LockRule())
    else:
        raise TypeError(f"@locked takes a lock name, a Lock or rule arguments, not {type(lock).__name__}")

    def decorator(func: F) -> F:
        return _decorate(target, func)

    return decorator


def _decorate(target: str | Lock, func: F) -> F:
    is_async = iscoroutinefunction(func)  # decided once, as Flask's ensure_sync would decide on every call

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _request_now().method not in EXEMPT_METHODS:
            state = _state()
            lock = target if isinstance(target, Lock) else state.extension.locks.get(target)
            decision = _decision(state, lock)
            if not decision.allowed:
                raise LockedError(lock, decision)
        if is_async:
            return _app_now().ensure_sync(func)(*args, **kwargs)
        return func(*args, **kwargs)

    wrapper.patronlock_lock = target  # type: ignore[attr-defined]
    return cast(F, wrapper)


def lock_exempt(func: F) -> F:
    """Exempt a view from the site-wide lock and the path locks (``PATRONLOCK_SITE_LOCK``,
    ``PATRONLOCK_PATH_LOCKS``); a ``@locked`` on the same view still applies."""
    func.patronlock_exempt = True  # type: ignore[attr-defined]
    return func


# -- locked files ----------------------------------------------------------------------------------------------------


def send_locked_file(
    lock: LockLike,
    path: str | os.PathLike[str],
    *,
    directory: str | os.PathLike[str] | None = None,
    **send_kwargs: Any,
) -> Response:
    """Serve a file to viewers who may see ``lock``; anyone else gets a placeholder.

    :param path: the file; with ``directory``, a path inside it, joined safely (``send_from_directory``), which is
        what to use for any path that comes from the URL.
    :param send_kwargs: passed to ``send_file`` (``mimetype``, ``as_attachment``, ``download_name``, ...).
    :returns: the file; or, for an image (by ``mimetype`` or the file name), a 403 response with an SVG placeholder
        rendered from ``patronlock/placeholder.svg`` saying what is missing.
    :raises LockedError: for any other file, rendered as the locked page (or JSON).
    """
    target = as_lock(lock)
    decision = decision_for(target)
    if decision.allowed:
        if directory is not None:
            return send_from_directory(directory, path, **send_kwargs)
        return send_file(path, **send_kwargs)
    mimetype = send_kwargs.get("mimetype") or mimetypes.guess_type(os.fspath(path))[0] or ""
    if mimetype.startswith("image/"):
        from .banners import placeholder_response

        return placeholder_response(target, decision)
    raise LockedError(target, decision)


# -- the app hooks: site-wide and path locks before the view, cache headers after --------------------------------------


def _exempt_endpoint(app: Flask, endpoint: str) -> bool:
    if endpoint == "static" or endpoint.endswith(".static") or endpoint.startswith("patronlock."):
        return True
    manager = getattr(app, "login_manager", None)
    if manager is not None and endpoint == getattr(manager, "login_view", None):
        return True
    if endpoint in as_list(app.config["PATRONLOCK_EXEMPT_ENDPOINTS"], "PATRONLOCK_EXEMPT_ENDPOINTS"):
        return True
    view = app.view_functions.get(endpoint)
    return bool(getattr(view, "patronlock_exempt", False))


def _path_locks(prefixes: Mapping[str, str], path: str, *, configured: bool) -> tuple[str, ...]:
    try:
        return path_locks_for(prefixes, path)
    except ValueError as exc:  # only the configuration's can be bad: the settings page's were checked when stored
        if not configured:
            raise
        raise ConfigurationError(f"PATRONLOCK_PATH_LOCKS: {exc}") from exc


def _before_request() -> None:
    app = _app_now()
    config = app.config
    site, paths = config["PATRONLOCK_SITE_LOCK"], config["PATRONLOCK_PATH_LOCKS"]
    routing = app.extensions["patronlock"].settings.current().routing  # the settings page's: wins over the config
    if routing is not None:
        site, paths = routing.site_lock, routing.path_locks
    if not site and not paths:
        return
    req = _request_now()
    endpoint = req.endpoint
    if req.method in EXEMPT_METHODS or endpoint is None:
        return  # a 404/405 leaks nothing and is not ours to lock
    if _exempt_endpoint(app, endpoint):
        return
    if site:
        require(site)
    if paths:
        # every reading of the path (as routed, decoded, dot segments resolved...) is checked: see paths.py
        for name in _path_locks(paths, req.path, configured=routing is None):
            require(name)


def _after_request(response: Response) -> Response:
    if vars(_g_now()).get(_G_PRIVATE):
        _make_private(response)
    return response


def _make_private(response: Response) -> None:
    """``Cache-Control: private`` (replacing ``public`` and ``s-maxage``) and ``Vary: Cookie``."""
    headers = response.headers
    has_cache_control = has_vary = False
    for name, _value in headers:  # one pass; "in headers" raises and catches a KeyError per missing header
        lowered = name.lower()
        if lowered == "cache-control":
            has_cache_control = True
        elif lowered == "vary":
            has_vary = True
    if has_cache_control:
        cache_control = response.cache_control
        cache_control.public = False
        cache_control.s_maxage = None
        cache_control.private = True
    else:
        headers.add("Cache-Control", "private")
    if has_vary:
        response.vary.add("Cookie")
    else:
        headers.add("Vary", "Cookie")


#: Holds flask-patronlock's templates (``templates/patronlock/...``); registered without routes. App templates of the
#: same path win, which is how an app overrides them.
templates_blueprint = Blueprint("patronlock_templates", __name__, template_folder="templates")


def init_app(app: Flask) -> None:
    """Install the locks on ``app``: path locks before each request, cache headers after it, the templates, the Jinja
    tag and globals. Called by :meth:`PatronLock.init_app <flask_patronlock.PatronLock.init_app>`."""
    if app.config.get("PATRONLOCK_PATH_LOCKS"):  # a bad prefix fails at start-up, not on the first request
        _path_locks(app.config["PATRONLOCK_PATH_LOCKS"], "/", configured=True)
    app.before_request(_before_request)
    app.after_request(_after_request)
    app.register_blueprint(templates_blueprint)
    try:
        from flask_login import user_logged_in, user_logged_out
    except ImportError:  # pragma: no cover - flask-login is a dependency
        pass
    else:
        user_logged_in.connect(_forget_request_viewer, weak=False)
        user_logged_out.connect(_forget_request_viewer, weak=False)
    # One receiver for every app (it finds the app's cache from the sender); connecting again is a no-op. The link
    # signals are looked up by name: the connect views send them.
    signals.patron_changed.connect(_on_patron_changed, weak=False)
    for name in ("patron-linked", "patron-unlinked"):
        signals.patronlock_signals.signal(name).connect(_on_link_changed, weak=False)
    from .templating import init_app as init_templating

    init_templating(app)
