"""The per-worker viewer cache: bounded staleness, invalidation, session stamps, the LRU bound and per-app isolation.

Two apps made by ``make_app`` on the same database stand for two workers: each has its own caches, and only the
database (and the signed session cookie, as a browser would carry it) is shared.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask, jsonify
from flask_login import current_user
from flask_sqlalchemy import SQLAlchemy
from lockhelpers import NOW, Site, count_queries, make_site
from sqlalchemy import delete

from flask_patronlock import PatronLock, locked, signals
from flask_patronlock.locks import SESSION_STAMP_KEY, current_viewer
from flask_patronlock.patron import Patron
from flask_patronlock.policy import Viewer
from flask_patronlock.viewer_cache import ViewerCache
from flask_patronlock.viewers import current_viewer_changed, forget_cached_viewer

TTL = 2.0


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _worker(make_app: Callable[..., Flask], clock: Clock, wall: Clock, **config: Any) -> Site:
    """A site ("a worker") whose viewer cache runs on controlled clocks, with the routes the tests use. Its settings
    are loaded up front and not checked again, so the queries the tests count are the viewer's."""
    config.setdefault("PATRONLOCK_SETTINGS_CHECK_SECONDS", 3600)
    site = make_site(make_app, **config)
    site.ext.lock("premium", tier="Gold")
    site.state.viewers.clock = clock
    site.state.viewers.wall_clock = wall
    for user in ("gold", "silver", "stranger"):
        site.user(user)

    @site.app.route("/premium")
    @locked("premium")
    def premium() -> str:
        return "P"

    @site.app.route("/unlink", methods=["POST"])
    def unlink() -> str:
        """What an unlink view does: remove the link, commit, then viewer_changed()."""
        accounts = site.state.tables.accounts
        with site.state.store.engine.begin() as conn:
            conn.execute(delete(accounts).where(accounts.c.user_id == current_user.get_id()))
        current_viewer_changed()
        return "unlinked"

    @site.app.route("/refresh", methods=["POST"])
    def refresh() -> str:
        """What "refresh my status" does: apply what Patreon says now; no explicit viewer_changed()."""
        site.patron(
            f"m-{current_user.get_id()}",
            f"p-{current_user.get_id()}",
            observed_at=NOW + timedelta(minutes=1),
            entitled_cents=500,
            entitled_tier_ids=("t5",),
        )
        return "refreshed"

    with site.app.app_context():
        site.state.settings.current()
    return site


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def wall() -> Clock:
    return Clock(1_700_000_000.0)


@pytest.fixture
def site(make_app: Callable[..., Flask], clock: Clock, wall: Clock) -> Site:
    site = _worker(make_app, clock, wall)
    site.linked_patron("gold")
    site.linked_patron("silver", entitled_cents=500, entitled_tier_ids=("t5",))
    return site


def _queries(site: Site, path: str, user: str | None, client: Any = None) -> tuple[int, int]:
    """(status, number of queries) of one request."""
    with count_queries(site.app) as queries:
        if client is None:
            status = site.get(path, user).status_code
        else:
            status = client.get(path, headers={"X-User": user} if user else {}).status_code
    return status, len(queries)


def _downgrade(site: Site, user: str, minutes: int = 1) -> None:
    """Gold -> Silver, committed through store.apply by ``site``."""
    site.patron(
        f"m-{user}", f"p-{user}", observed_at=NOW + timedelta(minutes=minutes), entitled_cents=500,
        entitled_tier_ids=("t5",),
    )


# -- expiry and the staleness bound --------------------------------------------------------------------------------


def test_an_entry_is_used_until_the_ttl_then_read_again(site: Site, clock: Clock) -> None:
    assert site.app.config["PATRONLOCK_VIEWER_CACHE_SECONDS"] == TTL
    assert _queries(site, "/premium", "gold") == (200, 1)  # the first page view of the user queries
    clock.now += TTL - 0.01
    assert _queries(site, "/premium", "gold") == (200, 0)
    clock.now += 0.02  # TTL seconds after the read
    assert _queries(site, "/premium", "gold") == (200, 1)
    assert _queries(site, "/premium", "gold") == (200, 0)  # and cached again


