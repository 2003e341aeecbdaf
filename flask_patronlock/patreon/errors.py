"""The exceptions the Patreon client raises.

Everything the client or the parsers raise on purpose is a :class:`PatreonError`::

    PatreonError
    ├── TransportError            the request did not get an HTTP answer (after retries)
    ├── MalformedDocument         the answer was not JSON, or not the JSON:API shape we need
    │   └── SchemaDrift           a members page lacks a field access depends on, or has a value Patreon never sends
    ├── PaginationError           member pages went round in circles
    └── PatreonAPIError           Patreon answered with an HTTP error
        ├── TokenError            the OAuth token endpoint refused (``{"error": ...}``)
        │   └── InvalidGrant      the code or refresh token is dead: the user must connect again
        ├── Unauthorized          401 from the API: the access token is expired or revoked
        │   └── ReauthorizationRequired  a 401 a refresh could not fix: someone must connect the account again
        ├── Forbidden             403: the token lacks a scope, or may not see this resource
        ├── NotFound              404
        ├── RateLimited           429, with ``retry_after`` seconds
        └── ServerError           5xx

Messages and reprs never contain tokens or client secrets: the client redacts them before raising, and the
response body is kept on :attr:`PatreonAPIError.body` but left out of ``repr()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "Forbidden",
    "InvalidGrant",
    "MalformedDocument",
    "NotFound",
    "PaginationError",
    "PatreonAPIError",
    "PatreonError",
    "RateLimited",
    "ReauthorizationRequired",
    "SchemaDrift",
    "ServerError",
    "TokenError",
    "TransportError",
    "Unauthorized",
]

#: how much of an error response body is kept on the exception.
MAX_BODY_CHARS = 2000


class PatreonError(Exception):
    """Base class of every error the Patreon client and parsers raise."""


class TransportError(PatreonError):
    """The request got no HTTP response: connection refused or reset, DNS failure, timeout.

    Raised after the client's retries are used up (or at once for a request that is unsafe to repeat).

    :ivar connect_failed: ``True`` when the connection was never established, so Patreon surely did not see the
        request; ``False`` when it may have (a read timeout, a reset mid-response).
    """

    def __init__(self, message: str, *, connect_failed: bool = False) -> None:
        super().__init__(message)
        self.connect_failed = connect_failed


class MalformedDocument(PatreonError):
    """A response or payload is not valid JSON, or not the JSON:API document the parser expects.

    The message names what was wrong (``data[3].attributes.currently_entitled_amount_cents: expected an integer,
    got str``) but never echoes attribute values, which may be personal data.
    """


class SchemaDrift(MalformedDocument):
    """A members page asked for a field that access depends on and did not get it, or got a type or value Patreon does
    not document (an unknown ``patron_status``): Patreon's API changed under us. The page is not used, so nobody
    loses access over it; the message names the field and how many members showed it, never their values."""


class PaginationError(PatreonError):
    """Member pagination went wrong: a cursor came back twice, a page repeated members already seen, or pages kept
    coming back empty. Raised instead of looping; the pages yielded before it are still valid, but the run is not
    complete."""


class PatreonAPIError(PatreonError):
    """Patreon answered with an HTTP error status.

    :ivar status_code: the HTTP status.
    :ivar errors: the JSON:API ``errors`` objects Patreon sent (possibly empty). Patreon sends ``status`` as a string.
    :ivar body: the response body as text (truncated to :data:`MAX_BODY_CHARS`), kept for debugging.
    """

    def __init__(
        self,
        status_code: int,
        errors: Sequence[Mapping[str, Any]] = (),
        body: str = "",
        *,
        message: str | None = None,
    ) -> None:
        self.status_code = status_code
        self.errors: tuple[Mapping[str, Any], ...] = tuple(errors)
        self.body = body[:MAX_BODY_CHARS]
        super().__init__(message if message is not None else self._default_message())

    @property
    def code_name(self) -> str | None:
        """``code_name`` of the first error object (e.g. ``"Unauthorized"``), if Patreon sent one."""
        return _first_str(self.errors, "code_name")

    @property
    def detail(self) -> str | None:
        """``detail`` of the first error object, if Patreon sent one."""
        return _first_str(self.errors, "detail")

    @property
    def message(self) -> str:
        """The human-readable message (``str(error)``)."""
        return str(self.args[0]) if self.args else ""

    def _default_message(self) -> str:
        parts = [f"Patreon answered HTTP {self.status_code}"]
        title = _first_str(self.errors, "title") or self.code_name
        if title:
            parts.append(title)
        if self.detail:
            parts.append(self.detail)
        return ": ".join(parts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status_code={self.status_code!r}, message={self.message!r})"


class TokenError(PatreonAPIError):
    """The OAuth token endpoint refused a code exchange or refresh.

    :ivar error: the OAuth ``error`` code (``"invalid_grant"``, ``"invalid_client"``, ...), if sent.
    :ivar description: the OAuth ``error_description``, if sent.
    """

    def __init__(
        self,
        status_code: int,
        errors: Sequence[Mapping[str, Any]] = (),
        body: str = "",
        *,
        error: str | None = None,
        description: str | None = None,
        message: str | None = None,
    ) -> None:
        self.error = error
        self.description = description
        if message is None:
            message = f"Patreon token endpoint answered HTTP {status_code}"
            if error:
                message += f": {error}"
            if description:
                message += f": {description}"
        super().__init__(status_code, errors, body, message=message)


class InvalidGrant(TokenError):
    """``invalid_grant``: the authorization code or refresh token is expired, revoked or already used.

    Refresh tokens are single-use, so this is also what a second use of the same refresh token gets. The user has
    to connect their Patreon account again.
    """


class Unauthorized(PatreonAPIError):
    """401 from the API: the access token is expired or revoked (refresh it, or ask the user to connect again)."""


class ReauthorizationRequired(Unauthorized):
    """A 401 that refreshing the token could not fix: Patreon refused the refresh token (``invalid_grant``), or there
    is none to spend. Nothing retries this away; a person must connect the Patreon account again."""

    def __init__(self, message: str) -> None:
        super().__init__(401, message=message)


class Forbidden(PatreonAPIError):
    """403 from the API: the token lacks a scope, or may not see this resource."""


class NotFound(PatreonAPIError):
    """404 from the API."""


class RateLimited(PatreonAPIError):
    """429: Patreon asks us to slow down.

    :ivar retry_after: seconds to wait before trying again, from ``errors[0].retry_after_seconds`` or the
        ``Retry-After`` header (the larger when both are sent); ``0.0`` when Patreon did not say.
    """

    def __init__(
        self,
        status_code: int = 429,
        errors: Sequence[Mapping[str, Any]] = (),
        body: str = "",
        *,
        retry_after: float = 0.0,
        message: str | None = None,
    ) -> None:
        self.retry_after = retry_after
        if message is None:
            message = f"Patreon rate limit hit (HTTP {status_code}); retry after {retry_after:g} s"
        super().__init__(status_code, errors, body, message=message)

    def __repr__(self) -> str:
        return f"RateLimited(status_code={self.status_code!r}, retry_after={self.retry_after!r})"


class ServerError(PatreonAPIError):
    """5xx from Patreon (raised after the client's retries are used up)."""


def _first_str(errors: Sequence[Mapping[str, Any]], key: str) -> str | None:
    if not errors:
        return None
    value = errors[0].get(key)
    return value if isinstance(value, str) and value else None
