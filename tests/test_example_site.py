"""The example site runs offline: SQLite and the sandbox mounted in the same process, served for real."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server

from example_site import create_app


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    holder: dict[str, Any] = {}
    server = make_server("127.0.0.1", 0, lambda env, start: holder["app"](env, start), threaded=True)
    base = f"http://127.0.0.1:{server.server_port}"
    app = create_app(
        {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'site.db'}", "PATRONLOCK_STRICT_SIGNALS": True},
        base_url=base,
    )
    holder["app"] = app
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield base, app
    server.shutdown()
    thread.join(5)
    with app.app_context():
        from example_site.app import db

        db.engine.dispose()


def test_anonymous_visitor_sees_free_post_and_banners(site: tuple[str, Any]) -> None:
    base, _ = site
    http = requests.Session()
    index = http.get(base + "/", timeout=10)
    assert index.status_code == 200 and "Welcome to the studio" in index.text
    free = http.get(base + "/posts/welcome", timeout=10)
    assert "Everything else here is for patrons" in free.text
    locked = http.get(base + "/posts/process", timeout=10)
    assert "A look at the palette" in locked.text  # the teaser
    assert "twenty-step process" not in locked.text
    assert 'data-patronlock-reason="anonymous"' in locked.text
    assert locked.headers["Cache-Control"] == "private"
    assert http.get(base + "/downloads/wallpaper.svg", timeout=10).status_code == 403


def test_first_user_is_the_creator_and_others_are_told_to_connect(site: tuple[str, Any]) -> None:
    base, app = site
    creator = requests.Session()
    creator.post(base + "/register", data={"email": "kopi@example.com", "password": "correct horse"}, timeout=10)
    assert "twenty-step process" in creator.get(base + "/posts/process", timeout=10).text  # admin bypass

    visitor = requests.Session()
    page = visitor.post(base + "/register", data={"email": "new@example.com", "password": "correct horse"}, timeout=10)
    assert page.status_code == 200
    locked = visitor.get(base + "/posts/process", timeout=10)
    assert 'data-patronlock-reason="not_linked"' in locked.text
    assert "twenty-step process" not in locked.text
    # the tiers were read from the mounted sandbox through the real client, so "Silver" names a real tier
    from flask_patronlock import get_state

    with app.app_context():
        assert {"Bronze", "Silver", "Gold"} <= {t.title for t in get_state().store.tiers()}


def test_the_sandbox_is_mounted(site: tuple[str, Any]) -> None:
    base, app = site
    state = requests.get(base + "/_patreon/_sandbox/state", timeout=10).json()
    assert app.config["PATRONLOCK_API_BASE_URL"] == base + "/_patreon"
    assert state["campaign_id"] == app.config["PATRONLOCK_CAMPAIGN_ID"]
