"""The moments, campaign and tiers the tests share, each with one meaning.

Tier ids are the price in dollars (``t5`` is Silver at $5 everywhere); a test that needs a tier of its own adds one
with a new id rather than giving an id here another title or price.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask_patronlock.patreon import TierSnapshot

#: The sites' "now": every page view decides at this moment (the store's clock is pinned to it).
NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
#: Where tests that step their own clock (the store, accounts, add-ons, OAuth state) start.
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
#: The start of the sandbox's clock in the sandbox and billing-scenario tests.
SANDBOX_START = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
CAMPAIGN = "c1"

FREE = TierSnapshot(id="free", title="Free", amount_cents=0)
BRONZE = TierSnapshot(id="t3", title="Bronze", amount_cents=300, url="/checkout/c1?rid=t3")
SILVER = TierSnapshot(id="t5", title="Silver", amount_cents=500, url="/checkout/c1?rid=t5")
GOLD = TierSnapshot(id="t10", title="Gold", amount_cents=1000, url="/checkout/c1?rid=t10")
RUBY = TierSnapshot(id="t20", title="Ruby", amount_cents=2000)
PLATINUM = TierSnapshot(id="t25", title="Platinum", amount_cents=2500)

#: The tiers :func:`tests.helpers.sites.make_site` stores by default.
TIERS = (SILVER, GOLD, PLATINUM)
#: The tiers of the settings-page site (:func:`tests.helpers.admin.make_admin_site`).
ADMIN_TIERS = (BRONZE, SILVER, GOLD)
