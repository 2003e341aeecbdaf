"""The per-app state: what flask-patronlock keeps for each application, and how every layer reaches it.

:class:`PatronLockState` lives in ``app.extensions["patronlock"]``. Request code (views, the settings page, templates,
banners, the lock decorators) reaches the current app's with :func:`get_state`; the core (the store, syncs, webhooks'
processing, jobs, health, live checks) is handed the state, or the one collaborator it needs, as an argument.

This module sits below everything that works on behalf of a request or a job: it imports only the layers under it
(configuration, tables, the store, the settings cache, the viewer cache, pacing, token encryption, the creator's
stored connection), never :mod:`flask_patronlock.extension`, which builds the state (the composition root).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app

from . import config as _config
from .creator import CreatorNeedsReauthorization, creator_access_token, refresh_creator_token
from .crypto import TokenCipher
from .declarations import Declarations
from .errors import ConfigurationError
from .models import Tables
from .pacing import Pacing
from .patreon.client import PatreonClient
from .settings_cache import SettingsCache
from .store import Store
from .viewer_cache import ViewerCache

if TYPE_CHECKING:
    from collections.abc import Callable

    from flask_sqlalchemy import SQLAlchemy

    from .addons import AddonRegistry
    from .extension import PatronLock
    from .jobs import Jobs

__all__ = ["EXTENSION_KEY", "INTERACTIVE_MAX_BACKOFF", "INTERACTIVE_RETRIES", "PatronLockState", "get_state"]

#: the key of :class:`PatronLockState` in ``app.extensions``.
EXTENSION_KEY = "patronlock"

#: retries of a Patreon call someone is waiting on (a page load): one, with short waits, not a sync's patience.
INTERACTIVE_RETRIES = 1
INTERACTIVE_MAX_BACKOFF = 2.0


@dataclass
class PatronLockState:
    """What flask-patronlock keeps per application, in ``app.extensions["patronlock"]``. Built by
    :meth:`PatronLock.init_app <flask_patronlock.PatronLock.init_app>`, with every collaborator given at
    construction."""

    #: the extension object the app was initialised with.
    extension: PatronLock
    app: Flask
    db: SQLAlchemy
    tables: Tables
    store: Store
    #: how background work runs (:class:`flask_patronlock.jobs.Jobs`).
    jobs: Jobs
    #: the add-ons installed on the app, loaded or broken.
    addons: AddonRegistry
    #: what the site declared in code on :attr:`extension` (locks, callbacks): shared by every app it serves.
    declarations: Declarations = field(init=False, repr=False)
    #: the cached settings, lock overrides and tiers, re-read when the settings version changes.
    settings: SettingsCache = field(init=False, repr=False)
    #: this worker's viewer records (link + stored patron) by local user id, kept for at most
    #: ``PATRONLOCK_VIEWER_CACHE_SECONDS``.
    viewers: ViewerCache = field(init=False, repr=False)
    #: how this app's Patreon calls are paced under Patreon's rate limits, across processes (:mod:`.pacing`).
    pacing: Pacing = field(init=False, repr=False)

    def __post_init__(self) -> None:
        config = self.app.config
        self.declarations = self.extension.declarations
        self.pacing = Pacing(
            self.store,
            shared=lambda: bool(config["PATRONLOCK_SHARED_RATE_LIMIT"]),
            token_limit=lambda: int(config["PATRONLOCK_TOKEN_RATE_LIMIT"]),
        )
        self.settings = SettingsCache(
            self.store,
            lambda: float(config["PATRONLOCK_SETTINGS_CHECK_SECONDS"]),
            campaign_id=lambda: config["PATRONLOCK_CAMPAIGN_ID"],
            sender=self.app,
            strict=lambda: bool(config["PATRONLOCK_STRICT_SIGNALS"]),
        )
        self.viewers = ViewerCache(
            lambda: float(config["PATRONLOCK_VIEWER_CACHE_SECONDS"]),
            max_entries=lambda: int(config["PATRONLOCK_VIEWER_CACHE_SIZE"]),
        )

    def token_cipher(self, purpose: str = "storing Patreon tokens") -> TokenCipher:
        """The cipher for tokens at rest; reads ``PATRONLOCK_TOKEN_KEYS`` each time (a key change needs no restart).

        :param purpose: what needs it, named by the error when no key is set.
        :raises ConfigurationError: no key is set, or one is not a Fernet key.
        """
        keys = _config.as_list(self.app.config.get("PATRONLOCK_TOKEN_KEYS"), "PATRONLOCK_TOKEN_KEYS")
        return TokenCipher(keys, purpose=purpose)

    # -- the Patreon clients --------------------------------------------------------------------------------------

    def client(self, *, access_token: str | None = None, purpose: str = "talking to Patreon") -> PatreonClient:
        """A Patreon API client configured from the app's ``PATRONLOCK_*`` keys, paced under the client limit
        (:attr:`pacing`)."""
        cfg = self.app.config
        client_id = _config.require(cfg, "PATRONLOCK_CLIENT_ID", purpose)
        client_secret = _config.require(cfg, "PATRONLOCK_CLIENT_SECRET", purpose)
        timeout = float(cfg["PATRONLOCK_HTTP_TIMEOUT"])
        return PatreonClient(
            client_id=client_id,
            client_secret=client_secret,
            access_token=access_token,
            api_base=cfg["PATRONLOCK_API_BASE_URL"],
            oauth_base=cfg["PATRONLOCK_OAUTH_BASE_URL"],
            timeout=(min(5.0, timeout), timeout),
            user_agent=cfg.get("PATRONLOCK_USER_AGENT"),
            sleep=lambda seconds: self.pacing.sleep(seconds),
            pacer=self.pacing.pacer(per_token=False),
        )

    def interactive_client(self, purpose: str) -> PatreonClient:
        """A client for a call a person waits on (a patron's own token: connecting, refreshing their status or their
        token): at most :data:`INTERACTIVE_RETRIES` retry and short backoff (a rate limit asking for a longer wait is
        raised instead of waited out)."""
        client = self.client(purpose=purpose)
        client.max_retries = INTERACTIVE_RETRIES
        client.max_backoff = INTERACTIVE_MAX_BACKOFF
        return client

    def creator_client(self, purpose: str = "reading the campaign") -> PatreonClient:
        """A client with the creator's access token (campaign members, webhooks): the stored one (connected on the
        settings page, or stored from ``PATRONLOCK_CREATOR_REFRESH_TOKEN``), refreshed when it expires soon, else
        ``PATRONLOCK_CREATOR_ACCESS_TOKEN``. A 401 is answered by one serialized refresh and the request sent again
        (:func:`~flask_patronlock.creator.refresh_creator_token`); calls are paced under the per-token limit too.

        :raises ConfigurationError: neither is there, or Patreon no longer accepts the creator's tokens and no other
            token is configured.
        """
        try:
            token = creator_access_token(self, purpose=purpose)
        except CreatorNeedsReauthorization as exc:
            # the configured token is a fallback for a refused settings-page connection, not for itself
            if exc.origin == "config" or not self.app.config.get("PATRONLOCK_CREATOR_ACCESS_TOKEN"):
                raise ConfigurationError(
                    f"{exc}; {purpose} needs it. Connect the creator's Patreon account again on the settings page "
                    "(Setup), or set new tokens in PATRONLOCK_CREATOR_ACCESS_TOKEN and "
                    "PATRONLOCK_CREATOR_REFRESH_TOKEN."
                ) from None
            token = None
        if token is None:
            token = _config.require(self.app.config, "PATRONLOCK_CREATOR_ACCESS_TOKEN", purpose)
        client = self.client(access_token=token, purpose=purpose)
        client.pacer = self.pacing.pacer(per_token=True)
        client.token_refresher = lambda rejected: refresh_creator_token(self, rejected, purpose=purpose)
        return client

    # -- the campaign ---------------------------------------------------------------------------------------------

    def campaign_id(self, purpose: str = "matching members to this site") -> str:
        """The campaign chosen on the settings page, else ``PATRONLOCK_CAMPAIGN_ID``.

        :raises ConfigurationError: neither is set.
        """
        stored = self.settings.current().campaign_id
        if stored:
            return stored
        return str(_config.require(self.app.config, "PATRONLOCK_CAMPAIGN_ID", purpose))

    def campaign_id_or_none(self) -> str | None:
        """:meth:`campaign_id`, or ``None`` when neither the settings page nor the configuration set one. Cached per
        process with the settings (no query per call)."""
        return self.settings.current().campaign_id or self.app.config.get("PATRONLOCK_CAMPAIGN_ID") or None


# The proxy's own getter, bound once: get_state() is on every page view, and this skips a proxy lookup per call.
_current_app_now: Callable[[], Flask] = current_app._get_current_object  # type: ignore[attr-defined]


def get_state(app: Flask | None = None) -> PatronLockState:
    """The flask-patronlock state of ``app`` (default: ``current_app``).

    :raises RuntimeError: outside an app context, or when the app has no PatronLock registered.
    """
    target: Any = app if app is not None else _current_app_now()
    try:
        state: PatronLockState = target.extensions[EXTENSION_KEY]
        return state
    except KeyError:
        raise RuntimeError(
            "flask-patronlock is not registered on this app. Did you forget to call PatronLock(app) or "
            "patronlock.init_app(app)?"
        ) from None
