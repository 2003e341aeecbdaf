"""The creator-editable settings as each worker caches them: lock overrides, policies, banner texts, the campaign's
tiers, routing and add-on switches.

Everything here is stored in ``patronlock_settings``, ``patronlock_lock_overrides`` and ``patronlock_locks`` (the
locks creators made); every write bumps one version
number (a row of ``patronlock_settings``) in the same transaction and writes an audit row naming who changed what.

A page view never reads these tables. Each worker keeps a :class:`SettingsSnapshot` (policy, overrides, banner texts,
the tier catalogue, and the rules resolved from them) and checks the version at most once every
``PATRONLOCK_SETTINGS_CHECK_SECONDS`` (default 2 s): one tiny indexed query, and a reload only when the version moved.
So a creator's change reaches every worker within that interval, without a restart and without a query per request.

The Python API that writes them is :mod:`flask_patronlock.settings`.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import select

from . import signals
from .declarations import Lock, LockRegistry, unknown_lock
from .paths import normalize_path_locks
from .patreon.types import TierSnapshot
from .patron import Patron
from .policy import ALLOWING_REASONS, REASONS, Comp, LockRule, PolicySettings

if TYPE_CHECKING:
    from .store import Store

#: the settings' value types (:mod:`flask_patronlock.settings` re-exports exactly these); the row keys and prefixes
#: below are for the settings module, which writes those rows.
__all__ = [
    "BANNER_REASONS",
    "AddonSwitch",
    "CreatorLock",
    "LockInfo",
    "Override",
    "Routing",
    "SettingsCache",
    "SettingsSnapshot",
]

log = logging.getLogger("flask_patronlock.settings")

#: The reasons a banner is shown for (every reason that denies).
BANNER_REASONS: frozenset[str] = frozenset(REASONS - ALLOWING_REASONS)

POLICY_KEY = "policy"
BANNER_PREFIX = "banner:"
#: one row per reason: ``{lock name: text}``, the locks whose banner of that reason has a text of its own.
LOCK_BANNER_PREFIX = "lock-banners:"
#: the settings page's choice of campaign, and of site-wide / path locks (issue 7).
CAMPAIGN_KEY = "patronlock.campaign_id"
ROUTING_KEY = "patronlock.routing"
ADDON_PREFIX = "addon:"

_warned_tiers: set[str] = set()
_warned_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class Override:
    """A creator's override of a named lock's rule."""

    rule: LockRule
    updated_by: str | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AddonSwitch:
    """The creator's switch of one add-on."""

    enabled: bool
    updated_by: str | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CreatorLock:
    """A lock a creator made on the settings page, as stored (its rule is its :class:`Override`)."""

    #: the lock, with ``origin="creator"`` and the rule it has before the creator set one (any patron).
    lock: Lock
    created_by: str | None = None
    created_at: datetime | None = None
    updated_by: str | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class LockInfo:
    """A named lock with its default rule, the creator's override (if any) and the rule in effect."""

    name: str
    description: str
    default: LockRule
    override: Override | None
    #: the rule in force, tier titles resolved to tier ids.
    effective: LockRule
    #: ``"override"`` or ``"default"``.
    source: Literal["default", "override"]
    #: ``"code"`` (declared with :meth:`PatronLock.lock <flask_patronlock.PatronLock.lock>`: it can't be deleted on
    #: the settings page) or ``"creator"`` (made on the settings page).
    origin: str = "code"
    #: what creators read: the title, else the name.
    title: str = ""


