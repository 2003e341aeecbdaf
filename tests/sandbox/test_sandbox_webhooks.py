"""Webhook delivery from the sandbox: trigger matching, the exact signed bytes, ordering, failures that pause a webhook,
unpausing that resends the queue, the background worker with backoff, and registration through the API."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask, request
from werkzeug.serving import make_server

from flask_patronlock.sandbox import ALL_MEMBER_TRIGGERS, Sandbox, create_sandbox_app, sign
from flask_patronlock.sandbox.server import QuietRequestHandler

NOW = datetime(2024, 5, 10, 8, 0, tzinfo=UTC)
HOOK = "https://site.test/patreon/webhook"


class Receiver:
    """A host app's webhook endpoint: checks the signature like a real receiver would, answers ``status``."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.status = 200
        self.received: list[tuple[str, dict[str, Any], bytes]] = []
        self.app = Flask(__name__)
        self.app.add_url_rule("/patreon/webhook", "hook", self._hook, methods=["POST"])
        self.client = self.app.test_client()

    def _hook(self) -> tuple[str, int]:
        body = request.get_data()
        expected = hmac.new(self.secret.encode(), body, hashlib.md5).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("X-Patreon-Signature", "")):
            return "bad signature", 403
        if self.status < 300:  # what the app accepted
            self.received.append((request.headers["X-Patreon-Event"], json.loads(body), body))
        return "", self.status

    def transport(self, uri: str, headers: dict[str, str], body: bytes) -> int:
        return self.client.post(urlsplit(uri).path, data=body, headers=headers).status_code

    @property
    def events(self) -> list[str]:
        return [event for event, _, _ in self.received]


@pytest.fixture
def sb() -> Sandbox:
    return Sandbox(now=NOW, seed=5, max_webhook_failures=3)


@pytest.fixture
def receiver(sb: Sandbox) -> Receiver:
    rx = Receiver(sb.webhook_secret)
    sb.transport = rx.transport
    return rx


def test_signed_delivery(sb: Sandbox, receiver: Receiver) -> None:
    sb.add_webhook(HOOK)
    member = sb.add_patron("hook@example.com", tier="Gold")
    assert sb.pending_deliveries() == 3 and receiver.received == []  # queued, not sent yet
    deliveries = sb.flush_webhooks()
    assert [d.event for d in deliveries] == ["members:create", "members:pledge:create", "members:update"]
    assert receiver.events == ["members:create", "members:pledge:create", "members:update"]
    assert all(d.ok and d.status == 200 and d.attempt == 1 for d in deliveries)
    assert sb.pending_deliveries() == 0 and sb.deliveries == deliveries

    delivery = deliveries[0]
    assert delivery.headers["Content-Type"] == "application/json"
    assert delivery.headers["X-Patreon-Event"] == "members:create"
    expected = hmac.new(sb.webhook_secret.encode("utf-8"), delivery.body, hashlib.md5).hexdigest()
    assert delivery.signature == expected == sign(delivery.body, sb.webhook_secret)
    assert expected == expected.lower() and len(expected) == 32
    assert receiver.received[0][2] == delivery.body  # the exact bytes that were signed
    doc = delivery.json()
    assert doc["data"]["id"] == member.id and doc["links"]["self"].endswith(f"/members/{member.id}")
    assert {r["type"] for r in doc["included"]} == {"campaign", "user", "tier"}


def test_bodies_show_the_state_at_each_change(sb: Sandbox, receiver: Receiver) -> None:
    sb.add_webhook(HOOK, ["members:pledge:create", "members:pledge:update", "members:pledge:delete"])
    member = sb.add_patron(tier="Bronze")
    sb.change_tier(member, "Gold")
    sb.cancel(member)
    sb.decline(sb.add_patron(tier="Silver"))  # members:update only: not listened to
    sb.flush_webhooks()
    assert receiver.events == [
        "members:pledge:create",
        "members:pledge:update",
        "members:pledge:delete",
        "members:pledge:create",
    ]
    amounts = [doc["data"]["attributes"]["currently_entitled_amount_cents"] for _, doc, _ in receiver.received]
    assert amounts == [300, 1000, 0, 500]
    statuses = [doc["data"]["attributes"]["patron_status"] for _, doc, _ in receiver.received]
    assert statuses == ["active_patron", "active_patron", "former_patron", "active_patron"]


def test_charges_and_deletes_are_delivered(sb: Sandbox, receiver: Receiver) -> None:
    member = sb.add_patron(tier="Silver")
    sb.add_webhook(HOOK, ["members:update", "members:delete"])  # registered after the pledge: sees only later events
    sb.advance_months(2)
    sb.delete_member(member)
    sb.flush_webhooks()
    assert receiver.events == ["members:update", "members:update", "members:delete"]
    lifetimes = [doc["data"]["attributes"]["campaign_lifetime_support_cents"] for _, doc, _ in receiver.received]
    assert lifetimes == [1000, 1500, 1500]


