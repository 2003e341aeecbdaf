"""accounts.py with requests-mock: linking writes encrypted tokens and audit rows, refresh and invalid_grant, the
status-refresh limit, and key rotation (the sandbox-backed tests are in test_tokens.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests_mock as rm
from connect_site import KEY1, KEY2, MOCK_CONFIG, MOCK_IDENTITY_URL, MOCK_TOKEN_URL, identity_doc, token_json
from flask import Flask
from sqlalchemy import select

from flask_patronlock import TokenDecryptionError, UserSnapshot
from flask_patronlock.accounts import (
    AlreadyLinked,
    NeedsReauthorization,
    NotLinked,
    RefreshTooSoon,
    get_accounts,
)
from flask_patronlock.patreon import ServerError, TokenSet
from flask_patronlock.state import get_state

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    app = make_app(PATRONLOCK_TOKEN_KEYS=[KEY1], **MOCK_CONFIG)
    get_state(app).store.clock = lambda: T0
    return app


def pair(n: int = 1, expires_in: timedelta = timedelta(days=31)) -> TokenSet:
    return TokenSet(f"access-{n}", f"refresh-{n}", T0 + expires_in, ("identity",))


def raw_row(app: Flask, user_id: str) -> dict[str, Any]:
    state = get_state(app)
    with state.store.engine.connect() as conn:
        row = conn.execute(select(state.tables.accounts).where(state.tables.accounts.c.user_id == user_id))
        return dict(row.mappings().one())


def events(app: Flask) -> list[tuple[str, str | None, str | None]]:
    state = get_state(app)
    e = state.tables.events
    with state.store.engine.connect() as conn:
        return [(r.kind, r.user_id, r.patreon_user_id) for r in conn.execute(select(e).order_by(e.c.id))]


def test_link_encrypts_tokens_and_audits(app: Flask) -> None:
    with app.app_context():
        accounts = get_accounts()
        result = accounts.link("7", UserSnapshot(id="pu1", email="k@example.com"), pair())
        assert result.outcome == "linked" and result.new_link
        assert "access-1" not in repr(result)
        row = raw_row(app, "7")
        assert b"access-1" not in row["access_token"] and b"refresh-1" not in row["refresh_token"]
        assert get_state().token_cipher().decrypt(row["access_token"]) == "access-1"
        assert accounts.access_token("7") == "access-1"
        again = accounts.link("7", UserSnapshot(id="pu1"), pair(2))
        assert again.outcome == "reauthorized" and not again.new_link
        moved = accounts.link("7", UserSnapshot(id="pu2"), pair(3))
        assert moved.outcome == "relinked" and moved.replaced_patreon_user_id == "pu1"
        with pytest.raises(AlreadyLinked):
            accounts.link("8", UserSnapshot(id="pu2"), pair(4))
        assert accounts.for_patreon_user("pu2") is not None and accounts.get("8") is None
        removed = accounts.unlink("7")
        assert removed is not None and removed.patreon_user_id == "pu2"
        assert accounts.unlink("7") is None
    assert events(app) == [
        ("account_linked", "7", "pu1"),
        ("account_reauthorized", "7", "pu1"),
        ("account_unlinked", "7", "pu1"),
        ("account_linked", "7", "pu2"),
        ("account_unlinked", "7", "pu2"),
    ]


def test_expiring_token_is_refreshed_and_stored(app: Flask, requests_mock: rm.Mocker) -> None:
    requests_mock.post(MOCK_TOKEN_URL, json=token_json("access-2", "refresh-2"))
    with app.app_context():
        accounts = get_accounts()
        accounts.link("7", UserSnapshot(id="pu1"), pair(1, expires_in=timedelta(minutes=4)))
        assert accounts.access_token("7") == "access-2"
        assert accounts.access_token("7") == "access-2"  # now fresh: no second refresh
        assert requests_mock.call_count == 1
        assert "refresh_token=refresh-1" in requests_mock.last_request.text
        row = raw_row(app, "7")
        assert get_state().token_cipher().decrypt(row["refresh_token"]) == "refresh-2"


def test_a_rejected_token_is_refreshed_unless_already_replaced(app: Flask, requests_mock: rm.Mocker) -> None:
    requests_mock.post(MOCK_TOKEN_URL, json=token_json("access-2", "refresh-2"))
    with app.app_context():
        accounts = get_accounts()
        accounts.link("7", UserSnapshot(id="pu1"), pair(1))
        assert accounts.access_token("7", rejected="access-0") == "access-1"  # someone already replaced access-0
        assert requests_mock.call_count == 0
        assert accounts.access_token("7", rejected="access-1") == "access-2"
        assert requests_mock.call_count == 1


def test_invalid_grant_marks_needs_reauth_and_changes_no_entitlement(app: Flask, requests_mock: rm.Mocker) -> None:
    requests_mock.post(MOCK_TOKEN_URL, status_code=401, json={"error": "invalid_grant"})
    with app.app_context():
        state = get_state()
        accounts = get_accounts()
        accounts.link("7", UserSnapshot(id="pu1"), pair(1, expires_in=timedelta(0)))
        requests_mock.get(MOCK_IDENTITY_URL, json=identity_doc("pu1", member={}))
        identity_member = accounts.apply_identity(
            state.client().identity(campaign_id="c1", access_token="x"), observed_at=T0
        )
        before = state.store.patron_for_user("7")
        assert before is not None and identity_member[1] == before
        with pytest.raises(NeedsReauthorization):
            accounts.access_token("7")
        account = accounts.get("7")
        assert account is not None and account.needs_reauth
        assert state.store.patron_for_user("7") == before
        with pytest.raises(NeedsReauthorization):  # stays flagged, without asking Patreon again
            accounts.identity("7")
        assert requests_mock.call_count == 2  # identity once (above), token endpoint once
        accounts.link("7", UserSnapshot(id="pu1"), pair(5))  # connecting again clears it
        account = accounts.get("7")
        assert account is not None and not account.needs_reauth
    assert ("account_needs_reauth", "7", "pu1") in events(app)


def test_refresh_failing_for_other_reasons_changes_nothing(app: Flask, requests_mock: rm.Mocker) -> None:
    requests_mock.post(MOCK_TOKEN_URL, status_code=503, text="down")
    with app.app_context():
        accounts = get_accounts()
        accounts.link("7", UserSnapshot(id="pu1"), pair(1, expires_in=timedelta(0)))
        before = raw_row(app, "7")
        with pytest.raises(ServerError):
            accounts.access_token("7")
        after = raw_row(app, "7")
        assert after["refresh_token"] == before["refresh_token"] and not after["needs_reauth"]


def test_identity_retries_once_after_a_401(app: Flask, requests_mock: rm.Mocker) -> None:
    requests_mock.post(MOCK_TOKEN_URL, json=token_json("access-2", "refresh-2"))
    requests_mock.get(
        MOCK_IDENTITY_URL,
        [{"status_code": 401, "json": {"errors": [{"status": "401"}]}}, {"json": identity_doc("pu1")}],
    )
    with app.app_context():
        accounts = get_accounts()
        accounts.link("7", UserSnapshot(id="pu1"), pair(1))
        assert accounts.identity("7").user.id == "pu1"
        assert requests_mock.request_history[-1].headers["Authorization"] == "Bearer access-2"
    with app.app_context(), pytest.raises(NotLinked):
        get_accounts().identity("8")


def test_status_refresh_limit(app: Flask) -> None:
    with app.app_context():
        accounts = get_accounts()
        with pytest.raises(NotLinked):
            accounts.claim_status_refresh("7", interval=300)
        accounts.link("7", UserSnapshot(id="pu1"), pair())
        accounts.claim_status_refresh("7", interval=300)
        get_state().store.clock = lambda: T0 + timedelta(seconds=100)
        with pytest.raises(RefreshTooSoon) as limited:
            accounts.claim_status_refresh("7", interval=300)
        assert limited.value.retry_after == pytest.approx(200)
        get_state().store.clock = lambda: T0 + timedelta(seconds=300)
        accounts.claim_status_refresh("7", interval=300)


def test_rotate_keys(app: Flask) -> None:
    with app.app_context():
        accounts = get_accounts()
        accounts.link("7", UserSnapshot(id="pu1"), pair(1))
        accounts.link("8", UserSnapshot(id="pu2"), TokenSet("access-x", None, None))
        app.config["PATRONLOCK_TOKEN_KEYS"] = [KEY2, KEY1]
        report = accounts.rotate_keys()
        assert (report.accounts, report.tokens) == (2, 3)
        app.config["PATRONLOCK_TOKEN_KEYS"] = [KEY2]
        assert accounts.access_token("7") == "access-1"
        assert accounts.access_token("8") == "access-x"


def test_rotate_keys_fails_clearly_and_changes_nothing(app: Flask) -> None:
    with app.app_context():
        accounts = get_accounts()
        accounts.link("7", UserSnapshot(id="pu1"), pair(1))
        app.config["PATRONLOCK_TOKEN_KEYS"] = [KEY2]
        accounts.link("8", UserSnapshot(id="pu2"), pair(2))
        before = raw_row(app, "8")
        with pytest.raises(TokenDecryptionError, match=r"linked account\(s\) 1 .*nothing was re-encrypted"):
            accounts.rotate_keys()
        assert raw_row(app, "8")["access_token"] == before["access_token"]


def test_rotate_keys_command(app: Flask) -> None:
    with app.app_context():
        get_accounts().link("7", UserSnapshot(id="pu1"), pair(1))
    app.config["PATRONLOCK_TOKEN_KEYS"] = [KEY2, KEY1]
    result = app.test_cli_runner().invoke(args=["patronlock", "rotate-keys"])
    assert result.exit_code == 0, result.output
    assert "Re-encrypted 2 token(s) of 1 linked account(s)" in result.output
    app.config["PATRONLOCK_TOKEN_KEYS"] = [KEY1]  # the tokens are under KEY2 now
    result = app.test_cli_runner().invoke(args=["patronlock", "rotate-keys"])
    assert result.exit_code == 1
    assert "open with none of the keys in PATRONLOCK_TOKEN_KEYS" in result.output
    assert "access-1" not in result.output
