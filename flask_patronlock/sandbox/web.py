"""What the sandbox app's route modules share: the blueprint, the sandbox of the current app, JSON and
Patreon-format error responses, bearer-token checks and JSON:API query parsing.

The routes are in :mod:`.authorize` (OAuth and the browser pages), :mod:`.api` (API v2) and :mod:`.controls`
(``/_sandbox``); :mod:`.app` assembles them into an app.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from flask import Blueprint, Response, abort, current_app, render_template, request

from .documents import QueryError, Renderer, parse_fields, parse_include
from .entities import (
    Token,
)
from .state import Sandbox

__all__ = [
    "CONTROLS_KEY",
    "EXTENSION_KEY",
    "JSONAPI_MIMETYPE",
    "ControlGuard",
    "Controls",
    "abort_with",
    "api_error",
    "api_response",
    "api_root",
    "as_bool",
    "blueprint",
    "error_page",
    "get_sandbox",
    "is_creator",
    "json_response",
    "query_fields",
    "query_include",
    "renderer_for",
    "require_token",
    "root_url",
]

#: where the app keeps its sandbox: ``app.extensions["patronlock_sandbox"]``.
EXTENSION_KEY = "patronlock_sandbox"


CONTROLS_KEY = "patronlock_sandbox_controls"


#: ``guard() -> None | reason``: called in the sandbox app's request context before every ``/_sandbox`` control;
#: ``None`` lets the request through, a string refuses it with a 403 that shows the string.
ControlGuard = Callable[[], "str | None"]


JSONAPI_MIMETYPE = "application/vnd.api+json"


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
class Controls:
    """What :func:`~.app.create_sandbox_app` was told about its ``/_sandbox`` controls."""

    guard: ControlGuard | None
    #: (host, port or None for any port) pairs a webhook registered through the controls may point at.
    webhook_hosts: tuple[tuple[str, int | None], ...]


# -- responses ------------------------------------------------------------------------------------------------------


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def json_response(obj: Any, status: int = 200, *, mimetype: str = "application/json", headers: Any = None) -> Response:
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
    return json_response({"errors": [error]}, status, mimetype=JSONAPI_MIMETYPE, headers=dict(headers or {}))


def abort_with(response: Response) -> NoReturn:
    abort(response)


def root_url() -> str:
    return request.url_root.rstrip("/")


def api_root() -> str:
    return f"{root_url()}/api/oauth2/v2"


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def require_token(*scopes: str) -> Token:
    sandbox = get_sandbox()
    token = sandbox.authenticate(_bearer())
    if token is None:
        abort_with(api_error(401, _UNAUTHORIZED_DETAIL))
    wait = sandbox.take_token_call(token.access_token)
    if wait > 0:
        seconds = math.ceil(wait)
        abort_with(
            api_error(
                429,
                "You have made too many attempts. Please try again later.",
                extra={"retry_after_seconds": seconds},
                headers={"Retry-After": str(seconds)},
            )
        )
    missing = [s for s in scopes if s not in token.scopes]
    if missing:
        abort_with(api_error(401, f"This token lacks the scope(s): {', '.join(missing)}."))
    return token


def query_fields() -> tuple[dict[str, tuple[str, ...]], Mapping[str, str]]:
    try:
        return parse_fields(request.args), request.args
    except QueryError as exc:
        abort_with(api_error(400, str(exc), code_name="ParameterInvalidOnType"))


def query_include(allowed: tuple[str, ...]) -> frozenset[str]:
    try:
        return parse_include(request.args.get("include"), allowed)
    except QueryError as exc:
        abort_with(api_error(400, str(exc), code_name="ParameterInvalid"))


def is_creator(sandbox: Sandbox, token: Token) -> bool:
    return token.user_id == sandbox.campaign.creator_id


def renderer_for(
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
        root=root_url(),
        fields=fields,
        include=include,
        defaults=defaults,
        member_email=email,
        user_email=email,
        addresses="campaigns.members.address" in token.scopes,
    )


def api_response(doc: Any, status: int = 200) -> Response:
    return json_response(doc, status, mimetype=JSONAPI_MIMETYPE)


def error_page(message: str, status: int = 400) -> Response:
    body = render_template("patronlock_sandbox/error.html", message=message, status=status)
    return Response(body, status=status, mimetype="text/html")


def as_bool(value: Any) -> bool:
    if isinstance(value, str):
        if value.lower() in ("true", "1", "yes"):
            return True
        if value.lower() in ("false", "0", "no"):
            return False
        abort_with(api_error(400, f"Not a boolean: {value!r}."))
    return bool(value)
