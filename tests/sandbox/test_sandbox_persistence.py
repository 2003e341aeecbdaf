"""Saving a sandbox and loading it back (``Sandbox.dump_state`` / ``Sandbox.load_state``): the loaded one serves the
same documents, bills the same way, honours the same tokens, delivers the same queued webhooks, runs what scenarios
scheduled, and never hands out an id the saved one already gave."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from flask_patronlock.sandbox import Sandbox, SandboxError, create_sandbox_app
from tests.helpers.constants import SANDBOX_START as NOW


def busy_sandbox() -> Sandbox:
    """A sandbox that has been through a bit of everything the saved state must keep."""
    sb = Sandbox(now=NOW, seed=7)
    sb.add_webhook("http://site.test/patreon/webhook")
    sb.add_patron("ann@example.com", tier="Gold", full_name="Ann Gold", address={"city": "Lyon", "country": "FR"})
    bob = sb.add_patron("bob@example.com", tier="Silver")
    sb.add_patron("cy@example.com", tier="Bronze", cadence=12)
    sb.start_free_trial("trial@example.com", tier="Silver", days=7)
    sb.gift_membership("gift@example.com", tier="Gold", months=1)
    sb.add_user("nobody@example.com")
    sb.generate_members(20)
    sb.decline(bob)
    sb.advance(days=3)
    sb.scenario("charge_dates_missing", days=10)
    sb.scenario("pending_after_decline", members=["bob@example.com"], settles="Paid", hours=30)
    sb.token_for("ann@example.com")
    sb.expire_creator_token()  # the access token is gone, its refresh token still works
    sb.add_fault("drift", field="patron_status", value={"nested": [1, "two"]}, times=None)
    sb.add_fault("error", page=2, status=503)
    sb.api_down = True
    sb.api_down = False
    return sb


def reloaded(sb: Sandbox) -> Sandbox:
    """``sb`` saved, written as JSON text, read back and loaded."""
    return Sandbox.load_state(json.loads(json.dumps(sb.dump_state())))


def listing(sb: Sandbox) -> Any:
    """Every member as the API serves them, with every attribute and the user and tiers included."""
    token = sb.token_for(sb.creator.id, scopes=["campaigns", "campaigns.members", "campaigns.members[email]"])
    client = create_sandbox_app(sb).test_client()
    sb.url = "http://sandbox.test"
    url = (f"/api/oauth2/v2/campaigns/{sb.campaign.id}/members?include=user,currently_entitled_tiers,address"
           "&fields%5Bmember%5D=patron_status,last_charge_status,last_charge_date,next_charge_date,"
           "currently_entitled_amount_cents,campaign_lifetime_support_cents,pledge_relationship_start,email"
           "&page%5Bcount%5D=1000")  # fmt: skip
    answer = client.get(url, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    return answer.get_json()["data"], answer.get_json()["included"]


def test_a_saved_sandbox_is_plain_json_and_loads_to_the_same_state() -> None:
    sb = busy_sandbox()
    saved = sb.dump_state()
    assert json.loads(json.dumps(saved)) == saved
    again = reloaded(sb)
    assert again.dump_state() == saved  # nothing lost on the way, nothing added
    assert again.summary() == sb.summary()
    assert [m.to_dict() for m in again.members] == [m.to_dict() for m in sb.members]
    assert again.tier_patron_counts() == sb.tier_patron_counts()
    assert listing(again) == listing(sb)
    assert again.member("ann@example.com").address is not None
    assert again.member("ann@example.com").address.city == "Lyon"  # type: ignore[union-attr]


def test_a_loaded_sandbox_goes_on_as_the_saved_one_would() -> None:
    sb = busy_sandbox()
    again = reloaded(sb)
    assert again.pending_deliveries() == sb.pending_deliveries() > 0

    # tokens: the patron's still works, the creator's expired access token stays dead but its refresh works
    ann_token = next(t for t in sb._tokens.values() if t.user_id == sb.user("ann@example.com").id)
    assert again.authenticate(ann_token.access_token) is not None
    assert again.authenticate(sb.creator_access_token) is None
    refreshed = again.refresh(client_id=again.client_id, refresh_token=again.creator_refresh_token)
    assert again.authenticate(refreshed.access_token) is not None

    # new people get the ids the saved sandbox would have given next: never one it gave already
    taken = {u.id for u in sb.users}
    new, new_again = sb.add_patron("dee@example.com", tier="Gold"), again.add_patron("dee@example.com", tier="Gold")
    assert new.user_id == new_again.user_id and new.id == new_again.id and new_again.user_id not in taken
    assert sb.add_user().email == again.add_user().email

    # the clock: renewals, declines' retries, the trial and the gift, and both scheduled actions of the scenarios
    assert sb.blanked_attributes and sb.member("bob@example.com").last_charge_status == "Pending"
    for each in (sb, again):
        each.advance_months(2)
        each.advance(days=11)
    assert not again.blanked_attributes
    assert again.member("bob@example.com").last_charge_status == "Paid"
    assert [m.to_dict() for m in again.members] == [m.to_dict() for m in sb.members]
    assert [(e.event, e.member_id, e.at) for e in again.events] == [(e.event, e.member_id, e.at) for e in sb.events]

    # the queued webhooks go out with the same bodies and signatures
    sent: dict[str, list[tuple[str, bytes, str]]] = {"saved": [], "loaded": []}
    for name, each in (("saved", sb), ("loaded", again)):
        def transport(uri: str, headers: dict[str, str], body: bytes, name: str = name) -> int:
            sent[name].append((headers["X-Patreon-Event"], body, headers["X-Patreon-Signature"]))
            return 200

        each.transport = transport
        each.flush_webhooks()
    assert sent["loaded"] == sent["saved"] and sent["saved"]


def test_a_sandbox_saved_twice_after_a_load_still_matches() -> None:
    sb = busy_sandbox()
    again = reloaded(reloaded(sb))
    sb.advance(days=40)
    again.advance(days=40)
    assert without_queued_ids(again.dump_state()) == without_queued_ids(sb.dump_state())


def without_queued_ids(saved: dict[str, Any]) -> dict[str, Any]:
    """``saved`` without the ids of queued webhook events (random, as Patreon's are: they differ between two sandboxes
    that queue the same events)."""
    for webhook in saved["webhooks"]:
        for queued in webhook["fields"]["queue"]["items"]:
            queued["fields"].pop("id")
    return saved


def test_an_action_that_is_not_a_scenarios_cannot_be_saved() -> None:
    sb = Sandbox(now=NOW, seed=1)
    sb.schedule(NOW + timedelta(days=1), lambda at: [])
    with pytest.raises(SandboxError, match="only the scenarios' scheduled actions can be saved"):
        sb.dump_state()


@pytest.mark.parametrize(
    "damage",
    [
        lambda saved: {**saved, "format": 99},
        lambda saved: [],
        lambda saved: {k: v for k, v in saved.items() if k != "members"},
        lambda saved: {**saved, "users": [{"__type__": "Spaceship", "fields": {}}]},
        lambda saved: {**saved, "timers": [{"at": saved["now"], "kind": "explode", "params": {}}]},
    ],
    ids=["other-format", "not-a-dict", "no-members", "unknown-record", "unknown-timer"],
)
def test_what_is_not_a_saved_sandbox_is_refused_in_words(damage: Any) -> None:
    saved = Sandbox(now=NOW, seed=1).dump_state()
    with pytest.raises(SandboxError):
        Sandbox.load_state(damage(saved))
