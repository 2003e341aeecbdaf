"""Member snapshots as Patreon sends them, for tests that write through ``Store.apply`` themselves."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask_patronlock.patreon import MemberSnapshot
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

