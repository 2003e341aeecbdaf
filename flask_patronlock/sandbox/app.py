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
"""

from __future__ import annotations

import hmac
import html
import json
import math
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn
from urllib.parse import urlencode, urlsplit

from flask import Blueprint, Flask, Response, abort, current_app, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from .documents import WEBHOOK_ATTRIBUTES, QueryError, Renderer, parse_fields, parse_include
from .entities import (
    ALL_MEMBER_TRIGGERS,
    ALL_SCOPES,
    DEFAULT_USER_SCOPES,
    Fault,
    NotFoundError,
    OAuthError,
    SandboxError,
    Token,
    User,
)
from .scenarios import SCENARIOS
from .scenarios import describe as describe_scenarios
from .state import Sandbox

__all__ = [
    "CONTROL_TOKEN_HEADER",
    "EXTENSION_KEY",
    "ControlGuard",
    "blueprint",
    "create_sandbox_app",
    "get_sandbox",
    "token_guard",
]

#: where the app keeps its sandbox: ``app.extensions["patronlock_sandbox"]``.
EXTENSION_KEY = "patronlock_sandbox"
_CONTROLS_KEY = "patronlock_sandbox_controls"

#: ``guard() -> None | reason``: called in the sandbox app's request context before every ``/_sandbox`` control;
#: ``None`` lets the request through, a string refuses it with a 403 that shows the string.
ControlGuard = Callable[[], "str | None"]

#: the header (or, for a browser, the ``sandbox_token`` query parameter) carrying a :func:`token_guard`'s token.
CONTROL_TOKEN_HEADER = "X-Sandbox-Token"

JSONAPI_MIMETYPE = "application/vnd.api+json"
DEFAULT_PAGE_COUNT = 20
MAX_PAGE_COUNT = 1000

IDENTITY_INCLUDES = (
    "memberships",
    "campaign",
    "memberships.campaign",
    "memberships.currently_entitled_tiers",
    "memberships.user",
    "memberships.address",
)
CAMPAIGN_INCLUDES = ("tiers", "creator", "benefits", "goals")
MEMBER_INCLUDES = ("address", "campaign", "currently_entitled_tiers", "user")
WEBHOOK_INCLUDES = ("campaign",)

# status -> (code, code_name, title), modelled on the errors Patreon answers with
_ERRORS: dict[int, tuple[int | None, str, str]] = {
    400: (3, "ParameterInvalid", "Invalid parameter."),
    401: (1, "Unauthorized", "Unauthorized"),
    403: (2, "Forbidden", "Forbidden"),
    404: (4, "NotFound", "Not Found"),
    405: (5, "MethodNotAllowed", "Method Not Allowed"),
    429: (None, "RequestThrottled", "You have made too many attempts. Please try again later."),
    500: (6, "InternalServerError", "Internal Server Error"),
    502: (7, "BadGateway", "Bad Gateway"),
    503: (8, "ServiceUnavailable", "Service Unavailable"),
    504: (9, "GatewayTimeout", "Gateway Timeout"),
}
_UNAUTHORIZED_DETAIL = (
    "The server could not verify that you are authorized to access the URL requested. You either supplied the "
    "wrong credentials (e.g. a bad password), or your browser doesn't understand how to supply the credentials "
    "required."
)

blueprint = Blueprint("patronlock_sandbox", __name__, template_folder="templates")


def get_sandbox() -> Sandbox:
    """The sandbox of the current app."""
    sandbox: Sandbox = current_app.extensions[EXTENSION_KEY]
    return sandbox


@dataclass(frozen=True)
class _Controls:
    guard: ControlGuard | None
    #: (host, port or None for any port) pairs a webhook registered through the controls may point at.
    webhook_hosts: tuple[tuple[str, int | None], ...]


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
    app.extensions[_CONTROLS_KEY] = _Controls(control_guard, tuple(_parse_host(h) for h in webhook_hosts))
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


def _origin(url: str) -> tuple[str, str, int | None]:
    """``(scheme, host, port)`` of an absolute http(s) URL, the port made explicit.

    :raises ValueError: not an absolute http(s) URL with a host.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an absolute http(s) URL")
    port = parts.port  # ValueError for a port that is not a number
    return parts.scheme, parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80)


def _webhook_target_refusal(uri: str) -> str | None:
    """Why the controls refuse a webhook to ``uri``, or None. A flush POSTs every queued event to each webhook, so
    a webhook on any host a caller names would make the sandbox send requests wherever they like (the metadata
    service at 169.254.169.254, a service beside the site); the controls deliver only to the sandbox's own origin
    (the site it is mounted in) and the hosts its app was created to allow."""
    try:
        scheme, host, port = _origin(uri)
    except ValueError:
        return f"webhook uri {uri!r} is not an absolute http(s) URL"
    own = _origin(get_sandbox().base_url)
    allowed = current_app.extensions[_CONTROLS_KEY].webhook_hosts
    if (scheme, host, port) == own or any(h == host and p in (None, port) for h, p in allowed):
        return None
    return (
        f"webhook uri {uri!r} is not on this sandbox's own site ({own[0]}://{own[1]}:{own[2]}); the controls only "
        "send webhooks there, or to a host the sandbox was started to allow (webhook_hosts, --webhook-host)"
    )


