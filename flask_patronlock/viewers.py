"""The viewer: who is looking at a page, as a lock decision needs to know them.

The viewer of a request is Flask-Login's ``current_user``, whether that user linked a Patreon account, and the stored
patron, read in ONE indexed query, kept in the worker's :class:`~flask_patronlock.viewer_cache.ViewerCache` for at most
``PATRONLOCK_VIEWER_CACHE_SECONDS`` and in ``g._patronlock_viewer`` for the request.

Two ways to say a viewer's record changed, told apart by their names:

* :func:`forget_cached_viewer` drops **this worker's** cached record of any user (``None``: of everyone), in or out of a
  request; flask-patronlock calls it after every change it commits;
* :func:`current_viewer_changed`, in a request, says **the signed-in viewer's own** link or membership just changed: it
  also stamps their session, so that every worker reads them afresh on their next page.

(:func:`forget_viewer` and :func:`viewer_changed` are their deprecated former names.)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from flask import Flask, current_app, g, has_app_context, has_request_context, request, session
from flask.sessions import NullSession
from flask_login import current_user
from werkzeug.local import LocalProxy

from . import signals
from .patron import Patron
from .policy import Viewer
from .state import EXTENSION_KEY, PatronLockState, get_state
from .viewer_cache import ViewerCache

if TYPE_CHECKING:
    from .store import Store

__all__ = [
    "SESSION_STAMP_KEY",
    "ViewerCache",
    "current_patron",
    "current_viewer",
    "current_viewer_changed",
    "forget_cached_viewer",
    "forget_viewer",
    "init_app",
    "use_viewer",
    "viewer_changed",
    "viewer_for",
    "with_comps",
]

# What a request keeps in ``g`` (prefixed names, as every extension's): its viewer, the user it is for, the decisions
# made (locks.py), and whether a decision was made (then the response is marked private).
_G_VIEWER = "_patronlock_viewer"
_G_USER = "_patronlock_user"
_G_DECISIONS = "_patronlock_decisions"
_G_PRIVATE = "_patronlock_private"

# The proxies' own getters, bound once: the page-view path resolves each context object once and then uses the real
# object, instead of paying for a proxy lookup (about a microsecond) at every attribute access.
_app_now: Callable[[], Flask] = current_app._get_current_object  # type: ignore[attr-defined]
_g_now: Callable[[], Any] = g._get_current_object
_request_now: Callable[[], Any] = request._get_current_object  # type: ignore[attr-defined]
_session_now: Callable[[], Any] = session._get_current_object  # type: ignore[attr-defined]
_user_now: Callable[[], Any] = current_user._get_current_object


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
        loader = state.declarations.admin_loader
        is_admin = bool(loader(user)) if loader is not None else False
    if is_admin:
        return Viewer(authenticated=True, linked=viewer.linked, is_admin=True, patron=viewer.patron)
    # Comps come from the settings cache (every worker re-reads it within PATRONLOCK_SETTINGS_CHECK_SECONDS of a grant
    # or revoke), never from the viewer cache: a comp costs a page view no query and needs no viewer forgotten.
    if state.settings.current().comps:
        return with_comps(viewer, state, user_id)
    return viewer


def with_comps(viewer: Viewer, state: PatronLockState, user_id: str | None) -> Viewer:
    """``viewer`` carrying the comps of the local user ``user_id`` and of its stored patron, from the settings cache
    (:meth:`~flask_patronlock.settings_cache.SettingsSnapshot.comps_for`)."""
    comps = state.settings.current().comps_for(user_id, viewer.patron)
    if not comps:
        return viewer
    return Viewer(authenticated=viewer.authenticated, linked=viewer.linked, is_admin=viewer.is_admin,
                  patron=viewer.patron, comps=comps)


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
        viewer = _load_viewer(state if state is not None else get_state(), request_values)
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
    request (``@locked``, :func:`~flask_patronlock.locks.can_view`, templates) is made for it. For requests that say
    who they are some other way than the session cookie (a private feed's token, :mod:`flask_patronlock.feeds`)."""
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


