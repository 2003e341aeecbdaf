"""Private feeds: a secret feed URL per patron, for feed readers and podcast apps that send no cookie.

A feed reader fetches ``https://site/feed/<token>/podcast.xml`` and the enclosures it lists with no session, so
``@locked`` cannot know who it is. Each local user gets one **feed token** instead, put in the URL of every feed
endpoint; :func:`feed_view` turns it back into that user's viewer before anything else in the request runs, so the
site-wide lock, path locks, ``@locked``, :func:`~flask_patronlock.can_view` and
:func:`~flask_patronlock.send_locked_file` decide for the patron exactly as on a page they open logged in.

The token
    ``pf_`` + 43 url-safe characters: ``HMAC-SHA256(feed key, user id + nonce)``, 256 bits. The table
    ``patronlock_feed_tokens`` keeps the nonce (random, 128 bits) and the token's SHA-256, never the token: a copy of
    the database alone gives no working feed URL, while the site can show the patron their URL again at any time (it
    re-derives it). A request finds its row by the token's hash (one indexed lookup, so its time says nothing about how
    close a guess was) and checks the HMAC in constant time. The feed key is ``PATRONLOCK_FEED_KEY``, else one derived
    from ``SECRET_KEY`` under its own purpose label; changing it changes every feed URL.

Revoked, rotated, unknown or malformed tokens, and tokens of users who no longer exist, are all the same ``404``.
Rotating (the patron's own page, :meth:`FeedTokens.rotate`) gives a new URL and kills the old one; revoking (``flask
patronlock feeds revoke USER``) removes it until the patron asks for a new one. Unlinking Patreon (the
``patron-unlinked`` signal, whatever the reason) rotates the user's token: a URL handed out while linked stops working.

Every feed request is counted in one statement on the token's row (a fixed window of
``PATRONLOCK_FEED_RATE_PERIOD`` seconds, at most ``PATRONLOCK_FEED_RATE_LIMIT`` requests; then ``429`` with
``Retry-After``), which holds across every worker sharing the database, on SQLite and PostgreSQL. A token used from
more than ``PATRONLOCK_FEED_MAX_ADDRESSES`` client addresses within ``PATRONLOCK_FEED_ADDRESS_WINDOW`` seconds writes
one ``feed_token_shared`` audit row per window (the addresses are kept as keyed hashes only; behind a proxy, set up
``ProxyFix`` so ``request.remote_addr`` is the client's).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import logging
import math
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from inspect import iscoroutinefunction
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click
from flask import Flask, current_app, flash, g, has_request_context, make_response, redirect, render_template, request
from flask import url_for as flask_url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlalchemy import bindparam, case, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import NotFound, TooManyRequests

from . import signals
from .cli import patronlock_cli
from .errors import ConfigurationError
from .i18n import date_text, gettext
from .models import UTCDateTime
from .state import PatronLockState, get_state
from .viewers import use_viewer, viewer_for

if TYPE_CHECKING:
    from .store import Store

__all__ = [
    "FEED_TOKEN_PREFIX",
    "FeedAccess",
    "FeedTokens",
    "current_feed_user",
    "feed_key",
    "feed_url",
    "feed_view",
    "get_feed_tokens",
]

log = logging.getLogger("flask_patronlock.feeds")

F = TypeVar("F", bound=Callable[..., Any])

#: every feed token starts with this (so a leaked one is recognisable in logs and secret scanners).
FEED_TOKEN_PREFIX = "pf_"
_TOKEN_FORMAT = re.compile(r"pf_[A-Za-z0-9_-]{43}")
_KEY_LABEL = b"flask-patronlock private feed tokens v1"
#: the URL variable a feed endpoint's token arrives in, unless :func:`feed_view` is told another.
DEFAULT_TOKEN_ARG = "feed_token"
_G_FEED = "_patronlock_feed"


def feed_key(app: Flask) -> bytes:
    """The key feed tokens are derived with: ``PATRONLOCK_FEED_KEY``, else HMAC-SHA256 of ``SECRET_KEY`` under a label
    of its own (so it is never the key that signs sessions).

    :raises ConfigurationError: neither is set.
    """
    configured = app.config.get("PATRONLOCK_FEED_KEY")
    if configured:
        return configured.encode() if isinstance(configured, str) else bytes(configured)
    secret = app.config.get("SECRET_KEY")
    if not secret:
        raise ConfigurationError(
            "private feeds need a key: set PATRONLOCK_FEED_KEY (or SECRET_KEY, which one is derived from)"
        )
    secret_bytes = secret.encode() if isinstance(secret, str) else bytes(secret)
    return hmac.new(secret_bytes, _KEY_LABEL, hashlib.sha256).digest()


def _derive(key: bytes, user_id: str, nonce: str) -> str:
    mac = hmac.new(key, f"{user_id}\x00{nonce}".encode(), hashlib.sha256).digest()
    return FEED_TOKEN_PREFIX + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class FeedAccess:
    """What a feed request's token resolved to: whose it is, and whether the rate limit lets the request through."""

    user_id: str
    #: seconds until the rate limit's window ends, when this request is over the limit; else ``None``.
    retry_after: int | None = None


