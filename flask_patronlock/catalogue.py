"""The campaign's tier catalogue and the settings version: what every worker caches, and when to read it again.

None of this is patron state: tiers are the campaign's catalogue, and the version row only says "something that every
worker caches has changed". Writing them outside :meth:`Store.apply <flask_patronlock.store.Store.apply>` keeps
``apply`` the single writer of patrons. :class:`~flask_patronlock.store.Store` delegates its catalogue methods here;
:class:`~flask_patronlock.settings.SettingsCache` reads the version to know when its cache is stale.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from .dbutil import transaction
from .models import Tables
from .patreon.types import TierSnapshot


class Catalogue:
    """The tier catalogue and the settings version on one engine.

    :param engine: a callable returning the SQLAlchemy engine (looked up when used, as the store's).
    :param tables: the tables from :func:`flask_patronlock.models.tables_for`.
    :param clock: the current time.
    :param settings_changed: called after this catalogue committed a settings-version bump of its own (a tier
        refresh), so this process's settings cache re-reads at once instead of after its check interval.
    """

    def __init__(
        self,
        engine: Callable[[], Engine],
        tables: Tables,
        *,
        clock: Callable[[], datetime],
        settings_changed: Callable[[], None] | None = None,
    ) -> None:
        self._engine = engine
        self.tables = tables
        self.clock = clock
        self.settings_changed = settings_changed

    @property
    def engine(self) -> Engine:
        """The engine in use."""
        return self._engine()

    #: the patronlock_settings row whose ``version`` counts every write to settings, lock overrides and tiers.
    VERSION_KEY = "_version"

    def settings_version(self) -> int:
        """The current settings version (0 before the first write)."""
        s = self.tables.settings
        with self.engine.connect() as conn:
            value = conn.execute(select(s.c.version).where(s.c.key == self.VERSION_KEY)).scalar()
        return int(value or 0)

    def bump_settings_version(self, conn: Connection, *, by: str | None = None) -> int:
        """Add one to the settings version inside ``conn`` (the caller's write transaction); returns the new version.

        Every worker compares this one integer to decide whether its cached settings, overrides and tiers are stale.
        """
        s = self.tables.settings
        now = self.clock()
        if conn.dialect.name in ("postgresql", "sqlite"):
            ins: Any = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(s)
            stmt = (
                ins.values(key=self.VERSION_KEY, value=None, version=1, updated_by=by, updated_at=now)
                .on_conflict_do_update(
                    index_elements=["key"],
                    set_={"version": s.c.version + 1, "updated_by": by, "updated_at": now},
                )
                .returning(s.c.version)
            )
            return int(conn.execute(stmt).scalar_one())
        updated = conn.execute(
            update(s).where(s.c.key == self.VERSION_KEY).values(version=s.c.version + 1, updated_by=by, updated_at=now)
        )
        if not updated.rowcount:
            conn.execute(insert(s).values(key=self.VERSION_KEY, value=None, version=1, updated_by=by, updated_at=now))
        return int(conn.execute(select(s.c.version).where(s.c.key == self.VERSION_KEY)).scalar_one())

    def tiers(self, campaign_id: str | None = None) -> list[TierSnapshot]:
        """The stored tier catalogue (of ``campaign_id`` when given), cheapest first."""
        t = self.tables.tiers
        stmt = select(t).order_by(t.c.amount_cents, t.c.id)
        if campaign_id is not None:
            stmt = stmt.where(t.c.campaign_id == campaign_id)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).mappings().all()
        return [_row_to_tier(row) for row in rows]

    def replace_tiers(self, campaign_id: str, tiers: Sequence[TierSnapshot]) -> bool:
        """Make the stored catalogue of ``campaign_id`` exactly ``tiers`` (what a sync read from Patreon).

        Tiers no longer listed are deleted; the settings version is bumped only when something changed, so every
        worker re-reads the catalogue within ``PATRONLOCK_SETTINGS_CHECK_SECONDS``. Returns whether anything changed.
        """
        t = self.tables.tiers
        wanted = {tier.id: tier for tier in tiers}
        if len(wanted) != len(tiers):
            raise ValueError("replace_tiers got the same tier id twice")
        with transaction(self.engine) as conn:
            stored = {
                row["id"]: row for row in conn.execute(select(t).where(t.c.campaign_id == campaign_id)).mappings()
            }
            now = self.clock()
            changed = False
            gone = [tier_id for tier_id in stored if tier_id not in wanted]
            if gone:
                conn.execute(t.delete().where(t.c.id.in_(gone)))
                changed = True
            for tier in tiers:
                values = _tier_values(tier)
                row = stored.get(tier.id)
                if row is not None and all(row[k] == v for k, v in values.items()):
                    continue
                changed = True
                if row is None:
                    # the id may belong to another campaign's row (a tier moved): replace it
                    conn.execute(t.delete().where(t.c.id == tier.id))
                    conn.execute(insert(t).values(id=tier.id, campaign_id=campaign_id, updated_at=now, **values))
                else:
                    conn.execute(update(t).where(t.c.id == tier.id).values(updated_at=now, **values))
            if changed:
                self.bump_settings_version(conn, by="sync")
            self._record_tiers_checked(conn, campaign_id, now)
        if changed and self.settings_changed is not None:
            self.settings_changed()
        return changed

    #: the ``patronlock_settings`` key prefix whose row's ``updated_at`` says when a campaign's tiers were last read
    #: from Patreon (whether or not they changed). Not a setting: writing it does not bump the settings version.
    TIERS_CHECKED_PREFIX = "tiers-checked:"

    def _record_tiers_checked(self, conn: Connection, campaign_id: str, now: datetime) -> None:
        s = self.tables.settings
        key = (self.TIERS_CHECKED_PREFIX + campaign_id)[:100]
        if not conn.execute(update(s).where(s.c.key == key).values(updated_at=now, updated_by="sync")).rowcount:
            conn.execute(insert(s).values(key=key, value=None, version=0, updated_by="sync", updated_at=now))

    def tiers_checked(self, campaign_id: str) -> tuple[datetime | None, set[str]]:
        """When the tiers of ``campaign_id`` were last read from Patreon (``None``: never) and the stored tier ids."""
        s, t = self.tables.settings, self.tables.tiers
        key = (self.TIERS_CHECKED_PREFIX + campaign_id)[:100]
        with self.engine.connect() as conn:
            at = conn.execute(select(s.c.updated_at).where(s.c.key == key)).scalar()
            ids = set(conn.execute(select(t.c.id).where(t.c.campaign_id == campaign_id)).scalars())
        return at, ids


def _tier_values(tier: TierSnapshot) -> dict[str, Any]:
    return {
        "title": tier.title or "",
        "amount_cents": int(tier.amount_cents),
        "published": bool(tier.published),
        "description": tier.description or "",
        "url": tier.url,
        "patron_count": tier.patron_count,
    }


def _row_to_tier(row: Mapping[Any, Any]) -> TierSnapshot:
    return TierSnapshot(
        id=row["id"],
        title=row["title"] or "",
        amount_cents=int(row["amount_cents"] or 0),
        published=bool(row["published"]),
        description=row["description"] or "",
        url=row["url"],
        patron_count=row["patron_count"],
    )
