"""Fast file delivery: ``send_locked_file`` answering with ``X-Accel-Redirect`` / ``X-Sendfile``, confined to
``PATRONLOCK_FILE_ROOT``, and signed download links checked without the database.

The end-to-end half (a real nginx in front of gunicorn, a 200 MB file) is ``test_nginx_*`` at the bottom; it runs when
Debian's ``nginx`` binary is installed (``.ci/run`` installs it) and skips otherwise.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from flask import Flask, render_template_string

from flask_patronlock import ConfigurationError, locked_file_url, send_locked_file, send_signed_file
from flask_patronlock.file_links import (
    InvalidFileLink,
    auth_request_app,
    derive_key,
    link_query,
    sign_file_link,
    verify_file_link,
    verify_file_uri,
)
from tests.helpers.sites import Site, make_site

PNG = b"\x89PNG\r\n\x1a\nfake-image-bytes"
KEY = "k" * 32
OLD_KEY = "o" * 32
ODD_NAME = "Bücher 100%?#&;.pdf"


def _files(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "art.png").write_bytes(PNG)
    (root / "book.pdf").write_bytes(b"%PDF-1.4 secret")
    (root / "sub" / "deep.pdf").write_bytes(b"%PDF-1.4 deep")
    (root / ODD_NAME).write_bytes(b"%PDF-1.4 odd")
    (tmp_path / "outside.txt").write_text("not yours")
    (root / "escape.txt").symlink_to(tmp_path / "outside.txt")  # a symlink out of the root
    (root / "alias.pdf").symlink_to(root / "sub" / "deep.pdf")  # a symlink that stays inside
    return root


def _site(make_app: Callable[..., Flask], tmp_path: Path, **config: Any) -> Site:
    root = _files(tmp_path)
    config.setdefault("PATRONLOCK_FILE_ROOT", str(root))
    site = make_site(make_app, **config)
    site.ext.lock("premium", tier="Gold")

    @site.app.route("/files/<path:name>")
    def serve(name: str) -> object:
        return send_locked_file("premium", name, directory=root)

    @site.app.route("/direct")
    def direct() -> object:
        return send_locked_file("premium", tmp_path / "outside.txt")

    @site.app.route("/link/<path:name>")
    def link(name: str) -> str:
        return locked_file_url("premium", name)

    @site.app.route("/dl/<path:name>")
    def own_download(name: str) -> object:
        return send_signed_file(name, as_attachment=True)

    site.linked_patron("gold")
    site.linked_patron("silver", entitled_cents=500, entitled_tier_ids=("t5",))
    site.user("admin", admin=True)
    return site


@pytest.fixture
def accel(make_app: Callable[..., Flask], tmp_path: Path) -> Site:
    return _site(make_app, tmp_path, PATRONLOCK_FILE_DELIVERY="x-accel-redirect", PATRONLOCK_FILE_URL_KEYS=[KEY])


# -- X-Accel-Redirect and X-Sendfile ---------------------------------------------------------------------------------


def test_allowed_patron_gets_an_x_accel_redirect_not_the_bytes(accel: Site) -> None:
    response = accel.get("/files/art.png", "gold")
    assert response.status_code == 200 and response.data == b""
    assert response.headers["X-Accel-Redirect"] == "/_patronlock_files/art.png"
    assert response.mimetype == "image/png"  # nginx keeps the app's Content-Type
    assert response.headers.get("Content-Length", "0") == "0"  # never the file's size on an empty body
    assert "private" in response.headers["Cache-Control"] and "Cookie" in response.headers["Vary"]
    assert "X-Sendfile" not in response.headers
    deep = accel.get("/files/sub/deep.pdf", "gold")
    assert deep.headers["X-Accel-Redirect"] == "/_patronlock_files/sub/deep.pdf"


def test_a_range_request_is_left_to_nginx(accel: Site) -> None:
    response = accel.get("/files/book.pdf", "gold", headers={"Range": "bytes=0-3", "If-None-Match": "*"})
    assert response.status_code == 200 and "Content-Range" not in response.headers
    assert response.headers["X-Accel-Redirect"] == "/_patronlock_files/book.pdf"


def test_patron_below_the_lock_gets_the_placeholder_or_the_locked_page(accel: Site) -> None:
    image = accel.get("/files/art.png", "silver")
    assert image.status_code == 403 and image.mimetype == "image/svg+xml"
    assert "X-Accel-Redirect" not in image.headers
    page = accel.get("/files/book.pdf", None)
    assert page.status_code == 403 and 'data-patronlock-reason="anonymous"' in page.get_data(as_text=True)
    assert "X-Accel-Redirect" not in page.headers


def test_odd_file_names_are_percent_encoded_once(accel: Site) -> None:
    from urllib.parse import quote

    response = accel.get("/files/" + quote(ODD_NAME), "gold")
    header = response.headers["X-Accel-Redirect"]
    assert re.fullmatch(r"[A-Za-z0-9/_.~%-]+", header), header  # no ?, #, space or raw UTF-8: nginx decodes once
    assert unquote(header) == "/_patronlock_files/" + ODD_NAME


@pytest.mark.parametrize(
    "target",
    [
        "/files/../outside.txt",
        "/files/%2e%2e/outside.txt",
        "/files/sub/..%2F..%2Foutside.txt",  # encoded slashes decode to a path with ..
        "/files/%2Fetc%2Fpasswd",  # an absolute path
        "/files/escape.txt",  # a symlink out of the root
        "/files/sub",  # a directory
        "/files/missing.pdf",
        "/files/a.pdf%0d%0aX-Injected:%20yes",  # CR/LF into the header
        "/files/a%00.pdf",
    ],
)
def test_paths_that_leave_the_root_are_not_found(accel: Site, target: str) -> None:
    response = accel.get(target, "gold", follow_redirects=True)  # "//etc" is redirected to "/etc" first
    assert response.status_code == 404, target
    assert "X-Accel-Redirect" not in response.headers and "X-Injected" not in response.headers
    assert b"not yours" not in response.data


def test_a_symlink_inside_the_root_is_redirected_to_its_target(accel: Site) -> None:
    response = accel.get("/files/alias.pdf", "gold")
    assert response.headers["X-Accel-Redirect"] == "/_patronlock_files/sub/deep.pdf"
    assert response.headers["Content-Disposition"] == "inline; filename=alias.pdf"  # named as asked for


def test_the_apps_own_path_outside_the_root_is_a_configuration_error(accel: Site) -> None:
    with pytest.raises(ConfigurationError, match="outside PATRONLOCK_FILE_ROOT"):
        accel.get("/direct", "gold")


def test_x_sendfile_names_the_real_absolute_path(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    site = _site(make_app, tmp_path, PATRONLOCK_FILE_DELIVERY="x-sendfile")
    root = os.path.realpath(tmp_path / "root")
    response = site.get("/files/alias.pdf", "gold")
    assert response.data == b"" and response.headers["X-Sendfile"] == f"{root}/sub/deep.pdf"
    assert response.mimetype == "application/pdf" and "X-Accel-Redirect" not in response.headers
    from urllib.parse import quote

    odd = site.get("/files/" + quote(ODD_NAME), "gold").headers["X-Sendfile"]
    assert unquote(odd) == f"{root}/{ODD_NAME}" and "?" not in odd and "#" not in odd
    assert site.get("/files/escape.txt", "gold").status_code == 404
    assert site.get("/files/art.png", "silver").mimetype == "image/svg+xml"


def test_python_delivery_with_a_root_sends_bytes_and_refuses_symlinks_out(
    make_app: Callable[..., Flask], tmp_path: Path
) -> None:
    site = _site(make_app, tmp_path)  # PATRONLOCK_FILE_DELIVERY = "python", the default
    with site.get("/files/alias.pdf", "gold") as response:
        assert response.data == b"%PDF-1.4 deep" and "X-Accel-Redirect" not in response.headers
    assert site.get("/files/escape.txt", "gold").status_code == 404


def test_bad_settings_fail_clearly(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="PATRONLOCK_FILE_DELIVERY"):
        make_app(PATRONLOCK_FILE_DELIVERY="nginx")
    site = _site(make_app, tmp_path, PATRONLOCK_FILE_DELIVERY="x-accel-redirect", PATRONLOCK_FILE_ROOT=None)
    with pytest.raises(ConfigurationError, match="PATRONLOCK_FILE_ROOT is not set"):
        site.get("/files/book.pdf", "gold")
    site.app.config.update(PATRONLOCK_FILE_ROOT=str(tmp_path / "root"), PATRONLOCK_X_ACCEL_PREFIX="files?x")
    with pytest.raises(ConfigurationError, match="PATRONLOCK_X_ACCEL_PREFIX"):
        site.get("/files/book.pdf", "gold")


# -- signed links ----------------------------------------------------------------------------------------------------


def _link(site: Site, name: str, user: str = "gold") -> str:
    response = site.get(f"/link/{name}", user)
    assert response.status_code == 200, response.data
    return str(response.get_data(as_text=True))


def _with(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    path = changes.pop("path", parts.path)
    query.update(changes)
    return path + "?" + "&".join(f"{k}={v}" for k, v in query.items())


def test_a_signed_link_serves_the_file_to_whoever_holds_it(accel: Site) -> None:
    url = _link(accel, "sub/deep.pdf")
    assert url.startswith("/patreon/files/sub/deep.pdf?")
    query = parse_qs(urlsplit(url).query)
    assert query["lock"] == ["premium"] and query["user"] == ["gold"]
    assert 290 <= int(query["expires"][0]) - time.time() <= 300
    client = accel.app.test_client()  # no user, no cookie: a download manager, a CDN
    response = client.get(url)
    assert response.status_code == 200 and response.headers["X-Accel-Redirect"] == "/_patronlock_files/sub/deep.pdf"
    assert "private" in response.headers["Cache-Control"]
    own = client.get(url.replace("/patreon/files/", "/dl/"))  # the app's own view, with send_signed_file
    assert own.headers["X-Accel-Redirect"] == "/_patronlock_files/sub/deep.pdf"
    assert own.headers["Content-Disposition"] == "attachment; filename=deep.pdf"


def test_a_signed_link_for_an_odd_name_round_trips(accel: Site) -> None:
    from urllib.parse import quote

    url = _link(accel, quote(ODD_NAME))
    response = accel.app.test_client().get(url)
    assert response.status_code == 200, response.data
    assert unquote(response.headers["X-Accel-Redirect"]) == "/_patronlock_files/" + ODD_NAME


def test_no_link_for_a_viewer_below_the_lock(accel: Site) -> None:
    response = accel.get("/link/book.pdf", "silver")
    assert response.status_code == 403 and 'data-patronlock-reason="amount_too_low"' in response.get_data(as_text=True)
    assert accel.get("/link/book.pdf", None).status_code == 403
    assert accel.get("/link/book.pdf", "admin").status_code == 200  # admins pass every lock


@pytest.mark.parametrize(
    "change",
    [
        {"path": "/patreon/files/book.pdf"},  # another file
        {"lock": "other"},
        {"user": "silver"},  # another viewer
        {"expires": "99999999999"},
        {"sig": "A" * 43},
        {"sig": ""},
        {"expires": "12x"},
    ],
)
def test_a_tampered_link_is_refused(accel: Site, change: dict[str, str]) -> None:
    url = _link(accel, "sub/deep.pdf")
    response = accel.app.test_client().get(_with(url, **change))
    assert response.status_code == 403 and "X-Accel-Redirect" not in response.headers
    assert "not valid" in response.get_data(as_text=True)


def test_a_link_without_a_parameter_or_with_two_is_refused(accel: Site) -> None:
    url = _link(accel, "book.pdf")
    client = accel.app.test_client()
    assert client.get(re.sub(r"&sig=[^&]+", "", url)).status_code == 403
    assert client.get(url + "&user=gold").status_code == 403


def test_an_expired_link_is_refused_after_the_leeway(accel: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    url = _link(accel, "book.pdf")
    expires = int(parse_qs(urlsplit(url).query)["expires"][0])
    client = accel.app.test_client()
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: expires + 29.0)  # inside PATRONLOCK_FILE_URL_LEEWAY (30 s)
    assert client.get(url).status_code == 200
    monkeypatch.setattr(time, "time", lambda: expires + 31.0)
    response = client.get(url)
    assert response.status_code == 403 and "expired" in response.get_data(as_text=True)
    monkeypatch.setattr(time, "time", real_time)


def test_another_signed_in_viewer_cannot_use_a_link(accel: Site) -> None:
    url = _link(accel, "book.pdf")
    client = accel.app.test_client()
    with client.session_transaction() as sess:
        sess["_user_id"] = "silver"  # Flask-Login's session: silver is signed in
    assert client.get(url).status_code == 403
    with client.session_transaction() as sess:
        sess["_user_id"] = "gold"
    assert client.get(url).status_code == 200


def test_links_are_exempt_from_the_site_lock(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    site = _site(make_app, tmp_path, PATRONLOCK_FILE_DELIVERY="x-accel-redirect", PATRONLOCK_SITE_LOCK="premium")
    url = _link(site, "book.pdf")
    assert site.app.test_client().get(url).status_code == 200  # no database read: the link is the permission
    assert site.app.test_client().get("/files/book.pdf").status_code == 403


def test_a_link_to_a_missing_or_escaping_file_is_not_found(accel: Site) -> None:
    client = accel.app.test_client()
    assert client.get(_link(accel, "missing.pdf")).status_code == 404
    assert client.get(_link(accel, "escape.txt")).status_code == 404
    with pytest.raises(ValueError, match=r"'\.\.' segments"):
        accel.get("/link/sub/../../outside.txt", "gold")  # never signed


def test_key_rotation_and_the_secret_key_fallbacks(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    site = _site(make_app, tmp_path, PATRONLOCK_FILE_DELIVERY="x-accel-redirect", PATRONLOCK_FILE_URL_KEYS=[OLD_KEY])
    old_link = _link(site, "book.pdf")
    client = site.app.test_client()
    site.app.config["PATRONLOCK_FILE_URL_KEYS"] = [KEY, OLD_KEY]  # a new key first: old links still work
    assert client.get(old_link).status_code == 200
    new_link = _link(site, "book.pdf")
    assert new_link != old_link and client.get(new_link).status_code == 200
    site.app.config["PATRONLOCK_FILE_URL_KEYS"] = [KEY]  # the old key dropped
    assert client.get(old_link).status_code == 403 and client.get(new_link).status_code == 200
    # no keys of their own: derived from SECRET_KEY, and SECRET_KEY_FALLBACKS keep links of a rotated secret
    site.app.config["PATRONLOCK_FILE_URL_KEYS"] = []
    derived = _link(site, "book.pdf")
    site.app.config.update(SECRET_KEY="a-new-secret", SECRET_KEY_FALLBACKS=["test-secret"])
    assert client.get(derived).status_code == 200
    site.app.config["SECRET_KEY_FALLBACKS"] = []
    assert client.get(derived).status_code == 403
    site.app.config["PATRONLOCK_FILE_URL_KEYS"] = ["short"]
    with pytest.raises(ConfigurationError, match="shorter than 16"):
        client.get(derived)


def test_lifetime_limits(accel: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    with accel.app.test_request_context(headers={"X-User": "gold"}):
        url = locked_file_url("premium", "book.pdf", expires_in=60, external=True)
        assert url.startswith("http://localhost/patreon/files/book.pdf?")
        with pytest.raises(ValueError, match="PATRONLOCK_FILE_URL_MAX_SECONDS"):
            locked_file_url("premium", "book.pdf", expires_in=86401)
        long_url = locked_file_url("premium", "book.pdf", expires_in=86400)
    accel.app.config["PATRONLOCK_FILE_URL_MAX_SECONDS"] = 3600  # lowered: links already issued for longer stop
    client = accel.app.test_client()
    assert client.get(url).status_code == 200 and client.get(long_url).status_code == 403


def test_the_template_global(accel: Site) -> None:
    with accel.app.test_request_context(headers={"X-User": "gold"}):
        html = render_template_string("<a href=\"{{ locked_file_url('premium', 'book.pdf') }}\">")
    assert html.startswith('<a href="/patreon/files/book.pdf?lock=premium&amp;user=gold&amp;expires=')


# -- the pure verifier -----------------------------------------------------------------------------------------------


def test_the_verifier_alone() -> None:
    query = link_query(KEY, "a/b.zip", lock="premium", user_id="42", expires=1_000_000)
    link = verify_file_link([KEY], "a/b.zip", query, now=1_000_000)
    assert (link.path, link.lock, link.user_id, link.expires) == ("a/b.zip", "premium", "42", 1_000_000)
    assert verify_file_link([OLD_KEY, KEY.encode()], "a/b.zip", query, now=999_000).user_id == "42"  # any key verifies
    assert verify_file_link([KEY], "a/b.zip", query, now=1_000_000, user_id="42").path == "a/b.zip"

    def reason(*args: Any, **kwargs: Any) -> str:
        with pytest.raises(InvalidFileLink) as caught:
            verify_file_link(*args, **kwargs)
        return caught.value.reason

    assert reason([KEY], "a/b.zip", query, now=1_000_031) == "expired"
    assert reason([KEY], "a/b.zip", query, now=1_000_031, leeway=0) == "expired"
    assert verify_file_link([KEY], "a/b.zip", query, now=1_000_030).expires == 1_000_000
    assert reason([KEY], "a/b.zip", query, now=1_000_000 - 86400 - 31) == "too_long"
    assert reason([KEY], "a/b.zip", query, now=1_000_000, user_id="43") == "other_viewer"
    assert reason([OLD_KEY], "a/b.zip", query, now=1_000_000) == "bad_signature"
    assert reason([KEY], "a/c.zip", query, now=1_000_000) == "bad_signature"
    assert reason([KEY], "a/../b.zip", query, now=1_000_000) == "malformed"
    assert reason([KEY], "a/b.zip", {**query, "expires": "1e6"}, now=0) == "malformed"
    assert reason([KEY], "a/b.zip", {k: v for k, v in query.items() if k != "user"}, now=0) == "malformed"
    assert reason([KEY], "a/b.zip", {**query, "user": ["42", "43"]}, now=0) == "malformed"
    # the fields cannot be shifted into one another (the message is a JSON array, not a joined string)
    shifted = link_query(KEY, "a/b.zip", lock="premium\n42", user_id="", expires=1_000_000)
    assert reason([KEY], "a/b.zip", {**shifted, "lock": "premium", "user": "42"}, now=0) == "bad_signature"
    for bad in ("", "/abs", "a//b", "./a", "a/.", "a\\b", "a\r\nb", "a\x00b"):
        with pytest.raises(ValueError):
            sign_file_link(KEY, bad, lock="", user_id="", expires=1)
    with pytest.raises(ValueError, match="16 bytes"):
        sign_file_link("short", "a", lock="", user_id="", expires=1)
    assert derive_key("secret") != derive_key("secret2") and len(derive_key("secret")) == 32


def test_the_verifier_from_a_raw_uri() -> None:
    query = link_query(KEY, "ü dir/b 1.zip", lock="premium", user_id="42", expires=1_000_000)
    sig = query["sig"]
    uri = f"/patreon/files/%C3%BC%20dir/b%201.zip?lock=premium&user=42&expires=1000000&sig={sig}"
    assert verify_file_uri([KEY], uri, prefix="/patreon/files", now=1_000_000).path == "ü dir/b 1.zip"
    with pytest.raises(InvalidFileLink):
        verify_file_uri([KEY], uri.replace("/patreon/files/", "/other/"), prefix="/patreon/files/", now=1_000_000)


def test_the_auth_request_app() -> None:
    checker = auth_request_app([KEY], prefix="/patreon/files/")
    query = link_query(KEY, "b.zip", lock="premium", user_id="4\r\n2", expires=int(time.time()) + 60)
    good = "/patreon/files/b.zip?" + "&".join(f"{k}={v.replace(chr(13), '%0D').replace(chr(10), '%0A')}"
                                              for k, v in query.items())
    answers: list[tuple[str, list[tuple[str, str]]]] = []

    def call(uri: str | None) -> tuple[str, dict[str, str]]:
        environ = {} if uri is None else {"HTTP_X_ORIGINAL_URI": uri}
        b"".join(checker(environ, lambda status, headers: answers.append((status, headers))))
        status, headers = answers[-1]
        return status, dict(headers)

    status, headers = call(good)
    assert status.startswith("204") and headers["X-Patronlock-User"] == "4%0D%0A2"
    assert headers["X-Patronlock-Lock"] == "premium"
    status, headers = call(good.replace("b.zip?", "c.zip?"))
    assert status.startswith("403") and headers["X-Patronlock-Reason"] == "bad_signature"
    assert call(None)[0].startswith("403") and call("/patreon/files/%ff?x")[0].startswith("403")
    with pytest.raises(ValueError):
        auth_request_app(["short"], prefix="/")


# -- the real thing: nginx in front of gunicorn ------------------------------------------------------------------------

NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
BIG = 200 * 1024 * 1024

#: The site gunicorn serves: a lock, a locked download, a page issuing signed links, and nginx's auth_request checker
#: mounted at /_check. It signs users in with the X-User header (a test stand-in for a session).
SITE = '''
import os
from datetime import UTC, datetime, timedelta

from flask import Flask, request
from flask_login import LoginManager, UserMixin
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import insert
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from flask_patronlock import MemberSnapshot, PatronLock, TierSnapshot, locked_file_url, send_locked_file
from flask_patronlock.extension import get_state
from flask_patronlock.file_links import auth_request_app

ROOT = os.environ["FILES_ROOT"]
KEY = os.environ["FILES_KEY"]
app = Flask("nginx_site")
app.config.update(
    SECRET_KEY="nginx-test",
    SQLALCHEMY_DATABASE_URI=os.environ["FILES_DB"],
    PATRONLOCK_CAMPAIGN_ID="c1",
    PATRONLOCK_SCHEDULER=False,
    PATRONLOCK_FILE_DELIVERY="x-accel-redirect",
    PATRONLOCK_FILE_ROOT=ROOT,
    PATRONLOCK_X_ACCEL_PREFIX="/_locked/",
    PATRONLOCK_FILE_URL_KEYS=[KEY],
)
db = SQLAlchemy()
db.init_app(app)
patronlock = PatronLock(app, db=db)
patronlock.lock("premium", tier="Gold")


class User(UserMixin):
    def __init__(self, user_id):
        self.id = user_id


manager = LoginManager(app)
manager.request_loader(lambda req: User(req.headers["X-User"]) if req.headers.get("X-User") else None)


@app.get("/files/<path:name>")
def download(name):
    return send_locked_file("premium", name, directory=ROOT)


@app.get("/link/<path:name>")
def link(name):
    return locked_file_url("premium", name)


@app.get("/rss")
def rss():
    with open("/proc/self/status") as status:
        return next(line.split()[1] for line in status if line.startswith("VmRSS:"))


with app.app_context():
    db.create_all()
    state = get_state()
    now = datetime.now(UTC)
    state.store.replace_tiers("c1", [TierSnapshot(id="t5", title="Silver", amount_cents=500),
                                     TierSnapshot(id="t10", title="Gold", amount_cents=1000)])
    for user, cents, tier in (("gold", 1000, "t10"), ("silver", 500, "t5")):
        with state.store.engine.begin() as conn:
            conn.execute(insert(state.tables.accounts).values(user_id=user, patreon_user_id="p-" + user,
                                                              scope="identity"))
        state.store.apply(MemberSnapshot(
            member_id="m-" + user, campaign_id="c1", user_id="p-" + user, patron_status="active_patron",
            last_charge_status="Paid", last_charge_date=now - timedelta(days=3),
            next_charge_date=now + timedelta(days=27), entitled_cents=cents, entitled_tier_ids=(tier,),
            will_pay_cents=cents, lifetime_cents=3 * cents, pledge_start=now - timedelta(days=90),
            pledge_cadence=1), source="sync", observed_at=now)

application = DispatcherMiddleware(app, {"/_check": auth_request_app([KEY], prefix="/signed/")})
'''


def _nginx_conf(tmp: Path, port: int, upstream: int, root: Path) -> str:
    """nginx on loopback, as the current user, everything it writes inside ``tmp``: the docs' example, verbatim in
    its locations."""
    temp = tmp / "nginx"
    # as root, nginx's workers would switch to "nobody", who cannot read the test's private temporary directory
    user = ""
    if os.geteuid() == 0:
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};"
    return textwrap.dedent(f"""
        {user}
        daemon off;
        worker_processes 1;
        pid {temp}/nginx.pid;
        error_log {temp}/error.log info;
        events {{ worker_connections 64; }}
        http {{
            log_format files '$request_uri $status $body_bytes_sent upstream=$upstream_response_length';
            access_log {temp}/access.log files;
            client_body_temp_path {temp}/body;
            proxy_temp_path {temp}/proxy;
            fastcgi_temp_path {temp}/fastcgi;
            uwsgi_temp_path {temp}/uwsgi;
            scgi_temp_path {temp}/scgi;
            types {{ application/pdf pdf; application/octet-stream bin; }}
            server {{
                listen 127.0.0.1:{port};
                # X-Accel-Redirect answers land here; a client asking for it directly gets a 404
                location /_locked/ {{
                    internal;
                    alias {root}/;
                }}
                # signed links checked by the auth_request app, the file sent by nginx: no Flask request at all
                location /signed/ {{
                    auth_request /_check;
                    alias {root}/;
                }}
                location = /_check {{
                    internal;
                    proxy_pass http://127.0.0.1:{upstream};
                    proxy_pass_request_body off;
                    proxy_set_header Content-Length "";
                    proxy_set_header X-Original-URI $request_uri;
                }}
                location / {{
                    proxy_pass http://127.0.0.1:{upstream};
                    proxy_set_header Host $host;
                }}
            }}
        }}
    """)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(what: str, check: Callable[[], bool], procs: list[subprocess.Popen[bytes]], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"{proc.args!r} exited with {proc.returncode} while waiting for {what}")
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).close()
        return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def _get(url: str, user: str | None = None) -> tuple[int, dict[str, str], int, bytes]:
    """``(status, headers, body length, first bytes)``, the body read in chunks (never held whole)."""
    request = urllib.request.Request(url, headers={"X-User": user} if user else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as error:
        response = error
    with response:
        head = response.read(64)
        size = len(head)
        while chunk := response.read(1 << 20):
            size += len(chunk)
        return response.status, dict(response.headers), size, head


@pytest.fixture
def nginx_site(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    root = tmp_path / "files"
    root.mkdir()
    with (root / "big.bin").open("wb") as big:  # 200 MB of real bytes (a sparse file reads as zeros alike)
        block = os.urandom(1 << 20)
        for _ in range(BIG >> 20):
            big.write(block)
    (root / "book.pdf").write_bytes(b"%PDF-1.4 secret")
    (tmp_path / "nginx").mkdir()
    (tmp_path / "nginx_site.py").write_text(SITE)
    port, upstream = _free_port(), _free_port()
    (tmp_path / "nginx.conf").write_text(_nginx_conf(tmp_path, port, upstream, root))
    env = {**os.environ, "FILES_ROOT": str(root), "FILES_KEY": KEY, "FILES_DB": f"sqlite:///{tmp_path / 'site.db'}",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        for name, args in (
            ("gunicorn", [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{upstream}", "-w", "1",
                          "--no-control-socket", "nginx_site:application"]),
            ("nginx", [NGINX, "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path / "nginx"),
                       "-e", str(tmp_path / "nginx" / "error.log")]),
        ):
            log = (tmp_path / f"{name}.log").open("wb")
            logs.append(log)
            procs.append(subprocess.Popen(args, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
        base = f"http://127.0.0.1:{port}"
        _wait("gunicorn", lambda: _answers(f"http://127.0.0.1:{upstream}/rss"), procs)
        _wait("nginx", lambda: _answers(base + "/rss"), procs)
        yield base, tmp_path
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        for log in logs:
            log.close()
        (root / "big.bin").unlink()  # pytest keeps the last runs' temporary directories: not 200 MB each


@pytest.mark.slow
def test_nginx_sends_the_200_mb_file_while_the_worker_stays_flat(nginx_site: tuple[str, Path]) -> None:
    base, tmp = nginx_site
    rss = [int(_get(base + "/rss")[3]) for _ in range(3)][-1]  # kB, after a few requests have warmed the worker
    status, headers, size, head = _get(base + "/files/big.bin", "gold")
    assert status == 200 and size == BIG, (status, headers)
    assert head == (tmp / "files" / "big.bin").read_bytes()[:64]
    assert headers["Content-Length"] == str(BIG) and "X-Accel-Redirect" not in headers  # nginx consumed it
    assert headers["Content-Type"] == "application/octet-stream" and "private" in headers["Cache-Control"]
    after = int(_get(base + "/rss")[3])
    assert after - rss < 20 * 1024, f"the worker grew from {rss} kB to {after} kB serving the file"
    # nginx sent the 200 MB; the worker sent an empty body
    log = (tmp / "nginx" / "access.log").read_text().splitlines()
    assert f"/files/big.bin 200 {BIG} upstream=0" in log, log

    # a patron below the lock gets the locked page, not the file; nobody reaches the internal location directly
    status, headers, size, head = _get(base + "/files/big.bin", "silver")
    assert status == 403 and size < 100_000 and headers["Content-Type"].startswith("text/html")
    assert _get(base + "/_locked/big.bin", "gold")[0] == 404
    assert _get(base + "/files/../files/big.bin", "silver")[0] in (403, 404)

    # a signed link: through the app (which answers X-Accel-Redirect), and checked by nginx's auth_request alone
    path = _link_path(base, "book.pdf")
    status, headers, size, head = _get(base + path)  # no user: whoever holds the link
    assert (status, head) == (200, b"%PDF-1.4 secret")
    signed = path.replace("/patreon/files/", "/signed/")
    status, headers, size, head = _get(base + signed)
    assert (status, head) == (200, b"%PDF-1.4 secret")
    assert _get(base + signed.replace("sig=", "sig=x"))[0] == 403
    assert _get(base + signed.replace("book.pdf", "big.bin"))[0] == 403  # a link names one file
    assert _get(base + "/link/book.pdf", "silver")[0] == 403  # and is issued only to who passes the lock
    big_link = _link_path(base, "big.bin")
    assert _get(base + big_link)[2] == BIG
    assert _get(base + big_link.replace("/patreon/files/", "/signed/"))[2] == BIG
    assert int(_get(base + "/rss")[3]) - rss < 20 * 1024


def _link_path(base: str, name: str) -> str:
    request = urllib.request.Request(f"{base}/link/{name}", headers={"X-User": "gold"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(response.read().decode())
