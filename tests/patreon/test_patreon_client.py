"""PatreonClient against requests-mock: query strings, pagination, retries, rate limits, errors, OAuth, secrecy."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import requests_mock as rm
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from flask_patronlock.patreon import (
    MEMBER_FIELDS,
    Forbidden,
    InvalidGrant,
    MalformedDocument,
    MemberPage,
    NotFound,
    PaginationError,
    PatreonAPIError,
    PatreonClient,
    PatreonError,
    RateLimited,
    RateLimiter,
    SchemaDrift,
    ServerError,
    TokenError,
    TransportError,
    Unauthorized,
    pkce_pair,
    shared_rate_limiter,
)
from flask_patronlock.patreon.client import MAX_EMPTY_PAGES

BASE = "https://patreon.test"
API = f"{BASE}/api/oauth2/v2"
TOKEN_URL = f"{BASE}/api/oauth2/token"
ACCESS_TOKEN = "access-SECRET-aaaa1111"
CLIENT_SECRET = "client-SECRET-bbbb2222"
REFRESH_TOKEN = "refresh-SECRET-cccc3333"
SECRETS = (ACCESS_TOKEN, CLIENT_SECRET, REFRESH_TOKEN)


class Sleeps(list[float]):
    """An injectable ``sleep`` that records instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def make_client(sleeps: Sleeps) -> Iterator[Callable[..., PatreonClient]]:
    made: list[PatreonClient] = []

    def factory(**kwargs: Any) -> PatreonClient:
        options: dict[str, Any] = {
            "client_id": "client-id",
            "client_secret": CLIENT_SECRET,
            "access_token": ACCESS_TOKEN,
            "api_base": BASE,
            "oauth_base": BASE,
            "sleep": sleeps,
            "rate_limiter": RateLimiter(max_calls=1_000_000, period=1.0),
        }
        options.update(kwargs)
        client = PatreonClient(**options)
        made.append(client)
        return client

    yield factory
    for client in made:
        client.close()


@pytest.fixture
def pc(make_client: Callable[..., PatreonClient]) -> PatreonClient:
    return make_client()


def last(mocker: rm.Mocker) -> Any:
    """The last request requests-mock saw (failing if there was none)."""
    request = mocker.last_request
    assert request is not None
    return request


def query(request: Any) -> dict[str, list[str]]:
    """The request's query string, decoded, case preserved (requests-mock's ``qs`` lowercases)."""
    return parse_qs(urlsplit(request.url).query)


