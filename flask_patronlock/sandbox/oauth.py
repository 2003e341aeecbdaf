"""The sandbox's OAuth client and tokens: authorization codes (single use, PKCE), token issue, refresh and
revocation, the creator's token, and Patreon's per-token request limit.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections import deque
from collections.abc import Callable, Iterable
from datetime import timedelta

from .core import SandboxCore
from .entities import DEFAULT_USER_SCOPES, AuthCode, Member, OAuthError, SandboxError, Token, User

__all__ = ["OAuthMixin"]


class OAuthMixin(SandboxCore):
    """The OAuth client, codes and tokens of a :class:`~.state.Sandbox` (see the module docstring)."""

    def check_client(self, client_id: str | None, client_secret: str | None = None) -> bool:
        """True if ``client_id`` (and ``client_secret``, when given) are the sandbox's OAuth client's."""
        if client_id is None or not secrets.compare_digest(client_id, self.client_id):
            return False
        return client_secret is None or secrets.compare_digest(client_secret, self.client_secret)

    @staticmethod
    def parse_scopes(scope: str | None) -> frozenset[str]:
        """Scopes from a space- (or comma-) separated string."""
        if not scope:
            return frozenset()
        return frozenset(s for s in scope.replace(",", " ").split() if s)

    def issue_token(
        self,
        user: User | str,
        *,
        scopes: Iterable[str] | None = None,
        expires_in: int | None = None,
        client_id: str | None = None,
    ) -> Token:
        """Issue an access/refresh token pair for ``user`` without the OAuth dance.

        :param scopes: default :data:`DEFAULT_USER_SCOPES`.
        :param expires_in: seconds (sandbox time), default :attr:`access_token_ttl`.
        """
        with self.lock:
            the_user = self.user(user)
            ttl = self.access_token_ttl if expires_in is None else expires_in
            token = Token(
                access_token=secrets.token_urlsafe(32),
                refresh_token=secrets.token_urlsafe(32),
                user_id=the_user.id,
                client_id=client_id or self.client_id,
                scopes=frozenset(DEFAULT_USER_SCOPES if scopes is None else scopes),
                issued_at=self._now,
                expires_at=self._now + timedelta(seconds=ttl),
                expires_in=ttl,
            )
            self._tokens[token.access_token] = token
            self._refresh_tokens[token.refresh_token] = token
            return token

    def token_for(
        self, user: User | Member | str, *, scopes: Iterable[str] | None = None, expires_in: int | None = None
    ) -> str:
        """An access token for ``user`` (object, member, id or email), issued without the OAuth dance."""
        with self.lock:
            the_user = self.user(user)
            return self.issue_token(the_user, scopes=scopes, expires_in=expires_in).access_token

    def authenticate(self, access_token: str | None) -> Token | None:
        """The live token for a bearer string, or None (unknown, revoked or expired on the sandbox clock)."""
        if not access_token:
            return None
        with self.lock:
            token = self._tokens.get(access_token)
            if token is None or (token.expires_at is not None and token.expires_at <= self._now):
                return None
            return token

    def revoke_token(self, access_token: str) -> None:
        """Make an access token (and its refresh token) stop working."""
        with self.lock:
            token = self._tokens.pop(access_token, None)
            if token is not None:
                self._refresh_tokens.pop(token.refresh_token, None)

    def expire_creator_token(self) -> str:
        """The creator's access token dies now, early (as real ones sometimes do): the API answers 401 to it, while
        its refresh token still works. Returns the dead token."""
        with self.lock:
            self._tokens.pop(self.creator_access_token, None)
            return self.creator_access_token

    def revoke_creator_refresh_token(self) -> None:
        """Patreon stops accepting the creator's refresh token: refreshing it answers ``invalid_grant``."""
        with self.lock:
            self._refresh_tokens.pop(self.creator_refresh_token, None)

    def limit_tokens(
        self, max_calls: int = 100, period: float = 60.0, *, clock: Callable[[], float] | None = None
    ) -> None:
        """Limit every access token to ``max_calls`` API requests per ``period`` seconds, as Patreon does (100 a
        minute): a request over the limit answers 429 with ``retry_after_seconds`` and ``Retry-After`` saying when
        the token's oldest counted request leaves the window. Off by default.

        :param clock: seconds, for the window (default real time; tests pass the fake clock their client sleeps on).
        """
        if max_calls < 1 or period <= 0:
            raise SandboxError("max_calls must be >= 1 and period positive")
        with self.lock:
            self.token_rate_limit = (max_calls, period)
            if clock is not None:
                self.rate_clock = clock
            self._token_calls.clear()

    def take_token_call(self, access_token: str) -> float:
        """Count one API request of ``access_token`` against :meth:`limit_tokens`: ``0.0`` when it may go, else the
        seconds until it may (nothing counted)."""
        with self.lock:
            if self.token_rate_limit is None:
                return 0.0
            max_calls, period = self.token_rate_limit
            now = self.rate_clock()
            calls = self._token_calls.setdefault(access_token, deque())
            while calls and calls[0] + period <= now:
                calls.popleft()
            if len(calls) >= max_calls:
                return calls[0] + period - now
            calls.append(now)
            return 0.0

    def create_code(
        self,
        *,
        client_id: str,
        redirect_uri: str,
        user: User | str,
        scopes: Iterable[str],
        code_challenge: str | None = None,
        code_challenge_method: str | None = None,
    ) -> str:
        """An authorization code, as the authorize page issues on Approve."""
        with self.lock:
            the_user = self.user(user)
            code = AuthCode(
                code=secrets.token_urlsafe(24),
                client_id=client_id,
                redirect_uri=redirect_uri,
                user_id=the_user.id,
                scopes=frozenset(scopes),
                expires_at=self._now + timedelta(seconds=self.code_ttl),
                code_challenge=code_challenge,
                code_challenge_method=code_challenge_method,
            )
            self._codes[code.code] = code
            return code.code

    def exchange_code(
        self, *, client_id: str, code: str | None, redirect_uri: str | None, code_verifier: str | None = None
    ) -> Token:
        """``grant_type=authorization_code``: the code is single-use, bound to the client and redirect URI,
        checked against its PKCE challenge, and expires after :attr:`code_ttl` seconds of sandbox time.

        :raises OAuthError: ``invalid_request`` (400) for a missing code, ``invalid_grant`` (401) otherwise.
        """
        if not code:
            raise OAuthError("invalid_request", 400, "code is required")
        with self.lock:
            record = self._codes.get(code)
            if record is None or record.used:
                raise OAuthError("invalid_grant", 401, "unknown or already used code")
            if record.expires_at <= self._now:
                raise OAuthError("invalid_grant", 401, "the code expired")
            if record.client_id != client_id:
                raise OAuthError("invalid_grant", 401, "the code was issued to another client")
            if redirect_uri != record.redirect_uri:
                raise OAuthError("invalid_grant", 401, "redirect_uri does not match the authorize request")
            if record.code_challenge is not None:
                if not code_verifier:
                    raise OAuthError("invalid_grant", 401, "code_verifier is required")
                digest = hashlib.sha256(code_verifier.encode("ascii", "replace")).digest()
                expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
                if not secrets.compare_digest(expected, record.code_challenge):
                    raise OAuthError("invalid_grant", 401, "code_verifier does not match code_challenge")
            record.used = True
            return self.issue_token(record.user_id, scopes=record.scopes, client_id=client_id)

    def refresh(self, *, client_id: str, refresh_token: str | None) -> Token:
        """``grant_type=refresh_token``: rotate. The old refresh token stops working and a new pair is issued
        (the old access token lives on until it expires).

        :raises OAuthError: ``invalid_request`` (400) for a missing token, ``invalid_grant`` (401) otherwise.
        """
        if not refresh_token:
            raise OAuthError("invalid_request", 400, "refresh_token is required")
        with self.lock:
            old = self._refresh_tokens.get(refresh_token)
            if old is None or old.client_id != client_id:
                raise OAuthError("invalid_grant", 401, "unknown or already used refresh token")
            del self._refresh_tokens[refresh_token]
            if old.expires_at is None:  # the creator's pair stays non-expiring
                new = Token(
                    access_token=secrets.token_urlsafe(32),
                    refresh_token=secrets.token_urlsafe(32),
                    user_id=old.user_id,
                    client_id=old.client_id,
                    scopes=old.scopes,
                    issued_at=self._now,
                    expires_at=None,
                    expires_in=self.access_token_ttl,
                )
                self._tokens[new.access_token] = new
                self._refresh_tokens[new.refresh_token] = new
                self.creator_access_token = new.access_token
                self.creator_refresh_token = new.refresh_token
                return new
            return self.issue_token(old.user_id, scopes=old.scopes, client_id=old.client_id)