# -- responses ------------------------------------------------------------------------------------------------------


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _json(obj: Any, status: int = 200, *, mimetype: str = "application/json", headers: Any = None) -> Response:
    return Response(_dumps(obj), status=status, mimetype=mimetype, headers=headers)


def api_error(
    status: int,
    detail: str,
    *,
    code_name: str | None = None,
    title: str | None = None,
    extra: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """An error response in Patreon's format: ``{"errors": [{code, code_name, detail, id, status, title}]}`` with
    ``status`` as a string."""
    code, default_name, default_title = _ERRORS.get(status, (None, "Error", "Error"))
    error: dict[str, Any] = {
        "code": code,
        "code_name": code_name or default_name,
        "detail": detail,
        "id": str(uuid.uuid4()),
        "status": str(status),
        "title": title or default_title,
    }
    if extra:
        error.update(extra)
    return _json({"errors": [error]}, status, mimetype=JSONAPI_MIMETYPE, headers=dict(headers or {}))


def _abort(response: Response) -> NoReturn:
    abort(response)


def _http_error(exc: HTTPException) -> Response | HTTPException:
    path = request.path
    status = exc.code or 500
    if path.startswith("/api/"):
        return api_error(status, exc.description or exc.name)
    if path.startswith("/_sandbox/"):
        return _json({"error": exc.description or exc.name}, status)
    return exc


def _root() -> str:
    return request.url_root.rstrip("/")


def _api_root() -> str:
    return f"{_root()}/api/oauth2/v2"


def _is_control(path: str) -> bool:
    return path == "/" or (path.startswith("/_sandbox/") and not path.startswith("/_sandbox/avatar/"))


@blueprint.before_app_request
def _before() -> Response | None:
    sandbox = get_sandbox()
    guard = current_app.extensions[_CONTROLS_KEY].guard
    if guard is not None and _is_control(request.path):
        refusal = guard()
        if refusal is not None:
            return _json({"error": refusal}, 403)
    sandbox.learn_url(request.url_root)
    if request.path.startswith("/api/") and sandbox.api_down:
        return api_error(503, "The sandbox API is down (api_down is set).")
    return None


@blueprint.after_app_request
def _after(response: Response) -> Response:
    if request.path.startswith("/api/"):
        get_sandbox().log_api(request.method, request.path, response.status_code)
    return response


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def _auth(*scopes: str) -> Token:
    sandbox = get_sandbox()
    token = sandbox.authenticate(_bearer())
    if token is None:
        _abort(api_error(401, _UNAUTHORIZED_DETAIL))
    wait = sandbox.take_token_call(token.access_token)
    if wait > 0:
        seconds = math.ceil(wait)
        _abort(
            api_error(
                429,
                "You have made too many attempts. Please try again later.",
                extra={"retry_after_seconds": seconds},
                headers={"Retry-After": str(seconds)},
            )
        )
    missing = [s for s in scopes if s not in token.scopes]
    if missing:
        _abort(api_error(401, f"This token lacks the scope(s): {', '.join(missing)}."))
    return token


def _query() -> tuple[dict[str, tuple[str, ...]], Mapping[str, str]]:
    try:
        return parse_fields(request.args), request.args
    except QueryError as exc:
        _abort(api_error(400, str(exc), code_name="ParameterInvalidOnType"))


def _include(allowed: tuple[str, ...]) -> frozenset[str]:
    try:
        return parse_include(request.args.get("include"), allowed)
    except QueryError as exc:
        _abort(api_error(400, str(exc), code_name="ParameterInvalid"))


def _is_creator(sandbox: Sandbox, token: Token) -> bool:
    return token.user_id == sandbox.campaign.creator_id


def _renderer(
    sandbox: Sandbox,
    token: Token,
    fields: dict[str, tuple[str, ...]],
    include: frozenset[str],
    *,
    email_scope: str = "campaigns.members[email]",
    defaults: Mapping[str, tuple[str, ...]] | None = None,
) -> Renderer:
    email = email_scope in token.scopes
    return Renderer(
        sandbox,
        root=_root(),
        fields=fields,
        include=include,
        defaults=defaults,
        member_email=email,
        user_email=email,
        addresses="campaigns.members.address" in token.scopes,
    )


def _api_response(doc: Any, status: int = 200) -> Response:
    return _json(doc, status, mimetype=JSONAPI_MIMETYPE)


# -- OAuth ----------------------------------------------------------------------------------------------------------


def _with_query(uri: str, params: Mapping[str, str | None]) -> str:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    if not query:
        return uri
    base, _, fragment = uri.partition("#")
    joined = f"{base}{'&' if '?' in base else '?'}{query}"
    return f"{joined}#{fragment}" if fragment else joined


def _error_page(message: str, status: int = 400) -> Response:
    body = render_template("patronlock_sandbox/error.html", message=message, status=status)
    return Response(body, status=status, mimetype="text/html")


@blueprint.route("/oauth2/authorize", methods=["GET", "POST"])
def authorize() -> Response:
    """Patreon's consent page; see the module docstring for the non-interactive test mode."""
    sandbox = get_sandbox()
    values = request.values
    client_id = values.get("client_id")
    redirect_uri = values.get("redirect_uri")
    state = values.get("state")
    if not sandbox.check_client(client_id):
        return _error_page("Unknown client_id: no OAuth client with that id exists in this sandbox.")
    if not redirect_uri or not redirect_uri.startswith(("http://", "https://")):
        return _error_page("redirect_uri is missing or is not an absolute http(s) URL.")
    if sandbox.redirect_uris is not None and redirect_uri not in sandbox.redirect_uris:
        return _error_page("redirect_uri is not registered for this client.")
    assert client_id is not None

    def fail(error: str, description: str | None = None) -> Response:
        params = {"error": error, "error_description": description, "state": state}
        return redirect(_with_query(redirect_uri, params), 302)  # type: ignore[return-value]

    if values.get("response_type") != "code":
        return fail("unsupported_response_type", "response_type must be code")
    challenge = values.get("code_challenge") or None
    method = values.get("code_challenge_method") or None
    if challenge is not None and method != "S256":
        return fail("invalid_request", "code_challenge_method must be S256")
    if challenge is None and method is not None:
        return fail("invalid_request", "code_challenge_method without code_challenge")
    requested = sandbox.parse_scopes(values.get("scope"))
    unknown = sorted(s for s in requested if s not in _KNOWN_SCOPES)
    if unknown:
        return fail("invalid_scope", f"unknown scope(s): {' '.join(unknown)}")
    scopes = requested or frozenset(DEFAULT_USER_SCOPES)

    decision = values.get("sandbox_decision") or (values.get("decision") if request.method == "POST" else None)
    if decision is None:
        return _consent_page(sandbox, scopes)
    if decision == "deny":
        return fail("access_denied", "The user denied access.")
    if decision != "approve":
        return _error_page("sandbox_decision must be approve or deny.")
    try:
        user = _chosen_user(sandbox, values)
    except SandboxError as exc:
        if values.get("sandbox_decision"):
            return _error_page(str(exc))
        return _consent_page(sandbox, scopes, error=str(exc))
    code = sandbox.create_code(
        client_id=client_id,
        redirect_uri=redirect_uri,
        user=user,
        scopes=scopes,
        code_challenge=challenge,
        code_challenge_method=method,
    )
    return redirect(_with_query(redirect_uri, {"code": code, "state": state}), 302)  # type: ignore[return-value]


_KNOWN_SCOPES = frozenset((*ALL_SCOPES, "campaigns.posts"))


def _chosen_user(sandbox: Sandbox, values: Mapping[str, str]) -> User:
    ref = (values.get("sandbox_user") or values.get("user_id") or "").strip()
    new_email = (values.get("new_email") or "").strip()
    if new_email:
        with sandbox.lock:
            try:
                return sandbox.user(new_email)
            except NotFoundError:
                return sandbox.add_user(new_email, full_name=(values.get("new_name") or "").strip() or None)
    if not ref:
        raise SandboxError("Choose a test patron, or give an email to create one.")
    try:
        return sandbox.user(ref)
    except NotFoundError:
        if "@" in ref:
            return sandbox.add_user(ref)
        raise


_CONSENT_LIST_LIMIT = 50
_OAUTH_PARAMS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
)