def assert_no_secrets(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"secret leaked into {text!r}"


def member(member_id: str, cents: int = 500) -> dict[str, Any]:
    return {
        "type": "member",
        "id": member_id,
        "attributes": {
            # every attribute access depends on is served (null where unknown), as Patreon serves what was asked for
            "currently_entitled_amount_cents": cents,
            "patron_status": "active_patron",
            "last_charge_status": "Paid",
            "last_charge_date": "2024-01-01T00:00:00.000+00:00",
            "next_charge_date": None,
            "pledge_cadence": 1,
            "pledge_relationship_start": None,
            "is_free_trial": False,
            "campaign_lifetime_support_cents": cents,
        },
        "relationships": {
            "currently_entitled_tiers": {"data": [{"type": "tier", "id": "t1"}]},
            "user": {"data": {"type": "user", "id": f"u-{member_id}"}},
            "campaign": {"data": {"type": "campaign", "id": "c1"}},
        },
    }


def page(ids: list[str], next_cursor: str | None, total: int = 6) -> dict[str, Any]:
    return {
        "data": [member(i) for i in ids],
        "included": [{"type": "tier", "id": "t1", "attributes": {"title": "Gold", "amount_cents": 500}}]
        + [{"type": "user", "id": f"u-{i}", "attributes": {"full_name": i}} for i in ids],
        "meta": {"pagination": {"cursors": {"next": next_cursor}, "total": total}},
    }


def error_body(status: int, code_name: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {
        "errors": [
            {
                "code": 1,
                "code_name": code_name,
                "detail": detail,
                "id": "d1c1f6b1-4d4f-4d4f-8d4f-4d4f4d4f4d4f",
                "status": str(status),
                "title": code_name,
                **extra,
            }
        ]
    }


# --------------------------------------------------------------------------------------------------------------------
# construction, headers, timeouts, query strings
# --------------------------------------------------------------------------------------------------------------------


def test_endpoints_strip_trailing_slashes() -> None:
    client = PatreonClient(api_base="https://a.test/", oauth_base="https://o.test//", rate_limiter=RateLimiter())
    assert client.api_root == "https://a.test/api/oauth2/v2"
    assert client.token_endpoint == "https://o.test/api/oauth2/token"
    assert client.authorize_endpoint == "https://o.test/oauth2/authorize"
    client.close()


def test_identity_request_and_result(pc: PatreonClient, requests_mock: rm.Mocker) -> None:
    doc = {
        "data": {
            "type": "user",
            "id": "u1",
            "attributes": {"full_name": "Kopi", "email": "k@example.com", "is_email_verified": True},
            "relationships": {"memberships": {"data": [{"type": "member", "id": "m1"}]}},
        },
        "included": [member("m1"), {"type": "tier", "id": "t1", "attributes": {"amount_cents": 500}}],
    }
    requests_mock.get(f"{API}/identity", json=doc)
    identity = pc.identity()
    assert identity.user.email == "k@example.com"
    assert identity.memberships[0].entitled_tier_ids == ("t1",)

    request = last(requests_mock)
    q = query(request)
    assert q["include"] == ["memberships,memberships.currently_entitled_tiers,memberships.campaign"]
    assert q["fields[user]"] == ["email,is_email_verified,full_name,image_url,url,vanity"]
    assert q["fields[tier]"] == ["title,amount_cents,published,url,description"]
    assert set(q["fields[member]"][0].split(",")) == set(MEMBER_FIELDS)
    # brackets are percent-encoded on the wire, as requests does it
    assert "fields%5Bmember%5D=" in request.url
    assert request.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert request.headers["User-Agent"].startswith("flask-patronlock/")
    assert request.timeout == (5.0, 30.0)


def test_identity_filters_to_a_campaign_and_takes_a_per_call_token(pc: PatreonClient, requests_mock: rm.Mocker) -> None:
    doc = {
        "data": {
            "type": "user",
            "id": "u1",
            "relationships": {
                "memberships": {"data": [{"type": "member", "id": "m1"}, {"type": "member", "id": "m2"}]}
            },
        },
        "included": [
            member("m1"),
            {**member("m2"), "relationships": {"campaign": {"data": {"type": "campaign", "id": "c2"}}}},
        ],
    }
    requests_mock.get(f"{API}/identity", json=doc)
    identity = pc.identity(campaign_id="c2", access_token="user-token")
    assert [m.member_id for m in identity.memberships] == ["m2"]
    assert last(requests_mock).headers["Authorization"] == "Bearer user-token"


def test_member_fields_include_what_the_snapshot_needs() -> None:
    for field in ("email", "is_gifted", "campaign_lifetime_support_cents", "pledge_cadence", "is_free_trial",
                  "currently_entitled_amount_cents", "last_charge_date", "last_charge_status", "next_charge_date",
                  "patron_status", "pledge_relationship_start", "will_pay_amount_cents"):  # fmt: skip
        assert field in MEMBER_FIELDS
    assert "note" not in MEMBER_FIELDS


def test_custom_user_agent_and_timeout(make_client: Callable[..., PatreonClient], requests_mock: rm.Mocker) -> None:
    client = make_client(user_agent="my-site/2.0", timeout=7.5)
    requests_mock.get(f"{API}/campaigns", json={"data": []})
    assert client.campaigns() == []
    assert last(requests_mock).headers["User-Agent"] == "my-site/2.0"
    assert last(requests_mock).timeout == 7.5


def test_no_access_token_is_a_caller_error(make_client: Callable[..., PatreonClient]) -> None:
    client = make_client(access_token=None)
    with pytest.raises(ValueError, match="no access token"):
        client.campaigns()
    assert client.request_count == 0


def test_campaign(pc: PatreonClient, requests_mock: rm.Mocker) -> None:
    doc = {
        "data": {
            "type": "campaign",
            "id": "c1",
            "attributes": {"creation_name": "comics", "patron_count": 3},
            "relationships": {
                "tiers": {"data": [{"type": "tier", "id": "t1"}]},
                "creator": {"data": {"type": "user", "id": "creator"}},
            },
        },
        "included": [{"type": "tier", "id": "t1", "attributes": {"title": "Gold", "amount_cents": 500}}],
    }
    requests_mock.get(f"{API}/campaigns/c1", json=doc)
    campaign = pc.campaign("c1")
    assert campaign.creator_user_id == "creator"
    assert [(t.title, t.amount_cents) for t in campaign.tiers] == [("Gold", 500)]
    q = query(last(requests_mock))
    assert q["include"] == ["tiers,creator"]
    assert "amount_cents" in q["fields[tier]"][0]


def test_ids_are_quoted_into_the_path(pc: PatreonClient, requests_mock: rm.Mocker) -> None:
    requests_mock.get(f"{API}/members/a%2F..%2Fb", json={"data": {"type": "member", "id": "a/../b"}})
    assert pc.member("a/../b").member_id == "a/../b"
    with pytest.raises(ValueError):
        pc.member("")


def test_member(pc: PatreonClient, requests_mock: rm.Mocker) -> None:
    requests_mock.get(f"{API}/members/m1", json={"data": member("m1", 700)})
    snapshot = pc.member("m1")
    assert snapshot.entitled_cents == 700 and snapshot.campaign_id == "c1"
    q = query(last(requests_mock))
    assert q["include"] == ["currently_entitled_tiers,user,campaign"]
    assert set(q["fields[member]"][0].split(",")) == set(MEMBER_FIELDS)


# --------------------------------------------------------------------------------------------------------------------
# pagination
# --------------------------------------------------------------------------------------------------------------------


def serve_pages(requests_mock: rm.Mocker, pages: dict[str | None, dict[str, Any]]) -> None:
    def respond(request: Any, context: Any) -> dict[str, Any]:
        cursor = query(request).get("page[cursor]", [None])[0]
        return pages[cursor]

    requests_mock.get(f"{API}/campaigns/c1/members", json=respond)


def test_pages_follow_cursors(pc: PatreonClient, requests_mock: rm.Mocker) -> None:
    serve_pages(
        requests_mock,
        {None: page(["a", "b"], "CUR/2"), "CUR/2": page(["c", "d"], "CUR3"), "CUR3": page(["e", "f"], None)},
    )
    pages = list(pc.iter_member_pages("c1", page_size=5000))
    assert [[m.member_id for m in p.members] for p in pages] == [["a", "b"], ["c", "d"], ["e", "f"]]
    assert [p.cursor for p in pages] == [None, "CUR/2", "CUR3"]
    assert [p.total for p in pages] == [6, 6, 6]
    assert pc.request_count == 3

    sent = [query(r) for r in requests_mock.request_history]
    assert [q.get("page[cursor]") for q in sent] == [None, ["CUR/2"], ["CUR3"]]
    for q in sent:
        assert q["page[count]"] == ["1000"]  # capped
        assert q["include"] == ["currently_entitled_tiers,user"]
        assert q["fields[user]"] == ["email,is_email_verified,full_name"]
        assert q["fields[tier]"] == ["title,amount_cents"]
        members_fields = q["fields[member]"][0].split(",")
        for field in ("email", "is_gifted", "campaign_lifetime_support_cents", "pledge_cadence", "is_free_trial"):
            assert field in members_fields


def test_pages_follow_links_next(pc: PatreonClient, requests_mock: rm.Mocker) -> None:
    first = page(["a"], None)
    del first["meta"]["pagination"]["cursors"]
    first["links"] = {"next": f"{API}/campaigns/c1/members?page%5Bcount%5D=10&page%5Bcursor%5D=L2"}
    final = page(["b"], None)
    del final["meta"]["pagination"]["cursors"]
    serve_pages(requests_mock, {None: first, "L2": final})
    members = list(pc.iter_members("c1", page_size=10))
    assert [m.member_id for m in members] == ["a", "b"]
    assert query(requests_mock.request_history[0])["page[count]"] == ["10"]
    assert query(last(requests_mock))["page[cursor]"] == ["L2"]


def test_resume_from_a_cursor(pc: PatreonClient, requests_mock: rm.Mocker) -> None:
    serve_pages(requests_mock, {"C5": page(["e"], None)})
    assert [p.cursor for p in pc.iter_member_pages("c1", cursor="C5")] == ["C5"]


def test_a_repeated_cursor_stops_with_pagination_error(pc: PatreonClient, requests_mock: rm.Mocker) -> None:
    serve_pages(requests_mock, {None: page(["a"], "X"), "X": page(["b"], "Y"), "Y": page(["c"], "X")})
    seen: list[str] = []
    with pytest.raises(PaginationError, match="cursor already followed"):
        for p in pc.iter_member_pages("c1"):
            seen.extend(m.member_id for m in p.members)
    assert seen == ["a", "b", "c"]
    assert pc.request_count == 3


def test_a_cursor_pointing_at_itself(pc: PatreonClient, requests_mock: rm.Mocker) -> None:
    serve_pages(requests_mock, {None: page(["a"], "X"), "X": page(["b"], "X")})
    with pytest.raises(PaginationError):
        list(pc.iter_member_pages("c1"))
    assert pc.request_count == 2


def test_repeated_member_ids_stop_with_pagination_error(pc: PatreonClient, requests_mock: rm.Mocker) -> None:
    # fresh cursors every time, but the same members: a server-side loop
    serve_pages(requests_mock, {None: page(["a", "b"], "1"), "1": page(["c", "d"], "2"), "2": page(["b", "e"], "3")})
    pages: list[MemberPage] = []
    with pytest.raises(PaginationError, match="repeats 1 member"):
        pages.extend(pc.iter_member_pages("c1"))
    assert len(pages) == 2  # the bad page is not yielded


def test_duplicates_inside_one_page(pc: PatreonClient, requests_mock: rm.Mocker) -> None:
    serve_pages(requests_mock, {None: page(["a", "a"], None)})
    with pytest.raises(PaginationError):
        list(pc.iter_member_pages("c1"))


def test_endless_empty_pages_stop(pc: PatreonClient, requests_mock: rm.Mocker) -> None:
    counter = iter(range(1000))

    def respond(request: Any, context: Any) -> dict[str, Any]:
        return page([], f"cursor-{next(counter)}")

    requests_mock.get(f"{API}/campaigns/c1/members", json=respond)
    with pytest.raises(PaginationError, match="empty"):
        list(pc.iter_member_pages("c1"))
    assert pc.request_count == MAX_EMPTY_PAGES


def test_page_size_must_be_positive(pc: PatreonClient) -> None:
    with pytest.raises(ValueError):
        pc.iter_member_pages("c1", page_size=0)


def test_a_malformed_page_raises(pc: PatreonClient, requests_mock: rm.Mocker) -> None:
    bad = page(["a"], None)
    bad["data"][0]["attributes"]["will_pay_amount_cents"] = "lots"
    serve_pages(requests_mock, {None: bad})
    with pytest.raises(MalformedDocument):
        list(pc.iter_member_pages("c1"))
    lenient = list(pc.iter_member_pages("c1", strict=False))
    assert lenient[0].members == () and lenient[0].raw_count == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m["attributes"].pop("patron_status"), "attribute 'patron_status' absent on 1 of 2"),
        (lambda m: m["attributes"].update(patron_status="active"), "'patron_status' is a value Patreon does not"),
        (lambda m: m["attributes"].update(last_charge_status="Settled"), "'last_charge_status' is a value"),
        (
            lambda m: m["attributes"].update(currently_entitled_amount_cents="500"),
            "'currently_entitled_amount_cents' is str instead of an integer",
        ),
        (lambda m: m["relationships"].pop("currently_entitled_tiers"), "relationship 'currently_entitled_tiers'"),
        (lambda m: m["relationships"].update(currently_entitled_tiers={}), "'currently_entitled_tiers' absent"),
    ],
)
def test_drift_on_a_page_raises_schema_drift_even_when_lenient(
    pc: PatreonClient, requests_mock: rm.Mocker, change: Any, message: str
) -> None:
    drifted = page(["a", "b"], None)
    change(drifted["data"][1])
    serve_pages(requests_mock, {None: drifted})
    for strict in (True, False):
        with pytest.raises(SchemaDrift, match=re.escape(message)) as caught:
            list(pc.iter_member_pages("c1", strict=strict))
        assert "(first: member 'b')" in str(caught.value)


