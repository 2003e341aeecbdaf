"""What-if before saving (issue 17, item 5): a lock's rule, its on/off switch and the access policies first show how
many stored patrons would gain and lose access (names behind a disclosure), worked out with policy.decide; a change
that opens a lock to everyone says so; nothing is saved until the creator confirms."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from html import unescape
from typing import Any

import pytest
from flask import Flask

from flask_patronlock.comps import grant_comp
from flask_patronlock.policy import LockRule, PolicySettings
from flask_patronlock.settings import get_lock_override, get_policy_settings
from flask_patronlock.state import get_state
from flask_patronlock.whatif import lock_change, lock_deletion, policy_change
from tests.helpers.admin import ADMIN_PREFIX, AdminSite, make_admin_site
from tests.helpers.constants import NOW

LOCK = ADMIN_PREFIX + "/locks/premium"


@pytest.fixture
def site(make_app: Callable[..., Flask]) -> AdminSite:
    site = make_admin_site(make_app)
    site.apply("m-gia", full_name="Gia", entitled_cents=1000, entitled_tier_ids=("t10",))
    site.apply("m-sil", full_name="Sil", entitled_cents=500, entitled_tier_ids=("t5",))
    site.apply("m-bea", full_name="Bea", entitled_cents=300, entitled_tier_ids=("t3",))
    # Silver, declined 3 days ago: inside the default 7-day grace
    site.apply("m-dee", full_name="Dee", entitled_cents=500, entitled_tier_ids=("t5",), patron_status="declined_patron",
               last_charge_status="Declined", last_charge_date=NOW - timedelta(days=3))
    return site


def page(response: Any) -> str:
    return " ".join(unescape(str(response.get_data(as_text=True))).split())


def names(html: str, kind: str) -> list[str]:
    found = re.search(rf"<ul data-{kind}>(.*?)</ul>", html)
    return re.findall(r"<li>([^<]+)</li>", found.group(1)) if found else []


def rule_form(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"enabled": "y", "tiers": ["t10"], "min_amount": "", "lifetime_amount": "",
                            "patron_since_before": "", "drip_months": "", "combine": "all"}
    data.update(changes)
    return data


def test_a_rule_change_shows_who_gains_and_saves_nothing_until_confirmed(site: AdminSite) -> None:
    response = site.post(LOCK, rule_form(tiers=["t5"]))  # Gold or higher -> Silver or higher
    assert response.status_code == 200
    html = page(response)
    assert "“premium”: from tier Gold" in html and "to tier Silver" in html
    assert "2 patrons would gain access, no patron would lose it." in html
    assert "from the 4 patrons stored for your campaign" in html
    assert '<details data-whatif-names> <summary>Show who</summary>' in html  # names on demand
    assert names(html, "gained") == ["Dee", "Sil"] and names(html, "lost") == []
    assert "opens it to everyone" not in html
    with site.app.app_context():
        assert get_lock_override("premium") is None  # nothing saved yet
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', html.split('class="pl-inline"')[1]))
    assert fields["confirm"] == "1" and fields["tiers"] == "t5"  # the same values, posted again to save
    assert site.post(LOCK, rule_form(tiers=["t5"], confirm="1")).status_code == 302
    with site.app.app_context():
        assert get_lock_override("premium").rule.tier_ids == ("t5",)  # type: ignore[union-attr]


def test_a_narrower_rule_shows_who_loses_it(site: AdminSite) -> None:
    response = site.post(ADMIN_PREFIX + "/locks/supporters", rule_form(tiers=["t10"]))  # $1 -> Gold
    html = page(response)
    assert "No patron would gain access, 3 patrons would lose it." in html
    assert names(html, "lost") == ["Bea", "Dee", "Sil"]


def test_change_it_again_keeps_what_was_typed(site: AdminSite) -> None:
    response = site.post(LOCK, rule_form(tiers=["t3"], min_amount="2.50", edit="1"))
    assert response.status_code == 200
    html = page(response)
    assert 'value="2.50"' in html and "Save the lock" in html and "Who this changes" not in html
    with site.app.app_context():
        assert get_lock_override("premium") is None


def test_switching_a_lock_off_says_it_opens_to_everyone(site: AdminSite) -> None:
    response = site.post(LOCK + "/toggle", {"enabled": "0"})
    assert response.status_code == 200
    html = page(response)
    assert "This opens it to everyone." in html and "data-opens-to-everyone" in html
    assert "3 patrons would gain access" in html  # Sil, Bea and Dee
    with site.app.app_context():
        assert get_lock_override("premium") is None
    assert site.post(LOCK + "/toggle", {"enabled": "0", "confirm": "1"}).status_code == 302
    with site.app.app_context():
        assert get_lock_override("premium").rule.enabled is False  # type: ignore[union-attr]
    back_on = page(site.post(LOCK + "/toggle", {"enabled": "1"}))
    assert "opens it to everyone" not in back_on and "3 patrons would lose it" in back_on


def test_a_policy_change_shows_who_loses_access(site: AdminSite) -> None:
    form = {"declined": "restrict", "declined_grace_days": "7", "cancelled": "paid_period",
            "first_charge": "entitled_at_once", "count_free_trials": "y", "count_gifted": "y", "missing_runs": "2",
            "missing_hours": "", "breaker_min_patrons": "25", "breaker_percent": "10"}
    response = site.post(ADMIN_PREFIX + "/policies", form)
    assert response.status_code == 200
    html = page(response)
    assert "No patron would gain access, 1 patron would lose it." in html and names(html, "lost") == ["Dee"]
    with site.app.app_context():
        assert get_policy_settings() == PolicySettings()
    assert site.post(ADMIN_PREFIX + "/policies", {**form, "confirm": "1"}).status_code == 302
    with site.app.app_context():
        assert get_policy_settings().declined == "restrict"


def test_comps_count_and_nobody_is_counted_twice(site: AdminSite) -> None:
    with site.app.app_context():
        state = get_state()
        grant_comp(state, member_id="m-bea", lock="premium", by="admin")
        lock = state.settings.current().find_lock(state.declarations.locks, "premium")
        change = lock_change(lock, LockRule(tier_ids=("t5",)))
        assert change.gained == ("Dee", "Sil") and change.lost == () and change.patrons == 4  # Bea has a comp
        assert not lock_change(lock, LockRule(tier_ids=("t10",))).changes_anything
        off = lock_change(lock, LockRule(tier_ids=("t10",), enabled=False))
        assert off.opens_to_everyone and off.gained == ("Dee", "Sil")
        gone = lock_deletion(lock)
        assert gone.gained == () and gone.lost == ("Bea", "Gia") and gone.patrons == 4  # Bea through her comp
        same = policy_change(PolicySettings())
        assert same.gained == same.lost == () and same.patrons == 4