def forget_cached_viewer(user_id: str | None = None, *, app: Flask | None = None) -> None:
    """Drop this worker's cached viewer record of the local user ``user_id`` (``None``: of every user) in ``app``
    (default: the current app), so the next page view of that user in this worker reads the database. In a request of
    that app for that user (or with ``None``), the request's loaded viewer and decisions are dropped too.

    flask-patronlock calls it after every change it commits (``patron-changed``, ``patron-linked``,
    ``patron-unlinked``); call it after changing ``patronlock_accounts`` or ``patronlock_patrons`` any other way.
    Other workers see the change within ``PATRONLOCK_VIEWER_CACHE_SECONDS``; for the viewer's own actions use
    :func:`current_viewer_changed`, which reaches every worker at once.
    """
    target: Any = app if app is not None else current_app._get_current_object()  # type: ignore[attr-defined]
    state: PatronLockState | None = target.extensions.get(EXTENSION_KEY)
    if state is None:
        raise RuntimeError("flask-patronlock is not registered on this app")
    key = str(user_id) if user_id is not None else None
    state.viewers.forget(key)
    in_request = has_request_context() and current_app._get_current_object() is target  # type: ignore[attr-defined]
    if in_request and (key is None or _request_user_id(target) == key):
        _forget_request_viewer()


def current_viewer_changed() -> None:
    """The signed-in viewer's own link or membership just changed (they connected Patreon, refreshed their status, or
    unlinked): call it in that request, after the change is committed.

    It forgets this worker's cached record of the viewer (:func:`forget_cached_viewer`) and stamps the viewer's
    session, so that on every worker a record read before now is not used for this session: their very next page is
    fresh, wherever it is served. (A ``patron-changed``, ``patron-linked`` or ``patron-unlinked`` signal about the user
    signed in to the current request also stamps the session, but a refresh that finds nothing new sends none: call
    this anyway.) Without a session (no ``SECRET_KEY``) only this worker's record is forgotten.

    :raises RuntimeError: outside a request (use :func:`forget_cached_viewer` there).
    """
    if not has_request_context():
        raise RuntimeError(
            "current_viewer_changed() stamps the session of a request; outside a request use forget_cached_viewer() "
            "(formerly forget_viewer())"
        )
    state = get_state()
    user = _current_user(state.app)
    user_id = user.get_id() if user is not None and getattr(user, "is_authenticated", False) else None
    _stamp_session(state)
    if user_id is not None:
        forget_cached_viewer(str(user_id), app=state.app)
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
    state: PatronLockState | None = getattr(app, "extensions", {}).get(EXTENSION_KEY)
    changed = {str(u) for u in user_ids if u is not None}
    if state is None or not changed:  # most patrons of a run are linked to nobody here
        return
    current = _request_user_id(app)
    for user_id in changed:
        forget_cached_viewer(user_id, app=app)
        if user_id == current:
            _stamp_session(state)


def _on_patron_changed(sender: Any, *, patron: Patron | None = None, previous: Patron | None = None,
                       **kwargs: Any) -> None:
    """``patron-changed`` (sent after commit): the stored patron of its linked local user (before and after) moved."""
    _on_user_changed(sender, (getattr(patron, "local_user_id", None), getattr(previous, "local_user_id", None)))


def _on_link_changed(sender: Any, *, user_id: Any = None, **kwargs: Any) -> None:
    """``patron-linked`` / ``patron-unlinked`` (sent after commit): the local user's link moved."""
    _on_user_changed(sender, (str(user_id) if user_id is not None else None,))


def init_app(app: Flask) -> None:
    """Keep the viewers of ``app`` fresh: a request's viewer is dropped when Flask-Login logs someone in or out, and a
    cached record when flask-patronlock commits a change to that user's patron or link. Called by the locks'
    ``init_app``."""
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


# -- the former names ------------------------------------------------------------------------------------------------


def forget_viewer(user_id: str | None = None, *, app: Flask | None = None) -> None:
    """Deprecated name of :func:`forget_cached_viewer` (it was too easily taken for :func:`viewer_changed`).

    .. deprecated:: unreleased
        Use :func:`forget_cached_viewer`.
    """
    warnings.warn(
        "flask_patronlock.forget_viewer is deprecated: use flask_patronlock.viewers.forget_cached_viewer",
        DeprecationWarning,
        stacklevel=2,
    )
    forget_cached_viewer(user_id, app=app)


def viewer_changed() -> None:
    """Deprecated name of :func:`current_viewer_changed` (it was too easily taken for :func:`forget_viewer`).

    .. deprecated:: unreleased
        Use :func:`current_viewer_changed`.
    """
    warnings.warn(
        "flask_patronlock.viewer_changed is deprecated: use flask_patronlock.viewers.current_viewer_changed",
        DeprecationWarning,
        stacklevel=2,
    )
    current_viewer_changed()
