"""Serve the example site for real (threaded, on a free loopback port): the site calls the sandbox mounted inside it
over HTTP, so a test client alone cannot drive it."""

from __future__ import annotations

import http.client
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import requests
from flask import Flask
from werkzeug.serving import make_server

from flask_patronlock.insight import flush_banner_views

#: the hidden CSRF field of the site's forms.
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def form_token(http: requests.Session, url: str) -> str:
    """The CSRF token of the form on the page at ``url``, as a browser would read it in ``http``'s session."""
    page = http.get(url, timeout=10)
    found = CSRF.search(page.text)
    assert found, page.text
    return found.group(1)


def register(base: str, email: str, password: str = "correct horse", http: requests.Session | None = None) -> Any:
    """Register through the site's form (token included); returns the logged-in session (a reader's: the demo's
    creator is prepared, see :func:`sign_in`)."""
    http = http if http is not None else requests.Session()
    token = form_token(http, base + "/register")
    page = http.post(base + "/register", data={"csrf_token": token, "email": email, "password": password}, timeout=10)
    assert page.status_code == 200, page.text
    return http


def sign_in(base: str, who: str = "creator", http: requests.Session | None = None) -> Any:
    """Sign in to one of the demo's prepared accounts with its one-click button (``"creator"``: Kopi, the site's
    admin; ``"reader"``: Sam); returns the session."""
    http = http if http is not None else requests.Session()
    token = form_token(http, base + "/")
    page = http.post(base + f"/demo/sign-in/{who}", data={"csrf_token": token}, timeout=10)
    assert page.status_code == 200 and "Signed in as" in page.text, page.text
    return http


def send_raw(base: str, target: str, headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
    """``(status, body)`` of a GET of ``target`` from the server at ``base``, the request line sent byte for byte as
    given: ``requests`` and browsers resolve dot segments first, an attacker's client does not."""
    host, _, port = base.removeprefix("http://").partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.putrequest("GET", target, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@contextmanager
def serve_example_site(config: dict[str, Any]) -> Iterator[tuple[str, Flask]]:
    """``(base_url, app)`` of the example site built with ``config``; stops the server, the background jobs and the
    sandbox's webhook worker, and closes the database connections afterwards."""
    from example_site import create_app
    from example_site.app import db

    config = {"EXAMPLE_LARGE_FILE_MB": 0.25, **config}  # the demo's large download, kept small unless a test asks
    holder: dict[str, Any] = {}
    server = make_server("127.0.0.1", 0, lambda env, start: holder["app"](env, start), threaded=True)
    base = f"http://127.0.0.1:{server.server_port}"
    app = create_app(config, base_url=base)
    holder["app"] = app
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield base, app
    finally:
        server.shutdown()
        thread.join(5)
        app.extensions["patronlock"].jobs.stop(5)
        sandbox = app.extensions.get("example_sandbox")
        if sandbox is not None:
            sandbox.stop_webhook_worker()
        # banner views a page queued: written now, not at exit into tables a fixture has dropped by then
        flush_banner_views(app.extensions["patronlock"])
        with app.app_context():
            db.engine.dispose()
