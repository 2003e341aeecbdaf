"""The dashboard: counts replayed from the audit log, patrons by tier, and the SVG charts drawn on the server."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from flask import Flask

from flask_patronlock.admin.charts import Series, bar_chart, line_chart
from flask_patronlock.admin.data import tier_counts
from flask_patronlock.insight import audit_rows, monthly_figures
from tests.helpers.admin import ADMIN_PREFIX, AdminSite, make_admin_site


def at(site: AdminSite, when: datetime) -> None:
    site.state.store.clock = lambda: when


@pytest.fixture
def site(make_app: Callable[..., Flask]) -> AdminSite:
    site = make_admin_site(make_app)
    jan, feb, mar = (datetime(2026, m, 10, tzinfo=UTC) for m in (1, 2, 3))
    at(site, jan)
    site.apply("m1", full_name="Ada", observed_at=jan)
    site.apply("m2", full_name="Bo", entitled_cents=500, entitled_tier_ids=("t5",), observed_at=jan)
    site.apply("m0", full_name="Follower", patron_status=None, last_charge_status=None, entitled_cents=0,
               entitled_tier_ids=(), observed_at=jan)
    at(site, feb)
    site.apply("m2", full_name="Bo", entitled_cents=500, entitled_tier_ids=("t5",), patron_status="declined_patron",
               last_charge_status="Declined", observed_at=feb)
    at(site, mar)
    site.apply("m2", full_name="Bo", entitled_cents=500, entitled_tier_ids=("t5",), observed_at=mar)
    site.apply("m3", full_name="Cy", entitled_cents=300, entitled_tier_ids=("t3",), observed_at=mar)
    site.apply("m4", full_name="Di", entitled_cents=700, entitled_tier_ids=(), observed_at=mar)  # amount only
    at(site, datetime(2026, 3, 15, 12, tzinfo=UTC))
    return site


def test_history_is_replayed_from_the_audit_log(site: AdminSite) -> None:
    months = monthly_figures(audit_rows(site.state), datetime(2026, 3, 15, 12, tzinfo=UTC), months=4)
    assert [m.key for m in months] == ["2025-12", "2026-01", "2026-02", "2026-03"]
    assert [m.label for m in months] == ["December 2025", "January 2026", "February 2026", "March 2026"]
    assert [m.active_at_end for m in months] == [None, 2, 1, 4]  # before the first row: no data, not zero
    assert [m.declined_at_end for m in months] == [None, 0, 1, 0]
    assert [m.active_at_start for m in months] == [None, None, 2, 1]
    assert [m.declined for m in months] == [0, 0, 1, 0]
    assert [m.decline_rate for m in months] == [None, None, 50.0, 0.0]


def test_patrons_by_tier(site: AdminSite) -> None:
    assert tier_counts(site.state) == [("Bronze", 1), ("Silver", 1), ("Gold", 1), ("No tier (amount only)", 1)]


def test_the_dashboard_draws_its_charts(site: AdminSite) -> None:
    html = site.get(ADMIN_PREFIX + "/dashboard").get_data(as_text=True)
    assert html.count("<svg") == 3
    assert 'data-chart="bar"' in html and html.count('data-chart="line"') == 2
    assert "Gold: 1" in html and "February 2026 50%" in html
    assert "<script" not in html


def test_an_empty_dashboard_says_so(make_app: Callable[..., Flask]) -> None:
    site = make_admin_site(make_app)
    html = site.get(ADMIN_PREFIX + "/dashboard").get_data(as_text=True)
    assert "No patron history yet" in html and "<svg" in html  # the bar chart lists the tiers at zero


def test_charts_escape_labels_and_skip_gaps() -> None:
    svg = str(bar_chart([("<b>", 3.0), ("ok", 0.0)], title="t & u"))
    assert "&lt;b&gt;" in svg and "<b>" not in svg and "t &amp; u" in svg
    assert str(bar_chart([], title="x", empty="none")) == '<p class="pl-empty" data-chart="bar">none</p>'
    line = str(line_chart(["a", "b", "c", "d"], [Series("s", [1.0, None, 2.0, 3.0])], title="x", unit="%"))
    assert line.count("<polyline") == 1  # a gap splits the line; a lone point is a dot
    assert line.count("<circle") == 3 and "3%" in line
    assert "data-chart" in str(line_chart([], [], title="x"))