def test_a_change_by_another_worker_is_seen_after_the_ttl_not_before(
    make_app: Callable[..., Flask], site: Site, clock: Clock, wall: Clock
) -> None:
    other = _worker(make_app, Clock(), wall)  # another worker on the same database
    assert _queries(site, "/premium", "gold") == (200, 1)
    _downgrade(other, "gold")  # a webhook handled by the other worker
    clock.now += 1.0
    assert _queries(site, "/premium", "gold") == (200, 0)  # stale, and within the bound
    clock.now += TTL - 1.0
    assert _queries(site, "/premium", "gold") == (403, 1)  # TTL seconds after the read: the change is seen
    assert _queries(other, "/premium", "gold") == (403, 1)


def test_only_the_record_is_cached_decisions_use_the_current_time(site: Site, clock: Clock) -> None:
    site.linked_patron(
        "late", patron_status="declined_patron", last_charge_status="Declined",
        last_charge_date=NOW - timedelta(days=6, hours=23),  # one hour left of the 7-day grace
    )
    assert _queries(site, "/premium", "late") == (200, 1)
    site.state.store.clock = lambda: NOW + timedelta(hours=2)  # the grace ends; the record is still cached
    assert _queries(site, "/premium", "late") == (403, 0)


def test_the_cache_off_queries_on_every_page_view(site: Site, clock: Clock) -> None:
    assert _queries(site, "/premium", "gold") == (200, 1)
    site.app.config["PATRONLOCK_VIEWER_CACHE_SECONDS"] = 0  # applies at once, cached entries included
    for _ in range(3):
        assert _queries(site, "/premium", "gold") == (200, 1)
    clock.now += TTL  # (the entry of the first request is still there, but too old now)
    site.app.config["PATRONLOCK_VIEWER_CACHE_SECONDS"] = TTL
    assert _queries(site, "/premium", "gold") == (200, 1)
    assert _queries(site, "/premium", "gold") == (200, 0)


def test_anonymous_visitors_never_query_and_are_not_cached(site: Site) -> None:
    assert _queries(site, "/premium", None) == (403, 0)
    assert None not in site.state.viewers and "None" not in site.state.viewers


def test_not_linked_is_cached_too(site: Site) -> None:
    assert _queries(site, "/premium", "stranger") == (403, 1)
    assert _queries(site, "/premium", "stranger") == (403, 0)
    site.link("stranger", "p-gold-2")  # linked outside flask-patronlock's views: call forget_viewer
    with site.app.app_context():
        forget_cached_viewer("stranger")
    assert _queries(site, "/premium", "stranger") == (403, 1)
    with site.app.test_request_context(headers={"X-User": "stranger"}):
        assert current_viewer().linked


# -- invalidation in this worker -----------------------------------------------------------------------------------


def test_a_committed_patron_change_forgets_that_user_at_once(site: Site) -> None:
    assert _queries(site, "/premium", "gold") == (200, 1)
    assert _queries(site, "/premium", "silver") == (403, 1)
    _downgrade(site, "gold")  # store.apply in this worker: patron-changed after commit
    assert "gold" not in site.state.viewers and "silver" in site.state.viewers
    assert _queries(site, "/premium", "gold") == (403, 1)
    assert _queries(site, "/premium", "silver") == (403, 0)  # other users keep their entries


def test_link_signals_forget_the_user(site: Site) -> None:
    assert _queries(site, "/premium", "gold") == (200, 1)
    accounts = site.state.tables.accounts
    with site.state.store.engine.begin() as conn:
        conn.execute(delete(accounts).where(accounts.c.user_id == "gold"))
    assert _queries(site, "/premium", "gold") == (200, 0)  # nobody said so yet
    # what the connect views send after committing an unlink (or a link)
    signals.patronlock_signals.signal("patron-unlinked").send(
        site.app, user_id="gold", patreon_user_id="p-gold", reason="user"
    )
    assert _queries(site, "/premium", "gold") == (403, 1)
    signals.patronlock_signals.signal("patron-linked").send(site.app, user=None, user_id="gold", patreon_user=None,
                                                            patron=None, via="connect")
    assert "gold" not in site.state.viewers


def test_forget_viewer_with_no_user_forgets_everyone(site: Site) -> None:
    for user in ("gold", "silver", "stranger"):
        site.get("/premium", user)
    assert len(site.state.viewers) == 3
    with site.app.app_context():
        forget_cached_viewer()
    assert len(site.state.viewers) == 0
    assert _queries(site, "/premium", "gold") == (200, 1)


