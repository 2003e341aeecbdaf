"""Insight: a known history (audited transitions and banners shown, on a pinned clock) and every figure it makes,
in :mod:`flask_patronlock.insight`, on the dashboard, in the CSV downloads and in ``flask patronlock insight``."""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from flask_patronlock import locked
from flask_patronlock.admin.charts import Series, line_chart
from flask_patronlock.insight import (
    AuditRow,
    BannerView,
    Pledge,
    audit_rows,
    csv_safe,
    flush_banner_views,
    insight,
    lock_figures,
    monthly_figures,
    pledges_from,
)
from tests.helpers.admin import ADMIN_PREFIX, AdminSite, make_admin_site
from tests.helpers.sites import count_queries


def day(month: int, d: int, year: int = 2026, hour: int = 12) -> datetime:
    return datetime(year, month, d, hour, tzinfo=UTC)


LONG_AGO = datetime(2025, 1, 10, tzinfo=UTC)
NOW = day(1, 20, 2027)


def at(site: AdminSite, when: datetime) -> None:
    site.state.store.clock = lambda: when


def pledge(site: AdminSite, member_id: str, name: str, patreon_user_id: str, tier: str, cents: int, *,
           start: datetime = LONG_AGO, charged: datetime, **fields: Any) -> None:
    site.apply(member_id, full_name=name, user_id=patreon_user_id, entitled_cents=cents,
               entitled_tier_ids=(tier,), pledge_start=start, last_charge_date=charged,
               next_charge_date=charged + timedelta(days=30), observed_at=site.state.store.clock(), **fields)


@pytest.fixture
def site(make_app: Callable[..., Flask]) -> AdminSite:
    """The known history:

    * 5 November 2026: the first sync finds Ada (Gold), Bo (Silver), Cy (Bronze), Di (Silver) and Eve (Bronze), all
      pledging for long: no event, 5 active patrons.
    * 2 December: an anonymous visitor opens the premium post twice and the supporters post once; Bob (signed in, not
      connected) opens the premium post three times and the supporters post once. 3 December: Bob again, premium.
    * 6 December: Bob, connected the day before, pledges Gold: new (within 7 days of both locks' banners).
    * 10 December: Bo's payment is declined. 20 December: Eve cancels.
    * 25 December: Cy (Bronze) opens the premium post: amount too low. 10 January: Cy raises to Gold, 16 days later:
      not credited.
    * 5 January 2027: Bo's payment goes through: recovered.
    * 12 January: Di (Silver) opens the premium post; 14 January Di raises to Gold: an upgrade credited to premium.
    """
    site = make_admin_site(make_app, PATRONLOCK_VIEWER_CACHE_SECONDS=0.0)

    @site.app.get("/premium")
    @locked("premium")
    def premium() -> str:
        return "the premium post"

    @site.app.get("/supporters")
    @locked("supporters")
    def supporters() -> str:
        return "the supporters post"

    site.user("cy", name="Cy")
    site.user("di", name="Di")
    site.link("cy", "pu-cy")
    site.link("di", "pu-di")
    at(site, day(11, 5))
    pledge(site, "m1", "Ada", "pu-ada", "t10", 1000, charged=day(11, 1))
    pledge(site, "m2", "Bo", "pu-bo", "t5", 500, charged=day(11, 1))
    pledge(site, "m3", "Cy", "pu-cy", "t3", 300, charged=day(11, 1))
    pledge(site, "m4", "Di", "pu-di", "t5", 500, charged=day(11, 1))
    pledge(site, "m5", "Eve", "pu-eve", "t3", 300, charged=day(11, 1))

    at(site, day(12, 2))
    assert site.get("/premium", user=None).status_code == 403
    assert site.get("/premium", user=None).status_code == 403
    assert site.get("/supporters", user=None).status_code == 403
    for _ in range(3):
        assert site.get("/premium", user="bob").status_code == 403
    assert site.get("/supporters", user="bob").status_code == 403
    at(site, day(12, 3))
    assert site.get("/premium", user="bob").status_code == 403
    at(site, day(12, 5))
    site.link("bob", "pu-bob")
    at(site, day(12, 6))
    pledge(site, "m6", "Bob", "pu-bob", "t10", 1000, start=day(12, 6), charged=day(12, 6))

    at(site, day(12, 10))
    pledge(site, "m2", "Bo", "pu-bo", "t5", 500, charged=day(12, 10), last_charge_status="Declined")
    at(site, day(12, 20))
    pledge(site, "m5", "Eve", "pu-eve", "t3", 300, charged=day(12, 1), patron_status="former_patron")
    at(site, day(12, 25))
    assert site.get("/premium", user="cy").status_code == 403

    at(site, day(1, 5, 2027))
    pledge(site, "m2", "Bo", "pu-bo", "t5", 500, charged=day(1, 5, 2027))
    at(site, day(1, 10, 2027))
    pledge(site, "m3", "Cy", "pu-cy", "t10", 1000, charged=day(1, 10, 2027))
    at(site, day(1, 12, 2027))
    assert site.get("/premium", user="di").status_code == 403
    at(site, day(1, 14, 2027))
    pledge(site, "m4", "Di", "pu-di", "t10", 1000, charged=day(1, 14, 2027))
    at(site, NOW)
    return site


