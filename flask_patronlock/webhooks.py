"""Patreon webhooks: verify, dedupe, store, acknowledge -- then process as a hint, re-fetching the member.

The route (``POST {PATRONLOCK_URL_PREFIX}/webhook``, blueprint ``patronlock_webhooks``, endpoint ``receive``):

1. reads at most :data:`PATRONLOCK_WEBHOOK_MAX_BYTES` of the raw body (more: ``413``);
2. verifies ``X-Patreon-Signature`` over those exact bytes against every configured secret
   (:data:`PATRONLOCK_WEBHOOK_SECRETS` plus the one ``flask patronlock webhooks register`` stored) before parsing
   anything: a missing or bad signature is ``403`` and nothing is stored;
3. an event that is not a ``members:*`` trigger: ``200``, logged, not stored; a body that is not a JSON:API member
   document: ``400``;
4. stores the delivery with ``dedupe_key = sha256(event + "\\n" + body)`` under a UNIQUE constraint (insert, or do
   nothing on conflict), so the same delivery twice -- or twenty copies at once -- is one row and one piece of work;
5. hands the new delivery to :mod:`flask_patronlock.jobs` and answers ``200``. No input makes it answer ``5xx``.

Processing (:func:`process_delivery`) treats the delivery as a hint: it re-fetches the member from the API and
applies *that* (``source="webhook"``), so a replayed, duplicated or out-of-order delivery cannot roll anyone back.
A delete (``members:pledge:delete``, ``members:delete``) for a patron the API no longer returns, or no longer lists as
pledging, ends the pledge (``former_patron``; the cancel policy says how access ends), whatever the payload still
says. When the API cannot be reached, the payload is applied only where it is not older than what is stored
(:meth:`~flask_patronlock.store.Store.apply_if_not_older`) and never to take access away, and the delivery is retried
later with a growing wait.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request
from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from . import config as _config
from . import signals
from .extension import PatronLockState, get_state
from .patreon.errors import MalformedDocument, NotFound, PatreonAPIError, PatreonError
from .patreon.jsonapi import parse_member_document
from .patreon.signatures import SIGNATURE_HEADER, verify_signature
from .patreon.types import MEMBER_TRIGGERS, MemberSnapshot, WebhookSnapshot
from .patron import Patron
from .store import ApplyResult, _older_than_stored, begin_immediate, sqlite_write_lock

__all__ = [
    "DELETE_TRIGGERS",
    "EVENT_HEADER",
    "MEMBER_TRIGGERS",
    "ProcessOutcome",
    "blueprint",
    "delivery_counts",
    "init_webhooks",
    "process_delivery",
    "register_webhook",
    "stored_webhook",
    "webhook_secret_in_clear",
    "webhook_secrets",
]

log = logging.getLogger("flask_patronlock.webhooks")

#: the header naming the trigger.
EVENT_HEADER = "X-Patreon-Event"
#: the ``patronlock_settings`` key under which ``register`` keeps the webhook's id, URI and (encrypted) secret.
WEBHOOK_SETTING_KEY = "patronlock.webhook"
_MAX_BACKOFF = timedelta(hours=6)
#: how long a claimed delivery may stay ``processing`` before another worker may take it over (a crashed worker).
_CLAIM_SECONDS = 300

blueprint = Blueprint("patronlock_webhooks", __name__)


def init_webhooks(app: Flask) -> None:
    """Register the webhook route under :data:`PATRONLOCK_URL_PREFIX` and exempt it from Flask-WTF's CSRF check."""
    prefix = (app.config.get("PATRONLOCK_URL_PREFIX") or "").rstrip("/")
    app.register_blueprint(blueprint, url_prefix=prefix or None)
    _exempt_from_csrf(app)

    @app.before_request
    def _patronlock_csrf_exempt() -> None:  # CSRFProtect may be set up after PatronLock: exempt once it exists
        if request.blueprint == blueprint.name:
            _exempt_from_csrf(app)


def _exempt_from_csrf(app: Flask) -> None:
    csrf = app.extensions.get("csrf")
    if csrf is not None and hasattr(csrf, "exempt"):
        exempt = getattr(csrf, "_exempt_blueprints", None)
        if exempt is None or blueprint.name not in exempt:
            csrf.exempt(blueprint)


# -- receiving -------------------------------------------------------------------------------------------------------


def _text(status: int, message: str) -> Response:
    return Response(message + "\n", status=status, mimetype="text/plain")


