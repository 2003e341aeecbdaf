"""A small, typed client for Patreon's OAuth endpoints and API v2.

Every method returns the snapshots of :mod:`flask_patronlock.patreon.types` and raises only
:class:`~flask_patronlock.patreon.errors.PatreonError` subclasses for anything Patreon (or the network) does wrong;
a ``ValueError`` means the caller passed something unusable (no client id, no token, an empty id).

Behaviour worth knowing:

* Every request has a timeout and a ``User-Agent``, waits for the rate limiter (by default one limiter per API base,
  shared by every client in the process), and counts in :attr:`PatreonClient.request_count`.
* Idempotent requests (GET, PATCH, DELETE) are retried on transport failures, 5xx and 429, up to ``max_retries``
  times with exponential backoff and jitter. A 429's ``retry_after`` is honoured (waited at least that long); when it
  is longer than ``max_backoff`` the client raises :class:`RateLimited` rather than block.
* Requests that must not run twice (creating a webhook, exchanging a single-use code, spending a single-use refresh
  token) are retried only when Patreon surely did not process them: a 429, or a connection that was never made.
  Otherwise the error is raised and the caller decides (a refresh token is still usable if Patreon never saw it).
* A 401 on a call made with the client's own token (no ``access_token=`` argument) is answered, when the client has
  a ``token_refresher``, by asking it once for a fresh token and sending the request again with it; the client keeps
  the fresh token for its next calls. What the refresher raises (:class:`ReauthorizationRequired` when the refresh
  token is refused) is raised instead.
* A ``pacer``, when given, is called with the bearer token before every API request (each attempt): how an app
  paces its calls under Patreon's per-token limit (100 a minute) across processes. Token endpoint calls are paced by
  ``rate_limiter`` only.
* Nothing logs or raises tokens or secrets: debug logs carry method, path, status and elapsed time only, and error
  messages are scrubbed of every secret the client knows.

Over 600 lines: one client, whose every endpoint shares the same retry, pacing, rate-limit and error mapping;
splitting it by endpoint would scatter that one request path.
"""

from __future__ import annotations

import dataclasses
import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from importlib import metadata
from typing import Any, TypedDict, TypeVar, Unpack
from urllib.parse import quote, urlsplit

import requests
from authlib.common.errors import AuthlibBaseError
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from .errors import (
    Forbidden,
    InvalidGrant,
    MalformedDocument,
    NotFound,
    PaginationError,
    PatreonAPIError,
    PatreonError,
    RateLimited,
    ReauthorizationRequired,
    ServerError,
    TokenError,
    TransportError,
    Unauthorized,
)
from .jsonapi import (
    load_json,
    parse_campaign,
    parse_campaigns,
    parse_identity,
    parse_member_document,
    parse_members_page,
    parse_token_response,
    parse_webhook,
    parse_webhooks,
    schema_drift,
)
from .ratelimit import RateLimiter, shared_rate_limiter
from .types import (
    MEMBER_ATTRIBUTES,
    CampaignSnapshot,
    Identity,
    MemberPage,
    MemberSnapshot,
    TokenSet,
    WebhookChanges,
    WebhookSnapshot,
)

__all__ = [
    "CAMPAIGN_FIELDS",
    "DEFAULT_BASE",
    "MAX_PAGE_SIZE",
    "MEMBER_FIELDS",
    "REQUESTED_FIELDS",
    "PatreonClient",
    "pkce_pair",
]

class PageOptions(TypedDict, total=False):
    """The keyword arguments of :meth:`PatreonClient.iter_member_pages`, which :meth:`PatreonClient.iter_members`
    passes on."""

    page_size: int
    cursor: str | None
    strict: bool
    access_token: str | None


logger = logging.getLogger("flask_patronlock.patreon")

T = TypeVar("T")

#: where Patreon lives.
DEFAULT_BASE = "https://www.patreon.com"
#: the path prefix of API v2.
API_PREFIX = "/api/oauth2/v2"
#: the largest ``page[count]`` Patreon accepts for members.
MAX_PAGE_SIZE = 1000
#: consecutive empty pages that still carry a next cursor before pagination is declared broken.
MAX_EMPTY_PAGES = 3