def _consent_page(sandbox: Sandbox, scopes: frozenset[str], error: str | None = None) -> Response:
    with sandbox.lock:
        rows = []
        for user in sandbox.users[:_CONSENT_LIST_LIMIT]:
            member = sandbox.member_for_user(user.id)
            if member is None:
                status = "creator" if user.is_creator else "no membership"
            else:
                titles = ", ".join(sandbox.tier(t).title for t in member.tier_ids)
                status = f"{member.patron_status or 'free member'}{f' · {titles}' if titles else ''}"
            rows.append({"id": user.id, "name": user.full_name, "email": user.email or "", "status": status})
        total = len(sandbox.users)
    hidden = {k: v for k, v in request.values.items() if k in _OAUTH_PARAMS}
    body = render_template(
        "patronlock_sandbox/authorize.html",
        users=rows,
        total_users=total,
        hidden=hidden,
        scopes=sorted(scopes),
        error=error,
        action=url_for("patronlock_sandbox.authorize"),
    )
    return Response(body, mimetype="text/html")


@blueprint.route("/api/oauth2/token", methods=["POST"])
def token() -> Response:
    """Patreon's token endpoint (form body or query string; client secret in the body or HTTP Basic)."""
    sandbox = get_sandbox()
    params: dict[str, str] = dict(request.args.items())
    params.update(request.form.items())
    client_id = params.get("client_id")
    client_secret = params.get("client_secret")
    auth = request.authorization
    if auth is not None and auth.type == "basic" and auth.username:
        client_id, client_secret = auth.username, auth.password
    no_store = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    if not client_secret or not sandbox.check_client(client_id, client_secret):
        return _json({"error": "invalid_client"}, 401, headers=no_store)
    assert client_id is not None
    grant_type = params.get("grant_type")
    try:
        if grant_type == "authorization_code":
            issued = sandbox.exchange_code(
                client_id=client_id,
                code=params.get("code"),
                redirect_uri=params.get("redirect_uri"),
                code_verifier=params.get("code_verifier"),
            )
        elif grant_type == "refresh_token":
            issued = sandbox.refresh(client_id=client_id, refresh_token=params.get("refresh_token"))
        else:
            return _json({"error": "unsupported_grant_type"}, 400, headers=no_store)
    except OAuthError as exc:
        body = {"error": exc.error}
        if exc.description:
            body["error_description"] = exc.description
        return _json(body, exc.status, headers=no_store)
    return _json(issued.response(), headers=no_store)


