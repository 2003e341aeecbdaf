"""The sandbox's billing and its named scenarios, checked in the documents it serves (API v2 and webhook bodies)
against Patreon's documented behaviour (``docs/patreon-behaviour.rst``) and the real payloads in the fixtures."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from flask.testing import FlaskClient
from patreon_fixtures import fixture_json

from flask_patronlock.sandbox import (
    DECLINE_RETRIES,
    SCENARIO_NAMES,
    Member,
    Sandbox,
    SandboxError,
    create_sandbox_app,
)
from flask_patronlock.sandbox.attributes import MEMBER_ATTRIBUTES

NOW = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
HOOK = "https://site.test/patreon/webhook"


@pytest.fixture
def sb() -> Sandbox:
    return Sandbox(now=NOW, seed=11)


@pytest.fixture
def api(sb: Sandbox) -> FlaskClient:
    return create_sandbox_app(sb).test_client()


class Hooks:
    """Records every webhook delivered: (event, parsed body)."""

    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        self.received: list[tuple[str, dict[str, Any]]] = []
        sb.add_webhook(HOOK)
        sb.transport = self.transport

    def transport(self, uri: str, headers: dict[str, str], body: bytes) -> int:
        self.received.append((headers["X-Patreon-Event"], json.loads(body)))
        return 200

    def take(self) -> list[tuple[str, dict[str, Any]]]:
        self.sb.flush_webhooks()
        taken, self.received = self.received, []
        return taken


@pytest.fixture
def hooks(sb: Sandbox) -> Hooks:
    return Hooks(sb)


def served(api: FlaskClient, sb: Sandbox, member: Member) -> tuple[dict[str, Any], list[str]]:
    """(attributes, entitled tier ids) of ``member`` as ``GET /members/<id>`` serves it to the creator."""
    query = urlencode({"fields[member]": ",".join(MEMBER_ATTRIBUTES), "include": "currently_entitled_tiers"})
    response = api.get(
        f"/api/oauth2/v2/members/{member.id}?{query}", headers={"Authorization": f"Bearer {sb.creator_access_token}"}
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    data = response.get_json()["data"]
    return data["attributes"], [t["id"] for t in data["relationships"]["currently_entitled_tiers"]["data"]]


def listed(api: FlaskClient, sb: Sandbox) -> dict[str, dict[str, Any]]:
    """Every member's attributes from the campaign members listing, by member id."""
    query = urlencode({"fields[member]": ",".join(MEMBER_ATTRIBUTES), "page[count]": "1000"})
    response = api.get(
        f"/api/oauth2/v2/campaigns/{sb.campaign.id}/members?{query}",
        headers={"Authorization": f"Bearer {sb.creator_access_token}"},
    )
    assert response.status_code == 200
    return {m["id"]: m["attributes"] for m in response.get_json()["data"]}


def same_shape_as_fixture(body: dict[str, Any], fixture: str) -> None:
    """A webhook body has exactly the keys of the real payload, per part."""
    real = fixture_json(fixture)
    assert set(body) == set(real)
    assert set(body["data"]["attributes"]) == set(real["data"]["attributes"])
    assert set(body["data"]["relationships"]) == set(real["data"]["relationships"])


# -- default billing --------------------------------------------------------------------------------------------------


def test_annual_pledge_reports_the_annual_total(sb: Sandbox, api: FlaskClient, hooks: Hooks) -> None:
    member = sb.add_patron("year@example.com", tier="Gold", cadence=12)
    attrs, tiers = served(api, sb, member)
    assert attrs["pledge_cadence"] == 12
    assert attrs["currently_entitled_amount_cents"] == attrs["will_pay_amount_cents"] == 12000
    assert attrs["lifetime_support_cents"] == 12000 and tiers == [sb.tier("Gold").id]
    assert attrs["next_charge_date"] == "2025-01-15T00:00:00.000+00:00"
    events = hooks.take()
    assert [e for e, _ in events] == ["members:create", "members:pledge:create", "members:update"]
    assert events[-1][1]["data"]["attributes"]["currently_entitled_amount_cents"] == 12000
    same_shape_as_fixture(events[1][1], "members_pledge_create.json")


