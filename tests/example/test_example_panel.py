"""The example site's control panel: the visitor plays Patreon in the mounted sandbox, and the site learns of it
through its real webhook endpoint (sandbox -> /patreon/webhook -> thread job -> re-fetch) or a reconcile run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.fernet import Fernet

from example_site import create_app
from tests.helpers.example_server import form_token, register, serve_example_site


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    config = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'site.db'}", "PATRONLOCK_STRICT_SIGNALS": True}
    with serve_example_site(config) as served:
        yield served


def press(http: requests.Session, base: str, action: str, **form: str) -> str:
    token = form_token(http, base + "/panel/")
    page = http.post(base + f"/panel/{action}", data={"csrf_token": token, **form}, timeout=20)
    assert page.status_code == 200 and page.url == base + "/panel/"
    return page.text


def connected_visitor(base: str, email: str = "reader@example.com") -> requests.Session:
    visitor = register(base, email)
    start = visitor.get(base + "/patreon/connect?next=/panel/", allow_redirects=False, timeout=10)
    page = visitor.get(
        start.headers["Location"], params={"sandbox_user": email, "sandbox_decision": "approve"}, timeout=10
    )
    assert page.url == base + "/panel/" and "<strong>connected</strong>" in page.text
    return visitor


def test_the_sandbox_has_a_webhook_to_the_site(site: tuple[str, Any]) -> None:
    base, app = site
    sandbox = app.extensions["example_sandbox"]
    assert [w.uri for w in sandbox.webhooks] == [base + "/patreon/webhook"]
    assert sandbox.webhooks[0].secret in app.config["PATRONLOCK_WEBHOOK_SECRETS"]


def test_the_panel_needs_a_logged_in_visitor(site: tuple[str, Any]) -> None:
    base, _ = site
    page = requests.get(base + "/panel/", allow_redirects=False, timeout=10)
    assert page.status_code == 302 and "/login" in page.headers["Location"]


def test_pledge_decline_recover_through_webhooks(site: tuple[str, Any]) -> None:
    base, _ = site
    visitor = connected_visitor(base)
    assert 'data-patronlock-reason="not_a_patron"' in visitor.get(base + "/posts/process", timeout=10).text

    text = press(visitor, base, "pledge", tier="Silver")
    assert "You are a Silver patron" in text and 'id="pending">0<' not in text
    # Patreon changed, but the site has not heard yet
    assert "twenty-step process" not in visitor.get(base + "/posts/process", timeout=10).text

    text = press(visitor, base, "flush")
    assert "accepted" in text and 'id="pending">0<' in text
    post = visitor.get(base + "/posts/process", timeout=10).text
    assert "twenty-step process" in post
    assert "masterclass video" not in visitor.get(base + "/posts/masterclass", timeout=10).text  # Gold only

    press(visitor, base, "decline")
    press(visitor, base, "flush")
    post = visitor.get(base + "/posts/process", timeout=10).text
    assert 'data-patronlock-reason="payment_declined"' in post and "Update your payment method" in post
    assert "twenty-step process" not in post

    press(visitor, base, "recover")
    press(visitor, base, "flush")
    assert "twenty-step process" in visitor.get(base + "/posts/process", timeout=10).text


def test_change_tier_and_sync_now(site: tuple[str, Any]) -> None:
    base, _ = site
    visitor = connected_visitor(base)
    press(visitor, base, "pledge", tier="Bronze")
    press(visitor, base, "flush")
    assert "masterclass video" not in visitor.get(base + "/posts/masterclass", timeout=10).text
    press(visitor, base, "pledge", tier="Gold")
    text = press(visitor, base, "sync")  # the reconcile path, without the webhooks
    assert "Reconcile run" in text
    assert "masterclass video" in visitor.get(base + "/posts/masterclass", timeout=10).text
    press(visitor, base, "cancel")
    text = press(visitor, base, "flush")
    assert 'id="site-status" data-status="former_patron"' in text  # (what was paid for stays readable to its end)
    assert "The clock moved a month" in press(visitor, base, "advance")


def test_a_scenario_played_from_the_panel_reaches_the_site(site: tuple[str, Any]) -> None:
    base, app = site
    visitor = connected_visitor(base)
    press(visitor, base, "pledge", tier="Silver")
    text = press(visitor, base, "scenario", scenario="start_of_month")
    assert "Played on Patreon: Start of month" in text
    member = app.extensions["example_sandbox"].member("reader@example.com")
    assert member.entitled_cents == 0 and member.tier_ids == () and member.last_charge_status == "Paid"
    text = press(visitor, base, "flush")
    assert 'id="site-status" data-status="active_patron"' in text and "Silver patron" not in text
    text = press(visitor, base, "scenario", scenario="leap_year")
    assert "choose one of the listed behaviours" in text


def test_with_real_credentials_there_is_no_sandbox_and_no_panel(tmp_path: Path) -> None:
    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'real.db'}",
            "TESTING": True,
            "PATRONLOCK_CLIENT_ID": "real-client",
            "PATRONLOCK_CLIENT_SECRET": "real-secret",
            "PATRONLOCK_CAMPAIGN_ID": "1",
            "PATRONLOCK_CREATOR_ACCESS_TOKEN": "creator-token",
            "PATRONLOCK_WEBHOOK_SECRETS": ["hook-secret"],
            "SECRET_KEY": "k" * 64,
            "PATRONLOCK_TOKEN_KEYS": [Fernet.generate_key().decode()],
        }
    )
    try:
        assert "example_sandbox" not in app.extensions and "panel" not in app.blueprints
        assert not any(rule.rule.startswith(("/panel", "/_patreon")) for rule in app.url_map.iter_rules())
        assert app.config["PATRONLOCK_API_BASE_URL"] == "https://www.patreon.com"
        page = app.test_client().get("/")  # a page view never calls Patreon (the real one is not reachable here)
        assert page.status_code == 200 and "Sandbox" not in page.text and "Play Patreon" not in page.text
    finally:
        with app.app_context():
            from example_site.app import db

            db.engine.dispose()
