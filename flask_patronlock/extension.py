"""The :class:`PatronLock` extension object: the composition root, and the only module that imports every layer.

``init_app`` builds the app's :class:`~flask_patronlock.state.PatronLockState` with every collaborator given at
construction, then installs the layers above it (locks, views, webhooks, jobs, health, the settings page, add-ons).
Nothing imports this module but the package itself: every other module reaches the state through
:mod:`flask_patronlock.state`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, Unpack

from flask import Flask

from . import config as _config
from . import entitlements  # noqa: F401  (importing it adds the token endpoint to the blueprint)
from .addons import AddonRegistry
from .addons import init_app as init_addons
from .admin import init_admin
from .cli import patronlock_cli
from .declarations import Declarations, Lock, LockRegistry, RuleOptions, make_rule
from .errors import ConfigurationError
from .feeds import init_app as init_feeds
from .files import init_files
from .health import init_health
from .i18n import init_app as init_i18n
from .jobs import Jobs, init_jobs
from .locks import init_app as init_locks
from .models import tables_for
from .state import EXTENSION_KEY, PatronLockState, get_state
from .store import Store
from .templating import init_app as init_templating
from .views import blueprint as connect_blueprint
from .webhooks import init_webhooks

if TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

    from .patreon.types import UserSnapshot

__all__ = ["PatronLock"]

#: a host callback, returned unchanged by the registering decorators.
CallbackT = TypeVar("CallbackT", bound=Callable[..., Any])


class PatronLock:
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
        #: what the site declares in code through the methods below: shared by every app this extension serves.
        self.declarations = Declarations()
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
        clock = app.config["PATRONLOCK_CLOCK"]
        if clock is not None and not callable(clock):
            raise ConfigurationError(
                f"PATRONLOCK_CLOCK must be a callable returning the current time (aware UTC), not {clock!r}"
            )
        store = Store(
            lambda: _engine_of(db, app),
            tables,
            **({"clock": clock} if clock is not None else {}),
            sender=app,
            strict_signals=lambda: bool(app.config["PATRONLOCK_STRICT_SIGNALS"]),
            # Patron.access is evaluated under the creator's policies as the settings page stores them, and a tier
            # refresh here is seen here at once: through the settings cache the state builds on this store.
            policy_settings=lambda: get_state(app).settings.current().policy,
            settings_changed=lambda: get_state(app).settings.invalidate(),
        )
        state = PatronLockState(
            extension=self, app=app, db=db, tables=tables, store=store, jobs=Jobs(app), addons=AddonRegistry(app)
        )
        app.extensions[EXTENSION_KEY] = state

        init_locks(app)
        init_templating(app)
        init_i18n(app)
        app.cli.add_command(patronlock_cli)

        # Connect / log in with Patreon: the patronlock blueprint (views.py); PATRONLOCK_URL_PREFIX = None leaves it
        # out, for a host that builds its own views on flask_patronlock.accounts and flask_patronlock.oauth.
        # before the blueprint's first registration: both add their routes to it (the feed page, the token endpoint;
        # entitlements adds its route when imported, above)
        init_feeds(app)
        if app.config["PATRONLOCK_URL_PREFIX"] is not None:
            app.register_blueprint(connect_blueprint, url_prefix=app.config["PATRONLOCK_URL_PREFIX"])

        # -- reconcile runs, webhooks and jobs --
        init_webhooks(app)
        init_jobs(app)
        init_health(app)
        init_files(app)  # fast file delivery: PREFIX/files/<path> serves signed links

        # -- the creators' settings page: PATRONLOCK_ADMIN_URL_PREFIX = None leaves it out --
        if app.config["PATRONLOCK_ADMIN_URL_PREFIX"] is not None:
            init_admin(app)

        # Add-ons last, so they find everything above in place: entry points, then register_addon.
        init_addons(app)

    # -- what the site declares in code (flask_patronlock.declarations) ---------------------------------------------

    def lock(self, name: str, *, description: str = "", **rule: Unpack[RuleOptions]) -> Lock:
        """Declare the named lock ``name`` with its default rule (see :func:`~flask_patronlock.locks.make_rule` for
        the arguments). Creators may override the rule (:func:`flask_patronlock.settings.set_lock_override`); the
        override wins.

        ::

            patronlock.lock("premium", tier="Gold", description="Gold posts")
            patronlock.lock("early", patron_since_before="2026-01-01", description="For the first patrons")

        :returns: the :class:`~flask_patronlock.locks.Lock`, usable wherever a lock name is.
        :raises ValueError: on a bad rule or a conflicting declaration of the same name.
        """
        return self.declarations.locks.add(Lock(name=name, rule=make_rule(**rule), description=description))

    @property
    def locks(self) -> LockRegistry:
        """The named locks declared with :meth:`lock`."""
        return self.declarations.locks

    def admin_loader(self, callback: Callable[[Any], bool]) -> Callable[[Any], bool]:
        """Register the callback that says whether a signed-in user is an admin of the site (admins bypass every
        lock, with reason ``admin_bypass``). It is called with Flask-Login's ``current_user`` (never an anonymous
        user), at most once per request::

            @patronlock.admin_loader
            def is_admin(user):
                return user.is_admin
        """
        self.declarations.admin_loader = callback
        return callback

    def register_addon(self, addon: Any, *, app: Flask | None = None) -> None:
        """Install ``addon`` (an :class:`~flask_patronlock.Addon` instance or class) without an entry point: on every
        app this extension is initialised on afterwards, or, with ``app``, on that app now::

            patronlock = PatronLock(db=db)
            patronlock.register_addon(SupportersWall())    # before init_app: every app gets it
            patronlock.init_app(app)

            patronlock.register_addon(WelcomeOutbox(), app=app)    # one app, after init_app

        An add-on registered in code is subject to the same switch, isolation and denylist as one found through an
        entry point.
        """
        if app is None:
            self.declarations.addons.append(addon)
            return
        get_state(app).addons.install(addon, origin="code")

    # -- host callbacks for Log in with Patreon (docs/connect.rst) ----------------------------------------------------

    def user_creator(self, func: CallbackT) -> CallbackT:
        """Register how Log in with Patreon creates a local user for a Patreon account that is linked to none::

            @patronlock.user_creator
            def create_user(patreon_user):          # a flask_patronlock.patreon.UserSnapshot
                user = User(name=patreon_user.full_name, email=patreon_user.email)
                db.session.add(user)
                db.session.commit()
                return user                         # a Flask-Login user; None refuses the sign-up

        It is called only when no local user is linked to the Patreon account and none has its email (see
        :meth:`user_by_email`). ``patreon_user.email_verified`` may be ``False`` or ``None``: decide whether to
        trust the address. Without a creator, the visitor is told that sign-up via Patreon is not configured.
        """
        self.declarations.user_creator = func
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
        self.declarations.user_by_email = func
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
        self.declarations.verified_users_by_email = callback
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
        return self.declarations.verified_users_by_email

    def vouches_for(self, email: str, user_id: str) -> bool:
        """Whether the host's :meth:`verified_users_by_email` says local user ``user_id`` verified ``email``."""
        return self.declarations.vouches_for(email, user_id)

    # The registered callbacks, under the names the views read them by.

    @property
    def _admin_loader(self) -> Callable[[Any], bool] | None:
        return self.declarations.admin_loader

    @property
    def _user_creator(self) -> Callable[[UserSnapshot], Any] | None:
        return self.declarations.user_creator

    @property
    def _user_by_email(self) -> Callable[[str], Any] | None:
        return self.declarations.user_by_email

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
