"""Welcome outbox: a flask-patronlock add-on that writes a welcome message into an outbox table whenever someone
starts pledging; the site's mailer (a cron job, a Celery task) sends the pending ones and marks them sent.

Writing to an outbox instead of sending from the receiver keeps the receiver fast and safe: it runs after the
patron's change has committed, inside a sync run or a webhook, and a slow or failing mail server must not hold those
up. The outbox is also a record of who was welcomed; a pledge start is welcomed once, however often it is reported.

Configuration (set on the host app; ``{name}``, ``{tier}``, ``{amount}`` and ``{creator}`` are filled in):

``WELCOME_OUTBOX_SUBJECT``
    default ``"Welcome, and thank you!"``
``WELCOME_OUTBOX_BODY``
    default: a short thank-you naming the tier.

Read the outbox with :func:`pending` and :func:`mark_sent`, or ``flask welcome-outbox pending``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, Text, insert, select, update
from sqlalchemy.exc import IntegrityError

from flask_patronlock import Addon, AddonHooks, Patron, patron_data, signals
from flask_patronlock.models import UTCDateTime

__all__ = ["TABLE_NAME", "Message", "WelcomeOutbox", "mark_sent", "outbox_table", "pending"]

__version__ = "1.0.0"

#: The add-on's own table (prefixed with the add-on's name, never ``patronlock_``).
TABLE_NAME = "welcome_outbox_messages"

DEFAULT_SUBJECT = "Welcome, and thank you!"
DEFAULT_BODY = (
    "Hi {name},\n\n"
    "Thank you for becoming a patron of {creator} at {tier}. Your support makes the work possible, and everything "
    "for patrons on the site is open to you now: log in and connect your Patreon account if you have not yet.\n"
)

_BigId = BigInteger().with_variant(Integer(), "sqlite")


def outbox_table(metadata: MetaData) -> Table:
    """The outbox table on ``metadata`` (defined once; two apps sharing a ``db`` share it)."""
    existing = metadata.tables.get(TABLE_NAME)
    if existing is not None:
        return existing
    return Table(
        TABLE_NAME,
        metadata,
        Column("id", _BigId, primary_key=True, autoincrement=True),
        # one welcome per pledge start: the member and when the pledge started (or when we first saw it start)
        Column("dedupe_key", String(64), nullable=False, unique=True),
        Column("member_id", String(64), nullable=False, index=True),
        Column("local_user_id", String(64), nullable=True),
        Column("email", String(320), nullable=True),
        Column("name", String(255), nullable=False, default=""),
        Column("subject", String(255), nullable=False),
        Column("body", Text, nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("sent_at", UTCDateTime, nullable=True, index=True),
    )


@dataclass(frozen=True, slots=True)
class Message:
    """One welcome message in the outbox."""

    id: int
    member_id: str
    local_user_id: str | None
    email: str | None
    name: str
    subject: str
    body: str
    created_at: datetime
    sent_at: datetime | None


class _Values(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"  # an unknown placeholder stays as written instead of failing the receiver


class WelcomeOutbox(Addon):
    """Writes a welcome message into ``welcome_outbox_messages`` when someone starts pledging."""

    name = "welcome_outbox"
    version = __version__
    description = "Writes a welcome message into an outbox table when someone starts pledging, for your mailer."

    def init_app(self, app: Flask, hooks: AddonHooks) -> None:
        app.config.setdefault("WELCOME_OUTBOX_SUBJECT", DEFAULT_SUBJECT)
        app.config.setdefault("WELCOME_OUTBOX_BODY", DEFAULT_BODY)
        outbox_table(hooks.data.metadata)  # db.create_all() / Flask-Migrate create it with the app's tables
        hooks.connect(signals.pledge_started, self.on_pledge_started)
        app.cli.add_command(outbox_cli)

    def on_pledge_started(self, app: Flask, *, patron: Patron, **kwargs: Any) -> None:
        """``pledge-started``: put a welcome for ``patron`` in the outbox (at most one per pledge start)."""
        data = patron_data(app)
        table = outbox_table(data.metadata)
        values = _Values(
            name=(patron.full_name or "").split(" ")[0] or "there",
            creator=app.config.get("PATRONLOCK_CREATOR_NAME") or "the creator",
            **_tier_values(app, patron),
        )
        started = patron.pledge_start or patron.observed_at
        key = hashlib.sha256(f"{patron.member_id}|{started.isoformat() if started else ''}".encode()).hexdigest()
        row = {
            "dedupe_key": key,
            "member_id": patron.member_id,
            "local_user_id": patron.local_user_id,
            "email": patron.email,
            "name": patron.full_name or "",
            "subject": str(app.config["WELCOME_OUTBOX_SUBJECT"]).format_map(values)[:255],
            "body": str(app.config["WELCOME_OUTBOX_BODY"]).format_map(values),
            "created_at": datetime.now(UTC),
        }
        try:
            with data.engine.begin() as conn:
                conn.execute(insert(table).values(**row))
        except IntegrityError:
            pass  # this pledge start is already welcomed (reported twice: by a webhook and a sync)


def _tier_values(app: Flask, patron: Patron) -> Mapping[str, str]:
    tiers = patron_data(app).tiers()
    held = [tiers[t] for t in patron.entitled_tier_ids if t in tiers]
    cents = max((t.amount_cents for t in held), default=patron.entitled_cents)
    symbol = app.config.get("PATRONLOCK_CURRENCY_SYMBOL") or ""
    amount = f"{symbol}{cents // 100}.{cents % 100:02d}"
    best = max(held, key=lambda t: t.amount_cents, default=None)
    return {"tier": best.title if best is not None and best.title else amount, "amount": amount}


def pending(app: Flask | None = None, *, limit: int = 100) -> list[Message]:
    """The oldest unsent messages (at most ``limit``)."""
    data = patron_data(app)
    table = outbox_table(data.metadata)
    with data.engine.connect() as conn:
        rows = conn.execute(
            select(table).where(table.c.sent_at.is_(None)).order_by(table.c.id).limit(limit)
        ).mappings()
        return [Message(**{k: v for k, v in row.items() if k != "dedupe_key"}) for row in rows]


def mark_sent(ids: Iterable[int], app: Flask | None = None) -> int:
    """Mark the messages ``ids`` sent now; returns how many were still unsent."""
    data = patron_data(app)
    table = outbox_table(data.metadata)
    wanted = list(ids)
    if not wanted:
        return 0
    with data.engine.begin() as conn:
        result = conn.execute(
            update(table).where(table.c.id.in_(wanted), table.c.sent_at.is_(None)).values(sent_at=datetime.now(UTC))
        )
    return int(result.rowcount or 0)


outbox_cli = AppGroup("welcome-outbox", help="The welcome outbox add-on: messages waiting for your mailer.")


@outbox_cli.command("pending")
@click.option("--limit", default=100, show_default=True)
def pending_command(limit: int) -> None:
    """List the unsent welcome messages."""
    messages = pending(current_app._get_current_object(), limit=limit)  # type: ignore[attr-defined]
    for message in messages:
        click.echo(f"{message.id}\t{message.email or '(no email)'}\t{message.subject}")
    click.echo(f"{len(messages)} pending")
