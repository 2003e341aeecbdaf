"""The settings page's Comps page and a patron's comps: granting with errors in plain words next to the field,
revoking, the lists, and the page a comped visitor then sees."""

from __future__ import annotations

import re
from collections.abc import Callable
from html import unescape
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from flask_patronlock import locked
from flask_patronlock.comps import grant_comp, list_comps
from tests.helpers.admin import ADMIN_PREFIX, AdminSite, make_admin_site

COMPS = ADMIN_PREFIX + "/comps"


@pytest.fixture
def site(make_app: Callable[..., Flask]) -> AdminSite:
    site = make_admin_site(make_app)
    site.link("ada", "p-ada")
    site.user("ada", name="Ada")
    site.apply("m1", user_id="p-ada", full_name="Ada Lovelace", email="ada@example.com", entitled_cents=300,
               entitled_tier_ids=("t3",))

    @site.app.get("/premium")
    @locked("premium")
    def premium() -> str:
        return "premium posts"

    return site


def _text(response: Any) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True))).split())


def _errors_of(response: Any, field: str) -> list[str]:
    html = response.get_data(as_text=True)
    block = re.search(rf'id="{field}-errors">(.*?)</ul>', html, re.S)
    return [unescape(e) for e in re.findall(r"<li>(.*?)</li>", block.group(1))] if block else []


def _events(site: AdminSite, kind: str) -> list[dict[str, Any]]:
    e = site.state.tables.events
    with site.state.store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(e).where(e.c.kind == kind)).mappings()]


def test_granting_a_member_a_lock_opens_the_page_for_them(site: AdminSite) -> None:
    assert site.get("/premium", "ada").status_code == 403  # Bronze: below the Gold lock
    page = site.get(COMPS)
    assert page.status_code == 200 and "No comps yet." in _text(page)
    assert "The lock premium: Premium posts" in _text(page) and "Everything the Gold tier opens ($10.00 a month)" in \
        _text(page)
    response = site.post(COMPS, {"who": "member", "member": "ADA@example.com", "access": "lock:premium",
                                 "note": "press copy", "ends_on": "2027-01-04"}, follow_redirects=True)
    assert response.status_code == 200
    text = _text(response)
    assert "Granted. Ada Lovelace has a comp for the lock “premium” from you until 4 January 2027: press copy." in text
    assert "Ada Lovelace the lock “premium” 4 January 2027 press copy" in text  # the open comps' table
    assert site.get("/premium", "ada").status_code == 200
    [event] = _events(site, "comp_granted")
    assert (event["source"], event["member_id"], event["detail"]["by"]) == ("admin", "m1", "admin")


def test_granting_an_account_a_tier(site: AdminSite) -> None:
    site.user("friend", name="A friend")
    assert site.get("/premium", "friend").status_code == 403
    response = site.post(COMPS, {"who": "user", "user_id": "friend", "access": "tier:t10", "note": ""})
    assert response.status_code == 302
    assert site.get("/premium", "friend").status_code == 200
    assert "A friend has a comp for the Gold tier ($10.00 a month) from you with no end date" in _text(
        site.get(COMPS + "?user=friend"))


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"who": "member", "member": "", "access": "lock:premium"}, "member",
         "Write the member's e-mail address or Patreon member id."),
        ({"who": "member", "member": "nobody@example.com", "access": "lock:premium"}, "member",
         "No Patreon member nobody@example.com is known here. Check the spelling, or sync first if they joined just "
         "now."),
        ({"who": "user", "user_id": "", "access": "lock:premium"}, "user_id",
         "Write the user id of the account on this site."),
        ({"who": "user", "user_id": "ghost", "access": "lock:premium"}, "user_id", "This site has no account 'ghost'."),
        ({"who": "member", "member": "m1", "access": ""}, "access",
         "Choose what the comp opens: one lock, or one tier."),
        ({"who": "member", "member": "m1", "access": "lock:vault"}, "access",
         "This site has no lock called 'vault' (the locks: premium, supporters)."),
        ({"who": "member", "member": "m1", "access": "tier:t99"}, "access",
         "The campaign has no tier called 't99' (the tiers are Bronze, Silver, Gold)."),
        ({"who": "member", "member": "m1", "access": "lock:premium", "ends_on": "2026-03-15"}, "ends_on",
         "The end must be in the future (after 15 March 2026)."),
        ({"who": "member", "member": "m1", "access": "lock:premium", "ends_on": "next week"}, "ends_on",
         "Not a valid date value."),
        ({"who": "member", "member": "m1", "access": "lock:premium", "note": "n" * 501}, "note",
         "Keep the note to 500 characters (it has 501)."),
    ],
)
def test_a_bad_grant_is_shown_again_with_the_error_next_to_its_field(
    site: AdminSite, data: dict[str, str], field: str, message: str
) -> None:
    response = site.post(COMPS, data)
    assert response.status_code == 422
    assert _errors_of(response, field) == [message]
    html = response.get_data(as_text=True)
    for value in (data.get("member"), data.get("user_id"), data.get("note")):
        if value:
            assert f'value="{value}"' in html  # what was typed is kept
    with site.app.app_context():
        assert list_comps(site.state) == []