def test_webhook_with_its_own_secret(sb: Sandbox) -> None:
    sb.add_webhook(HOOK, secret="its-own-secret")
    rx = Receiver("its-own-secret")
    sb.transport = rx.transport
    sb.add_patron(tier="Gold")
    assert all(d.ok for d in sb.flush_webhooks()) and len(rx.received) == 3


def test_wrong_secret_is_rejected_by_the_receiver(sb: Sandbox, receiver: Receiver) -> None:
    sb.add_webhook(HOOK, secret="not-what-the-receiver-knows")
    sb.add_patron(tier="Gold")
    deliveries = sb.flush_webhooks()
    assert [d.status for d in deliveries] == [403]  # one failed attempt per flush


def test_failures_retry_then_pause(sb: Sandbox, receiver: Receiver) -> None:
    webhook = sb.add_webhook(HOOK)
    receiver.status = 500
    sb.add_patron("fail@example.com", tier="Gold")
    first = sb.flush_webhooks()
    assert [(d.event, d.status, d.attempt, d.ok) for d in first] == [("members:create", 500, 1, False)]
    assert webhook.num_consecutive_times_failed == 1 and not webhook.paused
    assert webhook.last_attempted_at == NOW
    sb.advance(hours=1)
    second = sb.flush_webhooks()
    assert [(d.event, d.attempt) for d in second] == [("members:create", 2)]  # the same event, retried
    assert webhook.last_attempted_at == sb.now
    sb.flush_webhooks()
    assert webhook.paused and webhook.num_consecutive_times_failed == 3
    assert sb.flush_webhooks() == []  # paused: nothing is attempted
    sb.decline("fail@example.com")  # still queued while paused
    assert len(webhook.queue) == 4

    api = create_sandbox_app(sb).test_client()
    headers = {"Authorization": f"Bearer {sb.creator_access_token}"}
    fields = {"fields[webhook]": "paused,num_consecutive_times_failed,last_attempted_at"}
    attrs = api.get(f"/api/oauth2/v2/webhooks/{webhook.id}", query_string=fields, headers=headers).get_json()
    assert attrs["data"]["attributes"] == {
        "paused": True,
        "num_consecutive_times_failed": 3,
        "last_attempted_at": "2024-05-10T09:00:00.000+00:00",
    }

    receiver.status = 204
    patch = {"data": {"type": "webhook", "id": webhook.id, "attributes": {"paused": False}}}
    unpaused = api.patch(f"/api/oauth2/v2/webhooks/{webhook.id}", json=patch, headers=headers).get_json()
    assert unpaused["data"]["attributes"]["paused"] is False
    assert unpaused["data"]["attributes"]["num_consecutive_times_failed"] == 0
    resent = sb.flush_webhooks()
    assert [d.event for d in resent] == ["members:create", "members:pledge:create", "members:update", "members:update"]
    assert all(d.ok for d in resent) and resent[0].attempt == 4
    assert receiver.events == [d.event for d in resent]
    assert [d.ok for d in sb.deliveries] == [False, False, False, True, True, True, True]


def test_transport_exceptions_are_failures(sb: Sandbox) -> None:
    def broken(uri: str, headers: dict[str, str], body: bytes) -> int:
        raise ConnectionError("refused")

    sb.transport = broken
    webhook = sb.add_webhook(HOOK)
    sb.add_patron(tier="Gold")
    (delivery,) = sb.flush_webhooks()
    assert delivery.status is None and not delivery.ok and delivery.error == "ConnectionError: refused"
    assert webhook.num_consecutive_times_failed == 1


def test_one_failing_webhook_does_not_block_another(sb: Sandbox, receiver: Receiver) -> None:
    bad = sb.add_webhook("https://down.test/hook")
    good = sb.add_webhook(HOOK)

    def route(uri: str, headers: dict[str, str], body: bytes) -> int:
        return 502 if uri.startswith("https://down.test") else receiver.transport(uri, headers, body)

    sb.transport = route
    sb.add_patron(tier="Gold")
    sb.flush_webhooks()
    assert len(receiver.received) == 3 and len(good.queue) == 0 and len(bad.queue) == 3


def test_deleting_a_webhook_drops_its_queue(sb: Sandbox, receiver: Receiver) -> None:
    webhook = sb.add_webhook(HOOK)
    sb.add_patron(tier="Gold")
    sb.delete_webhook(webhook.id)
    assert sb.flush_webhooks() == [] and sb.pending_deliveries() == 0


def test_no_webhooks_no_queue_but_events_are_logged(sb: Sandbox) -> None:
    sb.add_patron(tier="Gold")
    assert sb.pending_deliveries() == 0 and len(sb.events) == 3


