"""JSON:API documents -> snapshots: Patreon's real webhook payloads, pages, identity, campaigns, webhooks, tokens, and
everything malformed raising MalformedDocument (and only that)."""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_patronlock.patreon import (
    CampaignSnapshot,
    MalformedDocument,
    MemberSnapshot,
    TierSnapshot,
    TokenSet,
    load_json,
    parse_campaign,
    parse_campaigns,
    parse_datetime,
    parse_identity,
    parse_member_document,
    parse_members_page,
    parse_token_response,
    parse_webhook,
    parse_webhooks,
)
from tests.helpers.patreon import FIXTURE_NAMES, fixture_bytes


def fixture(name: str) -> dict[str, Any]:
    return json.loads(fixture_bytes(name))


MEMBER_ID = "38c264ba-0612-4bb9-bc33-f9755cc68bb0"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# --------------------------------------------------------------------------------------------------------------------
# the four real payloads
# --------------------------------------------------------------------------------------------------------------------


def test_pledge_create_payload() -> None:
    member = parse_member_document(fixture("members_pledge_create.json"))
    assert member == MemberSnapshot(
        member_id=MEMBER_ID,
        campaign_id="11539233",
        user_id="111836593",
        email="kopi@pangea.com",
        email_verified=None,
        full_name="Kopi",
        patron_status="active_patron",
        last_charge_status="Paid",
        last_charge_date=utc(2023, 12, 29, 5, 26, 19),
        next_charge_date=utc(2024, 1, 29),
        entitled_cents=500,
        entitled_tier_ids=(),
        will_pay_cents=500,
        lifetime_cents=0,
        pledge_start=datetime(2023, 12, 29, 5, 26, 17, 634000, tzinfo=UTC),
        pledge_cadence=1,
        is_free_trial=False,
        is_gifted=False,
        is_follower=False,
        tiers=(),
        user=member.user,
    )
    assert member.user is not None
    assert member.user.id == "111836593"
    assert member.user.full_name == "Kopi"
    assert member.user.url == "https://www.patreon.com/user?u=111836593"
    assert member.user.email is None and member.user.email_verified is None


def test_pledge_update_payload_keeps_empty_tiers_and_the_included_free_tier() -> None:
    member = parse_member_document(fixture("members_pledge_update.json"))
    assert member.entitled_cents == 1000
    assert member.will_pay_cents == 1000
    assert member.entitled_tier_ids == ()
    assert member.tiers == (
        TierSnapshot(
            id="21926168",
            title="Free",
            amount_cents=0,
            published=True,
            description="",
            url="/checkout/11539233?rid=21926168",
            patron_count=5,
            discord_role_ids=(),
        ),
    )
    assert member.patron_status == "active_patron"


def test_pledge_delete_payload() -> None:
    member = parse_member_document(fixture("members_pledge_delete.json"))
    assert member.patron_status == "former_patron"
    assert member.last_charge_status == "Deleted"
    assert member.next_charge_date == utc(2024, 1, 29)
    assert member.last_charge_date == utc(2023, 12, 29, 5, 26, 19)
    assert member.entitled_cents == 0
    assert member.will_pay_cents == 0
    assert member.entitled_tier_ids == ()


def test_free_trial_payload() -> None:
    member = parse_member_document(fixture("members_update_free_trial.json"))
    assert member.is_free_trial is True
    assert member.entitled_tier_ids == ("21926235", "21926168")
    assert [(t.id, t.title, t.amount_cents) for t in member.tiers] == [
        ("21926235", "Paid", 100),
        ("21926168", "Free", 0),
    ]
    assert member.tiers[0].description == "Access to exclusive content and more"
    assert member.pledge_cadence is None
    assert member.last_charge_date is None
    assert member.last_charge_status is None
    assert member.next_charge_date is None
    assert member.entitled_cents == 100
    assert member.will_pay_cents == 0
    assert member.pledge_start == utc(2023, 12, 29, 3, 40, 28)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_every_payload_parses_from_raw_bytes_with_aware_utc_datetimes(name: str) -> None:
    member = parse_member_document(load_json(fixture_bytes(name)))
    assert member.member_id == MEMBER_ID
    assert member.campaign_id == "11539233"
    assert member.user_id == "111836593"
    for value in (member.last_charge_date, member.next_charge_date, member.pledge_start):
        if value is not None:
            assert value.tzinfo is UTC


# --------------------------------------------------------------------------------------------------------------------
# members: attribute rules
# --------------------------------------------------------------------------------------------------------------------


