"""The Patreon sandbox: scenario controls and the clock, document shapes against the real payloads, API v2 endpoints
(sparse fields, include, pagination, errors), fault injection and the ``/_sandbox`` JSON controls.

OAuth is in ``test_sandbox_oauth.py``, webhook delivery in ``test_sandbox_webhooks.py``, the live server, CLI, mounting
and pytest plugin in ``test_sandbox_live.py``.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from flask.testing import FlaskClient
from patreon_fixtures import FIXTURE_NAMES, fixture_json

from flask_patronlock.dates import add_months
from flask_patronlock.sandbox import (
    ALL_MEMBER_TRIGGERS,
    CONTROL_TOKEN_HEADER,
    NotFoundError,
    Sandbox,
    SandboxError,
    create_sandbox_app,
    render_webhook_member,
    token_guard,
)
from flask_patronlock.sandbox.attributes import MEMBER_ATTRIBUTES, WEBHOOK_MEMBER_ATTRIBUTES

NOW = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
MEMBER_FIELDS = ",".join(MEMBER_ATTRIBUTES)


@pytest.fixture
def sb() -> Sandbox:
    return Sandbox(now=NOW, seed=7)


@pytest.fixture
def api(sb: Sandbox) -> FlaskClient:
    return create_sandbox_app(sb).test_client()


def creator(sb: Sandbox) -> dict[str, str]:
    return {"Authorization": f"Bearer {sb.creator_access_token}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def members_url(sb: Sandbox, **params: str) -> str:
    query = f"?{urlencode(params)}" if params else ""
    return f"/api/oauth2/v2/campaigns/{sb.campaign.id}/members{query}"


def assert_patreon_error(response: Any, status: int) -> dict[str, Any]:
    """The body is Patreon's error format; returns the error object."""
    assert response.status_code == status
    body = response.get_json()
    assert set(body) == {"errors"} and len(body["errors"]) == 1
    error: dict[str, Any] = body["errors"][0]
    assert {"code", "code_name", "detail", "id", "status", "title"} <= set(error)
    assert error["status"] == str(status)
    uuid.UUID(error["id"])
    return error


# -- defaults and ids -------------------------------------------------------------------------------------------------


def test_defaults(sb: Sandbox) -> None:
    tiers = {t.title: t for t in sb.tiers}
    assert {t: tiers[t].amount_cents for t in tiers} == {"Free": 0, "Bronze": 300, "Silver": 500, "Gold": 1000}
    for tier in tiers.values():
        assert tier.published
        assert tier.url == f"/checkout/{sb.campaign.id}?rid={tier.id}"
    assert sb.campaign.pledge_url == f"/checkout/{sb.campaign.id}"
    assert sb.creator.is_creator and sb.campaign.creator_id == sb.creator.id
    assert sb.now == NOW
    assert len({sb.client_id, sb.client_secret, sb.creator_access_token, sb.webhook_secret}) == 4
    other = Sandbox(seed=7)
    assert other.campaign.id == sb.campaign.id  # ids follow the seed
    assert other.client_secret != sb.client_secret  # secrets never do
    assert Sandbox(seed=8).campaign.id != sb.campaign.id


def test_explicit_credentials() -> None:
    sb = Sandbox(campaign_id="42", client_id="cid", client_secret="cs", creator_access_token="cat", webhook_secret="ws")
    assert (sb.campaign.id, sb.client_id, sb.client_secret, sb.creator_access_token, sb.webhook_secret) == (
        "42",
        "cid",
        "cs",
        "cat",
        "ws",
    )
    assert sb.authenticate("cat") is not None


def test_config_needs_a_url(sb: Sandbox) -> None:
    with pytest.raises(RuntimeError, match="no URL"):
        _ = sb.config
    sb.url = "http://127.0.0.1:9999/"
    assert sb.config == {
        "PATRONLOCK_CLIENT_ID": sb.client_id,
        "PATRONLOCK_CLIENT_SECRET": sb.client_secret,
        "PATRONLOCK_CREATOR_ACCESS_TOKEN": sb.creator_access_token,
        "PATRONLOCK_CAMPAIGN_ID": sb.campaign.id,
        "PATRONLOCK_WEBHOOK_SECRETS": [sb.webhook_secret],
        "PATRONLOCK_API_BASE_URL": "http://127.0.0.1:9999",
        "PATRONLOCK_OAUTH_BASE_URL": "http://127.0.0.1:9999",
    }


# -- scenarios --------------------------------------------------------------------------------------------------------


def test_add_patron_charges_at_once(sb: Sandbox) -> None:
    member = sb.add_patron("ann@example.com", tier="Silver", full_name="Ann Example")
    assert member.patron_status == "active_patron"
    assert member.last_charge_status == "Paid"
    assert member.last_charge_date == NOW
    assert member.next_charge_date == datetime(2024, 2, 15, tzinfo=UTC)  # same day next month, at midnight
    assert member.entitled_cents == member.will_pay_cents == member.lifetime_cents == 500
    assert member.tier_ids == (sb.tier("Silver").id,)
    assert member.pledge_start == NOW and member.cadence == 1
    assert sb.user("ann@example.com").full_name == "Ann Example"
    assert [e.event for e in sb.events] == ["members:create", "members:pledge:create", "members:update"]


def test_add_patron_by_id_amount_and_cadence(sb: Sandbox) -> None:
    gold = sb.tier("gold")
    assert sb.add_patron(tier=gold.id).tier_ids == (gold.id,)
    by_amount = sb.add_patron(amount_cents=700)
    assert by_amount.tier_ids == (sb.tier("Silver").id,)  # the highest tier at or below the amount
    assert by_amount.entitled_cents == 700
    annual = sb.add_patron(tier="Bronze", cadence=12)
    assert annual.entitled_cents == 3600  # Patreon reports an annual pledge's annual total
    assert annual.will_pay_cents == annual.lifetime_cents == 3600
    assert annual.next_charge_date == datetime(2025, 1, 15, tzinfo=UTC)
    free = sb.add_patron(tier="Free")
    assert free.patron_status is None and free.entitled_cents == 0 and free.tier_ids == (sb.tier("Free").id,)
    unpaid = sb.add_patron(tier="Gold", charge=False)
    assert unpaid.last_charge_status is None and unpaid.last_charge_date is None and unpaid.entitled_cents == 1000
    with pytest.raises(SandboxError):
        sb.add_patron(tier="Gold", cadence=3)
    with pytest.raises(NotFoundError):
        sb.add_patron(tier="Platinum")
    with pytest.raises(SandboxError):
        sb.add_patron()


def test_add_patron_twice_and_again_after_cancel(sb: Sandbox) -> None:
    member = sb.add_patron("bo@example.com", tier="Bronze")
    with pytest.raises(SandboxError, match="already pledges"):
        sb.add_patron("bo@example.com", tier="Gold")
    sb.cancel(member)
    sb.advance(days=3)
    again = sb.add_patron("bo@example.com", tier="Gold")
    assert again is member and again.patron_status == "active_patron" and again.entitled_cents == 1000
    assert again.pledge_start == sb.now
    assert again.lifetime_cents == 1300
    assert [e.event for e in sb.events][-3:] == ["members:update", "members:pledge:create", "members:update"]