@blueprint.post("/webhook")
def receive() -> Response:
    """The webhook endpoint (see the module docs)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    state = get_state(app)
    limit = int(app.config["PATRONLOCK_WEBHOOK_MAX_BYTES"])
    if request.content_length is not None and request.content_length > limit:
        return _text(413, "body too large")
    body = request.stream.read(limit + 1)
    if len(body) > limit:
        return _text(413, "body too large")
    secrets = webhook_secrets(state)
    if not secrets:
        log.error("a webhook arrived but no secret is configured (PATRONLOCK_WEBHOOK_SECRETS); rejected")
        return _text(403, "no webhook secret configured")
    if not verify_signature(body, request.headers.get(SIGNATURE_HEADER), secrets):
        log.warning("webhook with a missing or bad signature rejected (%d bytes)", len(body))
        return _text(403, "bad signature")
    event = (request.headers.get(EVENT_HEADER) or "").strip()
    if event not in MEMBER_TRIGGERS:
        log.info("webhook event %r ignored: not a members:* trigger", event[:64])
        return _text(200, "ignored")
    try:
        member_id = _member_id(body)
    except MalformedDocument as exc:
        log.warning("webhook %s: malformed body: %s", event, exc)
        return _text(400, "malformed body")
    delivery_id = _store_delivery(state, event, member_id, body)
    if delivery_id is None:
        return _text(200, "duplicate")
    signals.send_action(
        signals.webhook_received,
        app,
        strict=bool(app.config["PATRONLOCK_STRICT_SIGNALS"]),
        delivery_id=delivery_id,
        event=event,
        member_id=member_id,
    )
    try:
        state.jobs.submit_webhook(delivery_id)
    except Exception:  # the delivery is stored as pending: the scheduler's sweep picks it up
        log.exception("could not hand webhook delivery %d to the jobs backend; it stays pending", delivery_id)
    return _text(200, "ok")


def _member_id(body: bytes) -> str:
    """The member id of a webhook body, checking it is a JSON:API ``member`` document (without the API's opinions
    on every attribute: the API's answer is what gets applied)."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise MalformedDocument("not JSON") from None
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, dict) or data.get("type") != "member":
        raise MalformedDocument("data: expected a member resource")
    member_id = data.get("id")
    if not isinstance(member_id, str) or not member_id or len(member_id) > 64:
        raise MalformedDocument("data.id: expected a member id")
    return member_id


_statements: dict[tuple[int, str], Any] = {}


def _insert_statement(table: Any, dialect: str) -> Any:
    """The dedupe insert, built once per table and dialect (building it costs more than running it)."""
    key = (id(table), dialect)
    stmt = _statements.get(key)
    if stmt is None:
        ins: Any = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
        stmt = ins.on_conflict_do_nothing(index_elements=["dedupe_key"]).returning(table.c.id)
        _statements[key] = stmt
    return stmt


_SQLITE_SQL: dict[int, tuple[str, list[Any]]] = {}


def _store_delivery_sqlite(engine: Any, table: Any, values: dict[str, Any]) -> int | None:
    """The dedupe insert straight through a pooled DBAPI connection: the acknowledgement's one write, without the
    per-call statement, transaction and result objects (each column's own converter still prepares its value)."""
    cached = _SQLITE_SQL.get(id(table))
    if cached is None:
        names = list(values)
        sql = (
            f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)}) "
            "ON CONFLICT (dedupe_key) DO NOTHING RETURNING id"
        )
        processors = [table.c[n].type._cached_bind_processor(engine.dialect) for n in names]
        cached = (sql, processors)
        _SQLITE_SQL[id(table)] = cached
    sql, processors = cached
    params = tuple(
        proc(value) if proc is not None else value for proc, value in zip(processors, values.values(), strict=True)
    )
    with sqlite_write_lock(engine):  # queue behind this process's other writers, not in SQLite's busy handler
        raw = engine.raw_connection()
        try:
            begin_immediate(raw.dbapi_connection)
            cursor = raw.cursor()
            try:
                row = cursor.execute(sql, params).fetchone()
            finally:
                cursor.close()
            raw.commit()
        except BaseException:
            raw.rollback()
            raise
        finally:
            raw.close()  # back to the pool
    return None if row is None else int(row[0])