def test_first_of_month_billing_charges_up_front_then_on_the_1st() -> None:
    sb = Sandbox(now=NOW, seed=3, billing="first_of_month")
    member = sb.add_patron(tier="Silver")
    assert member.last_charge_date == NOW and member.next_charge_date == datetime(2024, 2, 1, tzinfo=UTC)
    sb.advance_months(2)
    assert member.last_charge_date == datetime(2024, 3, 1, tzinfo=UTC) and member.lifetime_cents == 3 * 500
    assert member.next_charge_date == datetime(2024, 4, 1, tzinfo=UTC)
    annual = sb.add_patron(tier="Gold", cadence=12)  # annual pledges are billed on their anniversary
    assert annual.next_charge_date == datetime(2025, 3, 15, tzinfo=UTC)
    unpaid = sb.add_patron(tier="Bronze", charge=False)
    assert unpaid.last_charge_status is None and unpaid.next_charge_date == datetime(2024, 4, 1, tzinfo=UTC)
    generated = Sandbox(now=NOW, seed=3, billing="first_of_month").generate_members(60)
    monthly_paid = [m for m in generated if m.cadence == 1 and m.last_charge_status == "Paid"]
    assert monthly_paid and {m.next_charge_date for m in monthly_paid} == {datetime(2024, 2, 1, tzinfo=UTC)}
    with pytest.raises(SandboxError, match="billing"):
        Sandbox(billing="weekly")


def test_a_decline_is_retried_six_times_within_its_month_then_left() -> None:
    sb = Sandbox(now=datetime(2024, 1, 1, tzinfo=UTC), seed=2)
    api = create_sandbox_app(sb).test_client()
    member = sb.add_patron(tier="Silver")  # paid on 1 January, next charge 1 February
    sb.set_fail_charges(member)
    sb.advance(days=31, hours=1)
    assert member.patron_status == "declined_patron" and member.retries_done == 0
    sb.advance(days=40)
    retries = [datetime(2024, 2, 1, tzinfo=UTC) + timedelta(days=4 * k) for k in range(1, DECLINE_RETRIES + 1)]
    assert retries[-1] == datetime(2024, 2, 25, tzinfo=UTC)  # all six fit in February
    attrs, tiers = served(api, sb, member)
    assert attrs["patron_status"] == "declined_patron" and attrs["last_charge_status"] == "Declined"
    assert attrs["last_charge_date"] == "2024-02-25T00:00:00.000+00:00" and member.retries_done == DECLINE_RETRIES
    assert attrs["lifetime_support_cents"] == 500  # only the first charge ever went through
    assert attrs["currently_entitled_amount_cents"] == 500 and tiers == [sb.tier("Silver").id]
    assert attrs["will_pay_amount_cents"] == 500
    updates = [e for e in sb.events if e.member_id == member.id and e.event == "members:update"]
    assert len(updates) == 1 + 1 + DECLINE_RETRIES  # the first charge, the decline, each retry


def test_a_retry_goes_through_once_the_card_works(sb: Sandbox) -> None:
    member = sb.add_patron(tier="Gold")
    sb.set_fail_charges(member)
    sb.advance_months(1)  # declined on 15 February
    sb.set_fail_charges(member, False)  # the patron updates their card
    sb.advance(days=4)  # the first retry, 19 February
    assert member.patron_status == "active_patron" and member.last_charge_status == "Paid"
    assert member.last_charge_date == datetime(2024, 2, 19, tzinfo=UTC) and member.lifetime_cents == 2000
    assert member.next_charge_date == datetime(2024, 3, 15, tzinfo=UTC) and member.next_retry_date is None


def test_a_late_decline_gets_only_the_retries_left_in_its_month(sb: Sandbox) -> None:
    sb.travel_to(datetime(2024, 1, 20, tzinfo=UTC))
    member = sb.add_patron(tier="Gold")
    sb.decline(member)
    sb.advance(days=60)
    assert member.retries_done == 2 and member.last_charge_date == datetime(2024, 1, 28, tzinfo=UTC)
    assert member.patron_status == "declined_patron"


# -- the scenarios ----------------------------------------------------------------------------------------------------