def member_resource(
    member_id: str = "m1", *, tiers: tuple[str, ...] = (), user: str | None = "u1", **attrs: Any
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "type": "member",
        "id": member_id,
        "attributes": {
            "currently_entitled_amount_cents": 500,
            "patron_status": "active_patron",
            "last_charge_status": "Paid",
            "last_charge_date": "2024-03-01T10:00:00.000+00:00",
            "next_charge_date": "2024-04-01T00:00:00.000+00:00",
            "email": f"{member_id}@example.com",
            **attrs,
        },
        "relationships": {
            "campaign": {"data": {"type": "campaign", "id": "c1"}},
            "currently_entitled_tiers": {"data": [{"type": "tier", "id": t} for t in tiers]},
        },
    }
    if user is not None:
        resource["relationships"]["user"] = {"data": {"type": "user", "id": user}}
    return resource


def user_resource(user_id: str = "u1", **attrs: Any) -> dict[str, Any]:
    return {"type": "user", "id": user_id, "attributes": {"full_name": f"User {user_id}", **attrs}}


def tier_resource(tier_id: str, amount: int, title: str = "") -> dict[str, Any]:
    return {"type": "tier", "id": tier_id, "attributes": {"amount_cents": amount, "title": title or f"T{tier_id}"}}


def test_sparse_fieldsets_take_the_defaults() -> None:
    member = parse_member_document({"data": {"type": "member", "id": "m1"}})
    assert member == MemberSnapshot(member_id="m1")
    member = parse_member_document({"data": {"type": "member", "id": "m1", "attributes": {}, "relationships": {}}})
    assert member == MemberSnapshot(member_id="m1")


def test_nulls_take_the_defaults() -> None:
    attrs = dict.fromkeys(
        [
            "currently_entitled_amount_cents",
            "will_pay_amount_cents",
            "campaign_lifetime_support_cents",
            "is_free_trial",
            "is_gifted",
            "full_name",
            "email",
            "pledge_cadence",
            "last_charge_date",
        ]
    )
    member = parse_member_document({"data": {"type": "member", "id": "m1", "attributes": attrs}})
    assert member == MemberSnapshot(member_id="m1")


def test_lifetime_prefers_campaign_lifetime_then_falls_back() -> None:
    both = member_resource(campaign_lifetime_support_cents=1500, lifetime_support_cents=900)
    assert parse_member_document({"data": both}).lifetime_cents == 1500
    old = member_resource(lifetime_support_cents=900)
    assert parse_member_document({"data": old}).lifetime_cents == 900
    null_new = member_resource(campaign_lifetime_support_cents=None, lifetime_support_cents=700)
    assert parse_member_document({"data": null_new}).lifetime_cents == 700


def test_gifted_and_cadence() -> None:
    member = parse_member_document({"data": member_resource(is_gifted=True, pledge_cadence=12)})
    assert member.is_gifted is True
    assert member.pledge_cadence == 12


def test_email_verified_comes_from_the_user_when_the_addresses_agree() -> None:
    doc = {
        "data": member_resource(email="Kopi@Example.com"),
        "included": [user_resource(email="kopi@example.com", is_email_verified=True)],
    }
    member = parse_member_document(doc)
    assert member.email == "Kopi@Example.com"
    assert member.email_verified is True
    assert member.user is not None and member.user.email == "kopi@example.com"


def test_email_verified_is_unknown_when_the_member_email_differs_from_the_users() -> None:
    doc = {
        "data": member_resource(email="other@example.com"),
        "included": [user_resource(email="kopi@example.com", is_email_verified=True)],
    }
    member = parse_member_document(doc)
    assert member.email == "other@example.com"
    assert member.email_verified is None


def test_member_without_email_uses_the_users() -> None:
    resource = member_resource()
    del resource["attributes"]["email"]
    doc = {"data": resource, "included": [user_resource(email="u@example.com", is_email_verified=False)]}
    member = parse_member_document(doc)
    assert member.email == "u@example.com"
    assert member.email_verified is False
    assert member.full_name == "User u1"  # from the user, as the member sent none


def test_datetimes() -> None:
    assert parse_datetime(None) is None
    assert parse_datetime("2023-12-29T05:26:19.000+00:00") == utc(2023, 12, 29, 5, 26, 19)
    assert parse_datetime("2023-12-29T05:26:19Z") == utc(2023, 12, 29, 5, 26, 19)
    converted = parse_datetime("2023-12-29T07:26:19.000+02:00")
    assert converted == utc(2023, 12, 29, 5, 26, 19) and converted is not None and converted.tzinfo is UTC
    naive = parse_datetime("2023-12-29T05:26:19")
    assert naive == utc(2023, 12, 29, 5, 26, 19)
    other_zone = parse_datetime("2024-01-01T00:00:00-05:00")
    assert other_zone == datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=-5)))
    assert other_zone is not None and other_zone.utcoffset() == timedelta(0)