def test_attributes_not_asked_for_or_not_read_are_not_drift(pc: PatreonClient, requests_mock: rm.Mocker) -> None:
    sparse = page(["a"], None)
    for name in ("is_gifted", "lifetime_support_cents", "email", "will_pay_amount_cents"):
        sparse["data"][0]["attributes"].pop(name, None)
    sparse["data"][0]["attributes"]["a_new_attribute"] = {"whatever": 1}  # Patreon adding fields is not drift
    sparse["data"][0]["relationships"].pop("user")
    serve_pages(requests_mock, {None: sparse})
    assert [m.member_id for m in pc.iter_members("c1")] == ["a"]


# --------------------------------------------------------------------------------------------------------------------
# retries, rate limits, errors
# --------------------------------------------------------------------------------------------------------------------


def test_retries_server_errors_then_succeeds(pc: PatreonClient, requests_mock: rm.Mocker, sleeps: Sleeps) -> None:
    requests_mock.get(
        f"{API}/campaigns",
        [
            {"status_code": 500, "json": error_body(500, "InternalServerError", "boom")},
            {"status_code": 503, "text": "<html>unavailable</html>"},
            {"json": {"data": []}},
        ],
    )
    assert pc.campaigns() == []
    assert pc.request_count == 3
    assert len(sleeps) == 2
    assert 0.25 <= sleeps[0] <= 0.5  # backoff_base 0.5 with jitter
    assert 0.5 <= sleeps[1] <= 1.0


