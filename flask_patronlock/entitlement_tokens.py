"""Entitlement tokens, the pure half: sign and check a short-lived JWT saying what a patron may see, with no database,
no Flask app and no clock but the one you give.

A site issues one to a signed-in patron (:func:`flask_patronlock.entitlements.issue_entitlement_token`, or the
``patronlock.entitlement_token`` endpoint); an SPA, a mobile app, a bot or a small service at the edge sends it back as
``Authorization: Bearer <token>``, and :func:`check_entitlement_token` answers "may this patron see lock X" from the
token alone. This module imports neither Flask nor the database layer, so that service needs only this function and
the key.

The token is a JWS signed with HMAC-SHA256 (``HS256``), whose header names the key (``kid``) so keys can rotate: sign
with a new key while the old one still verifies, then drop it. Checking pins the algorithm to ``HS256`` (``none``,
other HMACs and every public-key algorithm are refused, so there is no algorithm confusion), requires ``exp``,
``iat``, ``iss``, ``aud`` and ``sub``, and checks the issuer, the audience and the token type (``typ``), so a JWT
made for something else under the same key is refused too. Claims:

``sub``
    the site's local user id.
``iss``, ``aud``
    :data:`PATRONLOCK_ENTITLEMENT_ISSUER`, :data:`PATRONLOCK_ENTITLEMENT_AUDIENCE`.
``iat``, ``exp``
    issued at, expires at: at most :data:`PATRONLOCK_ENTITLEMENT_TOKEN_SECONDS` later, and never after the end of a
    grace period or paid period that keeps the patron entitled now.
``jti``
    a random id.
``locks``
    the named locks the patron may see at ``iat`` (after the ``access-decision`` filter).
``ent``
    the entitlement: ``state`` (``active``, ``grace``, ``restricted``, ``former``, ``none``), ``cents`` (monthly
    equivalent), ``tiers`` (tier ids), ``until`` (when a grace ends, or ``null``).
``admin``
    whether the user is an admin of the site (who passes every lock).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt

__all__ = [
    "ALGORITHM",
    "DEFAULT_AUDIENCE",
    "DEFAULT_ISSUER",
    "MIN_KEY_BYTES",
    "TOKEN_TYPE",
    "EntitlementClaims",
    "EntitlementDenied",
    "EntitlementTokenError",
    "InvalidEntitlementToken",
    "check_entitlement_token",
    "sign_entitlement_token",
]

#: the only algorithm signed and accepted.
ALGORITHM = "HS256"
#: the JOSE ``typ`` header of an entitlement token.
TOKEN_TYPE = "patronlock-entitlement+jwt"
DEFAULT_ISSUER = "flask-patronlock"
DEFAULT_AUDIENCE = "patronlock-entitlement"
#: the shortest key accepted (HS256 wants a key at least as long as its 256-bit output).
MIN_KEY_BYTES = 32

Key = str | bytes


class EntitlementTokenError(Exception):
    """Base class of the entitlement token errors."""


class InvalidEntitlementToken(EntitlementTokenError):
    """The token is not a valid entitlement token: malformed, tampered with, signed by an unknown key or another
    algorithm, expired, not yet valid, or for another issuer or audience (answer ``401``)."""


class EntitlementDenied(EntitlementTokenError):
    """The token is valid, but its patron may not see the lock asked about (answer ``403``).

    :ivar claims: the token's :class:`EntitlementClaims`.
    :ivar lock: the lock asked about.
    """

    def __init__(self, claims: EntitlementClaims, lock: str) -> None:
        super().__init__(f"this entitlement token does not open lock {lock!r}")
        self.claims = claims
        self.lock = lock


@dataclass(frozen=True, slots=True)
class EntitlementClaims:
    """A checked entitlement token's content."""

    #: the site's local user id.
    subject: str
    #: the named locks the patron could see when the token was issued.
    locks: frozenset[str]
    #: ``active``, ``grace``, ``restricted``, ``former`` or ``none``.
    state: str
    #: monthly-equivalent entitled cents.
    cents: int
    tier_ids: tuple[str, ...]
    #: when a grace period ends (``None``: no set end, or not in grace).
    until: datetime | None
    is_admin: bool
    issued_at: datetime
    expires_at: datetime
    #: the id of the key that signed it.
    kid: str | None
    token_id: str

    def allows(self, lock: str) -> bool:
        """Whether the patron could see ``lock`` when the token was issued (admins: every lock)."""
        return self.is_admin or lock in self.locks


def _key_bytes(key: Key) -> bytes:
    raw = key.encode() if isinstance(key, str) else bytes(key)
    if len(raw) < MIN_KEY_BYTES:
        raise ValueError(f"an entitlement token key must be at least {MIN_KEY_BYTES} bytes long")
    return raw


