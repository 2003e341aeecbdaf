"""The richer access rules as a site meets them: a post's publish date passed to ``@locked``, ``require``,
``decision_for``, the ``{% patronlock %}`` tag and the explainer; exact tiers and early access on real pages."""

from __future__ import annotations

import html
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import pytest
from flask import Flask, render_template_string

from flask_patronlock import decision_for, locked, require
from flask_patronlock.explain import explain
from tests.helpers.constants import NOW
from tests.helpers.sites import Site, make_site

JOINED = NOW - timedelta(days=100)  # Site.patron's pledge start
POSTS = {"old": JOINED - timedelta(days=30), "new": JOINED + timedelta(days=30)}


@pytest.fixture
def site(make_app: Callable[..., Flask]) -> Site:
    site = make_site(make_app, PATRONLOCK_CREATOR_NAME="Kopi Studio")
    site.ext.lock("back-issues", tier="Silver", patrons_at_publish=True, description="Patrons when it came out")
    app = site.app

    @app.get("/posts/<slug>")
    @locked("back-issues", published_at=lambda slug: POSTS[slug])
    def post(slug: str) -> str:
        return f"POST:{slug}"

    @app.get("/require/<slug>")
    def with_require(slug: str) -> str:
        require("back-issues", published_at=POSTS[slug])
        return f"POST:{slug}"

    @app.get("/page/<slug>")
    def page(slug: str) -> str:
        return render_template_string(
            "{% patronlock 'back-issues', published_at=when %}BODY{% endpatronlock %}", when=POSTS[slug]
        )

    @app.get("/both")
    def both() -> str:  # one request, two items: one decision each
        old = decision_for("back-issues", published_at=POSTS["old"]).reason
        new = decision_for("back-issues", published_at=POSTS["new"]).reason
        naive = decision_for("back-issues", published_at=POSTS["new"].replace(tzinfo=None)).reason
        return f"{old} {new} {naive}"

    site.linked_patron("gold")
    return site


@pytest.mark.parametrize("route", ["/posts", "/require", "/page"])
def test_a_patron_sees_what_was_published_after_they_joined_and_not_before(site: Site, route: str) -> None:
    new = site.get(f"{route}/new", "gold")
    assert new.status_code == 200
    assert new.get_data(as_text=True) == ("BODY" if route == "/page" else "POST:new")
    old = site.get(f"{route}/old", "gold")
    body = html.unescape(old.get_data(as_text=True))
    assert "POST:old" not in body and "BODY" not in body
    assert 'patronlock-banner--not_patron_at_date' in body
    assert "already patrons of Kopi Studio on November 5, 2025" in body  # the post's date, not the lock's
    if route != "/page":
        assert old.status_code == 403


def test_each_item_gets_its_own_decision_within_a_request(site: Site) -> None:
    assert site.get("/both", "gold").get_data(as_text=True) == "not_patron_at_date allowed allowed"


def test_a_bad_publish_date_fails_loudly_in_code() -> None:
    with pytest.raises(ValueError, match="published_at"):
        locked("back-issues", published_at="the other day")
    assert locked("back-issues", published_at=date(2026, 1, 1))  # a date is midnight UTC


def test_the_explainer_takes_the_items_date(site: Site) -> None:
    with site.app.app_context():
        old = explain("gold", "back-issues", published_at=POSTS["old"])
        new = explain("gold", "back-issues", published_at=POSTS["new"])
        undated = explain("gold", "back-issues")
    assert old.decision.reason == "not_patron_at_date" and new.decision.allowed
    assert any("pledging when this was published" in step for step in old.steps)
    assert "pledging when each item was published" in old.steps[0]
    assert any("not checked, the page gave no publish date" in step for step in undated.steps)


def test_the_template_tag_refuses_another_argument(site: Site) -> None:
    from jinja2 import TemplateSyntaxError

    with site.app.app_context(), pytest.raises(TemplateSyntaxError, match="published_at"):
        site.app.jinja_env.from_string("{% patronlock 'back-issues', when=x %}x{% endpatronlock %}")


def test_a_locked_file_and_its_signed_link_take_the_items_publish_date(site: Site, tmp_path: Any) -> None:
    from flask_patronlock import LockedError, locked_file_url, send_locked_file

    (tmp_path / "issue.pdf").write_bytes(b"%PDF-1.4 back issue")
    app = site.app

    @app.get("/files/<slug>")
    def issue_file(slug: str) -> Any:
        return send_locked_file("back-issues", "issue.pdf", directory=tmp_path, published_at=POSTS[slug])

    @app.get("/links/<slug>")
    def issue_link(slug: str) -> str:
        try:
            return locked_file_url("back-issues", "issue.pdf", published_at=POSTS[slug])
        except LockedError as exc:
            return f"refused: {exc.decision.reason}"

    new = site.get("/files/new", "gold")
    assert new.get_data() == b"%PDF-1.4 back issue"
    new.close()  # the file sent
    old = site.get("/files/old", "gold")
    assert old.status_code == 403 and b"back issue" not in old.get_data()
    assert "patronlock-banner--not_patron_at_date" in old.get_data(as_text=True)
    assert "issue.pdf" in site.get("/links/new", "gold").get_data(as_text=True)
    assert site.get("/links/old", "gold").get_data(as_text=True) == "refused: not_patron_at_date"