def test_429_honours_retry_after_seconds(pc: PatreonClient, requests_mock: rm.Mocker, sleeps: Sleeps) -> None:
    requests_mock.get(
        f"{API}/campaigns",
        [
            {"status_code": 429, "json": error_body(429, "RequestThrottled", "slow down", retry_after_seconds=2)},
            {"json": {"data": []}},
        ],
    )
    assert pc.campaigns() == []
    assert sleeps == [2.0]


def test_429_honours_the_retry_after_header(pc: PatreonClient, requests_mock: rm.Mocker, sleeps: Sleeps) -> None:
    requests_mock.get(
        f"{API}/campaigns",
        [{"status_code": 429, "headers": {"Retry-After": "3"}, "text": "Too Many Requests"}, {"json": {"data": []}}],
    )
    pc.campaigns()
    assert sleeps == [3.0]


def test_429_retry_after_as_an_http_date(pc: PatreonClient, requests_mock: rm.Mocker, sleeps: Sleeps) -> None:
    when = datetime.now(UTC) + timedelta(seconds=10)
    header = when.strftime("%a, %d %b %Y %H:%M:%S GMT")
    requests_mock.get(
        f"{API}/campaigns", [{"status_code": 429, "headers": {"Retry-After": header}}, {"json": {"data": []}}]
    )
    pc.campaigns()
    assert 8.0 <= sleeps[0] <= 10.0


def test_429_longer_than_max_backoff_is_raised_not_waited(
    make_client: Callable[..., PatreonClient], requests_mock: rm.Mocker, sleeps: Sleeps
) -> None:
    client = make_client(max_backoff=30.0)
    requests_mock.get(
        f"{API}/campaigns",
        status_code=429,
        json=error_body(429, "RequestThrottled", "wait", retry_after_seconds=120),
    )
    with pytest.raises(RateLimited) as info:
        client.campaigns()
    assert info.value.retry_after == 120.0
    assert info.value.status_code == 429
    assert sleeps == []
    assert client.request_count == 1


def test_exhausted_retries_raise_the_last_error(
    make_client: Callable[..., PatreonClient], requests_mock: rm.Mocker, sleeps: Sleeps
) -> None:
    client = make_client(max_retries=3, max_backoff=1.0)
    requests_mock.get(f"{API}/campaigns", status_code=502, json=error_body(502, "BadGateway", "upstream"))
    with pytest.raises(ServerError) as info:
        client.campaigns()
    assert info.value.status_code == 502
    assert info.value.detail == "upstream"
    assert client.request_count == 4
    assert len(sleeps) == 3
    assert all(s <= 1.0 for s in sleeps)


