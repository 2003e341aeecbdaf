"""Months of random billing, played as Patreon plays it, against an oracle of what each patron paid for.

The model below is written from the catalogue of Patreon's billing behaviour (docs/policies.rst, "Patreon's
billing"), not from ``policy.py``: it keeps the truth about each pledge (its tier, the end of the period paid for, an
unpaid decline and when it began) and renders what Patreon's API would report, with Patreon's quirks:

* charges on the 1st (the month's charge run comes 0-3 days late, and until it runs every paid-up patron is reported
  with 0 cents and no tiers, the last charge ``Paid`` from last month or ``Pending``) and on anniversaries (monthly,
  or annual: reported as the discounted annual total);
* declines that Patreon retries (every 4 days, up to six times, within the month of the decline) and that stay
  listed as ``declined_patron`` after the patron cancels; declined patrons flipped to ``active_patron`` / ``Pending``
  with nothing paid; recoveries only by a ``Paid`` charge (a retry, or the patron fixing the card);
* cancellations reported as ``former_patron`` / ``Deleted`` / 0 cents, and rejoins (within the paid period: ``Paid``
  on the same date, no charge);
* amounts moved by currency and first-month discounts; upgrades and downgrades;
* days when ``last_charge_date`` is empty for everyone;
* members the site first sees late (installed after they pledged, or cancelled).

The site gets a webhook (``Store.apply``) at each change and a full sync (``apply_many`` on the settled path, then
``refresh_access``) after each step. At every observation the oracle's answer, "may this patron see lock X now?",
from first principles (an active pledge that paid is owed its tier; a cancelled one its tier until the end of the
period paid for; an unpaid decline what the declined policy allows from the first decline), must equal
``policy.decide`` on the stored patron, and the store's ``access`` must equal "owed anything". The inferred events
must be ones that happened, and the ones Patreon's data reveals must be inferred.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from flask_patronlock.dates import add_months
from flask_patronlock.patreon.types import MemberSnapshot, TierSnapshot
from flask_patronlock.policy import LockRule, PolicySettings, Viewer, decide
from tests.helpers.paid_for import next_month, owed
from tests.policy.test_billing_truth import Site

PRICES = {"t5": 500, "t10": 1000, "t20": 2000}
TIERS = {tier_id: TierSnapshot(id=tier_id, amount_cents=cents) for tier_id, cents in PRICES.items()}
#: each lock, and the monthly price of the cheapest tier the oracle says opens it (0: any patron owed anything).
LOCKS = {
    "any": (LockRule(), 0),
    "tier10": (LockRule(tier_ids=("t10",)), 1000),
    "tier20": (LockRule(tier_ids=("t20",)), 2000),
    "cents500": (LockRule(min_cents=500), 500),
    "cents1000": (LockRule(min_cents=1000), 1000),
}
RETRY_EVERY = timedelta(days=4)
MAX_RETRIES = 6
RUN_HOUR = timedelta(hours=4)
#: the events compared with what happened.
CHECKED = ("charge_succeeded", "payment_declined", "payment_recovered", "pledge_cancelled")


@dataclass
class Pledge:
    """The truth about one member."""

    member_id: str
    tier: str
    cadence: int  # 1 or 12
    on_the_first: bool  # billed on the 1st (monthly only), else on the anniversary
    factor: float  # what currency rates do to the reported amount
    first_month_discount: bool
    start: datetime
    anchor: int
    status: str = "active"  # active | declined | former
    cancelled_while_declined: bool = False
    flipped: bool = False  # Patreon lists the declined patron as active_patron / Pending
    charge_status: str | None = None
    charge_date: datetime | None = None
    due: datetime | None = None  # the start of the period the next (or failed) charge pays for
    paid_until: datetime | None = None
    last_paid: datetime | None = None
    declined_at: datetime | None = None
    retries: int = 0
    card_ok: bool = True
    charges: int = 0
    lifetime: int = 0
    seen: bool = False
    #: whether the site was ever told the tier: Patreon's cancellation names none, so a member first seen cancelled is
    #: owed the rest of the paid period, but no lock that asks for a tier or an amount can open for them.
    tier_known: bool = False
    reveal_after: int = 0  # steps the site does not see this member for
    happened: Counter[str] = field(default_factory=Counter)  # real events since the site first saw the member
    revealed: Counter[str] = field(default_factory=Counter)  # ... of them, those Patreon's data shows
    inferred: Counter[str] = field(default_factory=Counter)  # what the store inferred, after the first sighting
    owed: bool | None = None  # the oracle's "owed anything" at the last observation

    # -- the oracle -------------------------------------------------------------------------------------------------

    def owes(self, policy: PolicySettings, now: datetime) -> bool:
        """Whether this patron is owed its tier at ``now``, from what was paid for and the policy's words."""
        return owed(
            policy,
            now,
            declined_at=self.declined_at,
            cancelled=self.status == "former",
            paid_until=self.paid_until,
            paid=self.charges > 0,
        )

    def may_see(self, lock: str, policy: PolicySettings, now: datetime) -> bool:
        need = LOCKS[lock][1]
        return self.owes(policy, now) and (need == 0 or (self.tier_known and PRICES[self.tier] >= need))

    # -- what Patreon reports ---------------------------------------------------------------------------------------

    def amount(self) -> int:
        monthly = PRICES[self.tier] * self.factor
        if self.first_month_discount and self.charges <= 1:
            monthly *= 0.5
        if self.cadence == 12:
            return round(monthly * 12 * 0.9)  # annual: the (discounted) annual total
        return round(monthly)

    def report(self, patreon: Patreon) -> MemberSnapshot:
        status, charge, date = self.status, self.charge_status, self.charge_date
        cents, tiers = self.amount(), (self.tier,)
        if status == "declined":
            status = "declined_patron"
            if self.flipped:
                status, charge = "active_patron", "Pending"
        elif status == "former":
            status, charge, cents, tiers = "former_patron", "Deleted", 0, ()
        else:
            status = "active_patron"
            if patreon.zeroed(self):
                cents, tiers = 0, ()  # the start-of-month zeroing of a paid-up patron
                if patreon.pending_style and self.on_the_first:
                    charge, date = "Pending", patreon.window_start
        if patreon.outage:
            date = None
        self.tier_known = self.tier_known or bool(tiers)
        return MemberSnapshot(
            member_id=self.member_id,
            campaign_id="c1",
            user_id="u-" + self.member_id,
            full_name=self.member_id,
            patron_status=status,
            last_charge_status=charge,
            last_charge_date=date,
            next_charge_date=self.paid_until,
            entitled_cents=cents,
            entitled_tier_ids=tiers,
            will_pay_cents=0 if self.status == "former" else self.amount(),
            lifetime_cents=self.lifetime,
            pledge_start=self.start,
            pledge_cadence=self.cadence,
        )

    def event(self, name: str, *, shown: bool = True) -> None:
        if self.seen:
            self.happened[name] += 1
            if shown:
                self.revealed[name] += 1


