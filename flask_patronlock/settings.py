"""Creator-editable settings, the Python API (used by the settings page and by the CLI); it works on the current app:

* :func:`get_lock_override`, :func:`set_lock_override`, :func:`clear_lock_override`, :func:`list_locks`
* :func:`create_lock`, :func:`update_lock`, :func:`delete_lock`, :func:`find_lock` (locks creators make)
* :func:`get_policy_settings`, :func:`set_policy_settings`
* :func:`get_banner_text`, :func:`set_banner_text`, :func:`list_banner_overrides` (site-wide, or for one lock)
* :func:`get_campaign_id`, :func:`set_campaign_id`, :func:`set_routing`, :func:`clear_routing` (the settings page's
  choice of campaign and of site-wide / path locks, which win over the configuration)
* :func:`list_addons`, :func:`set_addon_enabled`, :func:`is_addon_enabled`

Every write bumps the settings version and writes an audit row in one transaction; every worker's cache
(:mod:`flask_patronlock.settings_cache`) sees it within ``PATRONLOCK_SETTINGS_CHECK_SECONDS``.

Over 600 lines: the whole public API of what a creator may change, each function a short validate-write-audit step
through the same versioned write (:func:`_write`); split by kind, every module would repeat that write and its checks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import delete, insert, select, update

from . import settings_cache
from .declarations import Lock
from .i18n import gettext
from .policy import LockRule, PolicySettings
from .settings_cache import (
    ADDON_PREFIX,
    BANNER_PREFIX,
    BANNER_REASONS,
    CAMPAIGN_KEY,
    LOCK_BANNER_PREFIX,
    POLICY_KEY,
    ROUTING_KEY,
    LockInfo,
    Override,
    Routing,
    SettingsSnapshot,
)
from .settings_cache import (
    AddonSwitch as AddonSwitch,
)
from .settings_cache import (
    SettingsCache as SettingsCache,
)
from .state import get_state

__all__ = [
    "AddonInfo",
    "LockError",
    "clear_lock_override",
    "clear_routing",
    "create_lock",
    "delete_lock",
    "find_lock",
    "get_banner_text",
    "get_campaign_id",
    "get_lock_override",
    "get_policy_settings",
    "is_addon_enabled",
    "list_addons",
    "list_banner_overrides",
    "list_locks",
    "set_addon_enabled",
    "set_banner_text",
    "set_campaign_id",
    "set_lock_override",
    "set_policy_settings",
    "set_routing",
    "update_lock",
]
# the settings' value types, re-exported: settings_cache exports exactly those
__all__ += settings_cache.__all__

# -- the Python API ---------------------------------------------------------------------------------------------------


def _snapshot() -> SettingsSnapshot:
    snapshot: SettingsSnapshot = get_state().settings.current()
    return snapshot


def _declared(name: str) -> Lock:
    return find_lock(name)


def find_lock(name: str) -> Lock:
    """The named lock ``name``: declared in code, or made by a creator on the settings page.

    :raises UnknownLockError: if there is no such lock (naming those there are).
    """
    state = get_state()
    lock: Lock = state.settings.current().find_lock(state.declarations.locks, name)
    return lock


def _write(
    kind: str, by: str | None, detail: Mapping[str, Any], apply: Callable[[Any, int], None], source: str = "admin"
) -> int:
    """Run ``apply(conn, new_version)`` in a write transaction with a version bump and an audit row (from
    ``source``: ``admin`` for the settings page and the Python API, ``cli`` for the command line)."""
    state = get_state()
    store = state.store
    with store.transaction() as conn:
        version = store.bump_settings_version(conn, by=by)
        apply(conn, version)
        store.record_event(conn, kind, source=source, user_id=by, detail={**detail, "version": version})
    state.settings.invalidate()
    return version


def _put(kind: str, by: str | None, detail: Mapping[str, Any], key: str, value: Any) -> None:
    """Store ``value`` in the settings row ``key``: a write of ``kind``, audited with ``detail``."""
    _write(kind, by, detail, lambda conn, version: _upsert_setting(conn, key, value, version, by))


def _upsert_setting(conn: Any, key: str, value: Any, version: int, by: str | None) -> None:
    state = get_state()
    s = state.tables.settings
    now = state.store.clock()
    values = {"value": value, "version": version, "updated_by": by, "updated_at": now}
    if not conn.execute(update(s).where(s.c.key == key).values(**values)).rowcount:
        conn.execute(insert(s).values(key=key, **values))


def get_lock_override(name: str) -> Override | None:
    """The creator's override of the declared lock ``name``, or ``None``.

    :raises UnknownLockError: if no lock of that name is declared.
    """
    _declared(name)
    return _snapshot().overrides.get(name)


def set_lock_override(name: str, rule: LockRule | Mapping[str, Any], *, by: str | None = None) -> None:
    """Override the rule of the declared lock ``name`` (only named locks are editable). Every worker applies it
    within ``PATRONLOCK_SETTINGS_CHECK_SECONDS``.

    :param rule: a :class:`~flask_patronlock.policy.LockRule`, or its :meth:`~flask_patronlock.policy.LockRule.to_dict`
        form; ``tier_ids`` may hold tier ids or titles.
    :param by: who made the change (recorded with it and in the audit row).
    :raises UnknownLockError: if no lock of that name is declared.
    :raises ValueError: if ``rule`` is not a valid rule.
    """
    _declared(name)
    checked = rule if isinstance(rule, LockRule) else LockRule.from_dict(rule)
    data = checked.to_dict()
    o = get_state().tables.lock_overrides

    def apply(conn: Any, version: int) -> None:
        now = get_state().store.clock()
        if not conn.execute(
            update(o).where(o.c.name == name).values(rule=data, updated_by=by, updated_at=now)
        ).rowcount:
            conn.execute(insert(o).values(name=name, rule=data, updated_by=by, updated_at=now))

    _write("lock_override_set", by, {"lock": name, "rule": data}, apply)


def clear_lock_override(name: str, *, by: str | None = None) -> bool:
    """Remove the override of ``name`` (its default rule applies again). Returns whether there was one.

    :raises UnknownLockError: if no lock of that name is declared.
    """
    _declared(name)
    o = get_state().tables.lock_overrides
    removed: list[int] = []

    def apply(conn: Any, version: int) -> None:
        removed.append(conn.execute(delete(o).where(o.c.name == name)).rowcount)

    _write("lock_override_cleared", by, {"lock": name}, apply)
    return bool(removed and removed[0])


def list_locks() -> list[LockInfo]:
    """Every lock, declared in code or made by a creator, sorted by name, with its default, override and effective
    rule."""
    snapshot = _snapshot()
    out = []
    for lock in snapshot.all_locks(get_state().declarations.locks):
        name = lock.name or ""
        override = snapshot.overrides.get(name)
        out.append(
            LockInfo(
                name=name,
                description=lock.description,
                default=lock.rule,
                override=override,
                effective=snapshot.rule_for(lock),
                source="override" if override is not None else "default",
                origin=lock.origin,
                title=lock.display_name,
            )
        )
    return out


# -- locks creators make (issue 17) -----------------------------------------------------------------------------------

#: a lock's name: lower-case letters, digits and single hyphens (``early-access``); what code, templates and content
#: store, so it never changes once the lock exists.
LOCK_NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
LOCK_NAME_MAX = 100
LOCK_TITLE_MAX = 100
LOCK_DESCRIPTION_MAX = 500

LockField = Literal["name", "title", "description", "rule", "lock"]
#: where a change of a lock comes from, as its audit row records it.
Source = Literal["admin", "cli"]


class LockError(ValueError):
    """A lock that cannot be made, changed or deleted, said in plain words; :attr:`field` names the input at fault
    (``name``, ``title``, ``description``, ``rule``, or ``lock`` for the lock as a whole), so a form shows the message
    next to it. :attr:`errors` lists every problem found, this one first."""

    def __init__(self, field: LockField, message: str, *, others: Iterable[tuple[LockField, str]] = ()) -> None:
        super().__init__(message)
        self.field = field
        self.errors: list[tuple[LockField, str]] = [(field, message), *others]


def slugify(text: str) -> str:
    """A lock name made from ``text`` ("Early access!" -> ``early-access``); empty if nothing usable is left."""
    return "-".join(re.findall(r"[a-z0-9]+", text.lower()))[:LOCK_NAME_MAX].strip("-")


def _check_details(title: str, description: str) -> list[tuple[LockField, str]]:
    problems: list[tuple[LockField, str]] = []
    if not title:
        problems.append(("title", gettext("Give the lock a name your patrons will read, such as “Early access”.")))
    elif len(title) > LOCK_TITLE_MAX:
        too_long = gettext(
            "A lock's name may be at most %(max)d characters (%(now)d now).", max=LOCK_TITLE_MAX, now=len(title)
        )
        problems.append(("title", too_long))
    if len(description) > LOCK_DESCRIPTION_MAX:
        too_long = gettext(
            "The description may be at most %(max)d characters (%(now)d now).",
            max=LOCK_DESCRIPTION_MAX,
            now=len(description),
        )
        problems.append(("description", too_long))
    return problems


def _creator_lock(name: str, doing: Literal["renaming", "deleting"]) -> Lock:
    """The creator-made lock ``name``, or a :class:`LockError` saying why ``doing`` it is not possible."""
    state = get_state()
    if name in state.declarations.locks:
        if doing == "renaming":
            message = gettext(
                "“%(name)s” is made in code: only its rule can be changed here, not renaming it.", name=name
            )
        else:
            message = gettext(
                "“%(name)s” is made in code: only its rule can be changed here, not deleting it.", name=name
            )
        raise LockError("lock", message)
    made = _snapshot().creator_locks.get(name)
    if made is None:
        raise LockError("lock", gettext("There is no lock called “%(name)s”.", name=name))
    return made.lock


def create_lock(
    name: str,
    *,
    title: str = "",
    description: str = "",
    rule: LockRule | Mapping[str, Any] | None = None,
    by: str | None = None,
    source: Source = "admin",
) -> Lock:
    """Make a lock without code: usable at once, on every worker within ``PATRONLOCK_SETTINGS_CHECK_SECONDS``, by
    ``@locked(name)``, ``{% patronlock name %}``, :func:`~flask_patronlock.locks.can_view` and everything else that
    takes a lock name, exactly like a lock declared in code.

    :param name: the lock's permanent name: lower-case letters, digits and hyphens (``early-access``); empty makes
        one from ``title``. A lock a creator deleted may be made again under its old name: content still naming it
        opens again under the new rule.
    :param title: what creators and patrons read ("Early access"); empty uses the name.
    :param description: a sentence on what the lock is for (at most 500 characters).
    :param rule: the lock's rule (a :class:`~flask_patronlock.policy.LockRule` or its ``to_dict`` form); ``None``:
        any patron entitled to something.
    :param by: who made it (recorded, and in the audit row).
    :param source: where the change comes from (``admin`` or ``cli``), for the audit row.
    :raises LockError: naming the field at fault: a bad or taken name, a missing or too long title, a too long
        description, or a bad rule.
    """
    state = get_state()
    title, description = (title or "").strip(), (description or "").strip()
    name = (name or "").strip() or slugify(title)
    if not title:
        title = name
    problems: list[tuple[LockField, str]] = []
    if not name:
        problems.append(
            ("name", gettext("Give the lock a short name of letters, digits and hyphens, such as early-access."))
        )
    elif len(name) > LOCK_NAME_MAX:
        too_long = gettext(
            "The short name may be at most %(max)d characters (%(now)d now).", max=LOCK_NAME_MAX, now=len(name)
        )
        problems.append(("name", too_long))
    elif not LOCK_NAME.fullmatch(name):
        problems.append(
            ("name", gettext("The short name may hold only lower-case letters, digits and single hyphens, such as "
                             "early-access (not “%(name)s”).", name=name))
        )
    elif name in state.declarations.locks:
        problems.append(("name", gettext("“%(name)s” is already a lock made in code. Choose another short name.",
                                         name=name)))
    elif name in _snapshot().creator_locks:
        problems.append(("name", gettext("There is already a lock called “%(name)s”. Choose another short name.",
                                         name=name)))
    problems += _check_details(title, description)
    data: dict[str, Any] | None = None
    if rule is not None:
        try:
            data = (rule if isinstance(rule, LockRule) else LockRule.from_dict(rule)).to_dict()
        except ValueError as exc:
            problems.append(("rule", str(exc)))
    if problems:
        (field, message), *others = problems
        raise LockError(field, message, others=others)
    t, o = state.tables.locks, state.tables.lock_overrides

    def apply(conn: Any, version: int) -> None:
        now = state.store.clock()
        values = {"title": title, "description": description, "updated_by": by, "updated_at": now}
        revived = conn.execute(
            update(t).where(t.c.name == name).values(**values, created_by=by, created_at=now, deleted_at=None)
        ).rowcount
        if not revived:
            conn.execute(insert(t).values(name=name, created_by=by, created_at=now, **values))
        conn.execute(delete(o).where(o.c.name == name))  # a revived name starts from its new rule, never an old one
        if data is not None:
            conn.execute(insert(o).values(name=name, rule=data, updated_by=by, updated_at=now))

    detail = {"lock": name, "title": title, "description": description, "rule": data}
    _write("lock_created", by, detail, apply, source)
    return Lock(name=name, rule=LockRule(), description=description, title=title, origin="creator")


def update_lock(
    name: str,
    *,
    title: str | None = None,
    description: str | None = None,
    by: str | None = None,
    source: Source = "admin",
) -> Lock:
    """Rename (change the title of) or describe the creator-made lock ``name``; its name stays, so code, templates
    and content that use it keep working. Change its rule with :func:`set_lock_override`.

    :raises LockError: for a lock made in code or that does not exist (``field="lock"``), or a bad title or
        description.
    """
    lock = _creator_lock(name, "renaming")
    new_title = lock.title if title is None else title.strip()
    new_description = lock.description if description is None else description.strip()
    problems = _check_details(new_title, new_description)
    if problems:
        (field, message), *others = problems
        raise LockError(field, message, others=others)
    state = get_state()
    t = state.tables.locks

    def apply(conn: Any, version: int) -> None:
        conn.execute(
            update(t)
            .where(t.c.name == name)
            .values(title=new_title, description=new_description, updated_by=by, updated_at=state.store.clock())
        )

    _write("lock_updated", by, {"lock": name, "title": new_title, "description": new_description}, apply, source)
    return Lock(name=name, rule=LockRule(), description=new_description, title=new_title, origin="creator")


def lock_in_routing(name: str) -> str | None:
    """How the site-wide or URL-prefix locks use ``name`` ("the site-wide lock", "the lock of /premium"), or
    ``None`` when they don't."""
    snapshot = _snapshot()
    cfg = get_state().app.config
    if snapshot.routing is not None:
        site, paths = snapshot.routing.site_lock, dict(snapshot.routing.path_locks)
    else:
        site, paths = cfg["PATRONLOCK_SITE_LOCK"], dict(cfg["PATRONLOCK_PATH_LOCKS"] or {})
    if site == name:
        return gettext("the site-wide lock")
    prefixes = sorted(prefix for prefix, lock in paths.items() if lock == name)
    return gettext("the lock of %(paths)s", paths=", ".join(prefixes)) if prefixes else None


