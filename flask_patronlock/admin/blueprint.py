"""The ``patronlock_admin`` blueprint: who may enter, CSRF on every change, and the helpers every page uses.

Every request to the blueprint (its static CSS excepted) passes :func:`_guard` first:

* no ``@patronlock.admin_loader`` registered: 403 with a page that shows the code to register one (nobody is an
  admin by default);
* not signed in: Flask-Login's ``unauthorized()`` (a redirect to its ``login_view``), or 403 without a login view;
* signed in but the callback says no: 403;
* a POST without a valid Flask-WTF CSRF token (form field ``csrf_token`` or header ``X-CSRFToken``): 400, nothing
  changed. ``WTF_CSRF_ENABLED = False`` switches the check off, as it does for Flask-WTF;
* a NUL character in the path, a query argument or a form field: 400 (no setting, id or search holds one, and
  PostgreSQL text cannot store one).

Views are exempt from the site-wide and path locks (an admin passes them anyway; a non-admin gets the admin 403).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from flask import Blueprint, Response, current_app, g, render_template, request
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import generate_csrf
from werkzeug.exceptions import BadRequest, Forbidden

from ..csrf import check_csrf
from ..formatting import ENTITLEMENT_WORDS, EVENT_WORDS, PATRON_STATUS_WORDS, REASON_WORDS, SOURCE_WORDS
from ..i18n import day_text, moment_text, words
from ..locks import lock_exempt
from ..state import get_state

__all__ = [
    "NAV",
    "AdminBadRequest",
    "AdminForbidden",
    "admin_user",
    "admin_user_id",
    "blueprint",
    "nav",
    "route",
]

F = TypeVar("F", bound=Callable[..., Any])

_STATIC = Path(__file__).resolve().parent.parent / "static"

blueprint = Blueprint(
    "patronlock_admin",
    __name__,
    static_folder=str(_STATIC),
    static_url_path="/static",
)

_G_USER = "_patronlock_admin_user"

#: the navigation: (endpoint, label), in order; each page module adds its own entry when imported.
NAV: list[tuple[str, str]] = []


def nav(endpoint: str, label: str) -> None:
    """Add a page to the navigation (once)."""
    if (endpoint, label) not in NAV:
        NAV.append((endpoint, label))
#: methods that change nothing and so need no CSRF token.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class AdminForbidden(Forbidden):
    """403 from the settings page, rendered as ``patronlock/admin/forbidden.html``.

    :ivar kind: ``no_callback`` (no admin callback registered), ``no_login`` (the app has no Flask-Login),
        ``anonymous`` (not signed in and no login view to send them to) or ``not_admin``.
    """

    def __init__(self, kind: str) -> None:
        super().__init__(description=f"settings page: {kind}")
        self.kind = kind

    def get_response(self, environ: Any = None, scope: Any = None) -> Response:
        return _error_page("patronlock/admin/forbidden.html", 403, kind=self.kind)


class AdminBadRequest(BadRequest):
    """400 from the settings page (a missing or expired CSRF token): nothing was changed."""

    def __init__(self, reason: str) -> None:
        super().__init__(description=reason)
        self.reason = reason

    def get_response(self, environ: Any = None, scope: Any = None) -> Response:
        return _error_page("patronlock/admin/bad_request.html", 400, reason=self.reason)


def _error_page(template: str, status: int, **context: Any) -> Response:
    """An error page of the settings page, kept out of every cache."""
    response = Response(render_template(template, **context), status, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    return response


def admin_user() -> Any:
    """The signed-in admin of this request (set by the guard)."""
    return g.get(_G_USER)


def admin_user_id() -> str | None:
    """The signed-in admin's user id, as recorded in audit rows (``by=``)."""
    user = admin_user()
    if user is None:
        return None
    user_id = user.get_id()
    return str(user_id) if user_id is not None else None


def route(rule: str, methods: tuple[str, ...] = ("GET",)) -> Callable[[F], F]:
    """``blueprint.route`` for an admin page: also exempt from the site-wide and path locks."""

    def decorator(func: F) -> F:
        blueprint.add_url_rule(rule, view_func=lock_exempt(func), methods=list(methods))
        return func

    return decorator


@blueprint.before_request
def _guard() -> ResponseReturnValue | None:
    if request.endpoint == f"{blueprint.name}.static":
        return None  # the stylesheet: public, so even the 403 page has its style
    st = get_state()
    loader = st.extension._admin_loader
    if loader is None:
        raise AdminForbidden("no_callback")
    manager = getattr(current_app, "login_manager", None)
    if manager is None:
        raise AdminForbidden("no_login")
    from flask_login import current_user

    user = current_user._get_current_object()
    if not getattr(user, "is_authenticated", False):
        if manager.login_view or manager.unauthorized_callback:
            response: ResponseReturnValue = manager.unauthorized()
            return response
        raise AdminForbidden("anonymous")
    if not loader(user):
        raise AdminForbidden("not_admin")
    setattr(g, _G_USER, user)
    if _holds_nul():
        raise BadRequest("A value in this request holds a NUL character.")
    if request.method not in SAFE_METHODS:
        check_csrf(lambda reason: AdminBadRequest(reason if reason is not None else "The CSRF token is invalid."))
    return None


def _holds_nul() -> bool:
    multis = [request.args] if request.method in SAFE_METHODS else [request.args, request.form]
    texts = [str(v) for v in (request.view_args or {}).values()]
    texts += [text for multi in multis for key, values in multi.lists() for text in (key, *values)]
    return any("\x00" in text for text in texts)


@blueprint.after_request
def _no_store(response: Response) -> Response:
    if request.endpoint != f"{blueprint.name}.static":
        # settings pages show patrons' names and e-mails: never cached, never sent as a Referer
        response.headers["Cache-Control"] = "no-store"
        response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


@blueprint.context_processor
def _template_globals() -> dict[str, Any]:
    return {
        "admin_csrf_token": generate_csrf,
        "admin_user": admin_user,
        "admin_nav": list(NAV),
        # dates, times and codes in a creator's words, in the site's locale (flask_patronlock.i18n):
        # ``{{ day(d) }}``, ``{{ moment(t) }}``, ``{{ words(PATRON_STATUS_WORDS, p.patron_status) }}``
        "day": _day,
        "moment": moment_text,
        "words": words,
        "PATRON_STATUS_WORDS": PATRON_STATUS_WORDS,
        "ENTITLEMENT_WORDS": ENTITLEMENT_WORDS,
        "SOURCE_WORDS": SOURCE_WORDS,
        "REASON_WORDS": REASON_WORDS,
        "EVENT_WORDS": EVENT_WORDS,
    }


def _day(when: datetime | None) -> str:
    """``"4 January 2027"`` (German: ``"4. Januar 2027"``); ``""`` for no date."""
    return day_text(when)