class FeedTokens:
    """The feed tokens of one app. Get one with :func:`get_feed_tokens`; no method needs a request."""

    def __init__(self, state: PatronLockState) -> None:
        self.state = state
        self.store: Store = state.store
        self.table = state.tables.feed_tokens

    def _key(self) -> bytes:
        return feed_key(self.state.app)

    def token_for(self, user_id: str, *, create: bool = True) -> str | None:
        """The feed token of local user ``user_id``, made now if they have none (unless ``create`` is false: then
        ``None``). After a change of the feed key the token is the new key's (the old URL no longer works)."""
        user_id = str(user_id)
        key = self._key()
        t = self.table
        for attempt in range(2):
            with self.store.engine.connect() as conn:
                row = conn.execute(select(t.c.nonce, t.c.token_hash).where(t.c.user_id == user_id)).first()
            if row is not None:
                token = _derive(key, user_id, row.nonce)
                if not hmac.compare_digest(_hash(token), row.token_hash):  # the key changed: record the new hash
                    with self.store.transaction() as conn:
                        same = (t.c.user_id == user_id) & (t.c.nonce == row.nonce)
                        conn.execute(update(t).where(same).values(token_hash=_hash(token)))
                return token
            if not create:
                return None
            try:
                return cast(str, self._write(user_id, key, kind="feed_token_created", reason="asked", source="user"))
            except IntegrityError:  # another request made it meanwhile: read theirs
                if attempt:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def rotate(self, user_id: str, *, reason: str = "user", source: str = "user") -> str:
        """Give local user ``user_id`` a new feed token (the old one stops working at once), with an audit row."""
        token = self._write(str(user_id), self._key(), kind="feed_token_rotated", reason=reason, source=source)
        assert token is not None
        return token

    def _write(
        self, user_id: str, key: bytes, *, kind: str, reason: str, source: str, create: bool = True
    ) -> str | None:
        """A new nonce for ``user_id`` (a new row unless ``create`` is false), and the audit row ``kind``."""
        t = self.table
        nonce = secrets.token_hex(16)
        token = _derive(key, user_id, nonce)
        now = self.store.clock()
        values = {
            "nonce": nonce, "token_hash": _hash(token), "created_at": now, "last_used_at": None, "window_start": None,
            "window_hits": 0, "addresses": None, "addresses_since": None, "shared_reported_at": None,
        }
        with self.store.transaction() as conn:
            updated = conn.execute(update(t).where(t.c.user_id == user_id).values(**values)).rowcount
            if not updated:
                if not create:
                    return None
                conn.execute(insert(t).values(user_id=user_id, **values))
            self.store.record_event(conn, kind, source=source, user_id=user_id, detail={"reason": reason})
        return token

    def revoke(self, user_id: str, *, reason: str = "admin", source: str = "admin") -> bool:
        """Remove local user ``user_id``'s feed token (their feed URL answers 404 until they ask for a new one), with
        an audit row; whether there was one."""
        t = self.table
        with self.store.transaction() as conn:
            removed = conn.execute(delete(t).where(t.c.user_id == str(user_id))).rowcount
            if removed:
                self.store.record_event(
                    conn, "feed_token_revoked", source=source, user_id=str(user_id), detail={"reason": reason}
                )
        return bool(removed)

    def info(self, user_id: str) -> dict[str, Any] | None:
        """When user ``user_id``'s token was made and last used (``None``: they have none)."""
        t = self.table
        with self.store.engine.connect() as conn:
            row = conn.execute(
                select(t.c.created_at, t.c.last_used_at).where(t.c.user_id == str(user_id))
            ).mappings().first()
        return dict(row) if row is not None else None

    def resolve(self, token: str, *, address: str | None) -> FeedAccess | None:
        """The user a feed request's ``token`` belongs to, counted against the rate limit (and ``address`` against
        the shared-token audit), in one write transaction; ``None`` for any token that is not a live one."""
        if not isinstance(token, str) or not _TOKEN_FORMAT.fullmatch(token):
            return None
        config = self.state.app.config
        limit = int(config["PATRONLOCK_FEED_RATE_LIMIT"])
        period = timedelta(seconds=float(config["PATRONLOCK_FEED_RATE_PERIOD"]))
        now = self.store.clock()
        t = self.table
        stamp = bindparam("pl_now", now, type_=UTCDateTime())
        in_window = t.c.window_start.is_not(None) & (t.c.window_start > bindparam("pl_since", now - period,
                                                                                  type_=UTCDateTime()))
        key = self._key()
        with self.store.transaction() as conn:
            # one statement finds the row, counts the request in its window and stamps it (the row stays locked
            # until commit: PostgreSQL's row lock, SQLite's write lock), so concurrent workers count exactly
            row = conn.execute(
                update(t)
                .where(t.c.token_hash == _hash(token))
                .values(
                    window_hits=case((in_window, t.c.window_hits + 1), else_=1),
                    window_start=case((in_window, t.c.window_start), else_=stamp),
                    last_used_at=stamp,
                )
                .returning(
                    t.c.user_id, t.c.nonce, t.c.window_start, t.c.window_hits, t.c.addresses, t.c.addresses_since,
                    t.c.shared_reported_at,
                )
            ).first()
            if row is None or not hmac.compare_digest(_derive(key, row.user_id, row.nonce), token):
                conn.rollback()  # not a live token (or one of a feed key no longer in use): nothing counted
                return None
            if address is not None:
                self._count_address(conn, row, address, key, now)
        retry_after = None
        if row.window_hits > limit:
            retry_after = max(1, math.ceil((row.window_start + period - now).total_seconds()))
        return FeedAccess(user_id=row.user_id, retry_after=retry_after)

    def _count_address(self, conn: Any, row: Any, address: str, key: bytes, now: datetime) -> None:
        """Add ``address`` to the token's distinct addresses of the current window; one audit row per window once
        they exceed ``PATRONLOCK_FEED_MAX_ADDRESSES``."""
        config = self.state.app.config
        most = int(config["PATRONLOCK_FEED_MAX_ADDRESSES"])
        window = timedelta(seconds=float(config["PATRONLOCK_FEED_ADDRESS_WINDOW"]))
        # keyed, so the table cannot be searched for an address (IPv4 is small enough to hash every one)
        tag = hmac.new(key, b"address\x00" + address.encode(), hashlib.sha256).hexdigest()[:16]
        since = row.addresses_since
        seen = list(row.addresses or ()) if since is not None and since > now - window else []
        if tag in seen:
            return
        if not seen:
            since = now
        if len(seen) > most:
            return  # already over the limit and reported for this window: the list need not grow
        seen.append(tag)
        t = self.table
        values: dict[str, Any] = {"addresses": seen, "addresses_since": since}
        reported = row.shared_reported_at
        if len(seen) > most and (reported is None or reported < since):
            values["shared_reported_at"] = now
            self.store.record_event(
                conn,
                "feed_token_shared",
                source="feed",
                user_id=row.user_id,
                detail={
                    "addresses": len(seen),
                    "window_seconds": int(window.total_seconds()),
                    "address": address,
                },
            )
            log.warning(
                "the feed token of local user %s was used from %d addresses within %d s",
                row.user_id, len(seen), int(window.total_seconds()),
            )
        conn.execute(update(t).where(t.c.user_id == row.user_id).values(**values))


