"""The connect tests' host site (:func:`tests.helpers.sites.make_site` with users made by email, a test-only login
route and no tiers stored), and helpers to walk the OAuth flow through Flask's test client (against the sandbox or
requests-mock)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from html import unescape
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography.fernet import Fernet
from flask import Flask, get_flashed_messages, jsonify, session
from flask.testing import FlaskClient
from flask_login import login_user

from flask_patronlock import PatronLock
from flask_patronlock.patreon import UserSnapshot
from tests.helpers.constants import CAMPAIGN, SILVER
from tests.helpers.sites import Site, User, make_site

KEY1 = Fernet.generate_key().decode()
KEY2 = Fernet.generate_key().decode()
REDIRECT_URI = "http://site.test/patreon/callback"

#: ``next`` values that must never be followed off the site.
EVIL_NEXT = [
    "//evil.com",
    "///evil.com",
    "/\\evil.com",
    "\\\\evil.com",
    "/\\/evil.com",
    "https://evil.com",
    "http:evil.com",
    "https:/evil.com",
    "javascript:alert(1)",
    "JavaScript:alert(1)",
    "data:text/html,hi",
    "%2F%2Fevil.com",
    "/%2F/evil.com",
    "/%2f%2fevil.com",
    "%252F%252Fevil.com",
    "/%5Cevil.com",
    "/%09/evil.com",
    "/\t/evil.com",
    "/\n/evil.com",
    " //evil.com",
    "/ /evil.com",
    "evil.com",
    "./relative",
    "",
    "/" + "a" * 600,
]

#: requests-mock's Patreon.
MOCK_BASE = "https://patreon.test"
MOCK_TOKEN_URL = f"{MOCK_BASE}/api/oauth2/token"
MOCK_IDENTITY_URL = f"{MOCK_BASE}/api/oauth2/v2/identity"
MOCK_CONFIG: dict[str, Any] = {
    "PATRONLOCK_CLIENT_ID": "client-id",
    "PATRONLOCK_CLIENT_SECRET": "client-secret",
    "PATRONLOCK_CAMPAIGN_ID": CAMPAIGN,
    "PATRONLOCK_OAUTH_BASE_URL": MOCK_BASE,
    "PATRONLOCK_API_BASE_URL": MOCK_BASE,
}


@dataclass
class ConnectSite(Site):
    """The host app and its users, numbered as they are made."""

    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def patronlock(self) -> PatronLock:
        return self.ext

    def add_user(self, email: str, name: str = "", *, active: bool = True, email_verified: bool = False) -> User:
        return self.user(str(next(self.ids)), email=email, name=name, active=active, email_verified=email_verified)

    def by_email(self, email: str) -> User | None:
        return next((u for u in self.users.values() if u.email.lower() == email.lower()), None)

    def allow_signup(self) -> list[UserSnapshot]:
        """Register a user_creator that makes a user from the Patreon account; returns the list of snapshots seen."""
        seen: list[UserSnapshot] = []

        @self.patronlock.user_creator
        def create(patreon_user: UserSnapshot) -> User:
            seen.append(patreon_user)
            return self.add_user(patreon_user.email or f"{patreon_user.id}@patreon.invalid", patreon_user.full_name)

        return seen

    def find_by_email(self) -> None:
        self.patronlock.user_by_email(self.by_email)

    def vouch_for_verified_emails(self) -> list[list[str]]:
        """Register verified_users_by_email answering with the users whose address this site verified; returns the
        list of address batches it was asked about."""
        asked: list[list[str]] = []

        @self.patronlock.verified_users_by_email
        def verified(emails: Any) -> dict[str, str]:
            asked.append(list(emails))
            found = {email: self.by_email(email) for email in emails}
            return {email: user.id for email, user in found.items() if user is not None and user.email_verified}

        return asked


def make_connect_site(make_app: Callable[..., Flask], **config: Any) -> ConnectSite:
    """A host app with Flask-Login, on the test database, configured for Patreon at ``config``: no tiers stored,
    the real clock, no admin callback."""
    site = make_site(
        make_app,
        site=ConnectSite,
        campaign=None,
        tiers=None,
        clock=None,
        admin_loader=False,
        PATRONLOCK_TOKEN_KEYS=[KEY1],
        PATRONLOCK_REDIRECT_URI=REDIRECT_URI,
        **config,
    )
    app = site.app
    app.login_manager.login_view = "test_login_page"  # type: ignore[attr-defined]

    @app.get("/")
    def home() -> str:
        return "home"

    @app.get("/_test/login")
    def test_login_page() -> str:
        return "log in here"

    @app.post("/_test/login/<user_id>")
    def test_login(user_id: str) -> str:
        login_user(site.users[user_id])
        return "ok"

    @app.get("/_test/session")
    def test_session() -> Any:
        from flask_login import current_user

        return jsonify(
            user_id=current_user.get_id() if current_user.is_authenticated else None,
            keys=sorted(session.keys()),
            flashes=get_flashed_messages(),
        )

    return site


def log_in(client: FlaskClient, user: User) -> None:
    assert client.post(f"/_test/login/{user.id}").status_code == 200


def logged_in(site: ConnectSite, email: str) -> tuple[FlaskClient, User]:
    """A test client logged in as a new local user with ``email``, and that user."""
    user = site.add_user(email)
    client = site.app.test_client()
    log_in(client, user)
    return client, user


def whoami(client: FlaskClient) -> dict[str, Any]:
    data: dict[str, Any] = client.get("/_test/session").get_json()
    return data


def authorize_params(location: str) -> dict[str, str]:
    """The query of an authorize redirect, one value per key."""
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def start(client: FlaskClient, path: str = "/patreon/connect", **query: str) -> dict[str, str]:
    """GET a start route; assert it redirects to Patreon's authorize endpoint; return the authorize parameters."""
    response = client.get(path, query_string=query)
    assert response.status_code == 302, response.get_data(as_text=True)
    assert "/oauth2/authorize" in response.location
    return authorize_params(response.location)