def _store_delivery(state: PatronLockState, event: str, member_id: str, body: bytes) -> int | None:
    """Insert the delivery unless its dedupe key exists; its id, or ``None`` for a duplicate."""
    table = state.tables.webhook_deliveries
    key = hashlib.sha256(event.encode() + b"\n" + body).hexdigest()
    values = {
        "dedupe_key": key,
        "event": event,
        "member_id": member_id,
        "status": "pending",
        "attempts": 0,
        "body": body,
        "received_at": state.store.clock(),
    }
    engine = state.store.engine
    if engine.dialect.name == "sqlite":
        return _store_delivery_sqlite(engine, table, values)
    with engine.begin() as conn:
        dialect = conn.dialect.name
        if dialect == "postgresql":
            inserted = conn.execute(_insert_statement(table, dialect), values).scalar()
            return None if inserted is None else int(inserted)
        exists = conn.execute(select(table.c.id).where(table.c.dedupe_key == key)).first()  # pragma: no cover
        if exists:  # pragma: no cover
            return None
        new_id: Any = conn.execute(insert(table).values(**values)).inserted_primary_key  # pragma: no cover
        return int(new_id[0])  # pragma: no cover


# -- secrets and registration ------------------------------------------------------------------------------------------


def stored_webhook(state: PatronLockState) -> dict[str, Any] | None:
    """What ``webhooks register`` stored: ``id``, ``uri``, ``secret`` (decrypted), or ``None``."""
    table = state.tables.settings
    with state.store.engine.connect() as conn:
        value = conn.execute(select(table.c.value).where(table.c.key == WEBHOOK_SETTING_KEY)).scalar()
    if not isinstance(value, dict):
        return None
    out = dict(value)
    encrypted = out.pop("secret_encrypted", None)
    if encrypted:
        try:
            out["secret"] = state.token_cipher().decrypt(encrypted.encode())
        except Exception:
            log.error("the stored webhook secret cannot be decrypted with PATRONLOCK_TOKEN_KEYS; ignored")
            out["secret"] = None
    return out


#: seconds a process keeps the registered webhook's secret before reading it again (it changes only on register).
_SECRET_TTL = 30.0
_secret_cache: dict[int, tuple[float, str | None]] = {}


def webhook_secrets(state: PatronLockState) -> list[str]:
    """Every secret a signature may match: the configured ones, then the registered webhook's (read from the
    database at most every 30 seconds per process)."""
    secrets = _config.as_list(state.app.config.get("PATRONLOCK_WEBHOOK_SECRETS"), "PATRONLOCK_WEBHOOK_SECRETS")
    key = id(state)
    cached = _secret_cache.get(key)
    if cached is None or time.monotonic() - cached[0] > _SECRET_TTL:
        stored = stored_webhook(state)
        cached = (time.monotonic(), stored.get("secret") if stored else None)
        _secret_cache[key] = cached
    if cached[1]:
        secrets.append(cached[1])
    return [s for s in secrets if s]


#: what needs a token key when a webhook is registered (named by the error when none is set).
_STORING_THE_SECRET = "registering the webhook (its secret is stored)"


def _save_webhook(state: PatronLockState, webhook: WebhookSnapshot) -> bool:
    """Store the webhook's id, URI and secret, encrypted; whether there was a secret to store.

    :raises ConfigurationError: ``PATRONLOCK_TOKEN_KEYS`` is empty or invalid (nothing is stored: a secret is never
        kept in the clear).
    """
    value: dict[str, Any] = {"id": webhook.id, "uri": webhook.uri}
    if webhook.secret:
        value["secret_encrypted"] = state.token_cipher(_STORING_THE_SECRET).encrypt(webhook.secret).decode()
    table = state.tables.settings
    now = state.store.clock()
    with state.store.transaction() as conn:
        updated = conn.execute(
            update(table).where(table.c.key == WEBHOOK_SETTING_KEY).values(value=value, updated_at=now)
        ).rowcount
        if not updated:
            conn.execute(insert(table).values(key=WEBHOOK_SETTING_KEY, value=value, version=0, updated_at=now))
    _secret_cache.pop(id(state), None)
    return "secret_encrypted" in value


def webhook_secret_in_clear(state: PatronLockState) -> bool:
    """Whether the registered webhook's secret is stored in the clear (an earlier version did so when no token key
    was set); ``flask patronlock rotate-keys`` encrypts it, and ``flask patronlock check`` reports it."""
    table = state.tables.settings
    with state.store.engine.connect() as conn:
        value = conn.execute(select(table.c.value).where(table.c.key == WEBHOOK_SETTING_KEY)).scalar()
    return isinstance(value, dict) and bool(value.get("secret"))


