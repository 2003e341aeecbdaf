"""A Patreon token pair stored encrypted, and its refresh: the one routine behind a patron's token
(:mod:`flask_patronlock.accounts`) and the creator's (:mod:`flask_patronlock.creator`).

Patreon's refresh tokens are single-use and Patreon rotates the pair on every refresh, so a refresh is serialized on
the row that stores the pair (:func:`refresh_serialized`); whether a stored token serves as it is, is decided once
(:func:`reusable`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Connection

from .patreon.errors import InvalidGrant
from .patreon.types import TokenSet

if TYPE_CHECKING:
    from .extension import PatronLockState
    from .patreon.client import PatreonClient

#: an access token expiring within this margin is refreshed before use.
REFRESH_MARGIN = timedelta(minutes=5)
#: retries of a Patreon call someone is waiting on (a page load): one, with short waits, not a sync's patience.
INTERACTIVE_RETRIES = 1
INTERACTIVE_MAX_BACKOFF = 2.0


def reusable(current: str | None, *, rejected: str | None, expires_at: datetime | None, now: datetime) -> str | None:
    """The stored access token ``current`` when it serves as it is, else ``None`` (refresh it): with ``rejected`` (a
    token Patreon just answered 401 to) only a stored token that is already another; without, one that does not
    expire within :data:`REFRESH_MARGIN` of ``now``."""
    if current is None:
        return None
    if rejected is not None:
        return current if current != rejected else None  # someone already replaced the rejected token
    return current if expires_at is None or expires_at - now > REFRESH_MARGIN else None


@dataclass(frozen=True, slots=True)
class StoredPair:
    """A stored token pair, decrypted, as read under its row's lock by :func:`refresh_serialized`."""

    access_token: str | None
    refresh_token: str | None


def refresh_serialized(
    state: PatronLockState,
    *,
    seen: str | None,
    purpose: str,
    lock: Callable[[Connection], StoredPair],
    save: Callable[[Connection, TokenSet], None],
    fail: Callable[[Connection, str], Exception],
) -> str:
    """Spend a stored, single-use refresh token once however many workers ask at the same moment: the one routine
    behind :meth:`Accounts.access_token <flask_patronlock.accounts.Accounts.access_token>` (patrons' tokens) and
    :mod:`flask_patronlock.creator` (the creator's).

    In one write transaction, ``lock`` reads the pair while holding its row's lock (``SELECT … FOR UPDATE`` on
    PostgreSQL; :meth:`Store.transaction <flask_patronlock.store.Store.transaction>` holds SQLite's write lock), and
    raises when there is nothing to refresh any more. When its access token is no longer ``seen``, another worker
    refreshed while we waited: its token is returned and nothing is spent. Otherwise the refresh token is spent and
    ``save`` stores the new pair; or, when Patreon refuses it (``invalid_grant``) or there is none, ``fail`` records
    that (its second argument says why: ``"invalid_grant"`` or ``"no_refresh_token"``) and returns the exception to
    raise once the transaction has committed.

    :returns: the usable access token.
    :raises PatreonError: the refresh failed otherwise (Patreon down, rate limited ...): nothing was changed.
    """
    failure: Exception | None = None
    tokens: TokenSet | None = None
    with state.store.transaction() as conn:
        pair = lock(conn)
        if pair.access_token is not None and pair.access_token != seen:
            return pair.access_token  # another worker rotated the pair while we waited for the lock: use theirs
        if pair.refresh_token is None:
            failure = fail(conn, "no_refresh_token")
        else:
            # a token call is paced in this process only: it must not wait on the database while holding this row
            client = interactive_client(state, purpose)
            try:
                tokens = client.refresh(pair.refresh_token)
            except InvalidGrant:
                failure = fail(conn, "invalid_grant")
            finally:
                client.close()
            if tokens is not None:
                save(conn, tokens)
    if failure is not None:
        raise failure
    assert tokens is not None
    return tokens.access_token


def interactive_client(state: PatronLockState, purpose: str) -> PatreonClient:
    """A Patreon client for a call a person waits on: at most :data:`INTERACTIVE_RETRIES` retry and short backoff
    (a rate limit asking for a longer wait is raised instead of waited out)."""
    client = state.client(purpose=purpose)
    client.max_retries = INTERACTIVE_RETRIES
    client.max_backoff = INTERACTIVE_MAX_BACKOFF
    return client