def test_change_tier_cancel_decline_recover(sb: Sandbox) -> None:
    member = sb.add_patron("cy@example.com", tier="Bronze")
    sb.change_tier(member, "Gold")
    assert member.entitled_cents == 1000 and member.tier_ids == (sb.tier("Gold").id,)
    sb.change_tier(member.id, amount_cents=500)
    assert member.entitled_cents == 500 and member.tier_ids == (sb.tier("Silver").id,)
    assert [e.event for e in sb.events][-2:] == ["members:pledge:update", "members:update"]
    with pytest.raises(SandboxError):
        sb.change_tier(member, "Free")

    sb.advance(days=2)
    sb.decline("cy@example.com")
    assert member.patron_status == "declined_patron" and member.last_charge_status == "Declined"
    assert member.last_charge_date == sb.now and member.entitled_cents == 500
    sb.advance(days=2)
    sb.recover(member.user_id)
    assert member.patron_status == "active_patron" and member.last_charge_status == "Paid"
    assert member.last_charge_date == sb.now and member.lifetime_cents == 800
    with pytest.raises(SandboxError):
        sb.recover(member)

    next_charge = member.next_charge_date
    sb.cancel(member)
    assert member.patron_status == "former_patron" and member.last_charge_status == "Deleted"
    assert member.entitled_cents == 0 and member.will_pay_cents == 0 and member.tier_ids == ()
    assert member.next_charge_date == next_charge  # kept, like the members:pledge:delete fixture
    assert [e.event for e in sb.events][-2:] == ["members:pledge:delete", "members:update"]
    with pytest.raises(SandboxError):
        sb.cancel(member)


def test_lookups(sb: Sandbox) -> None:
    member = sb.add_patron("dee@example.com", tier="Gold")
    user = sb.user(member)
    assert sb.member(member.id) is sb.member(user.id) is sb.member("DEE@example.com") is sb.member(user) is member
    assert sb.user(user.id) is sb.user("dee@example.com") is user
    with pytest.raises(NotFoundError):
        sb.member("nobody@example.com")
    with pytest.raises(NotFoundError):
        sb.user("123")
    lonely = sb.add_user("lonely@example.com", email_verified=False)
    assert sb.member_for_user(lonely.id) is None and not lonely.email_verified
    with pytest.raises(SandboxError):
        sb.add_user("lonely@example.com")


def test_delete_member(sb: Sandbox, api: FlaskClient) -> None:
    keep = sb.add_patron(tier="Gold")
    gone = sb.add_patron(tier="Silver")
    sb.delete_member(gone)
    assert sb.events[-1].event == "members:delete"
    assert [m.id for m in sb.members] == [keep.id]
    assert api.get(f"/api/oauth2/v2/members/{gone.id}", headers=creator(sb)).status_code == 404
    doc = api.get(members_url(sb), headers=creator(sb)).get_json()
    assert [r["id"] for r in doc["data"]] == [keep.id] and doc["meta"]["pagination"]["total"] == 1
    sb.user(gone.user_id)  # the user stays


def test_update_user_fires_member_update(sb: Sandbox) -> None:
    member = sb.add_patron("old@example.com", tier="Gold")
    sb.update_user("old@example.com", email="new@example.com", full_name="New Name", email_verified=False)
    assert sb.events[-1].event == "members:update"
    body = json.loads(render_webhook_member(sb, member))
    assert body["data"]["attributes"]["email"] == "new@example.com"
    assert body["data"]["attributes"]["full_name"] == "New Name"


# -- the clock --------------------------------------------------------------------------------------------------------


def test_monthly_charging(sb: Sandbox) -> None:
    monthly = sb.add_patron(tier="Silver")
    annual = sb.add_patron(tier="Gold", cadence=12)
    failing = sb.add_patron(tier="Bronze")
    sb.set_fail_charges(failing)
    changed = sb.advance_months(3)
    assert sb.now == datetime(2024, 4, 15, 12, tzinfo=UTC)
    assert monthly in changed and failing in changed and annual not in changed
    assert monthly.lifetime_cents == 4 * 500
    assert monthly.last_charge_date == datetime(2024, 4, 15, tzinfo=UTC)
    assert monthly.next_charge_date == datetime(2024, 5, 15, tzinfo=UTC)
    assert annual.lifetime_cents == 12000 and annual.next_charge_date == datetime(2025, 1, 15, tzinfo=UTC)
    assert failing.patron_status == "declined_patron" and failing.last_charge_status == "Declined"
    # declined at the first due date, retried every 4 days within February (19th, 23rd, 27th), then left declined
    assert failing.last_charge_date == datetime(2024, 2, 27, tzinfo=UTC) and failing.retries_done == 3
    assert failing.next_retry_date is None and failing.lifetime_cents == 300
    sb.recover(failing)
    assert failing.patron_status == "active_patron" and failing.lifetime_cents == 600 and not failing.fail_charges

    charges = [e for e in sb.events if e.member_id == monthly.id and e.event == "members:update"]
    assert len(charges) == 4  # the first charge and three monthly ones
    sb.advance_months(9)
    assert annual.lifetime_cents == 24000 and annual.next_charge_date == datetime(2026, 1, 15, tzinfo=UTC)


def test_charges_keep_the_day_of_month() -> None:
    sb = Sandbox(now=datetime(2024, 1, 31, 9, tzinfo=UTC))
    member = sb.add_patron(tier="Gold")
    assert member.next_charge_date == datetime(2024, 2, 29, tzinfo=UTC)
    sb.advance_months(2)
    assert member.next_charge_date == datetime(2024, 4, 30, tzinfo=UTC)
    assert member.last_charge_date == datetime(2024, 3, 31, tzinfo=UTC)
    assert add_months(datetime(2023, 12, 31, tzinfo=UTC), 2) == datetime(2024, 2, 29, tzinfo=UTC)


def test_free_trial_converts(sb: Sandbox) -> None:
    member = sb.start_free_trial("tri@example.com", tier="Gold", days=7)
    assert member.is_free_trial and member.patron_status == "active_patron"
    assert member.entitled_cents == 1000 and member.will_pay_cents == 0 and member.cadence is None
    assert member.last_charge_status is None and member.next_charge_date is None
    sb.advance(days=6)
    assert member.is_free_trial
    sb.advance(days=2)
    assert not member.is_free_trial and member.last_charge_status == "Paid"
    assert member.last_charge_date == NOW + timedelta(days=7) and member.lifetime_cents == 1000
    assert member.cadence == 1 and member.will_pay_cents == 1000

    failing = sb.start_free_trial(tier="Silver", days=1)
    sb.set_fail_charges(failing)
    sb.advance(days=2)
    assert failing.patron_status == "declined_patron" and not failing.is_free_trial


def test_gift_lapses(sb: Sandbox) -> None:
    member = sb.gift_membership("gift@example.com", tier="Silver", months=2)
    assert member.is_gifted and member.entitled_cents == 500 and member.will_pay_cents == 0
    sb.advance_months(1)
    assert member.patron_status == "active_patron" and member.lifetime_cents == 0
    sb.advance_months(1)
    assert member.patron_status == "former_patron" and member.entitled_cents == 0


def test_clock_only_moves_forward(sb: Sandbox) -> None:
    with pytest.raises(SandboxError):
        sb.advance(days=-1)
    member = sb.add_patron(tier="Gold")
    sb.travel_to(NOW - timedelta(days=1))  # back: nothing happens
    assert sb.now == NOW - timedelta(days=1) and member.lifetime_cents == 1000
    sb.travel_to(NOW + timedelta(days=40))
    assert member.lifetime_cents == 2000


