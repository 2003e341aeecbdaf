"""Private feeds: a patron's secret feed URL, fetched by a feed reader with no cookie, unlocks what their pledge does.

Every test goes through what a site and its patrons meet: the patron's feed page, the feed and enclosure URLs fetched
with no session, the rotate button, unlinking, the CLI, the rate limit and the shared-token audit row.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from sqlalchemy import select

from flask_patronlock import can_view, send_locked_file
from flask_patronlock.extension import get_state
from flask_patronlock.feeds import FeedTokens, feed_url, feed_view, get_feed_tokens
from tests.helpers.constants import NOW
from tests.helpers.sites import Site, make_site

AUDIO = b"ID3-fake-mp3-bytes"
EPISODES = {1: ("Free talk", None), 2: ("Gold bonus", "premium")}


def build(make_app: Callable[..., Flask], tmp_path: Path, **config: Any) -> Site:
    config.setdefault("PATRONLOCK_FEED_ENDPOINT", "podcast")
    config.setdefault("WTF_CSRF_ENABLED", False)
    site = make_site(make_app, **config)
    site.ext.lock("premium", tier="Gold")
    audio = tmp_path / "audio"
    audio.mkdir(exist_ok=True)
    for number in EPISODES:
        (audio / f"{number}.mp3").write_bytes(AUDIO + str(number).encode())
    app = site.app

    @app.route("/feed/<feed_token>/podcast.xml")
    @feed_view
    def podcast() -> Any:
        items = []
        for number, (title, lock) in EPISODES.items():
            if lock is None or can_view(lock):
                extra = f'<enclosure url="{feed_url("episode", number=number)}" type="audio/mpeg"/>'
            else:
                extra = "<description>For Gold patrons: upgrade to listen.</description>"
            items.append(f"<item><title>{title}</title>{extra}</item>")
        return "<rss><channel>" + "".join(items) + "</channel></rss>", {"Content-Type": "application/rss+xml"}

    @app.route("/feed/<feed_token>/episodes/<int:number>.mp3")
    @feed_view
    def episode(number: int) -> Any:
        lock = EPISODES[number][1]
        if lock is None:
            return (audio / f"{number}.mp3").read_bytes()
        return send_locked_file(lock, f"{number}.mp3", directory=audio, mimetype="audio/mpeg")

    site.linked_patron("gold")
    site.linked_patron("silver", entitled_cents=500, entitled_tier_ids=("t5",))
    return site


@pytest.fixture
def site(make_app: Callable[..., Flask], tmp_path: Path) -> Site:
    return build(make_app, tmp_path)


def my_feed_url(site: Site, user: str) -> str:
    """The URL the patron copies from their feed page."""
    page = site.get("/patreon/feed", user)
    assert page.status_code == 200, page.status
    match = re.search(r'class="patronlock-feed-url"[^>]*value="([^"]+)"', page.get_data(as_text=True))
    assert match is not None
    return match.group(1)


def fetch(site: Site, url: str, address: str = "203.0.113.5") -> Any:
    """A feed reader's request: no cookie, no session, just the URL."""
    response = site.app.test_client().get(urlsplit(url).path, environ_base={"REMOTE_ADDR": address})
    response.get_data()  # read a streamed file to the end, and close it
    response.close()
    return response


def enclosures(body: str) -> list[str]:
    return re.findall(r'<enclosure url="([^"]+)"', body)


def test_a_feed_reader_with_no_cookie_gets_the_patrons_items_and_enclosures(site: Site) -> None:
    url = my_feed_url(site, "gold")
    assert url.startswith("http://localhost/feed/pf_") and url.endswith("/podcast.xml")
    assert my_feed_url(site, "gold") == url  # the same address every time the patron looks
    response = fetch(site, url)
    assert response.status_code == 200 and response.mimetype == "application/rss+xml"
    assert response.headers["Cache-Control"] == "private" and response.headers["Referrer-Policy"] == "no-referrer"
    body = response.get_data(as_text=True)
    links = enclosures(body)
    assert len(links) == 2 and "upgrade to listen" not in body
    token = urlsplit(url).path.split("/")[2]
    assert all(f"/feed/{token}/episodes/" in link for link in links)
    for number, link in zip(EPISODES, links, strict=True):
        audio = fetch(site, link)
        assert audio.status_code == 200 and audio.data == AUDIO + str(number).encode()


def test_a_patron_below_the_lock_gets_the_item_without_its_enclosure(site: Site) -> None:
    url = my_feed_url(site, "silver")
    body = fetch(site, url).get_data(as_text=True)
    assert "Gold bonus" in body and "For Gold patrons: upgrade to listen." in body
    links = enclosures(body)
    assert len(links) == 1 and links[0].endswith("/episodes/1.mp3")
    # guessing the locked enclosure's URL with their own token does not help: the lock decides for the feed's patron
    locked = fetch(site, links[0].replace("/1.mp3", "/2.mp3"))
    assert locked.status_code == 403 and AUDIO not in locked.data
    assert fetch(site, my_feed_url(site, "gold").replace("podcast.xml", "episodes/2.mp3")).status_code == 200