def rotate_webhook_secret(state: PatronLockState) -> bool:
    """Re-encrypt the registered webhook's stored secret under the first key of ``PATRONLOCK_TOKEN_KEYS`` (a secret
    stored in the clear before any key was configured is encrypted now). ``flask patronlock rotate-keys`` calls this
    with the token rotations: otherwise, once the old key is removed, no signature would verify and every webhook would
    be answered 403. Returns whether a secret was rewritten.

    :raises flask_patronlock.TokenDecryptionError: no configured key opens it (nothing is changed).
    """
    table = state.tables.settings
    cipher = state.token_cipher()
    with state.store.transaction() as conn:
        value = conn.execute(select(table.c.value).where(table.c.key == WEBHOOK_SETTING_KEY)).scalar()
        if not isinstance(value, dict) or not (value.get("secret_encrypted") or value.get("secret")):
            return False
        rotated = dict(value)
        if value.get("secret_encrypted"):
            rotated["secret_encrypted"] = cipher.rotate(value["secret_encrypted"].encode()).decode()
        else:
            rotated["secret_encrypted"] = cipher.encrypt(rotated.pop("secret")).decode()
        now = state.store.clock()
        conn.execute(update(table).where(table.c.key == WEBHOOK_SETTING_KEY).values(value=rotated, updated_at=now))
    _secret_cache.pop(id(state), None)
    return True


def register_webhook(state: PatronLockState, url: str) -> tuple[WebhookSnapshot, str, bool]:
    """Create the campaign's webhook for ``url`` with every ``members:*`` trigger, or update the one this client
    registered before (same URI, or the one ``register`` stored), and store its secret, encrypted.

    :returns: ``(webhook, "created" | "updated", secret_stored)``; ``secret_stored`` is false only when Patreon
        returned no secret.
    :raises ConfigurationError: ``PATRONLOCK_TOKEN_KEYS`` is empty or invalid, or the campaign or the creator's token
        is not configured; raised before Patreon is asked, so nothing is registered and nothing stored.
    """
    state.token_cipher(_STORING_THE_SECRET)  # the secret is only ever stored encrypted: refuse before Patreon
    campaign_id = state.campaign_id("registering the webhook")
    with state.creator_client("registering the webhook") as client:
        existing = [w for w in client.webhooks() if w.campaign_id in (None, campaign_id)]
        stored = stored_webhook(state) or {}
        match = next((w for w in existing if w.uri == url), None) or next(
            (w for w in existing if w.id == stored.get("id")), None
        )
        if match is None:
            webhook, action = client.create_webhook(campaign_id, url, MEMBER_TRIGGERS), "created"
        else:
            webhook = client.update_webhook(match.id, uri=url, triggers=MEMBER_TRIGGERS, paused=False)
            action = "updated"
            if not webhook.secret and match.secret:
                webhook = WebhookSnapshot(**{**_fields(webhook), "secret": match.secret})
    encrypted = _save_webhook(state, webhook)
    return webhook, action, encrypted


def _fields(webhook: WebhookSnapshot) -> dict[str, Any]:
    return {name: getattr(webhook, name) for name in WebhookSnapshot.__dataclass_fields__}


def delivery_counts(state: PatronLockState) -> dict[str, int]:
    """How many stored deliveries are in each status (``pending``, ``retry``, ``processing``, ``done``, ``failed``)."""
    from sqlalchemy import func

    table = state.tables.webhook_deliveries
    with state.store.engine.connect() as conn:
        rows = conn.execute(select(table.c.status, func.count()).group_by(table.c.status)).all()
    return {status: int(count) for status, count in rows}


# -- processing --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcessOutcome:
    """What :func:`process_delivery` did."""

    delivery_id: int
    #: ``applied`` (re-fetched and applied, or a deleted patron's pledge ended), ``ignored`` (another campaign's
    #: member, or one the API does not know and no delete of a stored patron), ``fallback`` (the API was unreachable:
    #: payload applied where not older and granting, never revoking; retry scheduled), ``failed`` (gave up),
    #: ``skipped`` (already processed or claimed by another worker).
    outcome: str
    result: ApplyResult | None = None