def test_every_scenario_cites_its_source_and_is_listed(api: FlaskClient) -> None:
    listed_names = [s["name"] for s in api.get("/_sandbox/scenarios").get_json()]
    assert listed_names == list(SCENARIO_NAMES)
    for scenario in api.get("/_sandbox/scenarios").get_json():
        assert "Patreon" in scenario["description"] and scenario["summary"], scenario["name"]


def test_start_of_month(sb: Sandbox, api: FlaskClient, hooks: Hooks) -> None:
    paid = sb.add_patron("paid@example.com", tier="Gold")
    annual = sb.add_patron("annual@example.com", tier="Silver", cadence=12)
    trial = sb.start_free_trial("trial@example.com", tier="Bronze", days=30)
    hooks.take()
    played = sb.scenario("start_of_month", hours=6)
    assert played == [paid] and sb.now == datetime(2024, 2, 1, tzinfo=UTC)
    attrs, tiers = served(api, sb, paid)
    assert attrs["currently_entitled_amount_cents"] == 0 and tiers == []
    assert attrs["patron_status"] == "active_patron" and attrs["last_charge_status"] == "Paid"
    assert attrs["last_charge_date"] == "2024-01-15T12:00:00.000+00:00"  # the last period's charge
    assert served(api, sb, annual)[0]["currently_entitled_amount_cents"] == 6000  # untouched
    assert served(api, sb, trial)[1] == [sb.tier("Bronze").id]
    events = hooks.take()
    assert [e for e, _ in events] == ["members:update"]
    body = events[0][1]
    assert body["data"]["relationships"]["currently_entitled_tiers"]["data"] == []
    same_shape_as_fixture(body, "members_pledge_update.json")

    sb.advance(hours=5)
    assert served(api, sb, paid)[0]["currently_entitled_amount_cents"] == 0
    sb.advance(hours=1)  # the month's charge runs
    attrs, tiers = served(api, sb, paid)
    assert attrs["currently_entitled_amount_cents"] == 1000 and tiers == [sb.tier("Gold").id]
    assert attrs["last_charge_date"] == "2024-02-01T06:00:00.000+00:00" and attrs["lifetime_support_cents"] == 2000
    assert attrs["next_charge_date"] == "2024-03-01T00:00:00.000+00:00"


def test_start_of_month_with_a_failing_card_stays_zeroed_and_declines(sb: Sandbox, api: FlaskClient) -> None:
    member = sb.add_patron(tier="Gold", fail_charges=False)
    sb.scenario("start_of_month", hours=2, members=member.id)
    sb.set_fail_charges(member)
    sb.advance(hours=3)
    attrs, tiers = served(api, sb, member)
    assert attrs["patron_status"] == "declined_patron" and attrs["currently_entitled_amount_cents"] == 0
    assert tiers == []
    sb.recover(member)
    assert served(api, sb, member)[1] == [sb.tier("Gold").id]


def test_declined_for_months(sb: Sandbox, api: FlaskClient) -> None:
    member = sb.add_patron(tier="Silver")
    other = sb.add_patron(tier="Bronze")
    played = sb.scenario("declined_for_months", months=3, members=[member.id])
    assert played == [member] and sb.now == datetime(2024, 4, 15, 12, tzinfo=UTC)
    attrs, tiers = served(api, sb, member)
    assert attrs["patron_status"] == "declined_patron" and attrs["last_charge_status"] == "Declined"
    assert attrs["last_charge_date"] == "2024-02-27T00:00:00.000+00:00"  # the last retry in February
    assert attrs["lifetime_support_cents"] == 500 and tiers == [sb.tier("Silver").id]
    assert listed(api, sb)[other.id]["lifetime_support_cents"] == 4 * 300  # the others were charged as usual