def csrf_token(client: FlaskClient) -> str:
    """The CSRF token from the status page's forms."""
    html = client.get("/patreon/").get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html
    return unescape(match.group(1))


def problem_kind(html: str) -> str | None:
    match = re.search(r'data-patronlock-problem="([^"]+)"', html)
    return match.group(1) if match else None


# -- requests-mock's Patreon -----------------------------------------------------------------------------------------


def token_json(access: str = "access-1", refresh: str = "refresh-1", expires_in: int = 2678400) -> dict[str, Any]:
    return {
        "access_token": access,
        "refresh_token": refresh,
        "expires_in": expires_in,
        "scope": "identity identity[email] identity.memberships",
        "token_type": "Bearer",
    }


def identity_doc(
    user_id: str = "pu1",
    *,
    email: str | None = "kopi@example.com",
    verified: bool = True,
    name: str = "Kopi",
    member: dict[str, Any] | None = None,
    campaign_id: str = "c1",
    tiers: tuple[tuple[str, str, int], ...] = ((SILVER.id, SILVER.title, SILVER.amount_cents),),
) -> dict[str, Any]:
    """``/identity`` with one membership to ``campaign_id`` (``member`` overrides its attributes); ``member={}``
    with ``tiers=()`` still makes a membership; pass ``member=None`` for none."""
    attributes: dict[str, Any] = {"full_name": name, "is_email_verified": verified}
    if email is not None:
        attributes["email"] = email
    data: dict[str, Any] = {"type": "user", "id": user_id, "attributes": attributes, "relationships": {}}
    included: list[dict[str, Any]] = []
    if member is not None:
        member_attrs = {
            "patron_status": "active_patron",
            "last_charge_status": "Paid",
            "last_charge_date": "2026-02-28T12:00:00.000+00:00",
            "next_charge_date": "2026-03-28T12:00:00.000+00:00",
            "currently_entitled_amount_cents": sum(t[2] for t in tiers),
            "will_pay_amount_cents": sum(t[2] for t in tiers),
            "campaign_lifetime_support_cents": 500,
            "pledge_relationship_start": "2026-01-28T12:00:00.000+00:00",
            "pledge_cadence": 1,
            "email": email,
            "full_name": name,
            **member,
        }
        included.append(
            {
                "type": "member",
                "id": f"m-{user_id}",
                "attributes": member_attrs,
                "relationships": {
                    "campaign": {"data": {"type": "campaign", "id": campaign_id}},
                    "currently_entitled_tiers": {"data": [{"type": "tier", "id": t[0]} for t in tiers]},
                    "user": {"data": {"type": "user", "id": user_id}},
                },
            }
        )
        included += [
            {"type": "tier", "id": t[0], "attributes": {"title": t[1], "amount_cents": t[2]}} for t in tiers
        ]
        included.append({"type": "campaign", "id": campaign_id, "attributes": {}})
        data["relationships"]["memberships"] = {"data": [{"type": "member", "id": f"m-{user_id}"}]}
    else:
        data["relationships"]["memberships"] = {"data": []}
    return {"data": data, "included": included}


# -- the sandbox's Patreon -------------------------------------------------------------------------------------------


class _DefaultForm(HTMLParser):
    def __init__(self, page: str) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {k: v or "" for k, v in attrs}
        if tag != "input" or not attr.get("name"):
            return
        if attr.get("type") == "radio" and "checked" not in attr:
            return
        self.values[attr["name"]] = attr.get("value", "")


def default_form(page: str) -> dict[str, str]:
    """What a browser submits from the form on ``page`` (the sandbox's consent page) when the visitor changes nothing:
    the hidden fields, the text fields' values and the checked radio buttons."""
    return _DefaultForm(page).values


def approve(authorize_url: str, sandbox_user: str, decision: str = "approve") -> str:
    """Answer the sandbox's authorize page over real HTTP (its non-interactive test mode) and return the callback
    path and query it redirects to."""
    import requests

    response = requests.get(
        authorize_url,
        params={"sandbox_user": sandbox_user, "sandbox_decision": decision},
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    assert location.startswith(REDIRECT_URI), location
    parts = urlsplit(location)
    return f"{parts.path}?{parts.query}"


def oauth_flow(
    client: FlaskClient, sandbox_user: str, path: str = "/patreon/connect", decision: str = "approve", **query: str
) -> Any:
    """Start at ``path``, approve (or deny) on the sandbox as ``sandbox_user``, follow the callback; return the
    callback's response."""
    response = client.get(path, query_string=query)
    assert response.status_code == 302, response.get_data(as_text=True)
    return client.get(approve(response.location, sandbox_user, decision))


def sandbox_site(make_app: Callable[..., Flask], sandbox: Any, **config: Any) -> ConnectSite:
    """A host site pointed at ``sandbox``."""
    return make_connect_site(make_app, **{**sandbox.config, **config})


@contextmanager
def capture(*sigs: Any) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Record ``(signal name, kwargs)`` of every send of ``sigs`` inside the block."""
    seen: list[tuple[str, dict[str, Any]]] = []
    receivers = []
    for sig in sigs:

        def receiver(sender: Any, _name: str = sig.name, **kw: Any) -> None:
            seen.append((_name, kw))

        receivers.append(receiver)
        sig.connect(receiver)
    try:
        yield seen
    finally:
        for sig, receiver in zip(sigs, receivers, strict=True):
            sig.disconnect(receiver)