def get_feed_tokens(state: PatronLockState | None = None) -> FeedTokens:
    """The :class:`FeedTokens` of ``state`` (default: the current app's)."""
    return FeedTokens(state if state is not None else get_state())


# -- the request side ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _FeedRequest:
    token: str
    user: Any


def _resolve_request(token_arg: str) -> _FeedRequest:
    """Resolve the current request's feed token into its user and viewer (once per request).

    :raises NotFound: not a live token, or its user no longer exists or is inactive.
    :raises TooManyRequests: over the token's rate limit (with ``Retry-After``).
    """
    done: _FeedRequest | None = g.get(_G_FEED)
    if done is not None:
        return done
    state = get_state()
    token = (request.view_args or {}).get(token_arg)
    access = FeedTokens(state).resolve(token, address=request.remote_addr) if isinstance(token, str) else None
    if access is None or not isinstance(token, str):
        raise NotFound()
    if access.retry_after is not None:
        raise TooManyRequests(
            gettext("This feed was read too often; your feed reader will try again later."),
            retry_after=access.retry_after,
        )
    manager = getattr(state.app, "login_manager", None)
    loader = getattr(manager, "user_callback", None)
    if loader is None:
        raise ConfigurationError("private feeds need a Flask-Login user_loader to load the feed's user")
    user = loader(access.user_id)
    if user is None or not getattr(user, "is_active", True) or not getattr(user, "is_authenticated", False):
        raise NotFound()
    use_viewer(viewer_for(user, state), user)
    done = _FeedRequest(token, user)
    g.setdefault(_G_FEED, done)
    return done


