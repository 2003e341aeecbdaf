"""The {% patronlock %} tag (else, more, teaser), the Jinja globals, and cache headers on template-only decisions."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask, render_template_string
from jinja2 import TemplateSyntaxError

from tests.helpers.sites import Site, count_queries, make_site


@pytest.fixture
def site(make_app: Callable[..., Flask]) -> Site:
    site = make_site(make_app)
    site.ext.lock("premium", tier="Gold")
    site.linked_patron("gold")
    site.linked_patron("silver", entitled_cents=500, entitled_tier_ids=("t5",))
    return site


def render(site: Site, source: str, user: str | None) -> str:
    headers = {"X-User": user} if user else {}
    with site.app.test_request_context(headers=headers):
        return render_template_string(source)


def test_block_without_else_shows_the_banner(site: Site) -> None:
    source = "A{% patronlock 'premium' %}SECRET{% endpatronlock %}Z"
    assert render(site, source, "gold") == "ASECRETZ"
    denied = render(site, source, "silver")
    assert denied.startswith("A<div class=\"patronlock-banner") and denied.endswith("Z") and "SECRET" not in denied
    assert 'data-patronlock-reason="amount_too_low"' in denied


def test_else_replaces_the_banner(site: Site) -> None:
    source = "{% patronlock 'premium' %}SECRET{% else %}OTHER{% endpatronlock %}"
    assert render(site, source, "gold") == "SECRET"
    assert render(site, source, "silver") == "OTHER"
    assert render(site, source, None) == "OTHER"


def test_more_splits_teaser_and_rest(site: Site) -> None:
    source = "{% patronlock 'premium' %}TEASER {% more %}REST{% endpatronlock %}"
    assert render(site, source, "gold") == "TEASER REST"
    denied = render(site, source, "silver")
    assert denied.startswith("TEASER <div class=\"patronlock-banner") and "REST" not in denied
    with_else = "{% patronlock 'premium' %}TEASER {% more %}REST{% else %}JOIN{% endpatronlock %}"
    assert render(site, with_else, "silver") == "TEASER JOIN"


def test_explicit_teaser_section(site: Site) -> None:
    source = "{% patronlock 'premium' %}FULL POST{% teaser %}JUST A TASTE {% endpatronlock %}"
    assert render(site, source, "gold") == "FULL POST"
    denied = render(site, source, None)
    assert denied.startswith("JUST A TASTE <div") and "FULL POST" not in denied
    assert 'data-patronlock-reason="anonymous"' in denied
    with_else = "{% patronlock 'premium' %}FULL{% teaser %}TASTE {% else %}JOIN{% endpatronlock %}"
    assert render(site, with_else, None) == "TASTE JOIN"


def test_nested_blocks_and_ifs(site: Site) -> None:
    source = (
        "{% patronlock 'premium' %}{% if 1 %}IN{% else %}NEVER{% endif %}"
        "{% for x in [1, 2] %}{{ x }}{% else %}EMPTY{% endfor %}"
        "{% else %}{% patronlock min_five %}FIVE{% else %}NONE{% endpatronlock %}{% endpatronlock %}"
    )
    from flask_patronlock.locks import Lock, make_rule

    five = Lock(name=None, rule=make_rule(min_cents=500))
    with site.app.test_request_context(headers={"X-User": "gold"}):
        assert render_template_string(source, min_five=five) == "IN12"
    with site.app.test_request_context(headers={"X-User": "silver"}):
        assert render_template_string(source, min_five=five) == "FIVE"
    with site.app.test_request_context():
        assert render_template_string(source, min_five=five) == "NONE"


@pytest.mark.parametrize(
    "source",
    [
        "{% patronlock 'premium' %}A{% else %}B{% else %}C{% endpatronlock %}",
        "{% patronlock 'premium' %}A{% more %}B{% teaser %}C{% endpatronlock %}",
        "{% patronlock 'premium' %}A{% else %}B{% more %}C{% endpatronlock %}",
        "{% patronlock 'premium' %}A",
    ],
)
def test_malformed_blocks_are_syntax_errors(site: Site, source: str) -> None:
    with pytest.raises(TemplateSyntaxError):
        site.app.jinja_env.from_string(source)


def test_globals(site: Site) -> None:
    source = (
        "{{ can_view('premium') }}|{{ current_patron.member_id if current_patron else '-' }}|"
        "{{ patronlock_decision('premium').reason }}|{{ patronlock_banner('premium') }}"
    )
    assert render(site, source, "gold") == "True|m-gold|allowed|"
    silver = render(site, source, "silver")
    assert silver.startswith("False|m-silver|amount_too_low|<div class=\"patronlock-banner")
    assert render(site, "{{ patronlock_banner(min_cents=100) }}", None).startswith("<div")


def test_template_decisions_make_responses_private_and_query_once(site: Site) -> None:
    @site.app.route("/page")
    def page() -> str:
        return render_template_string(
            "{% patronlock 'premium' %}A{% endpatronlock %}{% patronlock 'premium' %}B{% endpatronlock %}"
            "{{ can_view('premium') }}{{ current_patron.full_name }}"
        )

    site.get("/page", "silver")  # warm the settings cache
    with count_queries(site.app) as queries:
        response = site.get("/page", "gold")
    assert response.get_data(as_text=True) == "ABTruePatron m-gold"
    assert response.headers["Cache-Control"] == "private" and "Cookie" in response.headers["Vary"]
    assert len(queries) == 1, queries  # gold's first page view: the viewer query, once for every use
    with count_queries(site.app) as queries:
        again = site.get("/page", "gold")
    assert again.get_data(as_text=True) == "ABTruePatron m-gold" and again.headers["Cache-Control"] == "private"
    assert queries == []  # within PATRONLOCK_VIEWER_CACHE_SECONDS: the worker's viewer cache
    denied = site.get("/page", "silver")
    assert denied.status_code == 200 and denied.headers["Cache-Control"] == "private"


def test_banner_is_escaped_and_autoescape_safe(site: Site) -> None:
    from flask_patronlock.settings import set_banner_text

    with site.app.app_context():
        set_banner_text("amount_too_low", "<script>x</script> needs {tier}", by="creator")
    out = render(site, "{% patronlock 'premium' %}S{% endpatronlock %}", "silver")
    assert "&lt;script&gt;x&lt;/script&gt; needs Gold" in out and "<script>" not in out


def test_a_banner_renders_outside_a_request(site: Site) -> None:
    """An email rendered in a background job: no request, no SERVER_NAME; login links cannot be built, but the banner
    still renders and says what to do."""
    site.app.add_url_rule("/signin", "signin", lambda: "signin")
    site.app.login_manager.login_view = "signin"  # type: ignore[attr-defined]
    with site.app.app_context():
        out = render_template_string("{% patronlock 'premium' %}S{% endpatronlock %}")
    assert 'data-patronlock-reason="anonymous"' in out and "Log in to see it" in out
    assert 'class="patronlock-action"' not in out


def test_a_filter_reason_without_a_template_falls_back(site: Site) -> None:
    from flask_patronlock import signals
    from flask_patronlock.policy import Decision
    from flask_patronlock.signals import filter_receiver

    @filter_receiver(signals.access_decision)
    def odd(sender: object, value: Decision, **kw: object) -> Decision:
        return Decision(allowed=False, reason="lock_disabled")  # a denying decision with an allowing reason

    try:
        out = render(site, "{% patronlock 'premium' %}S{% endpatronlock %}", "gold")
    finally:
        signals.access_decision.disconnect(odd)
    assert out != "S" and 'class="patronlock-banner patronlock-banner--lock_disabled"' in out
