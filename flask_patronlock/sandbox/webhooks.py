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
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Unpack

import requests

from ..patreon.types import WebhookChanges
from .core import SandboxCore
from .documents import render_webhook_member
from .entities import (
    ALL_MEMBER_TRIGGERS,
    KNOWN_TRIGGERS,
    Delivery,
    Member,
    MemberEvent,
    NotFoundError,
    QueuedEvent,
    SandboxError,
    Transport,
    Webhook,
)

__all__ = [
    "Delivery",
    "QueuedEvent",
    "Transport",
    "WebhookDispatcher",
    "WebhooksMixin",
    "default_transport",
    "sign",
]

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


class WebhookDispatcher:
    """The queues' engine for one sandbox (``sandbox.dispatcher``); use the sandbox's methods rather than this."""

    def __init__(self, sandbox: SandboxCore) -> None:
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
        """Deliver everything deliverable now (see :meth:`~.state.Sandbox.flush_webhooks`)."""
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


class WebhooksMixin(SandboxCore):
    """A :class:`~.state.Sandbox`'s member change events and the webhooks they go to: registration, the queues'
    flush and the background worker."""

    dispatcher: WebhookDispatcher

    # -- change tracking and webhooks ------------------------------------------------------------------------------

    def _changed(self, member: Member, *events: str, gone: bool = False) -> None:
        member.version += 1
        member.cache = member.fragment = None
        self.revision += 1
        self._count(member, gone=gone)
        log = self.events
        for event in events:
            log.append(MemberEvent(event=event, member_id=member.id, at=self._now, version=member.version))
        if len(log) > self.log_limit:
            del log[: len(log) - self.log_limit]
        self.dispatcher.enqueue(member, events)

    @property
    def webhooks(self) -> list[Webhook]:
        """Registered webhooks, oldest first."""
        with self.lock:
            return list(self._webhooks.values())

    def webhook(self, webhook_id: str) -> Webhook:
        """A webhook by id. :raises NotFoundError: no such webhook."""
        with self.lock:
            try:
                return self._webhooks[str(webhook_id)]
            except KeyError:
                raise NotFoundError(f"no webhook {webhook_id!r}") from None

    def add_webhook(
        self,
        uri: str,
        triggers: Iterable[str] = ALL_MEMBER_TRIGGERS,
        *,
        secret: str | None = None,
        client_id: str | None = None,
    ) -> Webhook:
        """Register a webhook (what ``POST /api/oauth2/v2/webhooks`` does).

        :param secret: default :attr:`webhook_secret`, so the host app's configured secret verifies it.
        :raises SandboxError: an unknown trigger, no trigger, or a URI that is not http(s).
        """
        trigger_list = list(dict.fromkeys(triggers))
        if not trigger_list:
            raise SandboxError("at least one trigger is required")
        unknown = [t for t in trigger_list if t not in KNOWN_TRIGGERS]
        if unknown:
            raise SandboxError(f"unknown triggers: {', '.join(unknown)}")
        if not uri.startswith(("http://", "https://")):
            raise SandboxError("uri must be an http(s) URL")
        with self.lock:
            webhook = Webhook(
                id=str(next(self._webhook_ids)),
                uri=uri,
                triggers=trigger_list,
                secret=secret or self.webhook_secret,
                campaign_id=self.campaign.id,
                client_id=client_id or self.client_id,
            )
            self._webhooks[webhook.id] = webhook
            return webhook

    def update_webhook(self, webhook_id: str, **changes: Unpack[WebhookChanges]) -> Webhook:
        """Change a webhook (what ``PATCH /api/oauth2/v2/webhooks/<id>`` does). Unpausing resets
        ``num_consecutive_times_failed`` and wakes delivery of the queued events (the background worker sends them;
        :meth:`flush_webhooks` sends them now)."""
        uri, triggers, paused = changes.get("uri"), changes.get("triggers"), changes.get("paused")
        with self.lock:
            webhook = self.webhook(webhook_id)
            if uri is not None:
                if not uri.startswith(("http://", "https://")):
                    raise SandboxError("uri must be an http(s) URL")
                webhook.uri = uri
            if triggers is not None:
                trigger_list = list(dict.fromkeys(triggers))
                unknown = [t for t in trigger_list if t not in KNOWN_TRIGGERS]
                if unknown or not trigger_list:
                    raise SandboxError(f"bad triggers: {', '.join(unknown) or 'none given'}")
                webhook.triggers = trigger_list
            if paused is not None:
                if paused:
                    webhook.paused = True
                else:
                    webhook.paused = False
                    webhook.num_consecutive_times_failed = 0
                    webhook.retry_not_before = 0.0
        if paused is False:
            self.dispatcher.wake()
        return webhook

    def delete_webhook(self, webhook_id: str) -> None:
        """Remove a webhook and drop its queued events."""
        with self.lock:
            webhook = self.webhook(webhook_id)
            del self._webhooks[webhook.id]

    def flush_webhooks(self) -> list[Delivery]:
        """Deliver every queued event of every unpaused webhook now, in order, in this thread.

        Each webhook's queue goes until empty or until one attempt fails (one retry per webhook per flush: call
        again to retry); a failure counts towards pausing. The state lock is not held while the transport runs,
        so a receiver may call back into the sandbox.

        :returns: the attempts made, in order (also appended to :attr:`deliveries`).
        """
        return self.dispatcher.flush()

    def pending_deliveries(self) -> int:
        """How many events wait in webhook queues (paused webhooks included)."""
        with self.lock:
            return sum(len(w.queue) for w in self._webhooks.values())

    def start_webhook_worker(self) -> None:
        """Deliver in the background: a daemon thread sends queued events as they come, retrying failures with
        exponential backoff from :attr:`webhook_retry_delay`. The CLI starts it; tests usually flush instead."""
        self.dispatcher.start()

    def stop_webhook_worker(self, timeout: float = 5.0) -> None:
        """Stop the background worker (queued events stay queued)."""
        self.dispatcher.stop(timeout)
