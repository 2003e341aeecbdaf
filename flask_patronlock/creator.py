"""The creator's own Patreon connection, made on the settings page (issue 7).

The settings page lets the creator connect their Patreon account with the campaign scopes instead of pasting a token
into the configuration. The tokens are kept in one ``patronlock_settings`` row (:data:`CREATOR_KEY`), encrypted at
rest under ``PATRONLOCK_TOKEN_KEYS`` like patrons' tokens, and :meth:`PatronLockState.creator_client
<flask_patronlock.PatronLockState.creator_client>` prefers them over ``PATRONLOCK_CREATOR_ACCESS_TOKEN``.

* :func:`save_creator_tokens` stores a fresh pair (and audits who connected which Patreon account);
* :func:`creator_access_token` returns a usable access token, refreshing it first when it expires within five
  minutes. Patreon's refresh tokens are single-use, so a refresh is serialized: the row is locked (``SELECT … FOR
  UPDATE`` on PostgreSQL; the write transaction holds SQLite's lock) and read again, and if another worker rotated the
  pair meanwhile its token is used. ``invalid_grant`` marks the connection as needing re-authorization (audited);
* :func:`disconnect_creator` forgets the tokens;
* :func:`rotate_creator_tokens` re-encrypts them under the first key (``flask patronlock rotate-keys`` calls it).

Tokens never leave this module except as the bearer string handed to the Patreon client; :class:`CreatorConnection`
carries none, and nothing here logs one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, select, update

from .patreon.errors import InvalidGrant

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
    "rotate_creator_tokens",
    "save_creator_tokens",
]

log = logging.getLogger("flask_patronlock.creator")

#: the ``patronlock_settings`` row holding the creator's connection.
CREATOR_KEY = "patronlock.creator"
#: an access token expiring within this margin is refreshed before use.
REFRESH_MARGIN = timedelta(minutes=5)


class CreatorNeedsReauthorization(Exception):
    """Patreon no longer accepts the stored creator tokens: the creator must connect again on the settings page."""


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
    #: Patreon refused the refresh token: connect again.
    needs_reauth: bool


def _parse_time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def _connection(value: Any) -> CreatorConnection | None:
    if not isinstance(value, dict) or not value.get("access_token"):
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


def creator_access_token(state: PatronLockState, *, purpose: str = "reading the campaign") -> str | None:
    """A usable access token from the creator's stored connection, refreshed first if it expires soon; ``None``
    when the creator never connected on the settings page.

    :raises CreatorNeedsReauthorization: Patreon refused the stored refresh token (now or before).
    :raises flask_patronlock.TokenDecryptionError: no key of ``PATRONLOCK_TOKEN_KEYS`` opens the stored token.
    :raises PatreonError: the refresh failed for another reason (nothing was changed).
    """
    with state.store.engine.connect() as conn:
        value = _read(conn, state)
    if value is None or not value.get("access_token"):
        return None
    if value.get("needs_reauth"):
        raise CreatorNeedsReauthorization("the creator's Patreon connection needs to be connected again")
    cipher = state.token_cipher()
    current = cipher.decrypt(value["access_token"].encode())
    expires = _parse_time(value.get("token_expires_at"))
    if expires is None or expires - state.store.clock() > REFRESH_MARGIN:
        return current
    return _refresh(state, seen=current, purpose=purpose)


def _refresh(state: PatronLockState, *, seen: str, purpose: str) -> str:
    cipher = state.token_cipher()
    failure: Exception | None = None
    with state.store.transaction() as conn:
        value = _read(conn, state, lock=True)
        if value is None or not value.get("access_token"):
            raise CreatorNeedsReauthorization("the creator's Patreon connection was removed meanwhile")
        current = cipher.decrypt(value["access_token"].encode())
        if current != seen:
            return current  # another worker rotated the pair while we waited for the lock
        refresh_token = cipher.decrypt(value["refresh_token"].encode()) if value.get("refresh_token") else None
        tokens = None
        if refresh_token is None:
            failure = CreatorNeedsReauthorization("no refresh token is stored for the creator's connection")
        else:
            from .accounts import interactive_client

            client = interactive_client(state, purpose)
            try:
                tokens = client.refresh(refresh_token)
            except InvalidGrant:
                failure = CreatorNeedsReauthorization("Patreon refused the creator's refresh token (invalid_grant)")
            finally:
                client.close()
        if tokens is None:
            _write(conn, state, {**value, "needs_reauth": True}, value.get("connected_by"))
            state.store.record_event(
                conn,
                "creator_needs_reauth",
                source="admin",
                patreon_user_id=value.get("patreon_user_id"),
                detail={"reason": "invalid_grant" if refresh_token else "no_refresh_token"},
            )
            log.warning("the creator's Patreon connection needs to be connected again on the settings page")
        else:
            _write(
                conn,
                state,
                {
                    **value,
                    "access_token": cipher.encrypt(tokens.access_token).decode(),
                    # Patreon always rotates; if an answer ever lacks a new refresh token, keep the one we have
                    "refresh_token": cipher.encrypt(tokens.refresh_token).decode()
                    if tokens.refresh_token
                    else value.get("refresh_token"),
                    "token_expires_at": tokens.expires_at.isoformat() if tokens.expires_at else None,
                    "scope": " ".join(tokens.scope) if tokens.scope else value.get("scope", ""),
                },
                value.get("connected_by"),
            )
    if failure is not None:
        raise failure
    assert tokens is not None
    return tokens.access_token


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