@dataclass(frozen=True, slots=True)
class Routing:
    """The site-wide lock and the URL-prefix locks as set on the settings page; they replace
    ``PATRONLOCK_SITE_LOCK`` and ``PATRONLOCK_PATH_LOCKS`` while stored (:func:`clear_routing` goes back to them)."""

    site_lock: str | None = None
    #: URL path prefix -> lock name; how a prefix matches a request path is in :mod:`flask_patronlock.paths`.
    path_locks: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return {"site_lock": self.site_lock, "path_locks": dict(self.path_locks)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, strict: bool = True) -> Routing:
        """From :meth:`to_dict` output.

        Prefixes are stored in one spelling (:func:`~flask_patronlock.paths.normalize_prefix`: ``/files/./premium/``
        is ``/files/premium``).

        :param strict: refuse two spellings of one URL with different locks; ``False`` (reading stored data) keeps
            both, and both locks apply.
        :raises ValueError: on an unknown key, a prefix that does not start with ``/`` or has a space inside, an empty
            lock name, or (``strict``) two spellings of one URL with different locks.
        """
        unknown = sorted(str(k) for k in data if k not in ("site_lock", "path_locks"))
        if unknown:
            raise ValueError(f"Routing has unknown key(s): {', '.join(unknown)}")
        site = data.get("site_lock") or None
        if site is not None and not isinstance(site, str):
            raise ValueError(f"Routing.site_lock must be a lock name or None, not {site!r}")
        paths = data.get("path_locks") or {}
        if not isinstance(paths, Mapping):
            raise ValueError("Routing.path_locks must be a mapping of URL path prefix to lock name")
        return cls(site_lock=site, path_locks=normalize_path_locks(paths, strict=strict))


