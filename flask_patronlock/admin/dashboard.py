"""The settings page's front door and the dashboard: patrons by tier, active and declined patrons over
the last 12 months, the monthly decline rate.
"""

from __future__ import annotations

from flask import redirect, render_template, url_for
from flask.typing import ResponseReturnValue

from ..health import health_report
from ..state import get_state
from . import charts
from .blueprint import nav, route
from .data import status_history, tier_counts
from .setup import checklist

nav("patronlock_admin.dashboard", "Dashboard")


@route("/")
def index() -> ResponseReturnValue:
    """The settings page's front door: the checklist until setup is done, then the dashboard."""
    if all(step.done for step in checklist()):
        return redirect(url_for(".dashboard"))
    return redirect(url_for(".setup"))


@route("/dashboard")
def dashboard() -> ResponseReturnValue:
    """Patrons by tier, active vs declined over the last 12 months, and the monthly decline rate (inline SVG)."""
    st = get_state()
    history = status_history(st, st.store.clock())
    by_tier = tier_counts(st)
    labels = history.months
    return render_template(
        "patronlock/admin/dashboard.html",
        health=health_report(st.app),
        by_tier=charts.bar_chart(by_tier, title="Active patrons by tier", empty="No active patrons stored yet."),
        over_time=charts.line_chart(
            labels,
            [
                charts.Series("Active", history.active, "#15803d"),
                charts.Series("Payment declined", history.declined, "#c2410c"),
            ],
            title="Active and declined patrons at the end of each month",
            empty="No patron history yet: it starts with the first sync.",
        ),
        decline_rate=charts.line_chart(
            labels,
            [charts.Series("Declines per 100 active patrons", history.decline_rate, "#b45309")],
            title="Monthly decline rate",
            unit="%",
            empty="No month with active patrons yet.",
        ),
        history=history,
        by_tier_rows=by_tier,
        steps=checklist(),
    )
