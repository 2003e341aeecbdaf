"""Shared fixtures: an app factory, a database on SQLite (always) and on PostgreSQL (when configured).

``PATRONLOCK_TEST_POSTGRES_URL`` (e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/test``) turns on the
PostgreSQL half of every ``db_url``-parametrised test; ``.ci/run`` sets it, so CI always runs both.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData, create_engine, text
from sqlalchemy.engine import make_url

from flask_patronlock import PatronLock
from flask_patronlock.insight import flush_banner_views
from flask_patronlock.state import get_state

POSTGRES_URL = os.environ.get("PATRONLOCK_TEST_POSTGRES_URL")
REDIS_URL = os.environ.get("PATRONLOCK_TEST_REDIS_URL")


def _backends() -> list[Any]:
    return [
        pytest.param("sqlite", id="sqlite"),
        pytest.param(
            "postgres",
            id="postgres",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(not POSTGRES_URL, reason="PATRONLOCK_TEST_POSTGRES_URL is not set"),
            ],
        ),
    ]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """``PATRONLOCK_TEST_POSTGRES_URL`` narrowed to a schema of this test session's own, so that several test runs
    (CI and developers, or parallel workers) can share one PostgreSQL database without dropping each other's tables."""
    if not POSTGRES_URL:
        pytest.skip("PATRONLOCK_TEST_POSTGRES_URL is not set")
    schema = f"patronlock_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    yield url.render_as_string(hide_password=False)
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=_backends())
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL: a SQLite file, or this session's PostgreSQL schema with our tables dropped."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    url: str = request.getfixturevalue("postgres_url")
    _drop_patronlock_tables(url)
    yield url
    _drop_patronlock_tables(url)


#: Tables a test may create: ours, tests' own, and the example add-ons' (example_site/addons).
_TEST_TABLE_PREFIXES = ("patronlock_", "test_", "welcome_outbox_", "supporters_wall_")


def _drop_patronlock_tables(url: str) -> None:
    engine = create_engine(url)
    meta = MetaData()
    meta.reflect(engine)  # reflects the schema on the search_path only
    tables = [t for t in meta.sorted_tables if t.name.startswith(_TEST_TABLE_PREFIXES)]
    with engine.begin() as conn:
        for table in reversed(tables):
            table.drop(conn)
    engine.dispose()


@pytest.fixture
def make_app(db_url: str) -> Iterator[Callable[..., Flask]]:
    """An app factory: ``make_app(**config)`` -> a Flask app with Flask-SQLAlchemy and PatronLock, tables created."""
    made: list[tuple[Flask, SQLAlchemy]] = []

    def factory(**config: Any) -> Flask:
        app = Flask(f"test_app_{len(made)}")
        app.config.update(
            TESTING=True,
            SECRET_KEY="test-secret",
            SQLALCHEMY_DATABASE_URI=db_url,
            PATRONLOCK_STRICT_SIGNALS=True,
        )
        app.config.update(config)
        db = SQLAlchemy()
        db.init_app(app)
        PatronLock(app, db=db)
        with app.app_context():
            db.create_all()
        made.append((app, db))
        return app

    yield factory
    for app, db in made:
        # banner views a page view queued: written now, not by a timer after the tables are gone; only this factory's
        # apps (an app a test made and disposed itself would open a new connection that nobody closes)
        flush_banner_views(get_state(app))
        with app.app_context():
            db.engine.dispose()


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    """A test app on a fresh database."""
    return make_app()


@pytest.fixture
def app_ctx(app: Flask) -> Iterator[Flask]:
    """``app`` with an app context pushed."""
    with app.app_context():
        yield app


@pytest.fixture
def client(app: Flask) -> Any:
    """Flask's test client for ``app``."""
    return app.test_client()


@pytest.fixture(autouse=True)
def _no_banner_view_timer_outlives_its_test() -> Iterator[None]:
    """Banner views a test's page views queued and nobody flushed are dropped when the test ends, their timer
    cancelled: otherwise the timer writes seconds later through an engine the test already disposed, opening a
    connection nobody closes (psycopg then warns when it is collected, in whichever test runs then)."""
    yield
    from flask_patronlock import insight

    with insight._recorders_lock:
        recorders = list(insight._recorders.values())
    for recorder in recorders:
        with recorder.writing, recorder.lock:
            if recorder.timer is not None:
                recorder.timer.cancel()
            recorder.timer = None
            recorder.pending = []
