"""The creator's own Patreon connection: the token syncs and webhook re-fetches read the campaign with.

It comes from one of two places, and is kept in one ``patronlock_settings`` row (:data:`CREATOR_KEY`), encrypted at
rest under ``PATRONLOCK_TOKEN_KEYS`` like patrons' tokens:

* the settings page, where the creator connects their Patreon account with the campaign scopes
  (:func:`save_creator_tokens`; ``origin="connect"``); it wins over the configuration;
* the configuration: on first use, when ``PATRONLOCK_CREATOR_REFRESH_TOKEN`` is set and nothing is stored, the
  configured pair (with ``PATRONLOCK_CREATOR_ACCESS_TOKEN``, if set) is stored (``origin="config"``). From then on the
  stored pair wins, because Patreon rotates the refresh token on every refresh and the configured one is spent. A
  configuration that changes its refresh token (new tokens pasted from Patreon's portal) is stored again.

:meth:`PatronLockState.creator_client <flask_patronlock.PatronLockState.creator_client>` hands every client of the
creator's token :func:`refresh_creator_token`, so that:

* a token expiring within five minutes is refreshed before use (:func:`creator_access_token`);
* a 401 -- tokens die early -- is answered by one refresh and the request is sent again. Patreon's refresh tokens are
  single-use, so a refresh is serialized (:func:`flask_patronlock.tokens.refresh_serialized`): the row is locked and
  read again, and if another worker rotated the pair meanwhile its token is used, whatever the number of threads and
  processes that saw the 401;
* when Patreon refuses the refresh token (``invalid_grant``), or there is none (only
  ``PATRONLOCK_CREATOR_ACCESS_TOKEN`` is configured), the connection is marked as needing re-authorization, with the
  time and the reason: the site is **degraded**. It is audited, logged, sent as the ``creator-token-failed`` signal,
  shown on the settings page's Setup checklist and by ``flask patronlock check``; runs stop being complete (so they
  revoke nobody) until the creator connects again, which clears it.

:func:`disconnect_creator` forgets the tokens; :func:`rotate_creator_tokens` re-encrypts them under the first key
(``flask patronlock rotate-keys`` calls it). Tokens never leave this module except as the bearer string handed to the
Patreon client; :class:`CreatorConnection` carries none, and nothing here logs one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, select, update

from . import signals
from .errors import ConfigurationError
from .patreon.errors import ReauthorizationRequired
from .patreon.ratelimit import token_key
from .tokens import StoredPair, refresh_serialized, reusable

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from .extension import PatronLockState
    from .patreon.types import TokenSet, UserSnapshot

__all__ = [
    "CREATOR_KEY",
    "CreatorConnection",
    "CreatorNeedsReauthorization",
    "creator_access_token",
    "disconnect_creator",
    "get_creator_connection",
    "refresh_creator_token",
    "rotate_creator_tokens",
    "save_creator_tokens",
]

log = logging.getLogger("flask_patronlock.creator")

#: the ``patronlock_settings`` row holding the creator's connection.
CREATOR_KEY = "patronlock.creator"


class CreatorNeedsReauthorization(ReauthorizationRequired):
    """Patreon no longer accepts the creator's tokens: the creator must connect again on the settings page (or, for
    tokens from the configuration, configure new ones).

    A :class:`~flask_patronlock.patreon.errors.PatreonError` (a 401 no refresh can fix), so a run or a webhook
    re-fetch that meets it mid-way treats it like any answer it could not use.

    :ivar origin: ``"connect"`` (the settings page's connection) or ``"config"``.
    """

    def __init__(self, message: str, *, origin: str = "connect") -> None:
        super().__init__(message)
        self.origin = origin


@dataclass(frozen=True, slots=True)
class CreatorConnection:
    """The creator's stored connection, without its tokens."""

    patreon_user_id: str
    full_name: str
    email: str | None
    scope: str
    token_expires_at: datetime | None
    connected_at: datetime | None
    #: the local user (an admin) who connected it.
    connected_by: str | None
    #: Patreon refused the refresh token (or there is none): connect again. The site is degraded meanwhile.
    needs_reauth: bool
    #: ``"connect"``: connected on the settings page; ``"config"``: stored from ``PATRONLOCK_CREATOR_*_TOKEN``.
    origin: str = "connect"
    #: when Patreon stopped accepting the connection (``None`` while it works).
    failed_at: datetime | None = None
    #: why: ``"invalid_grant"`` (the refresh token was refused) or ``"no_refresh_token"``.
    failure: str | None = None


def _parse_time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def _connection(value: Any) -> CreatorConnection | None:
    if not isinstance(value, dict) or not (
        value.get("access_token") or value.get("refresh_token") or value.get("needs_reauth")
    ):
        return None
    return CreatorConnection(
        patreon_user_id=str(value.get("patreon_user_id") or ""),
        full_name=str(value.get("full_name") or ""),
        email=value.get("email") or None,
        scope=str(value.get("scope") or ""),
        token_expires_at=_parse_time(value.get("token_expires_at")),
        connected_at=_parse_time(value.get("connected_at")),
        connected_by=value.get("connected_by") or None,
        needs_reauth=bool(value.get("needs_reauth")),
        origin=str(value.get("origin") or "connect"),
        failed_at=_parse_time(value.get("failed_at")),
        failure=value.get("failure") or None,
    )


def _read(conn: Connection, state: PatronLockState, *, lock: bool = False) -> dict[str, Any] | None:
    s = state.tables.settings
    stmt = select(s.c.value).where(s.c.key == CREATOR_KEY)
    if lock and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    value = conn.execute(stmt).scalar()
    return dict(value) if isinstance(value, dict) else None


def _write(conn: Connection, state: PatronLockState, value: dict[str, Any], by: str | None) -> None:
    s = state.tables.settings
    now = state.store.clock()
    # No settings-version bump: no worker caches the tokens; they are read when a creator client is made.
    values = {"value": value, "updated_by": by, "updated_at": now}
    if not conn.execute(update(s).where(s.c.key == CREATOR_KEY).values(**values)).rowcount:
        conn.execute(insert(s).values(key=CREATOR_KEY, version=0, **values))


def get_creator_connection(state: PatronLockState) -> CreatorConnection | None:
    """The creator's stored connection (no tokens), or ``None`` when the creator never connected here."""
    with state.store.engine.connect() as conn:
        return _connection(_read(conn, state))


def save_creator_tokens(
    state: PatronLockState, user: UserSnapshot, tokens: TokenSet, *, by: str | None
) -> CreatorConnection:
    """Store the creator's tokens (encrypted) from the settings page's connect flow, with an audit row.

    :param by: the local user (an admin) who connected.
    :raises ConfigurationError: when ``PATRONLOCK_TOKEN_KEYS`` is empty or invalid (nothing is written).
    """
    cipher = state.token_cipher()  # before the transaction: a missing key fails without writing anything
    now = state.store.clock()
    value = {
        "patreon_user_id": user.id,
        "full_name": user.full_name,
        "email": user.email,
        "access_token": cipher.encrypt(tokens.access_token).decode(),
        "refresh_token": cipher.encrypt(tokens.refresh_token).decode() if tokens.refresh_token else None,
        "token_expires_at": tokens.expires_at.isoformat() if tokens.expires_at else None,
        "scope": " ".join(tokens.scope),
        "connected_at": now.isoformat(),
        "connected_by": by,
        "needs_reauth": False,
        "origin": "connect",
    }
    with state.store.transaction() as conn:
        _write(conn, state, value, by)
        state.store.record_event(
            conn,
            "creator_connected",
            source="admin",
            patreon_user_id=user.id,
            user_id=by,
            detail={"full_name": user.full_name, "scope": value["scope"]},
        )
    connection = _connection(value)
    assert connection is not None
    return connection


def disconnect_creator(state: PatronLockState, *, by: str | None) -> bool:
    """Forget the creator's stored tokens (the configuration's token, if any, applies again). Returns whether
    there were any."""
    s = state.tables.settings
    with state.store.transaction() as conn:
        previous = _read(conn, state, lock=True)
        if previous is None:
            return False
        conn.execute(delete(s).where(s.c.key == CREATOR_KEY))
        state.store.record_event(
            conn,
            "creator_disconnected",
            source="admin",
            patreon_user_id=previous.get("patreon_user_id"),
            user_id=by,
            detail={},
        )
    return True


def _configured(state: PatronLockState) -> tuple[str | None, str | None]:
    cfg = state.app.config
    return cfg.get("PATRONLOCK_CREATOR_ACCESS_TOKEN") or None, cfg.get("PATRONLOCK_CREATOR_REFRESH_TOKEN") or None


def _current(state: PatronLockState) -> dict[str, Any] | None:
    """The stored connection; first stored from the configuration when that holds a pair the store has not seen."""
    with state.store.engine.connect() as conn:
        value = _read(conn, state)
    if value is not None and value.get("origin", "connect") != "config":
        return value  # connected on the settings page: it wins over the configuration
    access, refresh = _configured(state)
    configured = refresh or access
    if configured is None or (value is not None and value.get("seed") == token_key(configured)):
        return value  # stored from this configuration before: the stored (rotated) pair wins
    if refresh is None:
        if value is not None:  # the configuration's access token changed: forget what the old one left
            with state.store.transaction() as conn:
                conn.execute(delete(state.tables.settings).where(state.tables.settings.c.key == CREATOR_KEY))
        return None
    try:
        cipher = state.token_cipher()
    except ConfigurationError:
        log.warning("PATRONLOCK_CREATOR_REFRESH_TOKEN is set but PATRONLOCK_TOKEN_KEYS is not: the creator's token "
                    "cannot be stored, so it is never refreshed")
        return value
    now = state.store.clock()
    seeded = {
        "patreon_user_id": "",
        "full_name": "",
        "email": None,
        "access_token": cipher.encrypt(access).decode() if access else None,
        "refresh_token": cipher.encrypt(refresh).decode(),
        "token_expires_at": None,
        "scope": "",
        "connected_at": now.isoformat(),
        "connected_by": None,
        "needs_reauth": False,
        "origin": "config",
        "seed": token_key(refresh),
    }
    with state.store.transaction() as conn:
        again = _read(conn, state, lock=True)
        if again is not None and (again.get("origin", "connect") != "config" or again.get("seed") == seeded["seed"]):
            return again  # another worker stored it (or the creator connected) meanwhile
        _write(conn, state, seeded, None)
        state.store.record_event(conn, "creator_connected", source="admin", detail={"origin": "config"})
    return seeded


def _needs_reauth(value: dict[str, Any]) -> CreatorNeedsReauthorization:
    origin = str(value.get("origin") or "connect")
    if origin == "config":
        return CreatorNeedsReauthorization(
            "Patreon no longer accepts the creator's token from PATRONLOCK_CREATOR_ACCESS_TOKEN / "
            "PATRONLOCK_CREATOR_REFRESH_TOKEN",
            origin=origin,
        )
    return CreatorNeedsReauthorization("the creator's Patreon connection needs to be connected again", origin=origin)


def creator_access_token(
    state: PatronLockState, *, purpose: str = "reading the campaign", rejected: str | None = None
) -> str | None:
    """A usable access token from the creator's stored connection, refreshed first if it expires soon; ``None``
    when nothing is stored (then ``PATRONLOCK_CREATOR_ACCESS_TOKEN`` is the token, as it is).

    :param rejected: a token Patreon just answered 401 to: refresh, unless the stored token is already another.
    :raises CreatorNeedsReauthorization: Patreon refused the stored refresh token (now or before).
    :raises flask_patronlock.TokenDecryptionError: no key of ``PATRONLOCK_TOKEN_KEYS`` opens the stored token.
    :raises PatreonError: the refresh failed for another reason (nothing was changed).
    """
    value = _current(state)
    if value is None:
        return None
    if value.get("needs_reauth"):
        raise _needs_reauth(value)
    if not (value.get("access_token") or value.get("refresh_token")):
        return None
    cipher = state.token_cipher()
    current = cipher.decrypt(value["access_token"].encode()) if value.get("access_token") else None
    expires = _parse_time(value.get("token_expires_at"))
    token = reusable(current, rejected=rejected, expires_at=expires, now=state.store.clock())
    return token if token is not None else _refresh(state, seen=current, purpose=purpose)


def refresh_creator_token(state: PatronLockState, rejected: str, *, purpose: str = "reading the campaign") -> str:
    """What a creator client does when Patreon answers 401 to ``rejected``: one serialized refresh (or the token
    another worker refreshed meanwhile). A configured access token without a refresh token cannot be renewed: the
    site is marked degraded.

    :raises CreatorNeedsReauthorization: Patreon refused the refresh token, or there is none.
    :raises PatreonError: the refresh failed for another reason (nothing was changed; the next call tries again).
    """
    token = creator_access_token(state, purpose=purpose, rejected=rejected)
    if token is not None:
        return token
    # only PATRONLOCK_CREATOR_ACCESS_TOKEN, and Patreon refused it: remember that, until the configuration changes
    value = {"origin": "config", "seed": token_key(rejected), "needs_reauth": True}
    with state.store.transaction() as conn:
        if _read(conn, state, lock=True) is None:
            _mark_failed(conn, state, value, "no_refresh_token")
            failed = True
        else:
            failed = False
    if failed:
        _failed_signal(state, value)
    raise _needs_reauth(value)


def _mark_failed(conn: Connection, state: PatronLockState, value: dict[str, Any], why: str) -> None:
    """Record in ``conn`` that Patreon stopped accepting the creator's connection (``value`` is updated)."""
    value.update(needs_reauth=True, failed_at=state.store.clock().isoformat(), failure=why)
    _write(conn, state, value, value.get("connected_by"))
    state.store.record_event(
        conn,
        "creator_needs_reauth",
        source="admin",
        patreon_user_id=value.get("patreon_user_id") or None,
        detail={"reason": why, "origin": value.get("origin", "connect")},
    )
    log.warning(
        "Patreon stopped accepting the creator's token (%s): runs cannot complete until the creator connects again "
        "on the settings page",
        why,
    )


def _failed_signal(state: PatronLockState, value: dict[str, Any]) -> None:
    signals.send_action(
        signals.creator_token_failed,
        state.app,
        strict=state.store._strict_signals(),
        reason=value["failure"],
        failed_at=_parse_time(value["failed_at"]),
        origin=value.get("origin", "connect"),
    )


def _refresh(state: PatronLockState, *, seen: str | None, purpose: str) -> str:
    cipher = state.token_cipher()
    locked: list[dict[str, Any]] = []
    marked: list[bool] = []

    def lock(conn: Connection) -> StoredPair:
        value = _read(conn, state, lock=True)
        if value is None or not (value.get("access_token") or value.get("refresh_token")):
            raise CreatorNeedsReauthorization("the creator's Patreon connection was removed meanwhile")
        if value.get("needs_reauth"):
            raise _needs_reauth(value)  # another worker found it refused while we waited
        locked.append(value)
        return StoredPair(
            cipher.decrypt(value["access_token"].encode()) if value.get("access_token") else None,
            cipher.decrypt(value["refresh_token"].encode()) if value.get("refresh_token") else None,
        )

    def save(conn: Connection, tokens: TokenSet) -> None:
        value = locked[0]
        fresh = {
            **value,
            "access_token": cipher.encrypt(tokens.access_token).decode(),
            # Patreon always rotates; if an answer ever lacks a new refresh token, keep the one we have
            "refresh_token": cipher.encrypt(tokens.refresh_token).decode()
            if tokens.refresh_token
            else value.get("refresh_token"),
            "token_expires_at": tokens.expires_at.isoformat() if tokens.expires_at else None,
            "scope": " ".join(tokens.scope) if tokens.scope else value.get("scope", ""),
        }
        _write(conn, state, fresh, value.get("connected_by"))

    def fail(conn: Connection, why: str) -> Exception:
        _mark_failed(conn, state, locked[0], why)
        marked.append(True)
        return _needs_reauth(locked[0])

    try:
        return refresh_serialized(state, seen=seen, purpose=purpose, lock=lock, save=save, fail=fail)
    except CreatorNeedsReauthorization:
        if marked:
            _failed_signal(state, locked[0])  # this call found it refused: after the commit
        raise


def rotate_creator_tokens(state: PatronLockState) -> int:
    """Re-encrypt the creator's stored tokens under the first key of ``PATRONLOCK_TOKEN_KEYS``; returns how many
    tokens were re-encrypted (0 when the creator never connected here).

    :raises flask_patronlock.TokenDecryptionError: no configured key opens them (nothing is changed).
    """
    cipher = state.token_cipher()
    with state.store.transaction() as conn:
        value = _read(conn, state, lock=True)
        if value is None:
            return 0
        rotated = dict(value)
        count = 0
        for name in ("access_token", "refresh_token"):
            if value.get(name):
                rotated[name] = cipher.rotate(value[name].encode()).decode()
                count += 1
        _write(conn, state, rotated, value.get("connected_by"))
    return count
