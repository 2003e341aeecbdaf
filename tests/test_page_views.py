"""A page view never calls Patreon, and reads the database at most once: the viewer's link and patron in one query,
none while the worker's viewer cache holds them."""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import requests_mock
from flask import Flask, render_template_string
from lockhelpers import NOW, Site, count_queries, make_site

from flask_patronlock import current_patron, locked, send_locked_file
from flask_patronlock.state import PatronLockState


def _no_patreon(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("a page view tried to reach Patreon")


@pytest.fixture
def site(make_app: Callable[..., Flask], tmp_path: Path) -> Site:
    site = make_site(make_app, PATRONLOCK_SITE_LOCK="site", PATRONLOCK_CLIENT_ID="id", PATRONLOCK_CLIENT_SECRET="s",
                     PATRONLOCK_CREATOR_ACCESS_TOKEN="token")
    site.ext.lock("site", enabled=False)  # a site-wide lock that lets everyone in, still decided on every request
    site.ext.lock("premium", tier="Gold")
    (tmp_path / "a.png").write_bytes(b"png")

    @site.app.route("/page")
    @locked("premium")
    def page() -> str:
        return render_template_string(
            "{% patronlock 'premium' %}A{% endpatronlock %}{{ can_view(min_cents=1) }}"
            "{{ current_patron.member_id if current_patron else '' }}"
        )

    @site.app.route("/teaser")
    def teaser() -> str:
        _ = current_patron.member_id if current_patron else None  # the proxy is usable in a view
        return render_template_string("{% patronlock 'premium' %}T{% more %}R{% endpatronlock %}")

    @site.app.route("/file")
    def file() -> Any:
        return send_locked_file("premium", tmp_path / "a.png")

    site.linked_patron("gold")
    site.linked_patron("silver", entitled_cents=500, entitled_tier_ids=("t5",))
    site.linked_patron(
        "declined",
        patron_status="declined_patron",
        last_charge_status="Declined",
        last_charge_date=NOW - timedelta(days=20),  # past the 7-day grace
    )
    site.link("linked-only", "p-nobody")
    site.user("stranger")
    return site


def test_a_page_view_never_calls_patreon(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PatronLockState, "client", _no_patreon)
    monkeypatch.setattr(PatronLockState, "creator_client", _no_patreon)
    monkeypatch.setattr(socket, "create_connection", _no_patreon)
    monkeypatch.setattr(socket.socket, "connect", _no_patreon)
    # the guard works: any HTTP through requests fails inside the block
    with requests_mock.Mocker(real_http=False) as mocker:
        with pytest.raises(requests_mock.NoMockAddress):
            requests.get("https://www.patreon.com/api/oauth2/v2/identity", timeout=1)
        calls_before = mocker.call_count
        statuses = []
        for user in (None, "stranger", "linked-only", "silver", "declined", "gold"):
            for path in ("/page", "/teaser", "/file"):
                with site.get(path, user) as response:
                    statuses.append(response.status_code)
        assert mocker.call_count == calls_before
    # gold sees everything; the others get /teaser (200, teaser + banner) and 403 for /page and /file
    assert statuses == [403, 200, 403] * 5 + [200, 200, 200]


@pytest.mark.parametrize(("user", "expected"), [(None, 0), ("stranger", 1), ("linked-only", 1), ("gold", 1)])
def test_at_most_one_query_per_page_view(site: Site, user: str | None, expected: int) -> None:
    site.get("/page", "admin-warmup")  # the first request loads the settings cache
    with count_queries(site.app) as queries:
        site.get("/page", user)  # the user's first page view in this worker: its viewer record is read
    assert len(queries) == expected, queries
    if expected:
        assert "patronlock_accounts" in queries[0] and "patronlock_patrons" in queries[0]


@pytest.mark.parametrize("user", [None, "stranger", "linked-only", "gold"])
def test_no_query_for_a_page_view_within_the_viewer_cache_ttl(site: Site, user: str | None) -> None:
    site.get("/page", user)
    statuses = []
    with count_queries(site.app) as queries:
        for path in ("/page", "/teaser", "/file", "/page"):
            with site.get(path, user) as response:
                statuses.append(response.status_code)
    assert queries == []
    assert statuses == ([200, 200, 200, 200] if user == "gold" else [403, 200, 403, 403])


@pytest.mark.parametrize("user", ["stranger", "linked-only", "gold"])
def test_with_the_viewer_cache_off_every_page_view_makes_one_query(site: Site, user: str) -> None:
    site.app.config["PATRONLOCK_VIEWER_CACHE_SECONDS"] = 0
    site.get("/page", user)
    for _ in range(3):
        with count_queries(site.app) as queries:
            site.get("/page", user)
        assert len(queries) == 1, queries
        assert "patronlock_accounts" in queries[0] and "patronlock_patrons" in queries[0]
    assert len(site.state.viewers) == 0
