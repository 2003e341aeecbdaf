"""Helpers for the lock tests: a site with Flask-Login, tiers, patrons (through store.apply) and linked accounts.

Patrons are only ever written through ``Store.apply``; linking a local user inserts a ``patronlock_accounts`` row
directly (the real linking code is the OAuth flow's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask
from flask_login import LoginManager, UserMixin
from sqlalchemy import event, insert

from flask_patronlock import MemberSnapshot, PatronLock, TierSnapshot
from flask_patronlock.state import PatronLockState, get_state

#: The tests' "now": every page view decides at this moment (the store's clock is pinned to it).
NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
CAMPAIGN = "c1"

SILVER = TierSnapshot(id="t5", title="Silver", amount_cents=500, url="/checkout/c1?rid=t5")
GOLD = TierSnapshot(id="t10", title="Gold", amount_cents=1000, url="/checkout/c1?rid=t10")
PLATINUM = TierSnapshot(id="t25", title="Platinum", amount_cents=2500)
TIERS = (SILVER, GOLD, PLATINUM)


class User(UserMixin):
    def __init__(self, user_id: str, *, admin: bool = False) -> None:
        self.id = user_id
        self.admin = admin


@dataclass
class Site:
    app: Flask
    users: dict[str, User] = field(default_factory=dict)

    @property
    def state(self) -> PatronLockState:
        return get_state(self.app)

    @property
    def ext(self) -> PatronLock:
        return self.state.extension

    def user(self, user_id: str, *, admin: bool = False) -> User:
        self.users[user_id] = User(user_id, admin=admin)
        return self.users[user_id]

    def get(self, path: str, user: str | None = None, **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", {}))
        if user is not None:
            headers["X-User"] = user
        return self.app.test_client().get(path, headers=headers, **kwargs)

    def link(self, user_id: str, patreon_user_id: str) -> None:
        """Link a local user to a Patreon user (what the OAuth connect flow will do)."""
        if user_id not in self.users:
            self.user(user_id)
        with self.state.store.engine.begin() as conn:
            conn.execute(
                insert(self.state.tables.accounts).values(
                    user_id=user_id, patreon_user_id=patreon_user_id, scope="identity"
                )
            )

    def patron(self, member_id: str, patreon_user_id: str, *, observed_at: datetime = NOW, **kw: Any) -> None:
        """Store a member through the single write path."""
        values: dict[str, Any] = dict(
            campaign_id=CAMPAIGN,
            user_id=patreon_user_id,
            email=f"{member_id}@example.com",
            full_name=f"Patron {member_id}",
            patron_status="active_patron",
            last_charge_status="Paid",
            last_charge_date=NOW - timedelta(days=3),
            next_charge_date=NOW + timedelta(days=27),
            entitled_cents=1000,
            entitled_tier_ids=("t10",),
            will_pay_cents=1000,
            lifetime_cents=3000,
            pledge_start=NOW - timedelta(days=100),
            pledge_cadence=1,
        )
        values.update(kw)
        self.state.store.apply(MemberSnapshot(member_id=member_id, **values), source="sync", observed_at=observed_at)

    def linked_patron(self, user_id: str, **kw: Any) -> None:
        """A local user linked to a stored patron (member ``m-<user>``, Patreon user ``p-<user>``)."""
        self.link(user_id, f"p-{user_id}")
        self.patron(f"m-{user_id}", f"p-{user_id}", **kw)


def make_site(make_app: Callable[..., Flask], **config: Any) -> Site:
    """An app with Flask-Login (the ``X-User`` header signs a user in), the campaign's tiers stored, the store's
    clock pinned to :data:`NOW`, and the admin callback reading ``user.admin``."""
    config.setdefault("PATRONLOCK_CAMPAIGN_ID", CAMPAIGN)
    app = make_app(**config)
    site = Site(app)
    manager = LoginManager(app)

    @manager.request_loader
    def load(request: Any) -> User | None:
        return site.users.get(request.headers.get("X-User", ""))

    @manager.user_loader
    def load_user(user_id: str) -> User | None:
        return site.users.get(user_id)

    state = get_state(app)
    state.store.clock = lambda: NOW
    state.store.replace_tiers(CAMPAIGN, TIERS)
    state.extension.admin_loader(lambda user: bool(getattr(user, "admin", False)))
    return site


@contextmanager
def count_queries(app: Flask) -> Iterator[list[str]]:
    """Every SQL statement run on the app's engine inside the block."""
    statements: list[str] = []
    engine = get_state(app).store.engine

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", before)