def _before_request() -> None:
    """Runs before flask-patronlock's own site-wide and path locks, so they decide for the feed's patron too."""
    endpoint = request.endpoint
    if endpoint is None:
        return
    view = current_app.view_functions.get(endpoint)
    token_arg = getattr(view, "patronlock_feed", None)
    if token_arg is not None:
        _resolve_request(token_arg)


def feed_view(func: F | None = None, /, *, token_arg: str = DEFAULT_TOKEN_ARG) -> Any:
    """Make a view a feed endpoint: the URL variable ``token_arg`` (default ``feed_token``) carries a patron's feed
    token, and every lock decision in the request is made for that patron, as if they had opened it logged in::

        @app.route("/feed/<feed_token>/podcast.xml")
        @feed_view
        def podcast():
            episodes = [(e, can_view(e.lock)) for e in EPISODES]
            return render_template("podcast.xml", episodes=episodes), {"Content-Type": "application/rss+xml"}

        @app.route("/feed/<feed_token>/episodes/<int:number>.mp3")
        @feed_view
        @locked("premium")
        def episode_audio(number):
            return send_locked_file("premium", f"{number}.mp3", directory=AUDIO)

    The token variable is not passed to the view (:func:`current_feed_user` gives the user, :func:`feed_url` the
    links). A bad, revoked or rotated token is a ``404``; over the rate limit a ``429`` with ``Retry-After``. The
    site-wide and path locks apply for the feed's patron. Responses are ``Cache-Control: private`` and
    ``Referrer-Policy: no-referrer`` (the URL is a secret). Put it right under ``@app.route``, above ``@locked``.
    """

    def decorate(view: F) -> F:
        is_async = iscoroutinefunction(view)

        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            kwargs.pop(token_arg, None)
            _resolve_request(token_arg)
            result = current_app.ensure_sync(view)(*args, **kwargs) if is_async else view(*args, **kwargs)
            response = make_response(result)
            if "Cache-Control" not in response.headers:
                response.headers["Cache-Control"] = "private"
            response.headers.setdefault("Referrer-Policy", "no-referrer")
            response.headers.setdefault("X-Robots-Tag", "noindex")
            return response

        wrapper.patronlock_feed = token_arg  # type: ignore[attr-defined]
        return cast(F, wrapper)

    if func is not None:
        return decorate(func)
    return decorate


def current_feed_user() -> Any:
    """The host user whose feed token the current request carries, or ``None`` outside a feed request."""
    if not has_request_context():
        return None
    done: _FeedRequest | None = g.get(_G_FEED)
    return done.user if done is not None else None