def delete_lock(name: str, *, by: str | None = None, source: Source = "admin") -> None:
    """Delete the creator-made lock ``name``. Content that still names it fails closed: it stays locked to everyone
    but admins (reason ``lock_unavailable``, and an error in the log naming the lock) until it gets another lock or a
    lock of that name is made again. Its rule goes, and its open comps are revoked (each audited as ``comp_revoked``),
    so a lock made again under the name starts afresh.

    :raises LockError: for a lock made in code or that does not exist, or one the site-wide or URL-prefix locks use
        (choose another lock there first).
    """
    _creator_lock(name, "deleting")
    used = lock_in_routing(name)
    if used is not None:
        raise LockError(
            "lock", gettext("“%(name)s” is %(used)s. Choose another lock there first, then delete this one.",
                            name=name, used=used)
        )
    state = get_state()
    t, o, c = state.tables.locks, state.tables.lock_overrides, state.tables.comps
    rule = _snapshot().overrides.get(name)

    def apply(conn: Any, version: int) -> None:
        now = state.store.clock()
        conn.execute(update(t).where(t.c.name == name).values(deleted_at=now, updated_by=by, updated_at=now))
        conn.execute(delete(o).where(o.c.name == name))
        open_comps = conn.execute(select(c).where(c.c.lock == name, c.c.revoked_at.is_(None))).mappings().all()
        for comp in open_comps:
            conn.execute(update(c).where(c.c.id == comp["id"]).values(revoked_at=now, revoked_by=by,
                                                                      revoked_source=source))
            state.store.record_event(
                conn, "comp_revoked", source=source, user_id=comp["user_id"], member_id=comp["member_id"],
                patreon_user_id=comp["patreon_user_id"],
                detail={"comp": comp["id"], "lock": name, "tier": None, "by": by, "why": "lock_deleted"},
            )

    _write("lock_deleted", by, {"lock": name, "rule": rule.rule.to_dict() if rule else None}, apply, source)


