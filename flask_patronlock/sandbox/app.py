"""The sandbox's Flask app: Patreon's OAuth endpoints, API v2, and ``/_sandbox`` scenario controls.

Paths are Patreon's, relative to wherever the app is served (a root, or a prefix under werkzeug's
``DispatcherMiddleware``; every link and redirect it renders goes through ``url_for``):

* ``GET|POST /oauth2/authorize``: the consent page (pick a test patron or create one, Approve / Deny). For tests,
  ``sandbox_user=<user id or email>&sandbox_decision=approve|deny`` answers at once without a page (an unknown
  email creates the user).
* ``POST /api/oauth2/token``: ``authorization_code`` (single use, bound to client and redirect URI, PKCE S256,
  10 minutes of sandbox time) and ``refresh_token`` (rotating). Client credentials in the body, the query string
  or HTTP Basic. Errors: 401 ``invalid_client``, 401 ``invalid_grant``, 400 ``invalid_request`` /
  ``unsupported_grant_type``.
* ``/api/oauth2/v2/``: ``identity``, ``campaigns``, ``campaigns/<id>``, ``campaigns/<id>/members``,
  ``members/<id>``, ``webhooks`` (GET, POST), ``webhooks/<id>`` (GET, PATCH, DELETE). JSON:API with ``fields[...]``
  and ``include`` (see :mod:`.documents` for the attribute rules); errors in Patreon's format.
* ``/_sandbox/...``: JSON controls mirroring :class:`~.state.Sandbox`'s Python API. ``GET /_sandbox/state`` (and
  ``GET /``) summarises everything. Whoever may use them is the app's ``control_guard``'s decision (see
  :func:`create_sandbox_app`); a webhook registered through them must point at the sandbox's own origin or a host
  the app was told to allow. ``/_sandbox/avatar/...`` (images Patreon's documents link to) is always public.
* ``GET|POST /checkout/<campaign id>``: a pledge page (the campaign's ``pledge_url``), for trying a site by hand.

The routes live by group on one blueprint: :mod:`.authorize` (the consent page, the token endpoint, checkout and
avatars), :mod:`.api` (API v2) and :mod:`.controls` (``/_sandbox``), sharing :mod:`.web`; this module builds the
app and guards the controls.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, request
from werkzeug.exceptions import HTTPException

from . import api, authorize, controls  # noqa: F401  (importing a route module adds its routes to the blueprint)
from .state import Sandbox
from .web import (
    CONTROLS_KEY,
    EXTENSION_KEY,
    ControlGuard,
    Controls,
    api_error,
    blueprint,
    get_sandbox,
    json_response,
)

__all__ = [
    "CONTROL_TOKEN_HEADER",
    "EXTENSION_KEY",
    "ControlGuard",
    "blueprint",
    "create_sandbox_app",
    "get_sandbox",
    "token_guard",
]


#: the header (or, for a browser, the ``sandbox_token`` query parameter) carrying a :func:`token_guard`'s token.
CONTROL_TOKEN_HEADER = "X-Sandbox-Token"


def create_sandbox_app(
    sandbox: Sandbox | None = None,
    *,
    control_guard: ControlGuard | None = None,
    webhook_hosts: Iterable[str] = (),
) -> Flask:
    """A Flask app serving ``sandbox`` (a new :class:`~.state.Sandbox` if None) as Patreon would.

    The sandbox is at ``app.extensions["patronlock_sandbox"]``. Serve it with :class:`~.server.SandboxServer`,
    mount it under a prefix with ``DispatcherMiddleware``, or drive it with ``app.test_client()``.

    :param control_guard: who may use the ``/_sandbox`` controls (they can mint tokens for any user, change anyone's
        pledge and make the sandbox POST to its webhooks). ``None`` leaves them open, for a sandbox only its own
        test reaches (``app.test_client()``, the ``patreon_sandbox`` fixture on loopback); one served where others
        can reach it needs a guard: :func:`token_guard` (what ``python -m flask_patronlock.sandbox`` uses), or the
        host site's own check (the example site admits its admin).
    :param webhook_hosts: hosts (``"host"`` for any port, ``"host:port"``) a webhook registered through the
        controls may point at besides the sandbox's own origin (:attr:`Sandbox.url <.state.Sandbox.url>`).
        Webhooks registered through Patreon's API (with the creator's token) or in Python are not limited.
    :raises ValueError: a ``webhook_hosts`` entry that is not a host or ``host:port``.
    """
    app = Flask(__name__)
    app.extensions[EXTENSION_KEY] = sandbox if sandbox is not None else Sandbox()
    app.extensions[CONTROLS_KEY] = Controls(control_guard, tuple(_parse_host(h) for h in webhook_hosts))
    app.register_blueprint(blueprint)
    app.register_error_handler(HTTPException, _http_error)
    return app


def token_guard(token: str) -> ControlGuard:
    """A :data:`ControlGuard` admitting the requests that carry ``token`` in the ``X-Sandbox-Token`` header (or,
    to look at ``/_sandbox/state`` in a browser, the ``sandbox_token`` query parameter).

    :raises ValueError: an empty token.
    """
    if not token:
        raise ValueError("the control token must not be empty")
    expected = token.encode("utf-8")

    def guard() -> str | None:
        given = request.headers.get(CONTROL_TOKEN_HEADER) or request.args.get("sandbox_token") or ""
        if hmac.compare_digest(given.encode("utf-8"), expected):
            return None
        return (
            f"This sandbox's controls need its control token (printed when it started): send it in the "
            f"{CONTROL_TOKEN_HEADER} header, or add ?sandbox_token=... to the URL."
        )

    return guard


def _parse_host(entry: str) -> tuple[str, int | None]:
    parts = urlsplit(f"//{entry.strip()}")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if not parts.hostname or port == -1 or parts.path or parts.username or parts.password:
        raise ValueError(f"webhook_hosts takes a host or host:port, not {entry!r}")
    return parts.hostname.lower(), port


def _http_error(exc: HTTPException) -> Response | HTTPException:
    path = request.path
    status = exc.code or 500
    if path.startswith("/api/"):
        return api_error(status, exc.description or exc.name)
    if path.startswith("/_sandbox/"):
        return json_response({"error": exc.description or exc.name}, status)
    return exc


def _is_control(path: str) -> bool:
    return path == "/" or (path.startswith("/_sandbox/") and not path.startswith("/_sandbox/avatar/"))


@blueprint.before_app_request
def _before() -> Response | None:
    sandbox = get_sandbox()
    guard = current_app.extensions[CONTROLS_KEY].guard
    if guard is not None and _is_control(request.path):
        refusal = guard()
        if refusal is not None:
            return json_response({"error": refusal}, 403)
    sandbox.learn_url(request.url_root)
    if request.path.startswith("/api/") and sandbox.api_down:
        return api_error(503, "The sandbox API is down (api_down is set).")
    return None


@blueprint.after_app_request
def _after(response: Response) -> Response:
    if request.path.startswith("/api/"):
        get_sandbox().log_api(request.method, request.path, response.status_code)
    return response