def test_generate_members_is_deterministic_and_mixed(sb: Sandbox) -> None:
    created = sb.generate_members(3000)
    assert len(created) == len(sb) == 3000
    again = Sandbox(now=NOW, seed=7).generate_members(3000)
    assert [m.id for m in again] == [m.id for m in created]
    assert [m.patron_status for m in again] == [m.patron_status for m in created]
    assert [m.id for m in Sandbox(now=NOW, seed=8).generate_members(10)] != [m.id for m in created[:10]]
    statuses = {m.patron_status for m in created}
    assert statuses == {"active_patron", "declined_patron", "former_patron", None}
    assert {m.cadence for m in created} >= {1, 12}
    assert any(m.is_free_trial for m in created) and any(m.is_gifted for m in created)
    assert len({m.tier_ids for m in created if m.patron_status == "active_patron"}) == 3
    for m in created:
        assert m.last_charge_date is None or m.last_charge_date <= NOW
        if m.patron_status == "active_patron" and m.next_charge_date is not None:
            assert m.next_charge_date > NOW
    assert not sb.events  # existing patrons: no webhook events
    more = sb.generate_members(10)  # ids never collide with earlier ones
    assert len({m.id for m in sb.members}) == 3010 and {m.id for m in more}.isdisjoint(m.id for m in created)


def test_generate_100k_members(sb: Sandbox, api: FlaskClient) -> None:
    sb.generate_members(100_000)
    assert len(sb) == 100_000
    doc = api.get(members_url(sb, **{"page[count]": "1000"}), headers=creator(sb)).get_json()
    assert len(doc["data"]) == 1000 and doc["meta"]["pagination"]["total"] == 100_000


# -- webhook documents against the real payloads ----------------------------------------------------------------------


def _shape(doc: dict[str, Any]) -> dict[str, Any]:
    """The key sets of a member document, per part."""
    included: dict[str, set[str]] = {}
    for resource in doc["included"]:
        included.setdefault(resource["type"], set()).update(resource["attributes"])
    return {
        "top": set(doc),
        "data": set(doc["data"]),
        "attributes": set(doc["data"]["attributes"]),
        "relationships": set(doc["data"]["relationships"]),
        "campaign_rel": set(doc["data"]["relationships"]["campaign"]),
        "user_rel": set(doc["data"]["relationships"]["user"]),
        "included": included,
        "links": set(doc["links"]),
    }


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_webhook_document_is_shaped_like_patreons(sb: Sandbox, name: str) -> None:
    real = _shape(fixture_json(name))
    member = sb.add_patron("kopi@example.com", tier="Silver")
    ours = _shape(json.loads(render_webhook_member(sb, member)))
    assert ours["top"] == real["top"] == {"data", "included", "links"}
    assert ours["data"] == real["data"]
    assert ours["attributes"] == real["attributes"] == set(WEBHOOK_MEMBER_ATTRIBUTES)
    assert ours["relationships"] == real["relationships"]
    assert ours["campaign_rel"] == real["campaign_rel"] and ours["user_rel"] == real["user_rel"]
    assert ours["links"] == real["links"]
    for rtype, keys in real["included"].items():
        assert ours["included"][rtype] == keys, rtype


def test_webhook_document_values(sb: Sandbox) -> None:
    sb.url = "http://sandbox.test:5055"
    member = sb.add_patron("kopi@example.com", tier="Silver")
    doc = json.loads(render_webhook_member(sb, member))
    data = doc["data"]
    assert data["type"] == "member" and data["id"] == member.id
    assert doc["links"]["self"] == f"http://sandbox.test:5055/api/oauth2/v2/members/{member.id}"
    rels = data["relationships"]
    assert rels["address"] == {"data": None}
    assert rels["campaign"]["data"] == {"id": sb.campaign.id, "type": "campaign"}
    assert rels["campaign"]["links"]["related"] == f"http://sandbox.test:5055/api/oauth2/v2/campaigns/{sb.campaign.id}"
    assert rels["user"]["data"] == {"id": member.user_id, "type": "user"}
    assert rels["currently_entitled_tiers"]["data"] == [{"id": sb.tier("Silver").id, "type": "tier"}]
    assert [r["type"] for r in doc["included"]] == ["campaign", "user", "tier"]
    attrs = data["attributes"]
    assert attrs["last_charge_date"] == "2024-01-15T12:00:00.000+00:00"
    assert attrs["next_charge_date"] == "2024-02-15T00:00:00.000+00:00"
    assert attrs["pledge_cadence"] == 1 and attrs["currently_entitled_amount_cents"] == 500

    sb.cancel(member)
    cancelled = json.loads(render_webhook_member(sb, member))["data"]["attributes"]
    delete_fixture = fixture_json("members_pledge_delete.json")["data"]["attributes"]
    for key in ("patron_status", "last_charge_status", "currently_entitled_amount_cents", "will_pay_amount_cents"):
        assert cancelled[key] == delete_fixture[key], key
    assert cancelled["next_charge_date"] == "2024-02-15T00:00:00.000+00:00"

    trial = sb.start_free_trial(tier="Gold")
    trial_attrs = json.loads(render_webhook_member(sb, trial))["data"]["attributes"]
    fixture = fixture_json("members_update_free_trial.json")["data"]["attributes"]
    for key in ("is_free_trial", "last_charge_date", "last_charge_status", "next_charge_date", "pledge_cadence"):
        assert trial_attrs[key] == fixture[key], key
    assert trial_attrs["will_pay_amount_cents"] == 0


def test_webhook_document_parses(sb: Sandbox) -> None:
    from flask_patronlock.patreon.jsonapi import parse_member_document

    member = sb.add_patron("par@example.com", tier="Gold", cadence=12, address={"line_1": "1 Main St", "city": "X"})
    snapshot = parse_member_document(json.loads(render_webhook_member(sb, member)))
    assert snapshot.member_id == member.id and snapshot.campaign_id == sb.campaign.id
    assert snapshot.user_id == member.user_id and snapshot.email == "par@example.com"
    assert snapshot.entitled_cents == 12000 and snapshot.will_pay_cents == 12000 and snapshot.pledge_cadence == 12
    assert snapshot.entitled_tier_ids == (sb.tier("Gold").id,)
    assert snapshot.last_charge_date == NOW and snapshot.patron_status == "active_patron"


# -- API: authentication and errors -----------------------------------------------------------------------------------


def test_api_needs_a_live_token(sb: Sandbox, api: FlaskClient) -> None:
    error = assert_patreon_error(api.get("/api/oauth2/v2/identity"), 401)
    assert error["code_name"] == "Unauthorized" and error["code"] == 1
    assert_patreon_error(api.get("/api/oauth2/v2/identity", headers=bearer("nope")), 401)
    user = sb.add_user("exp@example.com")
    token = sb.token_for(user, expires_in=3600)
    assert api.get("/api/oauth2/v2/identity", headers=bearer(token)).status_code == 200
    sb.advance(hours=1)
    assert_patreon_error(api.get("/api/oauth2/v2/identity", headers=bearer(token)), 401)
    # the creator's token never expires
    sb.advance_months(6)
    assert api.get("/api/oauth2/v2/campaigns", headers=creator(sb)).status_code == 200
    sb.revoke_token(sb.creator_access_token)
    assert_patreon_error(api.get("/api/oauth2/v2/campaigns", headers=creator(sb)), 401)