# --------------------------------------------------------------------------------------------------------------------
# member pages
# --------------------------------------------------------------------------------------------------------------------


def members_page(
    ids: list[str], *, next_cursor: str | None = None, total: int | None = None, cursors: bool = True
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "data": [member_resource(i, tiers=("t1",), user=f"u-{i}") for i in ids],
        "included": [tier_resource("t1", 500, "Gold")] + [user_resource(f"u-{i}") for i in ids],
        "meta": {"pagination": {"total": total if total is not None else len(ids)}},
    }
    if cursors:
        doc["meta"]["pagination"]["cursors"] = {"next": next_cursor}
    return doc


def test_members_page() -> None:
    page = parse_members_page(members_page(["a", "b", "c"], next_cursor="CUR2", total=7), cursor="CUR1")
    assert [m.member_id for m in page.members] == ["a", "b", "c"]
    assert page.next_cursor == "CUR2"
    assert page.total == 7
    assert page.cursor == "CUR1"
    assert page.raw_count == 3
    first = page.members[0]
    assert first.user_id == "u-a" and first.user is not None and first.user.full_name == "User u-a"
    assert first.entitled_tier_ids == ("t1",)
    assert first.tiers == (TierSnapshot(id="t1", title="Gold", amount_cents=500),)
    # one shared tuple of tier snapshots, not a copy per member
    assert all(m.tiers is first.tiers for m in page.members)


def test_last_page_and_missing_meta() -> None:
    page = parse_members_page(members_page(["a"], next_cursor=None))
    assert page.next_cursor is None
    bare = parse_members_page({"data": []})
    assert bare.members == () and bare.next_cursor is None and bare.total is None and bare.raw_count == 0


def test_next_cursor_from_links_next_when_cursors_are_absent() -> None:
    doc = members_page(["a"], cursors=False)
    doc["links"] = {
        "next": "https://www.patreon.com/api/oauth2/v2/campaigns/1/members?page%5Bcount%5D=2&page%5Bcursor%5D=03ZwK%2Fx"
    }
    assert parse_members_page(doc).next_cursor == "03ZwK/x"
    doc["links"] = {"next": {"href": "https://x.test/m?page[cursor]=abc"}}
    assert parse_members_page(doc).next_cursor == "abc"
    doc["links"] = {"next": None}
    assert parse_members_page(doc).next_cursor is None


def test_cursors_win_over_links() -> None:
    doc = members_page(["a"], next_cursor=None)
    doc["links"] = {"next": "https://x.test/m?page[cursor]=stale"}
    assert parse_members_page(doc).next_cursor is None


def test_non_strict_page_skips_bad_members_and_says_how_many() -> None:
    doc = members_page(["a", "b", "c"])
    doc["data"][1]["attributes"]["currently_entitled_amount_cents"] = "500"
    with pytest.raises(MalformedDocument, match=r"data\[1\] \(member 'b'\).*currently_entitled_amount_cents"):
        parse_members_page(doc)
    page = parse_members_page(doc, strict=False)
    assert [m.member_id for m in page.members] == ["a", "c"]
    assert page.raw_count == 3


def test_a_large_page_parses() -> None:
    ids = [f"m{i}" for i in range(1000)]
    page = parse_members_page(members_page(ids, next_cursor="n"))
    assert len(page.members) == 1000
    assert page.members[-1].email == "m999@example.com"


# --------------------------------------------------------------------------------------------------------------------
# identity, campaigns, webhooks, tokens
# --------------------------------------------------------------------------------------------------------------------


def identity_doc() -> dict[str, Any]:
    return {
        "data": {
            "type": "user",
            "id": "u1",
            "attributes": {"full_name": "Kopi", "email": "kopi@example.com", "is_email_verified": True},
            "relationships": {
                "memberships": {
                    "data": [
                        {"type": "member", "id": "m-c1"},
                        {"type": "member", "id": "m-c2"},
                        {"type": "member", "id": "m-not-included"},
                    ]
                }
            },
        },
        "included": [
            {
                "type": "member",
                "id": "m-c1",
                "attributes": {"currently_entitled_amount_cents": 500, "patron_status": "active_patron"},
                "relationships": {
                    "campaign": {"data": {"type": "campaign", "id": "c1"}},
                    "currently_entitled_tiers": {"data": [{"type": "tier", "id": "t1"}]},
                },
            },
            {
                "type": "member",
                "id": "m-c2",
                "attributes": {"currently_entitled_amount_cents": 0, "patron_status": "former_patron"},
                "relationships": {
                    "campaign": {"data": {"type": "campaign", "id": "c2"}},
                    "currently_entitled_tiers": {"data": [{"type": "tier", "id": "t9"}]},
                },
            },
            {"type": "campaign", "id": "c1", "attributes": {}},
            {"type": "campaign", "id": "c2", "attributes": {}},
            tier_resource("t1", 500, "Gold"),
            tier_resource("t9", 100, "Other campaign's tier"),
        ],
    }


