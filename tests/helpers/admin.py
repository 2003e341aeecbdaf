"""The settings-page site: :func:`tests.helpers.sites.make_site` with users ``admin`` (an admin) and ``bob`` (not),
declared locks, tiers and patrons (written through ``Store.apply``), and a test client per user signed in by header.

CSRF stays ON (as in production): :meth:`AdminSite.post` takes the token from the page it came from, like a browser.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from html import unescape
from typing import Any

from cryptography.fernet import Fernet
from flask import Flask
from flask.testing import FlaskClient

from flask_patronlock.patreon import MemberSnapshot
from tests.helpers.constants import ADMIN_TIERS, CAMPAIGN, NOW
from tests.helpers.sites import Site, make_site

ADMIN_PREFIX = "/patronlock/admin"

_CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"|name="csrf_token" value="([^"]+)"')


@dataclass
class AdminSite(Site):
    clients: dict[str | None, FlaskClient] = field(default_factory=dict)

    def client(self, user: str | None) -> FlaskClient:
        """A client of its own per user (its own session: CSRF tokens are per session)."""
        if user not in self.clients:
            client = self.app.test_client()
            if user is not None:
                client.environ_base["HTTP_X_USER"] = user
            self.clients[user] = client
        return self.clients[user]

    def get(self, path: str, user: str | None = "admin", **kwargs: Any) -> Any:  # type: ignore[override]
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

    def link(self, user_id: str, patreon_user_id: str, **values: Any) -> None:
        """Link a local user to a Patreon user (what the OAuth connect flow does), created at :data:`NOW`."""
        super().link(user_id, patreon_user_id, **{"created_at": NOW, "updated_at": NOW, **values})

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
        "PATRONLOCK_SETTINGS_CHECK_SECONDS": 0.0,
        "PATRONLOCK_TOKEN_KEYS": [Fernet.generate_key().decode()],
        "PATRONLOCK_REDIRECT_URI": "http://site.test/patreon/callback",
        **config,
    }
    site = make_site(make_app, site=AdminSite, tiers=ADMIN_TIERS, admin_loader=admin_loader, **settings)
    site.user("admin", admin=True, name="Kopi", email="kopi@example.com")
    site.user("bob", name="Bob", email="bob@example.com")
    site.ext.lock("premium", tier="Gold", description="Premium posts")
    site.ext.lock("supporters", min_cents=100, description="Any paid tier")

    @site.app.get("/")
    def home() -> str:
        return "home"

    return site


def sync_admin_site(make_app: Callable[..., Flask], sandbox: Any, patrons: int = 6) -> AdminSite:
    """A settings-page site on ``sandbox`` with ``patrons`` Silver patrons there and none stored here yet, work
    inline, two members a sync page, the store's clock the sandbox's, and no tier catalogue read yet (the Setup and
    Sync pages' tests start from it)."""
    for i in range(patrons):
        sandbox.add_patron(f"p{i}@example.com", tier="Silver", full_name=f"Patron {i}")
    site = make_admin_site(make_app, **sandbox.config, PATRONLOCK_JOBS="inline", PATRONLOCK_SYNC_PAGE_SIZE=2)
    site.state.store.clock = lambda: sandbox.now
    with site.state.store.transaction() as conn:
        conn.execute(site.state.tables.tiers.delete())
    return site