def _timestamp(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("entitlement token times must be timezone-aware")
    return int(moment.timestamp())


def sign_entitlement_token(
    *,
    subject: str,
    locks: Sequence[str],
    state: str,
    cents: int,
    tier_ids: Sequence[str],
    until: datetime | None,
    is_admin: bool,
    issued_at: datetime,
    expires_at: datetime,
    key: Key,
    kid: str,
    issuer: str = DEFAULT_ISSUER,
    audience: str = DEFAULT_AUDIENCE,
) -> str:
    """A signed entitlement token with these claims (see the module docs), under ``key`` named ``kid``.

    :raises ValueError: a key shorter than :data:`MIN_KEY_BYTES`, a naive datetime, or ``expires_at`` not after
        ``issued_at``.
    """
    iat, exp = _timestamp(issued_at), _timestamp(expires_at)
    if exp <= iat:
        raise ValueError("an entitlement token must expire after it is issued")
    payload = {
        "iss": issuer,
        "aud": audience,
        "sub": str(subject),
        "iat": iat,
        "exp": exp,
        "jti": secrets.token_urlsafe(12),
        "locks": sorted(set(locks)),
        "ent": {
            "state": state,
            "cents": int(cents),
            "tiers": list(tier_ids),
            "until": _timestamp(until) if until is not None else None,
        },
        "admin": bool(is_admin),
    }
    headers = {"kid": kid, "typ": TOKEN_TYPE}
    return jwt.encode(payload, _key_bytes(key), algorithm=ALGORITHM, headers=headers)


def check_entitlement_token(
    token: str,
    lock: str | None = None,
    *,
    key: Key | Mapping[str, Key],
    issuer: str = DEFAULT_ISSUER,
    audience: str = DEFAULT_AUDIENCE,
    leeway: float = 0,
    now: datetime | None = None,
) -> EntitlementClaims:
    """Check an entitlement token without the database or a Flask app; with ``lock``, also that it opens that lock.

    ::

        from flask_patronlock.entitlement_tokens import check_entitlement_token, EntitlementTokenError

        claims = check_entitlement_token(bearer, "premium", key={"2026-05": KEY})   # raises unless allowed

    :param key: the key, or ``{kid: key}`` of every key that may have signed (the token's ``kid`` picks one; an
        unknown ``kid`` is refused).
    :param issuer: the ``iss`` the site signs with (:data:`PATRONLOCK_ENTITLEMENT_ISSUER`).
    :param audience: the ``aud`` the site signs with (:data:`PATRONLOCK_ENTITLEMENT_AUDIENCE`).
    :param leeway: seconds of clock difference tolerated on ``exp`` and ``iat``.
    :param now: the time to check ``exp`` and ``iat`` at (timezone-aware; default: the system clock).
    :returns: the token's :class:`EntitlementClaims`.
    :raises InvalidEntitlementToken: not a valid, unexpired token of this issuer and audience.
    :raises EntitlementDenied: valid, but ``lock`` is not among what it allows.
    """
    if not isinstance(token, str) or len(token) > 8192:
        raise InvalidEntitlementToken("not an entitlement token")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as exc:
        raise InvalidEntitlementToken(f"not an entitlement token: {exc}") from None
    kid = header.get("kid")
    if header.get("alg") != ALGORITHM or header.get("typ") != TOKEN_TYPE:
        raise InvalidEntitlementToken("not an entitlement token (algorithm or type)")
    if isinstance(key, Mapping):
        if not isinstance(kid, str) or kid not in key:
            raise InvalidEntitlementToken("signed by an unknown key")
        secret = key[kid]
    else:
        secret = key
    try:
        payload: dict[str, Any] = jwt.decode(
            token,
            _key_bytes(secret),
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=issuer,
            # exp and iat are checked below, against the caller's clock
            options={
                "require": ["exp", "iat", "iss", "aud", "sub"], "verify_signature": True, "verify_exp": False,
                "verify_iat": False, "verify_nbf": False,
            },
        )
    except jwt.InvalidTokenError as exc:
        raise InvalidEntitlementToken(f"invalid entitlement token: {exc}") from None
    claims = _claims(payload, kid)
    moment = (now if now is not None else datetime.now(UTC)).timestamp()
    if moment >= claims.expires_at.timestamp() + leeway:
        raise InvalidEntitlementToken("the entitlement token has expired")
    if claims.issued_at.timestamp() > moment + leeway:
        raise InvalidEntitlementToken("the entitlement token is not valid yet (issued in the future)")
    if lock is not None and not claims.allows(lock):
        raise EntitlementDenied(claims, lock)
    return claims


def _claims(payload: Mapping[str, Any], kid: Any) -> EntitlementClaims:
    try:
        ent = payload["ent"]
        locks = payload["locks"]
        until = ent.get("until")
        if not isinstance(locks, list) or not all(isinstance(name, str) for name in locks):
            raise TypeError("locks")
        return EntitlementClaims(
            subject=str(payload["sub"]),
            locks=frozenset(locks),
            state=str(ent["state"]),
            cents=int(ent["cents"]),
            tier_ids=tuple(str(t) for t in ent["tiers"]),
            until=datetime.fromtimestamp(until, UTC) if until is not None else None,
            is_admin=payload.get("admin") is True,
            issued_at=datetime.fromtimestamp(payload["iat"], UTC),
            expires_at=datetime.fromtimestamp(payload["exp"], UTC),
            kid=kid if isinstance(kid, str) else None,
            token_id=str(payload.get("jti", "")),
        )
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, OSError) as exc:
        # (OverflowError, OSError: a timestamp out of datetime's range)
        raise InvalidEntitlementToken(f"an entitlement token's claims are malformed ({exc})") from None
