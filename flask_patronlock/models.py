"""flask-patronlock's tables, defined on the host application's Flask-SQLAlchemy ``db.metadata``.

They are SQLAlchemy Core tables (not ORM classes) so that :mod:`flask_patronlock.store` can write a page of 1,000
members in a handful of statements. Because they live on the host's metadata, ``db.create_all()`` creates them and
Flask-Migrate's autogenerate picks them up like the app's own models. Every table is prefixed ``patronlock_``.

Datetimes are stored as UTC and always read back timezone-aware, on SQLite too.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    func,
    inspect,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.sql import ColumnElement
from sqlalchemy.types import JSON, TypeDecorator

from .dbutil import CHUNK

# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
_BigId = BigInteger().with_variant(Integer(), "sqlite")
#: the largest row id a table holds (a BIGINT; SQLite's INTEGER is 64-bit too).
MAX_ROW_ID = 2**63 - 1


def is_row_id(value: int) -> bool:
    """Whether ``value`` (a run id from a URL or the command line, say) can be a row id: bigger ones overflow the
    database driver instead of finding nothing."""
    return 0 < value <= MAX_ROW_ID


class UTCDateTime(TypeDecorator[datetime]):
    """A datetime that must be timezone-aware going in and is always UTC-aware coming out."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("flask-patronlock stores only timezone-aware datetimes; got a naive one")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    # SQLite keeps datetimes as text. The two methods below give it one C-level conversion each way (isoformat /
    # fromisoformat) instead of the decorator's call into SQLite's DATETIME processors (a %-format of a dict going
    # in, a second Python call coming out): a sync writes and reads ~10 of these per member, 100,000 members a run.
    # What is stored is byte for byte what SQLite's DATETIME stores ("YYYY-MM-DD HH:MM:SS.ffffff", in UTC), so
    # existing rows, SQL comparisons and the other paths stay interchangeable (tests/store/test_models.py checks both).

    def bind_processor(self, dialect: Dialect) -> Any:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            tz = value.tzinfo
            if tz is None:
                raise ValueError("flask-patronlock stores only timezone-aware datetimes; got a naive one")
            if tz is not UTC:
                value = value.astimezone(UTC)
            # "YYYY-MM-DD HH:MM:SS.ffffff+00:00" without its offset (cheaper than replace(tzinfo=None) first)
            return value.isoformat(" ", "microseconds")[:26]

        return process

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)
        slow = super().result_processor(dialect, coltype)
        fromisoformat = datetime.fromisoformat

        def process(value: Any) -> datetime | None:
            if value is None:
                return None
            if type(value) is str and len(value) == 26:  # "YYYY-MM-DD HH:MM:SS.ffffff", as written above
                try:
                    # parsed as UTC in C (a fraction of what parsing and then replace(tzinfo=UTC) costs)
                    return fromisoformat(value + "+00:00")
                except ValueError:
                    pass
            return slow(value) if slow is not None else value  # anything else: SQLAlchemy's own parsing

        return process