def test_api_checks_scopes_and_ownership(sb: Sandbox, api: FlaskClient) -> None:
    member = sb.add_patron("own@example.com", tier="Gold")
    token = sb.token_for(member, scopes=["identity"])
    error = assert_patreon_error(api.get(members_url(sb), headers=bearer(token)), 401)
    assert "campaigns.members" in error["detail"]
    patron = sb.token_for(member, scopes=["identity", "campaigns", "campaigns.members"])
    assert_patreon_error(api.get(members_url(sb), headers=bearer(patron)), 403)
    assert_patreon_error(api.get(f"/api/oauth2/v2/campaigns/{sb.campaign.id}", headers=bearer(patron)), 403)
    assert api.get("/api/oauth2/v2/campaigns", headers=bearer(patron)).get_json()["data"] == []
    # a patron may read their own membership, not others'
    assert api.get(f"/api/oauth2/v2/members/{member.id}", headers=bearer(patron)).status_code == 200
    other = sb.add_patron(tier="Bronze")
    assert_patreon_error(api.get(f"/api/oauth2/v2/members/{other.id}", headers=bearer(patron)), 403)


def test_api_404s(sb: Sandbox, api: FlaskClient) -> None:
    assert_patreon_error(api.get("/api/oauth2/v2/campaigns/999", headers=creator(sb)), 404)
    assert_patreon_error(api.get("/api/oauth2/v2/campaigns/999/members", headers=creator(sb)), 404)
    assert_patreon_error(api.get("/api/oauth2/v2/members/nope", headers=creator(sb)), 404)
    assert_patreon_error(api.get("/api/oauth2/v2/nothing-here", headers=creator(sb)), 404)
    assert_patreon_error(api.get("/api/oauth2/v2/webhooks/123", headers=creator(sb)), 404)
    assert_patreon_error(api.delete("/api/oauth2/v2/identity", headers=creator(sb)), 405)


def test_bad_query_parameters(sb: Sandbox, api: FlaskClient) -> None:
    error = assert_patreon_error(api.get(members_url(sb, **{"fields[member]": "bogus"}), headers=creator(sb)), 400)
    assert "bogus" in error["detail"]
    assert_patreon_error(api.get(members_url(sb, include="pledges"), headers=creator(sb)), 400)
    assert_patreon_error(api.get(members_url(sb, **{"page[cursor]": "garbage"}), headers=creator(sb)), 400)
    assert_patreon_error(api.get(members_url(sb, **{"page[count]": "0"}), headers=creator(sb)), 400)
    assert_patreon_error(api.get(members_url(sb, **{"page[count]": "x"}), headers=creator(sb)), 400)


# -- API: resources ---------------------------------------------------------------------------------------------------


def test_identity(sb: Sandbox, api: FlaskClient) -> None:
    member = sb.add_patron("id@example.com", tier="Gold", full_name="Ida Dent")
    token = sb.token_for(member)
    bare = api.get("/api/oauth2/v2/identity", headers=bearer(token)).get_json()
    assert bare["data"] == {"attributes": {}, "id": member.user_id, "type": "user"}  # no fields: no attributes
    assert "included" not in bare and bare["links"]["self"].endswith(f"/api/oauth2/v2/user/{member.user_id}")

    query = {
        "include": "memberships,memberships.currently_entitled_tiers,memberships.campaign",
        "fields[user]": "email,is_email_verified,full_name",
        "fields[member]": "patron_status,currently_entitled_amount_cents,email",
        "fields[tier]": "title,amount_cents",
        "fields[campaign]": "vanity",
    }
    doc = api.get("/api/oauth2/v2/identity", query_string=query, headers=bearer(token)).get_json()
    assert doc["data"]["attributes"] == {"email": "id@example.com", "is_email_verified": True, "full_name": "Ida Dent"}
    assert doc["data"]["relationships"]["memberships"]["data"] == [{"id": member.id, "type": "member"}]
    included = {(r["type"], r["id"]): r for r in doc["included"]}
    assert set(included) == {("member", member.id), ("tier", sb.tier("Gold").id), ("campaign", sb.campaign.id)}
    m = included["member", member.id]
    assert m["attributes"] == {
        "patron_status": "active_patron",
        "currently_entitled_amount_cents": 1000,
        "email": "id@example.com",
    }
    assert set(m["relationships"]) == {"campaign", "currently_entitled_tiers"}
    assert included["tier", sb.tier("Gold").id]["attributes"] == {"title": "Gold", "amount_cents": 1000}
    assert included["campaign", sb.campaign.id]["attributes"] == {"vanity": "sandboxcreator"}

    no_email = sb.token_for(member, scopes=["identity", "identity.memberships"])
    doc = api.get("/api/oauth2/v2/identity", query_string=query, headers=bearer(no_email)).get_json()
    assert "email" not in doc["data"]["attributes"] and "is_email_verified" in doc["data"]["attributes"]


def test_identity_parses(sb: Sandbox, api: FlaskClient) -> None:
    from flask_patronlock.patreon.client import _IDENTITY_PARAMS
    from flask_patronlock.patreon.jsonapi import parse_identity

    member = sb.add_patron("parse@example.com", tier="Silver")
    doc = api.get("/api/oauth2/v2/identity", query_string=_IDENTITY_PARAMS, headers=bearer(sb.token_for(member)))
    identity = parse_identity(doc.get_json())
    assert identity.user.email == "parse@example.com" and identity.user.email_verified is True
    membership = identity.membership_for(sb.campaign.id)
    assert membership is not None and membership.member_id == member.id and membership.entitled_cents == 500
    assert membership.entitled_tier_ids == (sb.tier("Silver").id,)

    loner = sb.add_user("loner@example.com")
    identity = parse_identity(
        api.get(
            "/api/oauth2/v2/identity", query_string=_IDENTITY_PARAMS, headers=bearer(sb.token_for(loner))
        ).get_json()
    )
    assert identity.user.id == loner.id and identity.memberships == ()


def test_campaigns(sb: Sandbox, api: FlaskClient) -> None:
    sb.add_patron(tier="Gold")
    sb.add_patron(tier="Gold")
    sb.cancel(sb.add_patron(tier="Bronze"))
    listing = api.get("/api/oauth2/v2/campaigns", headers=creator(sb)).get_json()
    assert [c["id"] for c in listing["data"]] == [sb.campaign.id] and listing["meta"]["pagination"]["total"] == 1
    assert listing["data"][0]["attributes"] == {}
    query = {
        "include": "tiers,creator",
        "fields[campaign]": "patron_count,pledge_url,vanity,is_monthly",
        "fields[tier]": "title,amount_cents,patron_count,url,published",
        "fields[user]": "full_name,is_creator",
    }
    doc = api.get(f"/api/oauth2/v2/campaigns/{sb.campaign.id}", query_string=query, headers=creator(sb)).get_json()
    assert doc["data"]["attributes"] == {
        "patron_count": 2,
        "pledge_url": f"/checkout/{sb.campaign.id}",
        "vanity": "sandboxcreator",
        "is_monthly": True,
    }
    assert doc["data"]["relationships"]["creator"]["data"] == {"id": sb.creator.id, "type": "user"}
    tiers = {r["attributes"]["title"]: r["attributes"] for r in doc["included"] if r["type"] == "tier"}
    assert tiers["Gold"]["patron_count"] == 2 and tiers["Bronze"]["patron_count"] == 0
    assert tiers["Gold"]["url"] == f"/checkout/{sb.campaign.id}?rid={sb.tier('Gold').id}"
    assert [r["attributes"] for r in doc["included"] if r["type"] == "user"] == [
        {"full_name": "Sandbox Creator", "is_creator": True}
    ]
    assert doc["links"]["self"].endswith(f"/api/oauth2/v2/campaigns/{sb.campaign.id}")