@dataclass
class SettingsSnapshot:
    """Everything a lock decision needs besides the viewer, as of one settings version. Treat it as read-only."""

    version: int
    policy: PolicySettings = field(default_factory=PolicySettings)
    overrides: dict[str, Override] = field(default_factory=dict)
    banner_texts: dict[str, str] = field(default_factory=dict)
    #: the banner texts of one lock only, by reason then lock name (they win over :attr:`banner_texts`).
    lock_banner_texts: dict[str, dict[str, str]] = field(default_factory=dict)
    #: the campaign's tiers by id.
    tiers: dict[str, TierSnapshot] = field(default_factory=dict)
    #: lower-cased tier title -> the ids of the tiers with that title.
    tier_ids_by_title: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: the campaign the creator chose on the settings page (wins over ``PATRONLOCK_CAMPAIGN_ID``); issue 7.
    campaign_id: str | None = None
    #: the site-wide and path locks set on the settings page (win over the configuration), or ``None``; issue 7.
    routing: Routing | None = None
    #: the creator's add-on switches by add-on name (add-ons never switched are absent).
    addon_switches: dict[str, AddonSwitch] = field(default_factory=dict)
    #: the comps not revoked yet (expired ones included until the scheduler revokes them), by whom they are for:
    #: ``("user", local user id)``, ``("member", member id)`` or ``("patreon_user", Patreon user id)``; see
    #: :meth:`comps_for`.
    comps: dict[tuple[str, str], tuple[Comp, ...]] = field(default_factory=dict)
    #: the locks creators made on the settings page, by name (deleted ones are in :attr:`deleted_locks`).
    creator_locks: dict[str, CreatorLock] = field(default_factory=dict)
    #: the names of locks creators deleted: content still naming one stays locked (see :meth:`find_lock`).
    deleted_locks: frozenset[str] = frozenset()
    #: the app, sent as the sender of the ``lock-rule`` filter.
    sender: Any = field(default=None, repr=False, compare=False)
    #: strict mode of the ``lock-rule`` filter (read when it is folded).
    strict: Callable[[], bool] = field(default=lambda: False, repr=False, compare=False)
    _rules: dict[Any, LockRule] = field(default_factory=dict, repr=False)
    #: the ``lock-rule`` receivers the cached rules were folded with.
    _filtered_with: tuple[Any, ...] | None = field(default=None, repr=False)

    def rule_for(self, lock: Lock) -> LockRule:
        """The rule in force for ``lock``: the creator's override of a named lock, else its default; tier titles
        resolved to tier ids; then folded through the ``lock-rule`` filter. Computed once per lock and settings version
        (and again when ``lock-rule`` receivers are connected or disconnected)."""
        key = lock.name if lock.name is not None else lock
        receivers = signals.lock_rule.receivers
        if receivers or self._filtered_with is not None:
            filtered_with = tuple(receivers) if receivers else None
            if filtered_with != self._filtered_with:
                self._rules.clear()
                self._filtered_with = filtered_with
        rule = self._rules.get(key)
        if rule is None:
            rule = self.base_rule_for(lock)
            if receivers:
                rule = self._filter_rule(lock, rule)
            self._rules[key] = rule
        return rule

    def find_lock(self, declared: LockRegistry, name: str) -> Lock:
        """The named lock ``name``: declared in code (``declared``), else made by a creator.

        :raises UnknownLockError: naming the locks that exist.
        """
        if name in declared:
            return declared.get(name)
        made = self.creator_locks.get(name)
        if made is not None:
            return made.lock
        raise unknown_lock(name, ", ".join(sorted(self.lock_names(declared))) or "none")

    def lock_names(self, declared: LockRegistry) -> list[str]:
        """The names of every lock in force: declared in code and made by creators, sorted."""
        names = {lock.name for lock in declared if lock.name is not None}
        return sorted(names | set(self.creator_locks))

    def all_locks(self, declared: LockRegistry) -> list[Lock]:
        """Every lock in force (declared in code, then made by creators, in :meth:`lock_names` order)."""
        return [self.find_lock(declared, name) for name in self.lock_names(declared)]

    def banner_text(self, reason: str, lock: str | None) -> str | None:
        """The creator's text of the banner for ``reason`` on the lock named ``lock``: the lock's own text, else the
        site-wide one; ``None`` when the creator wrote neither (the built-in text applies)."""
        own = self.lock_banner_texts.get(reason, {}).get(lock) if lock is not None else None
        return own or self.banner_texts.get(reason) or None

    def rule_source(self, lock: Lock) -> Literal["default", "override", "one-off"]:
        """Where ``lock``'s rule comes from: declared in code, the creator's override, or a one-off rule."""
        if lock.name is None:
            return "one-off"
        return "override" if lock.name in self.overrides else "default"

    def base_rule_for(self, lock: Lock) -> LockRule:
        """The rule of ``lock`` before the ``lock-rule`` filter: the override, else the default, tiers resolved."""
        override = self.overrides.get(lock.name) if lock.name is not None else None
        return self.resolve(override.rule if override is not None else lock.rule)

    def _filter_rule(self, lock: Lock, rule: LockRule) -> LockRule:
        strict = bool(self.strict())
        folded = signals.apply_filter(
            signals.lock_rule, self.sender, rule, strict=strict, lock=lock.name, source=self.rule_source(lock)
        )
        if folded is rule:
            return rule
        if not isinstance(folded, LockRule):
            message = f"a lock-rule receiver returned {type(folded).__name__}, not a LockRule; ignored"
            if strict:
                raise TypeError(message)
            log.error(message)
            return rule
        return self.resolve(folded)

    def comps_for(self, user_id: str | None, patron: Patron | None) -> tuple[Comp, ...]:
        """The comps of the local user ``user_id`` and of their stored ``patron`` (by member id and by Patreon user
        id): what :attr:`Viewer.comps <flask_patronlock.policy.Viewer.comps>` carries into a decision. No query."""
        comps = self.comps
        if not comps:
            return ()
        found = comps.get(("user", user_id), ()) if user_id is not None else ()
        if patron is not None:
            found += comps.get(("member", patron.member_id), ())
            if patron.patreon_user_id:
                found += comps.get(("patreon_user", patron.patreon_user_id), ())
        return found

    def addon_enabled(self, name: str, *, default: bool = True) -> bool:
        """Whether the add-on ``name`` is switched on (``default`` when the creator never switched it)."""
        switch = self.addon_switches.get(name)
        return default if switch is None else switch.enabled

    def resolve(self, rule: LockRule) -> LockRule:
        """``rule`` with each entry of ``tier_ids`` that is not a known tier id but a known tier title (compared
        case-insensitively) replaced by the ids of the tiers with that title. An unknown entry is kept as it is:
        :func:`~flask_patronlock.policy.decide` denies it with ``amount_too_low`` and says why; a warning is logged
        once per process."""
        if not rule.tier_ids:
            return rule
        ids: list[str] = []
        for ref in rule.tier_ids:
            if ref in self.tiers:
                found: tuple[str, ...] = (ref,)
            else:
                found = self.tier_ids_by_title.get(ref.strip().casefold(), ())
                if not found:
                    _warn_unknown_tier(ref)
                    found = (ref,)
            ids.extend(t for t in found if t not in ids)
        if tuple(ids) == rule.tier_ids:
            return rule
        return dataclasses.replace(rule, tier_ids=tuple(ids))


