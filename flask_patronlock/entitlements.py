"""Entitlement tokens, the site's half: issue a signed, short-lived token of what the signed-in patron may see.

:func:`issue_entitlement_token` (and the ``patronlock.entitlement_token`` endpoint, ``GET PREFIX/entitlement-token``)
makes every declared lock's decision for the viewer, exactly as ``@locked`` would now, and signs the allowed ones with
the viewer's entitlement (:mod:`flask_patronlock.entitlement_tokens`, which checks them anywhere without the
database). The token lives :data:`PATRONLOCK_ENTITLEMENT_TOKEN_SECONDS` at most, and never past the end of a grace or
paid period that keeps the patron entitled now, nor past the end of a comp that opens one of its locks: a token never
outlives the entitlement it carries.

Keys: :data:`PATRONLOCK_ENTITLEMENT_KEYS` (``{kid: secret}``, the first signs, every one verifies), else one key
derived from ``SECRET_KEY`` under its own purpose label (never ``SECRET_KEY`` itself), named ``sk-`` + a digest.
Give a separate service explicit keys: it needs the same ``{kid: secret}``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, current_app, jsonify
from flask.typing import ResponseReturnValue
from flask_login import current_user

from .entitlement_tokens import MIN_KEY_BYTES, EntitlementClaims, check_entitlement_token, sign_entitlement_token
from .errors import ConfigurationError
from .locks import current_viewer, evaluate, viewer_for
from .policy import entitlement
from .state import PatronLockState, get_state

__all__ = ["IssuedToken", "check_for_app", "entitlement_keys", "issue_entitlement_token"]

_KEY_LABEL = b"flask-patronlock entitlement tokens v1"


def entitlement_keys(app: Flask | None = None) -> dict[str, bytes]:
    """``{kid: key}`` of ``app`` (default: the current app), the signing key first: :data:`PATRONLOCK_ENTITLEMENT_KEYS`,
    else one key derived from ``SECRET_KEY``.

    :raises ConfigurationError: neither is set, or a key is shorter than 32 bytes.
    """
    target: Any = app if app is not None else current_app
    configured = target.config.get("PATRONLOCK_ENTITLEMENT_KEYS")
    if configured:
        if not isinstance(configured, Mapping):
            raise ConfigurationError("PATRONLOCK_ENTITLEMENT_KEYS must be a mapping of key id to secret")
        keys = {str(kid): (k.encode() if isinstance(k, str) else bytes(k)) for kid, k in configured.items()}
        if any(len(k) < MIN_KEY_BYTES for k in keys.values()):
            raise ConfigurationError(
                f"every key in PATRONLOCK_ENTITLEMENT_KEYS must be at least {MIN_KEY_BYTES} bytes; make one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        return keys
    secret = target.config.get("SECRET_KEY")
    if not secret:
        raise ConfigurationError("entitlement tokens need PATRONLOCK_ENTITLEMENT_KEYS (or SECRET_KEY to derive one)")
    derived = hmac.new(secret.encode() if isinstance(secret, str) else bytes(secret), _KEY_LABEL, hashlib.sha256)
    key = derived.digest()
    return {"sk-" + hashlib.sha256(key).hexdigest()[:10]: key}


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """An issued entitlement token and what it says."""

    token: str
    expires_at: datetime
    #: the named locks it opens.
    locks: tuple[str, ...]


def issue_entitlement_token(user: Any = None, *, state: PatronLockState | None = None) -> IssuedToken:
    """A signed entitlement token for ``user`` (default: the current request's signed-in user).

    :raises RuntimeError: no signed-in user.
    :raises ConfigurationError: no key (see :func:`entitlement_keys`).
    """
    state = state if state is not None else get_state()
    if user is None:
        user = current_user._get_current_object()
        viewer = current_viewer(state) if getattr(user, "is_authenticated", False) else None
    else:
        viewer = viewer_for(user, state) if getattr(user, "is_authenticated", False) else None
    if viewer is None:
        raise RuntimeError("an entitlement token is issued to a signed-in user")
    config = state.app.config
    kid, key = next(iter(entitlement_keys(state.app).items()))
    now = state.store.clock()
    snapshot = state.settings.current()
    names: list[str] = []
    comp_ends: list[datetime] = []
    for lock in snapshot.all_locks(state.declarations.locks):
        if lock.name is None:
            continue
        decision = evaluate(lock, viewer, user=user, state=state, snapshot=snapshot, now=now)[2]
        if decision.allowed:
            names.append(lock.name)
            if decision.comp is not None and decision.comp.expires_at is not None:
                comp_ends.append(decision.comp.expires_at)
    allowed = tuple(names)
    ent = entitlement(viewer.patron, snapshot.policy, now) if viewer.patron is not None else None
    expires = now + timedelta(seconds=float(config["PATRONLOCK_ENTITLEMENT_TOKEN_SECONDS"]))
    until = ent.until if ent is not None and ent.entitled else None
    if until is not None and until < expires:
        expires = until  # the token never outlives the grace or paid period it carries
    if comp_ends and min(comp_ends) < expires:
        expires = min(comp_ends)  # ... nor a comp that opened one of its locks
    token = sign_entitlement_token(
        subject=str(user.get_id()),
        locks=allowed,
        state=ent.state if ent is not None else "none",
        cents=ent.monthly_cents if ent is not None else 0,
        tier_ids=ent.tier_ids if ent is not None else (),
        until=until,
        is_admin=viewer.is_admin,
        issued_at=now,
        expires_at=expires,
        key=key,
        kid=kid,
        issuer=str(config["PATRONLOCK_ENTITLEMENT_ISSUER"]),
        audience=str(config["PATRONLOCK_ENTITLEMENT_AUDIENCE"]),
    )
    return IssuedToken(token=token, expires_at=expires, locks=allowed)


def check_for_app(
    token: str, lock: str | None = None, *, app: Flask | None = None, now: datetime | None = None
) -> EntitlementClaims:
    """:func:`~flask_patronlock.entitlement_tokens.check_entitlement_token` with ``app``'s keys, issuer and audience
    (default: the current app's), at ``now`` (default: the store's clock), for an API view of the same site."""
    target: Any = app if app is not None else current_app
    return check_entitlement_token(
        token,
        lock,
        key=entitlement_keys(target),
        issuer=str(target.config["PATRONLOCK_ENTITLEMENT_ISSUER"]),
        audience=str(target.config["PATRONLOCK_ENTITLEMENT_AUDIENCE"]),
        now=now if now is not None else get_state(target).store.clock(),
    )


def entitlement_token_view() -> ResponseReturnValue:
    """``GET PREFIX/entitlement-token``: ``{"token", "token_type": "Bearer", "expires_at", "expires_in", "locks"}``
    for the signed-in user; ``401`` ``{"error": "login_required"}`` for anyone else. Never cached."""
    if not current_user.is_authenticated:
        return jsonify(error="login_required"), 401
    state = get_state()
    issued = issue_entitlement_token(state=state)
    expires_in = max(0, int((issued.expires_at - state.store.clock()).total_seconds()))
    return jsonify(
        token=issued.token,
        token_type="Bearer",
        expires_at=issued.expires_at.isoformat(),
        expires_in=expires_in,
        locks=list(issued.locks),
    )


def _register_routes() -> None:
    # On the patronlock blueprint (PATRONLOCK_URL_PREFIX), at import: PatronLock.init_app imports this module before it
    # registers the blueprint on the first app.
    from .views import blueprint

    blueprint.add_url_rule("/entitlement-token", "entitlement_token", entitlement_token_view, methods=["GET"])


_register_routes()
