"""A Hypothesis state machine interleaving webhooks (duplicated, replayed, reordered), runs, API faults and clock
steps. Invariants: no incomplete run ever revokes anyone, and after a complete run with the API healthy the stored
state equals the sandbox's truth."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from sync_helpers import fast_client

from flask_patronlock import PatronLock
from flask_patronlock.policy import PolicySettings, entitlement
from flask_patronlock.sandbox import Delivery, Sandbox, SandboxServer
from flask_patronlock.state import get_state
from flask_patronlock.sync import run_sync

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

POLICY = PolicySettings(cancelled="at_once", missing_runs=1, breaker_min_patrons=10_000)
FAULTS = ["error", "rate_limit", "truncate", "repeat_cursor", "drop"]


class Reconcile(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.sandbox = Sandbox(seed=3)
        self.server = SandboxServer(self.sandbox).start()
        self.sandbox.generate_members(12)
        app = Flask("state_machine")
        app.config.update(
            TESTING=True,
            SQLALCHEMY_DATABASE_URI=f"sqlite:///{Path(self.tmp.name) / 'sm.db'}",
            PATRONLOCK_STRICT_SIGNALS=True,
            PATRONLOCK_JOBS="inline",
            PATRONLOCK_SYNC_PAGE_SIZE=4,
            **self.sandbox.config,
        )
        self.db = SQLAlchemy()
        self.db.init_app(app)
        PatronLock(app, db=self.db)
        with app.app_context():
            self.db.create_all()
        self.app: Flask = app
        self.state = get_state(app)
        self.state.store.clock = lambda: self.sandbox.now
        self.state.store.policy_settings = lambda: POLICY
        self.client = app.test_client()
        self.captured: list[Delivery] = []
        self.delivered: list[Delivery] = []
        self.sandbox.add_webhook("http://site.test/patreon/webhook")
        self.sandbox.transport = lambda uri, headers, body: 200
        self.emails = 0
        self.runs = 0

    def teardown(self) -> None:
        self.server.stop()
        with self.app.app_context():
            self.db.engine.dispose()
        self.tmp.cleanup()

    # -- Patreon changes ----------------------------------------------------------------------------------------

    def _pledging(self) -> list[Any]:
        # a declined patron who cancelled stays listed declined_patron, as on Patreon, but pledges no more
        return [
            m for m in self.sandbox.members
            if m.patron_status in ("active_patron", "declined_patron") and not m.pledge_deleted
        ]

    @initialize()
    def first_run(self) -> None:
        self._run(None)

    @rule()
    def add_patron(self) -> None:
        self.emails += 1
        self.sandbox.add_patron(f"p{self.emails}@example.com", tier="Silver")

    @rule(index=st.integers(0, 50), tier=st.sampled_from(["Bronze", "Silver", "Gold"]))
    def change_tier(self, index: int, tier: str) -> None:
        members = self._pledging()
        if members:
            self.sandbox.change_tier(members[index % len(members)], tier)

    @rule(index=st.integers(0, 50), what=st.sampled_from(["cancel", "decline", "recover", "delete"]))
    def lifecycle(self, index: int, what: str) -> None:
        members = self._pledging() if what != "recover" else [
            m for m in self.sandbox.members if m.patron_status == "declined_patron"
        ]
        if what == "recover":  # a declined patron who cancelled is not recovered
            members = [m for m in members if not m.pledge_deleted]
        if not members:
            return
        member = members[index % len(members)]
        getattr(self.sandbox, {"delete": "delete_member"}.get(what, what))(member)

    @rule(hours=st.sampled_from([1, 12, 24 * 8, 24 * 31]))
    def advance(self, hours: int) -> None:
        self.sandbox.advance(hours=hours)

    @rule(down=st.booleans())
    def api_down(self, down: bool) -> None:
        self.sandbox.api_down = down

    # -- webhooks -----------------------------------------------------------------------------------------------

    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        self.captured += self.sandbox.flush_webhooks()
        if not self.captured:
            return
        batch = data.draw(st.permutations(self.captured))  # reordered
        dupes = data.draw(st.lists(st.sampled_from(batch), max_size=3))  # duplicated
        for delivery in [*batch, *dupes]:
            status = self.client.post("/patreon/webhook", data=delivery.body, headers=delivery.headers).status_code
            assert status == 200
        self.delivered += self.captured
        self.captured = []

    @rule(data=st.data())
    def replay_old(self, data: st.DataObject) -> None:
        if not self.delivered:
            return
        old = data.draw(st.sampled_from(self.delivered))
        event = data.draw(st.sampled_from(["members:update", "members:pledge:update", old.event]))
        headers = dict(old.headers, **{"X-Patreon-Event": event})
        assert self.client.post("/patreon/webhook", data=old.body, headers=headers).status_code == 200

    @rule()
    def retry(self) -> None:
        self.state.jobs.retry_due()

    # -- runs ---------------------------------------------------------------------------------------------------

    @rule(fault=st.one_of(st.none(), st.tuples(st.sampled_from(FAULTS), st.integers(1, 4))))
    def run(self, fault: tuple[str, int] | None) -> None:
        self._run(fault)

    def _run(self, fault: tuple[str, int] | None) -> None:
        if fault is not None:
            kind, page = fault
            extra = {"times": None, "retry_after": 0} if kind == "rate_limit" else {}
            extra = {"times": None} if kind == "error" else extra
            self.sandbox.add_fault(kind, page=page, **extra)
        before = {p: self._access(p) for p in self._stored_ids()}
        with fast_client(self.sandbox, max_retries=1) as client:
            result = run_sync(self.app, client=client)
        self.sandbox.clear_faults()  # also brings the API back up
        self.runs += 1
        if not result.complete:
            # no incomplete run ever revokes: nobody who had access lost it in this run, and no audit row says so
            assert result.revoked == 0
            for member_id, had in before.items():
                if had:
                    assert self._access(member_id) or self._revoked_outside_run(member_id, result.run_id)
            return
        if self.sandbox.api_down:
            return
        if fault is not None and fault[0] == "drop":
            # members dropped from a page while the total counts them: a run within the total's slack (sync's
            # total_slack) completes without them, so they catch up at a later run; the rest converged
            return
        self._check_converged()

    def _stored_ids(self) -> list[str]:
        return sorted(self.state.store.member_ids(self.sandbox.campaign.id))

    def _access(self, member_id: str) -> bool:
        patron = self.state.store.get_patron(member_id)
        return bool(patron and patron.access)

    def _revoked_outside_run(self, member_id: str, run_id: int) -> bool:
        rows = [r for r in self.state.store.history(member_id, limit=5) if "access_revoked" in r["events"]]
        return bool(rows) and all(r["run_id"] != run_id for r in rows)

    def _check_converged(self) -> None:
        store, now = self.state.store, self.sandbox.now
        truth = {m.id: m for m in self.sandbox.members}
        for member_id in self._stored_ids():
            patron = store.get_patron(member_id)
            assert patron is not None
            member = truth.get(member_id)
            if member is None:  # deleted on Patreon: missing after a complete run, so no access (missing_runs=1)
                assert patron.missing_runs >= 1 and not patron.access
                continue
            assert patron.patron_status == member.patron_status, member_id
            assert patron.entitled_cents == member.entitled_cents, member_id
            assert set(patron.entitled_tier_ids) == set(member.tier_ids), member_id
            assert patron.last_charge_date == member.last_charge_date, member_id
            assert patron.lifetime_cents == member.lifetime_cents, member_id
            assert patron.access is entitlement(patron, POLICY, now).entitled, member_id
        assert set(truth) <= set(self._stored_ids())

    @invariant()
    def deliveries_are_never_lost(self) -> None:
        # every delivery the app acknowledged is stored: processed, or waiting for a retry
        counts = {}
        from flask_patronlock.webhooks import delivery_counts

        counts = delivery_counts(self.state)
        # ignored: a delivery for a member Patreon does not place in this campaign, or a pledge it does not confirm
        assert set(counts) <= {"done", "retry", "failed", "ignored"}


TestReconcile = Reconcile.TestCase
TestReconcile.settings = settings(max_examples=15, stateful_step_count=14, deadline=None, derandomize=True)
