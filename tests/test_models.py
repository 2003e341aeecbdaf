"""The column types of flask_patronlock.models: what they store is what SQLAlchemy would store, on every database.

``UTCDateTime`` gives SQLite its own C-level conversions (isoformat going in, fromisoformat coming out) for speed; these
tests hold them to SQLite's DATETIME byte for byte, so rows written before and after, SQL comparisons, and every other
path stay interchangeable.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, insert, select, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.types import DateTime

from flask_patronlock.models import UTCDateTime

SQLITE = sqlite.dialect()
#: what the type did before it had SQLite conversions of its own: the decorator around SQLite's DATETIME.
_REFERENCE_BIND = DateTime(timezone=True).dialect_impl(SQLITE).bind_processor(SQLITE)
_REFERENCE_RESULT = DateTime(timezone=True).dialect_impl(SQLITE).result_processor(SQLITE, None)

aware = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
    )
)


@given(aware)
def test_sqlite_bind_stores_what_sqlites_datetime_stores(value: datetime) -> None:
    process = UTCDateTime().dialect_impl(SQLITE).bind_processor(SQLITE)
    assert process(value) == _REFERENCE_BIND(value.astimezone(UTC).replace(tzinfo=None))


@given(aware)
def test_sqlite_round_trip_is_exact_and_utc_aware(value: datetime) -> None:
    stored = UTCDateTime().dialect_impl(SQLITE).bind_processor(SQLITE)(value)
    back = UTCDateTime().dialect_impl(SQLITE).result_processor(SQLITE, None)(stored)
    assert back == value
    assert back.tzinfo is UTC
    assert back == _REFERENCE_RESULT(stored).replace(tzinfo=UTC)


def test_sqlite_reads_other_stored_forms_like_sqlalchemy_does() -> None:
    """Text written some other way (by hand, an older tool, without microseconds) still reads, through SQLAlchemy's
    own parsing, as UTC."""
    read = UTCDateTime().dialect_impl(SQLITE).result_processor(SQLITE, None)
    assert read("2024-05-01 10:00:00") == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert read("2024-05-01 10:00:00.5") == datetime(2024, 5, 1, 10, 0, 0, 500000, tzinfo=UTC)
    assert read(None) is None


def test_sqlite_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        UTCDateTime().dialect_impl(SQLITE).bind_processor(SQLITE)(datetime(2024, 1, 1))


def test_through_a_real_sqlite_database_and_sql_comparisons() -> None:
    engine = create_engine("sqlite://")
    metadata = MetaData()
    table = Table("t", metadata, Column("id", Integer, primary_key=True), Column("at", UTCDateTime))
    metadata.create_all(engine)
    moments = [datetime(2024, 1, 1, tzinfo=UTC) + timedelta(hours=h, microseconds=h) for h in range(5)]
    plus_two = timezone(timedelta(hours=2))
    with engine.begin() as conn:
        conn.execute(insert(table), [{"id": i, "at": m.astimezone(plus_two)} for i, m in enumerate(moments)])
        # one row as SQLAlchemy's own DATETIME would have written it (a database from before this type's conversions)
        conn.execute(text("INSERT INTO t (id, at) VALUES (99, '2024-01-01 02:30:00.000000')"))
        raw = conn.execute(text("SELECT at FROM t WHERE id = 0")).scalar_one()
        assert raw == "2024-01-01 00:00:00.000000"
        assert conn.execute(select(table.c.at).where(table.c.id == 3)).scalar_one() == moments[3]
        later = conn.execute(
            select(table.c.id).where(table.c.at > datetime(2024, 1, 1, 2, 0, tzinfo=UTC)).order_by(table.c.id)
        ).scalars().all()
        assert later == [2, 3, 4, 99]
        assert conn.execute(select(table.c.at).where(table.c.id == 99)).scalar_one() == datetime(
            2024, 1, 1, 2, 30, tzinfo=UTC
        )


# -- the audit rows' JSON on SQLite's bulk path (flask_patronlock.dbutil) --------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | aware.map(lambda d: d.astimezone(UTC)),
    lambda inner: st.lists(inner, max_size=3).map(tuple) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@given(st.dictionaries(st.text(max_size=12), st.tuples(json_values, json_values), max_size=6))
def test_bulk_json_is_what_the_json_column_stores(changes: dict[str, tuple[object, object]]) -> None:
    """SQLite's bulk insert writes an audit row's changes in one encoder call; it is the text SQLAlchemy's JSON
    column would store for the same changes made JSON-ready first (the path every other database takes)."""
    from sqlalchemy.types import JSON

    from flask_patronlock.dbutil import dumps_json, json_ready

    column = JSON().dialect_impl(SQLITE).bind_processor(SQLITE)
    assert dumps_json(changes) == column(json_ready(changes))
    assert dumps_json(None) == column(None)
