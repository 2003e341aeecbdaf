"""The sandbox's clock and billing: what Patreon does on its own as time passes (charges, declines and their
retries, free trials converting, gifts lapsing) and what a member does to their pledge (pledge, change tier, cancel,
decline, recover, start a free trial, receive a gift).

Everything Patreon would decide on its own happens when the sandbox clock moves (:meth:`BillingMixin.advance`), never
in real time, so tests are deterministic.

Billing follows Patreon's (each behaviour, with its public source, is in ``docs/patreon-behaviour.rst``; the named
scenarios that replay the rarer ones are in :mod:`.scenarios`):

* Annual pledges (``cadence=12``): ``currently_entitled_amount_cents``, ``will_pay_amount_cents`` and each charge
  are the annual total, twelve times the monthly amount (Patreon reports the annual total).
* A new paid pledge is charged at once (the default campaign has ``is_charged_immediately`` true). The next charge
  falls at midnight UTC on the same day of the month ``cadence`` months later (``billing="anniversary"``, like the
  fixtures), or on the 1st of the next month for monthly pledges of a ``billing="first_of_month"`` campaign.
* A declined charge is retried by the clock every :data:`DECLINE_RETRY_INTERVAL`, at most :data:`DECLINE_RETRIES`
  times, within the calendar month of the decline; after that the member stays ``declined_patron`` and is never
  charged again until they pay (:meth:`Sandbox.recover`). The entitled amount and tiers are kept meanwhile.
* Cancelling sets ``former_patron``, ``last_charge_status`` "Deleted", entitled 0, no tiers and keeps
  ``next_charge_date``, exactly like the ``members:pledge:delete`` fixture; a declined member who cancels stays
  listed as ``declined_patron`` ("Declined"), with nothing entitled and nothing to pay.
* Tier changes take effect at once and charge nothing.
* The creator's access token does not expire (real ones do, monthly; a sandbox whose clock jumps months would
  otherwise lock its own tests out), unless a test kills it early (:meth:`Sandbox.expire_creator_token`). Users'
  tokens expire after ``access_token_ttl`` seconds of sandbox time.
* Patreon's per-token limit (100 requests a minute) is off unless :meth:`Sandbox.limit_tokens` turns it on: tests
  that make many requests fast would otherwise wait on real time.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from ..dates import add_months
from .entities import Address, Member, SandboxError, Tier, User, aware, midnight
from .webhooks import WebhooksMixin

__all__ = ["BillingMixin"]


class BillingMixin(WebhooksMixin):
    """The clock and the pledges of a :class:`~.state.Sandbox` (see the module docstring)."""

    # -- clock -------------------------------------------------------------------------------------------------

    def advance(self, *, days: float = 0, hours: float = 0, minutes: float = 0, seconds: float = 0) -> list[Member]:
        """Move the clock forward and let Patreon do what falls due: charges, declines, trial and gift ends.

        Each active member whose ``next_charge_date`` passes is charged (``Paid``, ``last_charge_date`` the due
        date, lifetime support up by the charge, next charge ``cadence`` months later), possibly several times;
        members with ``fail_charges`` are declined instead; free trials whose end passes convert to paid pledges
        (and are charged); gifts whose end passes lapse. Every change fires ``members:update``.

        :returns: the members that changed, in the order they were processed.
        """
        delta = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        if delta < timedelta(0):
            raise SandboxError("the clock only moves forward; use travel_to() to set it")
        with self.lock:
            return self._run_clock(self._now + delta)

    def advance_months(self, months: int = 1) -> list[Member]:
        """Move the clock ``months`` calendar months forward (see :meth:`advance`)."""
        if months < 0:
            raise SandboxError("months must be >= 0")
        with self.lock:
            return self._run_clock(add_months(self._now, months))

    def travel_to(self, when: datetime) -> list[Member]:
        """Set the clock. Moving forward processes what falls due (see :meth:`advance`); moving back does not."""
        when = aware(when)
        with self.lock:
            if when <= self._now:
                self._now = when
                return []
            return self._run_clock(when)

    def _run_clock(self, target: datetime) -> list[Member]:
        changed: list[Member] = []
        while self._timers and self._timers[0][0] <= target:
            at, _, action = heapq.heappop(self._timers)
            changed += self._run_members(max(at, self._now))
            self._now = max(at, self._now)
            changed += action(self._now)
        changed += self._run_members(target)
        self._now = target
        return list(dict.fromkeys(changed))

    def schedule(self, at: datetime, action: Callable[[datetime], list[Member]]) -> None:
        """Have the clock call ``action(at)`` when it passes ``at`` (after the members' own billing up to then);
        the action returns the members it changed. Scenarios use it for what Patreon does later on its own."""
        with self.lock:
            heapq.heappush(self._timers, (aware(at), next(self._timer_order), action))

    def _run_members(self, target: datetime) -> list[Member]:
        """Everything the members' billing does up to ``target``, in time order per member."""
        changed: list[Member] = []
        for member in list(self._order):
            touched = False
            if member.is_free_trial and member.trial_ends_at is not None and member.trial_ends_at <= target:
                self._convert_trial(member, member.trial_ends_at)
                touched = True
            if member.is_gifted and member.gift_ends_at is not None and member.gift_ends_at <= target:
                self._end_gift(member, member.gift_ends_at)
                touched = True
            while True:
                if (
                    member.patron_status == "active_patron"
                    and not member.is_free_trial
                    and not member.is_gifted
                    and member.amount_cents > 0
                    and member.next_charge_date is not None
                    and member.next_charge_date <= target
                ):
                    self._charge(member, member.next_charge_date)
                    touched = True
                    continue
                retry = member.next_retry_date
                if retry is not None and retry <= target:
                    member.retries_done += 1
                    self._charge(member, retry)
                    touched = True
                    continue
                break
            if touched:
                changed.append(member)
        return changed

    def _next_charge_after(self, member: Member, at: datetime) -> datetime:
        """The charge after one made at ``at``: the 1st of next month (monthly pledges of a first-of-month
        campaign), else the same day of the month ``cadence`` months on; midnight UTC."""
        cadence = member.cadence or 1
        if cadence == 1 and self.campaign.billing == "first_of_month":
            return midnight(add_months(at, 1, 1))
        return midnight(add_months(at, cadence, member.anchor_day))

    def _charge(self, member: Member, at: datetime) -> bool:
        """Charge one billing period at ``at``; fires ``members:update``. False when declined (a first decline
        starts the retries; a failed retry counts one)."""
        member.last_charge_date = at
        if member.fail_charges:
            if member.patron_status != "declined_patron" or member.declined_at is None:
                member.declined_at = at
                member.retries_done = 0
            member.last_charge_status = "Declined"
            member.patron_status = "declined_patron"
            self._changed(member, "members:update")
            return False
        member.last_charge_status = "Paid"
        member.patron_status = "active_patron"
        member.declined_at = None
        member.retries_done = 0
        member.lifetime_cents += member.period_cents
        member.entitled_cents = member.period_cents
        if member.held_tier_ids is not None:
            member.tier_ids = member.held_tier_ids
            member.held_tier_ids = None
        member.next_charge_date = self._next_charge_after(member, at)
        self._changed(member, "members:update")
        return True

    def _convert_trial(self, member: Member, at: datetime) -> None:
        member.is_free_trial = False
        member.trial_ends_at = None
        member.cadence = member.cadence or 1
        member.anchor_day = at.day
        self._charge(member, at)

    def _end_gift(self, member: Member, at: datetime) -> None:
        member.gift_ends_at = None
        member.patron_status = "former_patron"
        member.entitled_cents = 0
        member.tier_ids = ()
        member.next_charge_date = None
        self._changed(member, "members:pledge:delete", "members:update")

    # -- pledges ---------------------------------------------------------------------------------------------------

    def _resolve_amount(self, tier: Tier | str | int | None, amount_cents: int | None) -> tuple[Tier | None, int]:
        if tier is not None:
            t = self.tier(tier)
            return t, t.amount_cents if amount_cents is None else amount_cents
        if amount_cents is None:
            raise SandboxError("give a tier or an amount_cents")
        if amount_cents < 0:
            raise SandboxError("amount_cents must be >= 0")
        return self.tier_for_amount(amount_cents), amount_cents

    def add_patron(
        self,
        email: str | None = None,
        *,
        tier: Tier | str | int | None = None,
        amount_cents: int | None = None,
        full_name: str | None = None,
        email_verified: bool = True,
        cadence: int = 1,
        user: User | str | None = None,
        charge: bool = True,
        fail_charges: bool = False,
        address: dict[str, Any] | None = None,
        note: str = "",
    ) -> Member:
        """A user pledges to the campaign.

        :param email: the user's email; an existing user with it is reused, else a user is created (default email
            ``patron<N>@example.com``).
        :param tier: tier object, id or title. Without it, ``amount_cents`` picks the highest tier at or below it.
        :param amount_cents: the monthly pledge (default: the tier's amount).
        :param cadence: 1 (monthly) or 12 (annual: ``currently_entitled_amount_cents``, each charge and
            ``will_pay_amount_cents`` are the annual total, twelve times the monthly amount, as Patreon reports).
        :param user: an existing user (object, id or email) instead of ``email``.
        :param charge: charge at once (Patreon's ``is_charged_immediately``). If false the pledge is unpaid:
            ``last_charge_*`` null and the first charge falls due when the next one would (a month from now, or
            the 1st of next month for a first-of-month campaign).
        :param fail_charges: the first and every later charge is declined (until :meth:`recover`).
        :param address: shipping address fields (``line_1``, ``city``, ``country``...).
        :returns: the member. A pledge at a $0 tier makes a free member (``patron_status`` null).
        :raises SandboxError: the user is already an active or declined patron (use :meth:`change_tier`), or a
            bad argument.

        Fires ``members:create`` (new member) or ``members:update`` (a former member pledging again), then
        ``members:pledge:create``; then ``members:update`` for the charge.
        """
        if cadence not in (1, 12):
            raise SandboxError("cadence must be 1 or 12")
        with self.lock:
            resolved, amount = self._resolve_amount(tier, amount_cents)
            the_user = self._resolve_user(user, email, full_name, email_verified)
            member = self._members_by_user.get(the_user.id)
            if member is not None and self._pledges(member):
                raise SandboxError(f"user {the_user.id} already pledges; use change_tier()")
            is_new = member is None
            if member is None:
                member = self._new_member(the_user)
            self._reset_billing(member)
            member.note = note
            if address is not None:
                member.address = Address(id=str(next(self._address_ids)), created_at=self._now, **address)
            member.tier_ids = (resolved.id,) if resolved is not None else ()
            member.is_free_trial = False
            member.is_gifted = False
            member.trial_ends_at = member.gift_ends_at = None
            if amount == 0:
                member.patron_status = None
                member.amount_cents = 0
                member.entitled_cents = 0
                member.cadence = None
                member.last_charge_status = member.last_charge_date = member.next_charge_date = None
                self._changed(member, "members:create" if is_new else "members:update")
                return member
            member.amount_cents = amount
            member.cadence = cadence
            member.entitled_cents = member.period_cents
            member.patron_status = "active_patron"
            member.pledge_start = self._now
            member.anchor_day = self._now.day
            member.fail_charges = fail_charges
            if not charge:
                member.last_charge_status = member.last_charge_date = None
                member.next_charge_date = self._next_charge_after(member, self._now)
            self._changed(member, "members:create" if is_new else "members:update", "members:pledge:create")
            if charge:
                self._charge(member, self._now)
            return member

    def change_tier(
        self, ref: Member | User | str, tier: Tier | str | int | None = None, *, amount_cents: int | None = None
    ) -> Member:
        """Move a pledging member to another tier or amount (up or down), at once, without a charge.

        Fires ``members:pledge:update`` and ``members:update``.

        :raises SandboxError: the member does not pledge, or the new amount is 0 (use :meth:`cancel`).
        """
        with self.lock:
            member = self.member(ref)
            if not self._pledges(member):
                raise SandboxError(f"member {member.id} does not pledge; use add_patron()")
            resolved, amount = self._resolve_amount(tier, amount_cents)
            if amount <= 0:
                raise SandboxError("a pledge of 0 is a cancellation; use cancel()")
            member.amount_cents = amount
            member.entitled_cents = member.period_cents
            member.tier_ids = (resolved.id,) if resolved is not None else ()
            self._changed(member, "members:pledge:update", "members:update")
            return member

    def cancel(self, ref: Member | User | str) -> Member:
        """The member deletes their pledge: ``former_patron``, ``last_charge_status`` "Deleted", entitled 0, no
        tiers, ``next_charge_date`` kept (like the ``members:pledge:delete`` fixture). A declined member who cancels
        stays listed as ``declined_patron`` with ``last_charge_status`` "Declined" (Patreon keeps listing them so
        for months), with nothing entitled, ``will_pay_amount_cents`` 0 and no more retries.

        Fires ``members:pledge:delete`` and ``members:update``.
        """
        with self.lock:
            member = self.member(ref)
            if member.patron_status == "former_patron" or member.pledge_deleted:
                raise SandboxError(f"member {member.id} already cancelled")
            if member.patron_status == "declined_patron":
                member.pledge_deleted = True
            else:
                member.patron_status = "former_patron"
                member.last_charge_status = "Deleted"
            member.held_tier_ids = None
            member.entitled_cents = 0
            member.tier_ids = ()
            member.is_free_trial = False
            member.trial_ends_at = None
            member.gift_ends_at = None
            self._changed(member, "members:pledge:delete", "members:update")
            return member

    def decline(self, ref: Member | User | str) -> Member:
        """A charge is declined now: ``declined_patron``, ``last_charge_status`` "Declined", ``last_charge_date``
        now. Entitled amount and tiers are kept. The member's card keeps failing (``fail_charges``), so the clock's
        retries through the rest of the month fail too, until :meth:`recover` (or ``set_fail_charges(m, False)``
        before a retry).

        Fires ``members:update``.
        """
        with self.lock:
            member = self.member(ref)
            if not self._pledges(member):
                raise SandboxError(f"member {member.id} does not pledge")
            member.fail_charges = True
            member.declined_at = None
            self._charge(member, self._now)
            return member

    def recover(self, ref: Member | User | str) -> Member:
        """A declined member's payment goes through now: ``active_patron``, "Paid", ``last_charge_date`` now,
        lifetime support up, next charge ``cadence`` months on. Clears ``fail_charges``.

        Fires ``members:update``.
        """
        with self.lock:
            member = self.member(ref)
            if member.patron_status != "declined_patron" or member.pledge_deleted:
                raise SandboxError(f"member {member.id} is not declined (or cancelled)")
            member.fail_charges = False
            member.anchor_day = self._now.day
            self._charge(member, self._now)
            return member

    def set_fail_charges(self, ref: Member | User | str, fail: bool = True) -> Member:
        """Mark a member's future charges (and retries) to be declined (or not). Fires nothing by itself."""
        with self.lock:
            member = self.member(ref)
            member.fail_charges = fail
            return member

    def _new_pledge(
        self,
        tier: Tier | str | int,
        user: User | str | None,
        email: str | None,
        full_name: str | None,
        email_verified: bool,
    ) -> tuple[Tier, Member, bool]:
        """The tier, the user's member (made if new) set active, and whether it is new; a user who already pledges
        is an error. Call with the lock held."""
        resolved = self.tier(tier)
        the_user = self._resolve_user(user, email, full_name, email_verified)
        member = self._members_by_user.get(the_user.id)
        if member is not None and self._pledges(member):
            raise SandboxError(f"user {the_user.id} already pledges")
        is_new = member is None
        if member is None:
            member = self._new_member(the_user)
        self._reset_billing(member)
        member.patron_status = "active_patron"
        return resolved, member, is_new

    @staticmethod
    def _pledges(member: Member) -> bool:
        """The member has a live pledge (active or declined, not deleted)."""
        return member.patron_status in ("active_patron", "declined_patron") and not member.pledge_deleted

    @staticmethod
    def _reset_billing(member: Member) -> None:
        """Forget a previous pledge's decline, cancellation and held tiers (the member pledges anew)."""
        member.declined_at = None
        member.retries_done = 0
        member.pledge_deleted = False
        member.held_tier_ids = None

    def start_free_trial(
        self,
        email: str | None = None,
        *,
        tier: Tier | str | int,
        days: int = 7,
        user: User | str | None = None,
        full_name: str | None = None,
        email_verified: bool = True,
    ) -> Member:
        """A user starts a free trial of ``tier``: active, ``is_free_trial`` true, entitled to the tier, no charge,
        ``will_pay`` 0 and ``pledge_cadence`` null (like the free-trial fixture). When the clock passes the end
        the trial converts to a monthly pledge and is charged (declined if ``fail_charges``).

        Fires ``members:create`` or ``members:update``, then ``members:pledge:create``.
        """
        with self.lock:
            resolved, member, is_new = self._new_pledge(tier, user, email, full_name, email_verified)
            member.is_free_trial = True
            member.is_gifted = False
            member.trial_ends_at = self._now + timedelta(days=days)
            member.amount_cents = resolved.amount_cents
            member.entitled_cents = resolved.amount_cents
            member.tier_ids = (resolved.id,)
            member.cadence = None
            member.pledge_start = self._now
            member.last_charge_status = member.last_charge_date = member.next_charge_date = None
            self._changed(member, "members:create" if is_new else "members:update", "members:pledge:create")
            return member

    def gift_membership(
        self,
        email: str | None = None,
        *,
        tier: Tier | str | int,
        months: int = 1,
        user: User | str | None = None,
        full_name: str | None = None,
        email_verified: bool = True,
    ) -> Member:
        """Someone gifts ``months`` of ``tier``: active, ``is_gifted`` true, entitled to the tier, nothing to pay.
        When the clock passes the end the gift lapses (``former_patron``, entitled 0).

        Fires ``members:create`` or ``members:update``, then ``members:pledge:create``.
        """
        with self.lock:
            resolved, member, is_new = self._new_pledge(tier, user, email, full_name, email_verified)
            member.is_gifted = True
            member.is_free_trial = False
            member.gift_ends_at = add_months(self._now, months)
            member.amount_cents = resolved.amount_cents
            member.entitled_cents = resolved.amount_cents
            member.tier_ids = (resolved.id,)
            member.cadence = 1
            member.pledge_start = self._now
            member.last_charge_status = member.last_charge_date = None
            member.next_charge_date = None
            self._changed(member, "members:create" if is_new else "members:update", "members:pledge:create")
            return member
