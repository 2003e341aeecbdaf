"""The banner-html and lock-rule filters: where they are folded, what their return values do, what they cost."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from blinker import Signal
from flask import Flask
from markupsafe import Markup

from flask_patronlock import LockRule, can_view, explain, locked, signals
from flask_patronlock.settings import list_locks, set_lock_override
from flask_patronlock.signals import filter_receiver
from tests.helpers.sites import Site, count_queries, make_site


@pytest.fixture
def site(make_app: Callable[..., Flask]) -> Site:
    site = make_site(make_app)
    site.ext.lock("gold", tier="Gold")
    app = site.app
    app.add_url_rule("/gold", "gold", locked("gold")(lambda: "SECRET"))
    app.add_url_rule(
        "/tag", "tag", lambda: app.jinja_env.from_string('{% patronlock "gold" %}SECRET{% endpatronlock %}').render()
    )
    site.linked_patron("silver", entitled_cents=500, entitled_tier_ids=("t5",))
    site.linked_patron("gold")
    return site


@pytest.fixture
def connect(site: Site) -> Iterator[Callable[..., Any]]:
    """``connect(signal, priority=50)`` as a decorator: a filter receiver for this site's app, disconnected after."""
    connected: list[tuple[Signal, Any]] = []

    def decorator_for(signal: Signal, priority: int = 50) -> Callable[[Any], Any]:
        def decorator(func: Any) -> Any:
            filter_receiver(signal, priority=priority, sender=site.app)(func)
            connected.append((signal, func))
            return func

        return decorator

    yield decorator_for
    for signal, func in connected:
        signal.disconnect(func)  # from every sender: also out of signal.receivers


# -- banner-html -------------------------------------------------------------------------------------------------------


def test_banner_html_changes_every_banner_in_priority_order(site: Site, connect: Callable[..., Any]) -> None:
    seen: list[tuple[str | None, str, str]] = []

    @connect(signals.banner_html, priority=80)
    def last(app: Flask, value: Markup, lock: str | None, decision: Any, context: dict[str, Any], **kw: Any) -> Markup:
        seen.append((lock, decision.reason, context["reason"]))
        return value + Markup("<p id=last>after</p>")

    @connect(signals.banner_html, priority=10)
    def first(app: Flask, value: Markup, **kw: Any) -> Markup:
        return Markup("<p id=first>before</p>") + value

    @connect(signals.banner_html)
    def keeps(app: Flask, value: Markup, **kw: Any) -> None:
        return None

    tag = site.get("/tag", user="silver").text
    page = site.get("/gold", user="silver")
    assert page.status_code == 403
    for text in (tag, page.text):
        assert text.index("<p id=first>before</p>") < text.index('class="patronlock-banner') < text.index("<p id=last>")
    assert seen == [("gold", "amount_too_low", "amount_too_low")] * 2
    assert site.get("/tag", user="gold").text == "SECRET"  # no banner, no filter


def test_banner_html_plain_strings_are_escaped(site: Site, connect: Callable[..., Any]) -> None:
    @connect(signals.banner_html)
    def text(app: Flask, value: Markup, **kw: Any) -> str:
        return "<script>alert(1)</script>"

    page = site.get("/tag", user="silver").text
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


# -- lock-rule ---------------------------------------------------------------------------------------------------------


def test_lock_rule_replaces_the_rule_everywhere(site: Site, connect: Callable[..., Any]) -> None:
    calls: list[tuple[str | None, str]] = []

    @connect(signals.lock_rule)
    def silver_is_enough(app: Flask, value: LockRule, lock: str | None, source: str, **kw: Any) -> LockRule | None:
        calls.append((lock, source))
        if lock != "gold":
            return None
        return LockRule(tier_ids=("silver",))  # a tier title: resolved to its id like a declared rule's

    assert site.get("/gold", user="silver").text == "SECRET"
    with site.app.app_context():
        (info,) = list_locks()
        assert info.default.tier_ids == ("Gold",) and info.effective.tier_ids == ("t5",)
        steps = str(explain("silver", "gold"))
        assert "the default rule declared in code applies: tier Gold" in steps
        assert "Filter: a lock-rule receiver changed the rule to: tier Silver" in steps
        set_lock_override("gold", {"tier_ids": ["Platinum"]})
    site.state.settings.invalidate()
    site.get("/gold", user="silver")
    assert calls == [("gold", "default"), ("gold", "override")]  # once per lock and settings version


def test_lock_rule_is_refolded_when_receivers_change(site: Site, connect: Callable[..., Any]) -> None:
    assert site.get("/gold", user="silver").status_code == 403  # cached without receivers

    @connect(signals.lock_rule)
    def open_to_all(app: Flask, value: LockRule, **kw: Any) -> LockRule:
        return LockRule(enabled=False)

    assert site.get("/gold", user="silver").status_code == 200
    signals.lock_rule.disconnect(open_to_all)
    assert site.get("/gold", user="silver").status_code == 403


def test_lock_rule_one_off_rules_and_bad_values(
    site: Site, connect: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    sources: list[tuple[str | None, str]] = []

    @connect(signals.lock_rule)
    def bad(app: Flask, value: LockRule, lock: str | None, source: str, **kw: Any) -> Any:
        sources.append((lock, source))
        return "not a rule"

    with site.app.test_request_context(headers={"X-User": "silver"}), pytest.raises(TypeError, match="not a LockRule"):
        can_view(tier="Platinum")
    site.app.config["PATRONLOCK_STRICT_SIGNALS"] = False
    site.state.settings.invalidate()
    with site.app.test_request_context(headers={"X-User": "gold"}):
        assert can_view(tier="Gold")  # the bad value is ignored, the rule stands
    assert sources[0] == (None, "one-off")
    assert "a lock-rule receiver returned str, not a LockRule; ignored" in caplog.text


# -- zero cost without receivers ---------------------------------------------------------------------------------------


def test_no_receivers_no_fold(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("apply_filter was called without receivers")

    monkeypatch.setattr(signals, "apply_filter", never)
    for signal in (signals.access_decision, signals.banner_context, signals.pledge_url, signals.banner_html,
                   signals.lock_rule):
        monkeypatch.setattr(signal, "receivers", {})  # whatever other tests left connected
    assert site.get("/tag", user="silver").status_code == 200
    assert site.get("/gold", user="silver").status_code == 403
    with count_queries(site.app) as statements:
        assert site.get("/tag", user="gold").text == "SECRET"
    assert len(statements) == 1  # the viewer's one indexed read; the rule and the filters cost no query
