"""URL-prefix locks (``PATRONLOCK_PATH_LOCKS`` and the settings page's URL locks) hold for every spelling of a
locked URL an attacker can send: dot segments (plain and percent-encoded), repeated slashes, trailing slashes,
encoded slashes, backslashes and other letter cases. Each attack is sent three ways: through the test client (which
decodes the URL once, as a server does), with a raw ``PATH_INFO`` (what a server that does not decode, or a
double-encoded URL, hands the app), and as a raw request line to a real HTTP server."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, send_from_directory
from sqlalchemy import insert
from werkzeug.serving import make_server

from flask_patronlock import ConfigurationError
from flask_patronlock.paths import normalize_prefix, path_locks_for
from flask_patronlock.settings import ROUTING_KEY, Routing, set_routing
from tests.helpers.example_server import send_raw
from tests.helpers.sites import Site, make_site

SECRET = b"GOLD-ONLY-BYTES"
PUBLIC = b"anyone may read this"

#: Targets that reach the locked file through ``send_from_directory`` when nothing stops them (a Gold patron gets the
#: file through each): every one must be 403 for a visitor who may not see the lock.
REACH_THE_FILE = [
    "/files/premium/a.txt",
    "/files/./premium/a.txt",
    "/files/x/../premium/a.txt",
    "/files/%2e/premium/a.txt",
    "/files/%2E/premium/a.txt",
    "/files/x/%2e%2e/premium/a.txt",
    "/files/x/%2E%2e/premium/a.txt",
    "/files/x/.%2E/premium/a.txt",
    "/files/x/%2e./premium/a.txt",
    "/files/.%2fpremium/a.txt",
    "/files/premium//a.txt",
    "/files/premium/./a.txt",
    "/files/premium/a.txt/",
    "/files/premium%2Fa.txt",
    "/files/premium%2fa.txt",
    "/files/%2e%2Fpremium%2F%2E%2Fa.txt",
    "/files/a/.../../../premium/a.txt",  # "..." is a name on POSIX, not a step up
]
#: Targets the URL map answers with a redirect to the canonical URL (merged slashes): never the file.
REDIRECTED = ["/files//premium/a.txt", "/files///premium/a.txt"]
#: Targets no route serves the file from on this (case-sensitive, POSIX) machine, but that name the locked folder on a
#: case-insensitive file system, a Windows one, or in an app that decodes its argument again: locked all the same.
LOCKED_ANYWAY = [
    "/files/PREMIUM/a.txt",
    "/files/Premium/a.txt",
    "/files/premium\\a.txt",
    "/files/x\\..\\premium/a.txt",
    "/files/%252e/premium/a.txt",
    "/files/premium%252Fa.txt",
    "/files/premium./a.txt",
    "/files/premium%20/a.txt",
]
#: What the lock must leave open: the rule is whole segments, so neither a sibling file nor a longer name matches.
OPEN = ["/files/pub.txt", "/files/./pub.txt", "/files/premium.txt", "/files/premiumx/b.txt", "/files/x/../pub.txt"]


@pytest.fixture
def files(tmp_path: Path) -> Path:
    root = tmp_path / "files"
    (root / "premium").mkdir(parents=True)
    (root / "premium" / "a.txt").write_bytes(SECRET)
    (root / "premiumx").mkdir()
    (root / "premiumx" / "b.txt").write_bytes(PUBLIC)
    (root / "pub.txt").write_bytes(PUBLIC)
    (root / "premium.txt").write_bytes(PUBLIC)
    return root


def files_site(make_app: Callable[..., Flask], files: Path, **config: Any) -> Site:
    site = make_site(make_app, **config)
    site.ext.lock("premium", tier="Gold")

    @site.app.get("/files/<path:name>")
    def serve(name: str) -> Any:
        return send_from_directory(files, name)

    site.linked_patron("gold")
    site.linked_patron("silver", entitled_cents=500, entitled_tier_ids=("t5",))
    return site


@pytest.fixture(params=["config", "settings page"])
def site(request: pytest.FixtureRequest, make_app: Callable[..., Flask], files: Path) -> Site:
    """The lock set in the configuration, or stored from the settings page (which wins over the configuration)."""
    if request.param == "config":
        return files_site(make_app, files, PATRONLOCK_PATH_LOCKS={"/files/premium": "premium"})
    site = files_site(make_app, files, PATRONLOCK_PATH_LOCKS={"/files/elsewhere": "premium"})
    with site.app.app_context():
        set_routing({"path_locks": {"/files/premium": "premium"}})
    return site


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    location: str | None = None


def get(site: Site, target: str, user: str | None, *, raw: bool = False, **kwargs: Any) -> Answer:
    """GET ``target`` through the test client (which decodes it once, like a server) or, with ``raw``, with a
    ``PATH_INFO`` of exactly ``target`` (what a server that does not decode, or a double-encoded URL, hands the app)."""
    if raw:
        kwargs["environ_overrides"] = {"PATH_INFO": target}
        target = "/"
    with site.get(target, user, **kwargs) as response:
        return Answer(response.status_code, response.get_data(), response.headers.get("Location"))


@contextmanager
def served(app: Flask) -> Iterator[Callable[[str, str | None], tuple[int, bytes]]]:
    """``send(target, user) -> (status, body)`` to ``app`` on a real HTTP server, the request line sent byte for byte
    as given (``requests`` and browsers would resolve dot segments first; an attacker's client does not)."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    base = f"http://127.0.0.1:{server.server_port}"

    def send(target: str, user: str | None) -> tuple[int, bytes]:
        return send_raw(base, target, {"X-User": user} if user else None)

    try:
        yield send
    finally:
        server.shutdown()
        thread.join(5)


@pytest.mark.parametrize("target", REACH_THE_FILE)
def test_every_spelling_that_reaches_the_locked_file_is_locked(site: Site, target: str) -> None:
    assert get(site, target, "gold") == Answer(200, SECRET)  # the attack does reach the file
    for user in (None, "silver"):
        denied = get(site, target, user)
        assert denied.status == 403 and SECRET not in denied.body, (target, user)


@pytest.mark.parametrize("target", REACH_THE_FILE + REDIRECTED + LOCKED_ANYWAY)
def test_a_raw_path_never_gives_the_file_away(site: Site, target: str) -> None:
    for user in (None, "silver"):
        denied = get(site, target, user, raw=True)
        assert SECRET not in denied.body, (target, user)
        assert denied.status in (403, 308), (target, user)
        if denied.status == 308:  # the URL map's canonical URL is the plain one, which is locked
            assert denied.location is not None and denied.location.endswith("/files/premium/a.txt")
            assert get(site, "/files/premium/a.txt", user).status == 403


@pytest.mark.parametrize("target", LOCKED_ANYWAY)
def test_other_cases_backslashes_and_double_encoding_are_locked_too(site: Site, target: str) -> None:
    assert get(site, target, None).status == 403
    assert get(site, target, "gold").status == 404  # the lock passes; this machine has no such file


@pytest.mark.parametrize("target", REDIRECTED)
def test_repeated_slashes_redirect_to_the_locked_url(site: Site, target: str) -> None:
    response = get(site, target, None)
    assert response.status == 308 and response.location is not None
    assert response.location.endswith("/files/premium/a.txt")
    assert get(site, target, None, follow_redirects=True).status == 403


@pytest.mark.parametrize("target", OPEN)
def test_what_the_lock_does_not_cover_stays_open(site: Site, target: str) -> None:
    for raw in (False, True):
        assert get(site, target, None, raw=raw) == Answer(200, PUBLIC), (target, raw)


def test_a_real_server_sees_the_attacks_byte_for_byte(site: Site) -> None:
    with served(site.app) as send:
        assert send("/files/premium/a.txt", "gold") == (200, SECRET)
        assert send("/files/./premium/a.txt", "gold") == (200, SECRET)  # the server does not resolve it
        for target in REACH_THE_FILE + REDIRECTED + LOCKED_ANYWAY:
            status, body = send(target, None)
            assert SECRET not in body and status in (403, 308), target
        assert send("/files/./pub.txt", None) == (200, PUBLIC)


def test_a_path_that_reads_as_locked_before_resolving_is_locked(make_app: Callable[..., Flask], files: Path) -> None:
    """A route may use its argument as written (a page slug, a database key): a URL that reads as under the locked
    prefix is locked even when its dot segments resolve elsewhere."""
    site = files_site(make_app, files, PATRONLOCK_PATH_LOCKS={"/files/premium": "premium"})
    assert get(site, "/files/premium/../pub.txt", None).status == 403
    assert get(site, "/files/premium/../pub.txt", "gold") == Answer(200, PUBLIC)


def test_longest_prefix_of_each_reading_applies(make_app: Callable[..., Flask]) -> None:
    site = make_site(make_app, PATRONLOCK_PATH_LOCKS={"/members": "basic", "/members/vip": "vip"})
    site.ext.lock("basic", tier="Silver")
    site.ext.lock("vip", tier="Gold")

    @site.app.get("/members/<path:rest>")
    def members(rest: str) -> str:
        return "members:" + rest

    site.linked_patron("silver", entitled_cents=500, entitled_tier_ids=("t5",))
    site.linked_patron("gold")
    assert site.get("/members/news", "silver").status_code == 200
    for target in ("/members/./vip/lounge", "/members/news/../vip/lounge", "/members/%2e/VIP/lounge",
                   "/members/vip/../news"):
        assert site.get(target, "silver").status_code == 403, target
        assert site.get(target, "gold").status_code == 200, target
        assert site.get(target, None).status_code == 403, target


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("/files/premium", "/files/premium"),
        ("/files/premium/", "/files/premium"),
        ("/files/./premium", "/files/premium"),
        ("/files//premium//", "/files/premium"),
        ("/files/x/../premium", "/files/premium"),
        ("/files/%70remium", "/files/%70remium"),  # kept as typed; it matches /files/premium all the same
        ("/files\\premium", "/files/premium"),
        ("/", "/"),
        ("//", "/"),
        (" /Files/Premium ", "/Files/Premium"),
    ],
)
def test_prefixes_are_stored_in_one_spelling(typed: str, stored: str) -> None:
    assert normalize_prefix(typed) == stored
    assert Routing.from_dict({"path_locks": {typed: "premium"}}).path_locks == {stored: "premium"}