class Patreon:
    """The campaign: pledges, the clock, the monthly charge run and its zeroing window, outages."""

    def __init__(self, start: datetime, delays: list[int], pending_styles: list[bool]) -> None:
        self.now = start
        self.pledges: list[Pledge] = []
        self.delays, self.pending_styles = delays, pending_styles
        self.window_start: datetime | None = None  # the 1st whose charge run has not happened yet
        self.pending_style = False
        self.outage_until: datetime | None = None
        self.month_index = 0
        self.next_first = next_month(start)

    @property
    def outage(self) -> bool:
        return self.outage_until is not None and self.now < self.outage_until

    def run_time(self) -> datetime | None:
        if self.window_start is None:
            return None
        return self.window_start + timedelta(days=self.delays[self.month_index % len(self.delays)]) + RUN_HOUR

    def charge(self, p: Pledge) -> None:
        """One charge attempt at ``now`` for the period starting ``p.due``."""
        assert p.due is not None
        p.charge_date = self.now
        if p.card_ok:
            recovered = p.declined_at is not None
            p.charge_status, p.status, p.flipped = "Paid", "active", False
            p.charges += 1
            p.lifetime += p.amount()
            p.last_paid = self.now
            p.paid_until = self.period_end(p, p.due)
            if p.paid_until <= self.now:  # a recovery after the period it was for: it pays for one from now
                p.paid_until = self.period_end(p, self.now)
            p.due = p.paid_until
            p.declined_at, p.retries = None, 0
            p.event("charge_succeeded", shown=False)  # shown once the charge date is (see Oracle.observe)
            if recovered:
                p.event("payment_recovered")
        else:
            p.charge_status = "Declined"
            if p.declined_at is None:
                p.declined_at, p.status, p.retries = self.now, "declined", 0
                p.event("payment_declined")

    @staticmethod
    def period_end(p: Pledge, start: datetime) -> datetime:
        return next_month(start) if p.on_the_first else add_months(start, p.cadence, p.anchor)

    def zeroed(self, p: Pledge) -> bool:
        """Whether Patreon reports ``p`` zeroed now: a paid-up active patron between the 1st and the charge run."""
        window = self.window_start
        return p.status == "active" and window is not None and p.last_paid is not None and p.last_paid < window

    def due_events(self) -> list[tuple[datetime, int, str, Pledge | None]]:
        """What falls due next: (when, order, kind, pledge)."""
        out: list[tuple[datetime, int, str, Pledge | None]] = [(self.next_first, 0, "first", None)]
        run = self.run_time()
        if run is not None:
            out.append((run, 1, "run", None))
        for i, p in enumerate(self.pledges):
            if p.status == "active" and not p.on_the_first and p.due is not None:
                out.append((p.due, 2 + i, "anniversary", p))
            if p.status == "declined" and p.declined_at is not None and not p.cancelled_while_declined:
                retry = p.declined_at + RETRY_EVERY * (p.retries + 1)
                if p.retries < MAX_RETRIES and retry < next_month(p.declined_at):
                    out.append((retry, 2 + i, "retry", p))
        return out


