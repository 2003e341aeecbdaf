"""The settings page's front door and the dashboard: patrons by tier, the monthly figures (new, cancelled, declined,
recovered, churn, decline rate) of the last 12 months, what each lock's banner brought, and the CSV downloads.

Every figure is :mod:`flask_patronlock.insight`'s, read from the audit log and the banner views.
"""

from __future__ import annotations

from collections.abc import Iterator

from flask import Response, redirect, render_template, url_for
from flask.typing import ResponseReturnValue

from ..dates import add_months
from ..formatting import date_text, month_text, number
from ..health import health_report
from ..i18n import N_
from ..insight import figures_csv, insight, patrons_csv
from ..state import get_state
from . import charts
from .banners import REASON_ORDER, REASON_TITLES
from .blueprint import nav, route
from .data import tier_counts
from .setup import checklist

nav("patronlock_admin.dashboard", N_("Dashboard"))


@route("/")
def index() -> ResponseReturnValue:
    """The settings page's front door: the checklist until setup is done, then the dashboard."""
    if all(step.done for step in checklist()):
        return redirect(url_for(".dashboard"))
    return redirect(url_for(".setup"))


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{number(value)}%"


@route("/dashboard")
def dashboard() -> ResponseReturnValue:
    """Patrons by tier, the monthly figures with their charts, the figures per lock (inline SVG, no JavaScript)."""
    st = get_state()
    now = st.store.clock()
    figures = insight(st, now)
    months = figures.months
    labels = [m.label for m in months]
    by_tier = tier_counts(st)
    known = [m for m in months if m.active_at_end is not None]
    first_known = known[0] if known else None
    if first_known is None:
        rates_empty = ("No patron history yet: it starts with the first sync or the first patron who connects. "
                       "Churn and the decline rate then appear from the next month on.")
    else:
        rates_empty = (
            f"No churn or decline rate yet: each is a share of the patrons active at the start of a month, and this "
            f"site's history starts in {first_known.label}. The first rates appear for "
            f"{month_text(add_months(first_known.start, 1))}."
        )
    reasons = [r for r in REASON_ORDER if any(r in lock.denials for lock in figures.locks)]
    return render_template(
        "patronlock/admin/dashboard.html",
        health=health_report(st.app),
        by_tier=charts.bar_chart(by_tier, title="Active patrons by tier", empty="No active patrons stored yet."),
        over_time=charts.line_chart(
            labels,
            [
                charts.Series("Active", [m.active_at_end for m in months], "#15803d"),
                charts.Series("Payment declined", [m.declined_at_end for m in months], "#c2410c"),
            ],
            title="Active and declined patrons at the end of each month",
            empty="No patron history yet: it starts with the first sync or the first patron who connects.",
        ),
        rates=charts.line_chart(
            labels,
            [
                charts.Series("Churn", [m.churn for m in months], "#7e22ce"),
                charts.Series("Decline rate", [m.decline_rate for m in months], "#b45309", dashed=True),
            ],
            title="Churn and decline rate by month",
            unit="%",
            empty=rates_empty,
        ),
        months=months,
        figures=figures,
        reasons=reasons,
        reason_titles=REASON_TITLES,
        descriptions={lock.name: lock.description for lock in st.declarations.locks if lock.name},
        percent=_percent,
        views_since=date_text(figures.views_since, day_first=True) if figures.views_since is not None else None,
        by_tier_rows=by_tier,
        steps=checklist(),
    )


def _download(chunks: Iterator[str], name: str) -> Response:
    """A CSV attachment streamed as it is written (UTF-8 with a byte-order mark, so spreadsheets read accents). The
    chunks need no request context: they are read after the view returned."""

    def body() -> Iterator[str]:
        yield "\ufeff"
        yield from chunks

    response = Response(body(), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["X-Content-Type-Options"] = "nosniff"
    # another site may make the admin's browser ask for it (a GET), but never read or embed it
    response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
    return response


@route("/export/patrons.csv")
def export_patrons() -> ResponseReturnValue:
    """Every stored patron as CSV (admins only, like every settings page; a GET that changes nothing)."""
    st = get_state()
    return _download(patrons_csv(st), f"patrons-{st.store.clock():%Y-%m-%d}.csv")


@route("/export/figures.csv")
def export_figures() -> ResponseReturnValue:
    """The dashboard's monthly figures and figures per lock as CSV."""
    st = get_state()
    now = st.store.clock()
    return _download(figures_csv(insight(st, now)), f"figures-{now:%Y-%m-%d}.csv")
