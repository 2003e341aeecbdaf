"""The demo's first minute, page by page over real HTTP: the first screen says who you are (the creator, or a reader
who is not a patron yet) with one click for each; the sandbox's authorize page proposes a new patron to a reader;
the site's clock is the sandbox's, so "advance the clock a month" ends a cancelled patron's paid period on the site;
a restart keeps the sandbox and the database together; the private feed and the large download are a click away."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import timedelta
from html import unescape
from pathlib import Path
from typing import Any

import pytest
import requests

from flask_patronlock.formatting import date_text
from tests.helpers.connect import default_form
from tests.helpers.example_server import form_token, register, serve_example_site, sign_in


def config(folder: Path, **more: Any) -> dict[str, Any]:
    return {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{folder / 'site.db'}", "PATRONLOCK_STRICT_SIGNALS": True, **more}


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    with serve_example_site(config(tmp_path)) as served:
        yield served


def press(http: requests.Session, base: str, action: str, **form: str) -> str:
    """Press a button of the control panel; the panel page it returns to."""
    token = form_token(http, base + "/panel/")
    page = http.post(base + f"/panel/{action}", data={"csrf_token": token, **form}, timeout=20)
    assert page.status_code == 200 and page.url == base + "/panel/", page.text
    return page.text


def connect_as_proposed(http: requests.Session, base: str, next_path: str = "/") -> tuple[str, dict[str, str]]:
    """Connect Patreon the way a newcomer does: open the authorize page, change nothing, press Approve. Returns the
    page the site shows afterwards and the form that was sent."""
    start = http.get(base + f"/patreon/connect?next={next_path}", allow_redirects=False, timeout=10)
    assert start.status_code == 302 and "/_patreon/oauth2/authorize" in start.headers["Location"]
    consent = http.get(start.headers["Location"], timeout=10)
    assert consent.status_code == 200 and "Allow access to your Patreon account" in consent.text
    form = {**default_form(consent.text), "decision": "approve"}
    action = re.search(r'<form method="post" action="([^"]+)"', consent.text)
    assert action is not None
    page = http.post(base + action.group(1), data=form, timeout=20)
    assert page.status_code == 200, page.text
    return page.text, form


def sam_the_patron(base: str, tier: str) -> requests.Session:
    """Sam, signed in, connected as the authorize page proposes, pledging ``tier``; the site told by webhook."""
    sam = sign_in(base, "reader")
    connect_as_proposed(sam, base)
    press(sam, base, "pledge", tier=tier)
    press(sam, base, "flush")
    return sam


def reason(page: str) -> str | None:
    found = re.search(r'data-patronlock-reason="([a-z_]+)"', page)
    return found.group(1) if found else None


def today(page: str) -> str:
    found = re.search(r"data-today>([^<]+)<", page)
    assert found is not None, page
    return unescape(found.group(1))


# -- the first screen --------------------------------------------------------------------------------------------------


def test_the_first_screen_says_who_you_are_and_offers_both_sides(site: tuple[str, Any]) -> None:
    base, app = site
    first = requests.get(base + "/", timeout=10).text
    for text in ("You are the creator", "Sign in as Kopi, the creator", "Sign in as Sam, a reader",
                 "Patreon here is a sandbox", "data-private-feed", 'href="/downloads"'):  # fmt: skip
        assert text in first, text
    sandbox = app.extensions["example_sandbox"]
    assert today(first) == f"Today, on Patreon and on this site: {date_text(sandbox.now, day_first=True)}."

    creator = sign_in(base, "creator")
    home = creator.get(base + "/", timeout=10).text
    assert 'data-role="creator"' in home and "Every post below is open to you" in home
    assert home.count('data-open="creator"') == 6 and 'data-open="no"' not in home  # why nothing looks locked
    post = creator.get(base + "/posts/masterclass", timeout=10).text
    assert "full masterclass video" in post and "data-creator-note" in post and "passes every lock" in post
    assert "Settings" in home and "Switch to Sam (reader)" in home

    reader = sign_in(base, "reader")
    home = reader.get(base + "/", timeout=10).text
    assert 'data-next-step="connect"' in home and home.count('data-open="no"') == 6  # the early-access post too
    assert "Switch to Kopi (creator)" in home and "Settings" not in home
    post = reader.get(base + "/posts/masterclass", timeout=10).text
    assert reason(post) == "not_linked" and "data-creator-note" not in post


def test_one_click_sign_in_is_for_this_machine_only(tmp_path: Path) -> None:
    from example_site import create_app
    from example_site.app import db

    app = create_app(config(tmp_path, PATRONLOCK_SCHEDULER=False))
    try:
        from_afar = app.test_client()
        from_afar.environ_base["REMOTE_ADDR"] = "203.0.113.7"
        assert "Sign in as Kopi" not in from_afar.get("/").get_data(as_text=True)
        assert from_afar.post("/demo/sign-in/creator").status_code == 404
        here = app.test_client()
        here.environ_base["REMOTE_ADDR"] = "127.0.0.1"
        assert "Sign in as Kopi" in here.get("/").get_data(as_text=True)
    finally:
        with app.app_context():
            db.engine.dispose()

    # served on another address than this machine's, the demo prepares no accounts: the first registered is the admin
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    app = create_app(config(elsewhere, PATRONLOCK_SCHEDULER=False, WTF_CSRF_ENABLED=False),
                     base_url="http://192.0.2.10:5000")  # fmt: skip
    try:
        client = app.test_client()
        assert "The first account registered on this site is the creator" in client.get("/").get_data(as_text=True)
        client.post("/register", data={"email": "owner@example.com", "password": "correct horse"})
        from example_site.app import User

        with app.app_context():
            users = db.session.execute(db.select(User)).scalars().all()
            assert [(u.email, u.is_admin) for u in users] == [("owner@example.com", True)]
    finally:
        with app.app_context():
            db.engine.dispose()


# -- the authorize page ------------------------------------------------------------------------------------------------


def test_a_reader_who_just_presses_approve_connects_a_new_patron_not_the_creator(site: tuple[str, Any]) -> None:
    base, app = site
    sandbox = app.extensions["example_sandbox"]
    before = {u.id for u in sandbox.users}
    sam = sign_in(base, "reader")
    page, form = connect_as_proposed(sam, base, "/posts/process")
    assert form["user_id"] == "new" and form["new_email"] not in ("", sandbox.creator.email)
    assert reason(page) == "not_a_patron"  # connected, with no pledge yet: the banner says to pledge
    assert f"Connected your Patreon account ({form['new_email'].split('@')[0]}@…)" in unescape(page)

    from flask_patronlock.accounts import get_accounts

    with app.app_context():
        link = get_accounts().for_patreon_user(sandbox.user(form["new_email"]).id)
    assert link is not None and link.patreon_user_id not in before | {sandbox.creator.id}


# -- one clock ---------------------------------------------------------------------------------------------------------


def test_advancing_the_clock_a_month_ends_a_cancelled_patrons_paid_period_on_the_site(site: tuple[str, Any]) -> None:
    base, app = site
    sandbox = app.extensions["example_sandbox"]
    sam = sam_the_patron(base, "Silver")
    assert "twenty-step process" in sam.get(base + "/posts/process", timeout=10).text

    press(sam, base, "cancel")
    panel = press(sam, base, "flush")
    assert 'data-status="former_patron"' in panel and "you paid through this period" in panel
    assert "twenty-step process" in sam.get(base + "/posts/process", timeout=10).text  # paid for: still readable
    started = sandbox.now

    panel = press(sam, base, "advance")  # no webhook, no sync: the site's time is Patreon's
    moved = date_text(sandbox.now, day_first=True)
    assert sandbox.now - started >= timedelta(days=28)
    assert f"it is now {moved}, on Patreon and on this site" in panel
    assert f"{moved}, on Patreon and on this site" in panel.split('id="today">', 1)[1]
    post = sam.get(base + "/posts/process", timeout=10).text
    assert "twenty-step process" not in post and reason(post) == "former_patron"
    assert today(sam.get(base + "/", timeout=10).text) == f"Today, on Patreon and on this site: {moved}."

    from flask_patronlock.state import get_state

    with app.app_context():
        assert abs(get_state().store.clock() - sandbox.now) < timedelta(seconds=5)  # one clock, still running


# -- a restart ---------------------------------------------------------------------------------------------------------


def test_a_restart_keeps_the_sandbox_and_the_database_together(tmp_path: Path) -> None:
    from flask_patronlock.accounts import get_accounts
    from flask_patronlock.state import get_state

    with serve_example_site(config(tmp_path)) as (base, app):
        sandbox = app.extensions["example_sandbox"]
        sam = sam_the_patron(base, "Silver")
        reader = register(base, "reader@example.com")
        connect_as_proposed(reader, base)
        press(sam, base, "advance")
        given = {u.id for u in sandbox.users}
        members = {m.id: (m.user_id, m.patron_status, m.tier_ids) for m in sandbox.members}
        moved_to, client_id = sandbox.now, sandbox.client_id
        ids = [str(who.get(base + "/whoami", timeout=10).json()["user"]) for who in (sam, reader)]
        with app.app_context():
            links = {u: get_accounts().get(u).patreon_user_id for u in ids}  # type: ignore[union-attr]

    # "restart": a new app on the same files, on another port
    with serve_example_site(config(tmp_path)) as (base, app):
        sandbox = app.extensions["example_sandbox"]
        assert sandbox.client_id == client_id and app.config["PATRONLOCK_CLIENT_ID"] == client_id
        assert {u.id for u in sandbox.users} >= given
        assert {m.id: (m.user_id, m.patron_status, m.tier_ids) for m in sandbox.members} == members
        assert sandbox.now >= moved_to  # the month moved on stays moved on
        with app.app_context():
            assert {u: get_accounts().get(u).patreon_user_id for u in ids} == links  # type: ignore[union-attr]
            assert set(links.values()) <= given

        # old patrons match the sandbox: Sam reads as before, and a reconcile run finds nothing to change
        sam = sign_in(base, "reader")
        assert "twenty-step process" in sam.get(base + "/posts/process", timeout=10).text
        def stored() -> dict[str, Any]:
            store = get_state().store
            patrons = [store.get_patron(m) for m in store.member_ids(sandbox.campaign.id)]
            return {p.member_id: (p.patron_status, p.entitled_tier_ids, p.access) for p in patrons if p is not None}

        with app.app_context():
            before = stored()
            assert set(before) == set(members)  # every member the sandbox has, and no other
            assert sync_when_free(app).status == "complete"
            assert stored() == before

        # a new visitor gets a Patreon account nobody had, and the webhook still reaches this site's new address
        newcomer = register(base, "newcomer@example.com")
        _, form = connect_as_proposed(newcomer, base)
        assert sandbox.user(form["new_email"]).id not in given
        assert [w.uri for w in sandbox.webhooks] == [base + "/patreon/webhook"]
        press(newcomer, base, "pledge", tier="Gold")
        assert "which accepted and processed them" in press(newcomer, base, "flush")
        assert "full masterclass video" in newcomer.get(base + "/posts/masterclass", timeout=10).text


def sync_when_free(app: Any) -> Any:
    """A reconcile run, once the one the scheduler starts after a restart (on the first request) has finished."""
    from flask_patronlock.sync import AlreadyRunning, run_sync

    deadline = time.monotonic() + 60
    while True:
        try:
            return run_sync(app, trigger="manual")
        except AlreadyRunning:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_a_database_its_sandbox_does_not_know_is_moved_aside_with_it(tmp_path: Path) -> None:
    """A database an earlier version of the example made (it did not keep the sandbox): starting afresh on both
    sides beats a site that believes in patrons Patreon has never heard of."""
    from sqlalchemy import create_engine, text

    with serve_example_site(config(tmp_path)) as (base, _):
        sam = sign_in(base, "reader")
        connect_as_proposed(sam, base)
    engine = create_engine(f"sqlite:///{tmp_path / 'site.db'}")
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM example_sandbox"))  # what the earlier version had: no kept sandbox
    engine.dispose()

    with serve_example_site(config(tmp_path)) as (base, app):
        [kept] = tmp_path.glob("site.db.*.old")
        assert kept.stat().st_size > 0  # moved, not deleted
        from flask_patronlock.accounts import get_accounts

        with app.app_context():
            assert get_accounts().get("2") is None  # the new database knows no link the new sandbox would not
        sam = sign_in(base, "reader")
        assert 'data-next-step="connect"' in sam.get(base + "/", timeout=10).text


# -- the private feed and the large download ---------------------------------------------------------------------------


def test_the_private_feed_is_a_click_from_the_first_screen(site: tuple[str, Any]) -> None:
    base, _ = site
    sam = sam_the_patron(base, "Silver")
    home = sam.get(base + "/", timeout=10).text
    link = re.search(r'<a href="([^"]+)" data-private-feed>', home)
    assert link is not None
    page = sam.get(base + link.group(1), timeout=10).text
    address = re.search(r'class="patronlock-feed-url"[^>]*value="([^"]+)"', page)
    assert address is not None
    feed = requests.get(unescape(address.group(1)), timeout=10)  # a feed reader: no cookie
    assert feed.status_code == 200 and feed.headers["Content-Type"].startswith("application/rss+xml")
    assert "twenty-step process" in feed.text and "full masterclass video" not in feed.text  # Silver, not Gold


def test_the_large_download_is_handed_out_through_a_signed_link(tmp_path: Path) -> None:
    with serve_example_site(config(tmp_path, EXAMPLE_LARGE_FILE_MB=3)) as (base, app):
        anonymous = requests.Session().get(base + "/downloads", timeout=10).text
        assert "data-signed-link" not in anonymous and reason(anonymous) == "anonymous"
        assert "X-Accel-Redirect" not in anonymous and "x-accel-redirect" in anonymous  # how nginx would serve it
        assert "internal;" in anonymous and str(tmp_path / "example-files") in anonymous

        sam = sam_the_patron(base, "Bronze")
        page = sam.get(base + "/downloads", timeout=10).text
        found = re.search(r'<a class="button" href="([^"]+)" data-signed-link>Download \(3 MB\)', page)
        assert found is not None, page
        link = unescape(found.group(1))
        assert link.startswith("/patreon/files/studio-archive.bin?") and "sig=" in link and "expires=" in link

        archive = tmp_path / "example-files" / "studio-archive.bin"  # made on demand, beside the database
        assert archive.stat().st_size == 3 * 1024 * 1024
        download = requests.get(base + link, timeout=30)  # whoever holds the link: no cookie needed
        assert download.status_code == 200 and download.content == archive.read_bytes()
        assert "private" in download.headers["Cache-Control"]
        tampered = requests.get(base + link.replace("studio-archive.bin", "wallpaper.svg"), timeout=10)
        assert tampered.status_code == 403
        assert not (Path(app.root_path) / "files" / "studio-archive.bin").exists()  # never in the repository


# -- a comp ------------------------------------------------------------------------------------------------------------


def test_alex_reads_the_masterclass_through_the_creators_comp_granted_once(tmp_path: Path) -> None:
    from flask_patronlock.comps import list_comps, revoke_comp
    from flask_patronlock.state import get_state

    with serve_example_site(config(tmp_path)) as (base, app):
        first = requests.get(base + "/", timeout=10).text
        assert "data-comp-example" in first and "Kopi gave Alex, a friend of the studio, a comp for it" in first
        alex = sign_in(base, "friend")
        page = alex.get(base + "/posts/masterclass", timeout=10).text
        assert reason(page) is None and "The full masterclass video" in page  # open: no banner
        assert "It is open to you through a comp" in page and "no pledge needed" in page
        assert "data-creator-note" not in page
        assert reason(alex.get(base + "/posts/process", timeout=10).text) == "not_linked"  # one lock, not all of them
        sam = sign_in(base, "reader")
        assert reason(sam.get(base + "/posts/masterclass", timeout=10).text) == "not_linked"
        kopi = sign_in(base, "creator")
        comps_page = unescape(kopi.get(base + "/patronlock/admin/comps", timeout=10).text)
        assert "A thank-you for sitting for the masterclass's portraits" in comps_page
        with app.app_context():
            state = get_state()
            assert list_comps(state, ended=True) == []
            records = list_comps(state)
            assert len(records) == 1 and records[0].lock == "gold" and records[0].expires_at is not None
            revoke_comp(state, records[0].id, by="1")  # the creator takes it back ...
    with serve_example_site(config(tmp_path)) as (base, app):  # ... and a restart does not grant it again
        with app.app_context():
            assert list_comps(get_state()) == [] and len(list_comps(get_state(), ended=True)) == 1
        alex = sign_in(base, "friend")
        assert reason(alex.get(base + "/posts/masterclass", timeout=10).text) == "not_linked"