def test_the_monthly_figures_of_a_known_history(site: AdminSite) -> None:
    months = insight(site.state, NOW).months
    assert len(months) == 12 and months[0].label == "February 2026" and months[-1].label == "January 2027"
    nov, dec, jan = months[-3:]
    assert all(m.active_at_end is None and m.active_at_start is None for m in months[:-3])  # no history: not zero
    assert (nov.active_at_start, nov.active_at_end, nov.declined_at_end) == (None, 5, 0)
    assert (nov.new, nov.cancelled, nov.declined, nov.recovered, nov.churn) == (0, 0, 0, 0, None)
    assert (dec.active_at_start, dec.active_at_end, dec.declined_at_end) == (5, 4, 1)
    assert (dec.new, dec.cancelled, dec.declined, dec.recovered) == (1, 1, 1, 0)
    assert (dec.churn, dec.decline_rate) == (20.0, 20.0)
    assert (jan.active_at_start, jan.active_at_end, jan.declined_at_end) == (4, 5, 0)
    assert (jan.new, jan.cancelled, jan.declined, jan.recovered) == (0, 0, 0, 1)
    assert (jan.churn, jan.decline_rate) == (0.0, 0.0)


def test_the_figures_per_lock_of_a_known_history(site: AdminSite) -> None:
    figures = insight(site.state, NOW)
    assert figures.credit_days == 7
    by_lock = {f.lock: f for f in figures.locks}
    assert [f.lock for f in figures.locks] == ["premium", "supporters"]  # most denied first
    premium, supporters = by_lock["premium"], by_lock["supporters"]
    # one row per viewer, lock, reason and day: the anonymous visitor's two views and Bob's three are one each
    assert premium.denials == {"anonymous": 1, "not_linked": 2, "amount_too_low": 2}
    assert premium.viewers == 4  # the anonymous visitor, Bob, Cy, Di
    assert (premium.pledges, premium.upgrades) == (1, 1)  # Bob's pledge, Di's upgrade (Cy's came 16 days later)
    assert supporters.denials == {"anonymous": 1, "not_linked": 1}
    assert (supporters.viewers, supporters.pledges, supporters.upgrades) == (2, 1, 0)
    table = site.state.tables.banner_views
    with site.state.store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(table)).scalar_one() == 7
        keys = set(conn.execute(select(table.c.viewer)).scalars())
    assert {"u:bob", "u:cy", "u:di"} < keys and not any("127.0.0.1" in k for k in keys)


def test_another_campaigns_members_are_not_counted(site: AdminSite) -> None:
    at(site, day(1, 19, 2027))
    pledge(site, "x1", "Elsewhere", "pu-x1", "t5", 500, start=day(1, 18, 2027), charged=day(1, 18, 2027),
           campaign_id="c2")
    jan = insight(site.state, NOW).months[-1]
    assert (jan.new, jan.active_at_end) == (0, 5)  # the patrons list (campaign c1) has 5 active too


def test_a_longer_credit_window_credits_the_later_upgrade(site: AdminSite) -> None:
    site.app.config["PATRONLOCK_INSIGHT_CREDIT_DAYS"] = 20
    premium = next(f for f in insight(site.state, NOW).locks if f.lock == "premium")
    assert (premium.pledges, premium.upgrades) == (1, 2)


def stored_views(site: AdminSite) -> int:
    table = site.state.tables.banner_views
    with site.state.store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_admins_and_previews_record_nothing(site: AdminSite) -> None:
    flush_banner_views(site.state)
    before = stored_views(site)
    at(site, day(1, 21, 2027))
    assert site.get("/premium", user="admin").status_code == 200  # admins pass every lock: no banner
    assert site.get(ADMIN_PREFIX + "/banners").status_code == 200  # the banner previews are not views
    site.app.config["PATRONLOCK_INSIGHT_RECORD"] = False
    assert site.get("/premium", user=None).status_code == 403  # a new day's denial, but recording is off
    assert flush_banner_views(site.state) == 0 and stored_views(site) == before