def test_cancel_after_decline_stays_declined(sb: Sandbox, api: FlaskClient, hooks: Hooks) -> None:
    member = sb.add_patron(tier="Gold")
    sb.decline(member)
    hooks.take()
    assert sb.scenario("cancel_after_decline") == [member]
    attrs, tiers = served(api, sb, member)
    assert attrs["patron_status"] == "declined_patron" and attrs["last_charge_status"] == "Declined"
    assert attrs["currently_entitled_amount_cents"] == 0 and attrs["will_pay_amount_cents"] == 0 and tiers == []
    events = hooks.take()
    assert [e for e, _ in events] == ["members:pledge:delete", "members:update"]
    same_shape_as_fixture(events[0][1], "members_pledge_delete.json")
    sb.advance_months(4)  # no more retries, still listed as declined
    assert listed(api, sb)[member.id]["patron_status"] == "declined_patron"
    assert member.retries_done == 0 and member.last_charge_date == NOW
    with pytest.raises(SandboxError):
        sb.cancel(member)
    again = sb.add_patron(user=member.user_id, tier="Bronze")  # pledging again starts clean
    assert again.patron_status == "active_patron" and again.will_pay_cents == 300


def test_annual_pledge_scenario(sb: Sandbox, api: FlaskClient) -> None:
    (member,) = sb.scenario("annual_pledge", tier="Silver", email="a@example.com")
    attrs, _ = served(api, sb, member)
    assert attrs["currently_entitled_amount_cents"] == 6000 and attrs["pledge_cadence"] == 12
    (unpaid,) = sb.scenario("annual_pledge", tier="Bronze", charge="false")
    assert unpaid.last_charge_status is None and unpaid.lifetime_cents == 0


def test_charge_dates_missing(sb: Sandbox, api: FlaskClient, hooks: Hooks) -> None:
    member = sb.add_patron(tier="Gold")
    hooks.take()
    sb.scenario("charge_dates_missing", days=3)
    assert listed(api, sb)[member.id]["last_charge_date"] is None
    assert served(api, sb, member)[0]["last_charge_date"] is None
    sb.change_tier(member, "Silver")
    assert all(body["data"]["attributes"]["last_charge_date"] is None for _, body in hooks.take())
    sb.advance(days=2)
    assert served(api, sb, member)[0]["last_charge_date"] is None
    sb.advance(days=1)
    assert served(api, sb, member)[0]["last_charge_date"] == "2024-01-15T12:00:00.000+00:00"
    assert sb.summary()["blanked_attributes"] == []
    with pytest.raises(SandboxError, match="unknown member attributes"):
        sb.scenario("charge_dates_missing", attributes=["no_such_field"])


def test_cancel_then_rejoin_is_paid_with_no_new_charge(sb: Sandbox, api: FlaskClient, hooks: Hooks) -> None:
    member = sb.add_patron(tier="Gold")
    sb.advance(days=3)
    hooks.take()
    sb.scenario("cancel_then_rejoin", members=member.id)
    events = hooks.take()
    assert [e for e, _ in events] == ["members:pledge:delete", "members:update", "members:pledge:create",
                                      "members:update"]
    deleted = events[0][1]["data"]["attributes"]
    assert deleted["last_charge_status"] == "Deleted" and deleted["patron_status"] == "former_patron"
    rejoined = events[-1][1]["data"]["attributes"]
    assert rejoined["last_charge_status"] == "Paid" and rejoined["last_charge_date"] == deleted["last_charge_date"]
    assert rejoined["lifetime_support_cents"] == 1000 and rejoined["pledge_relationship_start"] != deleted[
        "pledge_relationship_start"]
    attrs, tiers = served(api, sb, member)
    assert attrs["patron_status"] == "active_patron" and tiers == [sb.tier("Gold").id]


def test_delete_never_paid_sends_an_active_payload(sb: Sandbox, api: FlaskClient, hooks: Hooks) -> None:
    (member,) = sb.scenario("delete_never_paid", email="np@example.com", tier="Silver")
    events = hooks.take()
    assert [e for e, _ in events][-1] == "members:delete"
    body = events[-1][1]
    assert body["data"]["attributes"]["patron_status"] == "active_patron"
    assert body["data"]["attributes"]["last_charge_status"] is None
    assert body["data"]["attributes"]["lifetime_support_cents"] == 0
    assert body["data"]["relationships"]["currently_entitled_tiers"]["data"] == [
        {"id": sb.tier("Silver").id, "type": "tier"}]
    same_shape_as_fixture(body, "members_pledge_create.json")
    assert member.id not in listed(api, sb)
    paid = sb.add_patron(tier="Gold")
    with pytest.raises(SandboxError, match="never paid"):
        sb.scenario("delete_never_paid", members=[paid.id])


