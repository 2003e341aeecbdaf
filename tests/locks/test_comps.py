"""Comps as a site meets them: a comped user sees the locked page (no query added to a page view), an ended comp is
denied before the scheduler revokes it, every worker follows a grant and a revoke, the CLI, the audit log, the
explainer, the scheduler's expiry, and entitlement tokens that never outlive a comp."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from flask_patronlock import locked
from flask_patronlock.comps import (
    CompError,
    comp_sentence,
    comps_about,
    expire_comps,
    get_comp,
    grant_comp,
    list_comps,
    revoke_comp,
)
from flask_patronlock.entitlements import issue_entitlement_token
from flask_patronlock.explain import explain
from tests.helpers.constants import NOW
from tests.helpers.sites import Site, count_queries, make_site

JAN_4 = date(2027, 1, 4)


def _site(make_app: Callable[..., Flask], *, worker_of: Site | None = None) -> Site:
    """The site; ``worker_of``: another worker (app) of that site, on its database."""
    site = make_site(make_app, PATRONLOCK_SYNC_INTERVAL=0)
    site.ext.lock("masterclass", tier="Gold", description="The masterclass videos")
    site.ext.lock("archive", tier="Platinum")

    @site.app.route("/masterclass")
    @locked("masterclass")
    def masterclass() -> str:
        return "the masterclass"

    @site.app.route("/archive")
    @locked("archive")
    def archive() -> str:
        return "the archive"

    site.user("alex", name="Alex")
    if worker_of is not None:
        site.users.update(worker_of.users)
        return site
    site.linked_patron("silver", entitled_cents=500, entitled_tier_ids=("t5",))
    site.link("follower", "p-follower")
    return site


@pytest.fixture
def site(make_app: Callable[..., Flask]) -> Site:
    return _site(make_app)


def _grant(site: Site, **kwargs: Any) -> Any:
    with site.app.app_context():
        return grant_comp(site.state, **kwargs)


def _events(site: Site, kind: str) -> list[dict[str, Any]]:
    e = site.state.tables.events
    with site.state.store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(e).where(e.c.kind == kind).order_by(e.c.id)).mappings()]


# -- page views ----------------------------------------------------------------------------------------------------


def test_a_comped_user_sees_the_locked_page(site: Site) -> None:
    assert site.get("/masterclass", "alex").status_code == 403  # signed in, no Patreon: the connect banner
    record = _grant(site, user_id="alex", lock="masterclass", note="press copy", expires_at=JAN_4, by="admin")
    response = site.get("/masterclass", "alex")
    assert (response.status_code, response.get_data(as_text=True)) == (200, "the masterclass")
    assert site.get("/archive", "alex").status_code == 403  # a comp opens its own lock only
    assert site.get("/masterclass", "silver").status_code == 403  # and is the comped user's only
    assert site.get("/masterclass").status_code == 403
    assert record.expires_at is not None and record.expires_at.date() == JAN_4


def test_a_comp_by_member_by_patreon_user_and_by_tier(site: Site) -> None:
    site.linked_patron("former", patron_status="former_patron", last_charge_status="Deleted",
                       last_charge_date=NOW - timedelta(days=90), entitled_cents=0, entitled_tier_ids=())
    assert site.get("/masterclass", "silver").status_code == 403
    _grant(site, member_id="m-silver", tier="Gold")  # Silver counts as Gold: Gold's lock opens, Platinum's not
    assert site.get("/masterclass", "silver").status_code == 200
    assert site.get("/archive", "silver").status_code == 403
    _grant(site, patreon_user_id="p-former", tier="t25")  # by Patreon user, a tier by id: Platinum opens both
    assert site.get("/masterclass", "former").status_code == 200
    assert site.get("/archive", "former").status_code == 200


def test_an_ended_comp_is_denied_before_the_scheduler_revokes_it(site: Site) -> None:
    _grant(site, user_id="alex", lock="masterclass", expires_at=NOW + timedelta(hours=1))
    assert site.get("/masterclass", "alex").status_code == 200
    site.state.store.clock = lambda: NOW + timedelta(hours=1)  # the end: nothing revoked it yet
    with site.app.app_context():
        assert [r.revoked_at for r in list_comps(site.state)] == [None]
    assert site.get("/masterclass", "alex").status_code == 403


def test_a_comp_adds_no_query_to_a_page_view(site: Site) -> None:
    _grant(site, member_id="m-silver", lock="masterclass")
    assert site.get("/masterclass", "silver").status_code == 200  # the viewer read and cached
    with count_queries(site.app) as queries:
        for _ in range(3):
            assert site.get("/masterclass", "silver").status_code == 200
    assert queries == []


def test_every_worker_follows_a_grant_and_a_revoke(make_app: Callable[..., Flask]) -> None:
    checks = {"now": 0.0}
    here = _site(make_app)
    other = _site(make_app, worker_of=here)  # a second worker on the same database ...
    # ... whose settings cache runs on a clock of the test's
    other.state.settings.clock = lambda: checks["now"]
    assert other.get("/masterclass", "alex").status_code == 403
    record = _grant(here, user_id="alex", lock="masterclass")
    assert here.get("/masterclass", "alex").status_code == 200  # the worker that wrote: at once
    assert other.get("/masterclass", "alex").status_code == 403  # another: not before its next settings check ...
    checks["now"] += other.app.config["PATRONLOCK_SETTINGS_CHECK_SECONDS"]
    assert other.get("/masterclass", "alex").status_code == 200  # ... and from then on
    with here.app.app_context():
        revoke_comp(here.state, record.id, by="admin")
    assert here.get("/masterclass", "alex").status_code == 403
    checks["now"] += other.app.config["PATRONLOCK_SETTINGS_CHECK_SECONDS"]
    assert other.get("/masterclass", "alex").status_code == 403


# -- granting: plain errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field", "words"),
    [
        ({"lock": "masterclass"}, "who", "Say who the comp is for"),
        ({"user_id": "alex", "member_id": "m-silver", "lock": "masterclass"}, "who", "Say who"),
        ({"user_id": "nobody", "lock": "masterclass"}, "user", "This site has no account 'nobody'"),
        ({"member_id": "m-nobody", "lock": "masterclass"}, "member", "No Patreon member m-nobody"),
        ({"patreon_user_id": "p-nobody", "lock": "masterclass"}, "patreon_user", "No Patreon user p-nobody"),
        ({"user_id": "alex"}, "access", "Choose what the comp opens"),
        ({"user_id": "alex", "lock": "masterclass", "tier": "Gold"}, "access", "Choose what"),
        ({"user_id": "alex", "lock": "vault"}, "lock", "This site has no lock called 'vault' (the locks: archive"),
        ({"user_id": "alex", "tier": "Diamond"}, "tier", "no tier called 'Diamond' (the tiers are Silver, Gold"),
        ({"user_id": "alex", "lock": "masterclass", "note": "x" * 501}, "note", "Keep the note to 500 characters"),
        ({"user_id": "alex", "lock": "masterclass", "expires_at": NOW.date()}, "expires_at", "must be in the future"),
    ],
)
def test_a_bad_grant_says_what_is_wrong_and_writes_nothing(
    site: Site, kwargs: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(CompError, match=re.escape(words)) as raised:
        _grant(site, **kwargs)
    assert raised.value.field == field
    with site.app.app_context():
        assert list_comps(site.state) == []
    assert _events(site, "comp_granted") == []


def test_a_bad_grant_names_every_problem(site: Site) -> None:
    with pytest.raises(CompError) as raised:
        _grant(site, user_id="nobody", tier="Diamond", expires_at=NOW.date())
    assert [field for field, _ in raised.value.errors] == ["user", "tier", "expires_at"]


# -- the audit log and the scheduler --------------------------------------------------------------------------------


def test_grant_revoke_and_expiry_are_audited_with_their_source(site: Site) -> None:
    kept = _grant(site, user_id="alex", lock="masterclass", note="press copy", by="7")
    short = _grant(site, member_id="m-silver", tier="Gold", expires_at=NOW + timedelta(days=30), by="7")
    with site.app.app_context():
        revoke_comp(site.state, kept.id, by="cli-user", source="cli")
        with pytest.raises(CompError, match="already ended"):
            revoke_comp(site.state, kept.id)
        with pytest.raises(LookupError):
            revoke_comp(site.state, 999)
    granted = _events(site, "comp_granted")
    assert [(e["source"], e["user_id"], e["member_id"], e["detail"]["by"]) for e in granted] == [
        ("admin", "alex", None, "7"), ("admin", None, "m-silver", "7")
    ]
    assert granted[0]["detail"]["note"] == "press copy" and granted[1]["detail"]["tier"] == "t10"
    revoked = _events(site, "comp_revoked")
    assert [(e["source"], e["user_id"], e["detail"]["comp"], e["detail"]["by"]) for e in revoked] == [
        ("cli", "alex", kept.id, "cli-user")
    ]
    # the scheduler: nothing is due yet, then the Gold comp reaches its end
    site.state.jobs.tick()
    assert _events(site, "comp_expired") == []
    site.state.store.clock = lambda: NOW + timedelta(days=30)
    site.state.jobs.tick()
    site.state.jobs.tick()  # a second tick (or another worker's) expires nothing twice
    expired = _events(site, "comp_expired")
    assert [(e["source"], e["member_id"], e["detail"]["comp"]) for e in expired] == [
        ("scheduler", "m-silver", short.id)
    ]
    with site.app.app_context():
        record = get_comp(site.state, short.id)
        assert record is not None and record.expired and record.revoked_at == NOW + timedelta(days=30)
        assert list_comps(site.state) == []
        assert {r.id for r in list_comps(site.state, ended=True)} == {kept.id, short.id}
        assert expire_comps(site.state) == []


def test_two_workers_expire_a_comp_once(make_app: Callable[..., Flask]) -> None:
    here = _site(make_app)
    other = _site(make_app, worker_of=here)
    _grant(here, user_id="alex", lock="masterclass", expires_at=NOW + timedelta(days=1))
    for worker in (here, other):
        worker.state.store.clock = lambda: NOW + timedelta(days=2)
        worker.state.settings.invalidate()
    with here.app.app_context():
        first = expire_comps(here.state)
    with other.app.app_context():
        second = expire_comps(other.state)
    assert (len(first), second) == (1, [])
    assert len(_events(here, "comp_expired")) == 1


# -- the explainer, the patron's comps, tokens ------------------------------------------------------------------------


def test_the_explainer_says_who_has_a_comp_in_plain_words(site: Site) -> None:
    _grant(site, user_id="alex", lock="masterclass", note="press copy", expires_at=JAN_4)
    with site.app.test_request_context():
        result = explain(site.users["alex"], "masterclass")
        assert (result.decision.allowed, result.decision.reason) == (True, "comp")
        assert "Comp: Alex has a comp for the lock “masterclass” from you until 4 January 2027: press copy. That " \
               "comp opens this lock." in result.steps
        other = explain(site.users["alex"], "archive")
        assert not other.decision.allowed
        assert any(s.endswith("It does not open this lock.") for s in other.steps)
    cli = site.app.test_cli_runner().invoke(args=["patronlock", "explain", "alex", "masterclass"])
    assert "Alex has a comp for the lock “masterclass” from you until 4 January 2027: press copy" in cli.output
    assert "=> ALLOWED (comp)" in cli.output


def test_a_patron_s_comps_and_sentences(site: Site) -> None:
    by_user = _grant(site, user_id="silver", tier="Platinum", note="goodwill month")
    by_member = _grant(site, member_id="m-silver", lock="archive", expires_at=JAN_4)
    with site.app.app_context():
        patron = site.state.store.get_patron("m-silver")
        assert patron is not None
        assert [r.id for r in comps_about(site.state, patron)] == [by_member.id, by_user.id]
        assert comp_sentence(site.state, by_user) == (
            "account silver has a comp for the Platinum tier ($25.00 a month) from you with no end date: goodwill month"
        )
        assert comp_sentence(site.state, by_member) == (
            "Patron m-silver has a comp for the lock “archive” from you until 4 January 2027"
        )
        ended = revoke_comp(site.state, by_member.id)
        assert comp_sentence(site.state, ended).endswith("; it was revoked on 15 March 2026")


def test_a_comp_names_its_lock_by_the_title_creators_gave_it(site: Site) -> None:
    """A creator's lock is named by its title, as on the locks page; once deleted (its comps revoked with it), by its
    name, saying it is gone -- never as a Python string."""
    from flask_patronlock.settings import create_lock, delete_lock

    with site.app.app_context():
        create_lock("bts", title="Behind the scenes", by="creator")
    record = _grant(site, user_id="alex", lock="bts")
    with site.app.app_context():
        assert comp_sentence(site.state, record) == (
            "Alex has a comp for the lock “Behind the scenes” from you with no end date"
        )
        delete_lock("bts", by="creator")
        ended = get_comp(site.state, record.id)
        assert ended is not None and ended.revoked_at is not None
        assert comp_sentence(site.state, ended) == (
            "Alex had a comp for the lock “bts” (deleted since) from you; it was revoked on 15 March 2026"
        )


def test_an_entitlement_token_never_outlives_the_comp_behind_it(site: Site) -> None:
    _grant(site, user_id="alex", lock="masterclass", expires_at=NOW + timedelta(seconds=90))
    with site.app.test_request_context():
        issued = issue_entitlement_token(site.users["alex"])
    assert issued.locks == ("masterclass",)
    assert issued.expires_at == NOW + timedelta(seconds=90)


# -- the command line ----------------------------------------------------------------------------------------------


def test_the_cli_grants_lists_and_revokes(site: Site) -> None:
    runner = site.app.test_cli_runner()
    result = runner.invoke(args=["patronlock", "comp", "grant", "--member", "m-silver@example.com", "--lock",
                                 "masterclass", "--note", "press copy", "--until", "2027-01-04", "--by", "ops"])
    assert result.exit_code == 0, result.output
    assert "Patron m-silver has a comp for the lock “masterclass” from you until 4 January 2027: press " \
        "copy." in result.output
    assert site.get("/masterclass", "silver").status_code == 200
    listed = runner.invoke(args=["patronlock", "comp", "list"])
    comp_id = int(listed.output.split()[0])
    assert "Patron m-silver has a comp for the lock “masterclass”" in listed.output
    [event] = _events(site, "comp_granted")
    assert (event["source"], event["detail"]["by"]) == ("cli", "ops")
    result = runner.invoke(args=["patronlock", "comp", "revoke", str(comp_id)])
    assert result.exit_code == 0 and f"Comp {comp_id} revoked." in result.output
    assert site.get("/masterclass", "silver").status_code == 403
    assert _events(site, "comp_revoked")[0]["source"] == "cli"
    assert "No comps" in runner.invoke(args=["patronlock", "comp", "list"]).output
    assert "was revoked on 15 March 2026" in runner.invoke(args=["patronlock", "comp", "list", "--ended"]).output
    again = runner.invoke(args=["patronlock", "comp", "revoke", str(comp_id)])
    assert again.exit_code == 1 and "already ended" in again.output
    assert runner.invoke(args=["patronlock", "comp", "revoke", "99999999999999999999"]).exit_code == 1


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--user", "alex"], "Invalid value for --lock / --tier: Choose what the comp opens"),
        (["--user", "alex", "--tier", "Diamond"], "Invalid value for --tier: The campaign has no tier called"),
        (["--user", "alex", "--lock", "masterclass", "--until", "soon"], "'soon' is not a date"),
        (["--user", "alex", "--lock", "masterclass", "--until", "2020-01-01"], "--until / --days: The end must be"),
        (["--member", "nobody@example.com", "--lock", "masterclass"], "--member: No Patreon member nobody@"),
        (["--user", "alex", "--lock", "masterclass", "--days", "0"], "give at least 1 day"),
    ],
)
def test_the_cli_says_what_is_wrong(site: Site, args: list[str], words: str) -> None:
    result = site.app.test_cli_runner().invoke(args=["patronlock", "comp", "grant", *args])
    assert result.exit_code == 2
    assert words in " ".join(result.output.split()).replace("'--", "--").replace("':", ":")
    with site.app.app_context():
        assert list_comps(site.state) == []


def test_the_cli_grants_for_days(site: Site) -> None:
    result = site.app.test_cli_runner().invoke(
        args=["patronlock", "comp", "grant", "--user", "alex", "--tier", "gold", "--days", "30"]
    )
    assert result.exit_code == 0, result.output
    with site.app.app_context():
        [record] = list_comps(site.state)
    assert (record.tier_id, record.expires_at, record.granted_source) == ("t10", NOW + timedelta(days=30), "cli")
    assert "until 14 April 2026" in result.output
