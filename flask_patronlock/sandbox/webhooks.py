"""Signed webhook delivery: per-webhook queues, a background worker with backoff, and a synchronous flush.

Every ``members:*`` change renders the member document once (at the moment of the change, so each body shows the
state it reports) and queues it on each webhook whose triggers match. A delivery is a POST of the exact body bytes
with ``Content-Type: application/json``, ``X-Patreon-Event`` and ``X-Patreon-Signature`` (lowercase hex HMAC-MD5
of the body with the webhook's secret), through ``sandbox.transport``.

Each webhook's queue is delivered in order: an attempt that raises or answers non-2xx stays at the head, counts in
``num_consecutive_times_failed`` and is retried (by the next :meth:`WebhookDispatcher.flush`, or by the worker
after a backoff); after ``sandbox.max_webhook_failures`` consecutive failures the webhook is ``paused`` and its
events wait until it is unpaused (``PATCH`` with ``paused: false``), as on Patreon.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import requests

from .documents import render_webhook_member

if TYPE_CHECKING:
    from .state import Member, Sandbox, Webhook

__all__ = ["Delivery", "QueuedEvent", "Transport", "WebhookDispatcher", "default_transport", "sign"]

#: ``transport(uri, headers, body) -> HTTP status``; raising counts as a failed attempt.
Transport = Callable[[str, dict[str, str], bytes], int]

#: seconds the default transport waits for a receiver.
DEFAULT_TIMEOUT = 5.0
_MAX_BACKOFF = 60.0


def sign(body: bytes, secret: str) -> str:
    """``X-Patreon-Signature``: the lowercase hex HMAC-MD5 of the exact body bytes with the webhook secret."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.md5).hexdigest()


def default_transport(uri: str, headers: dict[str, str], body: bytes) -> int:
    """POST with :mod:`requests` (a short timeout, no redirects followed) and return the status code."""
    response = requests.post(uri, data=body, headers=headers, timeout=DEFAULT_TIMEOUT, allow_redirects=False)
    response.close()
    return response.status_code


@dataclass(eq=False, slots=True)
class QueuedEvent:
    """An event waiting in one webhook's queue."""

    id: str
    event: str
    member_id: str
    body: bytes
    created_at: datetime
    attempts: int = 0


@dataclass(eq=False, slots=True)
class Delivery:
    """One delivery attempt, as logged in ``sandbox.deliveries``."""

    webhook_id: str
    uri: str
    event: str
    member_id: str
    event_id: str
    headers: dict[str, str]
    body: bytes = field(repr=False)
    #: the receiver's status, or None when the transport raised.
    status: int | None
    error: str | None
    attempted_at: datetime
    #: 1 for the first attempt of this event, 2 for the first retry...
    attempt: int

    @property
    def ok(self) -> bool:
        """The receiver answered 2xx."""
        return self.status is not None and 200 <= self.status < 300

    @property
    def signature(self) -> str:
        """The ``X-Patreon-Signature`` header sent."""
        return self.headers["X-Patreon-Signature"]

    def json(self) -> Any:
        """The body, parsed."""
        return json.loads(self.body)

    def to_dict(self) -> dict[str, Any]:
        """A plain summary for the ``/_sandbox`` endpoints (body as text)."""
        return {
            "webhook_id": self.webhook_id,
            "uri": self.uri,
            "event": self.event,
            "member_id": self.member_id,
            "event_id": self.event_id,
            "status": self.status,
            "error": self.error,
            "ok": self.ok,
            "attempt": self.attempt,
            "attempted_at": self.attempted_at.isoformat(),
            "headers": dict(self.headers),
            "body": self.body.decode("utf-8"),
        }