class IdList(TypeDecorator[tuple[str, ...]]):
    """A short tuple of Patreon ids stored as comma-separated text (cheaper than JSON on the hot write path)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: tuple[str, ...] | list[str] | None, dialect: Dialect) -> str:
        if not value:
            return ""
        for item in value:
            if "," in item:
                raise ValueError(f"a Patreon id may not contain a comma: {item!r}")
        return ",".join(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> tuple[str, ...]:
        return tuple(value.split(",")) if value else ()


def schema_gaps(engine: Engine, tables: Tables) -> tuple[list[str], list[str]]:
    """What the database lacks of ``tables``: the missing tables' names, and ``table.column`` for each column missing
    from a table that exists (one an earlier version created: ``db.create_all()`` leaves existing tables be)."""
    inspector = inspect(engine)
    existing = set(inspector.get_table_names())
    missing = [t.name for t in tables.all() if t.name not in existing]
    columns = []
    for table in tables.all():
        if table.name in existing:
            present = {column["name"] for column in inspector.get_columns(table.name)}
            columns += [f"{table.name}.{c.name}" for c in table.columns if c.name not in present]
    return missing, columns


@dataclass(frozen=True)
class Tables:
    """The flask-patronlock tables of one metadata."""

    accounts: Table
    patrons: Table
    tiers: Table
    lock_overrides: Table
    settings: Table
    events: Table
    webhook_deliveries: Table
    sync_runs: Table
    leases: Table
    # -- reconcile runs and webhooks (issue 5) --
    held_revocations: Table
    # -- private feeds --
    feed_tokens: Table
    # -- comps: access the creator grants by hand --
    comps: Table
    # -- insight: which lock's banner each viewer was shown, at most once a day --
    banner_views: Table
    # -- locks creators make on the settings page (issue 17) --
    locks: Table

    def all(self) -> list[Table]:
        """Every table, in creation order."""
        return [getattr(self, f.name) for f in fields(self)]


_cache: weakref.WeakKeyDictionary[MetaData, Tables] = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


def tables_for(metadata: MetaData) -> Tables:
    """The flask-patronlock tables on ``metadata``, defined on first call (so two apps sharing a ``db`` share them)."""
    with _cache_lock:
        tables = _cache.get(metadata)
        if tables is None:
            tables = _define(metadata)
            _cache[metadata] = tables
        return tables


def _timestamps() -> list[Column[Any]]:
    return [
        Column("created_at", UTCDateTime, nullable=False, default=lambda: datetime.now(UTC)),
        Column("updated_at", UTCDateTime, nullable=False, default=lambda: datetime.now(UTC),
               onupdate=lambda: datetime.now(UTC)),
    ]


def _define(metadata: MetaData) -> Tables:
    accounts = Table(
        "patronlock_accounts",
        metadata,
        Column("id", _BigId, primary_key=True, autoincrement=True),
        # The host app's user id, as text: flask-patronlock does not know the host's user model or its id type.
        Column("user_id", String(64), nullable=False, unique=True),
        Column("patreon_user_id", String(64), nullable=False, unique=True),
        Column("access_token", LargeBinary, nullable=True),  # MultiFernet ciphertext
        Column("refresh_token", LargeBinary, nullable=True),  # MultiFernet ciphertext
        Column("token_expires_at", UTCDateTime, nullable=True),
        Column("scope", String(255), nullable=False, default=""),
        Column("needs_reauth", Boolean, nullable=False, default=False),
        Column("last_status_refresh_at", UTCDateTime, nullable=True),
        # How the link was made: "oauth" (the Patreon account's owner consented on Patreon: connect, or log in with
        # Patreon) or "email" (a reconcile run matched an address the host vouched for; no consent, no tokens). Only
        # an "oauth" link lets Log in with Patreon into the account. NULL: made before origins were recorded.
        Column("origin", String(16), nullable=True),
        *_timestamps(),
    )
    patrons = Table(
        "patronlock_patrons",
        metadata,
        Column("member_id", String(64), primary_key=True),
        Column("campaign_id", String(64), nullable=True),
        Column("patreon_user_id", String(64), nullable=True),
        Column("email", String(320), nullable=True),
        Column("email_verified", Boolean, nullable=True),
        Column("full_name", String(255), nullable=False, default=""),
        Column("patron_status", String(32), nullable=True),
        Column("last_charge_status", String(32), nullable=True),
        Column("last_charge_date", UTCDateTime, nullable=True),
        Column("next_charge_date", UTCDateTime, nullable=True),
        Column("entitled_cents", Integer, nullable=False, default=0),
        Column("entitled_tier_ids", IdList, nullable=False, default=()),
        Column("will_pay_cents", Integer, nullable=False, default=0),
        Column("lifetime_cents", BigInteger, nullable=False, default=0),
        Column("pledge_start", UTCDateTime, nullable=True),
        Column("pledge_cadence", Integer, nullable=True),
        Column("is_free_trial", Boolean, nullable=False, default=False),
        Column("is_gifted", Boolean, nullable=False, default=False),
        Column("is_follower", Boolean, nullable=False, default=False),
        Column("observed_at", UTCDateTime, nullable=False),
        Column("source", String(16), nullable=False),
        Column("last_entitled_cents", Integer, nullable=False, default=0),
        Column("last_entitled_tier_ids", IdList, nullable=False, default=()),
        Column("paid_through", UTCDateTime, nullable=True),
        Column("declined_since", UTCDateTime, nullable=True),
        Column("refunded_at", UTCDateTime, nullable=True),
        Column("missing_since", UTCDateTime, nullable=True),
        Column("missing_runs", Integer, nullable=False, default=0),
        Column("held_run_id", BigInteger, nullable=True),
        # -- reconcile runs and webhooks (issue 5): the entitlement last announced, and when it next may change --
        Column("access", Boolean, nullable=True),
        Column("access_until", UTCDateTime, nullable=True),
        Column("access_policy", String(32), nullable=True),
        Column("updated_at", UTCDateTime, nullable=False),
        # a page view: local user -> account -> patron by (patreon_user_id, campaign_id)
        Index("ix_patronlock_patrons_user_campaign", "patreon_user_id", "campaign_id"),
        Index("ix_patronlock_patrons_status", "patron_status"),
        # a plain index: an expression index (lower(email)) makes Flask-Migrate warn on every autogenerate on SQLite
        Index("ix_patronlock_patrons_email", "email"),
        Index("ix_patronlock_patrons_access_until", "access", "access_until"),
    )
    tiers = Table(
        "patronlock_tiers",
        metadata,
        Column("id", String(64), primary_key=True),
        Column("campaign_id", String(64), nullable=True, index=True),
        Column("title", String(255), nullable=False, default=""),
        Column("amount_cents", Integer, nullable=False, default=0),
        Column("published", Boolean, nullable=False, default=True),
        Column("description", Text, nullable=False, default=""),
        Column("url", String(512), nullable=True),
        Column("patron_count", Integer, nullable=True),
        Column("updated_at", UTCDateTime, nullable=False, default=lambda: datetime.now(UTC)),
    )
    lock_overrides = Table(
        "patronlock_lock_overrides",
        metadata,
        Column("name", String(100), primary_key=True),
        Column("rule", JSON, nullable=False),
        Column("updated_by", String(64), nullable=True),
        Column("updated_at", UTCDateTime, nullable=False, default=lambda: datetime.now(UTC)),
    )
    settings = Table(
        "patronlock_settings",
        metadata,
        Column("key", String(100), primary_key=True),
        Column("value", JSON, nullable=True),
        # bumped on every write to any setting or lock override: workers compare one integer, not the whole table
        Column("version", BigInteger, nullable=False, default=0),
        Column("updated_by", String(64), nullable=True),
        Column("updated_at", UTCDateTime, nullable=False, default=lambda: datetime.now(UTC)),
    )
    events = Table(
        "patronlock_events",
        metadata,
        Column("id", _BigId, primary_key=True, autoincrement=True),
        Column("created_at", UTCDateTime, nullable=False),
        Column("observed_at", UTCDateTime, nullable=True),
        Column("member_id", String(64), nullable=True),
        Column("patreon_user_id", String(64), nullable=True),
        Column("user_id", String(64), nullable=True),
        Column("kind", String(40), nullable=False),
        Column("source", String(16), nullable=False),
        Column("run_id", BigInteger, nullable=True),
        Column("events", String(255), nullable=False, default=""),
        Column("changes", JSON, nullable=True),
        Column("detail", JSON, nullable=True),
        Index("ix_patronlock_events_member", "member_id", "id"),
        Index("ix_patronlock_events_user", "user_id", "id"),
        Index("ix_patronlock_events_created", "created_at"),
    )
    webhook_deliveries = Table(
        "patronlock_webhook_deliveries",
        metadata,
        Column("id", _BigId, primary_key=True, autoincrement=True),
        # sha256 of the raw body (what the signature covers; not the unsigned event header): the same delivery twice is
        # one row
        Column("dedupe_key", String(64), nullable=False, unique=True),
        Column("event", String(64), nullable=False),
        Column("member_id", String(64), nullable=True),
        Column("status", String(16), nullable=False, default="pending"),
        Column("attempts", Integer, nullable=False, default=0),
        Column("error", Text, nullable=True),
        Column("body", LargeBinary, nullable=False),
        Column("received_at", UTCDateTime, nullable=False),
        Column("next_attempt_at", UTCDateTime, nullable=True),
        Column("processed_at", UTCDateTime, nullable=True),
        Index("ix_patronlock_webhook_deliveries_status", "status", "next_attempt_at"),
    )
    sync_runs = Table(
        "patronlock_sync_runs",
        metadata,
        Column("id", _BigId, primary_key=True, autoincrement=True),
        Column("trigger", String(16), nullable=False, default="manual"),
        Column("status", String(16), nullable=False, default="running"),
        Column("complete", Boolean, nullable=False, default=False),
        Column("reason", Text, nullable=True),
        Column("pages", Integer, nullable=False, default=0),
        Column("members_seen", Integer, nullable=False, default=0),
        Column("total_reported", Integer, nullable=True),
        Column("changed", Integer, nullable=False, default=0),
        Column("revoked", Integer, nullable=False, default=0),
        Column("held", Integer, nullable=False, default=0),
        Column("started_at", UTCDateTime, nullable=False),
        Column("finished_at", UTCDateTime, nullable=True),
        Column("decided_at", UTCDateTime, nullable=True),
        Column("decided_by", String(64), nullable=True),
        # -- issue 5: counts that explain the run (API requests, deferred, dropped, missing marks ...) --
        Column("detail", JSON, nullable=True),
        Index("ix_patronlock_sync_runs_status", "status"),
    )
    leases = Table(
        "patronlock_leases",
        metadata,
        Column("name", String(64), primary_key=True),
        Column("holder", String(128), nullable=False),
        Column("acquired_at", UTCDateTime, nullable=False),
        Column("expires_at", UTCDateTime, nullable=False),
    )
    # -- reconcile runs and webhooks (issue 5) ------------------------------------------------------------------------
    held_revocations = Table(
        "patronlock_held_revocations",
        metadata,
        Column("id", _BigId, primary_key=True, autoincrement=True),
        Column("run_id", BigInteger, nullable=False),
        Column("member_id", String(64), nullable=False),
        # "snapshot": a member snapshot whose application would take access away (``snapshot`` holds it);
        # "missing": a missing-from-sync mark of an entitled patron.
        Column("kind", String(16), nullable=False),
        Column("snapshot", JSON, nullable=True),
        Column("observed_at", UTCDateTime, nullable=False),
        Index("ix_patronlock_held_revocations_run", "run_id", "member_id", unique=True),
    )
    # -- private feeds (flask_patronlock.feeds) -----------------------------------------------------------------------
    feed_tokens = Table(
        "patronlock_feed_tokens",
        metadata,
        # one feed token per local user: rotating replaces it, revoking deletes the row
        Column("user_id", String(64), primary_key=True),
        # the token is HMAC(feed key, user id + nonce): the row alone does not give it, the key re-derives it
        Column("nonce", String(32), nullable=False),
        # sha256 of the token (hex): a feed request finds its row by this, never by the token
        Column("token_hash", String(64), nullable=False, unique=True),
        Column("created_at", UTCDateTime, nullable=False),
        Column("last_used_at", UTCDateTime, nullable=True),
        # the rate limit's fixed window: when it started and the requests counted in it
        Column("window_start", UTCDateTime, nullable=True),
        Column("window_hits", Integer, nullable=False, default=0),
        # distinct client addresses (short keyed hashes, never the address) seen since addresses_since
        Column("addresses", JSON, nullable=True),
        Column("addresses_since", UTCDateTime, nullable=True),
        Column("shared_reported_at", UTCDateTime, nullable=True),
    )
    # -- comps (flask_patronlock.comps) -------------------------------------------------------------------------------
    comps = Table(
        "patronlock_comps",
        metadata,
        Column("id", _BigId, primary_key=True, autoincrement=True),
        # who: exactly one of a local user, a Patreon member of the campaign, or a Patreon user (any membership)
        Column("user_id", String(64), nullable=True),
        Column("member_id", String(64), nullable=True),
        Column("patreon_user_id", String(64), nullable=True),
        # what: exactly one of a named lock or a tier (by id)
        Column("lock", String(100), nullable=True),
        Column("tier_id", String(64), nullable=True),
        Column("note", Text, nullable=False, default=""),
        Column("expires_at", UTCDateTime, nullable=True),
        Column("granted_by", String(64), nullable=True),
        Column("granted_source", String(16), nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        # a revoked (or expired) comp keeps its row, for the history; only rows without revoked_at count
        Column("revoked_at", UTCDateTime, nullable=True),
        Column("revoked_by", String(64), nullable=True),
        Column("revoked_source", String(16), nullable=True),
        # what every worker's settings cache reads, and what the scheduler's expiry sweep looks for
        Index("ix_patronlock_comps_open", "revoked_at", "expires_at"),
    )
    # -- insight (flask_patronlock.insight) ---------------------------------------------------------------------------
    banner_views = Table(
        "patronlock_banner_views",
        metadata,
        Column("id", _BigId, primary_key=True, autoincrement=True),
        # the UTC day the banner was first shown to this viewer (midnight): one row per viewer, lock, reason and day
        Column("day", UTCDateTime, nullable=False),
        # the named lock ("" for a one-off rule written in code) and the decision's reason
        Column("lock", String(100), nullable=False),
        Column("reason", String(32), nullable=False),
        # "u:<user id>" for a signed-in user; "a:<keyed hash of the day, address and browser>" for an anonymous one
        Column("viewer", String(80), nullable=False),
        Column("user_id", String(64), nullable=True),
        # the viewer's Patreon user when they had linked one (what a later pledge is matched on)
        Column("patreon_user_id", String(64), nullable=True),
        Column("first_at", UTCDateTime, nullable=False),
        Index("ix_patronlock_banner_views_once", "day", "lock", "reason", "viewer", unique=True),
        Index("ix_patronlock_banner_views_user", "user_id", "day"),
    )

    # A lock a creator made on the settings page; its rule is the lock's row in patronlock_lock_overrides, as for a lock
    # declared in code. A deleted lock keeps its row (deleted_at set): content still naming it stays locked, and the
    # log says why, instead of the name becoming unknown.
    locks = Table(
        "patronlock_locks",
        metadata,
        Column("name", String(100), primary_key=True),
        Column("title", String(100), nullable=False, default=""),
        Column("description", Text, nullable=False, default=""),
        Column("created_by", String(64), nullable=True),
        Column("created_at", UTCDateTime, nullable=False),
        Column("updated_by", String(64), nullable=True),
        Column("updated_at", UTCDateTime, nullable=False),
        Column("deleted_at", UTCDateTime, nullable=True),
    )
    return Tables(
        accounts=accounts,
        patrons=patrons,
        tiers=tiers,
        lock_overrides=lock_overrides,
        settings=settings,
        events=events,
        webhook_deliveries=webhook_deliveries,
        sync_runs=sync_runs,
        leases=leases,
        held_revocations=held_revocations,
        feed_tokens=feed_tokens,
        comps=comps,
        banner_views=banner_views,
        locks=locks,
    )


# -- many ids in one bound parameter (a sync page asks about 1,000 members at a time) ---------------------------------


def in_ids(column: Any, dialect: str, name: str = "ids") -> ColumnElement[bool]:
    """``column IN (ids)`` with the ids bound as ONE parameter ``name`` (pass :func:`ids_value` of the list): on
    SQLite a JSON array read by ``json_each``, on PostgreSQL an array (``= ANY``). Other databases get SQLAlchemy's
    expanding ``IN`` (one parameter per id, rendered at every execution: what this avoids)."""
    if dialect == "sqlite":
        each = func.json_each(bindparam(name)).table_valued("value")
        return column.in_(select(each.c.value))
    if dialect == "postgresql":
        return column == func.any(bindparam(name, type_=postgresql.ARRAY(column.type)))
    return column.in_(bindparam(name, expanding=True))


def ids_chunk(dialect: str) -> int:
    """How many ids one :func:`in_ids` statement takes: a page of a run's members at once where they are bound as one
    parameter (each statement is a round trip and, on SQLite, a moment the GIL is handed to another thread), else
    :data:`~flask_patronlock.dbutil.CHUNK`."""
    return 5000 if dialect in ("sqlite", "postgresql") else CHUNK


def ids_value(ids: Sequence[str], dialect: str) -> Any:
    """The value of :func:`in_ids`'s parameter for ``ids``."""
    return json.dumps(list(ids)) if dialect == "sqlite" else list(ids)
