"""What a site declares in code: named locks, the host's callbacks, add-ons registered in code.

These belong to the :class:`~flask_patronlock.PatronLock` object, not to any app: one :class:`Declarations` is shared
by every app the extension is initialised on, and each app's state reaches it as
:attr:`PatronLockState.declarations <flask_patronlock.state.PatronLockState.declarations>`. Nothing here touches
Flask or the database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from .errors import PatronLockError
from .policy import Combine, LockRule, TierMatch

if TYPE_CHECKING:
    from .patreon.types import UserSnapshot

__all__ = ["Declarations", "Lock", "LockName", "LockRegistry", "UnknownLockError", "make_rule"]

#: a host callback answering ``{address: user id}`` for the addresses a site verified (see
#: :meth:`PatronLock.verified_users_by_email <flask_patronlock.PatronLock.verified_users_by_email>`).
EmailFinder = Callable[[Sequence[str]], Mapping[str, Any]]


class UnknownLockError(PatronLockError, LookupError):
    """A lock name that was neither declared with :meth:`PatronLock.lock <flask_patronlock.PatronLock.lock>` nor
    made by a creator on the settings page (:func:`flask_patronlock.settings.create_lock`)."""


class LockName(str):
    """A lock name read from the site's content (the column of
    :class:`~flask_patronlock.content.LockedContentMixin`). A content's lock may have been deleted since it was chosen,
    so a name nobody knows fails closed (the content stays locked, and the log says why) instead of raising
    :class:`UnknownLockError` as a typo in code does. The empty name is "public": no lock."""

    __slots__ = ()


#: where a named lock comes from: declared in code, made by a creator on the settings page, or a name no lock has any
#: more (a creator deleted it, or content names a lock that never existed): such a lock opens for nobody but admins.
LockOrigin = Literal["code", "creator", "missing"]


@dataclass(frozen=True, slots=True)
class Lock:
    """A lock: a named one declared in code or made by a creator (creators may change the rule of both), or a
    one-off rule (``name=None``).

    ``rule.tier_ids`` may hold tier titles as well as ids; they are resolved against the campaign's tiers when a
    decision is made.
    """

    name: str | None
    rule: LockRule
    description: str = ""
    #: what creators and patrons read; the name when empty. A creator renames a lock by changing it: the name, which
    #: code, templates and content refer to, never changes.
    title: str = ""
    origin: LockOrigin = "code"

    @property
    def label(self) -> str:
        """The name, or ``"(one-off rule)"``."""
        return self.name if self.name is not None else "(one-off rule)"

    @property
    def display_name(self) -> str:
        """The title, else the name (``"(one-off rule)"`` for a one-off rule)."""
        return self.title or self.label


class RuleOptions(TypedDict, total=False):
    """The keyword arguments of :func:`make_rule`, which :meth:`~flask_patronlock.PatronLock.lock` passes on."""

    tier: str | None
    tiers: tuple[str, ...] | list[str]
    exact: bool
    min_cents: int | None
    lifetime_cents: int | None
    patron_since_before: datetime | date | str | None
    drip_months: int | None
    patrons_at_publish: bool
    free_members: bool
    public_after: datetime | date | str | None
    combine: Combine
    enabled: bool


def make_rule(
    *,
    tier: str | None = None,
    tiers: tuple[str, ...] | list[str] = (),
    exact: bool = False,
    min_cents: int | None = None,
    lifetime_cents: int | None = None,
    patron_since_before: datetime | date | str | None = None,
    drip_months: int | None = None,
    patrons_at_publish: bool = False,
    free_members: bool = False,
    public_after: datetime | date | str | None = None,
    combine: Combine = "all",
    enabled: bool = True,
) -> LockRule:
    """A :class:`~flask_patronlock.policy.LockRule` from friendly arguments.

    :param tier: one tier, by title (case-insensitive) or id: "this tier or higher".
    :param tiers: several tiers: any of them, or any tier costing at least the cheapest of them.
    :param exact: only the tiers named in ``tier``/``tiers``, not dearer ones ("Comics" patrons only, not "Music"
        patrons at the same price).
    :param min_cents: at least this many cents a month.
    :param lifetime_cents: at least this much lifetime support, in cents.
    :param patron_since_before: only patrons whose current pledge started before this moment (a date, a datetime, or
        an ISO string; without a time zone it is UTC).
    :param drip_months: only patrons who have pledged for at least this many months.
    :param patrons_at_publish: only patrons whose current pledge started no later than the publish date of the item
        shown, which the site passes with each decision (``@locked(..., published_at=...)``, ``decision_for``,
        ``{% patronlock "lock", published_at=post.published_at %}``).
    :param free_members: free members of the campaign (a free membership, or a pledge that ended or was declined)
        are held to the other conditions as $0 members instead of being denied; a lock on the campaign's $0 tier does
        this without it.
    :param public_after: early access: the rule applies until this moment, and from it on everyone may see what the
        lock guards (a date, a datetime, or an ISO string; without a time zone it is UTC).
    :param combine: ``"all"`` conditions must hold, or ``"any"`` one of them.
    :raises ValueError: on a bad value, naming it.
    """
    if isinstance(tiers, str):
        raise ValueError("tiers must be a list of tier titles or ids; use tier= for one")
    tier_refs = ([tier] if tier is not None else []) + list(tiers)
    return LockRule.from_dict(
        {
            "min_cents": min_cents,
            "tier_ids": tier_refs,
            "tier_match": _TIER_MATCH[bool(exact)],
            "lifetime_cents": lifetime_cents,
            "patron_since_before": patron_since_before,
            "drip_months": drip_months,
            "patrons_at_publish": patrons_at_publish,
            "free_members": free_members,
            "public_after": public_after,
            "combine": combine,
            "enabled": enabled,
        }
    )


_TIER_MATCH: dict[bool, TierMatch] = {False: "or_higher", True: "exact"}


def unknown_lock(name: str, known: str) -> UnknownLockError:
    """The error for a lock name nobody declared or made; ``known`` lists the names that exist."""
    return UnknownLockError(
        f"no lock named {name!r} is declared (declared: {known}). Declare it with "
        f"patronlock.lock({name!r}, ...), make it on the settings page, or use a one-off rule such as "
        f"@locked(tier='Gold')."
    )


class LockRegistry:
    """The named locks declared on one :class:`~flask_patronlock.PatronLock` extension."""

    def __init__(self) -> None:
        self._locks: dict[str, Lock] = {}

    def add(self, lock: Lock) -> Lock:
        """Declare ``lock``. Declaring the same name again with a different rule is an error (two places in the code
        would disagree about what the lock means).

        :raises ValueError: on a one-off lock or a conflicting declaration.
        """
        if lock.name is None or not lock.name.strip():
            raise ValueError("a declared lock needs a name")
        if len(lock.name) > 100:
            raise ValueError("a lock name may be at most 100 characters")
        existing = self._locks.get(lock.name)
        if existing is not None and existing != lock:
            raise ValueError(f"lock {lock.name!r} is already declared with a different rule or description")
        self._locks[lock.name] = lock
        return lock

    def get(self, name: str) -> Lock:
        """The lock declared as ``name``.

        :raises UnknownLockError: naming the declared locks.
        """
        try:
            return self._locks[name]
        except KeyError:
            known = ", ".join(sorted(self._locks)) or "none"
            raise unknown_lock(name, known) from None

    def __contains__(self, name: object) -> bool:
        return name in self._locks

    def __iter__(self) -> Iterator[Lock]:
        return iter(list(self._locks.values()))

    def __len__(self) -> int:
        return len(self._locks)


class Declarations:
    """Everything a :class:`~flask_patronlock.PatronLock` was told in code, filled by its registering methods
    (:meth:`~flask_patronlock.PatronLock.lock`, :meth:`~flask_patronlock.PatronLock.admin_loader`, ...)."""

    def __init__(self) -> None:
        #: the named locks.
        self.locks = LockRegistry()
        #: whether a signed-in user is an admin of the site (admins bypass every lock).
        self.admin_loader: Callable[[Any], bool] | None = None
        #: add-ons registered in code without an app: installed on every app initialised afterwards.
        self.addons: list[Any] = []
        # Only this callback ever lets an e-mail address link a patron to a local user (sync matching, auto-linking
        # at Log in with Patreon): it answers with the users whose address the host itself verified.
        self.verified_users_by_email: EmailFinder | None = None
        # Host callbacks for Log in with Patreon (functions, never an app): see PatronLock.user_creator and
        # PatronLock.user_by_email.
        self.user_creator: Callable[[UserSnapshot], Any] | None = None
        self.user_by_email: Callable[[str], Any] | None = None

    def vouches_for(self, email: str, user_id: str) -> bool:
        """Whether the host's ``verified_users_by_email`` callback says local user ``user_id`` verified ``email``."""
        finder = self.verified_users_by_email
        if finder is None or not email:
            return False
        key = email.strip().lower()
        found = finder([key])
        return any(k.strip().lower() == key and v is not None and str(v) == str(user_id) for k, v in found.items())