def test_identity() -> None:
    identity = parse_identity(identity_doc())
    assert identity.user.id == "u1"
    assert identity.user.email == "kopi@example.com" and identity.user.email_verified is True
    assert [m.member_id for m in identity.memberships] == ["m-c1", "m-c2"]
    c1 = identity.membership_for("c1")
    assert c1 is not None
    assert c1.user_id == "u1" and c1.user == identity.user
    assert c1.email == "kopi@example.com" and c1.email_verified is True
    assert c1.entitled_cents == 500 and c1.entitled_tier_ids == ("t1",)
    assert [t.title for t in c1.tiers] == ["Gold"]  # its own tiers, not the other campaign's
    c2 = identity.membership_for("c2")
    assert c2 is not None and [t.id for t in c2.tiers] == ["t9"]
    assert identity.membership_for("nope") is None


def test_identity_without_memberships() -> None:
    identity = parse_identity({"data": {"type": "user", "id": "u1", "attributes": {"full_name": "Solo"}}})
    assert identity.user.full_name == "Solo"
    assert identity.memberships == ()


def campaign_resource(campaign_id: str, tier_ids: list[str] | None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "type": "campaign",
        "id": campaign_id,
        "attributes": {
            "creation_name": "comics",
            "vanity": "kopi",
            "url": "https://www.patreon.com/kopi",
            "pledge_url": "/checkout/1",
            "patron_count": 5,
            "is_monthly": True,
        },
        "relationships": {"creator": {"data": {"type": "user", "id": "creator-1"}}},
    }
    if tier_ids is not None:
        resource["relationships"]["tiers"] = {"data": [{"type": "tier", "id": t} for t in tier_ids]}
    return resource


def test_campaign() -> None:
    doc = {
        "data": campaign_resource("c1", ["t2", "t1"]),
        "included": [
            tier_resource("t1", 100, "Bronze"),
            tier_resource("t2", 500, "Gold"),
            {"type": "user", "id": "creator-1", "attributes": {}},
        ],
    }
    campaign = parse_campaign(doc)
    assert campaign == CampaignSnapshot(
        id="c1",
        creation_name="comics",
        vanity="kopi",
        url="https://www.patreon.com/kopi",
        pledge_url="/checkout/1",
        patron_count=5,
        is_monthly=True,
        creator_user_id="creator-1",
        tiers=(
            TierSnapshot(id="t2", title="Gold", amount_cents=500),
            TierSnapshot(id="t1", title="Bronze", amount_cents=100),
        ),
    )
    # without a tiers relationship, every included tier belongs to the one campaign
    doc["data"] = campaign_resource("c1", None)
    assert [t.id for t in parse_campaign(doc).tiers] == ["t1", "t2"]


def test_campaigns() -> None:
    doc = {
        "data": [campaign_resource("c1", ["t1"]), campaign_resource("c2", [])],
        "included": [tier_resource("t1", 100)],
    }
    campaigns = parse_campaigns(doc)
    assert [(c.id, [t.id for t in c.tiers]) for c in campaigns] == [("c1", ["t1"]), ("c2", [])]
    assert parse_campaigns({"data": []}) == []


def webhook_resource(webhook_id: str = "w1") -> dict[str, Any]:
    return {
        "type": "webhook",
        "id": webhook_id,
        "attributes": {
            "last_attempted_at": "2024-02-01T12:00:00.000+00:00",
            "num_consecutive_times_failed": 2,
            "paused": False,
            "secret": "whsec",
            "triggers": ["members:pledge:create", "members:update"],
            "uri": "https://example.com/hook",
        },
        "relationships": {"campaign": {"data": {"type": "campaign", "id": "c1"}}},
    }


def test_webhooks() -> None:
    webhook = parse_webhook({"data": webhook_resource()})
    assert webhook.id == "w1"
    assert webhook.uri == "https://example.com/hook"
    assert webhook.triggers == ("members:pledge:create", "members:update")
    assert webhook.num_consecutive_times_failed == 2
    assert webhook.last_attempted_at == utc(2024, 2, 1, 12)
    assert webhook.secret == "whsec" and webhook.campaign_id == "c1" and webhook.paused is False
    assert [w.id for w in parse_webhooks({"data": [webhook_resource("a"), webhook_resource("b")]})] == ["a", "b"]