def _warn_unknown_tier(ref: str) -> None:
    with _warned_lock:
        if ref in _warned_tiers:
            return
        _warned_tiers.add(ref)
    log.warning(
        "a lock asks for tier %r, which is neither the id nor the title of a known tier of the campaign; it denies "
        "everyone who does not hold exactly that tier id. Sync the tiers, or fix the lock's tier name.",
        ref,
    )


class SettingsCache:
    """One app's cached :class:`SettingsSnapshot`, re-read only when the settings version changed.

    :param store: the app's store.
    :param interval: seconds between version checks (read each time, so a config change applies at once).
    :param clock: a monotonic clock in seconds (tests pass a controlled one).
    """

    def __init__(
        self,
        store: Store,
        interval: Callable[[], float],
        *,
        campaign_id: Callable[[], str | None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        sender: Any = None,
        strict: Callable[[], bool] = lambda: False,
    ) -> None:
        self.store = store
        #: the sender and strict mode of the ``lock-rule`` filter folded in :meth:`SettingsSnapshot.rule_for`.
        self.sender = sender
        self.strict = strict
        self._snapshot: SettingsSnapshot | None = None
        self._lock = threading.Lock()
        self._interval = interval
        self._campaign_id = campaign_id
        self.clock = clock
        self._next_check = float("-inf")
        #: how many times the snapshot was loaded from the database (for tests and the benchmark).
        self.loads = 0

    def current(self) -> SettingsSnapshot:
        """The snapshot, checking the version first if the interval has passed since the last check."""
        snapshot = self._snapshot
        if snapshot is not None and self.clock() < self._next_check:
            return snapshot
        with self._lock:
            now = self.clock()
            snapshot = self._snapshot
            if snapshot is not None and now < self._next_check:
                return snapshot
            version = self.store.settings_version()
            if snapshot is None or snapshot.version != version:
                snapshot = self._load(version)
                self._snapshot = snapshot
            self._next_check = now + max(float(self._interval()), 0.0)
            return snapshot

    def invalidate(self) -> None:
        """Check the version on the next :meth:`current` (after this process wrote a setting)."""
        self._next_check = float("-inf")

    def _load(self, version: int) -> SettingsSnapshot:
        # The version was read before the data: a write in between makes the data newer than its label, and the next
        # check reloads; the other order could label old data with a new version and keep it forever.
        tables = self.store.tables
        s, o = tables.settings, tables.lock_overrides
        policy = PolicySettings()
        banners: dict[str, str] = {}
        lock_banners: dict[str, dict[str, str]] = {}
        overrides: dict[str, Override] = {}
        campaign_id: str | None = None
        routing: Routing | None = None
        switches: dict[str, AddonSwitch] = {}
        made: dict[str, CreatorLock] = {}
        deleted: set[str] = set()
        with self.store.engine.connect() as conn:
            for row in conn.execute(select(s.c.key, s.c.value, s.c.updated_by, s.c.updated_at)).mappings():
                key, value = row["key"], row["value"]
                if key == CAMPAIGN_KEY:
                    campaign_id = str(value) if value else None
                elif key == ROUTING_KEY and value is not None:
                    try:
                        routing = Routing.from_dict(value, strict=False)  # never drop a stored lock for a twin
                    except (ValueError, TypeError):
                        log.exception("the stored site-wide and path locks are invalid; using the configuration's")
                elif key == POLICY_KEY and value is not None:
                    try:
                        policy = PolicySettings.from_dict(value)
                    except ValueError:
                        log.exception("the stored access policy is invalid; using the defaults until it is fixed")
                elif key.startswith(BANNER_PREFIX) and isinstance(value, str):
                    banners[key[len(BANNER_PREFIX) :]] = value
                elif key.startswith(LOCK_BANNER_PREFIX) and isinstance(value, dict):
                    texts = {str(k): v for k, v in value.items() if isinstance(v, str) and v}
                    if texts:
                        lock_banners[key[len(LOCK_BANNER_PREFIX) :]] = texts
                elif key.startswith(ADDON_PREFIX) and isinstance(value, dict):
                    switches[key[len(ADDON_PREFIX) :]] = AddonSwitch(
                        bool(value.get("enabled", True)), row["updated_by"], row["updated_at"]
                    )
            for row in conn.execute(select(o)).mappings():
                try:
                    rule = LockRule.from_dict(row["rule"])
                except (ValueError, TypeError):
                    log.exception("the stored override of lock %r is invalid; using the lock's default", row["name"])
                    continue
                overrides[row["name"]] = Override(rule, row["updated_by"], row["updated_at"])
            comps = _open_comps(conn, tables)
            for row in conn.execute(select(tables.locks)).mappings():
                if row["deleted_at"] is not None:
                    deleted.add(row["name"])
                    continue
                lock = Lock(
                    name=row["name"],
                    rule=LockRule(),
                    description=row["description"] or "",
                    title=row["title"] or "",
                    origin="creator",
                )
                made[row["name"]] = CreatorLock(
                    lock, row["created_by"], row["created_at"], row["updated_by"], row["updated_at"]
                )
        tiers = {t.id: t for t in self.store.tiers(campaign_id or self._campaign_id())}
        by_title: dict[str, tuple[str, ...]] = {}
        for tier in tiers.values():
            title = tier.title.strip().casefold()
            if title:
                by_title[title] = (*by_title.get(title, ()), tier.id)
        self.loads += 1
        return SettingsSnapshot(
            version=version,
            policy=policy,
            overrides=overrides,
            banner_texts=banners,
            lock_banner_texts=lock_banners,
            tiers=tiers,
            tier_ids_by_title=by_title,
            campaign_id=campaign_id,
            routing=routing,
            addon_switches=switches,
            comps=comps,
            creator_locks=made,
            deleted_locks=frozenset(deleted),
            sender=self.sender,
            strict=self.strict,
        )


def _open_comps(conn: Any, tables: Any) -> dict[tuple[str, str], tuple[Comp, ...]]:
    """The comps not revoked yet, by whom they are for (see :attr:`SettingsSnapshot.comps`)."""
    c = tables.comps
    found: dict[tuple[str, str], tuple[Comp, ...]] = {}
    rows = conn.execute(select(c).where(c.c.revoked_at.is_(None)).order_by(c.c.id)).mappings()
    for row in rows:
        try:
            comp = Comp(id=row["id"], lock=row["lock"], tier_id=row["tier_id"], expires_at=row["expires_at"])
        except ValueError:
            log.exception("comp %s is invalid (it names no lock or tier); it is ignored", row["id"])
            continue
        for kind in ("user", "member", "patreon_user"):
            subject = row["member_id" if kind == "member" else f"{kind}_id"]
            if subject is not None:
                found[(kind, subject)] = (*found.get((kind, subject), ()), comp)
                break
    return found