def get_policy_settings() -> PolicySettings:
    """The creator's access policies (the defaults until set)."""
    return _snapshot().policy


def set_policy_settings(settings: PolicySettings | Mapping[str, Any], *, by: str | None = None) -> PolicySettings:
    """Store the access policies (a mapping takes the defaults for missing keys).

    :raises ValueError: on an unknown key or a bad value, naming it.
    """
    checked = settings if isinstance(settings, PolicySettings) else PolicySettings.from_dict(settings)
    data = checked.to_dict()
    _put("policy_settings_set", by, {"settings": data}, POLICY_KEY, data)
    return checked


def get_banner_text(reason: str, *, lock: str | None = None) -> str:
    """The banner text of ``reason`` (placeholders unfilled) as the lock named ``lock`` shows it: that lock's own
    text, else the site-wide text, else the built-in default (in the site's locale: see :mod:`flask_patronlock.i18n`).
    Without ``lock``: the site-wide text, else the default.

    :raises ValueError: if ``reason`` is not one that shows a banner.
    """
    from .banners import DEFAULT_TEXTS
    from .i18n import gettext

    _check_reason(reason)
    return _snapshot().banner_text(reason, lock) or gettext(DEFAULT_TEXTS[reason])


def list_banner_overrides(reason: str) -> dict[str, str]:
    """The locks whose banner for ``reason`` has a text of its own, by lock name (sorted), with that text.

    :raises ValueError: if ``reason`` is not one that shows a banner.
    """
    _check_reason(reason)
    return dict(sorted(_snapshot().lock_banner_texts.get(reason, {}).items()))


