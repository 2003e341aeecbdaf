"""The example add-ons in ``example_site/addons/``, installed the way pip installs them: their metadata is built from
their own ``pyproject.toml`` by setuptools (``egg_info``, what a build backend does first) and put on ``sys.path``
with the package, so ``init_app`` finds them through ``importlib.metadata`` entry points like any installed add-on.
(A real ``pip install`` needs setuptools and wheel wheels to build with; this keeps the tests offline and fast.)"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from flask import Flask
from lockhelpers import NOW, Site, make_site
from sqlalchemy import func, select

from flask_patronlock import locked
from flask_patronlock.settings import list_addons, set_addon_enabled
from flask_patronlock.state import get_state

ADDONS = Path(__file__).resolve().parent.parent / "example_site" / "addons"
DISTRIBUTIONS = {"welcome_outbox": "patronlock-welcome-outbox", "supporters_wall": "patronlock-supporters-wall"}


@pytest.fixture(scope="session")
def built_metadata(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each add-on's metadata, built by setuptools from its pyproject.toml into a directory of its own."""
    built = {}
    for name in DISTRIBUTIONS:
        target = tmp_path_factory.mktemp(f"{name}-metadata")
        subprocess.run(
            [sys.executable, "-c", "from setuptools import setup; setup()", "-q", "egg_info", "--egg-base",
             str(target)],
            cwd=ADDONS / name, check=True, capture_output=True,
        )
        built[name] = target
    return built


