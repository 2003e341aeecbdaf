"""The sandbox's OAuth: the consent page (interactive and the non-interactive test mode), the token endpoint's
authorization_code and refresh_token grants, PKCE, single-use codes, rotation and errors, over real HTTP."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from flask_patronlock.sandbox import Sandbox, SandboxServer
from tests.helpers.connect import default_form

NOW = datetime(2024, 3, 1, 9, 30, tzinfo=UTC)
REDIRECT = "https://site.test/patreon/callback"


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    sandbox = Sandbox(now=NOW, seed=11)
    server = SandboxServer(sandbox).start()
    try:
        yield sandbox
    finally:
        server.stop()


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def authorize_url(sb: Sandbox, **extra: str) -> str:
    params = {
        "response_type": "code",
        "client_id": sb.client_id,
        "redirect_uri": REDIRECT,
        "scope": "identity identity[email] identity.memberships",
        "state": "s-123",
        **extra,
    }
    return f"{sb.url}/oauth2/authorize?{urlencode(params)}"


def redirect_params(response: requests.Response) -> dict[str, str]:
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    assert location.startswith(REDIRECT + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def get_code(http: requests.Session, sb: Sandbox, user: str, **extra: str) -> str:
    url = authorize_url(sb, sandbox_user=user, sandbox_decision="approve", **extra)
    params = redirect_params(http.get(url, allow_redirects=False))
    assert params["state"] == "s-123"
    return params["code"]


def token_call(http: requests.Session, sb: Sandbox, **params: str) -> requests.Response:
    body = {"client_id": sb.client_id, "client_secret": sb.client_secret, **params}
    return http.post(f"{sb.url}/api/oauth2/token", data=body)


def exchange(http: requests.Session, sb: Sandbox, code: str, **extra: str) -> requests.Response:
    return token_call(http, sb, grant_type="authorization_code", code=code, redirect_uri=REDIRECT, **extra)


def identity(http: requests.Session, sb: Sandbox, access_token: str) -> Any:
    return http.get(
        f"{sb.url}/api/oauth2/v2/identity",
        params={"fields[user]": "email,full_name"},
        headers={"Authorization": f"Bearer {access_token}"},
    )


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


# -- the consent page -------------------------------------------------------------------------------------------------


def test_consent_page_lists_test_patrons(http: requests.Session, sb: Sandbox) -> None:
    sb.add_patron("ann@example.com", tier="Gold", full_name="Ann Gold")
    sb.add_user("bob@example.com", full_name="Bob Nobody")
    page = http.get(authorize_url(sb))
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    for text in ("Ann Gold", "ann@example.com", "active_patron", "Gold", "Bob Nobody", "no membership", "Approve",
                 "Deny", "A new test patron", 'action="/oauth2/authorize"', "identity[email]"):  # fmt: skip
        assert text in page.text, text
    assert f'name="client_id" value="{sb.client_id}"' in page.text
    assert 'name="state" value="s-123"' in page.text


def approve_the_default(http: requests.Session, sb: Sandbox, scope: str) -> str:
    """Open the consent page for ``scope``, press Approve without choosing anything; the user id the code is for."""
    page = http.get(authorize_url(sb, scope=scope))
    assert page.status_code == 200
    form = {**default_form(page.text), "decision": "approve"}
    code = redirect_params(http.post(f"{sb.url}/oauth2/authorize", data=form, allow_redirects=False))["code"]
    token = exchange(http, sb, code).json()
    return str(identity(http, sb, token["access_token"]).json()["data"]["id"])


def test_a_patron_who_just_presses_approve_is_a_new_patron_not_the_creator(
    http: requests.Session, sb: Sandbox
) -> None:
    """A site's visitor connecting Patreon (identity scopes): the page proposes a new test patron with an unused
    email, so pressing Approve never links the campaign's creator or somebody else's pledge."""
    ann = sb.add_patron("ann@example.com", tier="Gold")
    before = {u.id for u in sb.users}
    signed_in = approve_the_default(http, sb, "identity identity[email] identity.memberships")
    assert signed_in not in before and signed_in != sb.creator.id and signed_in != ann.user_id
    assert sb.member_for_user(signed_in) is None  # someone with a Patreon account and no pledge yet
    assert sb.user(signed_in).email not in {u.email for u in sb.users if u.id != signed_in}
    again = approve_the_default(http, sb, "identity identity[email]")
    assert again not in before | {signed_in}  # the next visitor gets a new patron too, not the previous one


def test_the_proposed_new_patron_has_a_persons_name(http: requests.Session, sb: Sandbox) -> None:
    """As a Patreon account has its owner's name, the proposed test patron is a person ("Robin Meyer"), not
    "Patron3"; each next proposal is someone else, and a name already taken is skipped."""
    sb.add_user("noor.haddad@example.com", full_name="Noor Haddad")
    first = sb.user(approve_the_default(http, sb, "identity identity[email]"))
    second = sb.user(approve_the_default(http, sb, "identity identity[email]"))
    assert (first.full_name, first.email) == ("Robin Meyer", "robin.meyer@example.com")
    assert (first.first_name, first.last_name) == ("Robin", "Meyer")
    assert (second.full_name, second.email) == ("Mika Tanaka", "mika.tanaka@example.com")


def test_a_creator_connecting_the_campaign_is_proposed_the_creator(http: requests.Session, sb: Sandbox) -> None:
    sb.add_patron("ann@example.com", tier="Gold")
    scope = "identity identity[email] campaigns campaigns.members w:campaigns.webhook"
    assert approve_the_default(http, sb, scope) == sb.creator.id


def test_a_new_patron_chosen_without_an_email_is_asked_for_one(http: requests.Session, sb: Sandbox) -> None:
    form = {**default_form(http.get(authorize_url(sb)).text), "new_email": "", "decision": "approve"}
    page = http.post(f"{sb.url}/oauth2/authorize", data=form, allow_redirects=False)
    assert page.status_code == 200 and "Give the new test patron an email address" in page.text
    assert 'value="new" checked' in page.text  # the choice is kept


def test_interactive_approve_and_deny(http: requests.Session, sb: Sandbox) -> None:
    ann = sb.add_patron("ann@example.com", tier="Gold")
    form = {
        "response_type": "code",
        "client_id": sb.client_id,
        "redirect_uri": REDIRECT,
        "scope": "identity",
        "state": "s-123",
        "user_id": ann.user_id,
        "decision": "approve",
    }
    approved = redirect_params(http.post(f"{sb.url}/oauth2/authorize", data=form, allow_redirects=False))
    assert set(approved) == {"code", "state"} and approved["state"] == "s-123"
    token = exchange(http, sb, approved["code"]).json()
    assert token["scope"] == "identity"
    assert identity(http, sb, token["access_token"]).json()["data"]["id"] == ann.user_id

    denied = redirect_params(
        http.post(f"{sb.url}/oauth2/authorize", data={**form, "decision": "deny"}, allow_redirects=False)
    )
    assert denied["error"] == "access_denied" and denied["state"] == "s-123" and "code" not in denied

    # a new test user from the form
    created = http.post(
        f"{sb.url}/oauth2/authorize",
        data={**form, "user_id": "", "new_email": "new@example.com", "new_name": "New Person"},
        allow_redirects=False,
    )
    code = redirect_params(created)["code"]
    assert sb.user("new@example.com").full_name == "New Person"
    assert exchange(http, sb, code).status_code == 200

    # approving without choosing anyone shows the page again with an error
    again = http.post(f"{sb.url}/oauth2/authorize", data={**form, "user_id": ""}, allow_redirects=False)
    assert again.status_code == 200 and "Choose a test patron" in again.text


def test_non_interactive_mode(http: requests.Session, sb: Sandbox) -> None:
    ann = sb.add_patron("ann@example.com", tier="Gold")
    for ref in (ann.user_id, "ann@example.com"):
        code = get_code(http, sb, ref)
        token = exchange(http, sb, code).json()
        assert identity(http, sb, token["access_token"]).json()["data"]["attributes"]["email"] == "ann@example.com"
    # an unknown email creates the user
    code = get_code(http, sb, "fresh@example.com")
    token = exchange(http, sb, code).json()
    assert identity(http, sb, token["access_token"]).json()["data"]["id"] == sb.user("fresh@example.com").id
    denied = redirect_params(
        http.get(authorize_url(sb, sandbox_user=ann.user_id, sandbox_decision="deny"), allow_redirects=False)
    )
    assert denied["error"] == "access_denied" and denied["state"] == "s-123"
    unknown = http.get(authorize_url(sb, sandbox_user="999", sandbox_decision="approve"), allow_redirects=False)
    assert unknown.status_code == 400 and "999" in unknown.text


def test_authorize_request_errors(http: requests.Session, sb: Sandbox) -> None:
    bad_client = http.get(authorize_url(sb, client_id="nope"), allow_redirects=False)
    assert bad_client.status_code == 400 and "client_id" in bad_client.text
    assert "Location" not in bad_client.headers
    no_redirect = http.get(f"{sb.url}/oauth2/authorize?response_type=code&client_id={sb.client_id}")
    assert no_redirect.status_code == 400
    wrong_type = redirect_params(http.get(authorize_url(sb, response_type="token"), allow_redirects=False))
    assert wrong_type["error"] == "unsupported_response_type" and wrong_type["state"] == "s-123"
    plain = redirect_params(
        http.get(authorize_url(sb, code_challenge="abc", code_challenge_method="plain"), allow_redirects=False)
    )
    assert plain["error"] == "invalid_request"
    scope = redirect_params(http.get(authorize_url(sb, scope="identity pledges-to-everyone"), allow_redirects=False))
    assert scope["error"] == "invalid_scope"


def test_registered_redirect_uris() -> None:
    sb = Sandbox(redirect_uris=[REDIRECT])
    with SandboxServer(sb), requests.Session() as http:
        assert http.get(authorize_url(sb)).status_code == 200
        other = authorize_url(sb).replace("site.test", "evil.test")
        assert http.get(other, allow_redirects=False).status_code == 400


# -- the token endpoint -----------------------------------------------------------------------------------------------


def test_code_exchange_response(http: requests.Session, sb: Sandbox) -> None:
    sb.add_user("ann@example.com")
    response = exchange(http, sb, get_code(http, sb, "ann@example.com"))
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    token = response.json()
    assert set(token) == {"access_token", "refresh_token", "expires_in", "scope", "token_type", "version"}
    assert token["token_type"] == "Bearer" and token["version"] == "0.0.1"
    assert token["expires_in"] == 2678400
    assert set(token["scope"].split()) == {"identity", "identity[email]", "identity.memberships"}


def test_credentials_in_query_string_and_basic_auth(http: requests.Session, sb: Sandbox) -> None:
    sb.add_user("q@example.com")
    code = get_code(http, sb, "q@example.com")
    query = urlencode(
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": sb.client_id,
            "client_secret": sb.client_secret,
        }
    )
    assert http.post(f"{sb.url}/api/oauth2/token?{query}").status_code == 200
    code = get_code(http, sb, "q@example.com")
    basic = http.post(
        f"{sb.url}/api/oauth2/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT},
        auth=(sb.client_id, sb.client_secret),
    )
    assert basic.status_code == 200


def test_code_is_single_use_and_bound(http: requests.Session, sb: Sandbox) -> None:
    sb.add_user("one@example.com")
    code = get_code(http, sb, "one@example.com")
    wrong_secret = token_call(
        http, sb, grant_type="authorization_code", code=code, redirect_uri=REDIRECT, client_secret="wrong"
    )
    assert wrong_secret.status_code == 401 and wrong_secret.json() == {"error": "invalid_client"}
    wrong_redirect = token_call(http, sb, grant_type="authorization_code", code=code, redirect_uri=REDIRECT + "x")
    assert wrong_redirect.status_code == 401 and wrong_redirect.json()["error"] == "invalid_grant"
    assert exchange(http, sb, code).status_code == 200
    reused = exchange(http, sb, code)
    assert reused.status_code == 401 and reused.json()["error"] == "invalid_grant"
    assert exchange(http, sb, "never-issued").json()["error"] == "invalid_grant"
    missing = token_call(http, sb, grant_type="authorization_code", redirect_uri=REDIRECT)
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"
    unsupported = token_call(http, sb, grant_type="password")
    assert unsupported.status_code == 400 and unsupported.json() == {"error": "unsupported_grant_type"}
    no_client = http.post(f"{sb.url}/api/oauth2/token", data={"grant_type": "authorization_code", "code": code})
    assert no_client.status_code == 401 and no_client.json() == {"error": "invalid_client"}


def test_code_expires_after_ten_minutes(http: requests.Session, sb: Sandbox) -> None:
    sb.add_user("slow@example.com")
    fresh = get_code(http, sb, "slow@example.com")
    stale = get_code(http, sb, "slow@example.com")
    sb.advance(minutes=9)
    assert exchange(http, sb, fresh).status_code == 200
    sb.advance(minutes=1)
    expired = exchange(http, sb, stale)
    assert expired.status_code == 401 and expired.json()["error"] == "invalid_grant"


def test_pkce(http: requests.Session, sb: Sandbox) -> None:
    sb.add_user("pk@example.com")
    verifier, challenge = pkce()
    extra = {"code_challenge": challenge, "code_challenge_method": "S256"}
    code = get_code(http, sb, "pk@example.com", **extra)
    assert exchange(http, sb, code).json()["error"] == "invalid_grant"  # no verifier
    code = get_code(http, sb, "pk@example.com", **extra)
    assert exchange(http, sb, code, code_verifier=pkce()[0]).json()["error"] == "invalid_grant"  # wrong verifier
    code = get_code(http, sb, "pk@example.com", **extra)
    assert exchange(http, sb, code, code_verifier=verifier).status_code == 200


def test_refresh_rotates(http: requests.Session, sb: Sandbox) -> None:
    sb.add_user("rot@example.com")
    first = exchange(http, sb, get_code(http, sb, "rot@example.com")).json()
    second = token_call(http, sb, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert second.status_code == 200
    pair = second.json()
    assert pair["refresh_token"] != first["refresh_token"] and pair["access_token"] != first["access_token"]
    assert pair["scope"] == first["scope"]
    reused = token_call(http, sb, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert reused.status_code == 401 and reused.json()["error"] == "invalid_grant"
    assert identity(http, sb, pair["access_token"]).status_code == 200
    third = token_call(http, sb, grant_type="refresh_token", refresh_token=pair["refresh_token"])
    assert third.status_code == 200
    wrong_client = token_call(
        http, sb, grant_type="refresh_token", refresh_token=third.json()["refresh_token"], client_secret="nope"
    )
    assert wrong_client.status_code == 401 and wrong_client.json() == {"error": "invalid_client"}


def test_access_tokens_expire(http: requests.Session) -> None:
    sb = Sandbox(now=NOW, access_token_ttl=3600)
    with SandboxServer(sb):
        sb.add_user("ttl@example.com")
        token = exchange(http, sb, get_code(http, sb, "ttl@example.com")).json()
        assert token["expires_in"] == 3600
        assert identity(http, sb, token["access_token"]).status_code == 200
        sb.advance(minutes=59)
        assert identity(http, sb, token["access_token"]).status_code == 200
        sb.advance(minutes=1)
        expired = identity(http, sb, token["access_token"])
        assert expired.status_code == 401 and expired.json()["errors"][0]["status"] == "401"
        # the refresh token still works after the access token expired
        renewed = token_call(http, sb, grant_type="refresh_token", refresh_token=token["refresh_token"]).json()
        assert identity(http, sb, renewed["access_token"]).status_code == 200


def test_creator_token_refresh(http: requests.Session, sb: Sandbox) -> None:
    old = sb.creator_access_token
    pair = token_call(http, sb, grant_type="refresh_token", refresh_token=sb.creator_refresh_token).json()
    assert sb.creator_access_token == pair["access_token"] != old
    members = http.get(
        f"{sb.url}/api/oauth2/v2/campaigns/{sb.campaign.id}/members",
        headers={"Authorization": f"Bearer {pair['access_token']}"},
    )
    assert members.status_code == 200


def test_patreon_client_against_the_sandbox(sb: Sandbox) -> None:
    """The project's own Patreon client, written against Patreon's docs, works unchanged."""
    from flask_patronlock.patreon.client import PatreonClient, pkce_pair

    member = sb.add_patron("cli@example.com", tier="Silver")
    client = PatreonClient(
        client_id=sb.client_id,
        client_secret=sb.client_secret,
        access_token=sb.creator_access_token,
        api_base=sb.url or "",
        oauth_base=sb.url or "",
    )
    with client, requests.Session() as http:
        verifier, challenge = pkce_pair()
        url = client.authorization_url(REDIRECT, "st", ["identity", "identity[email]"], code_challenge=challenge)
        response = http.get(url + "&sandbox_user=cli@example.com&sandbox_decision=approve", allow_redirects=False)
        code = parse_qs(urlsplit(response.headers["Location"]).query)["code"][0]
        tokens = client.exchange_code(code, REDIRECT, verifier)
        found = client.identity(access_token=tokens.access_token, campaign_id=sb.campaign.id)
        assert found.user.email == "cli@example.com"
        assert [m.member_id for m in found.memberships] == [member.id]
        assert found.memberships[0].entitled_cents == 500
        renewed = client.refresh(tokens.refresh_token or "")
        assert renewed.refresh_token != tokens.refresh_token
