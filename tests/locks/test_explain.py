"""explain(user, lock) and `flask patronlock explain USER LOCK`: every step in plain words."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from flask_patronlock import Decision, explain, signals
from flask_patronlock.settings import set_lock_override
from flask_patronlock.signals import filter_receiver
from tests.helpers.sites import Site, make_site


@pytest.fixture
def site(make_app: Callable[..., Flask]) -> Site:
    site = make_site(make_app)
    site.ext.lock("premium", tier="Gold", description="Gold posts")
    site.linked_patron("gold")
    site.linked_patron("silver", entitled_cents=500, entitled_tier_ids=("t5",))
    site.link("linked-only", "p-nobody")
    site.user("boss", admin=True)
    return site


def test_explains_an_allowed_patron_step_by_step(site: Site) -> None:
    with site.app.app_context():
        result = explain(site.users["gold"], "premium")
    assert result.decision.allowed and result.decision.reason == "allowed" and result.source == "default"
    text = str(result)
    lines = text.splitlines()
    assert lines[0] == (
        "1. Lock 'premium': the default rule declared in code applies: tier Gold (10.00 a month) or higher."
    )
    assert "Viewer: user gold, signed in, linked to Patreon user p-gold." in text
    assert "Member: m-gold (Patron m-gold) of campaign c1, as of 2026-03-15T12:00:00+00:00 from sync." in text
    assert "Admin: the admin callback says this user is not an admin." in text
    assert "Patreon status: active_patron; last charge: Paid" in text
    assert "Policy: the last charge was paid." in text
    assert "the patron is entitled to tier t10: met" in text
    assert lines[-1].endswith("Result: allowed, reason 'allowed'.")


@pytest.mark.parametrize(
    ("user", "reason", "phrase"),
    [
        (None, "anonymous", "Viewer: an anonymous visitor (not signed in)."),
        ("nobody", "not_linked", "no Patreon account is linked to this user"),
        ("linked-only", "not_a_patron", "Member: no membership of campaign c1 is stored"),
        ("silver", "amount_too_low", "not met"),
        ("boss", "admin_bypass", "Admin: the admin callback says this user is an admin."),
    ],
)
def test_explains_each_kind_of_viewer(site: Site, user: str | None, reason: str, phrase: str) -> None:
    subject = site.users.get(user, user) if user else None
    with site.app.app_context():
        result = explain(subject, "premium")
    assert result.decision.reason == reason
    assert phrase in str(result)


def test_explains_overrides_and_filters(site: Site) -> None:
    @filter_receiver(signals.access_decision)
    def deny_all(sender: Any, value: Decision, **kw: Any) -> Decision:
        return Decision(allowed=False, reason="not_a_patron")

    try:
        with site.app.app_context():
            set_lock_override("premium", {"tier_ids": ["t5"]}, by="kopi")
            result = explain("silver", "premium")
    finally:
        signals.access_decision.disconnect(deny_all)
    text = str(result)
    assert result.source == "override" and "the creator's override (set by kopi at 2026-03-15" in text
    assert "tier Silver (5.00 a month) or higher" in text
    assert "Result: allowed, reason 'allowed'." in text  # what the policy said ...
    assert text.splitlines()[-1].endswith("Filter: an access-decision receiver changed the result to denied, "
                                          "reason 'not_a_patron'.")  # ... and what applies
    assert result.decision.reason == "not_a_patron"


@pytest.fixture
def runner(site: Site) -> Iterator[Any]:
    yield site.app.test_cli_runner()


def test_cli_explain(site: Site, runner: Any) -> None:
    result = runner.invoke(args=["patronlock", "explain", "silver", "premium"])
    assert result.exit_code == 0, result.output
    assert "1. Lock 'premium'" in result.output and "Viewer: user silver" in result.output
    assert result.output.rstrip().endswith("=> DENIED (amount_too_low)")
    story, _, trace = result.output.partition("\nHow this was decided:\n")  # the story first, the trace behind it
    assert story.strip() == ("Patron m-silver pledged Silver (5.00 a month) on 5 December 2025. Their last payment on "
                             "12 March 2026 went through. They can't see 'premium' because it needs tier Gold (10.00 "
                             "a month) or higher.")  # fmt: skip
    assert trace.startswith("1. Lock 'premium'")
    anonymous = runner.invoke(args=["patronlock", "explain", "-", "premium"])
    assert anonymous.output.rstrip().endswith("=> DENIED (anonymous)")
    unknown_user = runner.invoke(args=["patronlock", "explain", "ghost", "premium"])
    assert "the user loader found no user 'ghost'" in unknown_user.output
    assert unknown_user.output.rstrip().endswith("=> DENIED (not_linked)")
    assert "Admin: not checked (explained for a bare user id" in unknown_user.output
    boss = runner.invoke(args=["patronlock", "explain", "boss", "premium"])  # loaded: the admin callback is asked
    assert "the admin callback says this user is an admin." in boss.output
    assert boss.output.rstrip().endswith("=> ALLOWED (admin_bypass)")
    gold = runner.invoke(args=["patronlock", "explain", "gold", "premium"])
    assert gold.output.rstrip().endswith("=> ALLOWED (allowed)")
    typo = runner.invoke(args=["patronlock", "explain", "gold", "premiun"])
    assert typo.exit_code == 2 and "no lock named 'premiun'" in typo.output


def test_cli_explain_for_one_item_by_its_publish_date(site: Site, runner: Any) -> None:
    site.ext.lock("back-issues", tier="Silver", patrons_at_publish=True)  # Site.patron pledged 100 days before NOW
    old = runner.invoke(args=["patronlock", "explain", "gold", "back-issues", "--published-at", "2025-06-01"])
    assert old.exit_code == 0, old.output
    assert "pledging when this was published (2025-06-01T00:00:00+00:00)" in old.output
    assert old.output.rstrip().endswith("=> DENIED (not_patron_at_date)")
    new = runner.invoke(args=["patronlock", "explain", "gold", "back-issues", "--published-at", "2026-03-01"])
    assert new.output.rstrip().endswith("=> ALLOWED (allowed)")
    bad = runner.invoke(args=["patronlock", "explain", "gold", "back-issues", "--published-at", "last week"])
    assert bad.exit_code == 2 and "'last week' is not a date" in bad.output
