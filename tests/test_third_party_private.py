"""Private attributes of other libraries that flask-patronlock relies on, each pinned as it is used.

An upgrade of Flask-Login, Flask-SQLAlchemy, Flask-WTF, SQLAlchemy or Werkzeug that renames or changes one of them
fails here, by name, instead of slowing a page view down or quietly changing what gets exempted or stored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, Flask, current_app, g, request, session
from flask_login import LoginManager, UserMixin, current_user, login_user
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy.dialects import sqlite

from flask_patronlock.extension import _engine_of


class _User(UserMixin):
    def __init__(self, user_id: str) -> None:
        self.id = user_id


def test_flask_login_caches_the_current_user_in_g_login_user() -> None:
    """viewers.py reads ``g._login_user`` to find the user Flask-Login loaded, without loading one."""
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "test"
    manager = LoginManager(app)
    loads: list[str] = []

    @manager.user_loader
    def load(user_id: str) -> _User:
        loads.append(user_id)
        return _User(user_id)

    with app.test_request_context():
        assert "_login_user" not in vars(g)  # nothing loaded yet: reading g must not load it
        login_user(_User("u1"))
        assert vars(g)["_login_user"].get_id() == "u1"
        assert vars(g)["_login_user"] is current_user._get_current_object()
    with app.test_request_context():
        assert current_user.is_anonymous
        assert vars(g)["_login_user"] is current_user._get_current_object()  # the anonymous user is cached too
    assert loads == []


def test_the_proxies_getters_bound_at_import_resolve_at_each_call() -> None:
    """state.py and viewers.py bind ``<proxy>._get_current_object`` once, at import, outside any context."""
    getters: dict[str, Any] = {
        "app": current_app._get_current_object,  # type: ignore[attr-defined]
        "g": g._get_current_object,
        "request": request._get_current_object,  # type: ignore[attr-defined]
        "session": session._get_current_object,  # type: ignore[attr-defined]
    }
    for name in ("one", "two"):
        app = Flask(name)
        app.config["SECRET_KEY"] = "test"
        with app.test_request_context(f"/{name}"):
            assert getters["app"]() is app
            assert getters["g"]() is g._get_current_object()
            assert getters["request"]().path == f"/{name}"
            assert getters["session"]() is session._get_current_object()  # type: ignore[attr-defined]


def test_flask_sqlalchemy_keeps_each_apps_engines_in_app_engines() -> None:
    """extension.py reaches an app's engine outside an app context through ``db._app_engines[app][None]``."""
    db = SQLAlchemy()
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite://"
    db.init_app(app)
    assert app in db._app_engines
    with app.app_context():
        engine = db.engine
    assert db._app_engines[app][None] is engine
    assert _engine_of(db, app) is engine  # and _engine_of takes it from there, with no app context


def test_flask_wtf_lists_exempt_blueprints_in_exempt_blueprints() -> None:
    """webhooks.py exempts its blueprint once, seeing in ``csrf._exempt_blueprints`` whether it already is: a set of
    the Blueprint objects since Flask-WTF 1.2 (of names before)."""
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "test"
    csrf = CSRFProtect(app)
    blueprint = Blueprint("patronlock_webhooks_probe", __name__)

    @blueprint.post("/hook")
    def hook() -> str:
        return "ok"

    assert blueprint not in csrf._exempt_blueprints
    csrf.exempt(blueprint)
    assert blueprint in csrf._exempt_blueprints
    app.register_blueprint(blueprint)
    assert app.test_client().post("/hook").status_code == 200  # the exemption is what that set holds


def test_sqlalchemy_types_cache_their_bind_processor() -> None:
    """store.py and webhooks.py write SQLite rows with each column type's ``_cached_bind_processor(dialect)``."""
    dialect = sqlite.dialect()
    moment = datetime(2026, 1, 2, 3, 4, 5)
    process = sa.DateTime()._cached_bind_processor(dialect)
    assert process is not None  # the dialect's own DateTime's, not the generic type's (which has none)
    assert process(moment) == "2026-01-02 03:04:05.000000"
    column_type = sa.DateTime()
    assert column_type._cached_bind_processor(dialect) is column_type._cached_bind_processor(dialect)  # cached
    assert sa.Integer()._cached_bind_processor(dialect) is None  # no processing: the value goes as it is


def test_sqlalchemy_dialects_hold_a_custom_json_serializer_in_json_serializer() -> None:
    """store.py writes JSON itself only when the engine has no ``json_serializer`` of its own."""
    assert getattr(sa.create_engine("sqlite://").dialect, "_json_serializer", "missing") is None

    def custom(value: Any) -> str:
        return "custom"

    assert sa.create_engine("sqlite://", json_serializer=custom).dialect._json_serializer is custom  # type: ignore[attr-defined]
