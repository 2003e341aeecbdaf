"""Locks creators make on the settings page (issue 17, item 3): made, renamed, described, switched off and deleted
through flask_patronlock.settings, used by @locked / {% patronlock %} / can_view exactly like locks declared in code,
seen by another worker within the check interval, and failing closed once deleted."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from flask import Flask, render_template_string
from sqlalchemy import select

from flask_patronlock import LockRule, UnknownLockError, can_view, decision_for, locked
from flask_patronlock.locks import LockName
from flask_patronlock.settings import (
    LockError,
    create_lock,
    delete_lock,
    list_locks,
    set_lock_override,
    set_routing,
    update_lock,
)
from flask_patronlock.state import get_state
from tests.helpers.sites import Site, make_site


@pytest.fixture
def site(make_app: Callable[..., Flask]) -> Site:
    site = make_site(make_app, PATRONLOCK_CREATOR_NAME="Kopi")
    site.ext.lock("premium", tier="Gold", description="Gold posts")
    site.linked_patron("silver", entitled_cents=500, entitled_tier_ids=("t5",))
    site.linked_patron("gold")
    site.user("stranger")
    site.user("boss", admin=True)
    return site


def audit(app: Flask) -> list[tuple[str, str | None, dict[str, object]]]:
    e = get_state(app).tables.events
    with get_state(app).store.engine.connect() as conn:
        rows = conn.execute(select(e).where(e.c.kind.like("lock_%")).order_by(e.c.id)).mappings()
        return [(r["kind"], r["user_id"], r["detail"]) for r in rows]


def test_a_made_lock_works_everywhere_a_declared_one_does(site: Site) -> None:
    app = site.app
    app.add_url_rule("/early", "early", locked("early-access")(lambda: "SECRET early"))
    with app.app_context():
        made = create_lock(
            "", title="Early access", description="A week before everyone", rule={"tier_ids": ["Silver"]}, by="kopi"
        )
    assert (made.name, made.title, made.origin) == ("early-access", "Early access", "creator")
    assert site.get("/early", "silver").get_data(as_text=True) == "SECRET early"
    assert site.get("/early", "stranger").status_code == 403
    with app.test_request_context(headers={"X-User": "silver"}):
        assert can_view("early-access") and decision_for("early-access").reason == "allowed"
        html = render_template_string("{% patronlock name %}IN{% endpatronlock %}", name="early-access")
        assert html == "IN"
    with app.test_request_context(headers={"X-User": "stranger"}):
        html = render_template_string("{% patronlock name %}IN{% endpatronlock %}", name="early-access")
        assert "IN" not in html and "patronlock-banner--not_linked" in html
    with app.app_context():
        info = {i.name: i for i in list_locks()}
        assert info["early-access"].origin == "creator" and info["early-access"].title == "Early access"
        assert info["early-access"].effective.tier_ids == ("t5",)
        assert info["premium"].origin == "code" and info["premium"].title == "premium"
    assert audit(app)[0][:2] == ("lock_created", "kopi")


def test_names_are_checked_with_a_message_per_field(site: Site) -> None:
    with site.app.app_context():
        version = get_state().store.settings_version()
        with pytest.raises(LockError) as bad:
            create_lock("Early Access!", title="x" * 101, description="x" * 501)
        fields = [field for field, _ in bad.value.errors]
        assert fields == ["name", "title", "description"]
        assert "lower-case letters, digits and single hyphens" in bad.value.errors[0][1]
        with pytest.raises(LockError, match="already a lock made in code") as clash:
            create_lock("premium", title="Mine")
        assert clash.value.field == "name"
        create_lock("vip", title="VIP")
        with pytest.raises(LockError, match="already a lock called “vip”"):
            create_lock("vip", title="VIP again")
        with pytest.raises(LockError, match="min_cents") as rule:
            create_lock("cheap", title="Cheap", rule={"min_cents": -1})
        assert rule.value.field == "rule"
        with pytest.raises(LockError, match="short name"):
            create_lock("", title="!!!")  # nothing usable to make a name from
        assert get_state().store.settings_version() == version + 1  # only "vip" was stored


def test_rename_describe_switch_off_and_the_name_stays(site: Site) -> None:
    app = site.app
    app.add_url_rule("/vip", "vip", locked("vip")(lambda: "SECRET vip"))
    with app.app_context():
        create_lock("vip", title="VIP", rule={"tier_ids": ["Gold"]}, by="kopi")
        renamed = update_lock("vip", title="Inner circle", description="For Gold patrons", by="kopi")
        assert (renamed.name, renamed.title, renamed.description) == ("vip", "Inner circle", "For Gold patrons")
        with pytest.raises(LockError, match="made in code"):
            update_lock("premium", title="Nope")
        with pytest.raises(LockError, match="at most 100"):
            update_lock("vip", title="x" * 101)
    assert site.get("/vip", "gold").status_code == 200 and site.get("/vip", "silver").status_code == 403
    with app.app_context():
        set_lock_override("vip", LockRule(tier_ids=("Gold",), enabled=False), by="kopi")  # switched off
    assert site.get("/vip", "stranger").get_data(as_text=True) == "SECRET vip"
    assert [kind for kind, _, _ in audit(app)] == ["lock_created", "lock_updated", "lock_override_set"]


def test_deleting_a_lock_content_uses_fails_closed(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    app = site.app
    app.add_url_rule("/vip", "vip", locked("vip")(lambda: "SECRET vip"))
    app.add_url_rule("/typo", "typo", locked("viq")(lambda: "x"))
    with app.app_context():
        create_lock("vip", title="VIP", rule={"enabled": False})  # open to everyone while it exists
        with pytest.raises(LockError, match="made in code"):
            delete_lock("premium")
    assert site.get("/vip").status_code == 200
    with app.app_context():
        delete_lock("vip", by="kopi")
        with pytest.raises(LockError, match="no lock called"):
            delete_lock("vip")
    with caplog.at_level(logging.ERROR, logger="flask_patronlock.locks"):
        for user in (None, "stranger", "gold"):  # an off lock that is deleted does not stay open
            response = site.get("/vip", user)
            assert response.status_code == 403 and "SECRET" not in response.get_data(as_text=True)
            assert "patronlock-banner--lock_unavailable" in response.get_data(as_text=True)
    assert "'vip', which is no lock" in caplog.text
    assert site.get("/vip", "boss").status_code == 200  # admins still see it, to fix it
    with pytest.raises(UnknownLockError):  # a name nobody ever made is a typo in code: an error, as before
        site.get("/typo", "gold")
    with app.test_request_context(headers={"X-User": "gold"}):
        assert decision_for(LockName("never-made")).reason == "lock_unavailable"  # content's value: fails closed
        assert decision_for("").reason == "lock_disabled" and can_view(LockName(""))  # the empty name is public
    with app.app_context():  # made again under its old name: content on it opens under the new rule
        create_lock("vip", title="VIP", rule={"tier_ids": ["Gold"]})
    assert site.get("/vip", "gold").status_code == 200 and site.get("/vip", "silver").status_code == 403


def test_a_lock_the_routing_uses_cannot_be_deleted(site: Site) -> None:
    with site.app.app_context():
        create_lock("members", title="Members")
        set_routing({"site_lock": None, "path_locks": {"/members": "members"}})
        with pytest.raises(LockError, match="the lock of /members"):
            delete_lock("members")
        assert "members" in {i.name for i in list_locks()}


def test_a_made_lock_reaches_another_worker(make_app: Callable[..., Flask]) -> None:
    writer = make_site(make_app)
    reader = make_site(make_app)
    reader.linked_patron("gold")
    reader.app.add_url_rule("/vip", "vip", locked("vip")(lambda: "SECRET vip"))
    with writer.app.app_context():
        create_lock("vip", title="VIP", rule={"tier_ids": ["Gold"]})
    reader.state.settings.invalidate()  # the check interval passed
    assert reader.get("/vip", "gold").status_code == 200
    with writer.app.app_context():
        delete_lock("vip")
    reader.state.settings.invalidate()
    assert reader.get("/vip", "gold").status_code == 403


def test_the_explainer_says_a_deleted_lock_keeps_content_locked(site: Site) -> None:
    from flask_patronlock.explain import explain

    with site.app.app_context():
        create_lock("vip", title="VIP")
        made = explain("gold", "vip")
        assert made.decision.allowed and "a lock made on the settings page" in made.steps[0]
        delete_lock("vip")
        gone = explain("gold", "vip")
    assert gone.decision.reason == "lock_unavailable" and not gone.decision.allowed
    assert "no lock has this name" in gone.steps[0] and "stays locked to everyone but admins" in gone.steps[0]


def test_deleting_a_lock_revokes_its_comps_so_a_new_lock_of_that_name_starts_afresh(site: Site) -> None:
    from flask_patronlock.comps import grant_comp, list_comps

    site.app.add_url_rule("/vip", "vip", locked("vip")(lambda: "SECRET vip"))
    with site.app.app_context():
        create_lock("vip", title="VIP", rule={"tier_ids": ["Gold"]})
        grant_comp(get_state(), member_id="m-silver", lock="vip", by="kopi")
    assert site.get("/vip", "silver").status_code == 200  # the comp opens it
    with site.app.app_context():
        delete_lock("vip", by="kopi")
        create_lock("vip", title="VIP again", rule={"tier_ids": ["Gold"]})
        assert list_comps(get_state()) == []
        ended = list_comps(get_state(), ended=True)
        assert [(c.lock, c.revoked_by, c.revoked_source) for c in ended] == [("vip", "kopi", "admin")]
    assert site.get("/vip", "silver").status_code == 403
    assert [kind for kind, _, _ in audit(site.app)][-3:] == ["lock_created", "lock_deleted", "lock_created"]


def test_the_command_line_makes_lists_renames_and_deletes_locks(site: Site) -> None:
    runner = site.app.test_cli_runner()
    made = runner.invoke(args=["patronlock", "lock", "create", "--title", "Early access", "--tier", "Silver",
                               "--by", "kopi"])
    assert made.exit_code == 0, made.output
    assert "Made the lock early-access (Early access)" in made.output
    listed = runner.invoke(args=["patronlock", "lock", "list"]).output
    assert "early-access (Early access): tier Silver" in listed and "made on the settings page" in listed
    assert "premium: tier Gold" in listed and "made in code" in listed
    renamed = runner.invoke(args=["patronlock", "lock", "rename", "early-access", "--title", "Patrons first"])
    assert renamed.exit_code == 0 and "now called Patrons first" in renamed.output
    bad = runner.invoke(args=["patronlock", "lock", "create", "Bad Name", "--title", "x" * 101])
    assert bad.exit_code == 2 and "lower-case letters" in bad.output and "Also: --title" in bad.output
    code = runner.invoke(args=["patronlock", "lock", "delete", "premium"])
    assert code.exit_code == 2 and "made in code" in code.output
    gone = runner.invoke(args=["patronlock", "lock", "delete", "early-access", "--by", "kopi"])
    assert gone.exit_code == 0 and "stays locked to everyone but admins" in gone.output
    assert [(kind, by) for kind, by, _ in audit(site.app)] == [
        ("lock_created", "kopi"), ("lock_updated", None), ("lock_deleted", "kopi")
    ]
    e = get_state(site.app).tables.events
    with get_state(site.app).store.engine.connect() as conn:
        sources = set(conn.execute(select(e.c.source).where(e.c.kind.like("lock_%"))).scalars())
    assert sources == {"cli"}
