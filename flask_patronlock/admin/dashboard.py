"""The settings page's front door and the dashboard: patrons by tier, the monthly figures (new, cancelled, declined,
recovered, churn, decline rate) of the last 12 months, what each lock's banner brought, and the CSV downloads.

Every figure is :mod:`flask_patronlock.insight`'s, read from the audit log and the banner views.
"""

from __future__ import annotations

from collections.abc import Iterator

from flask import Response, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from markupsafe import Markup

from ..dates import add_months
from ..health import health_report
from ..i18n import N_, date_text, gettext, month_text, ngettext
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
    return "—" if value is None else charts.percent_text(value)


def _page_text(text: Markup) -> Markup:
    """A translated sentence (``pl_``'s escaped markup) as the text of an element, with its apostrophes and quotes
    as typed: they need no escaping outside an attribute, and the page then reads as it did before it was
    translated (never use it for an attribute's value)."""
    return Markup(str(text).replace("&#39;", "'").replace("&#34;", '"'))


def _setup_left(left: int, total: int) -> str:
    """The dashboard's reminder that setup is not finished: "2 of 5 steps are left"."""
    return ngettext("Setup is not finished: %(num)d of %(total)d steps is left.",
                    "Setup is not finished: %(num)d of %(total)d steps are left.", left, total=total)


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
        rates_empty = " ".join((
            gettext("No patron history yet: it starts with the first sync or the first patron who connects."),
            gettext("Churn and the decline rate then appear from the next month on."),
        ))
    else:
        rates_empty = " ".join((
            gettext("No churn or decline rate yet: each is a share of the patrons active at the start of a month, "
                    "and this site's history starts in %(month)s.", month=first_known.label),
            gettext("The first rates appear for %(month)s.", month=month_text(add_months(first_known.start, 1))),
        ))
    reasons = [r for r in REASON_ORDER if any(r in lock.denials for lock in figures.locks)]
    return render_template(
        "patronlock/admin/dashboard.html",
        health=health_report(st.app),
        by_tier=charts.bar_chart(
            by_tier, title=gettext("Active patrons by tier"), empty=gettext("No active patrons stored yet.")
        ),
        over_time=charts.line_chart(
            labels,
            [
                charts.Series(gettext("Active"), [m.active_at_end for m in months], "#15803d"),
                charts.Series(gettext("Payment declined"), [m.declined_at_end for m in months], "#c2410c"),
            ],
            title=gettext("Active and declined patrons at the end of each month"),
            empty=gettext("No patron history yet: it starts with the first sync or the first patron who connects."),
        ),
        rates=charts.line_chart(
            labels,
            [
                charts.Series(gettext("Churn"), [m.churn for m in months], "#7e22ce"),
                charts.Series(gettext("Decline rate"), [m.decline_rate for m in months], "#b45309", dashed=True),
            ],
            title=gettext("Churn and decline rate by month"),
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
        setup_left=_setup_left,
        page_text=_page_text,
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