def test_bad_unknown_and_anonymous(site: Site) -> None:
    url = my_feed_url(site, "gold")
    token = urlsplit(url).path.split("/")[2]
    for bad in ("nope", token[:-1], token[:-1] + ("A" if token[-1] != "A" else "B"), "pf_" + "x" * 43, token + "x"):
        assert fetch(site, url.replace(token, bad)).status_code == 404, bad
    # the page needs a signed-in user, and no page at all when the site names no feed endpoint
    assert site.get("/patreon/feed").status_code == 401


def test_no_feed_page_without_a_feed_endpoint(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    site = build(make_app, tmp_path, PATRONLOCK_FEED_ENDPOINT=None)
    assert site.get("/patreon/feed", "gold").status_code == 404


def test_rotating_gives_a_new_url_and_kills_the_old(site: Site) -> None:
    old = my_feed_url(site, "gold")
    response = site.app.test_client().post("/patreon/feed/rotate", headers={"X-User": "gold"})
    assert response.status_code == 302
    new = my_feed_url(site, "gold")
    assert new != old
    assert fetch(site, old).status_code == 404
    assert fetch(site, new).status_code == 200
    kinds = audit_kinds(site, "gold")
    assert kinds == ["feed_token_created", "feed_token_rotated"]


def test_revoking_from_the_cli(site: Site) -> None:
    url = my_feed_url(site, "gold")
    runner = site.app.test_cli_runner()
    result = runner.invoke(args=["patronlock", "feeds", "revoke", "gold"])
    assert result.exit_code == 0 and "Revoked" in result.output
    assert fetch(site, url).status_code == 404
    assert "no feed token" in runner.invoke(args=["patronlock", "feeds", "revoke", "gold"]).output
    assert "feed_token_revoked" in audit_kinds(site, "gold")
    fresh = my_feed_url(site, "gold")  # the patron can ask for a new one
    assert fresh != url and fetch(site, fresh).status_code == 200


def test_unlinking_patreon_rotates_the_feed_token(site: Site) -> None:
    url = my_feed_url(site, "gold")
    response = site.app.test_client().post("/patreon/unlink", headers={"X-User": "gold"})
    assert response.status_code == 302
    assert fetch(site, url).status_code == 404
    assert audit_kinds(site, "gold")[-1] == "feed_token_rotated"
    # the new URL works, and the feed now is an unlinked user's: only the free episode
    body = fetch(site, my_feed_url(site, "gold")).get_data(as_text=True)
    assert len(enclosures(body)) == 1


def test_unlinking_without_a_feed_token_makes_none(site: Site) -> None:
    assert site.app.test_client().post("/patreon/unlink", headers={"X-User": "silver"}).status_code == 302
    assert get_feed_tokens(get_state(site.app)).info("silver") is None


def test_the_site_wide_lock_decides_for_the_feeds_patron(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    site = build(make_app, tmp_path, PATRONLOCK_SITE_LOCK="premium")
    assert fetch(site, my_feed_url(site, "gold")).status_code == 200
    assert fetch(site, my_feed_url(site, "silver")).status_code == 403


def test_the_database_holds_no_token_and_a_new_key_changes_every_url(site: Site) -> None:
    url = my_feed_url(site, "gold")
    token = urlsplit(url).path.split("/")[2]
    state = get_state(site.app)
    with state.store.engine.connect() as conn:
        row = conn.execute(select(state.tables.feed_tokens)).mappings().one()
    assert token not in {str(v) for v in row.values()}
    site.app.config["PATRONLOCK_FEED_KEY"] = "a-new-feed-key"
    assert fetch(site, url).status_code == 404
    new = my_feed_url(site, "gold")
    assert new != url and fetch(site, new).status_code == 200


def test_rate_limit_answers_429_with_retry_after(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    site = build(make_app, tmp_path, PATRONLOCK_FEED_RATE_LIMIT=3, PATRONLOCK_FEED_RATE_PERIOD=600)
    url = my_feed_url(site, "gold")
    assert [fetch(site, url).status_code for _ in range(3)] == [200, 200, 200]
    limited = fetch(site, url)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "600"
    assert AUDIO not in limited.data
    store = get_state(site.app).store
    store.clock = lambda: NOW + timedelta(seconds=590)
    assert fetch(site, url).headers["Retry-After"] == "10"
    store.clock = lambda: NOW + timedelta(seconds=601)  # a new window
    assert fetch(site, url).status_code == 200
    # another patron's token has its own count
    assert fetch(site, my_feed_url(site, "silver")).status_code == 200


def test_rate_limit_counts_exactly_across_concurrent_requests(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    site = build(make_app, tmp_path, PATRONLOCK_FEED_RATE_LIMIT=7)
    token = urlsplit(my_feed_url(site, "gold")).path.split("/")[2]
    tokens = FeedTokens(get_state(site.app))
    answers: list[int | None] = []
    lock = threading.Lock()

    def reader() -> None:
        for _ in range(5):
            access = tokens.resolve(token, address="198.51.100.1")
            assert access is not None and access.user_id == "gold"
            with lock:
                answers.append(access.retry_after)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 20 and answers.count(None) == 7


def test_a_token_used_from_many_addresses_is_audited_once_per_window(
    make_app: Callable[..., Flask], tmp_path: Path
) -> None:
    site = build(make_app, tmp_path, PATRONLOCK_FEED_MAX_ADDRESSES=2, PATRONLOCK_FEED_ADDRESS_WINDOW=3600)
    url = my_feed_url(site, "gold")
    for address in ("203.0.113.1", "203.0.113.2", "203.0.113.1", "203.0.113.2"):
        assert fetch(site, url, address).status_code == 200
    assert "feed_token_shared" not in audit_kinds(site, "gold")
    fetch(site, url, "203.0.113.3")
    fetch(site, url, "203.0.113.4")
    shared = audit_rows(site, "gold", "feed_token_shared")
    assert len(shared) == 1
    assert shared[0]["detail"] == {"addresses": 3, "window_seconds": 3600, "address": "203.0.113.3"}
    state = get_state(site.app)
    with state.store.engine.connect() as conn:
        stored = conn.execute(select(state.tables.feed_tokens.c.addresses)).scalar_one()
    assert not any("203.0.113" in tag for tag in stored)  # only keyed hashes are kept
    # the next window starts counting afresh, and reports again
    state.store.clock = lambda: NOW + timedelta(hours=2)
    for address in ("198.51.100.1", "198.51.100.2", "198.51.100.3"):
        fetch(site, url, address)
    assert len(audit_rows(site, "gold", "feed_token_shared")) == 2


def test_feed_url_needs_a_user_outside_feed_requests(site: Site) -> None:
    with site.app.test_request_context("/"), pytest.raises(RuntimeError, match="signed-in user"):
        feed_url("podcast")
    with site.app.test_request_context("/"):
        url = feed_url("podcast", user=site.users["gold"])
    assert fetch(site, url).status_code == 200


def audit_rows(site: Site, user_id: str, kind: str | None = None) -> list[dict[str, Any]]:
    state = get_state(site.app)
    events = state.tables.events
    query = select(events).where(events.c.user_id == user_id, events.c.kind.startswith("feed_token"))
    if kind is not None:
        query = query.where(events.c.kind == kind)
    with state.store.engine.connect() as conn:
        return [dict(row) for row in conn.execute(query.order_by(events.c.id)).mappings()]


def audit_kinds(site: Site, user_id: str) -> list[str]:
    return [row["kind"] for row in audit_rows(site, user_id)]


def test_the_example_sites_private_feed(tmp_path: Path) -> None:
    """The example site, served for real: a Gold patron copies her feed URL and a feed reader with no cookie reads the
    full posts and the locked wallpaper; a reader who never connected Patreon gets the teasers and no enclosure."""
    import requests

    from tests.helpers.example_server import register, serve_example_site

    config = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'site.db'}", "PATRONLOCK_STRICT_SIGNALS": True}
    with serve_example_site(config) as (base, _):
        ada = register(base, "reader@example.com")
        start = ada.get(base + "/patreon/connect?next=/", allow_redirects=False, timeout=10)
        ada.get(start.headers["Location"], params={"sandbox_user": "ada@example.com", "sandbox_decision": "approve"},
                timeout=10)
        url = re.search(r'value="(http[^"]+/posts\.xml)"', ada.get(base + "/patreon/feed", timeout=10).text)
        assert url is not None
        feed = requests.get(url.group(1), timeout=10)
        assert feed.status_code == 200 and "application/rss+xml" in feed.headers["Content-Type"]
        assert "full masterclass video" in feed.text
        enclosure = re.search(r'<enclosure url="([^"]+)"', feed.text)
        assert enclosure is not None
        wallpaper = requests.get(enclosure.group(1), timeout=10)
        assert wallpaper.status_code == 200 and wallpaper.content.lstrip().startswith(b"<")

        stranger = register(base, "stranger@example.com")
        url = re.search(r'value="(http[^"]+/posts\.xml)"', stranger.get(base + "/patreon/feed", timeout=10).text)
        assert url is not None
        feed = requests.get(url.group(1), timeout=10)
        assert feed.status_code == 200 and "full masterclass video" not in feed.text and "<enclosure" not in feed.text
        assert "Two hours of live painting." in feed.text
