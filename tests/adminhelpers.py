"""Helpers for the settings-page tests: a site with Flask-Login users (one admin), declared locks, tiers and patrons
(written through ``Store.apply``), and a test client that signs users in by header.

CSRF stays ON (as in production): :meth:`AdminSite.post` takes the token from the page it came from, like a browser.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import unescape
from typing import Any

from cryptography.fernet import Fernet
from flask import Flask
from flask.testing import FlaskClient
from flask_login import LoginManager, UserMixin
from sqlalchemy import insert

from flask_patronlock import MemberSnapshot, PatronLock, TierSnapshot
from flask_patronlock.state import PatronLockState, get_state

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
CAMPAIGN = "c1"
BRONZE = TierSnapshot(id="t3", title="Bronze", amount_cents=300, url="/checkout/c1?rid=t3")
SILVER = TierSnapshot(id="t5", title="Silver", amount_cents=500, url="/checkout/c1?rid=t5")
GOLD = TierSnapshot(id="t10", title="Gold", amount_cents=1000, url="/checkout/c1?rid=t10")
TIERS = (BRONZE, SILVER, GOLD)
ADMIN_PREFIX = "/patronlock/admin"

_CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"|name="csrf_token" value="([^"]+)"')


class User(UserMixin):
    def __init__(self, user_id: str, *, admin: bool = False, name: str = "", email: str = "") -> None:
        self.id = user_id
        self.admin = admin
        self.name = name
        self.email = email


@dataclass
class AdminSite:
    app: Flask
    users: dict[str, User] = field(default_factory=dict)
    clients: dict[str | None, FlaskClient] = field(default_factory=dict)

    @property
    def state(self) -> PatronLockState:
        return get_state(self.app)

    def client(self, user: str | None) -> FlaskClient:
        """A client of its own per user (its own session: CSRF tokens are per session)."""
        if user not in self.clients:
            client = self.app.test_client()
            if user is not None:
                client.environ_base["HTTP_X_USER"] = user
            self.clients[user] = client
        return self.clients[user]

    def get(self, path: str, user: str | None = "admin", **kwargs: Any) -> Any:
        return self.client(user).get(path, **kwargs)

    def csrf(self, user: str | None = "admin", path: str = ADMIN_PREFIX + "/policies") -> str:
        """A CSRF token of ``user``'s session, read from a page like a browser would."""
        return csrf_from(self.get(path, user).get_data(as_text=True))

    def post(self, path: str, data: dict[str, Any] | None = None, user: str | None = "admin", *,
             csrf: bool = True, **kwargs: Any) -> Any:
        payload = dict(data or {})
        if csrf:
            payload.setdefault("csrf_token", self.csrf(user))
        return self.client(user).post(path, data=payload, **kwargs)

    def link(self, user_id: str, patreon_user_id: str) -> None:
        """Link a local user to a Patreon user (what the OAuth connect flow does)."""
        with self.state.store.engine.begin() as conn:
            conn.execute(
                insert(self.state.tables.accounts).values(
                    user_id=user_id, patreon_user_id=patreon_user_id, scope="identity", created_at=NOW, updated_at=NOW
                )
            )

    def apply(self, member_id: str, **fields: Any) -> Any:
        observed_at = fields.pop("observed_at", None) or self.state.store.clock()
        values: dict[str, Any] = {
            "campaign_id": CAMPAIGN,
            "patron_status": "active_patron",
            "last_charge_status": "Paid",
            "last_charge_date": NOW - timedelta(days=3),
            "entitled_cents": 1000,
            "entitled_tier_ids": ("t10",),
            "pledge_start": NOW - timedelta(days=90),
            "lifetime_cents": 3000,
            "pledge_cadence": 1,
        }
        values.update(fields)
        return self.state.store.apply(MemberSnapshot(member_id=member_id, **values), source="sync",
                                      observed_at=observed_at)


def csrf_from(html: str) -> str:
    match = _CSRF.search(html)
    if match is None:
        raise AssertionError("no csrf_token on the page")
    return unescape(match.group(1) or match.group(2))


def sandbox_admin_site(make_app: Callable[..., Flask], sandbox: Any, members: int, **config: Any) -> AdminSite:
    """:func:`make_admin_site` on a live sandbox with ``members`` generated members: the creator's token and refresh
    token from the configuration, work inline, pages of 50, the store's clock the sandbox's."""
    sandbox.generate_members(members)
    settings = dict(
        sandbox.config,
        PATRONLOCK_CREATOR_REFRESH_TOKEN=sandbox.creator_refresh_token,
        PATRONLOCK_TOKEN_KEYS=[Fernet.generate_key().decode()],
        PATRONLOCK_JOBS="inline",
        PATRONLOCK_SYNC_PAGE_SIZE=50,
    )
    settings.update(config)
    site = make_admin_site(make_app, **settings)
    site.state.store.clock = lambda: sandbox.now
    return site


def make_admin_site(make_app: Callable[..., Flask], *, admin_loader: bool = True, **config: Any) -> AdminSite:
    """A site with users ``admin`` (an admin), ``bob`` (not), locks ``premium`` (Gold) and ``supporters`` ($1),
    the tiers Bronze/Silver/Gold of campaign c1, and a clock pinned to :data:`NOW`."""
    settings = {
        "PATRONLOCK_CAMPAIGN_ID": CAMPAIGN,
        "PATRONLOCK_SETTINGS_CHECK_SECONDS": 0.0,
        "PATRONLOCK_TOKEN_KEYS": [Fernet.generate_key().decode()],
        "PATRONLOCK_REDIRECT_URI": "http://site.test/patreon/callback",
        **config,
    }
    app = make_app(**settings)
    site = AdminSite(app)
    manager = LoginManager()
    manager.init_app(app)

    @manager.request_loader
    def from_header(request: Any) -> User | None:
        return site.users.get(request.headers.get("X-User", ""))

    @manager.user_loader
    def load(user_id: str) -> User | None:
        return site.users.get(user_id)

    site.users["admin"] = User("admin", admin=True, name="Kopi", email="kopi@example.com")
    site.users["bob"] = User("bob", name="Bob", email="bob@example.com")
    ext: PatronLock = site.state.extension
    if admin_loader:
        ext.admin_loader(lambda user: bool(getattr(user, "admin", False)))
    ext.lock("premium", tier="Gold", description="Premium posts")
    ext.lock("supporters", min_cents=100, description="Any paid tier")
    site.state.store.clock = lambda: NOW
    site.state.store.replace_tiers(CAMPAIGN, TIERS)

    @app.get("/")
    def home() -> str:
        return "home"

    return site
