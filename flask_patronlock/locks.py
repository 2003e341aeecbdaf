"""Locks: deciding, the ``@locked`` decorator, site-wide and path locks, locked files.

Named locks are declared on the extension (:mod:`flask_patronlock.declarations`, re-exported here). Every decision goes
through :func:`flask_patronlock.policy.decide`, fed with

* the viewer (:mod:`flask_patronlock.viewers`): Flask-Login's ``current_user``, whether that user linked a Patreon
  account, and the stored patron, read in ONE indexed query, kept in the worker's
  :class:`~flask_patronlock.viewer_cache.ViewerCache` for at most ``PATRONLOCK_VIEWER_CACHE_SECONDS`` (see
  :func:`~flask_patronlock.viewers.current_viewer_changed`, :func:`~flask_patronlock.viewers.forget_cached_viewer`)
  and in ``g._patronlock_viewer`` for the request;
* the rule: the creator's override of a named lock, else its default, tier titles resolved to ids, from the
  per-process :class:`~flask_patronlock.settings_cache.SettingsCache` (no query per request);
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
from collections.abc import Callable, Mapping
from datetime import datetime
from inspect import iscoroutinefunction
from typing import TYPE_CHECKING, Any, TypeVar, cast

from flask import Blueprint, Flask, Response, current_app, has_request_context
from werkzeug.exceptions import Forbidden

from . import signals
from .config import as_list
from .declarations import Lock, LockName, LockRegistry, UnknownLockError, make_rule
from .errors import ConfigurationError, PatronLockError
from .paths import path_locks_for
from .policy import Decision, LockRule, Viewer, _parse_datetime, decide, decide_unavailable
from .state import PatronLockState, get_state
from .viewers import (
    _G_DECISIONS,
    _G_PRIVATE,
    _G_USER,
    _G_VIEWER,
    SESSION_STAMP_KEY,
    _app_now,
    _g_now,
    _load_viewer,
    _request_now,
    current_patron,
    current_viewer,
    forget_viewer,
    viewer_changed,
    viewer_for,
)
from .viewers import init_app as init_viewers

if TYPE_CHECKING:
    from werkzeug.wrappers import Response as WerkzeugResponse

    from .settings_cache import SettingsSnapshot

__all__ = [
    "PUBLIC",
    "SESSION_STAMP_KEY",
    "Lock",
    "LockName",
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
    "published_moment",
    "require",
    "send_locked_file",
    "viewer_changed",
    "viewer_for",
]

log = logging.getLogger("flask_patronlock.locks")

F = TypeVar("F", bound=Callable[..., Any])

#: Request methods that never meet a lock (CORS preflight), as in Flask-Login's ``login_required``.
EXEMPT_METHODS = frozenset({"OPTIONS"})

# -- deciding --------------------------------------------------------------------------------------------------------

LockLike = str | Lock | None

#: no lock: everyone may see it. What the empty lock name means (a post whose creator picked "Public" in a
#: :class:`~flask_patronlock.content.LockField`), so ``{% patronlock post.lock %}`` shows a public post to everyone.
PUBLIC = Lock(name=None, rule=LockRule(enabled=False), title="Public")


def named_lock(state: PatronLockState, name: str) -> Lock:
    """The lock called ``name``: declared in code or made by a creator.

    A name a creator deleted, or a :class:`~flask_patronlock.declarations.LockName` read from content that names no
    lock, fails closed: a lock with ``origin="missing"`` that only admins pass (reason ``lock_unavailable``), logged
    as an error when decided. The empty name is :data:`PUBLIC`.

    :raises UnknownLockError: for any other unknown name (a typo in code is an error, not a locked page).
    """
    snapshot = state.settings.current()
    try:
        return snapshot.find_lock(state.declarations.locks, name)
    except UnknownLockError:
        if not name:
            return PUBLIC
        if name in snapshot.deleted_locks or isinstance(name, LockName):
            return Lock(name=str(name), rule=LockRule(), origin="missing")
        raise


def as_lock(
    lock: LockLike = None, rule_kwargs: Mapping[str, Any] | None = None, *, state: PatronLockState | None = None
) -> Lock:
    """A :class:`Lock` from a lock's name (declared in code or made by a creator; ``""``: :data:`PUBLIC`), a
    :class:`Lock`, or one-off rule arguments (see :func:`make_rule`). ``None`` is any entitled patron."""
    if isinstance(lock, str) and not rule_kwargs:  # the common case first
        return named_lock(state if state is not None else get_state(), lock)
    if rule_kwargs:
        if lock is not None:
            raise TypeError("pass a lock name or rule arguments, not both")
        return Lock(name=None, rule=make_rule(**rule_kwargs))
    if isinstance(lock, Lock):
        return lock
    if lock is None:
        return Lock(name=None, rule=LockRule())  # every entitled patron
    raise TypeError(f"a lock is a name, a Lock or rule arguments, not {type(lock).__name__}")


def evaluate(
    lock: Lock,
    viewer: Viewer,
    *,
    user: Any = None,
    state: PatronLockState | None = None,
    snapshot: SettingsSnapshot | None = None,
    now: datetime | None = None,
    published_at: datetime | None = None,
) -> tuple[LockRule, Decision, Decision]:
    """Decide ``lock`` for ``viewer`` (about an item published at ``published_at``, if given): the rule in force,
    the decision of :func:`~flask_patronlock.policy.decide`, and the decision after the ``access-decision`` filter
    (what is used)."""
    state = state if state is not None else get_state()
    snapshot = snapshot if snapshot is not None else state.settings.current()
    now = now if now is not None else state.store.clock()
    rule = snapshot.rule_for(lock)
    if lock.origin == "missing":
        log.error(
            "content is locked with %r, which is no lock (deleted on the settings page, or never made): it stays "
            "locked to everyone but admins. Choose another lock for it, or make a lock called %r again.",
            lock.name,
            lock.name,
        )
        decided = decide_unavailable(viewer)
    else:
        decided = decide(
            rule, viewer, snapshot.policy, now, tiers=snapshot.tiers, lock=lock.name, published_at=published_at
        )
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


def published_moment(value: Any) -> datetime | None:
    """An item's publish date as :func:`~flask_patronlock.policy.decide` wants it: a timezone-aware datetime (a naive
    one, as many databases store, and a bare date are taken as UTC; an ISO string is parsed).

    :raises ValueError: on anything else, naming ``published_at``.
    """
    if value is None or (isinstance(value, datetime) and value.tzinfo is not None):
        return value
    return _parse_datetime("published_at", "value", value)


def decision_for(lock: LockLike = None, *, published_at: Any = None, **rule_kwargs: Any) -> Decision:
    """The :class:`~flask_patronlock.policy.Decision` of ``lock`` (a declared name, a :class:`Lock`, or one-off rule
    arguments) for the current viewer; made once per request, lock and ``published_at`` (the item's publish date,
    for a lock on "patrons at the time this was published": a datetime, a date or an ISO string, UTC when naive).
    Marks the response ``Cache-Control: private``."""
    state = get_state()
    return _decision(state, as_lock(lock, rule_kwargs, state=state), published_moment(published_at))


def _decision(state: PatronLockState, target: Lock, published_at: datetime | None = None) -> Decision:
    """``decision_for`` once the lock is resolved: the request's decision of ``target``, made at most once."""
    # g's attributes are its __dict__ (Flask's _AppCtxGlobals): reading and writing them there skips a Python-level
    # __getattr__ (which raises for a missing name) and __setattr__ per access.
    request_values = vars(_g_now())
    key: Any = target.name if target.name is not None else target
    if published_at is not None:
        key = (key, published_at)
    cache: dict[Any, Decision] | None = request_values.get(_G_DECISIONS)
    if cache is None:
        cache = request_values[_G_DECISIONS] = {}
        request_values[_G_PRIVATE] = True
    decision = cache.get(key)
    if decision is None:
        viewer = request_values.get(_G_VIEWER)
        if viewer is None:
            viewer = _load_viewer(state, request_values)
        decision = evaluate(
            target, viewer, user=request_values.get(_G_USER), state=state, published_at=published_at
        )[2]
        cache[key] = decision
    return decision