def test_a_page_view_queues_and_a_timer_writes(site: AdminSite) -> None:
    flush_banner_views(site.state)
    before = stored_views(site)
    at(site, day(1, 22, 2027))
    site.app.config["PATRONLOCK_INSIGHT_FLUSH_SECONDS"] = 60.0
    with count_queries(site.app) as queries:
        assert site.get("/premium", user=None).status_code == 403
    assert not any("banner_views" in q for q in queries)  # the page view did not write
    assert stored_views(site) == before
    assert flush_banner_views(site.state) == 1 and stored_views(site) == before + 1
    site.app.config["PATRONLOCK_INSIGHT_FLUSH_SECONDS"] = 0.05
    assert site.get("/supporters", user=None).status_code == 403
    deadline = time.monotonic() + 10
    while stored_views(site) == before + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stored_views(site) == before + 2  # written by the timer, no flush asked
    site.app.config["PATRONLOCK_INSIGHT_FLUSH_SECONDS"] = 0
    at(site, day(1, 23, 2027))
    assert site.get("/premium", user=None).status_code == 403
    assert stored_views(site) == before + 3  # at once


def _cells(html: str, attr: str, key: str) -> list[str]:
    row = re.search(rf'<tr {attr}="{re.escape(key)}">(.*?)</tr>', html, flags=re.S)
    assert row is not None, f"no row {attr}={key}"
    cells = re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row.group(1), re.S)
    return [re.sub(r"<[^>]+>", "", c.replace("<br>", " · ")).strip() for c in cells]


def _count(html: str) -> int:
    match = re.search(r"(\d+) patron", html)
    assert match is not None
    return int(match.group(1))


def test_the_dashboard_shows_every_figure_and_agrees_with_the_patrons_list(site: AdminSite) -> None:
    html = site.get(ADMIN_PREFIX + "/dashboard").get_data(as_text=True)
    header = ["Month", "Active at start", "New", "Cancelled", "Payment declined", "Recovered", "Churn",
              "Decline rate", "Active at end", "Declined at end"]
    assert all(f"<th>{h}</th>" in html for h in header)
    assert _cells(html, "data-month", "2026-11") == ["November 2026", "—", "0", "0", "0", "0", "—", "—", "5", "0"]
    assert _cells(html, "data-month", "2026-12") == ["December 2026", "5", "1", "1", "1", "0", "20%", "20%", "4", "1"]
    assert _cells(html, "data-month", "2027-01") == ["January 2027", "4", "0", "0", "0", "1", "0%", "0%", "5", "0"]
    assert _cells(html, "data-month", "2026-10") == ["October 2026", "—", "0", "0", "0", "0", "—", "—", "—", "—"]
    # per lock: the reasons met, in words, then the pledges and upgrades that followed
    assert "<th>Not signed in</th><th>Signed in, Patreon not connected</th><th>Pledge below the lock's tier</th>" \
        in html
    assert _cells(html, "data-lock", "premium") == ["premium · Premium posts", "4", "1", "2", "2", "1", "1"]
    assert _cells(html, "data-lock", "supporters") == ["supporters · Any paid tier", "2", "1", "1", "0", "1", "0"]
    assert "within 7 days" in html
    # this month's "at end" is the patrons list now
    active = _count(site.get(ADMIN_PREFIX + "/patrons?status=active").get_data(as_text=True))
    declined = _count(site.get(ADMIN_PREFIX + "/patrons?status=declined").get_data(as_text=True))
    assert (active, declined) == (5, 0)
    # the charts: whole-number ticks, full month names (two lines: "January" over "2027"), nothing clipped
    ticks = [float(t) for t in re.findall(r'data-tick="([^"]+)"', html)]
    assert ticks and all(t == int(t) for t in ticks)
    assert "<title>January 2027</title>January<tspan" in html and "2027-1<" not in html
    assert "Churn, December 2026: 20%" in html and "Decline rate, December 2026: 20%" in html
    assert html.count('stroke-dasharray="6 4"') == 2  # the decline rate (line and legend): visible on churn's line


