"""@locked on views: named and one-off locks, reasons, the 403 page and JSON, OPTIONS, async views, site-wide and
path locks, the admin callback, current_patron, and the access-decision filter."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask, g, jsonify
from flask_login import login_required, login_user
from lockhelpers import NOW, Site, make_site

from flask_patronlock import (
    Decision,
    LockedError,
    UnknownLockError,
    can_view,
    current_patron,
    decision_for,
    lock_exempt,
    locked,
    signals,
)
from flask_patronlock.signals import filter_receiver


@pytest.fixture
def site(make_app: Callable[..., Flask]) -> Site:
    site = make_site(make_app)
    site.ext.lock("premium", tier="Gold", description="Gold posts")
    app = site.app

    @app.route("/premium", methods=["GET", "POST", "OPTIONS"])
    @locked("premium")
    def premium() -> str:
        return "SECRET:premium"

    @app.route("/gold-oneoff")
    @locked(tier="gold")  # titles are case-insensitive
    def gold_oneoff() -> str:
        return "SECRET:gold"

    @app.route("/five")
    @locked(min_cents=500)
    def five() -> str:
        return "SECRET:five"

    @app.route("/any")
    @locked
    def any_patron() -> str:
        return "SECRET:any"

    @app.route("/public")
    def public() -> str:
        return "public"

    return site


@pytest.fixture
def patrons(site: Site) -> Site:
    site.linked_patron("gold")  # Gold, $10
    site.linked_patron("silver", entitled_cents=500, entitled_tier_ids=("t5",))
    site.link("linked-only", "p-nobody")  # linked, no membership stored
    site.user("stranger")  # signed in, not linked
    site.user("boss", admin=True)
    return site


@pytest.mark.parametrize(
    ("user", "path", "status", "reason"),
    [
        (None, "/premium", 403, "anonymous"),
        ("stranger", "/premium", 403, "not_linked"),
        ("linked-only", "/premium", 403, "not_a_patron"),
        ("silver", "/premium", 403, "amount_too_low"),
        ("gold", "/premium", 200, None),
        ("boss", "/premium", 200, None),
        ("silver", "/gold-oneoff", 403, "amount_too_low"),
        ("gold", "/gold-oneoff", 200, None),
        ("silver", "/five", 200, None),
        ("linked-only", "/five", 403, "not_a_patron"),
        ("silver", "/any", 200, None),
        ("stranger", "/any", 403, "not_linked"),
    ],
)
def test_locked_view_decides_by_reason(patrons: Site, user: str | None, path: str, status: int, reason: str) -> None:
    response = patrons.get(path, user)
    assert response.status_code == status
    body = response.get_data(as_text=True)
    if reason is None:
        assert body.startswith("SECRET:")
    else:
        assert "SECRET:" not in body
        assert f'data-patronlock-reason="{reason}"' in body


def test_denied_request_is_a_forbidden_with_the_decision(patrons: Site) -> None:
    app = patrons.app
    seen: list[LockedError] = []

    @app.errorhandler(LockedError)
    def handle(error: LockedError) -> Any:
        seen.append(error)
        return f"custom {error.lock_name} {error.reason}", 402

    response = patrons.get("/premium", "silver")
    assert response.status_code == 402 and response.get_data(as_text=True) == "custom premium amount_too_low"
    assert isinstance(seen[0].decision, Decision) and seen[0].code == 403
    assert seen[0].decision.required_tier_ids == ("t10",)
    # the app's handler replaced the page, but the response still passed through a decision
    assert "private" in response.headers["Cache-Control"]


def test_a_generic_403_handler_also_catches_it(patrons: Site) -> None:
    @patrons.app.errorhandler(403)
    def forbidden(error: Any) -> Any:
        return "site 403 page", 403

    assert patrons.get("/premium", None).get_data(as_text=True) == "site 403 page"


def test_json_requests_get_a_json_error(patrons: Site) -> None:
    response = patrons.get("/premium", "silver", headers={"Accept": "application/json"})
    assert response.status_code == 403 and response.is_json
    body = response.get_json()
    assert body["error"] == "locked" and body["lock"] == "premium" and body["reason"] == "amount_too_low"
    assert "Gold" in body["message"] and body["action_url"].endswith("/checkout/c1?rid=t10")
    # a browser's Accept prefers HTML
    html = patrons.get("/premium", "silver", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert html.mimetype == "text/html"


def test_options_passes_through(patrons: Site) -> None:
    response = patrons.app.test_client().options("/premium")
    assert response.status_code == 200 and response.get_data(as_text=True) == "SECRET:premium"
    assert "Cache-Control" not in response.headers  # no decision was made


def test_async_views(patrons: Site) -> None:
    @patrons.app.route("/async")
    @login_required
    @locked("premium")
    async def async_view() -> str:
        return "async content"

    assert patrons.get("/async", "gold").get_data(as_text=True) == "async content"
    assert patrons.get("/async", "silver").status_code == 403
    assert patrons.get("/async", None).status_code == 401  # login_required first


def test_cache_headers_on_every_decided_response(patrons: Site) -> None:
    for user in ("gold", "silver", None):
        response = patrons.get("/premium", user)
        assert response.headers["Cache-Control"] == "private"
        assert "Cookie" in response.headers["Vary"]
    public = patrons.get("/public", "gold")
    assert "Cache-Control" not in public.headers  # (Flask itself adds Vary: Cookie when the session is read)


def test_private_replaces_public_cache_control(patrons: Site) -> None:
    @patrons.app.route("/cached")
    @locked("premium")
    def cached() -> Any:
        response = jsonify(ok=True)
        response.cache_control.public = True
        response.cache_control.max_age = 600
        response.cache_control.s_maxage = 3600
        return response

    response = patrons.get("/cached", "gold")
    assert response.cache_control.private and not response.cache_control.public
    assert response.cache_control.s_maxage is None and response.cache_control.max_age == 600


def test_unknown_lock_name_is_a_clear_error(patrons: Site) -> None:
    @patrons.app.route("/typo")
    @locked("premiun")
    def typo() -> str:
        return "x"

    with pytest.raises(UnknownLockError, match=r"'premiun'.*declared: premium"):
        patrons.get("/typo", "gold")


def test_bad_rules_fail_at_declaration(site: Site) -> None:
    with pytest.raises(ValueError, match="min_cents"):
        locked(min_cents=-1)
    with pytest.raises(TypeError):
        locked("premium", tier="Gold")
    with pytest.raises(ValueError, match="already declared"):
        site.ext.lock("premium", tier="Silver")
    site.ext.lock("premium", tier="Gold", description="Gold posts")  # the same declaration again is fine
    with pytest.raises(ValueError, match="patron_since_before"):
        site.ext.lock("early", patron_since_before="yesterday")


def test_unknown_tier_title_denies_and_warns_once(
    patrons: Site, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask_patronlock import settings_cache

    monkeypatch.setattr(settings_cache, "_warned_tiers", set())  # "once per process": start this test's process afresh
    patrons.ext.lock("mythic", tier="Mythic")

    @patrons.app.route("/mythic")
    @locked("mythic")
    def mythic() -> str:
        return "mythic content"

    with caplog.at_level(logging.WARNING, logger="flask_patronlock.settings"):
        first = patrons.get("/mythic", "gold")
        patrons.get("/mythic", "gold")
    assert first.status_code == 403 and 'data-patronlock-reason="amount_too_low"' in first.get_data(as_text=True)
    warnings = [r for r in caplog.records if "Mythic" in r.getMessage()]
    assert len(warnings) == 1
    with patrons.app.test_request_context(headers={"X-User": "gold"}):
        decision = decision_for("mythic")
        assert decision.reason == "amount_too_low" and "Mythic" in (decision.missing or "")


def test_rule_kinds(site: Site) -> None:
    site.ext.lock("early", patron_since_before=NOW - timedelta(days=200))
    site.ext.lock("drip", drip_months=6)
    site.ext.lock("lifetime", lifetime_cents=5000)
    site.ext.lock("either", tier="Platinum", lifetime_cents=2000, combine="any")
    site.ext.lock("off", tier="Platinum", enabled=False)
    site.linked_patron("old", pledge_start=NOW - timedelta(days=400), lifetime_cents=9000)
    site.linked_patron("new")  # pledged 100 days ago, $30 lifetime
    expected = {
        ("old", "early"): "allowed",
        ("new", "early"): "not_patron_at_date",
        ("old", "drip"): "allowed",
        ("new", "drip"): "drip_not_reached",
        ("old", "lifetime"): "allowed",
        ("new", "lifetime"): "lifetime_too_low",
        ("new", "either"): "allowed",
        ("new", "off"): "lock_disabled",
    }
    for (user, lock), reason in expected.items():
        with site.app.test_request_context(headers={"X-User": user}):
            assert decision_for(lock).reason == reason, (user, lock)


def test_site_wide_lock(make_app: Callable[..., Flask]) -> None:
    site = make_site(make_app, PATRONLOCK_SITE_LOCK="members", PATRONLOCK_EXEMPT_ENDPOINTS=["about"])
    site.ext.lock("members")
    app = site.app
    app.login_manager.login_view = "login"  # type: ignore[attr-defined]
    for name in ("home", "about", "login", "open_door"):
        view = (lambda n: lambda: n)(name)
        if name == "open_door":
            view = lock_exempt(view)
        app.add_url_rule(f"/{name}", name, view)
    site.linked_patron("fan")
    site.user("stranger")

    assert site.get("/home", "fan").get_data(as_text=True) == "home"
    denied = site.get("/home", "stranger")
    assert denied.status_code == 403 and 'data-patronlock-reason="not_linked"' in denied.get_data(as_text=True)
    assert denied.headers["Cache-Control"] == "private" and "Cookie" in denied.headers["Vary"]
    assert site.get("/home", "fan").headers["Cache-Control"] == "private"
    assert site.get("/home", None).status_code == 403
    for exempt in ("/about", "/login", "/open_door"):
        response = site.get(exempt, None)
        assert response.status_code == 200, exempt
        assert "Cache-Control" not in response.headers
    assert site.get("/nowhere", None).status_code == 404  # no route: nothing to lock
    assert site.get("/static/x.css", None).status_code == 404  # static is exempt (file missing: 404, not 403)
    assert site.app.test_client().options("/home").status_code == 200


def test_path_locks_longest_prefix_whole_segments(make_app: Callable[..., Flask]) -> None:
    site = make_site(make_app, PATRONLOCK_PATH_LOCKS={"/members": "basic", "/members/vip/": "vip"})
    site.ext.lock("basic", tier="Silver")
    site.ext.lock("vip", tier="Gold")
    for path in ("/members/news", "/members/vip/lounge", "/membership", "/members"):
        site.app.add_url_rule(path, path, (lambda p: lambda: p)(path))
    site.linked_patron("silver", entitled_cents=500, entitled_tier_ids=("t5",))
    site.linked_patron("gold")
    assert site.get("/members/news", "silver").status_code == 200
    assert site.get("/members", "silver").status_code == 200
    assert site.get("/members", None).status_code == 403
    assert site.get("/members/vip/lounge", "silver").status_code == 403
    assert site.get("/members/vip/lounge", "gold").status_code == 200
    assert site.get("/membership", None).status_code == 200  # not a segment of /members


def test_admin_bypass(patrons: Site) -> None:
    response = patrons.get("/premium", "boss")  # an admin with no Patreon account at all
    assert response.status_code == 200
    with patrons.app.test_request_context(headers={"X-User": "boss"}):
        assert decision_for("premium").reason == "admin_bypass"
    calls: list[Any] = []
    patrons.ext.admin_loader(lambda user: calls.append(user) or False)
    assert patrons.get("/premium", "boss").status_code == 403
    assert patrons.get("/premium", None).status_code == 403
    assert [u.id for u in calls] == ["boss"]  # asked once per request, never for anonymous visitors


def test_current_patron_and_can_view(patrons: Site) -> None:
    with patrons.app.test_request_context(headers={"X-User": "gold"}):
        assert current_patron
        assert current_patron.member_id == "m-gold" and current_patron.entitled_tier_ids == ("t10",)
        assert can_view("premium") and can_view(min_cents=1000) and not can_view(min_cents=1001)
        assert g._patronlock_viewer.patron is current_patron._get_current_object()  # type: ignore[attr-defined]
    with patrons.app.test_request_context(headers={"X-User": "linked-only"}):
        assert not current_patron
        assert not can_view("premium")
    with patrons.app.test_request_context():
        assert not current_patron
        assert decision_for("premium").reason == "anonymous"


def test_logging_in_during_the_request_forgets_the_cached_viewer(patrons: Site) -> None:
    @patrons.app.route("/login-as/<user_id>")
    def login_as(user_id: str) -> Any:
        before = can_view("premium")
        login_user(patrons.users[user_id])
        return jsonify(before=before, after=can_view("premium"))

    assert patrons.get("/login-as/gold", None).get_json() == {"before": False, "after": True}


@pytest.fixture
def filters() -> Iterator[list[Any]]:
    connected: list[Any] = []
    yield connected
    for receiver in connected:
        signals.access_decision.disconnect(receiver)


def test_access_decision_filter_overrides_in_priority_order(patrons: Site, filters: list[Any]) -> None:
    calls: list[str] = []

    @filter_receiver(signals.access_decision, priority=20)
    def comp_list(sender: Any, value: Decision, **kw: Any) -> Decision | None:
        calls.append("comp")
        if kw["user"] is not None and kw["user"].id == "silver" and kw["lock"] == "premium":
            return Decision(allowed=True, reason="allowed")
        return None

    @filter_receiver(signals.access_decision, priority=10)
    def audit(sender: Any, value: Decision, **kw: Any) -> None:
        assert sender is patrons.app
        assert set(kw) == {"lock", "rule", "viewer", "user", "now"}
        assert kw["rule"].tier_ids == ("t10",) and kw["now"] == NOW
        calls.append("audit")

    filters.extend([comp_list, audit])
    assert patrons.get("/premium", "silver").status_code == 200
    assert calls == ["audit", "comp"]
    assert patrons.get("/premium", "stranger").status_code == 403


def test_access_decision_filter_must_return_a_decision(patrons: Site, filters: list[Any]) -> None:
    @filter_receiver(signals.access_decision)
    def broken(sender: Any, value: Decision, **kw: Any) -> Any:
        return True

    filters.append(broken)
    with pytest.raises(TypeError, match="not a Decision"):
        patrons.get("/premium", "gold")
    patrons.app.config["PATRONLOCK_STRICT_SIGNALS"] = False
    assert patrons.get("/premium", "gold").status_code == 200  # logged and ignored
    assert patrons.get("/premium", "silver").status_code == 403