def set_banner_text(reason: str, text: str | None, *, lock: str | None = None, by: str | None = None) -> None:
    """Set the creator's text of the banner for ``reason``: for every lock (``lock=None``: the site-wide text), or
    for the lock named ``lock`` only (it wins over the site-wide text there). ``None`` or an empty text removes it:
    the site-wide text restores the built-in default, a lock's own text gives way to the site-wide one.

    The text may use the placeholders ``{tier}``, ``{amount}``, ``{creator}``, ``{pledge_url}``, ``{connect_url}``,
    ``{login_url}``, ``{billing_url}``, ``{date}`` and ``{months}``, and the formatting ``**bold**``, ``*italics*`` and
    ``[a link](https://...)``; any HTML in it is shown as typed (see :func:`flask_patronlock.banners.render_text`).

    :raises ValueError: if ``reason`` is not one that shows a banner, or ``text`` is too long, names an unknown
        placeholder or links to something that is not a web page or an email address.
    :raises UnknownLockError: if a text is set for a lock that is not declared (removing one never raises).
    """
    from .banners import check_text

    _check_reason(reason)
    value = text.strip() if text else None
    if value:
        check_text(value)
    if lock is None:
        _put("banner_text_set", by, {"reason": reason, "lock": None, "text": value}, BANNER_PREFIX + reason, value)
        return
    if value:
        _declared(lock)  # removing stays possible after the lock itself is gone
    s = get_state().tables.settings
    key = LOCK_BANNER_PREFIX + reason

    def apply(conn: Any, version: int) -> None:
        # read after the version bump: a concurrent write of another lock's text has committed (or waits on us)
        stored = conn.execute(select(s.c.value).where(s.c.key == key)).scalar()
        texts = {k: v for k, v in (stored or {}).items() if isinstance(v, str)} if isinstance(stored, dict) else {}
        if value:
            texts[lock] = value
        else:
            texts.pop(lock, None)
        _upsert_setting(conn, key, dict(sorted(texts.items())), version, by)

    _write("banner_text_set", by, {"reason": reason, "lock": lock, "text": value}, apply)