def _claim(state: PatronLockState, delivery_id: int, now: datetime) -> dict[str, Any] | None:
    """Take the delivery for processing (one worker at a time); its row, or ``None`` when not ours to process."""
    table = state.tables.webhook_deliveries
    with state.store.transaction() as conn:
        claimed = conn.execute(
            update(table)
            .where(
                table.c.id == delivery_id,
                or_(
                    table.c.status == "pending",
                    and_(
                        table.c.status.in_(("retry", "processing")),
                        or_(table.c.next_attempt_at.is_(None), table.c.next_attempt_at <= now),
                    ),
                ),
            )
            .values(
                status="processing",
                attempts=table.c.attempts + 1,
                next_attempt_at=now + timedelta(seconds=_CLAIM_SECONDS),
            )
        ).rowcount
        if not claimed:
            return None
        row = conn.execute(select(table).where(table.c.id == delivery_id)).mappings().first()
    return dict(row) if row else None


def _finish(state: PatronLockState, delivery_id: int, **values: Any) -> None:
    table = state.tables.webhook_deliveries
    with state.store.transaction() as conn:
        conn.execute(update(table).where(table.c.id == delivery_id).values(**values))


def _payload(body: bytes) -> MemberSnapshot | None:
    try:
        return parse_member_document(json.loads(body))
    except (MalformedDocument, ValueError, RecursionError):
        return None


#: the triggers Patreon sends when a pledge ends (``members:pledge:delete``) or a membership is removed
#: (``members:delete``, sent for members who never paid).
DELETE_TRIGGERS: tuple[str, ...] = ("members:pledge:delete", "members:delete")


def _pledging(member: MemberSnapshot | Patron) -> bool:
    """Whether Patreon lists ``member`` as pledging: active or declined, or on a free trial or a gift."""
    return member.patron_status in ("active_patron", "declined_patron") or member.is_free_trial or member.is_gifted


def _after_delete(
    state: PatronLockState, event: str, member_id: str, fetched: MemberSnapshot | None, body: bytes
) -> MemberSnapshot | None:
    """What to apply once the API answered: its member, or ``None`` (the API does not know the member: apply nothing).

    The API's answer wins over the payload, which only says what the member *was* (often still ``active_patron``):

    * the API returns the member: that, except that after a delete a member it no longer lists as pledging whom we
      stored as pledging is ``former_patron`` (the pledge ended; the cancel policy decides how access ends) -- and a
      member it lists as pledging again (a re-pledge raced the delete) is applied as it is;
    * the API answers 404 to a delete of a stored patron: the pledge ended. The stored state (or the payload's, where
      it is not older: it may know of a later paid charge) with ``former_patron`` and nothing entitled, so the cancel
      policy keeps access to the end of the paid period, or ends it at once; a member who never paid (the one
      ``members:delete`` is sent for) has no paid period and loses access at once;
    * the API answers 404 to any other trigger, or to a delete of a member never stored: nothing (a stale payload
      must not grant, or grant back, access the API does not confirm; the sync's missing rule sees the rest).
    """
    if event not in DELETE_TRIGGERS or (fetched is not None and _pledging(fetched)):
        return fetched
    stored = state.store.get_patron(member_id)
    if stored is None or not _pledging(stored):
        return fetched
    if fetched is not None:
        return fetched.replace(patron_status="former_patron")
    payload = _payload(body)
    base = (
        payload
        if payload is not None
        and payload.member_id == member_id
        and payload.campaign_id in (None, stored.campaign_id)
        and not _older_than_stored(payload, stored)
        else _last_seen(stored)
    )
    return base.replace(patron_status="former_patron", entitled_cents=0, entitled_tier_ids=(), will_pay_cents=0)


def _last_seen(patron: Patron) -> MemberSnapshot:
    """The snapshot ``patron`` was stored from (its Patreon fields)."""
    return MemberSnapshot(
        member_id=patron.member_id,
        campaign_id=patron.campaign_id,
        user_id=patron.patreon_user_id,
        email=patron.email,
        email_verified=patron.email_verified,
        full_name=patron.full_name,
        patron_status=patron.patron_status,
        last_charge_status=patron.last_charge_status,
        last_charge_date=patron.last_charge_date,
        next_charge_date=patron.next_charge_date,
        entitled_cents=patron.entitled_cents,
        entitled_tier_ids=patron.entitled_tier_ids,
        will_pay_cents=patron.will_pay_cents,
        lifetime_cents=patron.lifetime_cents,
        pledge_start=patron.pledge_start,
        pledge_cadence=patron.pledge_cadence,
        is_free_trial=patron.is_free_trial,
        is_gifted=patron.is_gifted,
        is_follower=patron.is_follower,
    )