def test_amount_moves(sb: Sandbox, api: FlaskClient) -> None:
    euro = sb.add_patron(tier="Gold")
    new = sb.add_patron(tier="Silver")
    sb.scenario("amount_moves", percent=-3, kind="currency", members=euro.id)
    sb.scenario("amount_moves", percent=-10, kind="discount", members=new.id)
    attrs, tiers = served(api, sb, euro)
    assert attrs["currently_entitled_amount_cents"] == attrs["will_pay_amount_cents"] == 970
    assert tiers == [sb.tier("Gold").id]
    attrs, tiers = served(api, sb, new)
    assert attrs["currently_entitled_amount_cents"] == 450 and attrs["will_pay_amount_cents"] == 500
    assert tiers == [sb.tier("Silver").id]
    sb.advance_months(1)
    assert served(api, sb, new)[0]["currently_entitled_amount_cents"] == 500  # full price from the next charge
    assert served(api, sb, euro)[0]["lifetime_support_cents"] == 1000 + 970
    with pytest.raises(SandboxError, match="between"):
        sb.scenario("amount_moves", percent=-100)


@pytest.mark.parametrize(("settles", "status", "lifetime"), [(None, "Pending", 300), ("Paid", "Paid", 600),
                                                             ("Declined", "Declined", 300)])
def test_pending_after_decline(sb: Sandbox, api: FlaskClient, settles: str | None, status: str,
                               lifetime: int) -> None:
    member = sb.add_patron(tier="Bronze")
    sb.decline(member)
    sb.advance(hours=1)
    sb.scenario("pending_after_decline", settles=settles, hours=12)
    attrs, _ = served(api, sb, member)
    assert attrs["patron_status"] == "active_patron" and attrs["last_charge_status"] == "Pending"
    assert attrs["lifetime_support_cents"] == 300  # nothing was paid
    sb.advance(hours=12)
    attrs, _ = served(api, sb, member)
    assert attrs["last_charge_status"] == status and attrs["lifetime_support_cents"] == lifetime


def test_refunded_and_fraud(sb: Sandbox, api: FlaskClient) -> None:
    refunded = sb.add_patron(tier="Gold")
    fraud = sb.add_patron(tier="Silver")
    sb.scenario("charge_refunded", members=refunded.id)
    sb.scenario("charge_fraud", members=[fraud.id])
    attrs, _ = served(api, sb, refunded)
    assert attrs["last_charge_status"] == "Refunded" and attrs["lifetime_support_cents"] == 0
    assert attrs["patron_status"] == "active_patron"
    attrs, _ = served(api, sb, fraud)
    assert attrs["last_charge_status"] == "Fraud" and attrs["patron_status"] == "declined_patron"
    sb.advance(days=20)
    assert fraud.retries_done == 0 and fraud.last_charge_status == "Fraud"  # never retried


def test_scenario_errors(sb: Sandbox, api: FlaskClient) -> None:
    with pytest.raises(SandboxError, match="unknown scenario"):
        sb.scenario("leap_year")
    with pytest.raises(SandboxError, match="unexpected keyword"):
        sb.scenario("start_of_month", days=2)
    with pytest.raises(SandboxError, match="is not a paid-up"):
        sb.scenario("cancel_then_rejoin", members=sb.start_free_trial(tier="Gold").id)
    assert api.post("/_sandbox/scenarios/leap_year", json={}).status_code == 404
    bad = api.post("/_sandbox/scenarios/start_of_month", json={"hours": "soon"})
    assert bad.status_code == 400 and bad.get_json()["error"] == "hours must be a number"


def test_scenario_over_the_control_api(sb: Sandbox, api: FlaskClient) -> None:
    added = api.post("/_sandbox/patrons", json={"email": "c@example.com", "tier": "Gold"}).get_json()
    response = api.post("/_sandbox/scenarios/declined_for_months", json={"months": 2, "members": ["c@example.com"]})
    assert response.status_code == 200
    body = response.get_json()
    assert body["scenario"] == "declined_for_months" and body["now"].startswith("2024-03-15")
    assert [m["id"] for m in body["members"]] == [added["id"]]
    assert body["members"][0]["patron_status"] == "declined_patron"
    assert body["members"][0]["next_retry_date"] is None