def _check_reason(reason: str) -> None:
    if reason not in BANNER_REASONS:
        raise ValueError(f"{reason!r} is not a reason that shows a banner; one of {', '.join(sorted(BANNER_REASONS))}")



# -- the settings page's campaign and site-wide / path locks (issue 7) -------------------------------------------------


def get_campaign_id() -> str | None:
    """The campaign chosen on the settings page, else ``PATRONLOCK_CAMPAIGN_ID``, else ``None``."""
    stored = _snapshot().campaign_id
    return stored or get_state().app.config.get("PATRONLOCK_CAMPAIGN_ID") or None


def set_campaign_id(campaign_id: str | None, *, by: str | None = None) -> None:
    """Choose the campaign whose patrons unlock this site; it wins over ``PATRONLOCK_CAMPAIGN_ID`` on every worker
    within ``PATRONLOCK_SETTINGS_CHECK_SECONDS``. ``None`` goes back to the configuration.

    :raises ValueError: if ``campaign_id`` is not a short id without spaces or commas.
    """
    value = str(campaign_id).strip() if campaign_id is not None else None
    if value is not None and (not value or len(value) > 64 or any(c.isspace() or c == "," for c in value)):
        raise ValueError(f"{campaign_id!r} is not a Patreon campaign id")
    _put("campaign_set", by, {"campaign_id": value}, CAMPAIGN_KEY, value)