def test_every_problem_of_a_grant_is_shown_at_once(site: AdminSite) -> None:
    response = site.post(COMPS, {"who": "user", "user_id": "ghost", "access": "tier:t99", "note": "n" * 600,
                                 "ends_on": "2020-01-01"})
    assert response.status_code == 422
    assert _errors_of(response, "user_id") == ["This site has no account 'ghost'."]
    assert _errors_of(response, "access") == ["The campaign has no tier called 't99' (the tiers are Bronze, Silver, "
                                              "Gold)."]
    assert _errors_of(response, "note") == ["Keep the note to 500 characters (it has 600)."]
    assert _errors_of(response, "ends_on") == ["The end must be in the future (after 15 March 2026)."]


def test_revoking_from_the_comps_page_and_from_the_patron_page(site: AdminSite) -> None:
    with site.app.app_context():
        first = grant_comp(site.state, member_id="m1", lock="premium", note="one")
        second = grant_comp(site.state, user_id="ada", tier="Gold", note="two")
    patron_page = site.get(ADMIN_PREFIX + "/patrons/m1")
    text = _text(patron_page)
    assert "Ada Lovelace has a comp for the lock “premium” from you with no end date: one." in text
    assert "Ada has a comp for the Gold tier ($10.00 a month) from you with no end date: two." in text
    assert f'href="{COMPS}?member=m1#grant"' in patron_page.get_data(as_text=True)
    response = site.post(f"{COMPS}/{first.id}/revoke", {"back": "patron:m1"})
    assert response.status_code == 302 and response.headers["Location"].endswith("/patrons/m1")
    assert site.get("/premium", "ada").status_code == 200  # the tier comp still opens it
    response = site.post(f"{COMPS}/{second.id}/revoke", {}, follow_redirects=True)
    assert "Revoked. Ada had a comp for the Gold tier ($10.00 a month) from you; it was revoked on 15 March 2026: " \
           "two." in _text(response)
    assert site.get("/premium", "ada").status_code == 403
    ended = _text(site.get(COMPS))
    assert "Ended" in ended and "15 March 2026 (revoked)" in ended
    again = site.post(f"{COMPS}/{second.id}/revoke", {}, follow_redirects=True)
    assert "That comp had already ended (15 March 2026)." in _text(again)
    assert site.post(f"{COMPS}/999/revoke", {}).status_code == 404
    assert [e["source"] for e in _events(site, "comp_revoked")] == ["admin", "admin"]


def test_the_explainer_on_the_patron_page_names_the_comp(site: AdminSite) -> None:
    with site.app.app_context():
        grant_comp(site.state, member_id="m1", lock="premium", note="press copy")
    text = _text(site.get(ADMIN_PREFIX + "/patrons/m1?lock=premium"))
    assert "Yes: a comp you granted" in text
    assert "Ada has a comp for the lock “premium” from you with no end date: press copy. That comp opens this " \
        "lock." in text


def test_an_unlinked_member_s_comp_counts_once_they_connect(site: AdminSite) -> None:
    site.apply("m2", user_id="p-bo", full_name="Bo", email="bo@example.com", entitled_cents=300,
               entitled_tier_ids=("t3",))
    with site.app.app_context():
        grant_comp(site.state, member_id="m2", tier="t10")
    text = _text(site.get(ADMIN_PREFIX + "/patrons/m2?lock=premium"))
    assert "Once connected: yes: a comp you granted" in text
