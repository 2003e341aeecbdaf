"""The one host site of the tests: a Flask app from ``make_app`` with Flask-Login users kept in a dict, the campaign's
tiers stored and the store's clock pinned. The settings-page site (:mod:`tests.helpers.admin`) and the connect site
(:mod:`tests.helpers.connect`) are this site with more.

Patrons are only ever written through ``Store.apply``; linking a local user inserts a ``patronlock_accounts`` row
directly (the real linking code is the OAuth flow's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from flask import Flask
from flask_login import LoginManager, UserMixin
from sqlalchemy import event, insert

from flask_patronlock import PatronLock
from flask_patronlock.patreon import MemberSnapshot, TierSnapshot
from flask_patronlock.state import PatronLockState, get_state
from tests.helpers.constants import CAMPAIGN, NOW, TIERS

S = TypeVar("S", bound="Site")


class User(UserMixin):
    """A local user of the host site."""

    def __init__(
        self,
        user_id: str,
        *,
        admin: bool = False,
        name: str = "",
        email: str = "",
        active: bool = True,
        email_verified: bool = False,
    ) -> None:
        self.id = user_id
        self.admin = admin
        self.name = name
        self.email = email
        self.active = active
        #: the site sent a confirmation mail to ``email`` and its link was followed
        self.email_verified = email_verified

    @property
    def is_active(self) -> bool:
        return self.active


@dataclass
class Site:
    """The host app and its users (by id)."""

    app: Flask
    users: dict[str, User] = field(default_factory=dict)

    @property
    def state(self) -> PatronLockState:
        return get_state(self.app)

    @property
    def ext(self) -> PatronLock:
        return self.state.extension

    def user(self, user_id: str, **kw: Any) -> User:
        self.users[user_id] = User(user_id, **kw)
        return self.users[user_id]

    def get(self, path: str, user: str | None = None, **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", {}))
        if user is not None:
            headers["X-User"] = user
        return self.app.test_client().get(path, headers=headers, **kwargs)

    def link(self, user_id: str, patreon_user_id: str, **values: Any) -> None:
        """Link a local user to a Patreon user (what the OAuth connect flow does)."""
        if user_id not in self.users:
            self.user(user_id)
        with self.state.store.engine.begin() as conn:
            conn.execute(
                insert(self.state.tables.accounts).values(
                    user_id=user_id, patreon_user_id=patreon_user_id, scope="identity", **values
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


def make_site(
    make_app: Callable[..., Flask],
    *,
    site: Callable[[Flask], S] = Site,  # type: ignore[assignment]
    campaign: str | None = CAMPAIGN,
    tiers: Iterable[TierSnapshot] | None = TIERS,
    clock: datetime | None = NOW,
    admin_loader: bool = True,
    **config: Any,
) -> S:
    """An app with Flask-Login (the ``X-User`` header signs a user in, and a session's user id is loaded),
    ``campaign``'s ``tiers`` stored (``campaign`` None leaves ``PATRONLOCK_CAMPAIGN_ID`` to ``config``; ``tiers`` None
    stores none), the store's clock pinned to ``clock`` (None: the real one), and the admin callback reading
    ``user.admin`` (unless ``admin_loader`` is false). ``site`` makes the :class:`Site` (or a subclass) around the app.
    """
    if campaign is not None:
        config.setdefault("PATRONLOCK_CAMPAIGN_ID", campaign)
    app = make_app(**config)
    made = site(app)
    manager = LoginManager()
    manager.init_app(app)

    @manager.request_loader
    def from_header(request: Any) -> User | None:
        return made.users.get(request.headers.get("X-User", ""))

    manager.user_loader(made.users.get)
    state = get_state(app)
    if clock is not None:
        state.store.clock = lambda: clock
    if tiers is not None:
        state.store.replace_tiers(campaign or app.config["PATRONLOCK_CAMPAIGN_ID"], tuple(tiers))
    if admin_loader:
        state.extension.admin_loader(lambda user: bool(getattr(user, "admin", False)))
    return made


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