# -- API v2 ---------------------------------------------------------------------------------------------------------


@blueprint.route("/api/oauth2/v2/identity")
def identity() -> Response:
    """The token's user; ``include=memberships[...]``, ``campaign``. Email needs the ``identity[email]`` scope."""
    sandbox = get_sandbox()
    token = _auth("identity")
    fields, _ = _query()
    include = _include(IDENTITY_INCLUDES)
    with sandbox.lock:
        user = sandbox.user(token.user_id)
        renderer = _renderer(sandbox, token, fields, include, email_scope="identity[email]")
        renderer.mark_primary("user", user.id)
        data = renderer.user(user)
        doc = renderer.document(data, links={"self": f"{_api_root()}/user/{user.id}"})
    return _api_response(doc)


@blueprint.route("/api/oauth2/v2/campaigns")
def campaigns() -> Response:
    """The token user's campaigns (the sandbox campaign for the creator's token, none for patrons')."""
    sandbox = get_sandbox()
    token = _auth("campaigns")
    fields, _ = _query()
    include = _include(CAMPAIGN_INCLUDES)
    with sandbox.lock:
        renderer = _renderer(sandbox, token, fields, include)
        owned = [sandbox.campaign] if _is_creator(sandbox, token) else []
        for campaign in owned:
            renderer.mark_primary("campaign", campaign.id)
        data = [renderer.campaign(c) for c in owned]
        doc = renderer.document(data, meta={"pagination": {"cursors": {"next": None}, "total": len(owned)}})
    return _api_response(doc)


def _own_campaign(sandbox: Sandbox, token: Token, campaign_id: str) -> None:
    if campaign_id != sandbox.campaign.id:
        _abort(api_error(404, f"No campaign {campaign_id}."))
    if not _is_creator(sandbox, token):
        _abort(api_error(403, "Only the campaign's creator may see this."))


@blueprint.route("/api/oauth2/v2/campaigns/<campaign_id>")
def campaign(campaign_id: str) -> Response:
    """One campaign; ``include=tiers,creator`` (``benefits``, ``goals`` are accepted and empty)."""
    sandbox = get_sandbox()
    token = _auth("campaigns")
    fields, _ = _query()
    include = _include(CAMPAIGN_INCLUDES)
    _own_campaign(sandbox, token, campaign_id)
    with sandbox.lock:
        renderer = _renderer(sandbox, token, fields, include)
        renderer.mark_primary("campaign", campaign_id)
        data = renderer.campaign(sandbox.campaign)
        doc = renderer.document(data, links={"self": f"{_api_root()}/campaigns/{campaign_id}"})
    return _api_response(doc)