def test_token_response() -> None:
    now = utc(2024, 1, 1, 12)
    tokens = parse_token_response(
        {
            "access_token": "AT",
            "refresh_token": "RT",
            "expires_in": 2678400,
            "scope": "identity identity[email] identity.memberships",
            "token_type": "Bearer",
            "version": "0.0.1",
        },
        now=now,
    )
    assert tokens == TokenSet(
        access_token="AT",
        refresh_token="RT",
        expires_at=now + timedelta(seconds=2678400),
        scope=("identity", "identity[email]", "identity.memberships"),
    )
    assert tokens.expires_at is not None and tokens.expires_at.tzinfo is UTC
    assert "AT" not in repr(tokens) and "RT" not in repr(tokens)


def test_token_response_defaults_and_variants() -> None:
    tokens = parse_token_response({"access_token": "AT"})
    assert tokens.refresh_token is None and tokens.expires_at is None and tokens.scope == ()
    assert tokens.token_type == "Bearer"
    before = datetime.now(UTC)
    soon = parse_token_response({"access_token": "AT", "expires_in": "60"})
    assert soon.expires_at is not None and before + timedelta(seconds=59) <= soon.expires_at
    assert parse_token_response({"access_token": "AT", "scope": ["a", "b"]}).scope == ("a", "b")
    at = parse_token_response({"access_token": "AT", "expires_at": 1704110400})
    assert at.expires_at == utc(2024, 1, 1, 12)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "expected a JSON object"),
        ({}, "access_token"),
        ({"access_token": ""}, "access_token"),
        ({"access_token": 5}, "access_token"),
        ({"access_token": "AT", "refresh_token": 5}, "refresh_token"),
        ({"access_token": "AT", "expires_in": "soon"}, "expires_in"),
        ({"access_token": "AT", "expires_in": -1}, "expires_in"),
        ({"access_token": "AT", "expires_in": True}, "expires_in"),
        ({"access_token": "AT", "expires_in": 10**20}, "expires_in"),
        ({"access_token": "AT", "scope": 5}, "scope"),
        ({"access_token": "AT", "token_type": 5}, "token_type"),
        ({"access_token": "AT", "expires_at": "x"}, "expires_at"),
        ({"access_token": "AT", "expires_at": 10**20}, "expires_at"),
    ],
)
def test_malformed_token_responses(data: Any, message: str) -> None:
    with pytest.raises(MalformedDocument, match=message) as info:
        parse_token_response(data)
    assert "AT" not in str(info.value)


# --------------------------------------------------------------------------------------------------------------------
# malformed documents
# --------------------------------------------------------------------------------------------------------------------


def _create() -> dict[str, Any]:
    return fixture("members_pledge_create.json")


def _set(path: str, value: Any) -> dict[str, Any]:
    doc = _create()
    *parents, last = path.split(".")
    target: Any = doc
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return doc


def _delete(path: str) -> dict[str, Any]:
    doc = _create()
    *parents, last = path.split(".")
    target: Any = doc
    for key in parents:
        target = target[key]
    del target[last]
    return doc


