"""What an add-on (or a site's own code) may read and write beside flask-patronlock: :class:`PatronData`.

It is the narrow, documented way in: the database engine and flask-patronlock's tables (for an add-on's own SQL and
its own tables), the stored patrons, the campaign's tiers, the creator's settings and the clock every decision uses.
It replaces reaching through ``get_state(app).store.engine``: the per-app state object is internal and may change
between releases; this may not without a deprecation.

Get one with :func:`patron_data` (``patron_data(app)`` in a signal receiver, which gets the app as its first
argument and may run outside any request) or from :attr:`AddonHooks.data <flask_patronlock.addons.AddonHooks.data>`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .patron import Patron
from .state import PatronLockState, get_state
from .store import row_to_patron

if TYPE_CHECKING:
    from flask import Flask
    from sqlalchemy import Engine, MetaData

    from .models import Tables
    from .patreon.types import TierSnapshot
    from .policy import PolicySettings

__all__ = ["PatronData", "patron_data"]


class PatronData:
    """flask-patronlock's data of one app, for add-ons. Cheap to make; holds nothing but the app's state."""

    __slots__ = ("_state",)

    def __init__(self, state: PatronLockState) -> None:
        self._state = state

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine flask-patronlock's tables live on (the host's Flask-SQLAlchemy engine). Write with
        ``with data.engine.begin() as conn:``; read with ``data.engine.connect()``."""
        return self._state.store.engine

    @property
    def metadata(self) -> MetaData:
        """The host's metadata: put an add-on's own tables on it (prefixed with the add-on's name), so
        ``db.create_all()`` and Flask-Migrate handle them like the site's own."""
        return self._state.db.metadata

    @property
    def tables(self) -> Tables:
        """flask-patronlock's tables (``tables.patrons``, ``tables.accounts``, ``tables.events`` ...), to read with
        SQL. Write patrons only through flask-patronlock (a sync, a webhook): it is their single writer."""
        return self._state.tables

    def now(self) -> datetime:
        """The current time as every decision sees it (UTC, aware; a test's or the sandbox's clock when set)."""
        return self._state.store.clock()

    def tiers(self) -> Mapping[str, TierSnapshot]:
        """The campaign's tiers by id, from the cached settings (no query while the settings version is unchanged)."""
        return self._state.settings.current().tiers

    def policy(self) -> PolicySettings:
        """The creator's grace policies as the settings page stores them (cached)."""
        return self._state.settings.current().policy

    def campaign_id(self) -> str | None:
        """The campaign the site follows: the one chosen on the settings page, else ``PATRONLOCK_CAMPAIGN_ID``."""
        return self._state.campaign_id_or_none()

    def patron(self, member_id: str) -> Patron | None:
        """The stored patron with Patreon member id ``member_id``, or ``None``."""
        return self._state.store.get_patron(member_id)

    def patron_for_user(self, user_id: Any) -> Patron | None:
        """The stored patron of the local user ``user_id`` (through their linked Patreon account) in the campaign the
        site follows (:meth:`campaign_id`, as a page view reads it), or ``None``."""
        return self._state.store.patron_for_user(str(user_id), self._state.campaign_id_or_none())

    def patron_from_row(self, row: Mapping[Any, Any], local_user_id: Any = None) -> Patron:
        """A :class:`~flask_patronlock.patron.Patron` from a row mapping of ``tables.patrons`` read with your own SQL
        (``conn.execute(...).mappings()``); ``local_user_id`` (or a ``local_user_id`` column) fills the linked user."""
        return row_to_patron(row, None if local_user_id is None else str(local_user_id))


def patron_data(app: Flask | None = None) -> PatronData:
    """The :class:`PatronData` of ``app`` (default: the current app).

    :raises RuntimeError: flask-patronlock is not initialised on the app.
    """
    return PatronData(get_state(app))