def test_exhausted_429s_raise_rate_limited(
    make_client: Callable[..., PatreonClient], requests_mock: rm.Mocker, sleeps: Sleeps
) -> None:
    client = make_client(max_retries=2)
    requests_mock.get(
        f"{API}/campaigns", status_code=429, json=error_body(429, "RequestThrottled", "x", retry_after_seconds=1)
    )
    with pytest.raises(RateLimited):
        client.campaigns()
    assert sleeps == [1.0, 1.0]
    assert client.request_count == 3


@pytest.mark.parametrize(
    "exc", [requests.exceptions.ConnectTimeout, requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError]
)
def test_transport_failures_are_retried_then_raised(
    pc: PatreonClient, requests_mock: rm.Mocker, sleeps: Sleeps, exc: type[Exception]
) -> None:
    requests_mock.get(f"{API}/campaigns", exc=exc)
    with pytest.raises(TransportError) as info:
        pc.campaigns()
    assert pc.request_count == 5  # 1 + max_retries (4)
    assert len(sleeps) == 4
    assert isinstance(info.value.__cause__, exc)
    assert info.value.connect_failed is (exc is requests.exceptions.ConnectTimeout)


def test_a_timeout_then_success(pc: PatreonClient, requests_mock: rm.Mocker) -> None:
    requests_mock.get(f"{API}/campaigns", [{"exc": requests.exceptions.ReadTimeout}, {"json": {"data": []}}])
    assert pc.campaigns() == []


def test_401_is_unauthorized_and_not_retried(pc: PatreonClient, requests_mock: rm.Mocker, sleeps: Sleeps) -> None:
    requests_mock.get(
        f"{API}/identity", status_code=401, json=error_body(401, "Unauthorized", "The server could not verify...")
    )
    with pytest.raises(Unauthorized) as info:
        pc.identity()
    assert info.value.status_code == 401
    assert info.value.code_name == "Unauthorized"
    assert "401" in str(info.value) and "Unauthorized" in str(info.value)
    assert pc.request_count == 1 and sleeps == []


@pytest.mark.parametrize(
    ("status", "cls"), [(400, PatreonAPIError), (403, Forbidden), (404, NotFound), (409, PatreonAPIError)]
)
def test_other_4xx_are_not_retried(
    pc: PatreonClient, requests_mock: rm.Mocker, sleeps: Sleeps, status: int, cls: type[PatreonAPIError]
) -> None:
    requests_mock.get(f"{API}/members/m1", status_code=status, json=error_body(status, "Nope", "no"))
    with pytest.raises(cls) as info:
        pc.member("m1")
    assert type(info.value) is cls
    assert info.value.status_code == status
    assert pc.request_count == 1 and sleeps == []


def test_an_html_error_page(pc: PatreonClient, requests_mock: rm.Mocker) -> None:
    requests_mock.get(f"{API}/members/m1", status_code=403, text="<html>Cloudflare</html>")
    with pytest.raises(Forbidden) as info:
        pc.member("m1")
    assert info.value.errors == ()
    assert "Cloudflare" in info.value.body


def test_bad_json_is_malformed_and_not_retried(pc: PatreonClient, requests_mock: rm.Mocker) -> None:
    requests_mock.get(f"{API}/campaigns", text="{not json")
    with pytest.raises(MalformedDocument, match="not valid JSON"):
        pc.campaigns()
    assert pc.request_count == 1


def test_every_error_is_a_patreon_error() -> None:
    for cls in (TransportError, MalformedDocument, PaginationError, PatreonAPIError, RateLimited, InvalidGrant):
        assert issubclass(cls, PatreonError)
    assert issubclass(InvalidGrant, TokenError) and issubclass(Unauthorized, PatreonAPIError)


# --------------------------------------------------------------------------------------------------------------------
# webhooks (POST is not blindly retried)
# --------------------------------------------------------------------------------------------------------------------


def webhook_doc(webhook_id: str = "w1", **attrs: Any) -> dict[str, Any]:
    return {
        "data": {
            "type": "webhook",
            "id": webhook_id,
            "attributes": {
                "uri": "https://example.com/hook",
                "triggers": ["members:pledge:create"],
                "paused": False,
                "secret": "whsec",
                **attrs,
            },
        }
    }


def test_create_webhook(pc: PatreonClient, requests_mock: rm.Mocker) -> None:
    requests_mock.post(f"{API}/webhooks", status_code=201, json=webhook_doc())
    webhook = pc.create_webhook("c1", "https://example.com/hook", ["members:pledge:create", "members:update"])
    assert webhook.id == "w1" and webhook.secret == "whsec"
    assert webhook.campaign_id == "c1"  # filled in from the request when the answer omits it
    assert last(requests_mock).json() == {
        "data": {
            "type": "webhook",
            "attributes": {
                "triggers": ["members:pledge:create", "members:update"],
                "uri": "https://example.com/hook",
            },
            "relationships": {"campaign": {"data": {"type": "campaign", "id": "c1"}}},
        }
    }


def test_create_webhook_is_not_retried_when_patreon_may_have_processed_it(
    pc: PatreonClient, requests_mock: rm.Mocker
) -> None:
    requests_mock.post(f"{API}/webhooks", exc=requests.exceptions.ReadTimeout)
    with pytest.raises(TransportError):
        pc.create_webhook("c1", "https://example.com/hook", ["members:update"])
    assert pc.request_count == 1
    requests_mock.post(f"{API}/webhooks", status_code=500, json=error_body(500, "Internal", "x"))
    with pytest.raises(ServerError):
        pc.create_webhook("c1", "https://example.com/hook", ["members:update"])
    assert pc.request_count == 2