def test_member_endpoint(sb: Sandbox, api: FlaskClient) -> None:
    member = sb.add_patron("m@example.com", tier="Silver", address={"line_1": "1 Main St", "city": "Springfield"})
    url = f"/api/oauth2/v2/members/{member.id}"
    bare = api.get(url, headers=creator(sb)).get_json()
    assert bare["data"] == {"attributes": {}, "id": member.id, "type": "member"}
    assert bare["links"] == {"self": f"http://localhost/api/oauth2/v2/members/{member.id}"}
    full = api.get(
        url,
        query_string={
            "include": "address,campaign,currently_entitled_tiers,user",
            "fields[member]": MEMBER_FIELDS,
            "fields[address]": "line_1,city",
        },
        headers=creator(sb),
    ).get_json()
    assert set(full["data"]["attributes"]) == set(MEMBER_ATTRIBUTES)
    assert set(full["data"]["relationships"]) == {"address", "campaign", "currently_entitled_tiers", "user"}
    types = sorted(r["type"] for r in full["included"])
    assert types == ["address", "campaign", "tier", "user"]
    address = next(r for r in full["included"] if r["type"] == "address")
    assert address["attributes"] == {"line_1": "1 Main St", "city": "Springfield"}
    assert all(r["attributes"] == {} for r in full["included"] if r["type"] != "address")  # no fields, no attributes


def test_member_endpoint_parses(sb: Sandbox, api: FlaskClient) -> None:
    from flask_patronlock.patreon.client import _MEMBER_PARAMS
    from flask_patronlock.patreon.jsonapi import parse_member_document

    member = sb.start_free_trial("pt@example.com", tier="Gold")
    doc = api.get(f"/api/oauth2/v2/members/{member.id}", query_string=_MEMBER_PARAMS, headers=creator(sb))
    snapshot = parse_member_document(doc.get_json())
    assert snapshot.is_free_trial and snapshot.pledge_cadence is None and snapshot.entitled_cents == 1000
    assert (
        snapshot.campaign_id == sb.campaign.id and snapshot.user is not None and snapshot.user.email == "pt@example.com"
    )


def test_members_sparse_fields_and_include(sb: Sandbox, api: FlaskClient) -> None:
    sb.add_patron("a@example.com", tier="Gold")
    sb.add_patron("b@example.com", tier="Gold")
    sb.add_patron("c@example.com", tier="Bronze")
    bare = api.get(members_url(sb), headers=creator(sb)).get_json()
    assert all(r["attributes"] == {} and "relationships" not in r for r in bare["data"])
    assert "included" not in bare

    doc = api.get(
        members_url(sb, **{"fields[member]": "patron_status,email", "include": "currently_entitled_tiers"}),
        headers=creator(sb),
    ).get_json()
    assert [r["attributes"] for r in doc["data"]] == [
        {"patron_status": "active_patron", "email": f"{x}@example.com"} for x in "abc"
    ]
    assert all(set(r["relationships"]) == {"currently_entitled_tiers"} for r in doc["data"])
    assert sorted(r["id"] for r in doc["included"]) == sorted({sb.tier("Gold").id, sb.tier("Bronze").id})
    assert {r["type"] for r in doc["included"]} == {"tier"}  # only what was included

    with_users = api.get(
        members_url(sb, **{"include": "user", "fields[user]": "email,full_name"}), headers=creator(sb)
    ).get_json()
    assert [r["type"] for r in with_users["included"]] == ["user"] * 3
    assert with_users["included"][0]["attributes"] == {"email": "a@example.com", "full_name": "A"}

    # the creator's token without the email scope sees no emails
    token = sb.issue_token(sb.creator, scopes=["campaigns", "campaigns.members"]).access_token
    doc = api.get(members_url(sb, **{"fields[member]": "email,full_name"}), headers=bearer(token)).get_json()
    assert doc["data"][0]["attributes"] == {"full_name": "A"}


def test_members_cache_follows_changes(sb: Sandbox, api: FlaskClient) -> None:
    member = sb.add_patron("cache@example.com", tier="Bronze")
    url = members_url(
        sb, **{"fields[member]": "currently_entitled_amount_cents", "include": "currently_entitled_tiers"}
    )
    first = api.get(url, headers=creator(sb)).get_json()
    assert first["data"][0]["attributes"] == {"currently_entitled_amount_cents": 300}
    sb.change_tier(member, "Gold")
    second = api.get(url, headers=creator(sb)).get_json()
    assert second["data"][0]["attributes"] == {"currently_entitled_amount_cents": 1000}
    assert second["data"][0]["relationships"]["currently_entitled_tiers"]["data"][0]["id"] == sb.tier("Gold").id


def _pages(api: FlaskClient, sb: Sandbox, url: str) -> list[dict[str, Any]]:
    pages = []
    while url:
        doc = api.get(url, headers=creator(sb)).get_json()
        pages.append(doc)
        url = doc.get("links", {}).get("next")
    return pages


def test_pagination(sb: Sandbox, api: FlaskClient) -> None:
    sb.generate_members(45)
    default = api.get(members_url(sb), headers=creator(sb)).get_json()
    assert len(default["data"]) == 20  # the default page size

    pages = _pages(api, sb, members_url(sb, **{"page[count]": "10", "fields[member]": "patron_status"}))
    assert [len(p["data"]) for p in pages] == [10, 10, 10, 10, 5]
    ids = [r["id"] for p in pages for r in p["data"]]
    assert ids == [m.id for m in sb.members]
    for page in pages[:-1]:
        cursor = page["meta"]["pagination"]["cursors"]["next"]
        assert cursor and page["meta"]["pagination"]["total"] == 45
        next_url = urlsplit(page["links"]["next"])
        assert next_url.scheme == "http" and next_url.path.endswith(f"/campaigns/{sb.campaign.id}/members")
        query = parse_qs(next_url.query)
        assert query["page[cursor]"] == [cursor]  # links.next and the cursor agree
        assert query["page[count]"] == ["10"] and query["fields[member]"] == ["patron_status"]  # the query is kept
    last = pages[-1]
    assert last["meta"]["pagination"] == {"cursors": {"next": None}, "total": 45}
    assert "next" not in last.get("links", {})

    # a cursor from the meta works as well as links.next
    second = api.get(
        members_url(sb, **{"page[count]": "10", "page[cursor]": pages[0]["meta"]["pagination"]["cursors"]["next"]}),
        headers=creator(sb),
    ).get_json()
    assert [r["id"] for r in second["data"]] == [r["id"] for r in pages[1]["data"]]


