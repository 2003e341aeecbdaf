"""Every ``PATRONLOCK_*`` configuration key, its default, and a one-line meaning.

:func:`apply_defaults` sets each default on the app with ``setdefault`` in ``init_app``; ``docs/config.rst`` documents
each key once, and a test checks that the two agree. Values that have no safe default (credentials) default to
``None`` and are asked for by :func:`require` only when something needs them, naming the key to set.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError


@dataclass(frozen=True, slots=True)
class Key:
    """One configuration key."""

    name: str
    default: Any
    meaning: str


#: The configuration keys, in the order the docs list them.
KEYS: tuple[Key, ...] = (
    Key("PATRONLOCK_CLIENT_ID", None, "OAuth client id of your Patreon API client."),
    Key("PATRONLOCK_CLIENT_SECRET", None, "OAuth client secret of your Patreon API client."),
    Key("PATRONLOCK_CREATOR_ACCESS_TOKEN", None, "The creator's access token (reads campaign members, webhooks)."),
    Key("PATRONLOCK_CREATOR_REFRESH_TOKEN", None,
        "The creator's refresh token: stored (encrypted) on first use, then rotated there; a new one replaces it."),
    Key("PATRONLOCK_CAMPAIGN_ID", None, "The Patreon campaign whose patrons unlock this site."),
    Key("PATRONLOCK_WEBHOOK_SECRETS", [], "Webhook secrets; a signature matching any of them is accepted (rotation)."),
    Key("PATRONLOCK_TOKEN_KEYS", [], "Fernet keys for tokens at rest; the first encrypts, all decrypt (rotation)."),
    Key("PATRONLOCK_OAUTH_BASE_URL", "https://www.patreon.com", "Where OAuth lives; point it at the sandbox offline."),
    Key("PATRONLOCK_API_BASE_URL", "https://www.patreon.com", "Where API v2 lives; point it at the sandbox offline."),
    Key("PATRONLOCK_SYNC_INTERVAL", 1800, "Seconds between scheduled reconcile runs (default 30 minutes)."),
    Key("PATRONLOCK_HTTP_TIMEOUT", 10.0, "Seconds to wait for Patreon on any single request."),
    Key("PATRONLOCK_TOKEN_RATE_LIMIT", 100,
        "Requests a minute each Patreon access token may make (Patreon's limit); calls wait to stay under it."),
    Key("PATRONLOCK_SHARED_RATE_LIMIT", True,
        "Pace Patreon calls across every process sharing the database (a small write per call); False: per process."),
    Key("PATRONLOCK_USER_AGENT", None, "User-Agent sent to Patreon; defaults to flask-patronlock/<version>."),
    Key("PATRONLOCK_STRICT_SIGNALS", False, "Re-raise signal receivers' exceptions (for tests) instead of logging."),
    Key("PATRONLOCK_CLOCK", None,
        "A callable giving the time (aware UTC) every decision and record uses; None: the real time."),
    # -- reconcile runs, webhooks and jobs (issue 5) --
    Key("PATRONLOCK_WEBHOOK_MAX_BYTES", 1_048_576, "Largest webhook body accepted; larger ones get 413."),
    Key("PATRONLOCK_WEBHOOK_RETRY_SECONDS", 60, "First wait before retrying a failed re-fetch (doubles)."),
    Key("PATRONLOCK_WEBHOOK_MAX_ATTEMPTS", 8, "Attempts at re-fetching a webhook's member before giving up."),
    Key("PATRONLOCK_WEBHOOK_RECHECK_SECONDS", 300, "A body seen again after this long re-checks its member once."),
    Key("PATRONLOCK_JOBS", "thread", "How background work runs: 'thread' (default), 'inline' or 'celery'."),
    Key("PATRONLOCK_SCHEDULER", None, "Run the embedded scheduler: None = on unless testing or Celery; True; False."),
    Key("PATRONLOCK_SYNC_LEASE_SECONDS", 45, "Seconds a run's lease lasts without renewal (a crashed run's lock)."),
    Key("PATRONLOCK_SYNC_TOTAL_SLACK", 5,
        "Members a complete run may see more or fewer than Patreon's total (or the percentage below, if larger)."),
    Key("PATRONLOCK_SYNC_TOTAL_SLACK_PERCENT", 1.0, "The same slack as a percentage of Patreon's total."),
    Key("PATRONLOCK_SYNC_DB_ATTEMPTS", 3, "Attempts at a run's database step when the connection is lost."),
    Key("PATRONLOCK_SYNC_ALERT_AFTER", 3, "Incomplete runs in a row after which a run warns (signal, log, Sync page)."),
    Key("PATRONLOCK_HEALTH_TOKEN", None,
        "Bearer token that reads PREFIX/health (the health report as JSON); None: only signed-in admins may."),
    Key("PATRONLOCK_SYNC_PAGE_SIZE", 1000, "Members per page when a run reads the campaign (Patreon's maximum)."),
    Key("PATRONLOCK_SYNC_FREEZE_HEAP", True,
        "Keep Python's garbage collector off the objects that exist before a reconcile run, for the run (gc.freeze)."),
    Key("PATRONLOCK_LIVE_CHECK_INTERVAL", 86400,
        "Seconds between the scheduler's live self-checks of Patreon's answers (default daily); 0 turns them off."),
    Key("PATRONLOCK_TIERS_MAX_AGE", 3600, "Seconds a run trusts the stored tier catalogue before reading it again."),
    Key("PATRONLOCK_SYNC_MATCH_EMAILS", False,
        "Link unlinked patrons to local users whose e-mail the host verified (@patronlock.verified_users_by_email)."),
    # -- locks, templates and banners (issue 4) --
    Key("PATRONLOCK_SETTINGS_CHECK_SECONDS", 2.0,
        "How often (seconds) a worker checks the settings version; overrides reach every worker within it."),
    Key("PATRONLOCK_VIEWER_CACHE_SECONDS", 2.0,
        "How long (seconds) a worker reuses a viewer's link and stored membership; 0 reads them on every request."),
    Key("PATRONLOCK_VIEWER_CACHE_SIZE", 10_000, "The most viewers each worker keeps in that cache (least recent go)."),
    Key("PATRONLOCK_SITE_LOCK", None, "A named lock every request must pass (except static, login, exempt views)."),
    Key("PATRONLOCK_PATH_LOCKS", None, "A mapping of URL path prefix to lock name, checked before the view."),
    Key("PATRONLOCK_EXEMPT_ENDPOINTS", [], "Endpoints the site-wide and path locks never apply to."),
    Key("PATRONLOCK_BASE_TEMPLATE", "patronlock/base.html", "The template the locked page extends (the site layout)."),
    Key("PATRONLOCK_LOGIN_URL", None, "Where banners send anonymous visitors; default: Flask-Login's login_view."),
    Key("PATRONLOCK_CONNECT_URL", None, "Where banners send users to link Patreon; default: patronlock.connect."),
    Key("PATRONLOCK_BILLING_URL", "/settings/memberships",
        "Patreon's page to update a payment method, relative to PATRONLOCK_OAUTH_BASE_URL."),
    Key("PATRONLOCK_CREATOR_NAME", None, "The creator's name in banners ({creator}); default: 'the creator'."),
    Key("PATRONLOCK_CURRENCY_SYMBOL", "$", "The symbol banners put before amounts ({amount})."),
    Key("PATRONLOCK_CURRENCY", "USD", "The campaign's currency (ISO 4217 code) for amounts written by Babel."),
    Key("PATRONLOCK_LOCALE", "en", "The locale of patron-facing words, amounts and dates without Flask-Babel."),
    # -- Connect / log in with Patreon (views/, accounts.py, oauth.py) --
    Key("PATRONLOCK_URL_PREFIX", "/patreon", "Where the routes live (webhook: PREFIX/webhook; None: no views)."),
    Key("PATRONLOCK_REDIRECT_URI", None, "The OAuth callback URL as registered with Patreon (or: from SERVER_NAME)."),
    Key("PATRONLOCK_SCOPES", ["identity", "identity[email]", "identity.memberships"], "OAuth scopes to ask for."),
    Key("PATRONLOCK_USE_PKCE", True, "Send a PKCE S256 challenge with every authorization request."),
    Key("PATRONLOCK_LOGIN_ENABLED", True, "Offer Log in with Patreon to anonymous visitors (off: /login is a 404)."),
    Key(
        "PATRONLOCK_AUTO_LINK_VERIFIED_EMAIL",
        False,
        "Log in with Patreon links an unlinked local user with the same verified email (off: asks to log in first).",
    ),
    Key("PATRONLOCK_LOGIN_REMEMBER", False, "Log in with Patreon sets Flask-Login's remember-me cookie."),
    Key(
        "PATRONLOCK_ADMIN_PATREON_LOGIN",
        False,
        "Log in with Patreon may sign in a site admin (off: refused, audited; admins sign in with their password).",
    ),
    Key("PATRONLOCK_DEFAULT_NEXT", "/", "Where users land after connecting or logging in without a safe next."),
    Key("PATRONLOCK_STATUS_REFRESH_INTERVAL", 300, "Seconds a user must wait between two Refresh my status."),
    # -- the creators' settings page (issue 7: flask_patronlock/admin) --
    Key("PATRONLOCK_ADMIN_URL_PREFIX", "/patronlock/admin",
        "Where the settings page lives (None: not registered); read once, in init_app."),
    Key(
        "PATRONLOCK_CREATOR_SCOPES",
        [
            "identity", "identity[email]", "campaigns", "campaigns.members", "campaigns.members[email]",
            "campaigns.members.address", "w:campaigns.webhook",
        ],
        "OAuth scopes the settings page asks for when the creator connects their account.",
    ),
    Key("PATRONLOCK_CREATOR_REDIRECT_URI", None,
        "The creator connect's callback URL (default: the settings page's, on PATRONLOCK_REDIRECT_URI's origin)."),
    # -- fast file delivery (files.py, file_links.py) --
    Key("PATRONLOCK_FILE_DELIVERY", "python",
        "How send_locked_file sends an allowed file: 'python', 'x-accel-redirect' (nginx) or 'x-sendfile' (Apache)."),
    Key("PATRONLOCK_FILE_ROOT", None,
        "The directory locked files live in, which the front server serves (needed by the two front-server modes)."),
    Key("PATRONLOCK_X_ACCEL_PREFIX", "/_patronlock_files/",
        "nginx's internal location that maps PATRONLOCK_FILE_ROOT (X-Accel-Redirect answers point into it)."),
    Key("PATRONLOCK_FILE_URL_KEYS", [],
        "Keys signing download links (first signs, all verify); empty: derived from SECRET_KEY (+ fallbacks)."),
    Key("PATRONLOCK_FILE_URL_SECONDS", 300, "How long a signed download link is good for, by default (seconds)."),
    Key("PATRONLOCK_FILE_URL_MAX_SECONDS", 86400,
        "The longest a signed download link may live (seconds); links expiring later are refused."),
    Key("PATRONLOCK_FILE_URL_LEEWAY", 30, "Seconds a link is still honoured after it expires (clock skew)."),
    # -- blurred previews of locked images (previews.py, files.py) --
    Key("PATRONLOCK_IMAGE_PREVIEWS", None,
        "Deny a locked image with a blurred preview: None = when Pillow is installed; True (needs Pillow); False."),
    Key("PATRONLOCK_PREVIEW_SIZE", 480, "The longer side of a locked image's preview, in pixels (32 to 1600)."),
    Key("PATRONLOCK_PREVIEW_CACHE_DIR", None,
        "Where previews are kept (made on first use); None: patronlock-previews in the app's instance folder."),
    Key("PATRONLOCK_PREVIEW_CACHE_MAX_BYTES", 64 * 1024 * 1024,
        "The previews' disk budget in bytes; past it the least recently used go."),
    Key("PATRONLOCK_PREVIEW_MAX_PIXELS", 50_000_000,
        "The largest image (width x height) a preview is made of; larger ones get the padlock placeholder."),
    # -- private feeds (feeds.py) --
    Key("PATRONLOCK_FEED_KEY", None,
        "Key feed tokens are derived with; default: one derived from SECRET_KEY. Changing it changes every feed URL."),
    Key("PATRONLOCK_FEED_ENDPOINT", None,
        "The site's feed endpoint, whose private URL PREFIX/feed shows the signed-in patron (None: no such page)."),
    Key("PATRONLOCK_FEED_RATE_LIMIT", 60,
        "Requests one feed token may make per PATRONLOCK_FEED_RATE_PERIOD; more get 429 with Retry-After."),
    Key("PATRONLOCK_FEED_RATE_PERIOD", 3600, "Seconds of the feed rate limit's window."),
    Key("PATRONLOCK_FEED_MAX_ADDRESSES", 5,
        "A feed token used from more client addresses than this within the window below is audited (shared?)."),
    Key("PATRONLOCK_FEED_ADDRESS_WINDOW", 86400, "Seconds over which a feed token's client addresses are counted."),
    # -- entitlement tokens (entitlements.py, entitlement_tokens.py) --
    Key("PATRONLOCK_ENTITLEMENT_KEYS", None,
        "{kid: secret} signing entitlement tokens; the first signs, all verify (None: one derived from SECRET_KEY)."),
    Key("PATRONLOCK_ENTITLEMENT_TOKEN_SECONDS", 300, "How long an entitlement token lives (seconds), at most."),
    Key("PATRONLOCK_ENTITLEMENT_ISSUER", "flask-patronlock",
        "The iss claim of entitlement tokens (say: your site's URL)."),
    Key("PATRONLOCK_ENTITLEMENT_AUDIENCE", "patronlock-entitlement", "The aud claim of entitlement tokens."),
    # -- add-ons (issue 6) --
    Key("PATRONLOCK_ADDONS_AUTOLOAD", True, "Install the add-ons found in the flask_patronlock.addons entry points."),
    Key("PATRONLOCK_ADDONS_DENYLIST", [], "Names of add-ons never loaded (not even imported) on this app."),
    Key("PATRONLOCK_ADDONS_ENABLED_BY_DEFAULT", True,
        "Whether an installed add-on the creator never switched runs (False: only those switched on)."),
    # -- insight (insight.py) --
    Key("PATRONLOCK_INSIGHT_RECORD", True,
        "Record which lock's banner each viewer is shown (once a day per viewer, lock and reason)."),
    Key("PATRONLOCK_INSIGHT_FLUSH_SECONDS", 5.0,
        "Seconds a worker queues the banners shown before writing them in one statement (0: at once)."),
    Key("PATRONLOCK_INSIGHT_CREDIT_DAYS", 7,
        "A pledge started or raised within this many days of seeing a lock's banner is credited to that lock."),
)

_BY_NAME = {key.name: key for key in KEYS}


def apply_defaults(config: MutableMapping[str, Any]) -> None:
    """``setdefault`` every key on ``config``; lists are copied so apps never share a mutable default."""
    for key in KEYS:
        default = key.default
        config.setdefault(key.name, list(default) if isinstance(default, list) else default)


def require(config: Mapping[str, Any], name: str, purpose: str) -> Any:
    """The value of ``name``, or a :class:`ConfigurationError` that says which key to set and why it is needed."""
    if name not in _BY_NAME:
        raise KeyError(f"{name} is not a flask-patronlock configuration key")
    value = config.get(name)
    if value is None or value == "" or value == []:
        raise ConfigurationError(
            f"{name} is not set, but {purpose} needs it. Set app.config[{name!r}] "
            f"({_BY_NAME[name].meaning})"
        )
    return value


def as_list(value: Any, name: str) -> list[str]:
    """A key that takes a list also accepts one string (or a comma-separated one from an environment variable)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    raise ConfigurationError(f"{name} must be a list of strings, not {type(value).__name__}")
