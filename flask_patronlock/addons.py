"""Add-ons: packages installed alongside flask-patronlock that hook its actions and filters.

An add-on is an object with a ``name``, a ``version``, a ``description`` and an ``init_app(app, hooks)`` method
(subclass :class:`Addon`). A package makes one discoverable by declaring it in the ``flask_patronlock.addons`` entry
point group::

    [project.entry-points."flask_patronlock.addons"]
    welcome_outbox = "patronlock_welcome_outbox:WelcomeOutbox"

``PatronLock.init_app`` finds every installed add-on (:data:`ENTRY_POINT_GROUP`), loads it (a class is instantiated
with no arguments), and calls its ``init_app`` with the app and an :class:`AddonHooks` bound to that app and add-on.
Apps and tests may also register add-ons in code with :meth:`PatronLock.register_addon
<flask_patronlock.PatronLock.register_addon>`.

What flask-patronlock guarantees an add-on:

* **Isolation.** Every receiver connected through :meth:`AddonHooks.connect` is wrapped: an exception in it is logged
  as ``addon <name> receiver <function> failed`` and never breaks the page view, sync run or webhook that sent the
  signal (a filter receiver's change is dropped). A broken add-on (an import error, an object that is not an
  add-on, an exception in its ``init_app``) is logged with its name and skipped; ``init_app`` of the app goes on.
  With ``PATRONLOCK_STRICT_SIGNALS = True`` (tests) all of these re-raise instead.
* **A switch.** The creator may disable any installed add-on (:func:`flask_patronlock.settings.set_addon_enabled`,
  ``flask patronlock addons disable NAME``). A disabled add-on's receivers are not called and its blueprints (registered
  with :meth:`AddonHooks.register_blueprint`) answer 404. The switch is stored in the settings, so it reaches every
  worker within ``PATRONLOCK_SETTINGS_CHECK_SECONDS``, without a restart and without a query per signal.
* **Scoping.** Receivers are connected with the app as sender: an add-on installed in one app of a process never
  hears another app's signals.
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from blinker import Signal
from flask import Blueprint, Flask, abort, request

from .errors import PatronLockError
from .signals import DEFAULT_PRIORITY, _receiver_name
from .state import PatronLockState, get_state

__all__ = [
    "ENTRY_POINT_GROUP",
    "Addon",
    "AddonError",
    "AddonHooks",
    "AddonRegistry",
    "InstalledAddon",
]

log = logging.getLogger("flask_patronlock.addons")

#: The entry point group flask-patronlock discovers add-ons in.
ENTRY_POINT_GROUP = "flask_patronlock.addons"

#: What an add-on name may look like (it is a settings key and a URL-safe word).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")

R = TypeVar("R", bound=Callable[..., Any])


class AddonError(PatronLockError):
    """An add-on could not be installed: not importable, not an add-on, a bad or duplicate name, or its ``init_app``
    failed. Logged and skipped, or raised in strict mode."""


class Addon:
    """Base class of an add-on. Set the three class attributes and override :meth:`init_app`::

        class WelcomeOutbox(Addon):
            name = "welcome_outbox"
            description = "Writes a welcome message into an outbox when someone starts pledging."

            def init_app(self, app, hooks):
                hooks.connect(signals.pledge_started, self.welcome)

            def welcome(self, app, patron, **kwargs):
                ...

    One instance may serve several apps (``init_app`` is called once per app): keep per-app state on the app (for
    example in ``app.extensions``), not on the add-on.
    """

    #: the add-on's unique name: letters, digits, ``_``, ``-``, ``.``; at most 64 characters. For an add-on found
    #: through an entry point, the entry point's name (and this, if set, must be the same).
    name: str = ""
    #: the add-on's version; default: the version of the distribution that declared the entry point.
    version: str = ""
    #: one line saying what it does, shown on the settings page; default: the distribution's summary.
    description: str = ""

    def init_app(self, app: Flask, hooks: AddonHooks) -> None:
        """Install the add-on on ``app``: connect receivers through ``hooks``, register blueprints with
        :meth:`AddonHooks.register_blueprint`, define tables on the app's metadata, add CLI commands.

        Called by ``PatronLock.init_app`` for every installed add-on, **enabled or not** (the switch works without a
        restart): do nothing here that must not happen while the add-on is disabled.
        """


@dataclass
class InstalledAddon:
    """An add-on found for one app: loaded, or broken (then ``error`` says why and ``addon`` is ``None``)."""

    name: str
    version: str
    description: str
    #: where it came from: ``"entry point <name> = <module:attr> (<distribution> <version>)"`` or ``"code"``.
    origin: str
    addon: Any = None
    hooks: AddonHooks | None = field(default=None, repr=False)
    #: why it could not be installed (``None`` when it was).
    error: str | None = None

    @property
    def loaded(self) -> bool:
        """Whether the add-on is installed on the app (its ``init_app`` ran without error)."""
        return self.error is None


class AddonHooks:
    """What an add-on's ``init_app`` gets: the way to connect receivers, register blueprints and read its switch, all
    bound to one app and one add-on."""

    def __init__(self, registry: AddonRegistry, name: str) -> None:
        self._registry = registry
        #: the add-on's name.
        self.name = name
        self._connected: list[tuple[Signal, Callable[..., Any]]] = []

    @property
    def app(self) -> Flask:
        """The application the add-on is installed on."""
        return self._registry.app

    @property
    def state(self) -> PatronLockState:
        """flask-patronlock's state of the app (``state.store``, ``state.tables``, ``state.settings`` ...)."""
        return self._registry.state

    def is_enabled(self) -> bool:
        """Whether the creator has the add-on switched on (read from the cached settings: no query per call)."""
        return self._registry.enabled(self.name)

    def connect(self, signal: Signal, receiver: R, *, priority: int = DEFAULT_PRIORITY) -> R:
        """Connect ``receiver`` to ``signal`` (an action or a filter of :mod:`flask_patronlock.signals`) for this app
        only, for as long as the app lives. ``priority`` orders filter receivers (lower runs first; see
        :func:`~flask_patronlock.signals.apply_filter`); actions ignore it.

        The receiver is called as ``receiver(app, **kwargs)``, only while the add-on is enabled; if it raises, the
        exception is logged with the add-on's name and the signal goes on (strict mode re-raises). Returns
        ``receiver`` unchanged.
        """
        wrapped = self._wrap(signal, receiver, priority)
        # held strongly here (the hooks live as long as the app) and weakly by the signal: when an app is discarded
        # (tests make one per test), its receivers leave the signal with it
        self._connected.append((signal, wrapped))
        signal.connect(wrapped, sender=self.app, weak=True)
        return receiver

    def receiver(self, signal: Signal, *, priority: int = DEFAULT_PRIORITY) -> Callable[[R], R]:
        """:meth:`connect` as a decorator; returns the function unchanged.

        ::

            @hooks.receiver(signals.banner_html, priority=80)
            def add_wall_link(app, value, **kwargs):
                ...
        """

        def decorator(func: R) -> R:
            return self.connect(signal, func, priority=priority)

        return decorator

    def disconnect_all(self) -> None:
        """Disconnect every receiver this add-on connected on this app."""
        for signal, wrapped in self._connected:
            # each wrapper belongs to this app alone: disconnect it from every sender, which (unlike disconnecting
            # from one sender) also takes it out of ``signal.receivers``, so an idle signal is free again
            signal.disconnect(wrapped)
        self._connected.clear()

    def register_blueprint(self, blueprint: Blueprint, **options: Any) -> None:
        """Register ``blueprint`` on the app (``options`` as for ``Flask.register_blueprint``); while the add-on is
        disabled, every request to it gets a 404."""
        self.app.register_blueprint(blueprint, **options)
        self._registry._gate_blueprint(options.get("name", blueprint.name), self.name)

    def _wrap(self, signal: Signal, receiver: Callable[..., Any], priority: int) -> Callable[..., Any]:
        registry, name = self._registry, self.name
        signal_name = getattr(signal, "name", repr(signal))

        def addon_receiver(sender: Any, **kwargs: Any) -> Any:
            if not registry.enabled(name):
                return None  # for a filter: the value is unchanged
            try:
                return receiver(sender, **kwargs)
            except Exception as exc:
                if registry.strict():
                    exc.add_note(f"in addon {name} receiver {_receiver_name(receiver)} of signal {signal_name!r}")
                    raise
                log.exception(
                    "addon %s receiver %s failed on signal %r; ignored", name, _receiver_name(receiver), signal_name
                )
                return None

        addon_receiver.patronlock_priority = priority  # type: ignore[attr-defined]
        addon_receiver.patronlock_addon = name  # type: ignore[attr-defined]
        addon_receiver.__wrapped__ = receiver  # type: ignore[attr-defined]
        addon_receiver.__module__ = getattr(receiver, "__module__", None) or __name__
        addon_receiver.__qualname__ = f"addon[{name}].{getattr(receiver, '__qualname__', repr(receiver))}"
        return addon_receiver