def test_forget_viewer_in_a_request_drops_the_requests_viewer(site: Site) -> None:
    @site.app.route("/unlink-then-check")
    def unlink_then_check() -> Any:
        before = current_viewer().linked
        accounts = site.state.tables.accounts
        with site.state.store.engine.begin() as conn:
            conn.execute(delete(accounts).where(accounts.c.user_id == "gold"))
        forget_cached_viewer("silver")  # someone else: this request's viewer stays
        kept = current_viewer().linked
        forget_cached_viewer("gold")
        return jsonify(before=before, kept=kept, after=current_viewer().linked)

    assert site.get("/unlink-then-check", "gold").get_json() == {"before": True, "kept": True, "after": False}


# -- the viewer's own actions reach every worker: the session stamp --------------------------------------------------


def _carry_session(source: Any, target: Any) -> None:
    """What a browser does: send the session cookie one worker set to the next worker it reaches."""
    cookie = source.get_cookie("session")
    assert cookie is not None, "the session was not stamped"
    target.set_cookie("session", cookie.value)


def test_viewer_changed_makes_the_next_page_fresh_on_another_worker(
    make_app: Callable[..., Flask], site: Site, wall: Clock
) -> None:
    other_clock = Clock()
    other = _worker(make_app, other_clock, wall)  # another worker, the same database and SECRET_KEY
    on_other, on_site = other.app.test_client(), site.app.test_client()
    assert _queries(other, "/premium", "gold", on_other) == (200, 1)  # the other worker caches gold's record
    wall.now += 0.5
    assert on_site.post("/unlink", headers={"X-User": "gold"}).status_code == 200  # unlinks on this worker
    assert site.state.viewers.wall_clock() == wall.now
    _carry_session(on_site, on_other)
    assert _queries(other, "/premium", "gold", on_other) == (403, 1)  # the very next page: fresh
    assert _queries(other, "/premium", "gold", on_other) == (403, 0)  # and cached again, for this session too
    # another session of gold (no stamp) on the other worker gets the fresh entry as well
    assert _queries(other, "/premium", "gold") == (403, 0)


def test_without_the_stamp_another_worker_is_stale_within_the_ttl(
    make_app: Callable[..., Flask], site: Site, wall: Clock
) -> None:
    other_clock = Clock()
    other = _worker(make_app, other_clock, wall)
    on_other = other.app.test_client()
    assert _queries(other, "/premium", "gold", on_other) == (200, 1)
    wall.now += 0.5
    assert site.app.test_client().post("/unlink", headers={"X-User": "gold"}).status_code == 200
    assert _queries(other, "/premium", "gold", on_other) == (200, 0)  # another browser: the bound applies
    other_clock.now += TTL
    assert _queries(other, "/premium", "gold", on_other) == (403, 1)


def test_a_change_to_the_signed_in_users_own_patron_stamps_the_session(
    make_app: Callable[..., Flask], site: Site, wall: Clock
) -> None:
    other = _worker(make_app, Clock(), wall)
    on_other, on_site = other.app.test_client(), site.app.test_client()
    assert _queries(other, "/premium", "gold", on_other) == (200, 1)
    wall.now += 0.5
    assert on_site.post("/refresh", headers={"X-User": "gold"}).status_code == 200  # no explicit viewer_changed()
    _carry_session(on_site, on_other)
    assert _queries(other, "/premium", "gold", on_other) == (403, 1)


def test_changes_to_others_do_not_touch_the_session(site: Site) -> None:
    @site.app.route("/admin/downgrade/<user>", methods=["POST"])
    def admin_downgrade(user: str) -> str:
        _ = current_user.get_id()  # the admin is signed in
        _downgrade(site, user)
        return "ok"

    client = site.app.test_client()
    assert client.post("/admin/downgrade/silver", headers={"X-User": "gold"}).status_code == 200
    assert client.get_cookie("session") is None
    assert client.post("/admin/downgrade/gold").status_code == 200  # a webhook: nobody signed in
    assert client.get_cookie("session") is None