def test_the_figures_download(site: AdminSite) -> None:
    response = site.get(ADMIN_PREFIX + "/export/figures.csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == 'attachment; filename="figures-2027-01-20.csv"'
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Cross-Origin-Resource-Policy"] == "same-origin"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    text = response.get_data(as_text=True).lstrip("\ufeff")
    months_part, locks_part = text.split("\r\n\r\n")
    months = list(csv.reader(io.StringIO(months_part)))
    assert months[0][:2] == ["month", "active at start"]
    assert ["2026-12", "5", "4", "1", "1", "1", "1", "0", "20", "20"] in months
    assert ["2027-01", "4", "5", "0", "0", "0", "0", "1", "0", "0"] in months
    locks = list(csv.reader(io.StringIO(locks_part)))
    assert locks[0] == ["lock", "viewers shown a banner", "denials", "denials: amount_too_low", "denials: anonymous",
                        "denials: not_linked", "pledges within 7 days", "upgrades within 7 days"]
    assert locks[1] == ["premium", "4", "5", "2", "1", "2", "1", "1"]


def test_the_patrons_download_is_for_admins_and_safe_in_a_spreadsheet(site: AdminSite) -> None:
    pledge(site, "m9", "=HYPERLINK(\"http://evil.test\",\"x\")", "pu-9", "t5", 500, charged=day(1, 19, 2027),
           email="@evil@example.com")
    assert site.get(ADMIN_PREFIX + "/export/patrons.csv", user="bob").status_code == 403
    assert site.get(ADMIN_PREFIX + "/export/figures.csv", user="bob").status_code == 403
    response = site.get(ADMIN_PREFIX + "/export/patrons.csv")
    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True).lstrip("\ufeff"))))
    assert rows[0][:4] == ["name", "email", "status", "tiers"]
    by_name = {row[0]: row for row in rows[1:]}
    assert len(by_name) == 7
    evil = by_name["'=HYPERLINK(\"http://evil.test\",\"x\")"]
    assert evil[1] == "'@evil@example.com" and evil[2] == "Active" and evil[3] == "Silver"
    assert by_name["Eve"][2] == "Former patron"
    assert by_name["Bob"][3:7] == ["Gold", "$10.00", "$30.00", "2026-12-06"]
    assert by_name["Bob"][10] == "bob"


def test_csv_safe() -> None:
    assert [csv_safe(v) for v in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "plain", None, 5)] == [
        "'=1+1", "'+1", "'-1", "'@SUM(A1)", "'\tx", "plain", "", "5"]


def test_the_cli_prints_the_figures(site: AdminSite) -> None:
    runner = site.app.test_cli_runner()
    result = runner.invoke(args=["patronlock", "insight"])
    assert result.exit_code == 0, result.output
    assert "December 2026" in result.output and "20%" in result.output
    assert ("  premium: 4 visitor(s) shown its banner (the pledge is below the lock's tier: 2, not signed in: 1, "
            "signed in, but Patreon is not connected: 2); 1 pledge(s) and 1 upgrade(s) followed") in result.output
    as_csv = runner.invoke(args=["patronlock", "insight", "--csv"])
    assert as_csv.exit_code == 0 and as_csv.output.startswith("month,active at start")
    patrons = runner.invoke(args=["patronlock", "insight", "--patrons"])
    assert patrons.exit_code == 0 and patrons.output.startswith("name,email,status")
    assert "Eve,,Former patron" in patrons.output


# -- the pure functions, on rows made by hand ----------------------------------------------------------------------


def row(when: datetime, member: str, *events: str, **changes: list[Any]) -> AuditRow:
    return AuditRow(when, "patron_updated", member, tuple(events), changes or None)


def test_raises_and_cuts() -> None:
    rows = [
        row(day(3, 1), "a", "tier_changed", entitled_cents=[500, 1000]),  # raised
        row(day(3, 2), "b", "tier_changed", entitled_cents=[1000, 500]),  # cut
        row(day(3, 3), "c", "tier_changed", entitled_cents=[0, 1000], last_entitled_cents=[500, 1000]),  # zeroed, more
        row(day(3, 4), "d", "tier_changed", entitled_cents=[0, 500]),  # zeroed at the month's start, the same again
        row(day(3, 5), "e", "pledge_started", patron_status=[None, "active_patron"]),
        row(day(3, 6), "f", "tier_changed", entitled_tier_ids=[["t5"], ["t5b"]]),  # another tier, same price
    ]
    assert [(p.member_id, p.upgrade) for p in pledges_from(rows)] == [("a", True), ("c", True), ("e", False)]


def test_credit_needs_the_same_person_within_the_window() -> None:
    views = [
        BannerView(day(3, 1, hour=0), "gold", "not_a_patron", "u:1", day(3, 1), user_id="1"),
        BannerView(day(3, 1, hour=0), "gold", "anonymous", "a:x", day(3, 1)),
        BannerView(day(3, 2, hour=0), "gold", "not_linked", "u:2", day(3, 2), user_id="2"),
    ]
    pledges = [
        Pledge(day(3, 8), "m1", False, user_id="1"),  # 7 days: credited
        Pledge(day(3, 10), "m2", False, patreon_user_id="p2"),  # user 2 connected p2 since: 8 days, not credited
        Pledge(day(2, 28), "m3", False, user_id="1"),  # before the banner: not credited
    ]
    gold = lock_figures(views, pledges, credit_days=7, links={"2": "p2"})[0]
    assert (gold.pledges, gold.viewers, gold.total) == (1, 3, 3)
    gold = lock_figures(views, pledges, credit_days=8, links={"2": "p2"})[0]
    assert gold.pledges == 2


