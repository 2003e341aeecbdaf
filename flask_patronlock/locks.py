"""Locks: declared named locks, one-off rules, the ``@locked`` decorator, site-wide and path locks, locked files.

Every decision goes through :func:`flask_patronlock.policy.decide`, fed with

* the viewer: Flask-Login's ``current_user``, whether that user linked a Patreon account, and the stored patron,
  read in ONE indexed query per request and cached in ``g._patronlock_viewer``;
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
)
from flask_login import current_user
from werkzeug.exceptions import Forbidden
from werkzeug.local import LocalProxy

from . import signals
from .config import as_list
from .errors import PatronLockError
from .patron import Patron
from .policy import Combine, Decision, LockRule, Viewer, decide

if TYPE_CHECKING:
    from werkzeug.wrappers import Response as WerkzeugResponse

    from .extension import PatronLockState
    from .settings import SettingsSnapshot

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
    "lock_exempt",
    "locked",
    "make_rule",
    "require",
    "send_locked_file",
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


def _state() -> PatronLockState:
    try:  # get_state() without an import per call: this is on every page view
        state: PatronLockState = current_app.extensions["patronlock"]
    except KeyError:
        from .extension import get_state

        return get_state()  # raises the error that says how to fix it
    return state


def _current_user(app: Flask) -> Any:
    """Flask-Login's current user, or ``None`` outside a request or when the app has no LoginManager."""
    if not has_request_context() or getattr(app, "login_manager", None) is None:
        return None
    return current_user._get_current_object()


def viewer_for(user: Any, state: PatronLockState, *, is_admin: bool | None = None) -> Viewer:
    """The :class:`~flask_patronlock.policy.Viewer` for a host user object (``None`` or an anonymous user: an
    anonymous viewer). Makes one database query for a signed-in user. ``is_admin`` given skips the admin callback."""
    if user is None or not getattr(user, "is_authenticated", False):
        return Viewer(authenticated=False, linked=False)
    user_id = user.get_id()
    if user_id is None:
        return Viewer(authenticated=False, linked=False)
    linked, patron = state.store.viewer_record(str(user_id), state.campaign_id_or_none())
    if is_admin is None:
        loader = state.extension._admin_loader
        is_admin = bool(loader(user)) if loader is not None else False
    return Viewer(authenticated=True, linked=linked, is_admin=is_admin, patron=patron)


def current_viewer(state: PatronLockState | None = None) -> Viewer:
    """The current request's viewer (signed in? linked? admin? the stored patron), loaded once per request."""
    viewer: Viewer | None = g.get(_G_VIEWER)
    if viewer is None:
        if state is None:
            state = _state()
        user = _current_user(state.app)
        viewer = viewer_for(user, state)
        if has_app_context():
            setattr(g, _G_USER, user)
            setattr(g, _G_VIEWER, viewer)
    return viewer


def _get_current_patron() -> Patron | None:
    return current_viewer().patron


#: The stored :class:`~flask_patronlock.patron.Patron` linked to the signed-in user, or ``None`` (anonymous, not
#: linked, or no membership stored). Loaded lazily, once per request, and cached in ``g``. Being a proxy, test it with
#: ``if current_patron:`` rather than ``is None``.
current_patron: Patron | None = cast("Patron | None", LocalProxy(_get_current_patron))


def _forget_viewer(*args: Any, **kwargs: Any) -> None:
    """Flask-Login logged a user in or out during the request: the cached viewer and decisions are stale."""
    if has_app_context():
        for name in (_G_VIEWER, _G_USER, _G_DECISIONS):
            g.pop(name, None)


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
    target = as_lock(lock, rule_kwargs, state=state)
    key: Any = target.name if target.name is not None else target
    cache: dict[Any, Decision] | None = g.get(_G_DECISIONS)
    if cache is None:
        cache = {}
        setattr(g, _G_DECISIONS, cache)
        setattr(g, _G_PRIVATE, True)
    decision = cache.get(key)
    if decision is None:
        viewer = current_viewer(state)
        decision = evaluate(target, viewer, user=g.get(_G_USER), state=state)[2]
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
    target = as_lock(lock, rule_kwargs)
    decision = decision_for(target)
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
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if request.method not in EXEMPT_METHODS:
            require(target)
        return current_app.ensure_sync(func)(*args, **kwargs)

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


def _path_lock(prefixes: Mapping[str, str], path: str) -> str | None:
    best: tuple[int, str] | None = None
    for prefix, name in prefixes.items():
        stem = prefix.rstrip("/")
        if (path == stem or path.startswith(stem + "/") or stem == "") and (best is None or len(stem) > best[0]):
            best = (len(stem), name)
    return best[1] if best is not None else None


def _before_request() -> None:
    app = current_app
    config = app.config
    site, paths = config["PATRONLOCK_SITE_LOCK"], config["PATRONLOCK_PATH_LOCKS"]
    routing = _state().settings.current().routing  # set on the settings page: wins over the configuration
    if routing is not None:
        site, paths = routing.site_lock, routing.path_locks
    if not site and not paths:
        return
    endpoint = request.endpoint
    if request.method in EXEMPT_METHODS or endpoint is None:
        return  # a 404/405 leaks nothing and is not ours to lock
    real = cast(Flask, app._get_current_object())  # type: ignore[attr-defined]
    if _exempt_endpoint(real, endpoint):
        return
    if site:
        require(site)
    if paths:
        name = _path_lock(paths, request.path)
        if name is not None:
            require(name)


def _after_request(response: Response) -> Response:
    if g.get(_G_PRIVATE):
        headers = response.headers
        if "Cache-Control" in headers:
            cache_control = response.cache_control
            cache_control.public = False
            cache_control.s_maxage = None
            cache_control.private = True
        else:
            headers["Cache-Control"] = "private"
        if "Vary" in headers:
            response.vary.add("Cookie")
        else:
            headers["Vary"] = "Cookie"
    return response


#: Holds flask-patronlock's templates (``templates/patronlock/...``); registered without routes. App templates of the
#: same path win, which is how an app overrides them.
templates_blueprint = Blueprint("patronlock_templates", __name__, template_folder="templates")


def init_app(app: Flask) -> None:
    """Install the locks on ``app``: path locks before each request, cache headers after it, the templates, the Jinja
    tag and globals. Called by :meth:`PatronLock.init_app <flask_patronlock.PatronLock.init_app>`."""
    app.before_request(_before_request)
    app.after_request(_after_request)
    app.register_blueprint(templates_blueprint)
    try:
        from flask_login import user_logged_in, user_logged_out
    except ImportError:  # pragma: no cover - flask-login is a dependency
        pass
    else:
        user_logged_in.connect(_forget_viewer, weak=False)
        user_logged_out.connect(_forget_viewer, weak=False)
    from .templating import init_app as init_templating

    init_templating(app)