@pytest.fixture
def install(built_metadata: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """``install("welcome_outbox", ...)``: the add-ons are installed (on sys.path) for this test."""

    def installer(*names: str) -> None:
        for name in names:
            monkeypatch.syspath_prepend(str(ADDONS / name))
            monkeypatch.syspath_prepend(str(built_metadata[name]))

    return installer


def test_each_pyproject_declares_its_entry_point_and_files(built_metadata: dict[str, Path]) -> None:
    for name, dist in DISTRIBUTIONS.items():
        (info,) = built_metadata[name].glob("*.egg-info")
        entry_points = (info / "entry_points.txt").read_text()
        assert "[flask_patronlock.addons]" in entry_points
        assert re.search(rf"^{name} = patronlock_{name}:\w+$", entry_points, flags=re.M)
        assert f"Name: {dist}\n" in (info / "PKG-INFO").read_text()
    sources = (next(built_metadata["supporters_wall"].glob("*.egg-info")) / "SOURCES.txt").read_text()
    assert "patronlock_supporters_wall/templates/patronlock_supporters_wall/wall.html" in sources


def test_installed_addons_are_found_and_listed(install: Callable[..., None], make_app: Callable[..., Flask]) -> None:
    install("welcome_outbox", "supporters_wall")
    app = make_app()
    with app.app_context():
        found = {info.name: info for info in list_addons()}
    assert set(found) == {"welcome_outbox", "supporters_wall"}
    for name, dist in DISTRIBUTIONS.items():
        info = found[name]
        assert info.loaded and info.enabled and info.version == "1.0.0" and info.description
        assert info.origin.endswith(f"({dist} 1.0.0)")


# -- the welcome outbox ------------------------------------------------------------------------------------------------


@pytest.fixture
def outbox_site(install: Callable[..., None], make_app: Callable[..., Flask]) -> Site:
    install("welcome_outbox")
    site = make_site(make_app, PATRONLOCK_CREATOR_NAME="Kopi's Studio", PATRONLOCK_SETTINGS_CHECK_SECONDS=0)
    site.link("u1", "p-u1")
    return site


def _pending(site: Site) -> list[Any]:
    from patronlock_welcome_outbox import pending

    return pending(site.app)


def test_a_new_patron_gets_one_welcome(outbox_site: Site) -> None:
    site = outbox_site
    site.patron("m-u1", "p-u1", full_name="Ann Lee", pledge_start=NOW - timedelta(days=2))
    (message,) = _pending(site)
    assert (message.member_id, message.local_user_id, message.email) == ("m-u1", "u1", "m-u1@example.com")
    assert message.subject == "Welcome, and thank you!"
    assert message.body.startswith("Hi Ann,") and "of Kopi's Studio at Gold" in message.body
    # later news about the same pledge is no new welcome
    site.patron("m-u1", "p-u1", pledge_start=NOW - timedelta(days=2), observed_at=NOW + timedelta(days=1),
                last_charge_date=NOW + timedelta(days=1))
    assert len(_pending(site)) == 1
    # an existing patron seen for the first time (the first sync after installing) is not welcomed
    site.patron("m-old", "p-old", pledge_start=NOW - timedelta(days=400))
    assert len(_pending(site)) == 1


def test_a_patron_who_comes_back_is_welcomed_again(outbox_site: Site) -> None:
    site = outbox_site
    site.patron("m-u1", "p-u1", pledge_start=NOW - timedelta(days=2))
    site.patron("m-u1", "p-u1", observed_at=NOW + timedelta(days=40), patron_status="former_patron",
                pledge_start=NOW - timedelta(days=2), entitled_cents=0, entitled_tier_ids=())
    site.patron("m-u1", "p-u1", observed_at=NOW + timedelta(days=80), pledge_start=NOW + timedelta(days=80),
                last_charge_date=NOW + timedelta(days=80), entitled_cents=500, entitled_tier_ids=("t5",))
    messages = _pending(site)
    assert len(messages) == 2 and "at Silver" in messages[1].body


def test_mark_sent_and_the_cli(outbox_site: Site) -> None:
    from patronlock_welcome_outbox import mark_sent

    site = outbox_site
    site.patron("m-u1", "p-u1", pledge_start=NOW - timedelta(days=2))
    output = site.app.test_cli_runner().invoke(args=["welcome-outbox", "pending"]).output
    assert "m-u1@example.com\tWelcome, and thank you!" in output and "1 pending" in output
    (message,) = _pending(site)
    assert mark_sent([message.id], site.app) == 1
    assert mark_sent([message.id], site.app) == 0
    assert _pending(site) == []


def test_a_disabled_outbox_writes_nothing(outbox_site: Site) -> None:
    site = outbox_site
    with site.app.app_context():
        set_addon_enabled("welcome_outbox", False, by="creator")
    site.patron("m-u1", "p-u1", pledge_start=NOW - timedelta(days=2))
    assert _pending(site) == []


# -- the supporters wall -----------------------------------------------------------------------------------------------


@pytest.fixture
def wall_site(install: Callable[..., None], make_app: Callable[..., Flask]) -> Site:
    install("supporters_wall")
    site = make_site(make_app, PATRONLOCK_SETTINGS_CHECK_SECONDS=0)
    site.ext.lock("gold", tier="Gold")
    site.app.add_url_rule("/gold", "gold", locked("gold")(lambda: "SECRET"))
    site.linked_patron("gold1", full_name="Ann Lee")
    site.linked_patron("gold2")
    site.linked_patron("silver", entitled_cents=500, entitled_tier_ids=("t5",))
    site.linked_patron("former", patron_status="former_patron", last_charge_date=NOW - timedelta(days=90),
                       next_charge_date=None, entitled_cents=0, entitled_tier_ids=())
    site.link("nobody", "p-nobody")
    return site


def opt_in(site: Site, user: str, name: str, listed: str = "1") -> Any:
    client = site.app.test_client()
    page = client.get("/supporters/", headers={"X-User": user})
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    return client.post(
        "/supporters/me",
        data={"csrf_token": token.group(1), "display_name": name, "listed": listed},
        headers={"X-User": user},
    )


def wall(site: Site, user: str | None = None) -> str:
    response = site.get("/supporters/", user=user)
    assert response.status_code == 200
    return str(response.text)


def test_the_wall_lists_entitled_patrons_who_opted_in_by_tier(wall_site: Site) -> None:
    site = wall_site
    assert "Nobody is listed yet." in wall(site)
    for user, name in (("gold1", "Ann"), ("gold2", "Zed <b>"), ("silver", "Sam"), ("former", "Fay")):
        assert opt_in(site, user, name).status_code == 302
    page = wall(site)
    gold, silver = page.index("<h2>Gold</h2>"), page.index("<h2>Silver</h2>")
    assert gold < page.index("<li>Ann</li>") < page.index("<li>Zed &lt;b&gt;</li>") < silver
    assert silver < page.index("<li>Sam</li>")
    assert "Fay" not in page  # opted in, but no longer a patron
    assert "<form" not in page  # anonymous visitors get no form


def test_opting_in_shows_the_form_suggests_a_name_and_opts_out(wall_site: Site) -> None:
    site = wall_site
    page = site.get("/supporters/", user="gold1")
    assert page.headers["Cache-Control"] == "private"
    assert 'name="display_name" value="Ann"' in page.text  # the first name, suggested
    assert opt_in(site, "gold1", "  Ann   L. ").status_code == 302
    assert "<li>Ann L.</li>" in wall(site)
    assert "You are listed as <strong>Ann L.</strong>" in wall(site, "gold1")
    opt_in(site, "gold1", "Annie")
    assert "<li>Annie</li>" in wall(site) and "Ann L." not in wall(site)
    opt_in(site, "gold1", "", listed="0")
    assert "Annie" not in wall(site)
    opt_in(site, "gold1", "x" * 61)
    assert "Nobody is listed yet." in wall(site)


def test_opting_in_needs_a_user_and_the_form_token(wall_site: Site) -> None:
    client = wall_site.app.test_client()
    assert client.post("/supporters/me", data={"listed": "1", "display_name": "Eve"}).status_code == 403
    forged = client.post(
        "/supporters/me", data={"listed": "1", "display_name": "Eve", "csrf_token": "guess"},
        headers={"X-User": "gold1"},
    )
    assert forged.status_code == 400
    with wall_site.state.store.engine.connect() as conn:
        from patronlock_supporters_wall import entries_table

        assert conn.execute(select(func.count()).select_from(entries_table(wall_site.state.db.metadata))).scalar() == 0


def test_banners_inviting_a_pledge_link_to_the_wall(wall_site: Site) -> None:
    site = wall_site
    link = '<a href="/supporters/">the supporters wall</a>'
    assert link in site.get("/gold", user="silver").text  # amount_too_low
    assert link in site.get("/gold", user="nobody").text  # not_a_patron
    assert link not in site.get("/gold").text  # anonymous: log in first
    with site.app.app_context():
        set_addon_enabled("supporters_wall", False)
    assert link not in site.get("/gold", user="silver").text
    assert site.get("/supporters/").status_code == 404


def test_the_example_site_shows_the_wall_when_installed(install: Callable[..., None], tmp_path: Path) -> None:
    install("supporters_wall", "welcome_outbox")
    from example_site import create_app
    from example_site.app import db

    # a client id: no sandbox mounted (the site's tier read fails fast on the missing creator token, and says so)
    # (and, as a site with credentials must, its own secrets)
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'site.db'}", "PATRONLOCK_STRICT_SIGNALS": True,
                      "PATRONLOCK_CLIENT_ID": "offline", "SECRET_KEY": "k" * 64,
                      "PATRONLOCK_TOKEN_KEYS": [Fernet.generate_key().decode()]})
    try:
        with app.app_context():
            assert {a.name for a in list_addons()} == {"supporters_wall", "welcome_outbox"}
            assert {"supporters_wall_entries", "welcome_outbox_messages"} <= set(get_state().db.metadata.tables)
        client = app.test_client()
        wall_page = client.get("/supporters/")
        assert wall_page.status_code == 200 and "Kopi's Studio" in wall_page.text  # in the site's own layout
        assert '<a href="/supporters/">Supporters</a>' in client.get("/posts/welcome").text
    finally:
        with app.app_context():
            db.engine.dispose()


def test_a_pledge_on_the_sandbox_is_welcomed(
    install: Callable[..., None], make_app: Callable[..., Flask], patreon_sandbox: Any
) -> None:
    """What docs/addons.rst shows: an add-on tested against the offline Patreon."""
    install("welcome_outbox")
    app = make_app(**patreon_sandbox.config)
    member = patreon_sandbox.add_patron("ann@example.com", tier="Gold", full_name="Ann Lee")

    state = get_state(app)
    patreon = state.creator_client()
    campaign = patreon.campaign(state.campaign_id())
    state.store.replace_tiers(campaign.id, campaign.tiers)  # what a sync does first
    state.store.apply(patreon.member(member.id), source="webhook", observed_at=patreon_sandbox.now)

    from patronlock_welcome_outbox import pending

    (message,) = pending(app)
    assert message.email == "ann@example.com" and "at Gold" in message.body