@pytest.mark.patreon_sandbox(now=NOW, scenarios=[("annual_pledge", {"tier": "Silver"}), "charge_dates_missing"])
def test_the_pytest_marker_plays_scenarios(patreon_sandbox: Sandbox) -> None:
    (member,) = patreon_sandbox.members
    assert member.entitled_cents == 6000
    assert patreon_sandbox.blanked_attributes == {"last_charge_date"}


# -- every scenario's documents agree with the real payloads -----------------------------------------------------------

STATUSES = {"active_patron", "declined_patron", "former_patron", None}
CHARGE_STATUSES = {"Paid", "Declined", "Deleted", "Pending", "Refunded", "Fraud", "Other", None}  # Patreon's docs


def _real_date_format(value: str) -> bool:
    """Patreon's own format, as in every fixture: ``2023-12-29T05:26:19.000+00:00``."""
    return len(value) == 29 and value.endswith("+00:00") and value[19] == "." and bool(datetime.fromisoformat(value))


def agrees_with_fixtures(body: dict[str, Any]) -> None:
    """Keys per part exactly as in the real payloads; values within Patreon's documented domains and formats."""
    fixtures = [fixture_json(name) for name in ("members_pledge_create.json", "members_pledge_update.json",
                                                 "members_pledge_delete.json", "members_update_free_trial.json")]
    same_shape_as_fixture(body, "members_pledge_create.json")
    included_keys: dict[str, set[str]] = {}
    for real in fixtures:
        for resource in real["included"]:
            included_keys.setdefault(resource["type"], set()).update(resource["attributes"])
    for resource in body["included"]:
        assert set(resource["attributes"]) == included_keys[resource["type"]], resource["type"]
    attrs = body["data"]["attributes"]
    real_attrs = fixtures[0]["data"]["attributes"]
    for key, value in attrs.items():
        if value is not None and real_attrs[key] is not None:
            assert type(value) is type(real_attrs[key]), key
    assert attrs["patron_status"] in STATUSES and attrs["last_charge_status"] in CHARGE_STATUSES
    assert attrs["pledge_cadence"] in (1, 12, None)
    for key in ("last_charge_date", "next_charge_date", "pledge_relationship_start"):
        assert attrs[key] is None or _real_date_format(attrs[key]), (key, attrs[key])
    assert attrs["currently_entitled_amount_cents"] >= 0 and attrs["will_pay_amount_cents"] >= 0
    tiers = body["data"]["relationships"]["currently_entitled_tiers"]["data"]
    included_tiers = {r["id"] for r in body["included"] if r["type"] == "tier"}
    assert {t["id"] for t in tiers} <= included_tiers


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_every_scenario_serves_documents_like_patreons(name: str) -> None:
    sb = Sandbox(now=NOW, seed=23)
    api = create_sandbox_app(sb).test_client()
    hooks = Hooks(sb)
    sb.generate_members(40)
    paid = sb.add_patron("paid@example.com", tier="Gold")
    declined = sb.add_patron("declined@example.com", tier="Silver")
    sb.decline(declined)
    hooks.take()
    params: dict[str, Any] = {"members": [paid.id]} if name in ("start_of_month", "declined_for_months",
                                                               "cancel_then_rejoin", "amount_moves",
                                                               "charge_refunded", "charge_fraud") else {}
    if name in ("pending_after_decline", "cancel_after_decline"):
        params = {"members": [declined.id]}
    if name == "pending_after_decline":
        params["settles"] = "Paid"
    played = sb.scenario(name, **params)
    assert played
    sb.advance(days=2)
    bodies = hooks.take()
    if name != "charge_dates_missing":  # an outage of a field changes no member: no webhook
        assert bodies
    for _event, body in bodies:
        agrees_with_fixtures(body)
    for member in played:
        if member in sb.members:  # delete_never_paid removes its member
            attrs, _ = served(api, sb, member)
            assert attrs["patron_status"] in STATUSES and attrs["last_charge_status"] in CHARGE_STATUSES
    listing = listed(api, sb)
    assert len(listing) == len(sb.members)
