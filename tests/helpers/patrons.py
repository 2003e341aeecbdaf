"""Member snapshots as Patreon sends them (for tests that write through ``Store.apply``) and stored patrons (for
the pure policy)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask_patronlock.patreon import MemberSnapshot
from flask_patronlock.patron import Patron
from tests.helpers.constants import CAMPAIGN, SILVER, T0


def snap(member_id: str = "m1", **kw: Any) -> MemberSnapshot:
    """A Silver patron of campaign c1, monthly, who joined and was charged the day before :data:`T0`."""
    defaults: dict[str, Any] = dict(
        campaign_id=CAMPAIGN,
        user_id="u-" + member_id,
        email=f"{member_id}@example.com",
        full_name="Kopi",
        patron_status="active_patron",
        last_charge_status="Paid",
        last_charge_date=T0 - timedelta(days=1),
        next_charge_date=T0 + timedelta(days=30),
        entitled_cents=SILVER.amount_cents,
        entitled_tier_ids=(SILVER.id,),
        will_pay_cents=SILVER.amount_cents,
        pledge_start=T0 - timedelta(days=1),
        pledge_cadence=1,
    )
    defaults.update(kw)
    return MemberSnapshot(member_id=member_id, **defaults)



def patron(base: dict[str, Any] | None = None, /, **kw: Any) -> Patron:
    """A stored Silver patron (member ``m1``), paid two days before :data:`T0`; ``base`` then ``kw`` change fields."""
    values: dict[str, Any] = dict(
        member_id="m1",
        patron_status="active_patron",
        last_charge_status="Paid",
        last_charge_date=T0 - timedelta(days=2),
        next_charge_date=T0 + timedelta(days=28),
        entitled_cents=SILVER.amount_cents,
        entitled_tier_ids=(SILVER.id,),
        pledge_start=T0 - timedelta(days=40),
        pledge_cadence=1,
        observed_at=T0,
    )
    values.update(base or {})
    values.update(kw)
    return Patron(**values)
