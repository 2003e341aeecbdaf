"""The browser half of OAuth: the ``state`` kept in the session, PKCE, the redirect URI, and safe ``next`` targets.

Nothing here talks to Patreon or the database. The views in :mod:`flask_patronlock.views` use these helpers; they
are public so that a host app building its own connect views gets the same guarantees:

* :func:`begin_flow` makes a ``state`` of 256 random bits (and a PKCE pair when enabled), remembers it in the
  session with the flow, the ``next`` target, the local user and the time, and returns what the authorize URL needs.
* :func:`take_flow` checks the ``state`` Patreon sent back: it must be in *this* session (bound to the session),
  unused (it is removed on the first look, whatever the outcome) and younger than :data:`STATE_TTL`. Anything else
  raises :class:`StateProblem` with a ``kind`` the views turn into a friendly page, before any token request.
* :func:`safe_next` accepts only same-origin relative paths.
* :func:`redirect_uri` comes from configuration, never from the request's ``Host`` or ``X-Forwarded-Host``.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from flask import Flask, session

from .errors import ConfigurationError, PatronLockError
from .patreon.client import pkce_pair

__all__ = [
    "MAX_NEXT_LENGTH",
    "MAX_PENDING",
    "SESSION_KEY",
    "STATE_TTL",
    "PendingFlow",
    "StateProblem",
    "begin_flow",
    "redirect_uri",
    "safe_next",
    "take_flow",
]

#: where pending flows live in the session (prefixed: the session is shared with the host app).
SESSION_KEY = "_patronlock_oauth"
#: short fingerprints of recently used states, to tell "used twice" from "unknown" on the error page.
USED_KEY = "_patronlock_oauth_used"
#: how long a started flow may take to come back from Patreon.
STATE_TTL = timedelta(minutes=10)
#: flows pending at once per session (several tabs); the oldest is dropped beyond this. Small, because the default
#: session is a cookie and cookies hold about 4 KB.
MAX_PENDING = 3
#: a longer ``next`` is ignored (the default page is used), keeping the session cookie small.
MAX_NEXT_LENGTH = 512
_MAX_USED = 5

#: ``creator`` is the settings page's connect of the creator's own account (issue 7).
Flow = Literal["connect", "login", "creator"]
StateProblemKind = Literal["missing", "no_session", "mismatch", "reused", "expired"]


class StateProblem(PatronLockError):
    """The OAuth callback's ``state`` is missing, unknown to this session, already used, or expired.

    :ivar kind: ``missing`` (no ``state`` parameter), ``no_session`` (this session started no flow: cookies blocked,
        or the session expired), ``mismatch`` (not a state this session issued), ``reused`` (this session already used
        it), ``expired`` (older than :data:`STATE_TTL`).
    """

    def __init__(self, kind: StateProblemKind) -> None:
        super().__init__(f"OAuth state check failed: {kind}")
        self.kind: StateProblemKind = kind


@dataclass(frozen=True, slots=True)
class PendingFlow:
    """One started OAuth flow, as remembered in the session."""

    state: str
    #: ``connect`` (a logged-in user links Patreon), ``login`` (log in with Patreon) or ``creator`` (the settings
    #: page connects the creator's account).
    flow: Flow
    #: the safe relative path to land on afterwards, or ``None`` for the default page.
    next_url: str | None
    #: the PKCE verifier, when PKCE is on.
    code_verifier: str | None
    #: when the flow started (timezone-aware).
    started_at: datetime
    #: the local user who started a ``connect`` flow.
    user_id: str | None = None


def _fingerprint(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()[:16]


def _pending() -> dict[str, dict[str, Any]]:
    value = session.get(SESSION_KEY)
    return dict(value) if isinstance(value, dict) else {}


def begin_flow(
    flow: Flow, *, next_url: str | None, user_id: str | None, now: datetime, pkce: bool
) -> tuple[str, str | None]:
    """Remember a new flow in the session.

    :param next_url: where to land afterwards; kept only if :func:`safe_next` accepts it.
    :param now: the current time (timezone-aware).
    :param pkce: make a PKCE S256 pair.
    :returns: ``(state, code_challenge)``; the challenge is ``None`` without PKCE.
    """
    state = secrets.token_urlsafe(32)  # 256 bits
    verifier, challenge = pkce_pair() if pkce else (None, None)
    pending = {
        key: value
        for key, value in _pending().items()
        if isinstance(value, dict) and now.timestamp() - float(value.get("at", 0)) < STATE_TTL.total_seconds()
    }
    pending[state] = {
        "flow": flow,
        "next": safe_next(next_url),
        "verifier": verifier,
        "at": now.timestamp(),
        "uid": user_id,
    }
    while len(pending) > MAX_PENDING:  # drop the oldest (the session serializer sorts keys: order is not kept)
        pending.pop(min(pending, key=lambda key: float(pending[key].get("at", 0))))
    session[SESSION_KEY] = pending
    return state, challenge


def take_flow(
    state: str | None, *, now: datetime, flows: tuple[Flow, ...] = ("connect", "login")
) -> PendingFlow:
    """Check and consume the ``state`` of an OAuth callback.

    The state is removed from the session on the first look, so a second use of the same callback URL fails.

    :param flows: the flows this callback finishes; a state of another flow (e.g. the settings page's ``creator``
        flow arriving at the patrons' callback) is a ``mismatch``.

    :raises StateProblem: see its ``kind``.
    """
    if not state:
        raise StateProblem("missing")
    pending = _pending()
    used = session.get(USED_KEY)
    used = list(used) if isinstance(used, list) else []
    entry = pending.pop(state, None)
    if entry is None:
        if _fingerprint(state) in used:
            raise StateProblem("reused")
        raise StateProblem("no_session" if not pending else "mismatch")
    session[SESSION_KEY] = pending
    session[USED_KEY] = [*used[-(_MAX_USED - 1) :], _fingerprint(state)]
    started = datetime.fromtimestamp(float(entry.get("at", 0)), now.tzinfo)
    if not timedelta(0) <= now - started < STATE_TTL:
        raise StateProblem("expired")
    flow = entry.get("flow")
    if flow not in flows:
        raise StateProblem("mismatch")
    return PendingFlow(
        state=state,
        flow=flow,
        next_url=safe_next(entry.get("next")),
        code_verifier=entry.get("verifier") or None,
        started_at=started,
        user_id=entry.get("uid"),
    )


def safe_next(target: object) -> str | None:
    """``target`` if it is a same-origin relative path (``/account?tab=2``), else ``None``.

    Refused: absolute and scheme-relative URLs (``https://evil.com``, ``//evil.com``), backslashes (``/\\evil.com``,
    which browsers read as ``//``), any scheme (``javascript:``), control characters and whitespace (browsers drop
    tabs and newlines inside URLs), percent-encoded slashes or backslashes that decode to any of these
    (``%2F%2Fevil.com``, ``/%2F/evil.com``), and anything longer than :data:`MAX_NEXT_LENGTH`.
    """
    if not isinstance(target, str) or not target or len(target) > MAX_NEXT_LENGTH:
        return None
    decoded = target
    for _ in range(3):  # decode a few times: %252F%252F is %2F%2F is //
        decoded = unquote(decoded)
    for candidate in (target, decoded):
        if not candidate.startswith("/") or candidate.startswith("//"):
            return None
        if "\\" in candidate or any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in candidate):
            return None
        parts = urlsplit(candidate)
        if parts.scheme or parts.netloc:
            return None
    return target


def redirect_uri(app: Flask) -> str:
    """Where Patreon sends the user back: ``PATRONLOCK_REDIRECT_URI``, or the ``patronlock.callback`` URL built from
    ``SERVER_NAME``, ``PREFERRED_URL_SCHEME`` and ``APPLICATION_ROOT``.

    It is built from configuration alone, never from the request, so a forged ``Host`` or ``X-Forwarded-Host``
    header cannot send the authorization code elsewhere.

    :raises ConfigurationError: neither ``PATRONLOCK_REDIRECT_URI`` nor ``SERVER_NAME`` is set.
    """
    cfg = app.config
    configured = cfg.get("PATRONLOCK_REDIRECT_URI")
    if configured:
        return str(configured)
    server_name = cfg.get("SERVER_NAME")
    if not server_name:
        raise ConfigurationError(
            "PATRONLOCK_REDIRECT_URI is not set, but connecting with Patreon needs the URL Patreon sends users back "
            "to. Set app.config['PATRONLOCK_REDIRECT_URI'] to the callback URL registered with your Patreon client "
            "(e.g. 'https://example.com/patreon/callback'), or set SERVER_NAME so it can be built. It is never taken "
            "from the request's Host header."
        )
    adapter = app.url_map.bind(
        server_name,
        script_name=cfg.get("APPLICATION_ROOT") or "/",
        url_scheme=cfg.get("PREFERRED_URL_SCHEME") or "http",
    )
    return adapter.build("patronlock.callback", force_external=True)
