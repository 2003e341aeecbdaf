"""Patreon webhooks: verify, dedupe, store, acknowledge -- then process as a hint, re-fetching the member.

The route (``POST {PATRONLOCK_URL_PREFIX}/webhook``, blueprint ``patronlock_webhooks``, endpoint ``receive``):

1. reads at most :data:`PATRONLOCK_WEBHOOK_MAX_BYTES` of the raw body (more: ``413``);
2. verifies ``X-Patreon-Signature`` over those exact bytes against every configured secret
   (:data:`PATRONLOCK_WEBHOOK_SECRETS` plus the one ``flask patronlock webhooks register`` stored) before parsing
   anything: a missing or bad signature is ``403`` and nothing is stored;
3. an event that is not a ``members:*`` trigger: ``200``, logged, not stored; a body that is not a JSON:API member
   document: ``400``;
4. stores the delivery with ``dedupe_key = sha256(body)`` -- what the signature covers, and nothing it does not: the
   ``X-Patreon-Event`` header is not signed, so the same body under another event is the same delivery -- under a
   UNIQUE constraint (insert, or do nothing on conflict), so the same delivery twice -- or twenty copies at once, or
   a captured one replayed under another event -- is one row and one piece of work. The same body arriving when its
   delivery was processed longer than :data:`PATRONLOCK_WEBHOOK_RECHECK_SECONDS` ago is a later change that reads
   the same (a tier changed back): the delivery goes back to ``pending`` and its member is re-checked once more;
5. hands the new delivery to :mod:`flask_patronlock.jobs` and answers ``200``. No input makes it answer ``5xx``.

Processing (:func:`process_delivery`) treats the delivery as a hint: it re-fetches the member from the API and
applies *that* (``source="webhook"``), so a replayed, duplicated or out-of-order delivery cannot roll anyone back.
The event header only labels the delivery (logs, signals), and the same body may arrive under several triggers (it
is stored once): what is applied never depends on it, but for one case: after a delete, a member the API returns with
no status at all is read as the pledge having ended. A member the API no longer returns (``404``) whom we stored as
pledging has ended the pledge (``former_patron``; the cancel policy says how access ends), whatever the payload still
says. When the API cannot be reached, the payload is applied only where it is not older than what is stored
(:meth:`~flask_patronlock.store.Store.apply_if_not_older`) and never to take access away, and the delivery is retried
later with a growing wait. Nothing is stored for a member Patreon does not place in this campaign: the API's answer
places it (a member the creator's token can read), or, when the API says ``404`` or cannot be reached, a body naming
this campaign does; and a body alone never stores a pledge the API does not confirm (``404``). Every delivery ends
``done``, ``ignored`` (not this campaign's member, audited) or ``failed`` (a body that cannot be parsed, a permanent API
error, or :data:`PATRONLOCK_WEBHOOK_MAX_ATTEMPTS` attempts used up, however they ended).

Over 600 lines: one delivery's path, from the route through its stored row to processing, shares the deliveries
table and its states; the secrets and registration (about 170 lines) are the one part that could stand alone.
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
from .dbutil import begin_immediate, sqlite_write_lock
from .patreon.errors import MalformedDocument, NotFound, PatreonAPIError, PatreonError
from .patreon.jsonapi import is_patreon_id, load_json, parse_member_document
from .patreon.signatures import SIGNATURE_HEADER, verify_signature
from .patreon.types import MEMBER_TRIGGERS, MemberSnapshot, WebhookSnapshot
from .patron import Patron
from .state import PatronLockState, get_state
from .transitions import ApplyResult, older_than_stored

__all__ = [
    "DELETE_TRIGGERS",
    "EVENT_HEADER",
    "MEMBER_TRIGGERS",
    "ProcessOutcome",
    "blueprint",
    "delivery_counts",
    "delivery_problems",
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
        exempt = getattr(csrf, "_exempt_blueprints", None)  # Flask-WTF >= 1.2: the Blueprint objects
        if exempt is None or blueprint not in exempt:
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
        delivery_id = _recheck(state, body, float(app.config["PATRONLOCK_WEBHOOK_RECHECK_SECONDS"]))
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
    if not is_patreon_id(member_id):
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


def _recheck(state: PatronLockState, body: bytes, window: float) -> int | None:
    """A body already stored arrived again: when its delivery was processed (``done``) more than ``window`` seconds
    ago, put it back to ``pending`` (attempts reset; ``received_at`` kept, so a payload fallback judges the body as of
    when it first came) and return its id; otherwise ``None`` (a duplicate). Patreon sends a document that reads the
    same as an earlier one for a real later change (a tier changed back); a replay costs one re-fetch per window."""
    table = state.tables.webhook_deliveries
    now = state.store.clock()
    due = (
        table.c.dedupe_key == dedupe_key(body),
        table.c.status == "done",
        table.c.processed_at < now - timedelta(seconds=window),
    )
    with state.store.transaction() as conn:
        found = conn.execute(select(table.c.id).where(*due)).first()
        if found is None:
            return None
        again = conn.execute(
            update(table).where(table.c.id == found.id, *due[1:]).values(
                status="pending", attempts=0, next_attempt_at=now, error=None
            )
        ).rowcount
    return int(found.id) if again else None


def dedupe_key(body: bytes) -> str:
    """The key two deliveries are the same by: the sha256 of the raw body, exactly what the signature covers. The
    event header is left out on purpose: it is not signed, so a captured body replayed under another event would
    otherwise be new work."""
    return hashlib.sha256(body).hexdigest()


def _store_delivery(state: PatronLockState, event: str, member_id: str, body: bytes) -> int | None:
    """Insert the delivery unless its dedupe key exists; its id, or ``None`` for a duplicate."""
    table = state.tables.webhook_deliveries
    key = dedupe_key(body)
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


def note_patreon_view(state: PatronLockState, hooks: list[WebhookSnapshot]) -> None:
    """Remember what Patreon last said about the registered webhook (``paused``, ``failures`` in a row, ``listed``,
    and ``since`` when that changed) on its stored row, for the health view, which never asks Patreon itself.
    Written only when the answer changed; registering the webhook again replaces it."""
    table = state.tables.settings
    with state.store.transaction() as conn:
        value = conn.execute(
            select(table.c.value).where(table.c.key == WEBHOOK_SETTING_KEY).with_for_update()
        ).scalar()
        if not isinstance(value, dict) or not value.get("id"):
            return
        ours = next((h for h in hooks if h.id == value["id"]), None)
        seen = {
            "listed": ours is not None,
            "paused": bool(ours and ours.paused),
            "failures": int(ours.num_consecutive_times_failed) if ours else 0,
        }
        before = value.get("patreon") or {}
        if {k: before.get(k) for k in seen} == seen:
            return
        updated = dict(value, patreon={**seen, "since": state.store.clock().isoformat()})
        conn.execute(update(table).where(table.c.key == WEBHOOK_SETTING_KEY).values(value=updated))


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

    :raises flask_patronlock.errors.TokenDecryptionError: no configured key opens it (nothing is changed).
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
    """How many stored deliveries are in each status (``pending``, ``retry``, ``processing``, ``done``, ``ignored``,
    ``failed``)."""
    from sqlalchemy import func

    table = state.tables.webhook_deliveries
    with state.store.engine.connect() as conn:
        rows = conn.execute(select(table.c.status, func.count()).group_by(table.c.status)).all()
    return {status: int(count) for status, count in rows}


def last_delivery_at(state: PatronLockState) -> datetime | None:
    """When the latest stored delivery was received (``None``: none yet)."""
    from sqlalchemy import func

    table = state.tables.webhook_deliveries
    with state.store.engine.connect() as conn:
        value: datetime | None = conn.execute(select(func.max(table.c.received_at))).scalar_one()
    return value


# -- processing --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcessOutcome:
    """What :func:`process_delivery` did."""

    delivery_id: int
    #: ``applied`` (re-fetched and applied, or a deleted patron's pledge ended), ``fallback`` (retry scheduled: the
    #: API was unreachable and the payload was applied where not older, granting but never revoking, or the attempt
    #: failed unexpectedly), ``ignored`` (not this campaign's member, or a pledge the API does not confirm),
    #: ``failed`` (gave up), ``skipped`` (already processed, claimed by another worker, or out of attempts).
    outcome: str
    result: ApplyResult | None = None


#: the first words of a delivery's ``error`` for each way it can end other than ``done`` (the settings page reads them).
MALFORMED = "malformed body"
NOT_OURS = "not this campaign's member"
GAVE_UP = "gave up after"
REFUSED = "Patreon refused"


def _due(table: Any, now: datetime) -> Any:
    """Deliveries waiting for an attempt now: pending ones, due retries, and claims left by crashed workers."""
    return or_(
        table.c.status == "pending",
        and_(
            table.c.status.in_(("retry", "processing")),
            or_(table.c.next_attempt_at.is_(None), table.c.next_attempt_at <= now),
        ),
    )


def _claim(state: PatronLockState, delivery_id: int, now: datetime, max_attempts: int) -> dict[str, Any] | None:
    """Take the delivery for processing (one worker at a time); its row, or ``None`` when not ours to process.

    A due delivery that has used up its attempts is not taken: it ends ``failed`` here. That is the cap for every way
    an attempt can end, including a worker that died in the middle of one (its claim expires and the sweep finds it).
    """
    table = state.tables.webhook_deliveries
    with state.store.transaction() as conn:
        claimed = conn.execute(
            update(table)
            .where(table.c.id == delivery_id, _due(table, now), table.c.attempts < max_attempts)
            .values(
                status="processing",
                attempts=table.c.attempts + 1,
                next_attempt_at=now + timedelta(seconds=_CLAIM_SECONDS),
            )
        ).rowcount
        if claimed:
            row = conn.execute(select(table).where(table.c.id == delivery_id)).mappings().first()
            return dict(row) if row else None
        spent = (table.c.id == delivery_id, _due(table, now), table.c.attempts >= max_attempts)
        exhausted = conn.execute(
            select(table.c.member_id, table.c.event, table.c.attempts, table.c.error).where(*spent)
        ).first()
        if exhausted is None:
            return None
        last = exhausted.error or "the last attempt never finished (the worker processing it stopped)"
        reason = f"{GAVE_UP} {exhausted.attempts} attempts: {last}"[:500]
        ended = conn.execute(
            update(table).where(*spent).values(status="failed", processed_at=now, next_attempt_at=None, error=reason)
        ).rowcount
        if ended:  # not already ended by another worker's sweep
            _audit(state, conn, "webhook_failed", delivery_id, exhausted.event, exhausted.member_id, reason)
            log.error("webhook delivery %d (%s %s) %s", delivery_id, exhausted.event, exhausted.member_id, reason)
    return None


def _audit(state: PatronLockState, conn: Any, kind: str, delivery_id: int, event: str, member_id: str | None,
           reason: str) -> None:
    state.store.record_event(
        conn, kind, source="webhook", member_id=member_id,
        detail={"delivery_id": delivery_id, "event": event, "reason": reason},
    )


def _finish(state: PatronLockState, row: dict[str, Any], audit: str | None = None, **values: Any) -> None:
    """Write how the delivery ended (with an audit row of kind ``audit`` for one that was ignored or failed)."""
    table = state.tables.webhook_deliveries
    with state.store.transaction() as conn:
        conn.execute(update(table).where(table.c.id == row["id"]).values(**values))
        if audit is not None:
            _audit(state, conn, audit, row["id"], row["event"], row["member_id"], values.get("error") or "")


def _payload(body: bytes) -> MemberSnapshot:
    """The delivery's own member document. :raises MalformedDocument: it cannot be parsed into one."""
    return parse_member_document(load_json(body))


