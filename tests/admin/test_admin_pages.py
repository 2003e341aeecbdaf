"""The settings page: every page renders for an admin; every route (enumerated from the URL map, so a new route
cannot escape) answers 403 to a non-admin and refuses a POST without a CSRF token; who counts as an admin."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from werkzeug.routing import Rule

from tests.helpers.admin import ADMIN_PREFIX, AdminSite, make_admin_site

BLUEPRINT = "patronlock_admin"
#: the one route of the blueprint anyone may fetch: its stylesheet (so the 403 page is styled too).
PUBLIC = {f"{BLUEPRINT}.static"}


@pytest.fixture
def site(make_app: Callable[..., Flask]) -> AdminSite:
    site = make_admin_site(make_app, PATRONLOCK_CLIENT_ID="id", PATRONLOCK_CLIENT_SECRET="secret")
    site.apply("m1", full_name="Ada Lovelace", email="ada@example.com")
    site.apply("m2", full_name="Bo", email="bo@example.com", entitled_cents=300, entitled_tier_ids=("t3",))
    return site


def admin_rules(app: Flask) -> list[Rule]:
    rules = [r for r in app.url_map.iter_rules() if r.endpoint.startswith(BLUEPRINT + ".")]
    assert len(rules) > 10, "the blueprint is not registered?"
    return rules


def url_of(rule: Rule) -> str:
    values = {arg: {"name": "premium", "reason": "amount_too_low", "member_id": "m1", "filename": "x"}.get(arg, "1")
              for arg in rule.arguments}
    path = rule.rule
    for arg, value in values.items():
        path = path.replace(f"<{arg}>", value).replace(f"<path:{arg}>", value).replace(f"<int:{arg}>", value)
    return path


def cases(app: Flask) -> Iterator[tuple[str, str]]:
    for rule in admin_rules(app):
        if rule.endpoint in PUBLIC:
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            yield method, url_of(rule)


GET_PAGES = [
    "/setup",
    "/dashboard",
    "/locks",
    "/locks/premium",
    "/locks/premium?as=t5&months=3",
    "/locks/premium?as=anonymous",
    "/locks/premium?as=not_linked",
    "/locks/premium?as=not_a_patron",
    "/locks/supporters?as=t10",
    "/banners",
    "/banners?lock=supporters",
    "/banners/amount_too_low?lock=premium",
    "/banners/drip_not_reached",
    "/policies",
    "/patrons",
    "/patrons?q=ada&status=active&tier=t10",
    "/patrons?status=declined",
    "/patrons/m1",
    "/patrons/m2?lock=supporters",
    "/comps",
    "/comps?member=m1",
    "/comps?user=bob",
    "/addons",
    "/sync",
]


@pytest.mark.parametrize("path", GET_PAGES)
def test_every_page_renders_for_an_admin(site: AdminSite, path: str) -> None:
    response = site.get(ADMIN_PREFIX + path)
    assert response.status_code == 200, response.get_data(as_text=True)[:2000]
    html = response.get_data(as_text=True)
    assert "<nav" in html and "Patron settings" in html
    assert response.headers["Cache-Control"] == "no-store"
    assert "http://" not in html.split("<main", 1)[0].replace("http://localhost", "")  # nothing from outside


def test_every_get_route_of_the_blueprint_is_covered_above(site: AdminSite) -> None:
    # the others are covered in their own tests: test_admin_setup.py, test_admin_sync.py, test_admin_insight.py
    covered = {p.split("?")[0] for p in GET_PAGES} | {"/", "/setup/callback", "/setup/campaign", "/sync/runs/1",
                                                      "/export/patrons.csv", "/export/figures.csv"}
    for method, path in cases(site.app):
        if method == "GET":
            assert path[len(ADMIN_PREFIX):] in covered, f"add {path} to GET_PAGES (or cover it in its own test)"


def test_the_front_door_sends_to_setup_until_it_is_done(site: AdminSite) -> None:
    response = site.get(ADMIN_PREFIX + "/")
    assert response.status_code == 302 and response.headers["Location"].endswith("/setup")


def test_a_non_admin_gets_403_on_every_route(site: AdminSite) -> None:
    seen = 0
    for method, path in cases(site.app):
        response = site.client("bob").open(path, method=method, data={"csrf_token": "x"})
        assert response.status_code == 403, (method, path, response.status_code)
        assert "not an admin" in response.get_data(as_text=True)
        seen += 1
    assert seen > 15


def test_every_post_route_refuses_a_missing_or_wrong_csrf_token(site: AdminSite) -> None:
    posts = [path for method, path in cases(site.app) if method == "POST"]
    assert len(posts) >= 10
    for path in posts:
        missing = site.post(path, {}, csrf=False)
        assert missing.status_code == 400, (path, missing.status_code)
        assert "nothing was changed" in missing.get_data(as_text=True)
        wrong = site.post(path, {"csrf_token": "forged"}, csrf=False)
        assert wrong.status_code == 400, (path, wrong.status_code)
    # and nothing was written: no audit row of any settings change
    with site.state.store.engine.connect() as conn:
        from sqlalchemy import select

        e = site.state.tables.events
        kinds = set(conn.execute(select(e.c.kind)).scalars())
    assert kinds <= {"patron_created"}


def test_the_stylesheet_is_public_and_nothing_else(site: AdminSite) -> None:
    response = site.get(ADMIN_PREFIX + "/static/patronlock/admin.css", None)
    assert response.status_code == 200 and b".pl-main" in response.data
    response.close()
    script = site.get(ADMIN_PREFIX + "/static/patronlock/admin.js", None)
    assert script.status_code == 200
    script.close()


def test_anonymous_visitors_are_sent_to_the_login_page(make_app: Callable[..., Flask]) -> None:
    site = make_admin_site(make_app)
    site.app.login_manager.login_view = "login"  # type: ignore[attr-defined]

    @site.app.get("/login")
    def login() -> str:
        return "log in"

    response = site.get(ADMIN_PREFIX + "/locks", None)
    assert response.status_code == 302
    assert "/login?next=" in response.headers["Location"]


def test_anonymous_visitors_get_403_without_a_login_view(site: AdminSite) -> None:
    response = site.get(ADMIN_PREFIX + "/locks", None)
    assert response.status_code == 403
    assert "sign in" in response.get_data(as_text=True)


def test_without_an_admin_callback_nobody_gets_in_and_the_page_says_how(make_app: Callable[..., Flask]) -> None:
    site = make_admin_site(make_app, admin_loader=False)
    for method, path in cases(site.app):
        response = site.client("admin").open(path, method=method)
        assert response.status_code == 403
    html = site.get(ADMIN_PREFIX + "/setup").get_data(as_text=True)
    assert "@patronlock.admin_loader" in html and "def is_admin(user)" in html


def test_admin_pages_ignore_the_site_wide_lock(make_app: Callable[..., Flask]) -> None:
    site = make_admin_site(make_app, PATRONLOCK_SITE_LOCK="premium")
    assert site.get("/", "bob").status_code == 403  # the site is locked for bob ...
    assert site.get(ADMIN_PREFIX + "/locks").status_code == 200  # ... the admin passes, and the page works
    response = site.get(ADMIN_PREFIX + "/locks", "bob")
    assert response.status_code == 403 and "not an admin" in response.get_data(as_text=True)


def test_the_prefix_is_configurable_and_none_leaves_it_out(make_app: Callable[..., Flask]) -> None:
    moved = make_admin_site(make_app, PATRONLOCK_ADMIN_URL_PREFIX="/backstage")
    assert moved.get("/backstage/policies").status_code == 200
    assert moved.get(ADMIN_PREFIX + "/policies").status_code == 404


def test_no_admin_blueprint_when_the_prefix_is_none(make_app: Callable[..., Flask]) -> None:
    app = make_app(PATRONLOCK_ADMIN_URL_PREFIX=None)
    assert BLUEPRINT not in app.blueprints


def test_pages_escape_what_patreon_sends(site: AdminSite) -> None:
    site.apply("m3", full_name="<script>alert(1)</script>", email="x@example.com")
    for path in ("/patrons", "/patrons/m3"):
        html = site.get(ADMIN_PREFIX + path).get_data(as_text=True)
        assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html


def test_pages_work_without_javascript(site: AdminSite) -> None:
    """Only the banner editor loads a script (the live preview); every other page has none, and every form posts."""
    for path in GET_PAGES:
        html = site.get(ADMIN_PREFIX + path).get_data(as_text=True)
        if path.startswith("/banners/"):
            assert html.count("<script") == 1 and "Preview without saving" in html
        else:
            assert "<script" not in html, path