def can_view(lock: LockLike = None, *, published_at: Any = None, **rule_kwargs: Any) -> bool:
    """Whether the current viewer may see ``lock`` (a declared name, a :class:`Lock`, or one-off rule arguments),
    in Python (``if can_view("premium"): ...``) and in templates (``{% if can_view("premium") %}``); with
    ``published_at``, about an item published then (see :func:`decision_for`)."""
    return decision_for(lock, published_at=published_at, **rule_kwargs).allowed


def require(lock: LockLike = None, *, published_at: Any = None, **rule_kwargs: Any) -> Decision:
    """The allowing decision of ``lock`` for the current viewer (about an item published at ``published_at``, see
    :func:`decision_for`).

    :raises LockedError: when the viewer may not see it.
    """
    state = get_state()
    target = as_lock(lock, rule_kwargs, state=state)
    decision = _decision(state, target, published_moment(published_at))
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


def locked(
    lock: LockLike | Callable[..., Any] = None,
    /,
    *,
    lock_from: Callable[..., LockLike] | None = None,
    published_at: Any = None,
    **rule_kwargs: Any,
) -> Any:
    """Lock a view: ``@locked("premium")`` (a lock declared in code or made by a creator), ``@locked(tier="Gold")`` or
    ``@locked(min_cents=500)`` (a one-off rule, see :func:`make_rule`), or bare ``@locked`` (any entitled patron).

    Content whose creator picks its lock (a :class:`~flask_patronlock.content.LockField` stored in a
    :class:`~flask_patronlock.content.LockedContentMixin` column) uses ``lock_from``: a function called with the view's
    keyword arguments that returns the lock (a name, ``""`` for public, or a :class:`Lock`)::

        @app.route("/posts/<int:post_id>")
        @locked(lock_from=lambda post_id: db.get_or_404(Post, post_id).lock)
        def post(post_id): ...

    ``published_at``: the publish date of what the view shows, for a lock on "patrons at the time this was
    published" (:attr:`~flask_patronlock.policy.LockRule.patrons_at_publish`): a callable called with the view's
    arguments (``published_at=lambda slug: Post.by_slug(slug).published_at``), or a fixed moment.

    A viewer who may not pass gets :class:`LockedError` (403). ``OPTIONS`` requests pass through; async views work
    (through ``current_app.ensure_sync``). Put it below ``@app.route`` and, if used, below ``@login_required``.
    """
    if lock_from is not None:
        if lock is not None or rule_kwargs:
            raise TypeError("pass lock_from alone, not with a lock name or rule arguments")
        if not callable(lock_from):
            raise TypeError(f"lock_from must be a function of the view's arguments, not {type(lock_from).__name__}")
        chooser = lock_from
        if published_at is not None and not callable(published_at):
            published_at = published_moment(published_at)
        when = published_at

        def per_item(func: F) -> F:
            return _decorate(chooser, func, when)

        return per_item
    if callable(lock) and not isinstance(lock, Lock) and not rule_kwargs:
        return _decorate(Lock(name=None, rule=LockRule()), lock)
    if published_at is not None and not callable(published_at):
        published_at = published_moment(published_at)  # a bad fixed date fails at import time
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
        return _decorate(target, func, published_at)

    return decorator