@pytest.mark.parametrize(
    ("typed", "error"),
    [
        ("premium", "starting with '/'"),
        ("files/premium", "starting with '/'"),
        ("https://example.com/files", "starting with '/'"),
        ("", "starting with '/'"),
        ("/files/prem ium", "spaces"),
        ("/files/\tpremium", "spaces"),
    ],
)
def test_prefixes_that_cannot_be_a_url_path_are_refused(typed: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        normalize_prefix(typed)
    with pytest.raises(ValueError, match=error):
        Routing.from_dict({"path_locks": {typed: "premium"}})


def test_two_spellings_of_one_prefix_are_one_prefix() -> None:
    with pytest.raises(ValueError, match="same URL"):
        Routing.from_dict({"path_locks": {"/files/premium": "premium", "/files/./Premium/": "other"}})
    same = Routing.from_dict({"path_locks": {"/files/premium": "premium", "/files/premium/": "premium"}})
    assert same.path_locks == {"/files/premium": "premium"}


def test_stored_twins_with_different_locks_both_apply(make_app: Callable[..., Flask], files: Path) -> None:
    """Routing stored before prefixes were normalised may hold two spellings of one URL with different locks: reading
    it back keeps both (dropping either, or the whole routing, would open what it locked)."""
    site = files_site(make_app, files)
    site.ext.lock("silver", tier="Silver")
    twins = {"site_lock": None, "path_locks": {"/files/premium/": "premium", "/Files/Premium": "silver"}}
    with site.app.app_context():
        state = site.state
        with state.store.engine.begin() as conn:  # what an earlier version could store
            conn.execute(insert(state.tables.settings).values(key=ROUTING_KEY, value=twins))
            state.store.bump_settings_version(conn)
        state.settings.invalidate()
        assert state.settings.current().routing == Routing(None, twins["path_locks"])
    assert get(site, "/files/premium/a.txt", "silver").status == 403  # Silver is not Gold
    assert get(site, "/files/./premium/a.txt", "gold") == Answer(200, SECRET)  # Gold is Silver and up
    assert path_locks_for(twins["path_locks"], "/files/premium/a.txt") == ("premium", "silver")


def test_the_configured_prefixes_are_checked(make_app: Callable[..., Flask], files: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"PATRONLOCK_PATH_LOCKS.*starting with '/'"):
        make_app(PATRONLOCK_PATH_LOCKS={"files/premium": "premium"})
    site = files_site(make_app, files)
    site.app.config["PATRONLOCK_PATH_LOCKS"] = {"files/premium": "premium"}  # set after init_app: checked on use
    with pytest.raises(ConfigurationError, match="PATRONLOCK_PATH_LOCKS"):
        get(site, "/files/premium/a.txt", None)
    for spelling in ("/files/premium/", "/files/./premium", "/FILES/PREMIUM"):
        site.app.config["PATRONLOCK_PATH_LOCKS"] = {spelling: "premium"}
        assert get(site, "/files/premium/a.txt", None).status == 403, spelling
        assert get(site, "/files/pub.txt", None) == Answer(200, PUBLIC), spelling


def test_path_locks_for_reads_both_spellings() -> None:
    table = {"/members": "basic", "/members/vip": "vip", "/": "site"}
    assert path_locks_for(table, "/elsewhere") == ("site",)
    assert path_locks_for(table, "/members") == ("basic",)
    assert path_locks_for(table, "/members/vip/x") == ("vip",)
    assert path_locks_for(table, "/members/./vip/x") == ("basic", "vip")
    assert path_locks_for(table, "/members/vip/../x") == ("vip", "basic")
    assert path_locks_for({"/members": "basic"}, "/membership") == ()
    assert path_locks_for({}, "/members") == ()
