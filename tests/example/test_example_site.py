"""The example site runs offline: SQLite and the sandbox mounted in the same process, served for real."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers.example_server import register, send_raw, serve_example_site, sign_in


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    config = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'site.db'}", "PATRONLOCK_STRICT_SIGNALS": True}
    with serve_example_site(config) as served:
        yield served


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


def test_the_creator_signs_in_with_one_click_and_others_are_told_to_connect(site: tuple[str, Any]) -> None:
    base, app = site
    first = register(base, "first@example.com")  # the demo prepared the creator: the first to register is a reader
    assert 'data-patronlock-reason="not_linked"' in first.get(base + "/posts/process", timeout=10).text
    creator = sign_in(base, "creator")
    assert "twenty-step process" in creator.get(base + "/posts/process", timeout=10).text  # admin bypass

    visitor = register(base, "new@example.com")
    locked = visitor.get(base + "/posts/process", timeout=10)
    assert 'data-patronlock-reason="not_linked"' in locked.text
    assert "twenty-step process" not in locked.text
    # the demo stored its Patreon's tiers at start, so "Silver" names a real tier from the first page on; the
    # scheduler's first run (started in the background by the first page view) reads them again through the client
    from flask_patronlock.state import get_state

    with app.app_context():
        assert {"Bronze", "Silver", "Gold"} <= {t.title for t in get_state().store.tiers()}
    deadline = time.monotonic() + 30
    with app.app_context():
        while not get_state().store.tiers_checked(app.config["PATRONLOCK_CAMPAIGN_ID"])[0]:
            assert time.monotonic() < deadline, "no reconcile run read the tiers"
            time.sleep(0.05)


def test_the_sandbox_is_mounted(site: tuple[str, Any]) -> None:
    base, app = site
    admin = sign_in(base, "creator")  # its controls are for the site's admin
    state = admin.get(base + "/_patreon/_sandbox/state", timeout=10).json()
    assert app.config["PATRONLOCK_API_BASE_URL"] == base + "/_patreon"
    assert state["campaign_id"] == app.config["PATRONLOCK_CAMPAIGN_ID"]


def test_connect_and_log_in_with_patreon_on_the_live_site(site: tuple[str, Any]) -> None:
    """Browser-free, over real HTTP to a live server: register, connect Patreon (the sandbox's authorize page,
    answered by its test mode), read a Gold post; then log in with Patreon from a fresh session."""
    base, _ = site
    visitor = register(base, "reader@example.com")
    start = visitor.get(base + "/patreon/connect?next=/posts/masterclass", allow_redirects=False, timeout=10)
    assert start.status_code == 302 and "/_patreon/oauth2/authorize" in start.headers["Location"]
    page = visitor.get(
        start.headers["Location"], params={"sandbox_user": "ada@example.com", "sandbox_decision": "approve"}, timeout=10
    )
    assert page.url == base + "/posts/masterclass"
    assert "You&#39;re a Gold patron" in page.text and "full masterclass video" in page.text

    fresh = requests.Session()
    start = fresh.get(base + "/patreon/login?next=/posts/masterclass", allow_redirects=False, timeout=10)
    page = fresh.get(
        start.headers["Location"], params={"sandbox_user": "ada@example.com", "sandbox_decision": "approve"}, timeout=10
    )
    assert "Logged in with your Patreon account" in page.text and "full masterclass video" in page.text
    assert fresh.get(base + "/whoami", timeout=10).json() == visitor.get(base + "/whoami", timeout=10).json()


def test_a_demo_database_from_an_earlier_version_is_moved_aside(tmp_path: Path) -> None:
    from example_site.app import create_app
    from flask_patronlock.state import get_state

    database = tmp_path / "site.db"
    config = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{database}"}
    app = create_app(config)
    with app.app_context(), get_state(app).store.engine.begin() as conn:  # what an earlier version made
        conn.exec_driver_sql("ALTER TABLE patronlock_patrons DROP COLUMN access_policy")
        get_state(app).store.engine.dispose()
    app = create_app(config)
    [kept] = tmp_path.glob("site.db.*.old")  # nothing deleted
    with app.app_context():
        from flask_patronlock.models import schema_gaps

        assert schema_gaps(get_state(app).store.engine, get_state(app).tables) == ([], [])
    assert database.exists() and kept.stat().st_size > 0


@pytest.mark.parametrize("match_flag", [None, True], ids=["defaults", "match-emails-on"])
def test_registering_a_patrons_email_does_not_take_over_her_patreon(tmp_path: Path, match_flag: bool | None) -> None:
    """The attack: someone registers Ada's address (this site never verifies it), the creator syncs. Ada (a Gold
    patron who never registered) must not end up linked to the attacker's account, neither by the run nor when she
    later logs in with Patreon; the configuration flag alone changes nothing (the site vouches for no address)."""
    from flask_patronlock.accounts import get_accounts
    from flask_patronlock.state import get_state
    from tests.example.test_example_panel import press

    config: dict[str, Any] = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'site.db'}"}
    if match_flag is not None:
        config["PATRONLOCK_SYNC_MATCH_EMAILS"] = match_flag
    with serve_example_site(config) as (base, app):
        creator = sign_in(base, "creator")
        attacker = requests.Session()
        register(base, "ada@example.com", "attacker's", http=attacker)
        attacker_id = attacker.get(base + "/whoami", timeout=10).json()["user"]
        assert attacker_id is not None

        assert "Reconcile run complete" in press(creator, base, "sync")  # the creator presses "sync now"
        ada = app.extensions["example_sandbox"].user("ada@example.com")
        with app.app_context():
            assert get_accounts().for_patreon_user(ada.id) is None
            assert get_accounts().get(attacker_id) is None
            assert get_state().store.patron_for_user(attacker_id) is None
        page = attacker.get(base + "/posts/masterclass", timeout=10)
        assert 'data-patronlock-reason="not_linked"' in page.text and "full masterclass video" not in page.text

        real_ada = requests.Session()
        start = real_ada.get(base + "/patreon/login?next=/posts/masterclass", allow_redirects=False, timeout=10)
        page = real_ada.get(
            start.headers["Location"], params={"sandbox_user": "ada@example.com", "sandbox_decision": "approve"},
            timeout=10,
        )
        assert page.status_code == 409 and 'data-patronlock-problem="email_exists"' in page.text
        assert real_ada.get(base + "/whoami", timeout=10).json() == {"user": None}
        with app.app_context():
            assert get_accounts().for_patreon_user(ada.id) is None


def test_a_bronze_patron_cannot_fetch_a_gold_download_by_another_spelling(site: tuple[str, Any]) -> None:
    """The creator locks one download to Gold on the settings page; Bo (Bronze) asks for it under every spelling a
    client can send byte for byte (``requests`` would resolve the dot segments first, so ``http.client`` is used)."""
    import re

    base, _ = site
    creator = sign_in(base, "creator")
    page = creator.get(base + "/patronlock/admin/locks", timeout=10)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token, page.text
    saved = creator.post(base + "/patronlock/admin/locks/routing", timeout=10, data={
        "csrf_token": token.group(1), "site_lock": "",
        "paths-0-prefix": "/downloads/wallpaper.svg", "paths-0-lock": "gold",
    })
    assert saved.status_code == 200 and "/downloads/wallpaper.svg" in saved.text, saved.text

    bo = requests.Session()
    register(base, "bo@example.com", "correct horse", http=bo)
    start = bo.get(base + "/patreon/connect?next=/", allow_redirects=False, timeout=10)
    bo.get(start.headers["Location"], params={"sandbox_user": "bo@example.com", "sandbox_decision": "approve"},
           timeout=10)
    cookie = {"Cookie": "; ".join(f"{c.name}={c.value}" for c in bo.cookies)}

    def fetch(target: str) -> tuple[int, bytes]:
        return send_raw(base, target, cookie)

    wallpaper = (Path(__file__).resolve().parents[2] / "example_site" / "files" / "wallpaper.svg").read_bytes()
    assert creator.get(base + "/downloads/./wallpaper.svg", timeout=10).content == wallpaper  # an admin passes
    status, _ = fetch("/downloads/wallpaper.svg")
    assert status == 403  # Bronze is not Gold
    for target in ("/downloads/./wallpaper.svg", "/downloads/x/../wallpaper.svg", "/downloads/%2e/wallpaper.svg",
                   "/downloads/%2E/wallpaper.svg", "/downloads/x/%2e%2e/wallpaper.svg", "/downloads/.%2fwallpaper.svg",
                   "/downloads/wallpaper.svg/", "/downloads/WALLPAPER.SVG", "/downloads//wallpaper.svg"):
        status, body = fetch(target)
        assert wallpaper not in body and status in (403, 308), (target, status)