class WebhookDispatcher:
    """The queues' engine for one sandbox (``sandbox.dispatcher``); use the sandbox's methods rather than this."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox
        #: serialises delivery attempts (flush and worker), so each queue goes out in order. Never taken while
        #: holding ``sandbox.lock``, and the state lock is never held while a transport runs.
        self._send_lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # called with sandbox.lock held
    def enqueue(self, member: Member, events: Iterable[str]) -> None:
        """Queue ``events`` about ``member`` on every webhook listening for them (renders the body once)."""
        sandbox = self._sandbox
        events = list(events)
        hooks = [
            w
            for w in sandbox._webhooks.values()
            if w.campaign_id == member.campaign_id and any(e in w.triggers for e in events)
        ]
        if not hooks:
            return
        body = render_webhook_member(sandbox, member)
        now = sandbox.now
        for event in events:
            for webhook in hooks:
                if event in webhook.triggers:
                    webhook.queue.append(
                        QueuedEvent(id=str(uuid.uuid4()), event=event, member_id=member.id, body=body, created_at=now)
                    )
        self._wake.set()

    def wake(self) -> None:
        """Tell the worker to look at the queues now."""
        self._wake.set()

    def _attempt(self, webhook: Webhook) -> Delivery | None:
        sandbox = self._sandbox
        with sandbox.lock:
            if webhook.paused or not webhook.queue or sandbox._webhooks.get(webhook.id) is not webhook:
                return None
            queued = webhook.queue[0]
            queued.attempts += 1
            uri = webhook.uri
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "Patreon-Webhooks (flask-patronlock sandbox)",
                "X-Patreon-Event": queued.event,
                "X-Patreon-Signature": sign(queued.body, webhook.secret),
            }
            transport = sandbox.transport
        status: int | None = None
        error: str | None = None
        try:
            status = int(transport(uri, dict(headers), queued.body))
        except Exception as exc:  # any failure of the receiver is a failed attempt, as for Patreon
            error = f"{type(exc).__name__}: {exc}"
        with sandbox.lock:
            webhook.last_attempted_at = sandbox.now
            delivery = Delivery(
                webhook_id=webhook.id,
                uri=uri,
                event=queued.event,
                member_id=queued.member_id,
                event_id=queued.id,
                headers=headers,
                body=queued.body,
                status=status,
                error=error,
                attempted_at=sandbox.now,
                attempt=queued.attempts,
            )
            if delivery.ok:
                if webhook.queue and webhook.queue[0] is queued:
                    webhook.queue.popleft()
                webhook.num_consecutive_times_failed = 0
                webhook.retry_not_before = 0.0
            else:
                webhook.num_consecutive_times_failed += 1
                if webhook.num_consecutive_times_failed >= sandbox.max_webhook_failures:
                    webhook.paused = True
                delay = sandbox.webhook_retry_delay * 2 ** (webhook.num_consecutive_times_failed - 1)
                webhook.retry_not_before = time.monotonic() + min(delay, _MAX_BACKOFF)
            log = sandbox.deliveries
            log.append(delivery)
            if len(log) > sandbox.log_limit:
                del log[: len(log) - sandbox.log_limit]
            return delivery

    def _ready(self) -> list[Webhook]:
        sandbox = self._sandbox
        with sandbox.lock:
            return [w for w in sandbox._webhooks.values() if w.queue and not w.paused]

    def flush(self) -> list[Delivery]:
        """Deliver everything deliverable now (see :meth:`Sandbox.flush_webhooks`)."""
        made: list[Delivery] = []
        failed: set[str] = set()
        with self._send_lock:
            while True:
                ready = [w for w in self._ready() if w.id not in failed]
                if not ready:
                    return made
                for webhook in ready:
                    while True:
                        delivery = self._attempt(webhook)
                        if delivery is None:
                            break
                        made.append(delivery)
                        if not delivery.ok:
                            failed.add(webhook.id)
                            break

    # -- the background worker ----------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the background worker runs."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the background worker (no-op if it runs)."""
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="patronlock-sandbox-webhooks", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the background worker and wait up to ``timeout`` seconds for it."""
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        self._wake.set()
        thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            next_due: float | None = None
            with self._send_lock:
                for webhook in self._ready():
                    if self._stop.is_set():
                        break
                    if webhook.retry_not_before > time.monotonic():
                        next_due = min(next_due or webhook.retry_not_before, webhook.retry_not_before)
                        continue
                    while not self._stop.is_set():
                        delivery = self._attempt(webhook)
                        if delivery is None:
                            break
                        if not delivery.ok:
                            if not webhook.paused:
                                next_due = min(next_due or webhook.retry_not_before, webhook.retry_not_before)
                            break
            timeout = None if next_due is None else max(0.01, next_due - time.monotonic())
            self._wake.wait(timeout)