def test_create_webhook_is_retried_when_the_connection_never_opened(
    pc: PatreonClient, requests_mock: rm.Mocker
) -> None:
    requests_mock.post(f"{API}/webhooks", [{"exc": requests.exceptions.ConnectTimeout}, {"json": webhook_doc()}])
    assert pc.create_webhook("c1", "https://example.com/hook", ["members:update"]).id == "w1"
    assert pc.request_count == 2


def test_update_webhook(pc: PatreonClient, requests_mock: rm.Mocker) -> None:
    requests_mock.patch(f"{API}/webhooks/w1", json=webhook_doc(paused=False, uri="https://new.test/h"))
    webhook = pc.update_webhook("w1", uri="https://new.test/h", paused=False)
    assert webhook.uri == "https://new.test/h"
    assert last(requests_mock).json() == {
        "data": {"type": "webhook", "id": "w1", "attributes": {"uri": "https://new.test/h", "paused": False}}
    }
    with pytest.raises(ValueError):
        pc.update_webhook("w1")


def test_list_and_delete_webhooks(pc: PatreonClient, requests_mock: rm.Mocker) -> None:
    requests_mock.get(f"{API}/webhooks", json={"data": [webhook_doc("w1")["data"], webhook_doc("w2")["data"]]})
    assert [w.id for w in pc.webhooks()] == ["w1", "w2"]
    assert "secret" in query(last(requests_mock))["fields[webhook]"][0]
    requests_mock.delete(f"{API}/webhooks/w1", status_code=204)
    pc.delete_webhook("w1")
    assert last(requests_mock).method == "DELETE"


# --------------------------------------------------------------------------------------------------------------------
# OAuth
# --------------------------------------------------------------------------------------------------------------------


def test_authorization_url(pc: PatreonClient) -> None:
    url = pc.authorization_url(
        "https://site.test/patreon/callback", "STATE123", ["identity", "identity[email]", "identity.memberships"]
    )
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{BASE}/oauth2/authorize"
    q = parse_qs(parts.query)
    assert q == {
        "response_type": ["code"],
        "client_id": ["client-id"],
        "redirect_uri": ["https://site.test/patreon/callback"],
        "scope": ["identity identity[email] identity.memberships"],
        "state": ["STATE123"],
    }
    assert CLIENT_SECRET not in url


def test_authorization_url_with_pkce(pc: PatreonClient) -> None:
    verifier, challenge = pkce_pair()
    assert challenge == create_s256_code_challenge(verifier)
    assert 43 <= len(verifier) <= 128
    q = parse_qs(urlsplit(pc.authorization_url("https://site.test/cb", "s", "identity", challenge)).query)
    assert q["code_challenge"] == [challenge]
    assert q["code_challenge_method"] == ["S256"]
    assert q["scope"] == ["identity"]
    assert verifier not in str(q)


def test_authorization_url_needs_a_client_id_and_state(make_client: Callable[..., PatreonClient]) -> None:
    with pytest.raises(ValueError):
        make_client(client_id=None).authorization_url("https://site.test/cb", "s", ["identity"])
    with pytest.raises(ValueError):
        make_client().authorization_url("https://site.test/cb", "", ["identity"])


TOKEN_ANSWER = {
    "access_token": "NEW-access",
    "refresh_token": "NEW-refresh",
    "expires_in": 2678400,
    "scope": "identity identity[email]",
    "token_type": "Bearer",
    "version": "0.0.1",
}


def form(request: Any) -> dict[str, list[str]]:
    return parse_qs(request.text)


def test_exchange_code(pc: PatreonClient, requests_mock: rm.Mocker) -> None:
    requests_mock.post(TOKEN_URL, json=TOKEN_ANSWER)
    before = datetime.now(UTC)
    tokens = pc.exchange_code("CODE", "https://site.test/cb", code_verifier="VERIFIER")
    assert tokens.access_token == "NEW-access" and tokens.refresh_token == "NEW-refresh"
    assert tokens.scope == ("identity", "identity[email]")
    assert tokens.expires_at is not None
    assert before + timedelta(seconds=2678400) <= tokens.expires_at <= datetime.now(UTC) + timedelta(seconds=2678400)
    request = last(requests_mock)
    assert form(request) == {
        "grant_type": ["authorization_code"],
        "code": ["CODE"],
        "redirect_uri": ["https://site.test/cb"],
        "code_verifier": ["VERIFIER"],
        "client_id": ["client-id"],
        "client_secret": [CLIENT_SECRET],  # client_secret_post
    }
    assert "Authorization" not in request.headers
    assert request.headers["User-Agent"].startswith("flask-patronlock/")
    assert request.timeout == (5.0, 30.0)
    assert pc.request_count == 1


def test_refresh_returns_the_new_pair(pc: PatreonClient, requests_mock: rm.Mocker) -> None:
    requests_mock.post(TOKEN_URL, json=TOKEN_ANSWER)
    tokens = pc.refresh(REFRESH_TOKEN)
    assert (tokens.access_token, tokens.refresh_token) == ("NEW-access", "NEW-refresh")
    sent = form(last(requests_mock))
    assert sent["grant_type"] == ["refresh_token"]
    assert sent["refresh_token"] == [REFRESH_TOKEN]
    assert sent["client_secret"] == [CLIENT_SECRET]