@dataclass
class Oracle:
    site: Site
    patreon: Patreon
    policy: PolicySettings
    step: int = 0

    def webhook(self, p: Pledge) -> None:
        """Patreon tells the site about ``p`` at once (if the site knows the member yet)."""
        if not self.visible(p):
            return
        first = not p.seen
        result = self.site.see(p.report(self.patreon), self.patreon.now)
        self.observe(p, result.events, first)

    def visible(self, p: Pledge) -> bool:
        if p.seen:
            return True
        if p.status == "declined":
            return True  # revealed by its first decline
        return self.step >= p.reveal_after and not self.patreon.zeroed(p)

    def sync(self) -> None:
        now = self.patreon.now
        shown = [p for p in self.patreon.pledges if self.visible(p)]
        firsts = {p.member_id for p in shown if not p.seen}
        self.site.now = now
        results = self.site.store.apply_many(
            [p.report(self.patreon) for p in shown], source="sync", observed_at=now, load_unchanged=False
        )
        events = {r.member_id: r.events for r in results}
        for r in self.site.store.refresh_access(now=now):
            events[r.member_id] = events.get(r.member_id, ()) + r.events
        for p in shown:
            self.observe(p, events.get(p.member_id, ()), p.member_id in firsts)

    def observe(self, p: Pledge, events: tuple[str, ...], first: bool) -> None:
        now, policy = self.patreon.now, self.policy
        p.seen = True
        if first:
            p.happened.clear()
            p.revealed.clear()
        else:
            p.inferred.update(e for e in events if e in CHECKED)
        stored = self.site.patron(p.member_id)
        self.note(p, stored.patron_status, first)
        viewer = Viewer(authenticated=True, linked=True, patron=stored)
        where = f"{p.member_id} at {now.isoformat()} (step {self.step}): {stored}"
        for name, (rule, _) in LOCKS.items():
            decision = decide(rule, viewer, policy, now, tiers=TIERS)
            assert decision.allowed is p.may_see(name, policy, now), f"lock {name!r}, {decision}, {where}"
        owed = p.owes(policy, now)
        assert stored.access is owed, where
        # access-granted / -revoked only for a real change of what the patron is owed
        if not first:
            assert ("access_revoked" in events) is (p.owed is True and not owed), (events, where)
            assert ("access_granted" in events) is (p.owed is False and owed), (events, where)
        p.owed = owed
        # the inferred events happened; and what Patreon's data shows was inferred
        if not self.patreon.outage and p.charge_date is not None and stored.last_charge_date == p.charge_date:
            p.revealed["charge_succeeded"] = p.happened["charge_succeeded"]
        for name in CHECKED:
            assert p.inferred[name] <= p.happened[name], (name, p.inferred, p.happened, where)
            if name != "charge_succeeded" or not self.patreon.outage:
                assert p.inferred[name] >= p.revealed[name], (name, p.inferred, p.revealed, where)

    def note(self, p: Pledge, status: str | None, first: bool) -> None:
        """What this observation covered (``--hypothesis-show-statistics``)."""
        if self.patreon.zeroed(p):
            event("observed zeroed at the start of a month")
        if p.declined_at is not None:
            event("observed an unpaid decline" + (", flipped to Pending" if p.flipped else ""))
        if first and status == "former_patron":
            event("first seen already cancelled")
        if self.patreon.outage:
            event("observed during a charge-date outage")
        if p.cadence == 12:
            event("observed an annual pledge")

    # -- the steps --------------------------------------------------------------------------------------------------

    def advance(self, hours: int) -> None:
        target = self.patreon.now + timedelta(hours=hours)
        while True:
            when, _, kind, p = min(self.patreon.due_events(), key=lambda e: (e[0], e[1]))
            if when > target:
                break
            self.patreon.now = when
            if kind == "first":
                self.patreon.window_start = when
                self.patreon.pending_style = self.patreon.pending_styles[
                    self.patreon.month_index % len(self.patreon.pending_styles)
                ]
                self.patreon.next_first = next_month(when)
            elif kind == "run":
                self.patreon.window_start = None
                self.patreon.month_index += 1
                for q in self.patreon.pledges:
                    if q.status == "active" and q.on_the_first and q.due is not None and q.due <= when:
                        self.patreon.charge(q)
                        self.webhook(q)
                for q in self.patreon.pledges:  # the zeroing ends for everyone
                    self.webhook(q)
            elif kind == "anniversary":
                assert p is not None
                self.patreon.charge(p)
                self.webhook(p)
            else:
                assert p is not None
                p.retries += 1
                self.patreon.charge(p)
                self.webhook(p)
        self.patreon.now = target

    def join(self, tier: str, cadence: int, on_the_first: bool, factor: float, discount: bool, hidden: int) -> None:
        now = self.patreon.now
        p = Pledge(
            member_id=f"m{len(self.patreon.pledges)}",
            tier=tier,
            cadence=cadence,
            on_the_first=on_the_first and cadence == 1,
            factor=factor,
            first_month_discount=discount,
            start=now,
            anchor=now.day,
            due=now,
            reveal_after=self.step + hidden,
        )
        self.patreon.pledges.append(p)
        self.patreon.charge(p)  # charged at once
        self.webhook(p)

    def cancel(self, p: Pledge) -> None:
        if p.status == "active":
            p.status = "former"
            p.charge_status = "Deleted"
            p.event("pledge_cancelled")
        elif p.status == "declined" and not p.cancelled_while_declined:
            p.cancelled_while_declined = True  # Patreon keeps listing them as declined_patron
            p.event("pledge_cancelled", shown=False)
        self.webhook(p)

    def rejoin(self, p: Pledge) -> None:
        if p.status != "former":
            return
        p.status = "active"
        if p.paid_until is not None and self.patreon.now < p.paid_until:
            p.charge_status = "Paid"  # the paid period runs on: Paid on the same date, nothing charged
        else:
            p.due = self.patreon.now
            p.anchor = self.patreon.now.day
            self.patreon.charge(p)
        self.webhook(p)

    def card(self, p: Pledge, ok: bool) -> None:
        p.card_ok = ok
        if ok and p.status == "declined" and not p.cancelled_while_declined:
            self.patreon.charge(p)  # the patron fixes the card: Patreon charges what is owed
        self.webhook(p)

    def flip(self, p: Pledge) -> None:
        if p.status == "declined":
            p.flipped = not p.flipped
            self.webhook(p)

    def change_tier(self, p: Pledge, tier: str) -> None:
        zeroed = self.patreon.window_start is not None
        if p.status == "active" and not zeroed:  # Patreon's zeroed report could not show the change
            p.tier = tier
            self.webhook(p)

    def outage(self, days: int) -> None:
        self.patreon.outage_until = self.patreon.now + timedelta(days=days)