def test_registered_through_the_api_and_delivered(sb: Sandbox, receiver: Receiver) -> None:
    api = create_sandbox_app(sb).test_client()
    body = {
        "data": {
            "type": "webhook",
            "attributes": {"triggers": ["members:pledge:create"], "uri": HOOK},
            "relationships": {"campaign": {"data": {"type": "campaign", "id": sb.campaign.id}}},
        }
    }
    created = api.post(
        "/api/oauth2/v2/webhooks", json=body, headers={"Authorization": f"Bearer {sb.creator_access_token}"}
    )
    secret = created.get_json()["data"]["attributes"]["secret"]
    assert secret == sb.webhook_secret  # what the host app's PATRONLOCK_WEBHOOK_SECRETS holds
    sb.add_patron(tier="Silver")
    flushed = api.post("/_sandbox/webhooks/flush").get_json()["deliveries"]
    assert [(d["event"], d["status"], d["ok"]) for d in flushed] == [("members:pledge:create", 200, True)]
    assert api.get("/_sandbox/deliveries").get_json()["deliveries"][0]["headers"]["X-Patreon-Signature"]


def test_receiver_may_call_back_into_the_sandbox(sb: Sandbox) -> None:
    """Deliveries run without the state lock: a receiver that re-fetches the member (as a real one should) works."""
    api = create_sandbox_app(sb).test_client()
    seen: list[int] = []

    def refetch(uri: str, headers: dict[str, str], body: bytes) -> int:
        member_id = json.loads(body)["data"]["id"]
        doc = api.get(
            f"/api/oauth2/v2/members/{member_id}",
            query_string={"fields[member]": "currently_entitled_amount_cents"},
            headers={"Authorization": f"Bearer {sb.creator_access_token}"},
        ).get_json()
        seen.append(doc["data"]["attributes"]["currently_entitled_amount_cents"])
        return 200

    sb.transport = refetch
    sb.add_webhook(HOOK, ["members:pledge:create"])
    sb.add_patron(tier="Gold")
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(sb.flush_webhooks()))
    thread.start()
    thread.join(10)
    assert not thread.is_alive() and seen == [1000]


# -- the background worker --------------------------------------------------------------------------------------------


@pytest.fixture
def live_receiver(sb: Sandbox) -> Iterator[tuple[Receiver, str]]:
    rx = Receiver(sb.webhook_secret)
    server = make_server("127.0.0.1", 0, rx.app, threaded=True, request_handler=QuietRequestHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield rx, f"http://127.0.0.1:{server.server_port}/patreon/webhook"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        sb.stop_webhook_worker()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_background_worker_delivers_over_http(sb: Sandbox, live_receiver: tuple[Receiver, str]) -> None:
    rx, uri = live_receiver
    sb.add_webhook(uri)  # the default transport: requests.post
    sb.start_webhook_worker()
    sb.start_webhook_worker()  # idempotent
    member = sb.add_patron("bg@example.com", tier="Gold")
    wait_for(lambda: len(rx.received) == 3)
    assert rx.events == ["members:create", "members:pledge:create", "members:update"]
    assert rx.received[0][1]["data"]["id"] == member.id
    sb.cancel(member)
    wait_for(lambda: len(rx.received) == 5)
    sb.stop_webhook_worker()
    sb.add_patron(tier="Bronze")
    time.sleep(0.1)
    assert len(rx.received) == 5 and sb.pending_deliveries() == 3  # stopped: queued, not sent


def test_background_worker_retries_with_backoff(live_receiver: tuple[Receiver, str]) -> None:
    sb = Sandbox(now=NOW, webhook_retry_delay=0.05, max_webhook_failures=10)
    rx, uri = live_receiver
    rx.secret = sb.webhook_secret
    webhook = sb.add_webhook(uri, ["members:pledge:create"])
    rx.status = 503
    sb.start_webhook_worker()
    try:
        sb.add_patron(tier="Gold")
        wait_for(lambda: webhook.num_consecutive_times_failed >= 2)
        rx.status = 200
        wait_for(lambda: not webhook.queue)
        assert webhook.num_consecutive_times_failed == 0 and not webhook.paused
        attempts = [d.attempt for d in sb.deliveries]
        assert attempts == list(range(1, len(attempts) + 1)) and sb.deliveries[-1].ok
    finally:
        sb.stop_webhook_worker()


def test_background_worker_pauses_and_resumes(live_receiver: tuple[Receiver, str]) -> None:
    sb = Sandbox(now=NOW, webhook_retry_delay=0.01, max_webhook_failures=3)
    rx, uri = live_receiver
    rx.secret = sb.webhook_secret
    rx.status = 500
    webhook = sb.add_webhook(uri, ALL_MEMBER_TRIGGERS)
    sb.start_webhook_worker()
    try:
        sb.add_patron(tier="Gold")
        wait_for(lambda: webhook.paused)
        assert webhook.num_consecutive_times_failed == 3 and len(webhook.queue) == 3
        rx.status = 200
        sb.update_webhook(webhook.id, paused=False)  # what PATCH paused=false does: the worker resends
        wait_for(lambda: not webhook.queue)
        assert rx.events == ["members:create", "members:pledge:create", "members:update"]
    finally:
        sb.stop_webhook_worker()