MALFORMED_MEMBER_DOCS = [
    pytest.param(None, "expected a JSON object, got null", id="null"),
    pytest.param([], "expected a JSON object, got array", id="list"),
    pytest.param("data", "expected a JSON object, got str", id="string"),
    pytest.param({}, "no 'data'", id="no-data"),
    pytest.param({"errors": [{"status": "404"}]}, "'errors' instead of 'data'", id="errors-document"),
    pytest.param({"data": None}, "got null", id="data-null"),
    pytest.param({"data": []}, "got array", id="data-array"),
    pytest.param(_set("data.type", "user"), "expected type 'member', got 'user'", id="wrong-type"),
    pytest.param(_delete("data.type"), "'type' missing", id="type-missing"),
    pytest.param(_delete("data.id"), "'id' missing", id="id-missing"),
    pytest.param(_set("data.id", 38), "'id' missing or not a non-empty string", id="id-int"),
    pytest.param(_set("data.id", ""), "'id' missing or not a non-empty string", id="id-empty"),
    pytest.param(_set("data.attributes", []), "attributes: expected an object, got array", id="attributes-array"),
    pytest.param(
        _set("data.attributes.currently_entitled_amount_cents", "500"),
        "currently_entitled_amount_cents: expected an integer, got str",
        id="amount-string",
    ),
    pytest.param(
        _set("data.attributes.currently_entitled_amount_cents", 5.0),
        "currently_entitled_amount_cents: expected an integer, got float",
        id="amount-float",
    ),
    pytest.param(
        _set("data.attributes.will_pay_amount_cents", True),
        "will_pay_amount_cents: expected an integer, got boolean",
        id="amount-bool",
    ),
    pytest.param(
        _set("data.attributes.campaign_lifetime_support_cents", {}),
        "campaign_lifetime_support_cents: expected an integer, got object",
        id="lifetime-object",
    ),
    pytest.param(_set("data.attributes.pledge_cadence", "1"), "pledge_cadence", id="cadence-string"),
    pytest.param(_set("data.attributes.is_free_trial", "false"), "is_free_trial: expected a boolean", id="bool-str"),
    pytest.param(_set("data.attributes.is_gifted", 0), "is_gifted: expected a boolean", id="bool-int"),
    pytest.param(_set("data.attributes.patron_status", 1), "patron_status: expected a string", id="status-int"),
    pytest.param(_set("data.attributes.full_name", ["x"]), "full_name: expected a string", id="name-array"),
    pytest.param(_set("data.attributes.last_charge_date", "yesterday"), "last_charge_date: not an ISO", id="bad-date"),
    pytest.param(_set("data.attributes.next_charge_date", "2024-13-45T00:00:00"), "next_charge_date", id="bad-month"),
    pytest.param(
        _set("data.attributes.pledge_relationship_start", 1703827577), "pledge_relationship_start", id="date-int"
    ),
    pytest.param(_set("data.relationships", []), "relationships: expected an object", id="relationships-array"),
    pytest.param(_set("data.relationships.campaign", "11539233"), "relationships.campaign", id="relationship-string"),
    pytest.param(_set("data.relationships.campaign.data", []), "relationships.campaign.data", id="to-one-array"),
    pytest.param(
        _set("data.relationships.campaign.data", {"type": "campaign"}), "'id' missing", id="to-one-without-id"
    ),
    pytest.param(
        _set("data.relationships.user.data", {"type": "campaign", "id": "1"}),
        "expected type 'user', got 'campaign'",
        id="to-one-wrong-type",
    ),
    pytest.param(
        _set("data.relationships.currently_entitled_tiers.data", {"type": "tier", "id": "1"}),
        "currently_entitled_tiers.data: expected an array",
        id="to-many-object",
    ),
    pytest.param(
        _set("data.relationships.currently_entitled_tiers.data", [{"type": "benefit", "id": "1"}]),
        "expected type 'tier', got 'benefit'",
        id="to-many-wrong-type",
    ),
    pytest.param(
        _set("data.relationships.currently_entitled_tiers.data", ["21926168"]),
        "expected a resource identifier object",
        id="to-many-bare-ids",
    ),
    pytest.param(_set("included", {}), "included: expected an array", id="included-object"),
    pytest.param(_set("included.0", "campaign"), r"included\[0\]: expected a resource object", id="included-string"),
    pytest.param(_set("included.1", {"type": "user"}), r"included\[1\]: 'type' or 'id'", id="included-no-id"),
    pytest.param(
        _set("included.1", {"type": "user", "id": "111836593", "attributes": {"full_name": 7}}),
        "included user '111836593': full_name: expected a string",
        id="included-user-bad",
    ),
    pytest.param(
        _set("included.1", {"type": "user", "id": "111836593", "attributes": {"is_email_verified": "yes"}}),
        "is_email_verified: expected a boolean or null",
        id="included-user-bad-bool",
    ),
    pytest.param(
        _set("included.1", {"type": "tier", "id": "t", "attributes": {"amount_cents": "1.00"}}),
        "included tier 't': amount_cents: expected an integer",
        id="included-tier-bad",
    ),
    pytest.param(
        _set("included.1", {"type": "tier", "id": "t", "attributes": {"discord_role_ids": [1]}}),
        r"discord_role_ids\[\]: expected a string",
        id="included-tier-bad-roles",
    ),
]


@pytest.mark.parametrize(("doc", "message"), MALFORMED_MEMBER_DOCS)
def test_malformed_member_documents(doc: Any, message: str) -> None:
    with pytest.raises(MalformedDocument, match=message) as info:
        parse_member_document(doc)
    # the message names the place, never the values (they may be personal data)
    assert "kopi@pangea.com" not in str(info.value)


def test_errors_name_the_member() -> None:
    doc = _set("data.attributes.currently_entitled_amount_cents", "500")
    with pytest.raises(MalformedDocument, match=f"member '{MEMBER_ID}'"):
        parse_member_document(doc)