def test_an_entry_read_before_the_stamp_is_not_used(site: Site, wall: Clock) -> None:
    assert _queries(site, "/premium", "gold") == (200, 1)
    client = site.app.test_client()
    with client.session_transaction() as session:
        session[SESSION_STAMP_KEY] = wall.now + 1.0  # a stamp written by another worker, after the read
    assert _queries(site, "/premium", "gold", client) == (200, 1)
    assert _queries(site, "/premium", "gold", client) == (200, 1)  # the clock stands still: still too old
    wall.now += 1.0
    assert _queries(site, "/premium", "gold", client) == (200, 1)  # read at the stamp: fresh enough
    assert _queries(site, "/premium", "gold", client) == (200, 0)
    with client.session_transaction() as session:
        session[SESSION_STAMP_KEY] = "garbage"  # ignored
    assert _queries(site, "/premium", "gold", client) == (200, 0)


def test_viewer_changed_needs_a_request(site: Site) -> None:
    with site.app.app_context(), pytest.raises(RuntimeError, match="forget_cached_viewer"):
        current_viewer_changed()


def test_viewer_changed_for_an_anonymous_visitor_only_stamps(site: Site) -> None:
    @site.app.route("/anon-changed")
    def anon_changed() -> str:
        current_viewer_changed()
        return "ok"

    client = site.app.test_client()
    assert client.get("/anon-changed").status_code == 200
    with client.session_transaction() as session:
        assert session[SESSION_STAMP_KEY] == site.state.viewers.wall_clock()


# -- bounds, isolation, threads ------------------------------------------------------------------------------------


def test_the_cache_keeps_at_most_the_configured_number_of_viewers(site: Site) -> None:
    site.app.config["PATRONLOCK_VIEWER_CACHE_SIZE"] = 2
    assert _queries(site, "/premium", "gold") == (200, 1)
    assert _queries(site, "/premium", "silver") == (403, 1)
    assert _queries(site, "/premium", "gold") == (200, 0)  # gold is now the most recently used
    assert _queries(site, "/premium", "stranger") == (403, 1)  # silver, the least recently used, goes
    assert len(site.state.viewers) == 2 and "silver" not in site.state.viewers
    assert _queries(site, "/premium", "gold") == (200, 0)
    assert _queries(site, "/premium", "silver") == (403, 1)


def test_each_app_has_its_own_cache(make_app: Callable[..., Flask], db_url: str, clock: Clock, wall: Clock) -> None:
    """Two apps in one process, one PatronLock extension: nothing is shared but the database."""
    extension = PatronLock()
    made: list[tuple[Flask, SQLAlchemy]] = []

    def factory(**config: Any) -> Flask:
        app = Flask(f"isolated_{len(made)}")
        app.config.update(TESTING=True, SECRET_KEY="s", SQLALCHEMY_DATABASE_URI=db_url, PATRONLOCK_STRICT_SIGNALS=True)
        app.config.update(config)
        db = SQLAlchemy()
        db.init_app(app)
        extension.init_app(app, db=db)
        with app.app_context():
            db.create_all()
        made.append((app, db))
        return app

    try:
        first = _worker(factory, clock, wall)
        second = _worker(factory, clock, wall)
        assert first.ext is second.ext and first.state.viewers is not second.state.viewers
        first.linked_patron("gold")
        assert _queries(first, "/premium", "gold") == (200, 1)
        assert "gold" in first.state.viewers and "gold" not in second.state.viewers
        assert _queries(second, "/premium", "gold") == (200, 1)
        _downgrade(second, "gold")  # committed by the second app: only its own entry goes
        assert "gold" in first.state.viewers and "gold" not in second.state.viewers
        with second.app.app_context():
            forget_cached_viewer()
        assert "gold" in first.state.viewers
        first.app.config["PATRONLOCK_VIEWER_CACHE_SECONDS"] = 0  # config is per app too
        assert _queries(first, "/premium", "gold") == (403, 1)
        assert _queries(second, "/premium", "gold") == (403, 1)
        assert _queries(second, "/premium", "gold") == (403, 0)
    finally:
        for app, db in made:
            with app.app_context():
                db.engine.dispose()


# -- the cache alone -------------------------------------------------------------------------------------------------


def _record(name: str) -> Viewer:
    return Viewer(authenticated=True, linked=True, patron=Patron(member_id=name))