#: member attributes requested everywhere a member is fetched (``note``, the creator's private note, is left out).
MEMBER_FIELDS = tuple(name for name in MEMBER_ATTRIBUTES if name != "note")
#: campaign attributes requested by :meth:`PatreonClient.campaign` and :meth:`PatreonClient.campaigns`.
CAMPAIGN_FIELDS = ("creation_name", "vanity", "url", "pledge_url", "patron_count", "is_monthly")
_TIER_FIELDS_FULL = ("title", "amount_cents", "published", "description", "url", "patron_count", "discord_role_ids")
_WEBHOOK_FIELDS = ("last_attempted_at", "num_consecutive_times_failed", "paused", "secret", "triggers", "uri")

_MEMBER_FIELDS = ",".join(MEMBER_FIELDS)
#: the attributes each read of :meth:`PatreonClient.raw_document` asks for, by the resource type it returns.
REQUESTED_FIELDS: dict[str, tuple[str, ...]] = {
    "campaign": CAMPAIGN_FIELDS,
    "member": MEMBER_FIELDS,
    "webhook": _WEBHOOK_FIELDS,
}

_IDENTITY_PARAMS = {
    "include": "memberships,memberships.currently_entitled_tiers,memberships.campaign",
    "fields[user]": "email,is_email_verified,full_name,image_url,url,vanity",
    "fields[member]": _MEMBER_FIELDS,
    "fields[tier]": "title,amount_cents,published,url,description",
}
_MEMBERS_PARAMS = {
    "include": "currently_entitled_tiers,user",
    "fields[member]": _MEMBER_FIELDS,
    "fields[user]": "email,is_email_verified,full_name",
    "fields[tier]": "title,amount_cents",
}
_MEMBER_PARAMS = {
    "include": "currently_entitled_tiers,user,campaign",
    "fields[member]": _MEMBER_FIELDS,
    "fields[user]": "email,is_email_verified,full_name,image_url,url,vanity",
    "fields[tier]": "title,amount_cents,published,url,description",
    "fields[campaign]": "vanity",
}
_CAMPAIGN_PARAMS = {
    "include": "tiers,creator",
    "fields[campaign]": ",".join(CAMPAIGN_FIELDS),
    "fields[tier]": ",".join(_TIER_FIELDS_FULL),
    "fields[user]": "full_name,url,vanity",
}
_WEBHOOK_PARAMS = {
    "include": "campaign",
    "fields[webhook]": ",".join(_WEBHOOK_FIELDS),
    "fields[campaign]": "vanity",
}

_TOKEN_HEADERS = {
    "Accept": "application/json",
    "Content-Type": "application/x-www-form-urlencoded;charset=UTF-8",
}

#: transport failures after which a request that did reach Patreon may have been processed (or not).
_TRANSIENT = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)

_jitter = random.Random()


def _package_version() -> str:
    try:
        return metadata.version("flask-patronlock")
    except metadata.PackageNotFoundError:
        return "0.1.0.dev0"


def pkce_pair() -> tuple[str, str]:
    """A fresh PKCE ``(code_verifier, code_challenge)`` pair (S256).

    Keep the verifier server-side (e.g. in the session), send the challenge to :meth:`PatreonClient.authorization_url`
    and the verifier to :meth:`PatreonClient.exchange_code`.
    """
    verifier = generate_token(64)
    return verifier, create_s256_code_challenge(verifier)


def _segment(value: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string")
    return quote(value, safe="")


def _redact(text: str, secrets: Iterable[str | None]) -> str:
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, "***")
    return text