def _this_campaigns(snapshot: MemberSnapshot, campaign_id: str, *, api_answered: bool) -> MemberSnapshot | None:
    """``snapshot`` as this campaign's member, or ``None`` when Patreon does not place it in this campaign.

    The one campaign check of processing. A snapshot naming this campaign is placed (the API's answer, or a body
    signed with this campaign's webhook secret); one naming another campaign is not; one naming none is placed only
    when it is the API's answer (a member the creator's token can read) -- never a body alone.
    """
    if snapshot.campaign_id == campaign_id:
        return snapshot
    if snapshot.campaign_id is None and api_answered:
        return snapshot.replace(campaign_id=campaign_id)
    return None


#: the triggers Patreon sends when a pledge ends (``members:pledge:delete``) or a membership is removed
#: (``members:delete``, sent for members who never paid).
DELETE_TRIGGERS: tuple[str, ...] = ("members:pledge:delete", "members:delete")


def _pledging(member: MemberSnapshot | Patron) -> bool:
    """Whether Patreon lists ``member`` as pledging: active or declined, or on a free trial or a gift."""
    return member.patron_status in ("active_patron", "declined_patron") or member.is_free_trial or member.is_gifted


def _pledge_ended(
    state: PatronLockState, event: str, member_id: str, fetched: MemberSnapshot | None, body: bytes
) -> MemberSnapshot | None:
    """The snapshot that ends a stored patron's pledge, once the API answered; ``None`` when it did not end.

    The API's answer wins over the payload, which only says what the member *was* (often still ``active_patron``):

    * the API returns the member: its answer stands (a member it lists as pledging again after a delete -- a
      re-pledge raced it -- keeps access), except that after a delete a member it returns with no pledge status whom
      we stored as pledging is ``former_patron`` (the pledge ended; the cancel policy decides how access ends);
    * the API answers 404 for a patron we stored as pledging, whatever the trigger (the header is not signed, and the
      same body arrives under several triggers): the pledge ended. The stored state (or the payload's, where it is not
      older: it may know of a later paid charge) with ``former_patron`` and nothing entitled, so the cancel policy
      keeps access to the end of the paid period, or ends it at once; a member who never paid (the one
      ``members:delete`` is sent for) has no paid period and loses access at once.
    """
    if fetched is not None and (event not in DELETE_TRIGGERS or _pledging(fetched)):
        return None
    stored = state.store.get_patron(member_id)
    if stored is None or not _pledging(stored):
        return None
    if fetched is not None:
        return fetched.replace(patron_status="former_patron")
    try:
        payload: MemberSnapshot | None = _payload(body)
    except MalformedDocument:
        payload = None
    base = (
        payload
        if payload is not None
        and payload.member_id == member_id
        and payload.campaign_id in (None, stored.campaign_id)
        and not older_than_stored(payload, stored)
        else _last_seen(stored)
    )
    return base.replace(
        campaign_id=stored.campaign_id,
        patron_status="former_patron",
        entitled_cents=0,
        entitled_tier_ids=(),
        will_pay_cents=0,
    )


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
    is skipped. Nothing a delivery holds makes this raise: an attempt that fails unexpectedly is retried like an
    unreachable API, and after :data:`PATRONLOCK_WEBHOOK_MAX_ATTEMPTS` attempts the delivery ends ``failed``.
    """
    state = get_state(app)
    store = state.store
    max_attempts = max(1, int(state.app.config["PATRONLOCK_WEBHOOK_MAX_ATTEMPTS"]))
    row = _claim(state, delivery_id, store.clock(), max_attempts)
    if row is None:
        return ProcessOutcome(delivery_id, "skipped")
    strict = store._strict_signals()
    try:
        outcome, result = _process(state, row, max_attempts)
    except Exception as exc:  # a bug or an outage this code did not foresee: retried, and capped like any other
        log.exception("webhook delivery %d (%s %s) failed unexpectedly", delivery_id, row["event"], row["member_id"])
        outcome, result = _retry_or_fail(state, row, max_attempts, f"{type(exc).__name__}: {exc}"), None
    signals.send_action(
        signals.webhook_processed,
        state.app,
        strict=strict,
        delivery_id=delivery_id,
        event=row["event"],
        member_id=row["member_id"],
        outcome=outcome,
        result=result,
    )
    return ProcessOutcome(delivery_id, outcome, result)


def _process(state: PatronLockState, row: dict[str, Any], max_attempts: int) -> tuple[str, ApplyResult | None]:
    store = state.store
    delivery_id, member_id, event = row["id"], row["member_id"], row["event"]
    fetched: MemberSnapshot | None = None
    error: PatreonError | None = None
    observed_at = store.clock()
    try:
        with state.creator_client("processing webhooks") as client:
            # One quick retry at most: a failed delivery is retried later anyway, and a worker that sat out the
            # client's full backoff on every delivery during an outage would fall far behind.
            client.max_retries = min(client.max_retries, 1)
            fetched = client.member(member_id)
    except NotFound:
        pass  # gone from Patreon: _pledge_ended says what that means
    except PatreonError as exc:
        error = exc
    ended = _pledge_ended(state, event, member_id, fetched, row["body"]) if error is None else None
    snapshot = ended or fetched
    malformed: MalformedDocument | None = None
    if snapshot is None:
        try:
            snapshot = _payload(row["body"])
        except MalformedDocument as exc:
            malformed = exc
    ours = _this_campaigns(snapshot, state.campaign_id(), api_answered=fetched is not None) if snapshot else None
    unconfirmed = error is None and fetched is None and ended is None and ours is not None and _pledging(ours)
    if unconfirmed:
        ours = None  # a body alone never stores a pledge the API says it does not know (404)
    result: ApplyResult | None = None
    if ours is not None:
        if fetched is not None or ended is not None:  # what the API says (a 404 included)
            result = store.apply(ours, source="webhook", observed_at=observed_at)
        else:
            # the payload may grant (a new pledge shows at once) but never takes access away: that waits for the API
            result = store.apply_if_not_older(
                ours, source="webhook", observed_at=row["received_at"], defer_revocations=True
            )
    if error is not None:  # the API could not say: the payload did what it could, the API decides later
        if _permanent(error):
            reason = f"{REFUSED}: {error}"
            log.error("webhook delivery %d (%s %s) failed for good: %s", delivery_id, event, member_id, reason)
            _finish(state, row, "webhook_failed", status="failed", processed_at=store.clock(), next_attempt_at=None,
                    error=reason[:500])
            return "failed", result
        return _retry_or_fail(state, row, max_attempts, str(error)), result
    done: dict[str, Any] = {"processed_at": store.clock(), "next_attempt_at": None}
    if ours is not None:
        _finish(state, row, status="done", error=None, **done)
        return "applied", result
    if malformed is not None:
        reason = f"{MALFORMED}: {malformed}"
        log.warning("webhook delivery %d (%s %s): %s", delivery_id, event, member_id, reason)
        _finish(state, row, "webhook_failed", status="failed", error=reason[:500], **done)
        return "failed", None
    named = snapshot.campaign_id if snapshot is not None else None
    if unconfirmed:
        reason = f"{NOT_OURS}: the API does not know the member (404), so the pledge the body shows is not stored"
    elif fetched is not None:
        reason = f"{NOT_OURS}: Patreon places it in campaign {named!r}"
    else:
        says = f"names campaign {named!r}" if named else "names no campaign"
        reason = f"{NOT_OURS}: the API does not know the member (404) and the body {says}"
    log.warning("webhook delivery %d (%s %s) ignored: %s", delivery_id, event, member_id, reason)
    _finish(state, row, "webhook_ignored", status="ignored", error=reason[:500], **done)
    return "ignored", None


def _retry_or_fail(state: PatronLockState, row: dict[str, Any], max_attempts: int, error: str) -> str:
    """Schedule another attempt with a doubling wait, or end the delivery ``failed`` when its attempts are used up."""
    store = state.store
    attempts = int(row["attempts"])
    if attempts >= max_attempts:
        reason = f"{GAVE_UP} {attempts} attempts: {error}"
        log.error("webhook delivery %d (%s %s) %s", row["id"], row["event"], row["member_id"], reason)
        _finish(state, row, "webhook_failed", status="failed", processed_at=store.clock(), next_attempt_at=None,
                error=reason[:500])
        return "failed"
    wait = timedelta(seconds=float(state.app.config["PATRONLOCK_WEBHOOK_RETRY_SECONDS"]) * 2 ** (attempts - 1))
    _finish(state, row, status="retry", next_attempt_at=store.clock() + min(wait, _MAX_BACKOFF), error=error[:500])
    return "fallback"


def _permanent(error: PatreonError) -> bool:
    """An error retrying will not fix (a 4xx other than 429; 401/403 need the creator to act, but retry those:
    a refreshed token fixes them)."""
    return (
        isinstance(error, PatreonAPIError)
        and 400 <= error.status_code < 500
        and error.status_code not in (401, 403, 408, 429)
    )


def delivery_problems(state: PatronLockState, *, limit: int = 20) -> list[dict[str, Any]]:
    """The latest deliveries that ended ``failed`` or ``ignored``, newest first, with their ``error`` (the reason)."""
    table = state.tables.webhook_deliveries
    stmt = (
        select(table.c.id, table.c.event, table.c.member_id, table.c.status, table.c.attempts, table.c.error,
               table.c.received_at, table.c.processed_at)
        .where(table.c.status.in_(("failed", "ignored")))
        .order_by(table.c.id.desc())
        .limit(limit)
    )
    with state.store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(stmt).mappings()]


def due_deliveries(state: PatronLockState, *, limit: int = 100) -> list[int]:
    """Deliveries waiting for (another) attempt now: pending ones, due retries, and claims left by crashed workers."""
    table = state.tables.webhook_deliveries
    now = state.store.clock()
    stmt = select(table.c.id).where(_due(table, now)).order_by(table.c.id).limit(limit)
    with state.store.engine.connect() as conn:
        return [int(i) for i in conn.execute(stmt).scalars()]