def test_refresh_without_a_new_refresh_token_does_not_hand_back_the_spent_one(
    pc: PatreonClient, requests_mock: rm.Mocker
) -> None:
    requests_mock.post(TOKEN_URL, json={"access_token": "NEW-access", "expires_in": 60})
    tokens = pc.refresh(REFRESH_TOKEN)
    assert tokens.refresh_token is None


@pytest.mark.parametrize("status", [400, 401])
def test_invalid_grant(pc: PatreonClient, requests_mock: rm.Mocker, sleeps: Sleeps, status: int) -> None:
    requests_mock.post(TOKEN_URL, status_code=status, json={"error": "invalid_grant"})
    with pytest.raises(InvalidGrant) as info:
        pc.refresh(REFRESH_TOKEN)
    assert info.value.error == "invalid_grant"
    assert info.value.status_code == status
    assert pc.request_count == 1 and sleeps == []


def test_other_oauth_errors_are_token_errors(pc: PatreonClient, requests_mock: rm.Mocker) -> None:
    requests_mock.post(
        TOKEN_URL, status_code=401, json={"error": "invalid_client", "error_description": "Unknown client"}
    )
    with pytest.raises(TokenError) as info:
        pc.exchange_code("CODE", "https://site.test/cb")
    assert not isinstance(info.value, InvalidGrant)
    assert info.value.error == "invalid_client"
    assert "Unknown client" in str(info.value)


def test_an_oauth_error_inside_a_200(pc: PatreonClient, requests_mock: rm.Mocker) -> None:
    requests_mock.post(TOKEN_URL, json={"error": "invalid_grant"})
    with pytest.raises(InvalidGrant):
        pc.refresh(REFRESH_TOKEN)


def test_token_endpoint_5xx_is_a_server_error_and_not_retried(
    pc: PatreonClient, requests_mock: rm.Mocker, sleeps: Sleeps
) -> None:
    requests_mock.post(TOKEN_URL, status_code=502, text="Bad Gateway")
    with pytest.raises(ServerError):
        pc.refresh(REFRESH_TOKEN)
    assert pc.request_count == 1 and sleeps == []


def test_token_endpoint_429_is_retried(pc: PatreonClient, requests_mock: rm.Mocker, sleeps: Sleeps) -> None:
    requests_mock.post(
        TOKEN_URL, [{"status_code": 429, "headers": {"Retry-After": "2"}, "text": "slow"}, {"json": TOKEN_ANSWER}]
    )
    assert pc.refresh(REFRESH_TOKEN).refresh_token == "NEW-refresh"
    assert sleeps == [2.0]


def test_token_endpoint_transport_errors(pc: PatreonClient, requests_mock: rm.Mocker) -> None:
    # never connected: safe to retry
    requests_mock.post(TOKEN_URL, [{"exc": requests.exceptions.ConnectTimeout}, {"json": TOKEN_ANSWER}])
    assert pc.refresh(REFRESH_TOKEN).access_token == "NEW-access"
    # may have been processed: raise, so the single-use refresh token is not spent twice
    requests_mock.post(TOKEN_URL, exc=requests.exceptions.ReadTimeout)
    with pytest.raises(TransportError):
        pc.refresh(REFRESH_TOKEN)
    assert pc.request_count == 3


def test_token_endpoint_junk(pc: PatreonClient, requests_mock: rm.Mocker) -> None:
    requests_mock.post(TOKEN_URL, text="<html>ok?</html>")
    with pytest.raises(MalformedDocument):
        pc.refresh(REFRESH_TOKEN)
    requests_mock.post(TOKEN_URL, json={"token_type": "Bearer"})
    with pytest.raises(MalformedDocument, match="access_token"):
        pc.refresh(REFRESH_TOKEN)
    requests_mock.post(TOKEN_URL, status_code=400, text="Bad Request")
    with pytest.raises(TokenError) as info:
        pc.refresh(REFRESH_TOKEN)
    assert info.value.status_code == 400


def test_token_calls_need_client_credentials(make_client: Callable[..., PatreonClient]) -> None:
    with pytest.raises(ValueError, match="client_secret"):
        make_client(client_secret=None).refresh(REFRESH_TOKEN)
    with pytest.raises(ValueError, match="client_id"):
        make_client(client_id=None).exchange_code("c", "https://site.test/cb")
    with pytest.raises(ValueError):
        make_client().refresh("")


def test_an_injected_session_carries_api_and_token_calls(
    make_client: Callable[..., PatreonClient], sleeps: Sleeps
) -> None:
    adapter = rm.Adapter()
    adapter.register_uri("GET", f"{API}/campaigns", json={"data": []})
    adapter.register_uri("POST", TOKEN_URL, json=TOKEN_ANSWER)
    session = requests.Session()
    session.mount("https://", adapter)
    client = make_client(session=session)
    assert client.campaigns() == []
    assert client.refresh(REFRESH_TOKEN).access_token == "NEW-access"
    assert [r.method for r in adapter.request_history] == ["GET", "POST"]
    client.close()  # does not close a session it did not create
    assert session.adapters["https://"] is adapter
    session.close()