def _redact_value(value: Any, secrets: tuple[str | None, ...]) -> Any:
    if isinstance(value, str):
        return _redact(value, secrets)
    if isinstance(value, dict):
        return {key: _redact_value(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact_value(item, secrets) for item in value]
    return value


def _retry_after(response: requests.Response, errors: tuple[Mapping[str, Any], ...]) -> float:
    """Seconds to wait, from ``errors[0].retry_after_seconds`` and the ``Retry-After`` header (the larger)."""
    candidates = []
    if errors:
        value = errors[0].get("retry_after_seconds")
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            candidates.append(float(value))
    header = response.headers.get("Retry-After")
    if header:
        header = header.strip()
        try:
            candidates.append(max(0.0, float(header)))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(header)
            except (TypeError, ValueError, IndexError):
                when = None
            if when is not None:
                if when.tzinfo is None:
                    when = when.replace(tzinfo=UTC)
                candidates.append(max(0.0, (when - datetime.now(UTC)).total_seconds()))
    finite = [c for c in candidates if c == c and c != float("inf")]
    return max(finite) if finite else 0.0


def _connect_failed(exc: requests.RequestException) -> bool:
    """Whether the connection was never established, so the server cannot have seen the request."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError) and exc.args:
        reason = getattr(exc.args[0], "reason", None)  # urllib3 MaxRetryError(reason=NewConnectionError(...))
        return type(reason).__name__ in {"NewConnectionError", "NameResolutionError", "ConnectTimeoutError"}
    return False


class _TokenResponse(Exception):
    """Internal: stops Authlib after the token endpoint answered, carrying the mapped error."""

    def __init__(self, error: PatreonError) -> None:
        super().__init__("token endpoint error")
        self.error = error


class PatreonClient:
    """Patreon's OAuth endpoints and API v2.

    :param client_id: the OAuth client id (needed for the OAuth methods).
    :param client_secret: the OAuth client secret (needed for :meth:`exchange_code` and :meth:`refresh`).
    :param access_token: the default bearer token for API calls (a creator token for syncs and webhooks); every API
        method also takes ``access_token=`` to act as a particular user.
    :param api_base: where the API lives (``{api_base}/api/oauth2/v2/...``); point it at the sandbox in tests.
    :param oauth_base: where ``/oauth2/authorize`` and ``/api/oauth2/token`` live.
    :param timeout: the ``requests`` timeout of every request, seconds or ``(connect, read)``.
    :param user_agent: the ``User-Agent`` header; default ``flask-patronlock/<version>``.
    :param max_retries: retries after the first attempt (so ``max_retries + 1`` attempts at most).
    :param backoff_base: the first retry waits about this long; each next one twice as long.
    :param max_backoff: the longest single wait; a 429 asking for longer is raised instead of waited out.
    :param rate_limiter: the limiter to wait on before each request; default: the process-wide one of ``api_base``.
    :param session: the ``requests.Session`` to send through (its adapters also carry the token calls). The client
        closes a session it created itself, never one passed in.
    :param sleep: how to wait between retries (inject a fake in tests).
    :param token_refresher: called with the client's token when the API answers 401 to it; returns a fresh token to
        send the request again with (once), or raises (see the module notes).
    :param pacer: called with the bearer token before every API request (see the module notes).
    """

    def __init__(
        self,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        access_token: str | None = None,
        api_base: str = DEFAULT_BASE,
        oauth_base: str = DEFAULT_BASE,
        timeout: float | tuple[float, float] = (5.0, 30.0),
        user_agent: str | None = None,
        max_retries: int = 4,
        backoff_base: float = 0.5,
        max_backoff: float = 30.0,
        rate_limiter: RateLimiter | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], object] = time.sleep,
        token_refresher: Callable[[str], str] | None = None,
        pacer: Callable[[str], object] | None = None,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.client_id = client_id
        self._client_secret = client_secret
        #: the default bearer token of API calls.
        self.access_token = access_token
        self.api_base = api_base.rstrip("/")
        self.oauth_base = oauth_base.rstrip("/")
        self.timeout = timeout
        self.user_agent = user_agent or f"flask-patronlock/{_package_version()}"
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.max_backoff = max_backoff
        self.rate_limiter = rate_limiter if rate_limiter is not None else shared_rate_limiter(self.api_base)
        self._own_session = session is None
        self.session = session if session is not None else requests.Session()
        self._sleep = sleep
        self.token_refresher = token_refresher
        self.pacer = pacer
        #: HTTP requests sent by this client (every attempt counts, retries included).
        self.request_count = 0
        self._count_lock = threading.Lock()

    # -- endpoints -----------------------------------------------------------------------------------------------

    @property
    def authorize_endpoint(self) -> str:
        """``{oauth_base}/oauth2/authorize``."""
        return f"{self.oauth_base}/oauth2/authorize"

    @property
    def token_endpoint(self) -> str:
        """``{oauth_base}/api/oauth2/token``."""
        return f"{self.oauth_base}/api/oauth2/token"

    @property
    def api_root(self) -> str:
        """``{api_base}/api/oauth2/v2``."""
        return f"{self.api_base}{API_PREFIX}"

    # -- lifecycle -----------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the HTTP session if this client created it."""
        if self._own_session:
            self.session.close()

    def __enter__(self) -> PatreonClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PatreonClient(client_id={self.client_id!r}, api_base={self.api_base!r})"

    # -- OAuth ---------------------------------------------------------------------------------------------------

    def _require_client_id(self) -> str:
        if not self.client_id:
            raise ValueError("PatreonClient needs client_id for OAuth")
        return self.client_id

    def authorization_url(
        self,
        redirect_uri: str,
        state: str,
        scopes: Iterable[str] | str,
        code_challenge: str | None = None,
    ) -> str:
        """The URL to send the user to so they authorize this client.

        :param redirect_uri: where Patreon sends the user back (must match the client's registration).
        :param state: the anti-CSRF state, checked on the callback.
        :param scopes: the scopes to ask for (joined with spaces), e.g. ``["identity", "identity[email]"]``.
        :param code_challenge: a PKCE S256 challenge (see :func:`pkce_pair`); adds ``code_challenge_method=S256``.
        """
        if not state:
            raise ValueError("state must be a non-empty string")
        scope = scopes if isinstance(scopes, str) else " ".join(scopes)
        extra: dict[str, str] = {}
        if code_challenge:
            extra = {"code_challenge": code_challenge, "code_challenge_method": "S256"}
        with OAuth2Session(client_id=self._require_client_id()) as oauth:
            url, _ = oauth.create_authorization_url(
                self.authorize_endpoint, state=state, redirect_uri=redirect_uri, scope=scope, **extra
            )
        return str(url)

    def exchange_code(self, code: str, redirect_uri: str, code_verifier: str | None = None) -> TokenSet:
        """Exchange the authorization code from the OAuth callback for tokens.

        :raises InvalidGrant: the code is expired, already used, or the redirect URI / verifier does not match.
        :raises TokenError: another OAuth error (``invalid_client`` ...).
        :raises RateLimited, ServerError, TransportError, MalformedDocument: as their names say.
        """
        if not code:
            raise ValueError("code must be a non-empty string")
        params = {"code": code, "redirect_uri": redirect_uri}
        if code_verifier:
            params["code_verifier"] = code_verifier
        return self._token_call("authorization_code", params, (code, code_verifier))

    def refresh(self, refresh_token: str) -> TokenSet:
        """Spend a refresh token for a new token pair.

        Refresh tokens are single-use: store the returned pair (its ``refresh_token`` is the new one) before anything
        else. If Patreon's answer carries no new refresh token, the result's ``refresh_token`` is ``None``.

        :raises InvalidGrant: the refresh token is expired, revoked or already spent.
        :raises TokenError, RateLimited, ServerError, TransportError, MalformedDocument: as their names say.
        """
        if not refresh_token:
            raise ValueError("refresh_token must be a non-empty string")
        return self._token_call("refresh_token", {"refresh_token": refresh_token}, (refresh_token,))

    def _token_call(self, grant: str, params: dict[str, str], extra_secrets: tuple[str | None, ...]) -> TokenSet:
        client_id = self._require_client_id()
        if not self._client_secret:
            raise ValueError("PatreonClient needs client_secret to call the token endpoint")
        secrets = (self._client_secret, *extra_secrets)
        url = self.token_endpoint
        headers = {**_TOKEN_HEADERS, "User-Agent": self.user_agent}

        def attempt() -> TokenSet:
            oauth = OAuth2Session(
                client_id=client_id,
                client_secret=self._client_secret,
                token_endpoint_auth_method="client_secret_post",
            )
            # Send through the client's session transport (its adapters, proxies and TLS settings).
            oauth.adapters = self.session.adapters
            oauth.proxies = self.session.proxies
            oauth.verify = self.session.verify
            oauth.cert = self.session.cert
            oauth.trust_env = self.session.trust_env
            payload: list[dict[str, Any]] = []

            def inspect(response: requests.Response) -> requests.Response:
                self._log_response("POST", url, response)
                payload.append(self._check_token_response(response, secrets))
                return response

            try:
                if grant == "refresh_token":
                    oauth.register_compliance_hook("refresh_token_response", inspect)
                    oauth.refresh_token(url, headers=dict(headers), timeout=self.timeout, **params)
                else:
                    oauth.register_compliance_hook("access_token_response", inspect)
                    oauth.fetch_token(url, grant_type=grant, headers=dict(headers), timeout=self.timeout, **params)
            except _TokenResponse as stop:
                raise stop.error from None
            except AuthlibBaseError as exc:  # not expected once the hook has vetted the answer
                raise TokenError(0, message=_redact(f"OAuth client error: {exc}", secrets)) from None
            return parse_token_response(payload[0])

        return self._call("POST", url, attempt, idempotent=False, secrets=secrets)

    def _check_token_response(self, response: requests.Response, secrets: tuple[str | None, ...]) -> dict[str, Any]:
        """The token endpoint's JSON object, or raise :class:`_TokenResponse` with the mapped error."""
        status = response.status_code
        body = _redact(response.text, secrets) if status >= 400 else ""
        try:
            data = load_json(response.content)
        except MalformedDocument:
            data = None
        if status == 429 or status >= 500:
            raise _TokenResponse(self._http_error(response, secrets))
        if not isinstance(data, dict):
            if status >= 400:
                raise _TokenResponse(TokenError(status, (), body))
            raise _TokenResponse(MalformedDocument(f"token endpoint answered HTTP {status} without a JSON object"))
        error = data.get("error")
        if status >= 400 or error is not None:
            code = error if isinstance(error, str) else None
            raw_description = data.get("error_description")
            description = _redact(raw_description, secrets) if isinstance(raw_description, str) else None
            cls = InvalidGrant if code == "invalid_grant" else TokenError
            raise _TokenResponse(cls(status, (), body, error=code, description=description))
        return data

    # -- the request loop ----------------------------------------------------------------------------------------

    def _count(self) -> None:
        with self._count_lock:
            self.request_count += 1

    def _backoff(self, retry: int) -> float:
        delay = min(self.max_backoff, self.backoff_base * (2**retry))
        return delay * (0.5 + _jitter.random() / 2)  # "equal jitter": between half and all of it

    def _call(
        self,
        method: str,
        url: str,
        attempt: Callable[[], T],
        *,
        idempotent: bool,
        secrets: tuple[str | None, ...],
        pace: Callable[[], object] | None = None,
    ) -> T:
        """Run ``attempt`` (one HTTP request) under the rate limiter (and ``pace``), retrying as the module docstring
        says."""
        retry = 0
        while True:
            self.rate_limiter.acquire()
            if pace is not None:
                pace()
            self._count()
            started = time.monotonic()
            cause: BaseException | None = None
            try:
                return attempt()
            except requests.RequestException as exc:
                logger.debug(
                    "%s %s failed after %.3fs: %s",
                    method,
                    urlsplit(url).path,
                    time.monotonic() - started,
                    type(exc).__name__,
                )
                error: PatreonError = self._transport_error(method, url, exc, secrets)
                connect_failed = _connect_failed(exc)
                retryable = connect_failed or (idempotent and isinstance(exc, _TRANSIENT))
                cause = exc
            except RateLimited as exc:
                error, retryable = exc, True
            except ServerError as exc:
                error, retryable = exc, idempotent
            if not retryable or retry >= self.max_retries:
                raise error from cause
            delay = self._backoff(retry)
            if isinstance(error, RateLimited):
                if error.retry_after > self.max_backoff:
                    raise error
                delay = max(delay, error.retry_after)
            logger.debug(
                "retrying %s %s in %.2fs (retry %d of %d)",
                method,
                urlsplit(url).path,
                delay,
                retry + 1,
                self.max_retries,
            )
            self._sleep(delay)
            retry += 1

    def _transport_error(
        self, method: str, url: str, exc: requests.RequestException, secrets: tuple[str | None, ...]
    ) -> TransportError:
        detail = _redact(str(exc), secrets)[:300]
        message = f"{method} {urlsplit(url).path} got no response: {type(exc).__name__}"
        if detail:
            message += f": {detail}"
        return TransportError(message, connect_failed=_connect_failed(exc))

    def _log_response(self, method: str, url: str, response: requests.Response) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            elapsed = response.elapsed.total_seconds() if response.elapsed is not None else 0.0
            logger.debug("%s %s -> %d in %.3fs", method, urlsplit(url).path, response.status_code, elapsed)

    def _http_error(self, response: requests.Response, secrets: tuple[str | None, ...]) -> PatreonAPIError:
        status = response.status_code
        text = response.text
        leaked = any(secret and secret in text for secret in secrets)
        errors: tuple[Mapping[str, Any], ...] = ()
        try:
            data = load_json(response.content)
        except MalformedDocument:
            data = None
        if isinstance(data, dict) and isinstance(data.get("errors"), list):
            errors = tuple(e for e in data["errors"] if isinstance(e, dict))
            if leaked:
                errors = tuple(_redact_value(e, secrets) for e in errors)
        body = _redact(text, secrets) if leaked else text
        if status == 429:
            return RateLimited(status, errors, body, retry_after=_retry_after(response, errors))
        cls: type[PatreonAPIError]
        if status == 401:
            cls = Unauthorized
        elif status == 403:
            cls = Forbidden
        elif status == 404:
            cls = NotFound
        elif status >= 500:
            cls = ServerError
        else:
            cls = PatreonAPIError
        return cls(status, errors, body)

    def _api(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Mapping[str, Any] | None = None,
        access_token: str | None = None,
    ) -> Any:
        """One API v2 call: the decoded JSON body (``None`` for an empty one)."""
        token = access_token or self.access_token
        if not token:
            raise ValueError("no access token: pass access_token= to PatreonClient or to the call")
        try:
            return self._api_with(token, method, path, params, json_body)
        except Unauthorized as exc:
            if self.token_refresher is None or access_token is not None or isinstance(exc, ReauthorizationRequired):
                raise
            fresh = self.token_refresher(token)
            if not fresh or fresh == token:
                raise
        if self.access_token == token:
            self.access_token = fresh
        return self._api_with(fresh, method, path, params, json_body)

    def _api_with(
        self,
        token: str,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        json_body: Mapping[str, Any] | None,
    ) -> Any:
        url = self.api_root + path
        headers = {"Authorization": f"Bearer {token}", "User-Agent": self.user_agent, "Accept": "application/json"}
        secrets = (token, self._client_secret)

        def attempt() -> Any:
            response = self.session.request(
                method, url, params=params, json=json_body, headers=headers, timeout=self.timeout
            )
            self._log_response(method, url, response)
            if response.status_code >= 400:
                raise self._http_error(response, secrets)
            content = response.content
            if not content or response.status_code == 204:
                return None
            return load_json(content)

        pacer = self.pacer
        pace = (lambda: pacer(token)) if pacer is not None else None
        return self._call(method, url, attempt, idempotent=method != "POST", secrets=secrets, pace=pace)

    # -- API v2 --------------------------------------------------------------------------------------------------

    def identity(self, *, campaign_id: str | None = None, access_token: str | None = None) -> Identity:
        """``GET /identity``: who the token belongs to, and their memberships with entitled tiers.

        :param campaign_id: keep only the membership to this campaign (the others are dropped from the result).
        :param access_token: the user's token (default: the client's).
        """
        doc = self._api("GET", "/identity", params=_IDENTITY_PARAMS, access_token=access_token)
        identity = parse_identity(doc)
        if campaign_id is not None:
            kept = tuple(m for m in identity.memberships if m.campaign_id == campaign_id)
            identity = dataclasses.replace(identity, memberships=kept)
        return identity

    def campaigns(self, *, access_token: str | None = None) -> list[CampaignSnapshot]:
        """``GET /campaigns``: the campaigns of the token's owner, with tiers and creator."""
        doc = self._api("GET", "/campaigns", params=_CAMPAIGN_PARAMS, access_token=access_token)
        return parse_campaigns(doc)

    def campaign(self, campaign_id: str, *, access_token: str | None = None) -> CampaignSnapshot:
        """``GET /campaigns/{id}``: one campaign with its tiers and creator."""
        path = f"/campaigns/{_segment(campaign_id, 'campaign_id')}"
        return parse_campaign(self._api("GET", path, params=_CAMPAIGN_PARAMS, access_token=access_token))

    def member(self, member_id: str, *, access_token: str | None = None) -> MemberSnapshot:
        """``GET /members/{id}``: one member with entitled tiers, user and campaign (the truth a webhook hints at).

        :raises NotFound: no such member (or not visible to this token).
        """
        path = f"/members/{_segment(member_id, 'member_id')}"
        return parse_member_document(self._api("GET", path, params=_MEMBER_PARAMS, access_token=access_token))

    def iter_member_pages(
        self,
        campaign_id: str,
        *,
        page_size: int = MAX_PAGE_SIZE,
        cursor: str | None = None,
        strict: bool = True,
        access_token: str | None = None,
    ) -> Iterator[MemberPage]:
        """Every page of ``GET /campaigns/{id}/members``, following ``meta.pagination.cursors.next`` (or
        ``links.next``).

        Pages are fetched lazily, one per iteration. Pagination that goes round in circles stops with
        :class:`PaginationError` (after the pages before it were yielded): a next cursor seen before, a page holding a
        member already seen, or :data:`MAX_EMPTY_PAGES` empty pages in a row that still point onwards.

        A page that lacks a field access depends on and was asked for, or has a value Patreon does not document,
        raises :class:`~flask_patronlock.patreon.errors.SchemaDrift` whatever ``strict`` says (see
        :func:`~flask_patronlock.patreon.jsonapi.schema_drift`).

        :param page_size: ``page[count]``, capped at :data:`MAX_PAGE_SIZE`.
        :param cursor: resume from this cursor instead of the first page.
        :param strict: passed to :func:`~flask_patronlock.patreon.jsonapi.parse_members_page`.
        :raises PaginationError: during iteration (see above).
        :raises MalformedDocument: a page is not the document expected (``SchemaDrift`` among them).
        :raises PatreonAPIError: Patreon answered with an error.
        :raises TransportError: a page got no answer.
        """
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        path = f"/campaigns/{_segment(campaign_id, 'campaign_id')}/members"
        params = {**_MEMBERS_PARAMS, "page[count]": str(min(page_size, MAX_PAGE_SIZE))}
        return self._pages(path, params, cursor, strict, access_token)

    def _pages(
        self, path: str, base_params: dict[str, str], cursor: str | None, strict: bool, access_token: str | None
    ) -> Iterator[MemberPage]:
        seen_cursors: set[str] = set()
        seen_ids: set[str] = set()
        if cursor:
            seen_cursors.add(cursor)
        empty_streak = 0
        number = 0
        while True:
            number += 1
            params = base_params if not cursor else {**base_params, "page[cursor]": cursor}
            doc = self._api("GET", path, params=params, access_token=access_token)
            schema_drift(
                doc,
                attributes=base_params.get("fields[member]", "").split(","),
                relationships=base_params.get("include", "").split(","),
            )
            page = parse_members_page(doc, cursor=cursor, strict=strict)
            before = len(seen_ids)
            seen_ids.update([m.member_id for m in page.members])
            if len(seen_ids) - before != len(page.members):
                repeated = before + len(page.members) - len(seen_ids)
                raise PaginationError(f"members page {number} repeats {repeated} member(s) already seen")
            yield page
            next_cursor = page.next_cursor
            if next_cursor is None:
                return
            if next_cursor in seen_cursors:
                raise PaginationError(f"members page {number} points to a cursor already followed")
            empty_streak = empty_streak + 1 if page.raw_count == 0 else 0
            if empty_streak >= MAX_EMPTY_PAGES:
                raise PaginationError(f"{empty_streak} empty members pages in a row still point to a next page")
            seen_cursors.add(next_cursor)
            cursor = next_cursor

    def iter_members(self, campaign_id: str, **options: Unpack[PageOptions]) -> Iterator[MemberSnapshot]:
        """Every member of the campaign, page after page (the arguments are those of :meth:`iter_member_pages`).

        A sync that must know whether it saw *every* member should use :meth:`iter_member_pages` and compare counts.
        """
        for page in self.iter_member_pages(campaign_id, **options):
            yield from page.members

    def webhooks(self, *, access_token: str | None = None) -> list[WebhookSnapshot]:
        """``GET /webhooks``: the webhooks this client registered (with their secrets)."""
        return parse_webhooks(self._api("GET", "/webhooks", params=_WEBHOOK_PARAMS, access_token=access_token))

    def raw_document(
        self, what: str, campaign_id: str | None = None, *, page_size: int = 100, access_token: str | None = None
    ) -> Any:
        """The decoded JSON Patreon answers to one of the reads a sync makes, with the same fields asked for, unparsed
        and unchecked: ``"campaign"``, ``"members"`` (the first page of ``page_size``) or ``"webhooks"``. For the
        live check (:mod:`flask_patronlock.livecheck`), which compares the shape with :data:`REQUESTED_FIELDS`.

        :raises ValueError: ``what`` is none of those, or a campaign read without ``campaign_id``.
        :raises PatreonAPIError: Patreon answered with an error.
        """
        if what == "webhooks":
            return self._api("GET", "/webhooks", params=_WEBHOOK_PARAMS, access_token=access_token)
        if what not in ("campaign", "members") or not campaign_id:
            raise ValueError(f"raw_document: {what!r} (with campaign_id {campaign_id!r}) is not a read the sync makes")
        path = f"/campaigns/{_segment(campaign_id, 'campaign_id')}"
        if what == "campaign":
            return self._api("GET", path, params=_CAMPAIGN_PARAMS, access_token=access_token)
        params = {**_MEMBERS_PARAMS, "page[count]": str(max(1, min(page_size, MAX_PAGE_SIZE)))}
        return self._api("GET", path + "/members", params=params, access_token=access_token)

    def create_webhook(
        self, campaign_id: str, uri: str, triggers: Iterable[str], *, access_token: str | None = None
    ) -> WebhookSnapshot:
        """``POST /webhooks``: register ``uri`` for ``triggers`` (e.g. ``members:pledge:create``) on a campaign.

        Not retried unless Patreon surely did not see it (a retry could register the webhook twice).
        """
        _segment(campaign_id, "campaign_id")
        body = {
            "data": {
                "type": "webhook",
                "attributes": {"triggers": list(triggers), "uri": uri},
                "relationships": {"campaign": {"data": {"type": "campaign", "id": campaign_id}}},
            }
        }
        webhook = parse_webhook(self._api("POST", "/webhooks", json_body=body, access_token=access_token))
        if webhook.campaign_id is None:
            webhook = dataclasses.replace(webhook, campaign_id=campaign_id)
        return webhook

    def update_webhook(
        self, webhook_id: str, *, access_token: str | None = None, **changes: Unpack[WebhookChanges]
    ) -> WebhookSnapshot:
        """``PATCH /webhooks/{id}``: change the URI, the triggers, or pause/unpause (unpausing makes Patreon resend
        what failed)."""
        uri, triggers, paused = changes.get("uri"), changes.get("triggers"), changes.get("paused")
        attributes: dict[str, Any] = {}
        if uri is not None:
            attributes["uri"] = uri
        if triggers is not None:
            attributes["triggers"] = list(triggers)
        if paused is not None:
            attributes["paused"] = paused
        if not attributes:
            raise ValueError("update_webhook needs at least one of uri, triggers, paused")
        path = f"/webhooks/{_segment(webhook_id, 'webhook_id')}"
        body = {"data": {"type": "webhook", "id": webhook_id, "attributes": attributes}}
        return parse_webhook(self._api("PATCH", path, json_body=body, access_token=access_token))

    def delete_webhook(self, webhook_id: str, *, access_token: str | None = None) -> None:
        """``DELETE /webhooks/{id}``."""
        path = f"/webhooks/{_segment(webhook_id, 'webhook_id')}"
        self._api("DELETE", path, access_token=access_token)