@pytest.fixture
def cache() -> Iterator[tuple[ViewerCache, Clock, Clock, dict[str, Any]]]:
    clock, wall = Clock(), Clock(5000.0)
    settings: dict[str, Any] = {"ttl": TTL, "size": 3}
    yield (
        ViewerCache(lambda: settings["ttl"], max_entries=lambda: settings["size"], clock=clock, wall_clock=wall),
        clock,
        wall,
        settings,
    )


def test_lru_order_and_bound(cache: tuple[ViewerCache, Clock, Clock, dict[str, Any]]) -> None:
    viewers, _clock, _wall, settings = cache
    loads: list[str] = []

    def get(user: str) -> Viewer:
        return viewers.get(user, lambda: (loads.append(user), _record(user))[1])

    for user in ("a", "b", "c", "a", "d"):  # "a" was used again, so "b" is the least recently used
        get(user)
    assert loads == ["a", "b", "c", "d"] and len(viewers) == 3 and "b" not in viewers
    settings["size"] = 1
    get("e")
    assert len(viewers) == 1 and "e" in viewers


def test_a_read_that_raced_a_forget_is_returned_but_not_cached(
    cache: tuple[ViewerCache, Clock, Clock, dict[str, Any]],
) -> None:
    viewers, _clock, _wall, _settings = cache

    def load_while_someone_commits() -> Viewer:
        viewers.forget("a")  # the change commits (and forgets) while our read is under way
        return _record("old")

    assert viewers.get("a", load_while_someone_commits).patron == Patron(member_id="old")
    assert "a" not in viewers
    viewers.get("a", lambda: _record("new"))
    assert viewers.get("a", lambda: _record("unused")).patron == Patron(member_id="new")

    def load_while_everything_is_forgotten() -> Viewer:
        viewers.forget()
        return _record("old")

    viewers.get("b", load_while_everything_is_forgotten)
    assert len(viewers) == 0


def test_expiry_counts_from_before_the_read(cache: tuple[ViewerCache, Clock, Clock, dict[str, Any]]) -> None:
    viewers, clock, wall, _settings = cache

    def slow_load() -> Viewer:
        clock.now += 0.5  # a slow query
        wall.now += 0.5
        return _record("a")

    viewers.get("a", slow_load)
    clock.now += TTL - 0.5
    assert viewers.get("a", lambda: _record("again")).patron == Patron(member_id="again")
    # read_at is also taken before the read: an entry whose read began before a stamp is not used for it
    stamp = wall.now
    viewers.get("b", slow_load, not_before=stamp)
    assert wall.now == stamp + 0.5  # the read ended half a second after the stamp, but began at it
    assert viewers.get("b", lambda: _record("fresh"), not_before=stamp).patron == Patron(member_id="a")
    assert viewers.get("b", lambda: _record("fresh"), not_before=stamp + 0.1).patron == Patron(member_id="fresh")


def test_threads_share_one_cache_safely(cache: tuple[ViewerCache, Clock, Clock, dict[str, Any]]) -> None:
    viewers, _clock, _wall, settings = cache
    settings["size"] = 50
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(2000):
                user = str((i * 7 + n) % 120)
                record = viewers.get(user, lambda user=user: _record(user))  # type: ignore[misc]
                assert record.patron == Patron(member_id=user)
                if i % 50 == n:
                    viewers.forget(user if i % 100 else None)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(viewers) <= 50


def test_without_a_session_viewer_changed_still_forgets_locally(site: Site) -> None:
    @site.app.route("/changed")
    def changed() -> str:
        current_viewer_changed()
        return "ok"

    assert _queries(site, "/premium", "gold") == (200, 1)
    site.app.secret_key = None  # no session: nothing to stamp, the local entry still goes
    client = site.app.test_client()
    assert client.get("/changed", headers={"X-User": "gold"}).status_code == 200
    assert client.get_cookie("session") is None
    assert "gold" not in site.state.viewers


def test_the_former_names_warn_and_do_the_same(site: Site) -> None:
    from flask import session

    from flask_patronlock import forget_viewer, viewer_changed

    site.get("/premium", "gold")
    assert len(site.state.viewers) == 1
    with site.app.app_context(), pytest.warns(DeprecationWarning, match="forget_cached_viewer"):
        forget_viewer()
    assert len(site.state.viewers) == 0
    with site.app.test_request_context(), pytest.warns(DeprecationWarning, match="current_viewer_changed"):
        viewer_changed()
        assert session[SESSION_STAMP_KEY] == site.state.viewers.wall_clock()
