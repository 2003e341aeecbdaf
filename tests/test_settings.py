"""Creator settings: lock overrides, policies, the tier catalogue, the version stamp, and propagation to other workers
within the check interval (two apps, two caches, one database, a controlled clock)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from flask import Flask
from lockhelpers import CAMPAIGN, NOW, TIERS, Site, count_queries, make_site
from sqlalchemy import select

from flask_patronlock import LockRule, PolicySettings, TierSnapshot, UnknownLockError, decision_for
from flask_patronlock.settings import (
    clear_lock_override,
    get_lock_override,
    get_policy_settings,
    list_locks,
    set_lock_override,
    set_policy_settings,
)
from flask_patronlock.state import get_state


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def site(make_app: Callable[..., Flask]) -> Site:
    site = make_site(make_app)
    site.ext.lock("premium", tier="Gold", description="Gold posts")
    site.ext.lock("silver", tier="Silver")
    site.linked_patron("silver", entitled_cents=500, entitled_tier_ids=("t5",))
    return site


def events(app: Flask) -> list[dict[str, object]]:
    e = get_state(app).tables.events
    with get_state(app).store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(e).order_by(e.c.id)).mappings()]


def test_override_set_get_clear_and_list(site: Site) -> None:
    with site.app.app_context():
        assert get_lock_override("premium") is None
        infos = {i.name: i for i in list_locks()}
        assert infos["premium"].source == "default" and infos["premium"].effective.tier_ids == ("t10",)
        assert infos["premium"].default.tier_ids == ("Gold",) and infos["premium"].description == "Gold posts"

        before = get_state().store.settings_version()
        set_lock_override("premium", {"tier_ids": ["silver"]}, by="creator-1")
        override = get_lock_override("premium")
        assert override is not None and override.updated_by == "creator-1" and override.updated_at == NOW
        info = {i.name: i for i in list_locks()}["premium"]
        assert info.source == "override" and info.effective.tier_ids == ("t5",)
        assert get_state().store.settings_version() == before + 1
        with site.app.test_request_context(headers={"X-User": "silver"}):
            assert decision_for("premium").allowed

        set_lock_override("premium", LockRule(min_cents=100, enabled=False), by="creator-1")
        assert clear_lock_override("premium", by="creator-2") is True
        assert clear_lock_override("premium", by="creator-2") is False
        assert get_lock_override("premium") is None
        assert get_state().store.settings_version() == before + 4
    audit = [(e["kind"], e["user_id"], e["source"]) for e in events(site.app) if e["kind"] != "patron_created"]
    assert audit == [
        ("lock_override_set", "creator-1", "admin"),
        ("lock_override_set", "creator-1", "admin"),
        ("lock_override_cleared", "creator-2", "admin"),
        ("lock_override_cleared", "creator-2", "admin"),
    ]


def test_override_validation(site: Site) -> None:
    with site.app.app_context():
        with pytest.raises(UnknownLockError):
            set_lock_override("nope", {"min_cents": 1})
        with pytest.raises(ValueError, match="min_cents"):
            set_lock_override("premium", {"min_cents": -5})
        with pytest.raises(ValueError, match="unknown key"):
            set_lock_override("premium", {"tier": "Gold"})
        assert get_state().store.settings_version() == 1  # only replace_tiers wrote


def test_policy_settings_round_trip_and_effect(site: Site) -> None:
    site.linked_patron(
        "declined",
        patron_status="declined_patron",
        last_charge_status="Declined",
        last_charge_date=NOW - timedelta(days=3),
        entitled_cents=500,
        entitled_tier_ids=("t5",),
    )
    with site.app.test_request_context(headers={"X-User": "declined"}):
        assert get_policy_settings() == PolicySettings()
        assert decision_for("silver").allowed  # 7-day grace by default
    with site.app.app_context():
        stored = set_policy_settings({"declined": "restrict"}, by="creator")
        assert stored.declined == "restrict" and get_policy_settings() == stored
        with pytest.raises(ValueError, match="declined_grace_days"):
            set_policy_settings({"declined_grace_days": -1})
    with site.app.test_request_context(headers={"X-User": "declined"}):
        assert decision_for("silver").reason == "payment_declined"


def test_replace_tiers_bumps_the_version_only_on_change(site: Site) -> None:
    store = site.state.store
    with site.app.app_context():
        version = store.settings_version()
        assert store.replace_tiers(CAMPAIGN, TIERS) is False and store.settings_version() == version
        renamed = (TierSnapshot(id="t10", title="Golden", amount_cents=1200), TIERS[0])
        assert store.replace_tiers(CAMPAIGN, renamed) is True and store.settings_version() == version + 1
        assert [t.id for t in store.tiers(CAMPAIGN)] == ["t5", "t10"]
        assert store.tiers(CAMPAIGN)[1].title == "Golden" and store.tiers("other") == []
        with pytest.raises(ValueError, match="twice"):
            store.replace_tiers(CAMPAIGN, (TIERS[0], TIERS[0]))
        # "Gold" is no longer a title: the lock denies (amount_too_low) instead of crashing
    with site.app.test_request_context(headers={"X-User": "silver"}):
        assert decision_for("premium").reason == "amount_too_low"


def test_overrides_reach_another_worker_within_the_check_interval(make_app: Callable[..., Flask]) -> None:
    writer = make_site(make_app)
    # another worker: its own app and cache, the same database; its viewer cache is off so that each decision below
    # reads the viewer (one query) and the queries counted are the settings cache's
    reader = make_site(make_app, PATRONLOCK_VIEWER_CACHE_SECONDS=0)
    for site in (writer, reader):
        site.ext.lock("premium", tier="Gold")
    reader.linked_patron("silver", entitled_cents=500, entitled_tier_ids=("t5",))
    clock = Clock()
    cache = reader.state.settings
    cache.clock = clock
    cache.invalidate()  # store.apply read the policy through this cache (issue 5) while it had the real clock
    assert reader.app.config["PATRONLOCK_SETTINGS_CHECK_SECONDS"] == 2.0  # well inside the promised 5 s

    def allowed() -> bool:
        with reader.app.test_request_context(headers={"X-User": "silver"}):
            return decision_for("premium").allowed

    assert not allowed()
    loads = cache.loads
    with writer.app.app_context():
        set_lock_override("premium", {"tier_ids": ["Silver"]}, by="creator")
    clock.now += 1.9
    with count_queries(reader.app) as queries:
        assert not allowed()  # still inside the interval: the cached rule, and only the viewer query
    assert len(queries) == 1
    clock.now += 0.2
    assert allowed()  # checked the version, saw the change, reloaded
    assert cache.loads == loads + 1
    clock.now += 2.1
    with count_queries(reader.app) as queries:
        assert allowed()  # the version is unchanged: one version check, no reload
    assert cache.loads == loads + 1 and len(queries) == 2


def test_corrupt_stored_values_fall_back_to_defaults(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    state = site.state
    with state.store.transaction() as conn:
        conn.execute(state.tables.settings.insert().values(key="policy", value={"declined": "never"}, version=9,
                                                           updated_at=NOW))
        conn.execute(state.tables.lock_overrides.insert().values(name="premium", rule={"min_cents": -1},
                                                                 updated_at=NOW))
        state.store.bump_settings_version(conn)
    with site.app.app_context():
        state.settings.invalidate()
        assert get_policy_settings() == PolicySettings()
        assert get_lock_override("premium") is None
    assert "stored access policy is invalid" in caplog.text and "override of lock 'premium'" in caplog.text