def test_pagination_is_stable_under_changes(sb: Sandbox, api: FlaskClient) -> None:
    sb.generate_members(30)
    first = api.get(members_url(sb, **{"page[count]": "10"}), headers=creator(sb)).get_json()
    sb.delete_member(sb.members[3])  # on the page already read
    added = sb.add_patron(tier="Gold")
    rest = _pages(api, sb, first["links"]["next"])
    seen = [r["id"] for r in first["data"]] + [r["id"] for p in rest for r in p["data"]]
    assert len(seen) == len(set(seen)) == 31 and seen[-1] == added.id


def test_page_count_is_capped_at_1000(sb: Sandbox, api: FlaskClient) -> None:
    sb.generate_members(1500)
    doc = api.get(members_url(sb, **{"page[count]": "5000"}), headers=creator(sb)).get_json()
    assert len(doc["data"]) == 1000 and doc["meta"]["pagination"]["total"] == 1500


def test_members_pages_parse(sb: Sandbox, api: FlaskClient) -> None:
    from flask_patronlock.patreon.client import _MEMBERS_PARAMS
    from flask_patronlock.patreon.jsonapi import parse_members_page

    sb.generate_members(250)
    doc = api.get(members_url(sb, **_MEMBERS_PARAMS, **{"page[count]": "100"}), headers=creator(sb)).get_json()
    page = parse_members_page(doc)
    assert len(page.members) == page.raw_count == 100 and page.total == 250 and page.next_cursor
    by_id = {m.id: m for m in sb.members}
    for snapshot in page.members:
        member = by_id[snapshot.member_id]
        assert snapshot.patron_status == member.patron_status
        assert snapshot.entitled_cents == member.entitled_cents
        assert snapshot.entitled_tier_ids == member.tier_ids
        assert snapshot.email == sb.user(member.user_id).email


# -- faults -----------------------------------------------------------------------------------------------------------


def test_fault_error_one_shot_and_persistent(sb: Sandbox, api: FlaskClient) -> None:
    sb.generate_members(30)
    sb.add_fault("error", page=2)
    url = members_url(sb, **{"page[count]": "10"})
    first = api.get(url, headers=creator(sb)).get_json()
    nxt = first["links"]["next"]
    error = assert_patreon_error(api.get(nxt, headers=creator(sb)), 500)
    assert error["code_name"] == "InternalServerError"
    assert api.get(nxt, headers=creator(sb)).status_code == 200  # one-shot: the retry works
    assert not sb.faults

    sb.add_fault("error", page=1, status=503, times=None)
    for _ in range(3):
        assert_patreon_error(api.get(url, headers=creator(sb)), 503)
    sb.clear_faults()
    assert api.get(url, headers=creator(sb)).status_code == 200


def test_fault_rate_limit(sb: Sandbox, api: FlaskClient) -> None:
    sb.generate_members(5)
    sb.add_fault("rate_limit", page=1, retry_after=7, times=2)
    for _ in range(2):
        response = api.get(members_url(sb), headers=creator(sb))
        error = assert_patreon_error(response, 429)
        assert error["retry_after_seconds"] == 7 and error["code_name"] == "RequestThrottled" and error["code"] is None
        assert response.headers["Retry-After"] == "7"
    assert api.get(members_url(sb), headers=creator(sb)).status_code == 200
    exhausted = sb.add_fault("rate_limit", times=None)  # every page, every attempt
    for _ in range(5):
        assert api.get(members_url(sb), headers=creator(sb)).status_code == 429
    assert exhausted.hits == 5
    sb.remove_fault(exhausted.id)
    assert api.get(members_url(sb), headers=creator(sb)).status_code == 200


def test_fault_slow(sb: Sandbox, api: FlaskClient) -> None:
    sb.add_fault("slow", page=1, seconds=0.3)
    started = time.monotonic()
    assert api.get(members_url(sb), headers=creator(sb)).status_code == 200
    assert time.monotonic() - started >= 0.3


def test_fault_truncate(sb: Sandbox, api: FlaskClient) -> None:
    sb.generate_members(20)
    sb.add_fault("truncate", page=1)
    response = api.get(members_url(sb, **{"fields[member]": "patron_status"}), headers=creator(sb))
    assert response.status_code == 200
    with pytest.raises(ValueError):
        json.loads(response.data)
    whole = api.get(members_url(sb, **{"fields[member]": "patron_status"}), headers=creator(sb)).data
    assert whole.startswith(response.data) and len(response.data) == len(whole) // 2


def test_fault_repeat_cursor(sb: Sandbox, api: FlaskClient) -> None:
    sb.generate_members(30)
    url = members_url(sb, **{"page[count]": "10"})
    first = api.get(url, headers=creator(sb)).get_json()
    cursor = first["meta"]["pagination"]["cursors"]["next"]
    sb.add_fault("repeat_cursor", page=2)
    second = api.get(first["links"]["next"], headers=creator(sb)).get_json()
    assert second["meta"]["pagination"]["cursors"]["next"] == cursor  # points back at page 2 itself
    assert parse_qs(urlsplit(second["links"]["next"]).query)["page[cursor]"] == [cursor]
    sb.add_fault("repeat_cursor", page=1)
    again = api.get(url, headers=creator(sb)).get_json()
    restart = again["meta"]["pagination"]["cursors"]["next"]
    assert [
        r["id"]
        for r in api.get(
            members_url(sb, **{"page[count]": "10", "page[cursor]": restart}), headers=creator(sb)
        ).get_json()["data"]
    ] == [r["id"] for r in first["data"]]


def test_fault_drop(sb: Sandbox, api: FlaskClient) -> None:
    sb.generate_members(30)
    fault = sb.add_fault("drop", page=2, count=3)
    pages = _pages(api, sb, members_url(sb, **{"page[count]": "10"}))
    assert [len(p["data"]) for p in pages] == [10, 7, 10]
    assert all(p["meta"]["pagination"]["total"] == 30 for p in pages)
    seen = {r["id"] for p in pages for r in p["data"]}
    assert len(fault.dropped_ids) == 3 and seen.isdisjoint(fault.dropped_ids)
    assert seen | set(fault.dropped_ids) == {m.id for m in sb.members}