MALFORMED_PAGES = [
    pytest.param({"data": {}}, "expected an array of 'member' resources, got object", id="data-object"),
    pytest.param({"data": [1]}, r"data\[0\]: expected a resource object, got int", id="data-item-int"),
    pytest.param({"data": [{"type": "user", "id": "1"}]}, r"data\[0\]: expected type 'member'", id="wrong-type"),
    pytest.param({"data": [{"type": "member"}]}, r"data\[0\]: 'id' missing", id="no-id"),
    pytest.param({"data": [], "meta": []}, "meta: expected an object", id="meta-array"),
    pytest.param({"data": [], "meta": {"pagination": 1}}, "meta.pagination: expected an object", id="pagination-int"),
    pytest.param({"data": [], "meta": {"pagination": {"total": "5"}}}, "total: expected an integer", id="total-str"),
    pytest.param({"data": [], "meta": {"pagination": {"cursors": []}}}, "cursors: expected an object", id="cursors"),
    pytest.param(
        {"data": [], "meta": {"pagination": {"cursors": {"next": 5}}}}, "cursors.next: expected a string", id="next"
    ),
    pytest.param({"data": [], "links": "x"}, "links: expected an object", id="links-string"),
    pytest.param({"data": [], "links": {"next": 5}}, "links.next: expected a URL string", id="links-next-int"),
    pytest.param({"data": [], "links": {"next": "http://[::1"}}, "links.next: not a URL", id="links-next-bad-url"),
]


@pytest.mark.parametrize(("doc", "message"), MALFORMED_PAGES)
def test_malformed_pages(doc: Any, message: str) -> None:
    with pytest.raises(MalformedDocument, match=message):
        parse_members_page(doc)


@pytest.mark.parametrize(
    ("parser", "doc", "message"),
    [
        (parse_identity, {"data": []}, "expected a 'user' resource object"),
        (parse_identity, {"data": {"type": "member", "id": "1"}}, "expected type 'user'"),
        (
            parse_identity,
            {"data": {"type": "user", "id": "1", "relationships": {"memberships": {"data": {}}}}},
            "memberships.data: expected an array",
        ),
        (
            parse_identity,
            {
                "data": {
                    "type": "user",
                    "id": "1",
                    "relationships": {"memberships": {"data": [{"type": "member", "id": "m"}]}},
                },
                "included": [{"type": "member", "id": "m", "attributes": {"currently_entitled_amount_cents": "5"}}],
            },
            "included member 'm': currently_entitled_amount_cents",
        ),
        (parse_campaign, {"data": [{"type": "campaign", "id": "1"}]}, "expected a 'campaign' resource object"),
        (
            parse_campaign,
            {"data": {"type": "campaign", "id": "1", "attributes": {"patron_count": "5"}}},
            "patron_count",
        ),
        (parse_campaigns, {"data": {"type": "campaign", "id": "1"}}, "expected an array of 'campaign'"),
        (parse_campaigns, {"data": [{"type": "campaign", "id": "1", "attributes": {"is_monthly": 1}}]}, "is_monthly"),
        (
            parse_webhook,
            {"data": {"type": "webhook", "id": "1", "attributes": {"triggers": "members:create"}}},
            "triggers",
        ),
        (parse_webhook, {"data": {"type": "webhook", "id": "1", "attributes": {"paused": "no"}}}, "paused"),
        (
            parse_webhooks,
            {"data": [{"type": "webhook", "id": "1", "attributes": {"last_attempted_at": 5}}]},
            "last_att",
        ),
        (parse_webhooks, {"data": None}, "expected an array of 'webhook'"),
    ],
)
def test_malformed_other_documents(parser: Any, doc: Any, message: str) -> None:
    with pytest.raises(MalformedDocument, match=message):
        parser(doc)


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff\xfe\x00", "not json", b"[" * 100_000])
def test_load_json_rejects_junk(raw: bytes | str) -> None:
    with pytest.raises(MalformedDocument, match="not valid JSON"):
        load_json(raw)


# --------------------------------------------------------------------------------------------------------------------
# property tests: junk raises MalformedDocument and nothing else
# --------------------------------------------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
# values that look a little like JSON:API, so the parsers get past the first checks
jsonapi_keys = st.sampled_from(
    ["data", "included", "type", "id", "attributes", "relationships", "meta", "pagination", "cursors", "next", "links"]
)
resource_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["member", "user", "tier", "campaign", "webhook"]) | json_scalars, "id": json_scalars},
    optional={
        "attributes": st.dictionaries(
            st.sampled_from(
                [
                    "currently_entitled_amount_cents",
                    "last_charge_date",
                    "is_free_trial",
                    "email",
                    "amount_cents",
                    "triggers",
                    "full_name",
                    "is_email_verified",
                ]
            ),
            json_values,
        )
        | json_values,
        "relationships": st.dictionaries(
            st.sampled_from(["user", "campaign", "currently_entitled_tiers", "memberships", "tiers"]),
            st.fixed_dictionaries({"data": json_values | st.lists(json_values, max_size=3)}) | json_values,
        )
        | json_values,
    },
)
documents = st.fixed_dictionaries(
    {"data": resource_like | st.lists(resource_like, max_size=3) | json_values},
    optional={
        "included": st.lists(resource_like, max_size=4) | json_values,
        "meta": st.dictionaries(jsonapi_keys, json_values) | json_values,
        "links": st.dictionaries(jsonapi_keys, json_values | st.text()) | json_values,
    },
)

