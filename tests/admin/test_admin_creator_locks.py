"""The settings page's locks creators make (issue 17, item 3): make one, see errors next to their fields, rename and
describe it, set its rule, switch it off, and delete it, told plainly what still uses it; locks made in code are
marked so and can't be renamed or deleted here. The site's content picks locks with LockField and keeps them in a
LockedContentMixin column."""

from __future__ import annotations

import re
from collections.abc import Callable
from html import unescape
from typing import Any

import pytest
from flask import Flask, render_template_string
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import FlaskForm
from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from flask_patronlock import locked
from flask_patronlock.content import LockedContentMixin, LockField
from flask_patronlock.settings import get_lock_override, list_locks
from flask_patronlock.state import get_state
from tests.helpers.admin import ADMIN_PREFIX, AdminSite, make_admin_site

LOCKS = ADMIN_PREFIX + "/locks"


@pytest.fixture
def site(make_app: Callable[..., Flask]) -> AdminSite:
    site = make_admin_site(make_app)
    db: SQLAlchemy = get_state(site.app).db

    class Article(LockedContentMixin, db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = f"article_{id(site)}"
        locked_content_label = "article"
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        title: Mapped[str] = mapped_column(String(100))

    with site.app.app_context():
        db.create_all()
    site.app.config["ARTICLE"] = Article

    @site.app.get("/articles/<int:article_id>")
    @locked(lock_from=lambda article_id: db.get_or_404(Article, article_id).lock)
    def article(article_id: int) -> str:
        return f"ARTICLE {db.get_or_404(Article, article_id).title}"

    @site.app.get("/teaser/<int:article_id>")
    def teaser(article_id: int) -> str:
        found = db.get_or_404(Article, article_id)
        return render_template_string("{% patronlock a.lock %}FULL {{ a.title }}{% endpatronlock %}", a=found)

    site.apply("m-silver", full_name="Sil", entitled_cents=500, entitled_tier_ids=("t5",), user_id="p-sil")
    site.link("bob", "p-sil")
    return site


def page(response: Any) -> str:
    """The response's text, entities decoded and white space folded (templates wrap their sentences)."""
    return " ".join(unescape(str(response.get_data(as_text=True))).split())


def add_article(site: AdminSite, title: str, lock: str) -> int:
    db = get_state(site.app).db
    model = site.app.config["ARTICLE"]
    with site.app.app_context():
        row = model(title=title, lock=lock)
        db.session.add(row)
        db.session.commit()
        return int(row.id)


def test_locks_made_in_code_are_marked_and_cannot_be_deleted_here(site: AdminSite) -> None:
    html = page(site.get(LOCKS))
    assert html.count('data-origin="code"') == 2 and "made in code" in html and "Make a lock" in html
    lock_page = page(site.get(LOCKS + "/premium"))
    assert "made in code" in lock_page and "can't be deleted here" in lock_page
    assert "Delete the lock" not in lock_page and "Name and description" not in lock_page
    response = site.post(LOCKS + "/premium/delete")
    assert response.status_code == 302
    assert "made in code" in page(site.get(LOCKS + "/premium"))  # the flash says why
    with site.app.app_context():
        assert "premium" in {info.name for info in list_locks()}
    assert site.post(LOCKS + "/premium/details", {"title": "Mine"}).status_code == 422


def test_a_creator_makes_a_lock_sets_its_rule_and_a_patron_sees_the_change(site: AdminSite) -> None:
    article = add_article(site, "Behind the scenes", "")
    assert site.get(f"/articles/{article}", None).status_code == 200  # public
    response = site.post(LOCKS, {"title": "Early access", "name": "", "description": "A week before everyone"})
    assert response.status_code == 302 and response.headers["Location"].endswith("/locks/early-access")
    html = page(site.get(LOCKS + "/early-access"))
    assert "Made the lock “Early access”" in html and "made here" in html and "Any patron may pass it" in html
    # the rule: Gold; Bob (Silver) below it
    rule = {"enabled": "y", "tiers": ["t10"], "min_amount": "", "lifetime_amount": "", "patron_since_before": "",
            "drip_months": "", "combine": "all", "confirm": "1"}
    assert site.post(LOCKS + "/early-access", rule).status_code == 302
    with site.app.app_context():
        db = get_state().db
        row = db.session.get(site.app.config["ARTICLE"], article)
        row.lock = "early-access"  # the site's editor picks it for the article
        db.session.commit()
    assert site.get(f"/articles/{article}", "bob").status_code == 403
    assert "FULL" not in page(site.get(f"/teaser/{article}", "bob"))
    assert site.post(LOCKS + "/early-access", {**rule, "tiers": ["t5"]}).status_code == 302
    assert page(site.get(f"/articles/{article}", "bob")) == "ARTICLE Behind the scenes"
    assert "FULL Behind the scenes" in page(site.get(f"/teaser/{article}", "bob"))
    listed = page(site.get(LOCKS))
    assert "Early access" in listed and 'data-origin="creator"' in listed and "A week before everyone" in listed


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"title": "Mine", "name": "Early Access"}, "name", "lower-case letters, digits and single hyphens"),
        ({"title": "Mine", "name": "premium"}, "name", "already a lock made in code"),
        ({"title": "Mine", "name": "routing"}, "name", "taken by this page's own addresses"),
        ({"title": "x" * 101, "name": "ok"}, "title", "at most 100 characters"),
        ({"title": "", "name": ""}, "name", "Give the lock a short name"),
        ({"title": "Fine", "name": "fine", "description": "y" * 501}, "description", "at most 500 characters"),
    ],
)
def test_bad_names_are_shown_next_to_their_field_and_kept(
    site: AdminSite, data: dict[str, str], field: str, message: str
) -> None:
    response = site.post(LOCKS, data)
    assert response.status_code == 422
    html = page(response)
    errors = html.split(f'id="{field}-errors"', 1)
    assert len(errors) == 2 and message in errors[1].split("</ul>", 1)[0]
    for value in data.values():
        if value and len(value) < 100:
            assert f'value="{value}"' in html  # what was typed is kept
    with site.app.app_context():
        assert {info.name for info in list_locks()} == {"premium", "supporters"}


