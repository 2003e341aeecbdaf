"""Patreon failing during the connect flow (requests-mock: what the sandbox cannot produce): the token endpoint down
or timing out, 5xx, rate limits, refused credentials. Each gives a clear page with what to do, never a 500, and
never shows a token or a secret."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests
import requests_mock as rm
from flask import Flask

from flask_patronlock.patreon import client as client_module
from tests.helpers.connect import (
    MOCK_CONFIG,
    MOCK_IDENTITY_URL,
    MOCK_TOKEN_URL,
    ConnectSite,
    identity_doc,
    log_in,
    make_connect_site,
    problem_kind,
    start,
    token_json,
)


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module.PatreonClient, "_backoff", lambda self, retry: 0.0)


@pytest.fixture
def site(make_app: Callable[..., Flask]) -> ConnectSite:
    return make_connect_site(make_app, **MOCK_CONFIG)


def connect_and_call_back(site: ConnectSite, **mock_kw: Any) -> tuple[int, str]:
    client = site.app.test_client()
    log_in(client, site.add_user("kopi@example.com"))
    params = start(client, next="/posts/1")
    response = client.get("/patreon/callback", query_string={"code": "the-code", "state": params["state"]})
    return response.status_code, response.get_data(as_text=True)


FAILURES: list[tuple[str, dict[str, Any], int, str]] = [
    ("token endpoint refuses connections", {"exc": requests.exceptions.ConnectionError("refused")}, 502,
     "patreon_unavailable"),
    ("token endpoint times out", {"exc": requests.exceptions.ReadTimeout("slow")}, 502, "patreon_unavailable"),
    ("token endpoint 500", {"status_code": 500, "text": "oops"}, 502, "patreon_unavailable"),
    ("token endpoint 503 html", {"status_code": 503, "text": "<html>maintenance</html>"}, 502, "patreon_unavailable"),
    ("token endpoint rate limits", {"status_code": 429, "json": {"errors": [{"retry_after_seconds": 60}]}}, 503,
     "patreon_rate_limited"),
    ("client credentials refused", {"status_code": 401, "json": {"error": "invalid_client"}}, 502, "client_rejected"),
    ("code already used", {"status_code": 400, "json": {"error": "invalid_grant"}}, 400, "code_rejected"),
    ("token answer not JSON", {"status_code": 200, "text": "not json"}, 502, "patreon_unavailable"),
]  # fmt: skip


@pytest.mark.parametrize(("why", "mock_kw", "status", "kind"), FAILURES, ids=[f[0] for f in FAILURES])
def test_token_endpoint_failures_give_a_clear_page(
    site: ConnectSite, requests_mock: rm.Mocker, why: str, mock_kw: dict[str, Any], status: int, kind: str
) -> None:
    requests_mock.post(MOCK_TOKEN_URL, **mock_kw)
    code, html = connect_and_call_back(site)
    assert (code, problem_kind(html)) == (status, kind), html
    assert "What to do" in html
    for secret in ("client-secret", "the-code", "access-1"):
        assert secret not in html
    with site.app.app_context():
        from flask_patronlock.accounts import get_accounts

        assert get_accounts().get("1") is None  # nothing linked


IDENTITY_FAILURES: list[tuple[str, dict[str, Any]]] = [
    ("identity 502", {"status_code": 502, "text": "bad gateway"}),
    ("identity times out", {"exc": requests.exceptions.ReadTimeout("slow")}),
    ("identity malformed", {"json": {"data": "nope"}}),
]


@pytest.mark.parametrize(("why", "mock_kw"), IDENTITY_FAILURES, ids=[f[0] for f in IDENTITY_FAILURES])
def test_identity_failures_give_a_clear_page(
    site: ConnectSite, requests_mock: rm.Mocker, why: str, mock_kw: dict[str, Any]
) -> None:
    requests_mock.post(MOCK_TOKEN_URL, json=token_json())
    requests_mock.get(MOCK_IDENTITY_URL, **mock_kw)
    code, html = connect_and_call_back(site)
    assert (code, problem_kind(html)) == (502, "patreon_unavailable"), html
    assert "access-1" not in html and "refresh-1" not in html


def test_retry_after_is_sent_when_rate_limited(site: ConnectSite, requests_mock: rm.Mocker) -> None:
    requests_mock.post(MOCK_TOKEN_URL, status_code=429, headers={"Retry-After": "120"}, json={})
    client = site.app.test_client()
    log_in(client, site.add_user("kopi@example.com"))
    params = start(client)
    response = client.get("/patreon/callback", query_string={"code": "c", "state": params["state"]})
    assert response.status_code == 503 and int(response.headers["Retry-After"]) >= 30


def test_connect_with_requests_mock_end_to_end(site: ConnectSite, requests_mock: rm.Mocker) -> None:
    requests_mock.post(MOCK_TOKEN_URL, json=token_json())
    requests_mock.get(MOCK_IDENTITY_URL, json=identity_doc("pu1", member={}))
    client = site.app.test_client()
    log_in(client, site.add_user("local@example.com"))
    params = start(client, next="/posts/1")
    assert params["redirect_uri"] == "http://site.test/patreon/callback"
    assert params["code_challenge_method"] == "S256" and params["code_challenge"]
    assert params["scope"] == "identity identity[email] identity.memberships"
    response = client.get("/patreon/callback", query_string={"code": "c", "state": params["state"]})
    assert response.status_code == 302 and response.location == "/posts/1"
    body = requests_mock.request_history[0].text
    assert "code_verifier=" in body and "redirect_uri=http%3A%2F%2Fsite.test%2Fpatreon%2Fcallback" in body
    flashes = client.get("/_test/session").get_json()["flashes"]
    assert flashes == [
        "Connected your Patreon account (kopi@…). You're a Silver patron: posts for Silver and below are unlocked."
    ]
