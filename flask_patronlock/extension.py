"""The :class:`PatronLock` extension object."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from flask import Flask, current_app

from . import config as _config
from .addons import AddonDeclarations, AddonRegistry
from .crypto import TokenCipher
from .errors import ConfigurationError
from .locks import LockDeclarations
from .models import Tables, tables_for
from .pacing import Pacing
from .settings import SettingsCache
from .store import Store
from .viewers import ViewerCache

if TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

    from .patreon.client import PatreonClient
    from .patreon.types import UserSnapshot

EXTENSION_KEY = "patronlock"

#: a host callback, returned unchanged by the registering decorators.
CallbackT = TypeVar("CallbackT", bound=Callable[..., Any])


@dataclass
class PatronLockState:
    """What flask-patronlock keeps per application, in ``app.extensions["patronlock"]``."""

    extension: PatronLock
    app: Flask
    db: SQLAlchemy
    tables: Tables
    store: Store
    #: how background work runs (:class:`flask_patronlock.jobs.Jobs`); set by ``init_app``.
    jobs: Any = None
    #: the cached settings, lock overrides and tiers, re-read when the settings version changes (issue 4).
    settings: SettingsCache = field(init=False, repr=False)
    #: the add-ons installed on the app, loaded or broken (issue 6).
    addons: AddonRegistry = field(init=False, repr=False)
    #: this worker's viewer records (link + stored patron) by local user id, kept for at most
    #: ``PATRONLOCK_VIEWER_CACHE_SECONDS``.
    viewers: ViewerCache = field(init=False, repr=False)
    #: how this app's Patreon calls are paced under Patreon's rate limits, across processes (:mod:`.pacing`).
    pacing: Pacing = field(init=False, repr=False)

    def __post_init__(self) -> None:
        config = self.app.config
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
        self.addons = AddonRegistry(self)

    def token_cipher(self, purpose: str = "storing Patreon tokens") -> TokenCipher:
        """The cipher for tokens at rest; reads ``PATRONLOCK_TOKEN_KEYS`` each time (a key change needs no restart).

        :param purpose: what needs it, named by the error when no key is set.
        :raises ConfigurationError: no key is set, or one is not a Fernet key.
        """
        keys = _config.as_list(self.app.config.get("PATRONLOCK_TOKEN_KEYS"), "PATRONLOCK_TOKEN_KEYS")
        return TokenCipher(keys, purpose=purpose)

    def client(self, *, access_token: str | None = None, purpose: str = "talking to Patreon") -> PatreonClient:
        """A Patreon API client configured from the app's ``PATRONLOCK_*`` keys, paced under the client limit
        (:attr:`pacing`)."""
        cfg = self.app.config
        client_id = _config.require(cfg, "PATRONLOCK_CLIENT_ID", purpose)
        client_secret = _config.require(cfg, "PATRONLOCK_CLIENT_SECRET", purpose)
        timeout = float(cfg["PATRONLOCK_HTTP_TIMEOUT"])
        from .patreon.client import PatreonClient

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

    def creator_client(self, purpose: str = "reading the campaign") -> PatreonClient:
        """A client with the creator's access token (campaign members, webhooks): the stored one (connected on the
        settings page, or stored from ``PATRONLOCK_CREATOR_REFRESH_TOKEN``), refreshed when it expires soon, else
        ``PATRONLOCK_CREATOR_ACCESS_TOKEN``. A 401 is answered by one serialized refresh and the request sent again
        (:func:`~flask_patronlock.creator.refresh_creator_token`); calls are paced under the per-token limit too.

        :raises ConfigurationError: neither is there, or Patreon no longer accepts the creator's tokens and no other
            token is configured.
        """
        from .creator import CreatorNeedsReauthorization, creator_access_token, refresh_creator_token

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


class PatronLock(LockDeclarations, AddonDeclarations):
    """Lock a Flask site's content to Patreon patrons by tier.

    ``PatronLock(app, db=db)`` or, with an app factory, ``patronlock = PatronLock(db=db)`` then
    ``patronlock.init_app(app)``. The extension keeps no reference to any app: per-app state lives in
    ``app.extensions["patronlock"]`` and is reached through ``current_app``, so one instance serves several apps.

    :param app: the application, or ``None`` to call :meth:`init_app` later.
    :param db: the host's Flask-SQLAlchemy instance; flask-patronlock's tables go on its metadata. When omitted,
        the ``SQLAlchemy`` extension registered on the app is used.
    """

    def __init__(self, app: Flask | None = None, *, db: SQLAlchemy | None = None) -> None:
        self.db = db
        self._init_addons()
        # Only this callback ever lets an e-mail address link a patron to a local user (sync matching, auto-linking
        # at Log in with Patreon): it answers with the users whose address the host itself verified.
        self._verified_users_by_email: Callable[[Sequence[str]], Mapping[str, Any]] | None = None
        self._init_locks()
        # Host callbacks for Log in with Patreon (functions, never an app): see user_creator and user_by_email.
        self._user_creator: Callable[[UserSnapshot], Any] | None = None
        self._user_by_email: Callable[[str], Any] | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, *, db: SQLAlchemy | None = None) -> None:
        """Register on ``app``: set config defaults, define tables on the db's metadata, add the CLI.

        :raises RuntimeError: if flask-patronlock is already registered on ``app``.
        :raises ConfigurationError: if no Flask-SQLAlchemy instance was given or registered.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "A 'PatronLock' instance has already been registered on this Flask app. Import and use that "
                "instance instead."
            )
        db = db or self.db or app.extensions.get("sqlalchemy")
        if db is None:
            raise ConfigurationError(
                "flask-patronlock needs Flask-SQLAlchemy: pass it as PatronLock(app, db=db) or call "
                "db.init_app(app) before patronlock.init_app(app)."
            )
        _config.apply_defaults(app.config)
        tables = tables_for(db.metadata)
        store = Store(
            lambda: _engine_of(db, app),
            tables,
            sender=app,
            strict_signals=lambda: bool(app.config["PATRONLOCK_STRICT_SIGNALS"]),
            # Patron.access is evaluated under the creator's policies as the settings page stores them, and a tier
            # refresh here is seen here at once: through the settings cache the state builds on this store.
            policy_settings=lambda: get_state(app).settings.current().policy,
            settings_changed=lambda: get_state(app).settings.invalidate(),
        )
        app.extensions[EXTENSION_KEY] = PatronLockState(extension=self, app=app, db=db, tables=tables, store=store)

        from .locks import init_app as init_locks

        init_locks(app)

        from .cli import patronlock_cli

        app.cli.add_command(patronlock_cli)

        # Connect / log in with Patreon: the patronlock blueprint (views.py); PATRONLOCK_URL_PREFIX = None leaves it
        # out, for a host that builds its own views on flask_patronlock.accounts and flask_patronlock.oauth.
        # before the blueprint's first registration: both add their routes to it (the feed page, the token endpoint)
        from . import entitlements  # noqa: F401
        from .feeds import init_app as init_feeds

        init_feeds(app)
        if app.config["PATRONLOCK_URL_PREFIX"] is not None:
            from .views import blueprint

            app.register_blueprint(blueprint, url_prefix=app.config["PATRONLOCK_URL_PREFIX"])

        # -- reconcile runs, webhooks and jobs (issue 5) --
        from .jobs import init_jobs
        from .webhooks import init_webhooks

        init_webhooks(app)
        init_jobs(app)

        from .health import init_health

        init_health(app)

        # -- the creators' settings page (issue 7): PATRONLOCK_ADMIN_URL_PREFIX = None leaves it out --
        if app.config["PATRONLOCK_ADMIN_URL_PREFIX"] is not None:
            from .admin import init_admin

            init_admin(app)

        # Add-ons (issue 6) last, so they find everything above in place: entry points, then register_addon.
        from .addons import init_app as init_addons

        init_addons(app)

    # -- host callbacks for Log in with Patreon (docs/connect.rst) ----------------------------------------------------

    def user_creator(self, func: CallbackT) -> CallbackT:
        """Register how Log in with Patreon creates a local user for a Patreon account that is linked to none::

            @patronlock.user_creator
            def create_user(patreon_user):          # a flask_patronlock.UserSnapshot
                user = User(name=patreon_user.full_name, email=patreon_user.email)
                db.session.add(user)
                db.session.commit()
                return user                         # a Flask-Login user; None refuses the sign-up

        It is called only when no local user is linked to the Patreon account and none has its email (see
        :meth:`user_by_email`). ``patreon_user.email_verified`` may be ``False`` or ``None``: decide whether to
        trust the address. Without a creator, the visitor is told that sign-up via Patreon is not configured.
        """
        self._user_creator = func
        return func

    def user_by_email(self, func: CallbackT) -> CallbackT:
        """Register how to find a local user by email address, so Log in with Patreon never creates a second
        account for someone who already has one::

            @patronlock.user_by_email
            def find_user(email):
                return User.query.filter(func.lower(User.email) == email.lower()).first()

        When it finds a user who is not linked yet, the visitor is asked to log in first and connect. This lookup
        never links anything by itself, whether the address was verified or not: auto-linking
        (``PATRONLOCK_AUTO_LINK_VERIFIED_EMAIL``) also needs :meth:`verified_users_by_email` to vouch for the local
        user, and reconcile runs never use this callback.
        """
        self._user_by_email = func
        return func

    # -- e-mail matching: only for addresses the host verified (docs/security.rst) ------------------------------------

    def verified_users_by_email(
        self, callback: Callable[[Sequence[str]], Mapping[str, Any]]
    ) -> Callable[[Sequence[str]], Mapping[str, Any]]:
        """Register how to find local users whose e-mail address *this site verified*, many at once::

            @patronlock.verified_users_by_email
            def verified_users(emails):          # lowercased addresses, a page of patrons at a time
                rows = User.query.filter(func.lower(User.email).in_(emails), User.email_confirmed_at.is_not(None))
                return {u.email.lower(): u.id for u in rows}

        Return ``{address: user id}`` only for users who proved they receive mail at that address (they followed a
        link or typed a code this site mailed to it, after the last change of the address). A user whose address
        nobody confirmed must be left out: anyone can register someone else's address.

        It is the only way an e-mail address links a patron to a local user: reconcile runs match with it when
        :data:`PATRONLOCK_SYNC_MATCH_EMAILS` is on, and Log in with Patreon auto-links with it when
        :data:`PATRONLOCK_AUTO_LINK_VERIFIED_EMAIL` is on. A run's link gives the patron's access to the user, but
        never lets Log in with Patreon into the account; the user connects Patreon once, logged in, for that.
        Returns ``callback`` (use it as a decorator).
        """
        self._verified_users_by_email = callback
        return callback

    def users_by_email(
        self, callback: Callable[[Sequence[str]], Mapping[str, Any]]
    ) -> Callable[[Sequence[str]], Mapping[str, Any]]:
        """Deprecated, and no longer used: it made reconcile runs link patrons to local users by an address nobody
        had verified on this site. Register :meth:`verified_users_by_email` instead, answering only with users whose
        address the site verified. Warns (``DeprecationWarning``) and returns ``callback`` unchanged."""
        warnings.warn(
            "PatronLock.users_by_email is deprecated and no longer links anyone: reconcile runs match e-mail "
            "addresses only through @patronlock.verified_users_by_email, which must return only users whose address "
            "your site verified (see flask-patronlock's security notes).",
            DeprecationWarning,
            stacklevel=2,
        )
        return callback

    def verified_email_finder(self) -> Callable[[Sequence[str]], Mapping[str, Any]] | None:
        """The registered :meth:`verified_users_by_email` callback, or ``None`` when the app registered none."""
        return self._verified_users_by_email

    def vouches_for(self, email: str, user_id: str) -> bool:
        """Whether the host's :meth:`verified_users_by_email` says local user ``user_id`` verified ``email``."""
        finder = self._verified_users_by_email
        if finder is None or not email:
            return False
        key = email.strip().lower()
        found = finder([key])
        return any(k.strip().lower() == key and v is not None and str(v) == str(user_id) for k, v in found.items())

    # Everything below reaches the current app's state, never a stored app.

    @property
    def state(self) -> PatronLockState:
        """The current app's :class:`PatronLockState`."""
        return get_state()

    @property
    def store(self) -> Store:
        """The current app's :class:`~flask_patronlock.store.Store`."""
        return get_state().store


def _engine_of(db: SQLAlchemy, app: Flask) -> Any:
    """``app``'s default engine, also outside an app context (background threads, receivers after a request)."""
    engines = getattr(db, "_app_engines", None)  # Flask-SQLAlchemy 3.x keeps engines per app here
    if engines is not None and app in engines:
        return engines[app][None]
    with app.app_context():
        return db.engine


def get_state(app: Flask | None = None) -> PatronLockState:
    """The flask-patronlock state of ``app`` (default: ``current_app``).

    :raises RuntimeError: outside an app context, or when the app has no PatronLock registered.
    """
    target: Any = app if app is not None else current_app
    try:
        state: PatronLockState = target.extensions[EXTENSION_KEY]
        return state
    except KeyError:
        raise RuntimeError(
            "flask-patronlock is not registered on this app. Did you forget to call PatronLock(app) or "
            "patronlock.init_app(app)?"
        ) from None
