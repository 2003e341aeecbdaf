"""The setup checklist against the sandbox: the creator connects their own account (tokens stored encrypted and
preferred over the configuration), chooses the campaign, reads its tiers; "sync this patron now"."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flask import Flask
from sqlalchemy import select

from flask_patronlock.creator import CREATOR_KEY, creator_access_token, get_creator_connection
from flask_patronlock.errors import ConfigurationError
from flask_patronlock.settings import get_campaign_id
from tests.helpers.admin import ADMIN_PREFIX, AdminSite, csrf_from, make_admin_site


@pytest.fixture
def site(make_app: Callable[..., Flask], patreon_sandbox: Any) -> AdminSite:
    config = dict(patreon_sandbox.config)
    # the creator has not connected yet and no campaign is configured: the checklist starts from scratch
    config.pop("PATRONLOCK_CREATOR_ACCESS_TOKEN")
    config["PATRONLOCK_CAMPAIGN_ID"] = None
    site = make_admin_site(make_app, **config)
    site.state.store.clock = _real_clock(patreon_sandbox)
    with site.state.store.transaction() as conn:  # start without the helper's tiers
        conn.execute(site.state.tables.tiers.delete())
    return site


def _real_clock(sandbox: Any) -> Callable[[], Any]:
    return lambda: sandbox.now


def steps(site: AdminSite) -> dict[str, bool]:
    html = site.get(ADMIN_PREFIX + "/setup").get_data(as_text=True)
    out = {}
    for key in ("credentials", "creator", "campaign", "sync"):
        marker = f'data-step="{key}"'
        assert marker in html, key
        out[key] = html.split(marker, 1)[0].rsplit("<li", 1)[1].count("pl-step--done") == 1
    return out


def connect_creator(site: AdminSite, sandbox_user: str = "creator@example.com", decision: str = "approve") -> Any:
    started = site.post(ADMIN_PREFIX + "/setup/connect")
    assert started.status_code == 302, started.get_data(as_text=True)
    location = started.headers["Location"]
    query = parse_qs(urlsplit(location).query)
    assert set(query["scope"][0].split()) >= {"campaigns", "campaigns.members", "w:campaigns.webhook",
                                              "campaigns.members[email]", "identity[email]"}
    assert query["redirect_uri"] == ["http://site.test/patronlock/admin/setup/callback"]
    assert query["code_challenge_method"] == ["S256"]
    answer = requests.get(location, params={"sandbox_user": sandbox_user, "sandbox_decision": decision},
                          allow_redirects=False, timeout=10)
    back = urlsplit(answer.headers["Location"])
    return site.get(f"{back.path}?{back.query}")


def test_the_creator_completes_setup_from_the_checklist(site: AdminSite, patreon_sandbox: Any) -> None:
    assert steps(site) == {"credentials": True, "creator": False, "campaign": False, "sync": False}
    with site.app.app_context(), pytest.raises(ConfigurationError, match="PATRONLOCK_CREATOR_ACCESS_TOKEN"):
        site.state.creator_client()

    landed = connect_creator(site)
    assert landed.status_code == 302 and landed.headers["Location"].endswith("/setup/campaign")
    connection = get_creator_connection(site.state)
    assert connection is not None and connection.full_name == "Sandbox Creator"
    assert connection.connected_by == "admin" and "w:campaigns.webhook" in connection.scope
    # encrypted at rest: the stored row never holds the token in the clear
    token = creator_access_token(site.state)
    assert token is not None
    s = site.state.tables.settings
    with site.state.store.engine.connect() as conn:
        stored = conn.execute(select(s.c.value).where(s.c.key == CREATOR_KEY)).scalar_one()
    assert token not in str(stored)
    with site.app.app_context():
        client = site.state.creator_client()
        assert client.access_token == token  # the stored token, not the configuration's
        client.close()

    page = site.get(ADMIN_PREFIX + "/setup/campaign")
    html = page.get_data(as_text=True)
    assert patreon_sandbox.campaign.id in html
    chosen = site.client("admin").post(ADMIN_PREFIX + "/setup/campaign",
                                       data={"csrf_token": csrf_from(html), "campaign_id": patreon_sandbox.campaign.id})
    assert chosen.status_code == 302
    with site.app.app_context():
        assert get_campaign_id() == patreon_sandbox.campaign.id
        assert site.state.campaign_id() == patreon_sandbox.campaign.id
    assert {t.title for t in site.state.store.tiers(patreon_sandbox.campaign.id)} >= {"Bronze", "Silver", "Gold"}
    assert steps(site) == {"credentials": True, "creator": True, "campaign": True, "sync": False}
    e = site.state.tables.events
    with site.state.store.engine.connect() as conn:
        kinds = [(r.kind, r.user_id) for r in conn.execute(select(e.c.kind, e.c.user_id).order_by(e.c.id))]
    assert ("creator_connected", "admin") in kinds and ("campaign_set", "admin") in kinds
    assert token not in repr(kinds)

    assert site.post(ADMIN_PREFIX + "/setup/disconnect").status_code == 302
    assert get_creator_connection(site.state) is None


def test_a_campaign_that_is_not_the_creators_is_refused(site: AdminSite) -> None:
    connect_creator(site)
    response = site.post(ADMIN_PREFIX + "/setup/campaign", {"campaign_id": "999"})
    assert response.status_code == 200 and "Choose one of your campaigns" in response.get_data(as_text=True)
    with site.app.app_context():
        assert get_campaign_id() is None


def test_denying_on_patreon_connects_nothing(site: AdminSite) -> None:
    landed = connect_creator(site, decision="deny")
    assert landed.status_code == 302
    assert "did not allow access" in site.get(ADMIN_PREFIX + "/setup").get_data(as_text=True)
    assert get_creator_connection(site.state) is None


def test_a_patrons_callback_cannot_finish_the_creators_flow(site: AdminSite) -> None:
    started = site.post(ADMIN_PREFIX + "/setup/connect")
    state = parse_qs(urlsplit(started.headers["Location"]).query)["state"][0]
    response = site.get(f"/patreon/callback?state={state}&code=x")
    assert response.status_code == 400  # the patrons' callback refuses a creator state (and consumes it)
    replay = site.get(f"{ADMIN_PREFIX}/setup/callback?state={state}&code=x")
    assert replay.status_code == 302
    assert "already used" in site.get(ADMIN_PREFIX + "/setup").get_data(as_text=True)


def test_another_admin_cannot_finish_someone_elses_connect(site: AdminSite) -> None:
    from tests.helpers.sites import User

    site.users["ann"] = User("ann", admin=True)
    started = site.post(ADMIN_PREFIX + "/setup/connect")
    query = urlsplit(started.headers["Location"]).query
    state = parse_qs(query)["state"][0]
    # the same browser session, but another admin is now signed in (the X-User header of the admin's client)
    client = site.client("admin")
    client.environ_base["HTTP_X_USER"] = "ann"
    response = client.get(f"{ADMIN_PREFIX}/setup/callback?state={state}&code=x")
    assert response.status_code == 302
    assert get_creator_connection(site.state) is None


def test_the_stored_creator_token_is_refreshed_when_it_expires(site: AdminSite, patreon_sandbox: Any) -> None:
    connect_creator(site)
    first = creator_access_token(site.state)
    connection = get_creator_connection(site.state)
    assert connection is not None and connection.token_expires_at is not None
    clock = site.state.store.clock
    site.state.store.clock = lambda: connection.token_expires_at - timedelta(minutes=1)  # type: ignore[operator]
    second = creator_access_token(site.state)
    assert second and second != first
    site.state.store.clock = clock
    assert creator_access_token(site.state) == second  # stored, not refreshed again


def test_a_refused_refresh_asks_the_creator_to_connect_again(site: AdminSite, patreon_sandbox: Any) -> None:
    connect_creator(site)
    connection = get_creator_connection(site.state)
    assert connection is not None and connection.token_expires_at is not None
    with patreon_sandbox.lock:
        patreon_sandbox._refresh_tokens.clear()  # Patreon forgot every refresh token: invalid_grant
    site.state.store.clock = lambda: connection.token_expires_at  # type: ignore[assignment, return-value]
    with site.app.app_context(), pytest.raises(ConfigurationError, match="Connect the creator's Patreon account"):
        site.state.creator_client()
    again = get_creator_connection(site.state)
    assert again is not None and again.needs_reauth
    html = site.get(ADMIN_PREFIX + "/setup").get_data(as_text=True)
    assert "Patreon stopped accepting the site&#39;s connection on " in html and "Connect again" in html


def test_sync_this_patron_now(site: AdminSite, patreon_sandbox: Any) -> None:
    connect_creator(site)
    campaign = patreon_sandbox.campaign.id
    with site.app.app_context():
        from flask_patronlock.settings import set_campaign_id

        set_campaign_id(campaign, by="test")
    member = patreon_sandbox.add_patron("ann@example.com", tier="Silver", full_name="Ann")
    client = site.state.creator_client()
    site.state.store.apply(client.member(member.id), source="sync", observed_at=patreon_sandbox.now)
    client.close()
    patreon_sandbox.change_tier(member, "Gold")
    response = site.post(f"{ADMIN_PREFIX}/patrons/{member.id}/sync")
    assert response.status_code == 302
    stored = site.state.store.get_patron(member.id)
    assert stored is not None and stored.source == "admin" and stored.entitled_cents == 1000
    html = site.get(f"{ADMIN_PREFIX}/patrons/{member.id}").get_data(as_text=True)
    assert "Synced from Patreon" in html and "tier changed" in html
    history = site.state.store.history(member.id)
    assert history[0]["source"] == "admin"
    again = site.post(f"{ADMIN_PREFIX}/patrons/{member.id}/sync")
    assert again.status_code == 302
    assert "already knew" in site.get(f"{ADMIN_PREFIX}/patrons/{member.id}").get_data(as_text=True)


def test_sync_this_patron_when_patreon_is_down_changes_nothing(site: AdminSite, patreon_sandbox: Any) -> None:
    connect_creator(site)
    site.apply("m-x", full_name="X")
    patreon_sandbox.api_down = True
    response = site.post(f"{ADMIN_PREFIX}/patrons/m-x/sync")
    assert response.status_code == 302
    assert "Patreon did not answer" in site.get(f"{ADMIN_PREFIX}/patrons/m-x").get_data(as_text=True)
    patreon_sandbox.api_down = False
    missing = site.post(f"{ADMIN_PREFIX}/patrons/m-x/sync")
    assert missing.status_code == 302
    assert "no longer has this member" in site.get(f"{ADMIN_PREFIX}/patrons/m-x").get_data(as_text=True)
    assert site.state.store.get_patron("m-x").source == "sync"  # type: ignore[union-attr]


def test_missing_credentials_say_exactly_what_to_set(make_app: Callable[..., Flask]) -> None:
    site = make_admin_site(make_app, PATRONLOCK_TOKEN_KEYS=[], PATRONLOCK_REDIRECT_URI=None)
    html = site.get(ADMIN_PREFIX + "/setup").get_data(as_text=True)
    for key in ("PATRONLOCK_CLIENT_ID", "PATRONLOCK_CLIENT_SECRET", "PATRONLOCK_TOKEN_KEYS", "PATRONLOCK_REDIRECT_URI"):
        assert key in html
    assert "register-clients" in html
    response = site.post(ADMIN_PREFIX + "/setup/connect")
    assert response.status_code == 302
    page = site.get(ADMIN_PREFIX + "/setup").get_data(as_text=True)
    assert "Neither PATRONLOCK_REDIRECT_URI nor SERVER_NAME is set" in page


def test_rotate_keys_re_encrypts_the_creators_tokens(site: AdminSite) -> None:
    from cryptography.fernet import Fernet

    connect_creator(site)
    token = creator_access_token(site.state)
    old_key = site.app.config["PATRONLOCK_TOKEN_KEYS"][0]
    new_key = Fernet.generate_key().decode()
    site.app.config["PATRONLOCK_TOKEN_KEYS"] = [new_key, old_key]
    result = site.app.test_cli_runner().invoke(args=["patronlock", "rotate-keys"])
    assert result.exit_code == 0 and "the creator's 2 token(s)" in result.output
    site.app.config["PATRONLOCK_TOKEN_KEYS"] = [new_key]
    assert creator_access_token(site.state) == token