_tier = st.sampled_from(sorted(PRICES))
_index = st.integers(min_value=0, max_value=5)
_join = st.tuples(
    st.just("join"), _tier, st.sampled_from([1, 1, 12]), st.booleans(), st.sampled_from([1.0, 0.97, 1.04]),
    st.booleans(), st.sampled_from([0, 0, 3, 10]),
)
_steps = st.lists(
    st.one_of(
        st.tuples(st.just("to the 1st"), st.sampled_from([2, 20, 50])),
        st.tuples(st.just("advance"), st.sampled_from([6, 24, 24, 48, 72])),
        st.tuples(st.just("advance"), st.sampled_from([24 * 5, 24 * 7, 24 * 12, 24 * 30])),
        st.tuples(st.just("advance"), st.sampled_from([24 * 5, 24 * 7, 24 * 12, 24 * 30])),
        _join,
        st.tuples(st.just("cancel"), _index),
        st.tuples(st.just("rejoin"), _index),
        st.tuples(st.just("card"), _index, st.booleans()),
        st.tuples(st.just("card"), _index, st.just(False)),
        st.tuples(st.just("flip"), _index),
        st.tuples(st.just("tier"), _index, _tier),
        st.tuples(st.just("outage"), st.integers(min_value=1, max_value=4)),
    ),
    min_size=5,
    max_size=45,
)
_policies = st.builds(
    PolicySettings,
    declined=st.sampled_from(["restrict", "grace", "grace"]),
    declined_grace_days=st.sampled_from([0, 3, 10]),
    cancelled=st.sampled_from(["paid_period", "at_once"]),
)
_starts = st.sampled_from(
    [datetime(2026, 1, 10, 9, tzinfo=UTC), datetime(2026, 3, 28, 15, tzinfo=UTC), datetime(2024, 1, 30, 7, tzinfo=UTC)]
)


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,  # the same examples on every machine: CI never meets a new one first
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    joins=st.lists(_join, min_size=1, max_size=3),
    steps=_steps,
    policy=_policies,
    start=_starts,
    delays=st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=6),
    pending_styles=st.lists(st.booleans(), min_size=1, max_size=6),
)
def test_the_site_decides_what_was_paid_for(
    joins: list[tuple[Any, ...]],
    steps: list[tuple[Any, ...]],
    policy: PolicySettings,
    start: datetime,
    delays: list[int],
    pending_styles: list[bool],
) -> None:
    oracle = Oracle(Site(policy, start), Patreon(start, delays, pending_styles), policy)
    for step in [*joins, *steps]:
        oracle.step += 1
        kind, pledges = step[0], oracle.patreon.pledges
        if kind == "advance":
            oracle.advance(step[1])
        elif kind == "to the 1st":  # a few hours into the next month: the zeroing and the late charge run
            oracle.advance(int((oracle.patreon.next_first - oracle.patreon.now) / timedelta(hours=1)) + step[1])
        elif kind == "join":
            if len(pledges) < 4:
                oracle.join(*step[1:])
        elif kind == "outage":
            oracle.outage(step[1])
        elif pledges:
            if kind == "flip":  # Patreon flips a declined patron, if there is one
                pledges = [q for q in pledges if q.status == "declined"] or pledges
            p = pledges[step[1] % len(pledges)]
            if kind == "cancel":
                oracle.cancel(p)
            elif kind == "rejoin":
                oracle.rejoin(p)
            elif kind == "card":
                oracle.card(p, step[2])
            elif kind == "flip":
                oracle.flip(p)
            else:
                oracle.change_tier(p, step[2])
        oracle.sync()