def feed_url(endpoint: str, *, user: Any = None, token_arg: str = DEFAULT_TOKEN_ARG, **values: Any) -> str:
    """The absolute URL of feed endpoint ``endpoint`` (``url_for`` ``values``) carrying a feed token: in a feed
    request the request's own (for the enclosures a feed lists), else ``user``'s (default: the signed-in user's),
    made on first use.

    :raises RuntimeError: outside a feed request with no signed-in user and no ``user``.
    """
    values.setdefault("_external", True)
    done: _FeedRequest | None = g.get(_G_FEED) if has_request_context() and user is None else None
    if done is not None:
        token = done.token
    else:
        owner = user if user is not None else current_user
        if owner is None or not getattr(owner, "is_authenticated", False):
            raise RuntimeError("feed_url() needs a signed-in user, a feed request, or user=")
        token = cast(str, get_feed_tokens().token_for(str(owner.get_id())))
    values[token_arg] = token
    return flask_url_for(endpoint, **values)


# -- the patron's page -------------------------------------------------------------------------------------------------

FEED_TEMPLATE = "patronlock/feed.html"


def _feed_page_endpoint() -> str:
    endpoint = current_app.config.get("PATRONLOCK_FEED_ENDPOINT")
    if not endpoint:
        raise NotFound()
    return str(endpoint)


def feed_page() -> ResponseReturnValue:
    """``GET PREFIX/feed``: the signed-in user's private feed URL, and a button for a new one."""
    endpoint = _feed_page_endpoint()
    if not current_user.is_authenticated:
        return current_app.login_manager.unauthorized()  # type: ignore[attr-defined]
    tokens = get_feed_tokens()
    url = feed_url(endpoint)
    info = tokens.info(str(current_user.get_id())) or {}
    used = info.get("last_used_at")
    last_read = date_text(used) if used is not None else None
    return render_template(FEED_TEMPLATE, feed_url=url, last_read=last_read)


def rotate_feed() -> ResponseReturnValue:
    """``POST PREFIX/feed/rotate`` (CSRF-protected): a new feed URL; the old one stops working."""
    from .csrf import check_csrf
    from .views.problems import _csrf_problem

    _feed_page_endpoint()
    if not current_user.is_authenticated:
        return current_app.login_manager.unauthorized()  # type: ignore[attr-defined]
    check_csrf(_csrf_problem)
    get_feed_tokens().rotate(str(current_user.get_id()), reason="user", source="user")
    flash(
        gettext("Your private feed has a new address. Put it in your feed reader: the old one no longer works."),
        "patronlock",
    )
    return redirect(flask_url_for("patronlock.feed"))


def _register_routes() -> None:
    # On the patronlock blueprint (PATRONLOCK_URL_PREFIX), at import: PatronLock.init_app imports this module before it
    # registers the blueprint on the first app.
    from .views import blueprint

    blueprint.add_url_rule("/feed", "feed", feed_page, methods=["GET"])
    blueprint.add_url_rule("/feed/rotate", "feed_rotate", rotate_feed, methods=["POST"])


_register_routes()


# -- unlinking rotates; the CLI revokes ------------------------------------------------------------------------------


def _on_unlinked(sender: Any, *, user_id: Any = None, **kwargs: Any) -> None:
    """``patron-unlinked``: the feed URL handed out while the user was linked stops working."""
    state: PatronLockState | None = getattr(sender, "extensions", {}).get("patronlock")
    if state is None or user_id is None:
        return
    tokens = FeedTokens(state)
    if tokens.info(str(user_id)) is None:
        return  # no feed URL was ever handed out
    tokens._write(
        str(user_id), tokens._key(), kind="feed_token_rotated", reason="unlinked", source="oauth", create=False
    )


def init_app(app: Flask) -> None:
    """Install private feeds on ``app``: feed tokens resolved before flask-patronlock's own lock checks, and the
    unlink receiver. Called by :meth:`PatronLock.init_app <flask_patronlock.PatronLock.init_app>`."""
    app.before_request_funcs.setdefault(None, []).insert(0, _before_request)
    signals.patron_unlinked.connect(_on_unlinked, weak=False)


@patronlock_cli.group("feeds")
def feeds_command() -> None:
    """Patrons' private feed tokens."""


@feeds_command.command("revoke")
@click.argument("user_id")
def feeds_revoke_command(user_id: str) -> None:
    """Revoke local user USER_ID's feed token: their feed URL answers 404 until they ask for a new one."""
    if get_feed_tokens().revoke(user_id, reason="admin", source="admin"):
        click.echo(f"Revoked the feed token of local user {user_id}.")
    else:
        click.echo(f"Local user {user_id} has no feed token.")