def _decorate(target: str | Lock | Callable[..., LockLike], func: F, published_at: Any = None) -> F:
    is_async = iscoroutinefunction(func)  # decided once, as Flask's ensure_sync would decide on every call

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _request_now().method not in EXEMPT_METHODS:
            state = get_state()
            if isinstance(target, Lock):
                lock = target
            elif isinstance(target, str):
                lock = named_lock(state, target)
            else:  # lock_from: the content's own lock; None is public here, as an empty name; unknown fails closed
                chosen = target(**kwargs)
                lock = chosen if isinstance(chosen, Lock) else named_lock(state, LockName(chosen or ""))
            at = None
            if published_at is not None:
                at = published_moment(published_at(*args, **kwargs) if callable(published_at) else published_at)
            decision = _decision(state, lock, at)
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


#: the images (by ``mimetype`` or name) a visitor below the lock gets a blurred preview of; other images (SVG, GIF)
#: get the placeholder.
_PREVIEW_TYPES = frozenset({"image/jpeg", "image/png", "image/webp"})


def send_locked_file(
    lock: LockLike,
    path: str | os.PathLike[str],
    *,
    directory: str | os.PathLike[str] | None = None,
    published_at: Any = None,
    **send_kwargs: Any,
) -> Response:
    """Serve a file to viewers who may see ``lock``; anyone else gets a placeholder.

    :param path: the file; with ``directory``, a path inside it, joined safely (``send_from_directory``), which is
        what to use for any path that comes from the URL.
    :param published_at: when the file was published, for a lock on "patrons at the time this was published"
        (:attr:`~flask_patronlock.policy.LockRule.patrons_at_publish`; see :func:`decision_for`).
    :param send_kwargs: passed to ``send_file`` (``mimetype``, ``as_attachment``, ``download_name``, ...).
    :returns: the file (sent by Python, or handed to nginx or Apache: see
        :func:`~flask_patronlock.files.send_allowed_file`); or, for an image (by ``mimetype`` or the file name), a 403
        response with a blurred preview of a JPEG, PNG or WebP picture (:data:`PATRONLOCK_IMAGE_PREVIEWS`,
        :func:`~flask_patronlock.files.send_image_preview`), or, for any other image, without Pillow, or for a file
        that is missing or not what its name says, an SVG placeholder rendered from ``patronlock/placeholder.svg``
        saying what is missing.
    :raises LockedError: for any other file, rendered as the locked page (or JSON).
    """
    target = as_lock(lock)
    decision = decision_for(target, published_at=published_at)
    if decision.allowed:
        from .files import send_allowed_file  # python, X-Accel-Redirect or X-Sendfile: PATRONLOCK_FILE_DELIVERY

        return send_allowed_file(path, directory=directory, **send_kwargs)
    mimetype = send_kwargs.get("mimetype") or mimetypes.guess_type(os.fspath(path))[0] or ""
    if mimetype.startswith("image/"):
        from .files import locked_image_preview, previews_enabled

        if mimetype in _PREVIEW_TYPES and previews_enabled(_app_now()):
            preview = locked_image_preview(target, path, directory)
            if preview is not None:
                return preview
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
    """Install the locks on ``app``: path locks before each request, cache headers after it, the templates, and the
    viewers' freshness (:func:`flask_patronlock.viewers.init_app`). Called by :meth:`PatronLock.init_app
    <flask_patronlock.PatronLock.init_app>`."""
    if app.config.get("PATRONLOCK_PATH_LOCKS"):  # a bad prefix fails at start-up, not on the first request
        _path_locks(app.config["PATRONLOCK_PATH_LOCKS"], "/", configured=True)
    app.before_request(_before_request)
    app.after_request(_after_request)
    app.register_blueprint(templates_blueprint)
    init_viewers(app)