def test_bad_faults(sb: Sandbox) -> None:
    for kwargs in ({"kind": "meteor"}, {"kind": "error", "page": 0}, {"kind": "error", "times": 0}):
        with pytest.raises(SandboxError):
            sb.add_fault(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(NotFoundError):
        sb.remove_fault("99")


def test_api_down(sb: Sandbox, api: FlaskClient) -> None:
    sb.api_down = True
    for response in (
        api.get("/api/oauth2/v2/identity", headers=creator(sb)),
        api.get(members_url(sb), headers=creator(sb)),
        api.post("/api/oauth2/token", data={"grant_type": "refresh_token"}),
    ):
        assert_patreon_error(response, 503)
    assert api.get("/_sandbox/state").status_code == 200  # the controls stay up
    sb.api_down = False
    assert api.get(members_url(sb), headers=creator(sb)).status_code == 200


# -- the webhooks API -------------------------------------------------------------------------------------------------


def _webhook_body(sb: Sandbox, uri: str = "https://site.test/hook", triggers: Any = ALL_MEMBER_TRIGGERS) -> Any:
    return {
        "data": {
            "type": "webhook",
            "attributes": {"triggers": list(triggers), "uri": uri},
            "relationships": {"campaign": {"data": {"type": "campaign", "id": sb.campaign.id}}},
        }
    }


def test_webhooks_api(sb: Sandbox, api: FlaskClient) -> None:
    created = api.post("/api/oauth2/v2/webhooks", json=_webhook_body(sb), headers=creator(sb))
    assert created.status_code == 201
    doc = created.get_json()
    hook_id = doc["data"]["id"]
    assert doc["data"]["type"] == "webhook"
    assert doc["data"]["attributes"] == {
        "last_attempted_at": None,
        "num_consecutive_times_failed": 0,
        "paused": False,
        "secret": sb.webhook_secret,
        "triggers": list(ALL_MEMBER_TRIGGERS),
        "uri": "https://site.test/hook",
    }
    assert doc["data"]["relationships"]["campaign"]["data"] == {"id": sb.campaign.id, "type": "campaign"}
    assert doc["links"]["self"].endswith(f"/api/oauth2/v2/webhooks/{hook_id}")

    listing = api.get("/api/oauth2/v2/webhooks", headers=creator(sb)).get_json()
    assert [(w["id"], w["attributes"]) for w in listing["data"]] == [(hook_id, {})]  # no fields: no attributes
    listing = api.get(
        "/api/oauth2/v2/webhooks/",
        query_string={"fields[webhook]": "uri,paused", "include": "campaign", "fields[campaign]": "vanity"},
        headers=creator(sb),
    ).get_json()
    assert listing["data"][0]["attributes"] == {"uri": "https://site.test/hook", "paused": False}
    assert listing["included"] == [
        {"attributes": {"vanity": "sandboxcreator"}, "id": sb.campaign.id, "type": "campaign"}
    ]

    patch = {"data": {"type": "webhook", "id": hook_id, "attributes": {"uri": "https://site.test/v2", "paused": True}}}
    patched = api.patch(f"/api/oauth2/v2/webhooks/{hook_id}", json=patch, headers=creator(sb)).get_json()
    assert patched["data"]["attributes"]["uri"] == "https://site.test/v2" and patched["data"]["attributes"]["paused"]
    patch = {"data": {"type": "webhook", "attributes": {"is_paused": "false", "triggers": ["members:pledge:create"]}}}
    patched = api.patch(f"/api/oauth2/v2/webhooks/{hook_id}", json=patch, headers=creator(sb)).get_json()
    assert not patched["data"]["attributes"]["paused"]
    assert patched["data"]["attributes"]["triggers"] == ["members:pledge:create"]

    assert api.delete(f"/api/oauth2/v2/webhooks/{hook_id}", headers=creator(sb)).status_code == 204
    assert_patreon_error(api.get(f"/api/oauth2/v2/webhooks/{hook_id}", headers=creator(sb)), 404)
    assert sb.webhooks == []


def test_webhooks_api_validation_and_isolation(sb: Sandbox, api: FlaskClient) -> None:
    post = api.post
    assert_patreon_error(
        post("/api/oauth2/v2/webhooks", json=_webhook_body(sb, triggers=["bogus"]), headers=creator(sb)), 400
    )
    assert_patreon_error(post("/api/oauth2/v2/webhooks", json=_webhook_body(sb, triggers=[]), headers=creator(sb)), 400)
    assert_patreon_error(
        post("/api/oauth2/v2/webhooks", json=_webhook_body(sb, uri="ftp://x"), headers=creator(sb)), 400
    )
    assert_patreon_error(post("/api/oauth2/v2/webhooks", json={"nope": 1}, headers=creator(sb)), 400)
    body = _webhook_body(sb)
    body["data"]["relationships"]["campaign"]["data"]["id"] = "999"
    assert_patreon_error(post("/api/oauth2/v2/webhooks", json=body, headers=creator(sb)), 404)
    patron = sb.token_for(sb.add_user(), scopes=["w:campaigns.webhook"])
    assert_patreon_error(post("/api/oauth2/v2/webhooks", json=_webhook_body(sb), headers=bearer(patron)), 403)
    assert_patreon_error(api.get("/api/oauth2/v2/webhooks", headers=bearer(sb.token_for(sb.add_user()))), 401)
    # webhooks of another OAuth client are invisible
    foreign = sb.add_webhook("https://other.test/hook", client_id="another-client")
    assert api.get("/api/oauth2/v2/webhooks", headers=creator(sb)).get_json()["data"] == []
    assert_patreon_error(api.delete(f"/api/oauth2/v2/webhooks/{foreign.id}", headers=creator(sb)), 404)


# -- /_sandbox controls -----------------------------------------------------------------------------------------------


def test_sandbox_controls(sb: Sandbox, api: FlaskClient) -> None:
    state = api.get("/_sandbox/state").get_json()
    assert state["campaign_id"] == sb.campaign.id and state["members"] == 0
    assert [t["title"] for t in state["tiers"]] == ["Free", "Bronze", "Silver", "Gold"]
    assert sb.client_secret not in json.dumps(state)

    added = api.post("/_sandbox/patrons", json={"email": "ctl@example.com", "tier": "Silver", "cadence": 12})
    assert added.status_code == 201
    member = added.get_json()
    assert member["patron_status"] == "active_patron" and member["will_pay_amount_cents"] == 6000
    assert member["user"]["email"] == "ctl@example.com"
    mid = member["id"]
    assert api.post(f"/_sandbox/members/{mid}/tier", json={"tier": "Gold"}).get_json()["amount_cents"] == 1000
    assert api.post(f"/_sandbox/members/{mid}/decline").get_json()["patron_status"] == "declined_patron"
    assert api.post(f"/_sandbox/members/{mid}/recover").get_json()["last_charge_status"] == "Paid"
    assert api.post(f"/_sandbox/members/{mid}/fail_charges", json={"fail": True}).get_json()["fail_charges"]
    assert api.post("/_sandbox/members/ctl@example.com/cancel").get_json()["patron_status"] == "former_patron"
    assert api.get(f"/_sandbox/members/{mid}").get_json()["last_charge_status"] == "Deleted"
    assert api.post(f"/_sandbox/members/{mid}/delete").status_code == 200
    assert api.get(f"/_sandbox/members/{mid}").status_code == 404
    assert api.post(f"/_sandbox/members/{mid}/explode").status_code == 404

    trial = api.post("/_sandbox/free_trials", json={"email": "t@example.com", "tier": "Gold", "days": 3}).get_json()
    assert trial["is_free_trial"]
    gift = api.post("/_sandbox/gifts", json={"email": "g@example.com", "tier": "Bronze"}).get_json()
    assert gift["is_gifted"]
    user = api.post("/_sandbox/users", json={"email": "u@example.com", "name": "U Ser"}).get_json()
    assert user["full_name"] == "U Ser"

    clock = api.post("/_sandbox/clock", json={"days": 4}).get_json()
    assert clock["now"] == (NOW + timedelta(days=4)).isoformat() and trial["id"] in clock["changed"]
    assert api.post("/_sandbox/clock", json={"months": 1}).get_json()["now"].startswith("2024-02-19")
    assert api.post("/_sandbox/clock", json={"to": "2024-03-01T00:00:00Z"}).get_json()["now"].startswith("2024-03-01")

    token = api.post("/_sandbox/tokens", json={"user": "u@example.com", "scopes": "identity identity[email]"})
    body = token.get_json()
    assert body["user_id"] == user["id"] and body["scope"] == "identity identity[email]"
    assert api.get("/api/oauth2/v2/identity", headers=bearer(body["access_token"])).status_code == 200

    assert api.post("/_sandbox/generate", json={"count": 25}).get_json() == {"created": 25, "members": 27}

    fault = api.post("/_sandbox/faults", json={"kind": "rate_limit", "page": 1, "times": None, "retry_after": 3})
    assert fault.status_code == 201 and fault.get_json()["times"] is None
    assert api.get(members_url(sb), headers=creator(sb)).status_code == 429
    assert len(api.get("/_sandbox/faults").get_json()["faults"]) == 1
    assert api.delete(f"/_sandbox/faults/{fault.get_json()['id']}").status_code == 200
    api.post("/_sandbox/faults", json={"kind": "error"})
    assert api.delete("/_sandbox/faults").get_json() == {"faults": [], "api_down": False}
    assert api.post("/_sandbox/api_down", json={"down": True}).get_json() == {"api_down": True}
    assert api.get(members_url(sb), headers=creator(sb)).status_code == 503
    api.post("/_sandbox/api_down", json={"down": False})

    assert api.get("/_sandbox/events").get_json()["events"][0]["event"] == "members:create"
    hook = api.post("/_sandbox/webhooks", json={"uri": "http://localhost/x"}).get_json()  # its own origin
    assert hook["triggers"] == list(ALL_MEMBER_TRIGGERS)
    assert api.get("/_sandbox/webhooks").get_json()["webhooks"][0]["id"] == hook["id"]

    # bad input is a JSON 400, unknown things a JSON 404
    assert api.post("/_sandbox/patrons", json={"tier": "Platinum"}).status_code == 404
    assert api.post("/_sandbox/patrons", json={"tier": "Gold", "cadence": 5}).status_code == 400
    assert api.post("/_sandbox/faults", json={"kind": "meteor"}).status_code == 400
    assert api.post("/_sandbox/clock", json={"days": -1}).status_code == 400
    missing = api.get("/_sandbox/nothing")
    assert missing.status_code == 404 and "error" in missing.get_json()
    assert api.get("/_sandbox/avatar/123.svg").mimetype == "image/svg+xml"


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://other.example/hook",
        "http://localhost:6379/",  # its own host, another port: a service beside it
        "https://localhost/x",  # another scheme is another origin
        "http://localhost@other.example/x",
        "http://LOCALHOST.other.example/x",
        "gopher://localhost/x",
        "/relative",
        "",
    ],
)
def test_the_controls_refuse_a_webhook_to_another_origin(sb: Sandbox, api: FlaskClient, target: str) -> None:
    sent: list[str] = []
    sb.transport = lambda uri, headers, body: sent.append(uri) or 200
    assert api.get("/_sandbox/state").status_code == 200  # served on http://localhost
    refused = api.post("/_sandbox/webhooks", json={"uri": target})
    assert refused.status_code == 400 and "webhook uri" in refused.get_json()["error"]
    assert sb.webhooks == []
    sb.add_patron("p@example.com", tier="Gold")
    assert api.post("/_sandbox/webhooks/flush").get_json() == {"deliveries": []} and sent == []