def test_a_duplicate_of_a_made_lock_is_refused(site: AdminSite) -> None:
    assert site.post(LOCKS, {"title": "VIP", "name": "vip"}).status_code == 302
    response = site.post(LOCKS, {"title": "VIP 2", "name": "vip"})
    assert response.status_code == 422 and "There is already a lock called “vip”" in page(response)


def test_rename_describe_and_switch_off(site: AdminSite) -> None:
    site.post(LOCKS, {"title": "VIP", "name": "vip"})
    article = add_article(site, "Secret", "vip")
    site.post(LOCKS + "/vip", {"enabled": "y", "tiers": ["t10"], "combine": "all", "confirm": "1"})
    assert site.get(f"/articles/{article}", "bob").status_code == 403
    response = site.post(LOCKS + "/vip/details", {"title": "Inner circle", "description": "Gold only"})
    assert response.status_code == 302
    html = page(site.get(LOCKS + "/vip"))
    assert "Lock “Inner circle”" in html and "Gold only" in html and "the short name vip stays" in html
    assert site.get(f"/articles/{article}", "bob").status_code == 403  # renaming changed nothing for the content
    bad = site.post(LOCKS + "/vip/details", {"title": "", "description": ""})
    assert bad.status_code == 422 and "Give the lock a name" in page(bad)
    assert site.post(LOCKS + "/vip/toggle", {"enabled": "0", "confirm": "1"}).status_code == 302
    assert page(site.get(f"/articles/{article}", "bob")) == "ARTICLE Secret"  # off: everyone may see it
    with site.app.app_context():
        override = get_lock_override("vip")
    assert override is not None and override.rule.enabled is False and override.rule.tier_ids == ("t10",)


def test_deleting_says_what_still_uses_the_lock_and_that_content_stays_locked(site: AdminSite) -> None:
    site.post(LOCKS, {"title": "VIP", "name": "vip"})
    site.post(LOCKS + "/vip/toggle", {"enabled": "0", "confirm": "1"})  # off: the articles are open while it exists
    first, _second = add_article(site, "One", "vip"), add_article(site, "Two", "vip")
    assert site.get(f"/articles/{first}", None).status_code == 200
    html = page(site.get(LOCKS + "/vip"))
    assert "2 articles are still on this lock" in html and "nobody but admins can see them" in html
    assert "1 patron who can see them now would lose access." in html  # Sil, linked as bob: the lock is off
    assert re.search(r"<ul data-lost>\s*<li>Sil</li>\s*</ul>", html)
    response = site.post(LOCKS + "/vip/delete")
    assert response.status_code == 302 and response.headers["Location"].endswith("/locks")
    listed = page(site.get(LOCKS))
    assert "Deleted the lock “VIP”. 2 articles are still on it" in listed
    assert 'data-lock="vip"' not in listed
    assert site.get(LOCKS + "/vip").status_code == 404
    for user in (None, "bob"):  # fail closed: never open
        assert site.get(f"/articles/{first}", user).status_code == 403
        assert "FULL" not in page(site.get(f"/teaser/{first}", user))
    assert site.get(f"/articles/{first}", "admin").status_code == 200  # admins still see it, to fix it


def test_a_lock_the_site_routing_uses_is_not_deleted(site: AdminSite) -> None:
    site.post(LOCKS, {"title": "Members", "name": "members"})
    form = {"site_lock": "", "paths-0-prefix": "/members", "paths-0-lock": "members"}
    assert site.post(LOCKS + "/routing", form).status_code == 302
    html = page(site.get(LOCKS + "/members"))
    assert "This lock is the lock of /members" in html and "Delete the lock" not in html
    site.post(LOCKS + "/members/delete")
    assert "Choose another lock there first" in page(site.get(LOCKS + "/members"))


def test_the_lock_field_offers_public_and_every_lock_and_keeps_a_deleted_one(site: AdminSite) -> None:
    class ArticleForm(FlaskForm):
        lock = LockField()

    site.post(LOCKS, {"title": "VIP", "name": "vip"})
    with site.app.test_request_context(method="POST", data={"lock": "vip"}):
        form = ArticleForm(meta={"csrf": False})
        values = [c.value for c in form.lock._iter_choices_normalized()]
        labels = [c.label for c in form.lock._iter_choices_normalized()]
        assert values == ["", "premium", "supporters", "vip"] and labels[0] == "Public: everyone"
        assert labels[3].startswith("VIP: ")
        assert form.validate() and form.lock.data == "vip"
    with site.app.test_request_context(method="POST", data={"lock": "nope"}):
        assert not ArticleForm(meta={"csrf": False}).validate()
    site.post(LOCKS + "/vip/delete")
    with site.app.test_request_context(method="POST", data={"lock": "vip"}):
        form = ArticleForm(meta={"csrf": False})
        assert not form.validate()  # a deleted lock can't be newly chosen...
    with site.app.test_request_context():
        form = ArticleForm(meta={"csrf": False}, data={"lock": "vip"})
        labels = [c.label for c in form.lock._iter_choices_normalized()]
        assert "vip (deleted: nobody but admins may see it)" in labels  # ...but a row on it keeps showing it