@blueprint.route("/api/oauth2/v2/campaigns/<campaign_id>/members")
def members(campaign_id: str) -> Response:
    """The campaign's members, a page at a time (``page[count]`` default 20, at most 1000; ``page[cursor]``),
    with the next page in both ``links.next`` and ``meta.pagination.cursors.next`` and the member count in
    ``meta.pagination.total``. Faults injected with :meth:`Sandbox.add_fault` act here."""
    sandbox = get_sandbox()
    token = _auth("campaigns.members")
    fields, args = _query()
    include = _include(MEMBER_INCLUDES)
    _own_campaign(sandbox, token, campaign_id)

    raw_count = args.get("page[count]") or args.get("page[size]")
    try:
        count = DEFAULT_PAGE_COUNT if raw_count is None else int(raw_count)
    except ValueError:
        _abort(api_error(400, "page[count] must be an integer."))
    if count < 1:
        _abort(api_error(400, "page[count] must be at least 1."))
    count = min(count, MAX_PAGE_COUNT)
    cursor = args.get("page[cursor]") or None
    after_seq, page_no = 0, 1
    if cursor is not None:
        try:
            after_seq, page_no = sandbox.decode_cursor(cursor)
        except SandboxError:
            _abort(api_error(400, f"Invalid cursor {cursor!r}.", code_name="ParameterInvalid"))

    fired = sandbox.take_faults(page_no)
    faults = {f.kind: f for f in fired}
    if "error" in faults:
        fault = faults["error"]
        return api_error(fault.status, f"Injected fault: page {page_no} fails with {fault.status}.")
    if "rate_limit" in faults:
        wait = faults["rate_limit"].retry_after
        return api_error(
            429,
            "You have made too many attempts. Please try again later.",
            extra={"retry_after_seconds": wait},
            headers={"Retry-After": str(wait)},
        )
    if "slow" in faults:
        time.sleep(faults["slow"].seconds)

    with sandbox.lock:
        page, next_seq = sandbox.page_of_members(after_seq, count)
        total = len(sandbox)
        if "drop" in faults:
            fault = faults["drop"]
            dropped, page = page[: fault.count], page[fault.count :]
            fault.dropped_ids.extend(m.id for m in dropped)
        renderer = _renderer(sandbox, token, fields, include)
        next_cursor = sandbox.encode_cursor(next_seq, page_no + 1) if next_seq is not None else None
        if "repeat_cursor" in faults:
            next_cursor = cursor or sandbox.encode_cursor(0, 1)
        links = None
        if next_cursor is not None:
            query = [(k, v) for k, v in request.args.items(multi=True) if k != "page[cursor]"]
            query.append(("page[cursor]", next_cursor))
            base = url_for("patronlock_sandbox.members", campaign_id=campaign_id, _external=True)
            links = {"next": f"{base}?{urlencode(query)}"}
        body = renderer.members_page(
            page, links=links, meta={"pagination": {"cursors": {"next": next_cursor}, "total": total}}
        )
    for fault in fired:
        if fault.kind == "drift":
            body = _drift(body, fault)
    if "truncate" in faults:
        body = body[: len(body) // 2]
    return Response(body, mimetype=JSONAPI_MIMETYPE)


def _drift(body: str, fault: Fault) -> str:
    """``body`` (a members page) with a ``drift`` fault's change made to its members."""
    doc = json.loads(body)
    name = fault.field or ""
    relationship = name.startswith("relationships.")
    for resource in doc.get("data", []):
        attrs = resource.setdefault("attributes", {})
        if fault.status_of is not None and attrs.get("patron_status") != fault.status_of:
            continue
        if relationship:
            rels = resource.setdefault("relationships", {})
            key = name.removeprefix("relationships.")
            if fault.remove:
                rels.pop(key, None)
            else:
                rels[key] = {"data": fault.value}
        elif fault.remove:
            attrs.pop(name, None)
        else:
            attrs[name] = fault.value
    return json.dumps(doc)


@blueprint.route("/api/oauth2/v2/members/<member_id>")
def member(member_id: str) -> Response:
    """One member (the creator's token, or the member's own user's token with ``campaigns.members``)."""
    sandbox = get_sandbox()
    token = _auth("campaigns.members")
    fields, _ = _query()
    include = _include(MEMBER_INCLUDES)
    with sandbox.lock:
        found = sandbox._members.get(member_id)
        if found is None:
            return api_error(404, f"No member {member_id}.")
        if not _is_creator(sandbox, token) and found.user_id != token.user_id:
            return api_error(403, "Only the campaign's creator may see this member.")
        renderer = _renderer(sandbox, token, fields, include)
        renderer.mark_primary("member", found.id)
        data = renderer.member(found)
        doc = renderer.document(data, links={"self": f"{_api_root()}/members/{found.id}"})
    return _api_response(doc)


def _webhook_payload() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        _abort(api_error(400, 'The body must be a JSON:API document: {"data": {"type": "webhook", ...}}.'))
    data: dict[str, Any] = body["data"]
    if data.get("type", "webhook") != "webhook":
        _abort(api_error(400, "data.type must be webhook."))
    attributes = data.get("attributes") or {}
    if not isinstance(attributes, dict):
        _abort(api_error(400, "data.attributes must be an object."))
    return data


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        if value.lower() in ("true", "1", "yes"):
            return True
        if value.lower() in ("false", "0", "no"):
            return False
        _abort(api_error(400, f"Not a boolean: {value!r}."))
    return bool(value)


def _webhook_doc(sandbox: Sandbox, token: Token, webhook_ids: list[str], *, many: bool, all_attrs: bool) -> Any:
    fields, _ = _query()
    include = _include(WEBHOOK_INCLUDES)
    defaults = {"webhook": WEBHOOK_ATTRIBUTES} if all_attrs else None
    renderer = _renderer(sandbox, token, fields, include, defaults=defaults)
    hooks = [sandbox.webhook(i) for i in webhook_ids]
    if many:
        return renderer.document(
            [renderer.webhook(w) for w in hooks],
            meta={"pagination": {"cursors": {"next": None}, "total": len(hooks)}},
        )
    return renderer.document(renderer.webhook(hooks[0]), links={"self": f"{_api_root()}/webhooks/{hooks[0].id}"})


@blueprint.route("/api/oauth2/v2/webhooks", methods=["GET", "POST"], strict_slashes=False)
def webhooks() -> Response:
    """GET: the client's webhooks. POST: register one (Patreon's body; the response carries ``secret``)."""
    sandbox = get_sandbox()
    token = _auth("w:campaigns.webhook")
    if request.method == "GET":
        with sandbox.lock:
            ids = [w.id for w in sandbox.webhooks if w.client_id == token.client_id]
            return _api_response(_webhook_doc(sandbox, token, ids, many=True, all_attrs=False))
    data = _webhook_payload()
    attributes = data.get("attributes") or {}
    triggers = attributes.get("triggers")
    uri = attributes.get("uri")
    if not isinstance(triggers, list) or not all(isinstance(t, str) for t in triggers):
        return api_error(400, "attributes.triggers must be a list of trigger names.")
    if not isinstance(uri, str):
        return api_error(400, "attributes.uri is required.")
    campaign_ref = ((data.get("relationships") or {}).get("campaign") or {}).get("data") or {}
    campaign_id = str(campaign_ref.get("id", ""))
    if not campaign_id:
        return api_error(400, "relationships.campaign.data.id is required.")
    _own_campaign(sandbox, token, campaign_id)
    try:
        webhook = sandbox.add_webhook(uri, triggers, client_id=token.client_id)
    except SandboxError as exc:
        return api_error(400, str(exc))
    with sandbox.lock:
        return _api_response(_webhook_doc(sandbox, token, [webhook.id], many=False, all_attrs=True), 201)


@blueprint.route("/api/oauth2/v2/webhooks/<webhook_id>", methods=["GET", "PATCH", "DELETE"])
def webhook(webhook_id: str) -> Response:
    """GET one webhook; PATCH ``uri``, ``triggers``, ``paused`` (or Patreon's ``is_paused``); DELETE it."""
    sandbox = get_sandbox()
    token = _auth("w:campaigns.webhook")
    with sandbox.lock:
        found = sandbox._webhooks.get(webhook_id)
        if found is None or found.client_id != token.client_id:
            return api_error(404, f"No webhook {webhook_id}.")
    if request.method == "GET":
        with sandbox.lock:
            return _api_response(_webhook_doc(sandbox, token, [webhook_id], many=False, all_attrs=False))
    if request.method == "DELETE":
        sandbox.delete_webhook(webhook_id)
        return Response(status=204)
    data = _webhook_payload()
    attributes = data.get("attributes") or {}
    paused_value = attributes.get("paused", attributes.get("is_paused"))
    triggers = attributes.get("triggers")
    uri = attributes.get("uri")
    if triggers is not None and (not isinstance(triggers, list) or not all(isinstance(t, str) for t in triggers)):
        return api_error(400, "attributes.triggers must be a list of trigger names.")
    if uri is not None and not isinstance(uri, str):
        return api_error(400, "attributes.uri must be a string.")
    try:
        sandbox.update_webhook(
            webhook_id,
            uri=uri,
            triggers=triggers,
            paused=None if paused_value is None else _bool(paused_value),
        )
    except SandboxError as exc:
        return api_error(400, str(exc))
    with sandbox.lock:
        return _api_response(_webhook_doc(sandbox, token, [webhook_id], many=False, all_attrs=True))


# -- /_sandbox controls -----------------------------------------------------------------------------------------------


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if body is None:
        return dict(request.form.items())
    if not isinstance(body, dict):
        _abort(_json({"error": "the body must be a JSON object"}, 400))
    return body


def _control(func: Any) -> Any:
    """Run a control, mapping sandbox errors to JSON 400/404."""
    try:
        return func()
    except NotFoundError as exc:
        return _json({"error": str(exc)}, 404)
    except (SandboxError, TypeError, ValueError) as exc:
        return _json({"error": str(exc)}, 400)


def _opt_int(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    return None if value is None or value == "" else int(value)


@blueprint.route("/", methods=["GET"])
@blueprint.route("/_sandbox/state", methods=["GET"])
def state() -> Response:
    """Everything at a glance (no secrets)."""
    return _json(get_sandbox().summary())


@blueprint.route("/_sandbox/users", methods=["POST"])
def control_add_user() -> Response:
    """``{email?, full_name?, email_verified?}`` -> the user."""
    sandbox, body = get_sandbox(), _body()
    return _control(
        lambda: _json(
            sandbox.add_user(
                body.get("email"),
                full_name=body.get("full_name") or body.get("name"),
                email_verified=_bool(body.get("email_verified", True)),
            ).to_dict(),
            201,
        )
    )


def _member_json(sandbox: Sandbox, member: Any, status: int = 200) -> Response:
    with sandbox.lock:
        return _json(dict(member.to_dict(), user=sandbox.user(member.user_id).to_dict()), status)


@blueprint.route("/_sandbox/patrons", methods=["POST"])
def control_add_patron() -> Response:
    """``{email?, tier? (title or id), amount_cents?, full_name?, email_verified?, cadence?, user?, charge?,
    fail_charges?, address?, note?}`` -> the member."""
    sandbox, body = get_sandbox(), _body()
    return _control(
        lambda: _member_json(
            sandbox,
            sandbox.add_patron(
                body.get("email"),
                tier=body.get("tier"),
                amount_cents=_opt_int(body, "amount_cents"),
                full_name=body.get("full_name") or body.get("name"),
                email_verified=_bool(body.get("email_verified", True)),
                cadence=int(body.get("cadence", 1)),
                user=body.get("user") or body.get("user_id"),
                charge=_bool(body.get("charge", True)),
                fail_charges=_bool(body.get("fail_charges", False)),
                address=body.get("address"),
                note=body.get("note", ""),
            ),
            201,
        )
    )


@blueprint.route("/_sandbox/free_trials", methods=["POST"])
def control_free_trial() -> Response:
    """``{email? | user?, tier, days?}`` -> the member."""
    sandbox, body = get_sandbox(), _body()
    return _control(
        lambda: _member_json(
            sandbox,
            sandbox.start_free_trial(
                body.get("email"),
                tier=body["tier"],
                days=int(body.get("days", 7)),
                user=body.get("user") or body.get("user_id"),
                full_name=body.get("full_name") or body.get("name"),
            ),
            201,
        )
    )


@blueprint.route("/_sandbox/gifts", methods=["POST"])
def control_gift() -> Response:
    """``{email? | user?, tier, months?}`` -> the member."""
    sandbox, body = get_sandbox(), _body()
    return _control(
        lambda: _member_json(
            sandbox,
            sandbox.gift_membership(
                body.get("email"),
                tier=body["tier"],
                months=int(body.get("months", 1)),
                user=body.get("user") or body.get("user_id"),
                full_name=body.get("full_name") or body.get("name"),
            ),
            201,
        )
    )


@blueprint.route("/_sandbox/members/<ref>", methods=["GET"])
def control_member(ref: str) -> Response:
    """A member by member id, user id or email (plain JSON, not JSON:API)."""
    sandbox = get_sandbox()
    return _control(lambda: _member_json(sandbox, sandbox.member(ref)))


@blueprint.route("/_sandbox/members/<ref>/<action>", methods=["POST"])
def control_member_action(ref: str, action: str) -> Response:
    """``tier`` ``{tier?, amount_cents?}``, ``cancel``, ``decline``, ``recover``, ``fail_charges`` ``{fail?}``,
    ``delete``."""
    sandbox, body = get_sandbox(), _body()
    actions = {
        "tier": lambda: sandbox.change_tier(ref, body.get("tier"), amount_cents=_opt_int(body, "amount_cents")),
        "cancel": lambda: sandbox.cancel(ref),
        "decline": lambda: sandbox.decline(ref),
        "recover": lambda: sandbox.recover(ref),
        "fail_charges": lambda: sandbox.set_fail_charges(ref, _bool(body.get("fail", True))),
        "delete": lambda: sandbox.delete_member(ref),
    }
    if action not in actions:
        return _json({"error": f"unknown action {action!r}; one of {', '.join(actions)}"}, 404)
    return _control(lambda: _member_json(sandbox, actions[action]()))


@blueprint.route("/_sandbox/scenarios", methods=["GET"])
def control_scenarios() -> Response:
    """The named scenarios: ``[{name, summary, description, params}]``."""
    return _json(describe_scenarios())


@blueprint.route("/_sandbox/scenarios/<name>", methods=["POST"])
def control_scenario(name: str) -> Response:
    """Play scenario ``name``; the JSON body holds its params -> ``{scenario, now, members: [member]}``."""
    sandbox, body = get_sandbox(), _body()
    if name not in SCENARIOS:
        return _json({"error": f"unknown scenario {name!r}; one of {', '.join(SCENARIOS)}"}, 404)

    def run() -> Response:
        with sandbox.lock:
            played = sandbox.scenario(name, **body)
            return _json(
                {
                    "scenario": name,
                    "now": sandbox.now.isoformat(),
                    "members": [member.to_dict() for member in played],
                }
            )

    return _control(run)


@blueprint.route("/_sandbox/generate", methods=["POST"])
def control_generate() -> Response:
    """``{count, seed?}`` -> ``{created, members}``."""
    sandbox, body = get_sandbox(), _body()

    def run() -> Response:
        created = sandbox.generate_members(int(body.get("count", 0)), seed=_opt_int(body, "seed"))
        return _json({"created": len(created), "members": len(sandbox)}, 201)

    return _control(run)


@blueprint.route("/_sandbox/clock", methods=["GET", "POST"])
def control_clock() -> Response:
    """GET: ``{now}``. POST ``{days?, hours?, minutes?, seconds?, months?}`` or ``{to: iso datetime}`` ->
    ``{now, changed: [member ids]}``."""
    sandbox = get_sandbox()
    if request.method == "GET":
        return _json({"now": sandbox.now.isoformat()})
    body = _body()

    def run() -> Response:
        if body.get("to"):
            changed = sandbox.travel_to(datetime.fromisoformat(str(body["to"]).replace("Z", "+00:00")))
        else:
            changed = sandbox.advance_months(int(body.get("months", 0))) if body.get("months") else []
            changed += sandbox.advance(
                days=float(body.get("days", 0)),
                hours=float(body.get("hours", 0)),
                minutes=float(body.get("minutes", 0)),
                seconds=float(body.get("seconds", 0)),
            )
        ids = list(dict.fromkeys(m.id for m in changed))
        return _json({"now": sandbox.now.isoformat(), "changed": ids})

    return _control(run)


@blueprint.route("/_sandbox/tokens", methods=["POST"])
def control_token() -> Response:
    """``{user (id or email), scopes? (list or space-separated), expires_in?}`` -> a token response + user_id."""
    sandbox, body = get_sandbox(), _body()

    def run() -> Response:
        scopes = body.get("scopes", body.get("scope"))
        if isinstance(scopes, str):
            scopes = sorted(sandbox.parse_scopes(scopes))
        issued = sandbox.issue_token(
            body.get("user") or body.get("user_id") or body.get("email") or "",
            scopes=scopes,
            expires_in=_opt_int(body, "expires_in"),
        )
        return _json(dict(issued.response(), user_id=issued.user_id), 201)

    return _control(run)


@blueprint.route("/_sandbox/faults", methods=["GET", "POST", "DELETE"])
def control_faults() -> Response:
    """GET: the faults. POST ``{kind, page?, times? (null: persistent), status?, retry_after?, seconds?, count?,
    field?, value?, remove?, status_of?}``.
    DELETE: clear every fault (and ``api_down``)."""
    sandbox = get_sandbox()
    if request.method == "GET":
        with sandbox.lock:
            return _json({"faults": [f.to_dict() for f in sandbox.faults], "api_down": sandbox.api_down})
    if request.method == "DELETE":
        sandbox.clear_faults()
        return _json({"faults": [], "api_down": False})
    body = _body()
    return _control(
        lambda: _json(
            sandbox.add_fault(
                str(body.get("kind")),
                page=_opt_int(body, "page"),
                times=_opt_int(body, "times") if "times" in body else 1,
                status=int(body.get("status", 500)),
                retry_after=int(body.get("retry_after", body.get("retry_after_seconds", 30))),
                seconds=float(body.get("seconds", 1.0)),
                count=int(body.get("count", 1)),
                field=body.get("field"),
                value=body.get("value"),
                remove=bool(body.get("remove", False)),
                status_of=body.get("status_of"),
            ).to_dict(),
            201,
        )
    )


@blueprint.route("/_sandbox/faults/<fault_id>", methods=["DELETE"])
def control_fault(fault_id: str) -> Response:
    """Remove one fault."""
    sandbox = get_sandbox()

    def run() -> Response:
        sandbox.remove_fault(fault_id)
        return _json({"removed": fault_id})

    return _control(run)


@blueprint.route("/_sandbox/api_down", methods=["POST"])
def control_api_down() -> Response:
    """``{down: bool}``: every ``/api/...`` call answers 503 while down."""
    sandbox, body = get_sandbox(), _body()
    sandbox.api_down = _bool(body.get("down", True))
    return _json({"api_down": sandbox.api_down})


@blueprint.route("/_sandbox/webhooks", methods=["GET", "POST"])
def control_webhooks() -> Response:
    """GET: the webhooks (with queue sizes). POST ``{uri, triggers?, secret?}``: register one without the API, on
    the sandbox's own origin or an allowed host only (400 otherwise: see :func:`create_sandbox_app`)."""
    sandbox = get_sandbox()
    if request.method == "GET":
        return _json({"webhooks": [w.to_dict() for w in sandbox.webhooks]})
    body = _body()
    uri = str(body.get("uri", ""))
    refusal = _webhook_target_refusal(uri)
    if refusal is not None:
        return _json({"error": refusal}, 400)
    return _control(
        lambda: _json(
            sandbox.add_webhook(
                uri,
                body.get("triggers") or ALL_MEMBER_TRIGGERS,
                secret=body.get("secret"),
            ).to_dict(),
            201,
        )
    )


@blueprint.route("/_sandbox/webhooks/flush", methods=["POST"])
def control_flush() -> Response:
    """Deliver queued webhook events now -> ``{deliveries: [...]}``."""
    return _json({"deliveries": [d.to_dict() for d in get_sandbox().flush_webhooks()]})


@blueprint.route("/_sandbox/deliveries", methods=["GET"])
def control_deliveries() -> Response:
    """Every delivery attempt so far."""
    sandbox = get_sandbox()
    with sandbox.lock:
        return _json({"deliveries": [d.to_dict() for d in sandbox.deliveries]})


@blueprint.route("/_sandbox/events", methods=["GET"])
def control_events() -> Response:
    """Every ``members:*`` event fired so far."""
    sandbox = get_sandbox()
    with sandbox.lock:
        events = [
            {"event": e.event, "member_id": e.member_id, "at": e.at.isoformat(), "version": e.version}
            for e in sandbox.events
        ]
    return _json({"events": events})


@blueprint.route("/_sandbox/avatar/<name>.svg")
def avatar(name: str) -> Response:
    """A placeholder avatar (users' and the campaign's ``image_url``)."""
    label = html.escape(name[-2:].upper())
    hue = sum(map(ord, name)) % 360
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100" viewBox="0 0 100 100">'
        f'<rect width="100" height="100" fill="hsl({hue},55%,55%)"/>'
        '<text x="50" y="62" font-size="36" text-anchor="middle" fill="#fff" font-family="sans-serif">'
        f"{label}</text></svg>"
    )
    return Response(svg, mimetype="image/svg+xml")


@blueprint.route("/checkout/<campaign_id>", methods=["GET", "POST"])
def checkout(campaign_id: str) -> Response:
    """The campaign's pledge page (``pledge_url``; ``?rid=<tier id>`` preselects a tier): pick or create a user and
    a tier, and pledge. For trying a site by hand."""
    sandbox = get_sandbox()
    if campaign_id != sandbox.campaign.id:
        return _error_page(f"No campaign {campaign_id}.", 404)
    message = error = None
    if request.method == "POST":
        form = request.form
        try:
            user = _chosen_user(sandbox, form)
            tier_ref = form.get("tier") or ""
            existing = sandbox.member_for_user(user.id)
            if existing is not None and existing.patron_status in ("active_patron", "declined_patron"):
                sandbox.change_tier(existing, tier_ref)
                message = f"{user.full_name} now pledges at {sandbox.tier(tier_ref).title}."
            else:
                sandbox.add_patron(user=user, tier=tier_ref, cadence=int(form.get("cadence", 1)))
                message = f"{user.full_name} pledged at {sandbox.tier(tier_ref).title}."
        except (SandboxError, ValueError) as exc:
            error = str(exc)
    with sandbox.lock:
        tiers = [t for t in sandbox.tiers if t.published]
        users = [u for u in sandbox.users[:_CONSENT_LIST_LIMIT] if not u.is_creator]
    body = render_template(
        "patronlock_sandbox/checkout.html",
        tiers=tiers,
        users=users,
        selected=request.args.get("rid"),
        message=message,
        error=error,
        action=url_for("patronlock_sandbox.checkout", campaign_id=campaign_id, rid=request.args.get("rid")),
    )
    return Response(body, mimetype="text/html")