def test_hosts_allowed_for_webhooks_by_the_app(sb: Sandbox) -> None:
    api = create_sandbox_app(sb, webhook_hosts=["site.test", "127.0.0.1:5000"]).test_client()
    for uri in ("https://site.test/hook", "http://site.test:8080/hook", "http://127.0.0.1:5000/patreon/webhook"):
        assert api.post("/_sandbox/webhooks", json={"uri": uri}).status_code == 201, uri
    for uri in ("http://127.0.0.1:5001/x", "http://sub.site.test/x"):
        assert api.post("/_sandbox/webhooks", json={"uri": uri}).status_code == 400, uri
    for bad in ("site.test/path", "user@site.test", "site.test:http", ""):
        with pytest.raises(ValueError, match="host or host:port"):
            create_sandbox_app(sb, webhook_hosts=[bad])


def test_a_control_guard_closes_the_controls_and_nothing_else(sb: Sandbox) -> None:
    api = create_sandbox_app(sb, control_guard=token_guard("t0ken")).test_client()
    for method, path in (("GET", "/_sandbox/state"), ("GET", "/"), ("POST", "/_sandbox/patrons"),
                         ("POST", "/_sandbox/tokens"), ("POST", "/_sandbox/webhooks/flush"),
                         ("GET", "/_sandbox/nothing")):  # fmt: skip
        for headers in ({}, {CONTROL_TOKEN_HEADER: "wrong"}):
            refused = api.open(path, method=method, json={"email": "x@example.com", "user": "x"}, headers=headers)
            assert refused.status_code == 403, path
            assert "control token" in refused.get_json()["error"] and sb.client_id not in refused.text
    assert len(sb) == 0 and sb.users == [sb.user(sb.campaign.creator_id)]
    assert api.get("/_sandbox/state", headers={CONTROL_TOKEN_HEADER: "t0ken"}).status_code == 200
    assert api.get("/_sandbox/state?sandbox_token=t0ken").status_code == 200
    # Patreon's own endpoints and the avatars are not controls
    assert api.get("/_sandbox/avatar/1.svg").status_code == 200
    assert api.get("/api/oauth2/v2/identity", headers=creator(sb)).status_code == 200
    assert api.get(f"/checkout/{sb.campaign.id}").status_code == 200
    with pytest.raises(ValueError):
        token_guard("")


def test_checkout_page(sb: Sandbox, api: FlaskClient) -> None:
    gold = sb.tier("Gold")
    page = api.get(f"/checkout/{sb.campaign.id}?rid={gold.id}")
    assert page.status_code == 200 and b"Become a patron" in page.data
    done = api.post(f"/checkout/{sb.campaign.id}", data={"tier": gold.id, "new_email": "buyer@example.com"})
    assert b"pledged at Gold" in done.data
    assert sb.member("buyer@example.com").entitled_cents == 1000
    api.post(f"/checkout/{sb.campaign.id}", data={"tier": "Bronze", "user_id": sb.user("buyer@example.com").id})
    assert sb.member("buyer@example.com").entitled_cents == 300
    assert api.get("/checkout/999").status_code == 404


def test_patron_counts_stay_consistent(sb: Sandbox) -> None:
    def brute() -> tuple[dict[str, int], int]:
        counts = {t.id: 0 for t in sb.tiers}
        active = [m for m in sb.members if m.patron_status == "active_patron"]
        for m in active:
            for tid in m.tier_ids:
                counts[tid] += 1
        return counts, len(active)

    sb.generate_members(300)
    a = sb.add_patron(tier="Gold")
    b = sb.add_patron(tier="Bronze", fail_charges=True)
    sb.change_tier(a, "Silver")
    sb.start_free_trial(tier="Gold", days=3)
    sb.gift_membership(tier="Silver", months=1)
    sb.cancel(sb.members[0])
    sb.delete_member(sb.members[1])
    sb.add_tier("Platinum", 5000)
    sb.add_patron(tier="Platinum")
    assert b.patron_status == "declined_patron"
    sb.advance_months(2)
    counts, total = sb.tier_patron_counts()
    assert (counts, total) == brute()
    assert sb.summary()["patron_count"] == total
