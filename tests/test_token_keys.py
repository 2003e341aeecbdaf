"""Without ``PATRONLOCK_TOKEN_KEYS`` no secret is ever stored, in the clear or otherwise, and nobody gets a bare 500.

Whoever reads the database (a leaked dump, a read-only SQL injection elsewhere in the host site) must find no usable
secret: not the webhook's (with it, anyone can sign deliveries), not a patron's or the creator's Patreon tokens. Each
path that stores one refuses before it asks Patreon for anything, and says what to set and how to make a key.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import requests_mock as rm
from adminhelpers import ADMIN_PREFIX, AdminSite, make_admin_site
from connect_site import (
    MOCK_CONFIG,
    MOCK_IDENTITY_URL,
    MOCK_TOKEN_URL,
    identity_doc,
    logged_in,
    make_site,
    problem_kind,
    start,
    token_json,
)
from cryptography.fernet import Fernet
from flask import Flask
from sqlalchemy import insert, select
from sync_helpers import sandbox_app

from flask_patronlock.creator import CREATOR_KEY, get_creator_connection
from flask_patronlock.sandbox import Sandbox
from flask_patronlock.state import PatronLockState, get_state
from flask_patronlock.webhooks import WEBHOOK_SETTING_KEY, stored_webhook

#: what every refusal must name: the key to set, and the command that makes one.
FIX = ("PATRONLOCK_TOKEN_KEYS", "Fernet.generate_key()")


def settings_text(state: PatronLockState) -> str:
    """Every stored setting, as one string: what a database dump would show."""
    table = state.tables.settings
    with state.store.engine.connect() as conn:
        return json.dumps([dict(r) for r in conn.execute(select(table.c.key, table.c.value)).mappings()])


@pytest.fixture
def keyless_admin(make_app: Callable[..., Flask], patreon_sandbox: Sandbox) -> AdminSite:
    site = make_admin_site(make_app, **patreon_sandbox.config, PATRONLOCK_JOBS="inline", PATRONLOCK_TOKEN_KEYS=[])
    site.state.store.clock = lambda: patreon_sandbox.now
    return site


@pytest.mark.patreon_sandbox(members=0)
def test_registering_the_webhook_from_the_settings_page_without_keys_stores_nothing(
    keyless_admin: AdminSite, patreon_sandbox: Sandbox
) -> None:
    site = keyless_admin
    response = site.post(ADMIN_PREFIX + "/sync/webhook", {"back": "setup"})
    assert response.status_code == 302 and response.headers["Location"].endswith("/setup")
    page = site.get(ADMIN_PREFIX + "/setup").get_data(as_text=True)
    assert all(part in page for part in FIX), page
    assert "Nothing was registered" in page
    with site.app.app_context():
        assert stored_webhook(site.state) is None
    assert patreon_sandbox.webhook_secret not in settings_text(site.state)
    assert patreon_sandbox.webhooks == []  # refused before asking Patreon: no webhook there whose secret is lost


@pytest.mark.patreon_sandbox(members=0)
def test_the_webhooks_register_command_without_keys_refuses(
    make_app: Callable[..., Flask], patreon_sandbox: Sandbox
) -> None:
    app = sandbox_app(make_app, patreon_sandbox, PATRONLOCK_TOKEN_KEYS=[])
    result = app.test_cli_runner().invoke(
        args=["patronlock", "webhooks", "register", "--url", "https://site.test/patreon/webhook"]
    )
    assert result.exit_code == 1, result.output
    assert all(part in result.output for part in FIX) and "Traceback" not in result.output
    with app.app_context():
        assert stored_webhook(get_state(app)) is None
    assert patreon_sandbox.webhook_secret not in settings_text(get_state(app))
    assert patreon_sandbox.webhooks == []


def test_connecting_patreon_without_keys_is_a_clear_page_before_patreon(make_app: Callable[..., Flask]) -> None:
    site = make_site(make_app, **MOCK_CONFIG)
    site.app.config["PATRONLOCK_TOKEN_KEYS"] = []
    client, _user = logged_in(site, "kopi@example.com")
    response = client.get("/patreon/connect")
    html = response.get_data(as_text=True)
    assert response.status_code == 500 and problem_kind(html) == "not_configured", html
    assert "oauth2/authorize" not in response.headers.get("Location", "")  # nobody is sent to Patreon for nothing
    assert "site&#39;s owner" in html and "PATRONLOCK_TOKEN_KEYS" in html


@pytest.mark.parametrize("flow", ["connect", "login"])
def test_the_oauth_callback_without_keys_is_a_clear_page_and_stores_nothing(
    make_app: Callable[..., Flask], requests_mock: rm.Mocker, flow: str
) -> None:
    """The keys went missing between the start and Patreon's answer (a deploy without them): the patron's code is
    not spent, no token is stored, and the page says what happened without any secret or trace."""
    site = make_site(make_app, **MOCK_CONFIG)
    site.allow_signup()
    requests_mock.post(MOCK_TOKEN_URL, json=token_json())
    requests_mock.get(MOCK_IDENTITY_URL, json=identity_doc("pu1", member={}))
    if flow == "connect":
        client, _user = logged_in(site, "kopi@example.com")
        params = start(client)
    else:
        client = site.app.test_client()
        params = start(client, "/patreon/login")
    site.app.config["PATRONLOCK_TOKEN_KEYS"] = []
    response = client.get("/patreon/callback", query_string={"code": "the-code", "state": params["state"]})
    html = response.get_data(as_text=True)
    assert response.status_code == 500 and problem_kind(html) == "not_configured", html
    assert "Nothing was changed" in html and "site&#39;s owner" in html
    for secret in ("client-secret", "the-code", "access-1", "refresh-1", "Traceback", "ConfigurationError"):
        assert secret not in html
    assert not any(r.url.startswith(MOCK_TOKEN_URL) for r in requests_mock.request_history)  # the code is not spent
    with site.app.app_context():
        from flask_patronlock.accounts import get_accounts

        assert get_accounts().for_patreon_user("pu1") is None


@pytest.mark.patreon_sandbox(members=0)
def test_the_creators_connect_callback_without_keys_refuses_with_the_fix(
    make_app: Callable[..., Flask], patreon_sandbox: Sandbox
) -> None:
    config = dict(patreon_sandbox.config)
    config.pop("PATRONLOCK_CREATOR_ACCESS_TOKEN")
    site = make_admin_site(make_app, **config)
    started = site.post(ADMIN_PREFIX + "/setup/connect")
    assert started.status_code == 302
    answer = requests.get(started.headers["Location"], params={"sandbox_user": "creator@example.com",
                                                               "sandbox_decision": "approve"},
                          allow_redirects=False, timeout=10)
    back = urlsplit(answer.headers["Location"])
    assert parse_qs(back.query).get("code")
    site.app.config["PATRONLOCK_TOKEN_KEYS"] = []
    response = site.get(f"{back.path}?{back.query}")
    assert response.status_code == 302
    page = site.get(ADMIN_PREFIX + "/setup").get_data(as_text=True)
    assert all(part in page for part in FIX), page
    assert get_creator_connection(site.state) is None
    assert CREATOR_KEY not in settings_text(site.state)


@pytest.mark.patreon_sandbox(members=0)
def test_check_reports_missing_or_invalid_keys_and_a_secret_stored_in_the_clear(
    make_app: Callable[..., Flask], patreon_sandbox: Sandbox
) -> None:
    app = sandbox_app(make_app, patreon_sandbox, PATRONLOCK_TOKEN_KEYS=[])
    runner = app.test_cli_runner()

    def check() -> Any:
        return runner.invoke(args=["patronlock", "check"])

    result = check()
    assert result.exit_code == 1 and "missing  PATRONLOCK_TOKEN_KEYS" in result.output
    assert "Fernet.generate_key()" in result.output
    app.config["PATRONLOCK_TOKEN_KEYS"] = ["not-a-fernet-key"]
    result = check()
    assert result.exit_code == 1 and "invalid  PATRONLOCK_TOKEN_KEYS" in result.output, result.output
    # a webhook secret an earlier version stored in the clear (registered before any key was set)
    app.config["PATRONLOCK_TOKEN_KEYS"] = [Fernet.generate_key().decode()]
    state = get_state(app)
    legacy = {"id": "1", "uri": "https://site.test/patreon/webhook", "secret": "clear-secret-7f3a"}
    with state.store.transaction() as conn:
        conn.execute(insert(state.tables.settings).values(
            key=WEBHOOK_SETTING_KEY, value=legacy, version=0, updated_at=patreon_sandbox.now
        ))
    result = check()
    assert result.exit_code == 1 and "in the clear" in result.output and "rotate-keys" in result.output
    assert "clear-secret-7f3a" not in result.output
    assert runner.invoke(args=["patronlock", "rotate-keys"]).exit_code == 0
    result = check()
    assert "in the clear" not in result.output and "ok       PATRONLOCK_TOKEN_KEYS" in result.output