def set_routing(routing: Routing | Mapping[str, Any], *, by: str | None = None) -> Routing:
    """Store the site-wide lock and the URL-prefix locks; they replace ``PATRONLOCK_SITE_LOCK`` and
    ``PATRONLOCK_PATH_LOCKS`` on every worker within ``PATRONLOCK_SETTINGS_CHECK_SECONDS``.

    :raises ValueError: on a bad prefix or value.
    :raises UnknownLockError: when a lock name is not declared.
    """
    checked = routing if isinstance(routing, Routing) else Routing.from_dict(routing)
    for name in [checked.site_lock, *checked.path_locks.values()]:
        if name is not None:
            _declared(name)
    data = checked.to_dict()
    _put("routing_set", by, {"routing": data}, ROUTING_KEY, data)
    return checked


def clear_routing(*, by: str | None = None) -> None:
    """Forget the stored site-wide and path locks: ``PATRONLOCK_SITE_LOCK`` and ``PATRONLOCK_PATH_LOCKS`` apply."""
    s = get_state().tables.settings

    def apply(conn: Any, version: int) -> None:
        conn.execute(delete(s).where(s.c.key == ROUTING_KEY))

    _write("routing_cleared", by, {}, apply)
# -- add-ons -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AddonInfo:
    """An installed add-on as the settings page lists it."""

    name: str
    version: str
    description: str
    #: whether its receivers run: the creator's switch, else ``PATRONLOCK_ADDONS_ENABLED_BY_DEFAULT``.
    enabled: bool
    #: where it came from (its entry point and distribution, or ``"code"``).
    origin: str
    #: why it could not be installed, or ``None`` when it is installed.
    error: str | None = None
    #: who last switched it, and when (``None`` if never).
    updated_by: str | None = None
    updated_at: datetime | None = None

    @property
    def loaded(self) -> bool:
        """Whether the add-on is installed and working (it may still be switched off)."""
        return self.error is None


def list_addons() -> list[AddonInfo]:
    """Every add-on found for the current app, sorted by name: installed ones and broken ones (with ``error``)."""
    state = get_state()
    snapshot = _snapshot()
    default = bool(state.app.config["PATRONLOCK_ADDONS_ENABLED_BY_DEFAULT"])
    out = []
    for found in sorted(state.addons, key=lambda a: a.name):
        switch = snapshot.addon_switches.get(found.name)
        out.append(
            AddonInfo(
                name=found.name,
                version=found.version,
                description=found.description,
                enabled=snapshot.addon_enabled(found.name, default=default),
                origin=found.origin,
                error=found.error,
                updated_by=switch.updated_by if switch else None,
                updated_at=switch.updated_at if switch else None,
            )
        )
    return out


def is_addon_enabled(name: str) -> bool:
    """Whether the add-on ``name`` is switched on (for any name: one never switched follows the default)."""
    state = get_state()
    return _snapshot().addon_enabled(name, default=bool(state.app.config["PATRONLOCK_ADDONS_ENABLED_BY_DEFAULT"]))


def set_addon_enabled(name: str, enabled: bool, *, by: str | None = None) -> None:
    """Switch the add-on ``name`` on or off. Every worker applies it within ``PATRONLOCK_SETTINGS_CHECK_SECONDS``: a
    disabled add-on's receivers are not called and its blueprints answer 404. Audited like every settings write.

    :raises LookupError: if no add-on of that name was found for this app (installed or broken).
    """
    state = get_state()
    if name not in state.addons:
        known = ", ".join(sorted(a.name for a in state.addons)) or "none"
        raise LookupError(f"no add-on named {name!r} is installed (installed: {known})")
    value = {"enabled": bool(enabled)}
    _put("addon_switched", by, {"addon": name, "enabled": bool(enabled)}, ADDON_PREFIX + name, value)
