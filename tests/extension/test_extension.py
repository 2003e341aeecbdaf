"""PatronLock construction: init_app, app factories, two apps, config defaults, clear errors."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import inspect

from flask_patronlock import ConfigurationError, PatronLock
from flask_patronlock.config import KEYS, as_list, require
from flask_patronlock.state import get_state

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_registers_in_extensions_and_keeps_no_app(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    state = app.extensions["patronlock"]
    assert state.app is app
    assert not any(isinstance(v, Flask) for v in vars(state.extension).values())


def test_double_registration_is_an_error(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    with pytest.raises(RuntimeError, match="already been registered"):
        PatronLock(app, db=get_state(app).db)


def test_app_factory_and_two_apps(db_url: str, tmp_path: Path) -> None:
    db = SQLAlchemy()
    patronlock = PatronLock(db=db)
    apps = []
    for i in range(2):
        app = Flask(f"factory_{i}")
        app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path / f'app{i}.db'}"
        app.config["PATRONLOCK_CAMPAIGN_ID"] = f"c{i}"
        db.init_app(app)
        patronlock.init_app(app)
        apps.append(app)
    for i, app in enumerate(apps):
        with app.app_context():
            db.create_all()
            assert patronlock.state.app is app
            assert patronlock.state.campaign_id() == f"c{i}"
            assert "patronlock_patrons" in inspect(patronlock.store.engine).get_table_names()
    # the two apps share the db's metadata, hence one set of tables, but have separate stores and engines
    assert get_state(apps[0]).tables is get_state(apps[1]).tables
    assert get_state(apps[0]).store is not get_state(apps[1]).store
    for app in apps:
        with app.app_context():
            db.engine.dispose()


def test_db_taken_from_registered_sqlalchemy(tmp_path: Path) -> None:
    app = Flask("implicit_db")
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path / 'x.db'}"
    db = SQLAlchemy(app)
    PatronLock(app)
    assert get_state(app).db is db


def test_missing_db_says_how_to_fix() -> None:
    with pytest.raises(ConfigurationError, match=r"PatronLock\(app, db=db\)"):
        PatronLock(Flask("nodb"))


def test_outside_app_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="init_app"):
        get_state(Flask("unregistered"))


def test_defaults_are_set_with_setdefault(make_app: Callable[..., Flask]) -> None:
    app = make_app(PATRONLOCK_SYNC_INTERVAL=60)
    assert app.config["PATRONLOCK_SYNC_INTERVAL"] == 60  # the app's own value wins
    assert app.config["PATRONLOCK_API_BASE_URL"] == "https://www.patreon.com"
    assert app.config["PATRONLOCK_WEBHOOK_SECRETS"] == []
    other = make_app()
    other.config["PATRONLOCK_WEBHOOK_SECRETS"].append("x")
    assert app.config["PATRONLOCK_WEBHOOK_SECRETS"] == []  # no shared mutable default
    assert all(k.name.startswith("PATRONLOCK_") for k in KEYS)


def test_a_configured_clock_is_the_one_every_decision_reads(make_app: Callable[..., Flask]) -> None:
    from datetime import UTC, datetime, timedelta

    from flask_patronlock.data import PatronData

    moments = [datetime(2027, 1, 4, 12, 0, tzinfo=UTC)]
    app = make_app(PATRONLOCK_CLOCK=lambda: moments[-1])
    with app.app_context():
        assert get_state().store.clock() == moments[-1]
        moments.append(moments[-1] + timedelta(days=31))  # the demo's "advance the clock a month"
        assert get_state().store.clock() == PatronData(get_state()).now() == datetime(2027, 2, 4, 12, 0, tzinfo=UTC)
    with pytest.raises(ConfigurationError, match="PATRONLOCK_CLOCK must be a callable"):
        make_app(PATRONLOCK_CLOCK="2027-01-04")


def test_missing_key_is_reported_when_needed(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    with app.app_context(), pytest.raises(ConfigurationError, match="PATRONLOCK_CLIENT_ID is not set, but syncing"):
        get_state().client(purpose="syncing")
    with pytest.raises(KeyError):
        require({}, "NOT_A_KEY", "x")


def test_as_list_accepts_env_style_strings() -> None:
    assert as_list("a, b,,c", "K") == ["a", "b", "c"]
    assert as_list(["a"], "K") == ["a"]
    assert as_list(None, "K") == []
    with pytest.raises(ConfigurationError, match="K must be a list"):
        as_list(3, "K")


def test_every_key_is_documented_once() -> None:
    text = (DOCS / "config.rst").read_text()
    documented = re.findall(r"^\.\. py:data:: (PATRONLOCK_\w+)", text, flags=re.M)
    assert sorted(documented) == sorted(k.name for k in KEYS)


def test_check_command(make_app: Callable[..., Flask]) -> None:
    app = make_app(PATRONLOCK_CLIENT_ID="id")
    result = app.test_cli_runner().invoke(args=["patronlock", "check"])
    assert result.exit_code == 1
    assert "ok       PATRONLOCK_CLIENT_ID" in result.output
    assert "missing  PATRONLOCK_CLIENT_SECRET" in result.output
    assert "ok       tables" in result.output


def test_check_command_names_columns_an_earlier_version_did_not_make(make_app: Callable[..., Flask]) -> None:
    app = make_app(PATRONLOCK_CLIENT_ID="id")
    with app.app_context(), get_state(app).store.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE patronlock_patrons DROP COLUMN access_policy")
    result = app.test_cli_runner().invoke(args=["patronlock", "check"])
    assert result.exit_code == 1
    assert "missing  columns patronlock_patrons.access_policy" in result.output
    assert "ok       tables" not in result.output


def test_migrate_autogenerate_sees_the_tables(tmp_path: Path) -> None:
    """Flask-Migrate's autogenerate compares db.metadata with the database: our tables must show up as new."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    app = Flask("migrate")
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path / 'm.db'}"
    db = SQLAlchemy(app)
    PatronLock(app, db=db)
    with app.app_context(), db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), db.metadata)
        added = {op[1].name for op in diff if op[0] == "add_table"}
        db.engine.dispose()
    assert {t.name for t in get_state(app).tables.all()} <= added