PARSERS: list[Callable[[Any], object]] = [
    parse_member_document,
    parse_members_page,
    parse_identity,
    parse_campaign,
    parse_campaigns,
    parse_webhook,
    parse_webhooks,
    parse_token_response,
]


def _only_malformed(doc: Any) -> None:
    for parser in PARSERS:
        with contextlib.suppress(MalformedDocument):
            parser(doc)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values | documents)
def test_junk_raises_only_malformed_document(doc: Any) -> None:
    _only_malformed(doc)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(_paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(_paths(item, (*prefix, index)))
    return found


FREE_TRIAL = fixture("members_update_free_trial.json")
FREE_TRIAL_PATHS = _paths(FREE_TRIAL)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(FREE_TRIAL_PATHS), json_values)
def test_a_real_payload_with_one_part_replaced_by_junk(path: tuple[Any, ...], junk: Any) -> None:
    doc = copy.deepcopy(FREE_TRIAL)
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = junk
    try:
        member = parse_member_document(doc)
    except MalformedDocument:
        return
    assert isinstance(member, MemberSnapshot)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_raw_junk_raises_only_malformed_document(raw: bytes | str) -> None:
    try:
        doc = load_json(raw)
    except MalformedDocument:
        return
    _only_malformed(doc)


# -- values no column or date can hold ---------------------------------------------------------------------------------


def _with(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    doc = fixture("members_pledge_update.json")
    target = doc["data"]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


_ATTR = ("attributes",)


@pytest.mark.parametrize(
    ("path", "fits", "overflows"),
    [
        ((*_ATTR, "currently_entitled_amount_cents"), 2**31 - 1, 2**31),
        ((*_ATTR, "will_pay_amount_cents"), -(2**31), -(2**31) - 1),
        ((*_ATTR, "campaign_lifetime_support_cents"), 2**63 - 1, 2**63),
        ((*_ATTR, "pledge_cadence"), 12, 2**31 - 1),
        ((*_ATTR, "last_charge_date"), "2999-12-31T00:00:00+00:00", "9999-12-31T23:59:59+00:00"),
        ((*_ATTR, "pledge_relationship_start"), "1900-01-01T00:00:00+00:00", "0001-01-01T00:00:00+00:00"),
        ((*_ATTR, "patron_status"), "active_patron", "x" * 33),
        ((*_ATTR, "email"), "kopi@pangea.com", "kopi\x00@pangea.com"),
        (("id",), "m" * 64, "m" * 65),
        (("id",), "38c264ba", "38c2,64ba"),
        (("relationships", "campaign", "data", "id"), "11539233", "115\x0039233"),
    ],
    ids=["int32-max", "int32-min", "int64", "cadence", "year-9999", "year-1", "status-length", "nul", "id-length",
         "id-comma", "campaign-nul"],
)
def test_values_no_column_or_date_holds_are_malformed(path: tuple[str, ...], fits: Any, overflows: Any) -> None:
    parse_member_document(_with(path, fits))
    with pytest.raises(MalformedDocument, match=path[-1] if path[-1] != "id" else "id"):
        parse_member_document(_with(path, overflows))


def test_a_patrons_long_or_odd_name_is_cut_to_its_column_not_a_malformed_page() -> None:
    """A name is shown, never decided on: one patron's 1,000-character name with a NUL in it must not make every sync
    page malformed (and so every run incomplete, revoking nobody ever)."""
    member = parse_member_document(_with((*_ATTR, "full_name"), "Ada\x00" + "x" * 1000))
    assert member.full_name == "Ada" + "x" * 252 and len(member.full_name) == 255


def test_the_limits_are_the_columns() -> None:
    """The parser's limits are the tables' (a column widened or narrowed without the parser would overflow again)."""
    from sqlalchemy import MetaData

    from flask_patronlock.models import tables_for
    from flask_patronlock.patreon import jsonapi

    tables = tables_for(MetaData())
    p, t = tables.patrons.c, tables.tiers.c
    assert jsonapi.MAX_ID_LENGTH == p.member_id.type.length == t.id.type.length == p.campaign_id.type.length
    for key, column in [("email", p.email), ("full_name", p.full_name), ("patron_status", p.patron_status),
                        ("last_charge_status", p.last_charge_status), ("title", t.title), ("url", t.url)]:
        assert jsonapi._MAX_LENGTH[key] == column.type.length, key