# --------------------------------------------------------------------------------------------------------------------
# secrets never leak
# --------------------------------------------------------------------------------------------------------------------


def test_secrets_never_appear_in_errors_or_logs(
    make_client: Callable[..., PatreonClient], requests_mock: rm.Mocker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="flask_patronlock.patreon")
    client = make_client(max_retries=1)
    raised: list[BaseException] = []

    # a token endpoint that echoes what it was sent
    requests_mock.post(
        TOKEN_URL,
        status_code=400,
        json={"error": "invalid_grant", "error_description": f"bad token {REFRESH_TOKEN} for {CLIENT_SECRET}"},
    )
    with pytest.raises(InvalidGrant) as grant:
        client.refresh(REFRESH_TOKEN)
    raised.append(grant.value)
    assert "***" in grant.value.body

    # an API that echoes the bearer token
    requests_mock.get(
        f"{API}/identity", status_code=401, json=error_body(401, "Unauthorized", f"token {ACCESS_TOKEN} expired")
    )
    with pytest.raises(Unauthorized) as unauthorized:
        client.identity()
    raised.append(unauthorized.value)

    requests_mock.get(
        f"{API}/campaigns", exc=requests.exceptions.ConnectionError(f"reset while sending {ACCESS_TOKEN}")
    )
    with pytest.raises(TransportError) as transport:
        client.campaigns()
    raised.append(transport.value)

    requests_mock.get(f"{API}/webhooks", status_code=500, text=f"trace: Authorization: Bearer {ACCESS_TOKEN}")
    with pytest.raises(ServerError) as server:
        client.webhooks()
    raised.append(server.value)

    for error in raised:
        assert isinstance(error, PatreonError)
        texts = [str(error), repr(error), str(error.args)]
        if isinstance(error, PatreonAPIError):
            texts += [error.body, json.dumps(error.errors)]
        assert_no_secrets(*texts)
    assert_no_secrets(repr(client), *(record.getMessage() for record in caplog.records))
    assert any("/api/oauth2/v2/identity" in record.getMessage() for record in caplog.records)


# --------------------------------------------------------------------------------------------------------------------
# the rate limiter
# --------------------------------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_101st_call_inside_two_seconds_waits() -> None:
    clock = FakeClock()
    limiter = RateLimiter(max_calls=100, period=2.0, clock=clock, sleep=clock.sleep)
    for _ in range(100):
        assert limiter.acquire() == 0.0
        clock.now += 0.01  # 100 calls spread over the first second
    assert clock.slept == []
    assert limiter.try_acquire() == pytest.approx(2.0 - 1.0)  # until the first call leaves the window
    waited = limiter.acquire()
    assert waited == pytest.approx(1.0)
    assert clock.slept == [pytest.approx(1.0)]
    # the window slides: the next call waits only for the second-oldest to leave
    assert limiter.try_acquire() == pytest.approx(0.01)


def test_a_burst_at_one_instant() -> None:
    clock = FakeClock()
    limiter = RateLimiter(max_calls=100, period=2.0, clock=clock, sleep=clock.sleep)
    for _ in range(100):
        limiter.acquire()
    limiter.acquire()
    assert clock.slept == [2.0]
    clock.now += 10
    assert limiter.try_acquire() == 0.0


def test_the_limiter_is_thread_safe() -> None:
    clock = FakeClock()  # frozen: nobody may get more than 100 slots
    limiter = RateLimiter(max_calls=100, period=2.0, clock=clock, sleep=clock.sleep)
    granted: list[bool] = []
    lock = threading.Lock()
    barrier = threading.Barrier(20)

    def worker() -> None:
        barrier.wait()
        for _ in range(20):
            ok = limiter.try_acquire() == 0.0
            with lock:
                granted.append(ok)

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(granted) == 400
    assert granted.count(True) == 100


def test_the_limiter_runs_before_every_request(
    make_client: Callable[..., PatreonClient], requests_mock: rm.Mocker
) -> None:
    class CountingLimiter(RateLimiter):
        calls = 0

        def acquire(self) -> float:
            CountingLimiter.calls += 1
            return 0.0

    client = make_client(rate_limiter=CountingLimiter())
    requests_mock.get(f"{API}/campaigns", [{"status_code": 500}, {"json": {"data": []}}])
    requests_mock.post(TOKEN_URL, json=TOKEN_ANSWER)
    client.campaigns()
    client.refresh(REFRESH_TOKEN)
    assert CountingLimiter.calls == 3 == client.request_count


def test_clients_share_one_limiter_per_api_base() -> None:
    first = PatreonClient(api_base="https://shared.test")
    second = PatreonClient(api_base="https://shared.test/")
    other = PatreonClient(api_base="https://other.test")
    mine = RateLimiter(5, 1.0)
    custom = PatreonClient(api_base="https://shared.test", rate_limiter=mine)
    assert first.rate_limiter is second.rate_limiter is shared_rate_limiter("https://shared.test")
    assert other.rate_limiter is not first.rate_limiter
    assert custom.rate_limiter is mine
    assert (first.rate_limiter.max_calls, first.rate_limiter.period) == (100, 2.0)
    for client in (first, second, other, custom):
        client.close()


def test_limiter_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0, 1.0)
    with pytest.raises(ValueError):
        RateLimiter(1, 0)
