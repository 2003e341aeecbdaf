"""Named scenarios: Patreon's behaviours that affect access, replayed on a sandbox's members.

Each scenario is a function ``(sandbox, **params) -> members acted on`` whose docstring says what Patreon does, where
that is written down (the same source as its entry in ``docs/patreon-behaviour.rst``) and exactly what the scenario
changes. Play one with :meth:`Sandbox.scenario(name, **params) <.state.Sandbox.scenario>`, ``POST
/_sandbox/scenarios/<name>`` (JSON body: the params) or the pytest marker
``@pytest.mark.patreon_sandbox(scenarios=[...])``.

Most take ``members``: a member reference (member id, user id or email) or a list of them; without it the scenario
acts on every member it applies to (e.g. every paid-up patron). A scenario changes members through the same paths
as the rest of the sandbox, so each change fires the ``members:*`` webhooks Patreon would send, and the documents
served afterwards (API and webhooks) are shaped like the real payloads in the shared fixtures.

Callers hold ``sandbox.lock`` (:meth:`Sandbox.scenario <.state.Sandbox.scenario>` does).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..dates import add_months
from .attributes import MEMBER_ATTRIBUTES
from .entities import SandboxError, midnight

if TYPE_CHECKING:
    from .entities import Member
    from .state import Sandbox

__all__ = [
    "REPLAYS",
    "SCENARIOS",
    "SCENARIO_NAMES",
    "TIMERS",
    "Timer",
    "describe",
    "play",
    "replay_live_check",
    "timer",
]

MemberRefs = str | Iterable[str] | None


def _paid_up(member: Member) -> bool:
    """Active, last charge ``Paid``, paying (not a trial or gift), not cancelled."""
    return (
        member.patron_status == "active_patron"
        and member.last_charge_status == "Paid"
        and not member.is_free_trial
        and not member.is_gifted
        and not member.pledge_deleted
        and member.amount_cents > 0
    )


def _paying(member: Member) -> bool:
    """A live paid pledge (active or declined), not a trial or gift."""
    return (
        member.patron_status in ("active_patron", "declined_patron")
        and not member.pledge_deleted
        and not member.is_free_trial
        and not member.is_gifted
        and member.amount_cents > 0
    )


def _declined(member: Member) -> bool:
    return member.patron_status == "declined_patron" and not member.pledge_deleted


def _targets(sandbox: Sandbox, members: MemberRefs, applies: Callable[[Member], bool], what: str) -> list[Member]:
    """The members named (each must satisfy ``applies``), or every member that does."""
    if members is None:
        return [m for m in sandbox.iter_members() if applies(m)]
    refs = [members] if isinstance(members, str) else list(members)
    chosen = [sandbox.member(ref) for ref in refs]
    for member in chosen:
        if not applies(member):
            raise SandboxError(f"member {member.id} is not {what}")
    return list(dict.fromkeys(chosen))


def _number(value: Any, name: str, *, minimum: float, maximum: float | None = None) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SandboxError(f"{name} must be a number") from None
    if number < minimum or (maximum is not None and number > maximum):
        bound = f"between {minimum:g} and {maximum:g}" if maximum is not None else f"at least {minimum:g}"
        raise SandboxError(f"{name} must be {bound}")
    return number


# -- the scenarios ----------------------------------------------------------------------------------------------------


def start_of_month(sandbox: Sandbox, *, hours: float = 6, members: MemberRefs = None) -> list[Member]:
    """Start of month: paid-up patrons show nothing entitled until the month's charge runs.

    Patreon: on 1 September 2021 the API changed a paid-up 56-month patron's ``currently_entitled_amount_cents`` from
    1000 to 0 and blanked ``currently_entitled_tiers``, before that month's charge (jwz.org blog, 2022-06-13, quoting
    the exchange with Patreon support; Patreon's forum post "Updates to your patron count display numbers" adds that
    charges at the start of a month take about two days to process).

    The clock moves to 00:00 UTC on the next 1st (everything due before then happens first). Every targeted monthly
    patron (default: every paid-up monthly patron) then shows ``currently_entitled_amount_cents`` 0 and no
    ``currently_entitled_tiers``, with ``patron_status`` ``active_patron`` and ``last_charge_status`` ``Paid`` and
    ``last_charge_date`` of the last period unchanged (``members:update``). ``hours`` later the month's charge
    runs: ``Paid`` (or ``Declined`` with retries, for a failing card) at that time, amount and tiers back, lifetime
    support up; their next charge is on the following 1st.
    """
    hours = _number(hours, "hours", minimum=0, maximum=72)
    now = sandbox.now
    first = now if (now.day == 1 and now == midnight(now)) else midnight(add_months(now, 1, 1))
    sandbox.travel_to(first)
    targets = _targets(sandbox, members, lambda m: _paid_up(m) and (m.cadence or 1) == 1, "a paid-up monthly patron")
    runs_at = first + timedelta(hours=hours)
    for member in targets:
        member.held_tier_ids = member.tier_ids
        member.tier_ids = ()
        member.entitled_cents = 0
        member.anchor_day = 1
        member.next_charge_date = runs_at
        sandbox._changed(member, "members:update")
    return targets


def declined_for_months(sandbox: Sandbox, *, months: int = 3, members: MemberRefs = None) -> list[Member]:
    """Declines never end on their own: a declined patron is retried within the month, then stays declined.

    Patreon: "Retry processing payments up to six times within the month they are declined", "a patron will only
    ever have one declined bill. If they are declined once, we will not continue to charge them for future months",
    and they are "restricted from viewing patron-only content until they pay" (Patreon Help Center, "Why are my
    patrons' payments declined?").

    Every targeted patron's card starts failing (default: every paying patron); the clock then moves ``months``
    months. Each whose charge falls due meanwhile (an annual pledge only if it renews then) is declined at it
    (``declined_patron``, ``Declined``), retried every :data:`~.state.DECLINE_RETRY_INTERVAL` up to
    :data:`~.state.DECLINE_RETRIES` times within that calendar month (each retry moves ``last_charge_date`` and fires
    ``members:update``), then left alone: still ``declined_patron`` months later, entitled amount and tiers
    unchanged, lifetime support not increased, never charged again.
    """
    count = int(_number(months, "months", minimum=1, maximum=60))
    targets = _targets(sandbox, members, _paying, "a paying patron")
    for member in targets:
        member.fail_charges = True
    sandbox.advance_months(count)
    return targets


def cancel_after_decline(sandbox: Sandbox, *, members: MemberRefs = None) -> list[Member]:
    """A declined patron cancels, and Patreon keeps listing them as ``declined_patron``.

    Patreon: a declined patron keeps the ``declined_patron`` status for months, also after deleting the pledge (reported
    in this project's issue from creators' observations; no public Patreon page states it, so treat the exact fields
    as the sandbox's best reading). Patreon's help: a cancelled patron gets no new bills.

    Targeted members (default: every declined patron; a named active patron is declined first) delete their pledge:
    ``members:pledge:delete`` and ``members:update`` fire, ``patron_status`` stays ``declined_patron`` and
    ``last_charge_status`` ``Declined``, ``currently_entitled_amount_cents`` 0, no tiers, ``will_pay_amount_cents``
    0, no more retries.
    """
    targets = _targets(sandbox, members, lambda m: _declined(m) or _paying(m), "a paying or declined patron")
    for member in targets:
        if member.patron_status != "declined_patron":
            sandbox.decline(member)
        sandbox.cancel(member)
    return targets


def annual_pledge(
    sandbox: Sandbox, *, email: str | None = None, tier: str = "Gold", charge: bool = True
) -> list[Member]:
    """An annual pledge: Patreon reports the annual total, not the monthly amount.

    Patreon: for an annual membership the API's amount is the total annual pledge, so a $10-a-month annual patron
    looks like a $120 one (Patreon/patreon-wordpress#120, fixed in #121 by dividing by ``pledge_cadence``).

    A user (``email``, default a new one) pledges ``tier`` yearly and is charged up front: ``pledge_cadence`` 12,
    ``currently_entitled_amount_cents``, ``will_pay_amount_cents`` and the charge are twelve times the tier's monthly
    amount, the next charge a year on. With ``charge=False`` the pledge is unpaid (no charge yet).
    """
    if not isinstance(charge, bool):  # from a form or query string
        charge = str(charge).strip().lower() in ("1", "true", "yes", "on")
    return [sandbox.add_patron(email, tier=tier, cadence=12, charge=charge)]


def charge_dates_missing(
    sandbox: Sandbox, *, days: float = 3, attributes: Iterable[str] = ("last_charge_date",)
) -> list[Member]:
    """A known outage of a field: ``last_charge_date`` empty for every patron, for days.

    Patreon: from 2020-09-03 the API returned an empty ``last_charge_date`` for all patrons for several days (Patreon
    developer forum, "Issue/Bug in Patreon API: last_charge_date empty for ALL patrons since 2020-09-03").

    For ``days`` days of sandbox time every document served (API listings, single members, webhook bodies) shows
    each of ``attributes`` (default ``last_charge_date``) as null; the sandbox keeps the real values and billing
    goes on, and they show again when the clock passes the end. Fires no webhook by itself.
    """
    length = _number(days, "days", minimum=0, maximum=366)
    names = frozenset([attributes] if isinstance(attributes, str) else attributes)
    unknown = sorted(names - set(MEMBER_ATTRIBUTES))
    if unknown or not names:
        raise SandboxError(f"unknown member attributes: {', '.join(unknown) or '(none given)'}")
    sandbox.blanked_attributes = sandbox.blanked_attributes | names
    sandbox._clear_caches()
    sandbox.schedule(sandbox.now + timedelta(days=length), timer(sandbox, "show_attributes", names=sorted(names)))
    return sandbox.members


def cancel_then_rejoin(sandbox: Sandbox, *, members: MemberRefs = None) -> list[Member]:
    """Cancel, then rejoin in the same period: the status goes ``Deleted`` -> ``Paid`` with no new payment.

    Patreon: a patron who deletes and renews gets more than one ``members:create``/``members:delete`` (Patreon API
    docs, webhook triggers); the last charge's date does not move when they rejoin within a paid period (reported in
    this project's issue; no public page shows the payload, so the unchanged date is the sandbox's reading).

    Each targeted patron (default: every paid-up patron) cancels (``former_patron``, ``Deleted``;
    ``members:pledge:delete``, ``members:update``) and pledges again at once at the same amount and tier:
    ``active_patron``, ``last_charge_status`` ``Paid`` with ``last_charge_date``, lifetime support and
    ``next_charge_date`` unchanged, ``pledge_relationship_start`` now (``members:pledge:create``,
    ``members:update``). No charge happened: an inferred "charge succeeded" here is wrong.
    """
    targets = _targets(sandbox, members, _paid_up, "a paid-up patron")
    for member in targets:
        tiers, charged_at, next_charge = member.tier_ids, member.last_charge_date, member.next_charge_date
        sandbox.cancel(member)
        member.patron_status = "active_patron"
        member.last_charge_status = "Paid"
        member.last_charge_date = charged_at
        member.next_charge_date = next_charge
        member.entitled_cents = member.period_cents
        member.tier_ids = tiers
        member.pledge_start = sandbox.now
        sandbox._changed(member, "members:pledge:create", "members:update")
    return targets


def delete_never_paid(
    sandbox: Sandbox, *, email: str | None = None, tier: str = "Bronze", members: MemberRefs = None
) -> list[Member]:
    """``members:delete`` comes only for members who never paid, and its payload may still say active.

    Patreon: "Deletion only occurs if no prior payment happened, otherwise pledge deletion is an update to member
    status" (Patreon API docs, webhook triggers, ``members:delete``).

    Without ``members``, a user (``email``, default a new one) pledges ``tier`` without being charged
    (``active_patron``, ``last_charge_status`` null, lifetime 0); then the membership is deleted: ``members:delete``
    fires with a body still saying ``active_patron`` with the tier entitled, and the member leaves the listing.
    Named ``members`` must never have paid (lifetime support 0).
    """
    if members is None:
        targets = [sandbox.add_patron(email, tier=tier, charge=False)]
    else:
        targets = _targets(sandbox, members, lambda m: m.lifetime_cents == 0, "a member who never paid")
    for member in targets:
        sandbox.delete_member(member)
    return targets


def amount_moves(
    sandbox: Sandbox, *, percent: float = -3, kind: str = "currency", members: MemberRefs = None
) -> list[Member]:
    """Amounts move: currency conversion and first-month discounts change the cents, not the tier.

    Patreon: patrons may pay in their own currency, so developers should check the entitled tier rather than
    compare amounts (Patreon Help Center, "Currency updates to the Patreon API"); amounts are adjusted periodically
    for currency (Patreon developer forum, the 2020-09-03 ``last_charge_date`` thread); a first-month discount offer
    makes the first payment lower, and what ``currently_entitled_amount_cents`` then shows is undocumented (forum
    question "What does currently_entitled_amount_cents return for a discounted first-month pledge?", unanswered).

    Each targeted patron (default: every paid-up patron) keeps its tiers while its cents move by ``percent``
    (rounded to the cent; ``members:update``). ``kind="currency"``: the pledge itself moves (entitled, will-pay and
    later charges). ``kind="discount"``: only ``currently_entitled_amount_cents`` moves, until the next charge.
    """
    change = _number(percent, "percent", minimum=-99, maximum=100)
    if kind not in ("currency", "discount"):
        raise SandboxError("kind must be currency or discount")
    targets = _targets(sandbox, members, _paid_up, "a paid-up patron")
    for member in targets:
        if kind == "currency":
            member.amount_cents = max(1, round(member.amount_cents * (100 + change) / 100))
            member.entitled_cents = member.period_cents
        else:
            member.entitled_cents = max(1, round(member.period_cents * (100 + change) / 100))
        sandbox._changed(member, "members:update")
    return targets


def pending_after_decline(
    sandbox: Sandbox, *, settles: str | None = None, hours: float = 24, members: MemberRefs = None
) -> list[Member]:
    """ "Decline recovered" without a payment: ``declined_patron``/``Declined``, then ``active_patron``/``Pending``.

    Patreon: a charge shows ``Pending`` while it is processed, with ``patron_status`` ``active_patron`` (Patreon
    developer forum, "last_charge_status is delayed": up to 30 minutes; "Better status message when payment is
    pending": ``active_patron``/``Pending`` with ``declined_since`` set and no lifetime support). Only ``Paid`` is a
    successful charge (Patreon API docs, member ``last_charge_status``).

    Targeted members (default: every declined patron; a named paying patron is declined first) go to
    ``active_patron``, ``last_charge_status`` ``Pending``, ``last_charge_date`` now, lifetime unchanged
    (``members:update``). With ``settles="Paid"`` the charge goes through ``hours`` later (lifetime up); with
    ``settles="Declined"`` it declines then (retries start again); with ``settles`` None it stays pending until the
    next charge date.
    """
    if settles not in (None, "Paid", "Declined"):
        raise SandboxError("settles must be Paid, Declined or null")
    wait = _number(hours, "hours", minimum=0, maximum=24 * 31)
    targets = _targets(sandbox, members, lambda m: _declined(m) or _paying(m), "a paying or declined patron")
    now = sandbox.now
    for member in targets:
        if member.patron_status != "declined_patron":
            sandbox.decline(member)
        member.patron_status = "active_patron"
        member.last_charge_status = "Pending"
        member.last_charge_date = now
        member.next_charge_date = sandbox._next_charge_after(member, now)
        sandbox._changed(member, "members:update")

    if settles is not None:
        action = timer(sandbox, "settle_pending", member_ids=[m.id for m in targets], settles=settles)
        sandbox.schedule(now + timedelta(hours=wait), action)
    return targets


def charge_refunded(sandbox: Sandbox, *, members: MemberRefs = None) -> list[Member]:
    """A refunded charge: ``last_charge_status`` ``Refunded`` while the pledge goes on.

    Patreon: "Refunded: The most recent charge was refunded (note: patrons must also delete their membership to
    avoid auto-renewal)" (Patreon Help Center, "Relationship Manager billing statuses"); refunds deduct from the
    lifetime total (Patreon payments team, developer forum "How to determine if a patron has been successfully
    charged?"). What the entitled fields show after a refund is not documented.

    Each targeted patron (default: every paid-up patron) gets ``last_charge_status`` ``Refunded``, lifetime support
    down by one period (not below 0), ``patron_status``, entitled amount, tiers and next charge unchanged
    (``members:update``).
    """
    targets = _targets(sandbox, members, _paid_up, "a paid-up patron")
    for member in targets:
        member.last_charge_status = "Refunded"
        member.lifetime_cents = max(0, member.lifetime_cents - member.period_cents)
        sandbox._changed(member, "members:update")
    return targets


def charge_fraud(sandbox: Sandbox, *, members: MemberRefs = None) -> list[Member]:
    """A charge deemed fraudulent: declined, never retried, no access.

    Patreon: "The most recent charge was deemed fraudulent and their payment is being declined. If a charge is
    potentially fraudulent, we will not automatically retry the payment. While a patron's payment is marked as
    fraud, they will not have access" (Patreon Help Center, "Relationship Manager billing statuses").

    Each targeted patron (default: every paying patron) gets ``patron_status`` ``declined_patron``,
    ``last_charge_status`` ``Fraud``, ``last_charge_date`` now and a failing card, with no retries
    (``members:update``); :meth:`~.state.Sandbox.recover` clears it.
    """
    targets = _targets(sandbox, members, _paying, "a paying patron")
    for member in targets:
        member.patron_status = "declined_patron"
        member.last_charge_status = "Fraud"
        member.last_charge_date = sandbox.now
        member.fail_charges = True
        member.declined_at = None  # no retries
        sandbox._changed(member, "members:update")
    return targets


#: a value of each JSON type a live check names (``type_changed``, ``new_field``), served in its place on replay.
_SAMPLES: dict[str, Any] = {
    "str": "x", "int": 1, "float": 1.5, "bool": True, "boolean": True, "null": None, "object": {}, "array": [],
}


def replay_live_check(
    sandbox: Sandbox, *, path: str | None = None, findings: dict[str, Any] | None = None
) -> list[Member]:
    """What Patreon answered a real site's live check, replayed: members pages with the same shape differences.

    Source: a file ``flask patronlock check --live --save PATH`` wrote (``path``), or its decoded JSON
    (``findings``). Each members-page finding becomes a standing ``drift`` fault on every page: a missing field is
    left out, a new field or a changed type served with a value of the type seen, an unknown ``patron_status`` or
    ``last_charge_status`` served as seen; a ``total_mismatch`` becomes a ``drop`` fault (one member left out while
    ``meta.pagination.total`` still counts it). Campaign and webhook findings are not replayed. Clear with
    :meth:`~.state.Sandbox.clear_faults`.
    """
    import json

    if (path is None) == (findings is None):
        raise SandboxError("replay_live_check needs path or findings (one of them)")
    if path is not None:
        try:
            with open(path, encoding="utf-8") as fh:
                findings = json.load(fh)
        except (OSError, ValueError) as exc:
            raise SandboxError(f"replay_live_check: cannot read {path}: {type(exc).__name__}") from None
    items = findings.get("findings") if isinstance(findings, dict) else None
    if not isinstance(items, list):
        raise SandboxError("replay_live_check: not a saved live check (no 'findings' list)")
    for item in items:
        if not isinstance(item, dict) or item.get("where") != "members page":
            continue
        kind, name = item.get("kind"), item.get("field")
        if kind == "total_mismatch":
            sandbox.add_fault("drop", page=1, times=None)
            continue
        if not isinstance(name, str) or not name:
            continue
        if kind == "missing_field":
            sandbox.add_fault("drift", field=name, remove=True, times=None)
        elif kind == "unknown_value" and isinstance(item.get("value"), str):
            sandbox.add_fault("drift", field=name, value=item["value"], times=None)
        elif kind in ("new_field", "type_changed") and item.get("value_type") in _SAMPLES:
            sandbox.add_fault("drift", field=name, value=_SAMPLES[item["value_type"]], times=None)
    return []


# -- what scenarios leave for the clock to do later -------------------------------------------------------------------


def _show_attributes(sandbox: Sandbox, *, names: list[str]) -> Callable[[datetime], list[Member]]:
    """``charge_dates_missing``'s end: the blanked attributes show again."""

    def run(_at: datetime) -> list[Member]:
        sandbox.blanked_attributes = sandbox.blanked_attributes - frozenset(names)
        sandbox._clear_caches()
        return []

    return run


def _settle_pending(
    sandbox: Sandbox, *, member_ids: list[str], settles: str
) -> Callable[[datetime], list[Member]]:
    """``pending_after_decline``'s settling: each member still ``Pending`` is charged (``Paid``) or declined."""

    def run(at: datetime) -> list[Member]:
        settled = []
        for member_id in member_ids:
            member = sandbox._members.get(member_id)
            if member is None or member.last_charge_status != "Pending":
                continue
            member.fail_charges = settles == "Declined"
            member.declined_at = None
            sandbox._charge(member, at)
            settled.append(member)
        return settled

    return run


#: what a scenario may schedule, by kind: each builds the clock's action from the sandbox and plain (JSON-ready)
#: parameters, so that a saved sandbox (:mod:`.persistence`) schedules it again when loaded.
TIMERS: dict[str, Callable[..., Callable[[datetime], list[Member]]]] = {
    "show_attributes": _show_attributes,
    "settle_pending": _settle_pending,
}


@dataclass(frozen=True)
class Timer:
    """A scheduled action that says what it is (``kind`` in :data:`TIMERS` and its ``params``), so it can be saved."""

    kind: str
    params: dict[str, Any]
    run: Callable[[datetime], list[Member]] = field(repr=False, compare=False)

    def __call__(self, at: datetime) -> list[Member]:
        return self.run(at)


def timer(sandbox: Sandbox, kind: str, **params: Any) -> Timer:
    """The clock's action ``kind`` of :data:`TIMERS` on ``sandbox`` with ``params`` (for :meth:`Sandbox.schedule`).

    :raises SandboxError: an unknown kind.
    """
    build = TIMERS.get(kind)
    if build is None:
        raise SandboxError(f"unknown scheduled action {kind!r}; one of {', '.join(TIMERS)}")
    return Timer(kind, dict(params), build(sandbox, **params))


#: every scenario by name, in the catalogue's order.
SCENARIOS: dict[str, Callable[..., list[Member]]] = {
    func.__name__: func
    for func in (
        start_of_month,
        declined_for_months,
        pending_after_decline,
        cancel_after_decline,
        annual_pledge,
        amount_moves,
        charge_dates_missing,
        cancel_then_rejoin,
        delete_never_paid,
        charge_refunded,
        charge_fraud,
    )
}
#: the scenario names.
SCENARIO_NAMES: tuple[str, ...] = tuple(SCENARIOS)
#: scenarios played from what a real site saw rather than from the behaviour catalogue (not listed with it).
REPLAYS: dict[str, Callable[..., list[Member]]] = {"replay_live_check": replay_live_check}


def describe() -> list[dict[str, Any]]:
    """Each scenario's name, one-line summary, full description and parameters (for ``GET /_sandbox/scenarios``)."""
    described = []
    for name, func in SCENARIOS.items():
        doc = inspect.getdoc(func) or ""
        params = {
            p.name: (None if p.default is inspect.Parameter.empty else p.default)
            for p in list(inspect.signature(func).parameters.values())[1:]
        }
        described.append({"name": name, "summary": doc.split("\n", 1)[0], "description": doc, "params": params})
    return described


def play(sandbox: Sandbox, name: str, **params: Any) -> list[Member]:
    """Play scenario ``name`` with ``params`` on ``sandbox`` (hold ``sandbox.lock``).

    :raises SandboxError: unknown scenario, unknown parameter or a bad value.
    """
    func = SCENARIOS.get(name) or REPLAYS.get(name)
    if func is None:
        raise SandboxError(f"unknown scenario {name!r}; one of {', '.join(SCENARIO_NAMES)}")
    try:
        inspect.signature(func).bind(sandbox, **params)
    except TypeError as exc:
        raise SandboxError(f"scenario {name}: {exc}") from None
    return func(sandbox, **params)