def test_monthly_figures_count_events_in_the_month_learned() -> None:
    rows = [
        AuditRow(day(1, 31, hour=23), "patron_created", "a", (), {"patron_status": [None, "active_patron"]}),
        AuditRow(day(2, 1, hour=0), "patron_updated", "a", ("pledge_cancelled",),
                 {"patron_status": ["active_patron", "former_patron"]}),
    ]
    jan, feb = monthly_figures(rows, day(2, 10), months=2)
    assert (jan.active_at_end, jan.cancelled, feb.active_at_start, feb.cancelled, feb.churn) == (1, 0, 1, 1, 100.0)


def test_whole_number_axes() -> None:
    svg = str(line_chart(["January 2027", "February 2027"], [Series("s", [0.0, 3.3])], title="t"))
    assert re.findall(r'data-tick="([^"]+)"', svg) == ["0", "1", "2", "3", "4"]
    svg = str(line_chart(["a", "b"], [Series("s", [1.0, 12.0])], title="t"))
    assert re.findall(r'data-tick="([^"]+)"', svg) == ["0", "5", "10", "15"]


def test_audit_rows_reads_the_state_changes_in_order(site: AdminSite) -> None:
    rows = list(audit_rows(site.state))
    assert [r.created_at for r in rows] == sorted(r.created_at for r in rows)
    assert sum("pledge_started" in r.events for r in rows) == 1


# -- the dashboard's notices and empty states --------------------------------------------------------------------------


def test_an_empty_dashboard_explains_each_empty_part(make_app: Callable[..., Flask]) -> None:
    site = make_admin_site(make_app)
    html = site.get(ADMIN_PREFIX + "/dashboard").get_data(as_text=True)
    assert "No patron history yet: it starts with the first sync or the first patron who connects." in html
    assert "No visitor has been shown a lock's banner yet." in html
    # patrons first seen this month: counted now, but no month started with them, so no rate yet -- and it says so
    site.apply("m1", full_name="Ada")
    html = site.get(ADMIN_PREFIX + "/dashboard").get_data(as_text=True)
    assert "No month with active patrons yet" not in html
    assert ("No churn or decline rate yet: each is a share of the patrons active at the start of a month, and this "
            "site&#39;s history starts in March 2026. The first rates appear for April 2026.") in html
    assert _cells(html, "data-month", "2026-03")[-2:] == ["1", "0"]


def test_the_setup_notice_names_what_is_left_in_words(make_app: Callable[..., Flask]) -> None:
    site = make_admin_site(make_app)
    html = site.get(ADMIN_PREFIX + "/dashboard").get_data(as_text=True)
    notice = html.split('data-setup-todo="', 1)[1].split("</div>", 1)[0]
    assert "Webhook registered and healthy" not in notice
    assert "No webhook is registered, and Patreon has sent this site no message yet" in notice
    assert "Register the webhook" in notice


def test_messages_from_patreon_count_as_a_working_webhook(make_app: Callable[..., Flask]) -> None:
    site = make_admin_site(make_app)
    table = site.state.tables.webhook_deliveries
    with site.state.store.engine.begin() as conn:
        for n in range(12):
            conn.execute(table.insert().values(dedupe_key=f"k{n}", event="members:update", status="done",
                                               body=b"{}", received_at=day(3, 1 + n)))
    setup = site.get(ADMIN_PREFIX + "/setup").get_data(as_text=True)
    step = setup.split('data-step="webhook"', 1)[1].split("</li>", 1)[0]
    assert "pl-step--done" in setup.split('data-step="webhook"', 1)[0].rsplit("<li", 1)[1]
    assert "No webhook was registered from this site, but Patreon has sent this site 12 messages (the last on 12 " \
        "March)" in step
    sync = site.get(ADMIN_PREFIX + "/sync").get_data(as_text=True)
    assert "No webhook is registered" not in sync and "12 messages" in sync
    assert "Messages from Patreon received here: 12 applied." in sync
    dashboard = site.get(ADMIN_PREFIX + "/dashboard").get_data(as_text=True)
    assert "No webhook" not in dashboard