def process_delivery(app: Flask | None, delivery_id: int) -> ProcessOutcome:
    """Process one stored delivery: re-fetch its member and apply that; see the module docs for the fallback.

    Safe to call more than once and from several workers: only one claims the delivery, and a processed delivery
    is skipped.
    """
    state = get_state(app)
    store = state.store
    cfg = state.app.config
    now = store.clock()
    row = _claim(state, delivery_id, now)
    if row is None:
        return ProcessOutcome(delivery_id, "skipped")
    member_id, event = row["member_id"], row["event"]
    strict = store._strict_signals()
    fetched: MemberSnapshot | None = None  # None after a 404: the API no longer returns the member
    error: PatreonError | None = None
    observed_at = store.clock()
    try:
        with state.creator_client("processing webhooks") as client:
            # One quick retry at most: a failed delivery is retried later anyway, and a worker that sat out the
            # client's full backoff on every delivery during an outage would fall far behind.
            client.max_retries = min(client.max_retries, 1)
            fetched = client.member(member_id)
    except NotFound:
        pass  # gone from Patreon: _after_delete says what that means for this trigger
    except PatreonError as exc:
        error = exc
    outcome: str
    result: ApplyResult | None = None
    if error is None:
        snapshot = _after_delete(state, event, member_id, fetched, row["body"])
        if snapshot is None or snapshot.campaign_id not in (None, state.campaign_id()):
            outcome = "ignored"
        else:
            snapshot = snapshot if snapshot.campaign_id else snapshot.replace(campaign_id=state.campaign_id())
            result = store.apply(snapshot, source="webhook", observed_at=observed_at)
            outcome = "applied"
        _finish(state, delivery_id, status="done", processed_at=store.clock(), next_attempt_at=None, error=None)
    else:
        payload = _payload(row["body"])
        if payload is not None and payload.campaign_id in (None, state.campaign_id()):
            snapshot = payload if payload.campaign_id else payload.replace(campaign_id=state.campaign_id())
            # the payload may grant (a new pledge shows at once) but never takes access away: that waits for the API
            result = store.apply_if_not_older(
                snapshot, source="webhook", observed_at=row["received_at"], defer_revocations=True
            )
        if _permanent(error) or row["attempts"] >= int(cfg["PATRONLOCK_WEBHOOK_MAX_ATTEMPTS"]):
            outcome = "failed"
            log.error("webhook delivery %d (%s %s) failed for good: %s", delivery_id, event, member_id, error)
            _finish(state, delivery_id, status="failed", processed_at=store.clock(), error=str(error)[:500])
        else:
            outcome = "fallback"
            wait = timedelta(seconds=float(cfg["PATRONLOCK_WEBHOOK_RETRY_SECONDS"]) * 2 ** (row["attempts"] - 1))
            _finish(
                state,
                delivery_id,
                status="retry",
                next_attempt_at=store.clock() + min(wait, _MAX_BACKOFF),
                error=str(error)[:500],
            )
    signals.send_action(
        signals.webhook_processed,
        state.app,
        strict=strict,
        delivery_id=delivery_id,
        event=event,
        member_id=member_id,
        outcome=outcome,
        result=result,
    )
    return ProcessOutcome(delivery_id, outcome, result)


def _permanent(error: PatreonError) -> bool:
    """An error retrying will not fix (a 4xx other than 429; 401/403 need the creator to act, but retry those:
    a refreshed token fixes them)."""
    return (
        isinstance(error, PatreonAPIError)
        and 400 <= error.status_code < 500
        and error.status_code not in (401, 403, 408, 429)
    )


def due_deliveries(state: PatronLockState, *, limit: int = 100) -> list[int]:
    """Deliveries waiting for (another) attempt now: pending ones, due retries, and claims left by crashed workers."""
    table = state.tables.webhook_deliveries
    now = state.store.clock()
    stmt = (
        select(table.c.id)
        .where(
            or_(
                table.c.status == "pending",
                and_(table.c.status.in_(("retry", "processing")), table.c.next_attempt_at <= now),
            )
        )
        .order_by(table.c.id)
        .limit(limit)
    )
    with state.store.engine.connect() as conn:
        return [int(i) for i in conn.execute(stmt).scalars()]