class AddonRegistry:
    """The add-ons of one app (``get_state(app).addons``), in the order they were installed."""

    def __init__(self, app: Flask) -> None:
        #: the application.
        self.app = app
        self._installed: dict[str, InstalledAddon] = {}
        self._blueprints: dict[str, str] = {}

    @property
    def state(self) -> PatronLockState:
        """flask-patronlock's state of :attr:`app`."""
        return get_state(self.app)

    def __iter__(self) -> Iterator[InstalledAddon]:
        return iter(list(self._installed.values()))

    def __len__(self) -> int:
        return len(self._installed)

    def __contains__(self, name: object) -> bool:
        return name in self._installed

    def get(self, name: str) -> InstalledAddon | None:
        """The add-on called ``name``, loaded or broken, or ``None``."""
        return self._installed.get(name)

    def strict(self) -> bool:
        """Strict mode (``PATRONLOCK_STRICT_SIGNALS``): re-raise instead of logging."""
        return bool(self.app.config["PATRONLOCK_STRICT_SIGNALS"])

    def enabled(self, name: str) -> bool:
        """Whether the add-on ``name`` is switched on, from the per-process settings cache."""
        return self.state.settings.current().addon_enabled(
            name, default=bool(self.app.config["PATRONLOCK_ADDONS_ENABLED_BY_DEFAULT"])
        )

    # -- installing ----------------------------------------------------------------------------------------------

    def discover(self) -> None:
        """Install every add-on declared in the :data:`ENTRY_POINT_GROUP` entry point group, except those named in
        ``PATRONLOCK_ADDONS_DENYLIST`` (which are not even imported)."""
        denied = denied_names(self.app)
        seen: set[str] = set()
        for entry_point in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
            # the same distribution on sys.path twice (a source tree and site-packages) lists its entry point twice
            key = f"{entry_point.name}={entry_point.value}"
            if key in seen:
                continue
            seen.add(key)
            if entry_point.name in denied:
                log.info("addon %s: on PATRONLOCK_ADDONS_DENYLIST; not loaded", entry_point.name)
                continue
            dist = getattr(entry_point, "dist", None)
            dist_version = getattr(dist, "version", None) or ""
            dist_label = f" ({dist.name} {dist_version})" if dist is not None else ""
            origin = f"entry point {entry_point.name} = {entry_point.value}{dist_label}"
            summary = ""
            if dist is not None:
                summary = dist.metadata.get("Summary") or ""
            try:
                obj = entry_point.load()
            except Exception as exc:
                self._failed(entry_point.name, origin, dist_version, summary, f"could not be imported: {exc!r}", exc)
                continue
            self.install(obj, origin=origin, entry_name=entry_point.name, version=dist_version, description=summary)

    def install(
        self,
        obj: Any,
        *,
        origin: str = "code",
        entry_name: str | None = None,
        version: str = "",
        description: str = "",
    ) -> InstalledAddon | None:
        """Install one add-on object (a class is instantiated with no arguments) and call its ``init_app``.

        :param origin: where it came from, for the settings page and log messages.
        :param entry_name: the entry point's name, which the add-on's name must equal.
        :param version: the version to show when the add-on does not say (its distribution's).
        :param description: the description to show when the add-on does not say (its distribution's summary).
        :returns: the :class:`InstalledAddon`, or ``None`` when it was skipped (logged; strict mode raises
            :class:`AddonError` instead).
        """
        label = entry_name or getattr(obj, "name", None) or repr(obj)
        try:
            try:
                addon = obj() if isinstance(obj, type) else obj
            except Exception as exc:
                raise _Broken(label, f"could not be instantiated: {exc!r}") from exc
            name = self._check(addon, label, entry_name)
            if name is None:
                return None
            record = InstalledAddon(
                name=name,
                version=str(getattr(addon, "version", "") or version or ""),
                description=str(getattr(addon, "description", "") or description or ""),
                origin=origin,
                addon=addon,
            )
            version, description = record.version, record.description
            hooks = AddonHooks(self, name)
            try:
                addon.init_app(self.app, hooks)
            except Exception as exc:
                hooks.disconnect_all()
                raise _Broken(name, f"init_app failed: {exc!r}") from exc
        except _Broken as broken:
            self._failed(broken.name, origin, version, description, broken.why, broken.__cause__, broken.record)
            return None
        record.hooks = hooks
        self._installed[name] = record
        log.debug("addon %s %s installed from %s", name, record.version, origin)
        return record

    def _check(self, addon: Any, label: str, entry_name: str | None) -> str | None:
        """The add-on's name, ``None`` to skip it silently (denied), or :class:`_Broken`."""
        name = getattr(addon, "name", None) or entry_name
        if not isinstance(name, str) or not name:
            raise _Broken(label, "has no name")
        if entry_name is not None and name != entry_name:
            raise _Broken(
                entry_name, f"calls itself {name!r} but its entry point is named {entry_name!r}; they must be the same"
            )
        if not NAME_PATTERN.match(name):
            raise _Broken(label, f"has a bad name {name!r}: use at most 64 letters, digits, '_', '-' and '.'")
        if name in denied_names(self.app):
            log.info("addon %s: on PATRONLOCK_ADDONS_DENYLIST; not installed", name)
            return None
        if not callable(getattr(addon, "init_app", None)):
            raise _Broken(name, "is not an add-on: it has no init_app(app, hooks)")
        if name in self._installed:
            raise _Broken(
                name, f"is installed twice (already from {self._installed[name].origin}); this one is skipped",
                record=False,
            )
        return name

    def uninstall(self, name: str) -> None:
        """Disconnect the receivers of the add-on ``name`` and forget it (its blueprints stay registered, and answer
        404). For tests; a creator disables an add-on instead."""
        record = self._installed.pop(name, None)
        if record is not None and record.hooks is not None:
            record.hooks.disconnect_all()

    def _failed(
        self,
        name: str,
        origin: str,
        version: str,
        description: str,
        why: str,
        cause: BaseException | None,
        record: bool = True,
    ) -> None:
        """Log a broken add-on with its name and list it with its error (strict mode: raise :class:`AddonError`)."""
        message = f"addon {name} ({origin}) {why}"
        if self.strict():
            raise AddonError(message) from cause
        log.error("%s; skipped", message, exc_info=cause)
        if record and name not in self._installed:
            self._installed[name] = InstalledAddon(
                name=name, version=version, description=description, origin=origin, error=why
            )

    # -- blueprints of disabled add-ons answer 404 -------------------------------------------------------------------

    def _gate_blueprint(self, blueprint_name: str, addon_name: str) -> None:
        if not self._blueprints:
            self.app.before_request(self._before_request)
        self._blueprints[blueprint_name] = addon_name

    def _before_request(self) -> None:
        for blueprint_name in request.blueprints:
            addon_name = self._blueprints.get(blueprint_name)
            if addon_name is not None:
                record = self._installed.get(addon_name)
                if record is None or not record.loaded or not self.enabled(addon_name):
                    abort(404)


class _Broken(Exception):
    def __init__(self, name: str, why: str, *, record: bool = True) -> None:
        super().__init__(why)
        self.name = name
        self.why = why
        self.record = record


def denied_names(app: Flask) -> set[str]:
    """The names on ``PATRONLOCK_ADDONS_DENYLIST``."""
    from .config import as_list

    return set(as_list(app.config["PATRONLOCK_ADDONS_DENYLIST"], "PATRONLOCK_ADDONS_DENYLIST"))


def init_app(app: Flask) -> None:
    """Find and install the app's add-ons: entry points (unless ``PATRONLOCK_ADDONS_AUTOLOAD`` is off), then those
    registered in code. Called by :meth:`PatronLock.init_app <flask_patronlock.PatronLock.init_app>`."""
    state = get_state(app)
    registry = state.addons
    if app.config["PATRONLOCK_ADDONS_AUTOLOAD"]:
        registry.discover()
    for addon in state.declarations.addons:
        registry.install(addon, origin="code")
