"""The dashboard, the patrons list, a patron's page, the campaign choice, the add-ons, the what-if confirmation and the
403 page in the site's locale (Flask-Babel, German), from flask-patronlock's own catalogue; unchanged English without
Flask-Babel.

Each German page is checked twice: for German sentences a creator reads there, and against its English twin (the
same site and data without Flask-Babel): no sentence of these pages' catalogue entries that the English page shows is
left on the German page.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from babel.messages.extract import extract_from_file
from flask import Flask, render_template
from flask_babel import Babel

from flask_patronlock import locked
from flask_patronlock.admin.charts import percent_text
from flask_patronlock.health import _ago, _webhook_trouble, health_report
from flask_patronlock.i18n import DOMAIN, TRANSLATIONS
from flask_patronlock.i18n import month_text as month_label
from tests.helpers.admin import ADMIN_PREFIX, AdminSite, make_admin_site

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "flask_patronlock"
TEMPLATES = PACKAGE / "templates" / "patronlock" / "admin"

#: the files whose strings these pages show (the layout's and the banners' are tests/admin/test_admin_i18n.py's).
SOURCES = (
    *(TEMPLATES / f"{name}.html" for name in ("dashboard", "patrons", "patron", "_health", "forbidden", "campaign",
                                               "addons", "confirm")),
    *(PACKAGE / path for path in ("admin/dashboard.py", "admin/patrons.py", "admin/addons.py", "admin/charts.py",
                                  "admin/data.py", "health.py", "insight.py")),
)
KEYWORDS = {"gettext": None, "ngettext": (1, 2), "lazy_gettext": None, "N_": None, "pl_": None, "pl_n": (1, 2)}
PLACEHOLDER = re.compile(r"%\(\w+\)[sd]")
#: what these pages show from other parts of the package (the setup checklist's steps, the explainer's trace of how
#: a decision was made): translated with them, not compared here.
OTHERS = r'<ul>(?:(?!</ul>).)*</ul>(?=\s*</div>\s*<section class="pl-panel pl-health)|<ol class="pl-steps">.*?</ol>'


def day(month: int, d: int, year: int = 2026) -> datetime:
    return datetime(year, month, d, 12, tzinfo=UTC)


NOW = day(1, 20, 2027)


def _fragments() -> list[str]:
    """The English sentences (and the parts of a sentence between its placeholders) of these pages' catalogue
    entries that German writes differently: long enough that finding one on a page means it was left English."""
    from babel.messages.pofile import read_po

    with (TRANSLATIONS / "de" / "LC_MESSAGES" / f"{DOMAIN}.po").open("rb") as f:
        german = {m.id if isinstance(m.id, str) else m.id[0]: m for m in read_po(f) if m.id}
    found: set[str] = set()
    for path in SOURCES:
        method = "jinja2" if path.suffix == ".html" else "python"
        for _line, message, _comments, _context in extract_from_file(method, str(path), keywords=KEYWORDS):
            forms = (message,) if isinstance(message, str) else tuple(m for m in message if m)
            entry = german[forms[0]]
            translated = entry.string if isinstance(entry.string, tuple) else (entry.string,)
            for form in forms:
                if form in translated:
                    continue  # the same words in German ("Details", "Status")
                found.update(part.strip(" .,:;") for part in PLACEHOLDER.split(form))
    return sorted(part for part in found if len(part) >= 12 and " " in part)


FRAGMENTS = _fragments()


def text(response: Any) -> str:
    """What a reader sees: the page without its tags, entities read, whitespace collapsed."""
    body = response if isinstance(response, str) else response.get_data(as_text=True)
    body = re.sub(r"<script.*?</script>|<style.*?</style>", " ", body, flags=re.S)
    body = re.sub(OTHERS, " ", body, flags=re.S)
    body = re.sub(r"</?(?:a|strong|code|span|em|b|i)\b[^>]*>", "", body)  # inline: part of the sentence
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


def assert_no_english_left(english: str, german: str, *, at_least: int) -> None:
    """Every catalogue sentence the English page shows is gone from the German one (and the English page showed
    ``at_least`` of them, so the check is not empty)."""
    shown = [part for part in FRAGMENTS if part in english]
    assert len(shown) >= at_least, shown
    left = [part for part in shown if part in german]
    assert not left


def at(site: AdminSite, when: datetime) -> None:
    site.state.store.clock = lambda: when


@contextmanager
def without_babel(site: AdminSite) -> Iterator[None]:
    """Requests of the block see an app that never initialised Flask-Babel (what flask-patronlock checks)."""
    babel = site.app.extensions.pop("babel")
    try:
        yield
    finally:
        site.app.extensions["babel"] = babel


def german_site(make_app: Callable[..., Flask], **config: Any) -> AdminSite:
    """:func:`make_admin_site` with Flask-Babel initialised, German for every request."""
    site = make_admin_site(make_app, **config)
    Babel(site.app, locale_selector=lambda: "de")
    return site


def both(site: AdminSite, path: str, user: str | None = "admin", *, data: dict[str, Any] | None = None,
         **kwargs: Any) -> tuple[str, str]:
    """The page's text in English (no Flask-Babel), then in German; a POST when ``data`` is given."""
    pages = []
    for german in (False, True):
        language: AbstractContextManager[None] = nullcontext() if german else without_babel(site)
        with language:
            if data is None:
                response = site.get(ADMIN_PREFIX + path, user, **kwargs)
            else:
                response = site.post(ADMIN_PREFIX + path, data, user, **kwargs)
        pages.append(response)
    english, german_page = pages
    assert english.status_code == german_page.status_code
    return text(english), text(german_page)


def build(make_app: Callable[..., Flask]) -> AdminSite:
    """Patrons since November with a payment declined in December, a cancellation, banner views of the premium lock
    and an upgrade that followed them; Flask-Babel initialised (German)."""
    site = german_site(make_app, PATRONLOCK_VIEWER_CACHE_SECONDS=0.0, PATRONLOCK_INSIGHT_FLUSH_SECONDS=0.0)

    @site.app.get("/premium")
    @locked("premium")
    def premium() -> str:
        return "the premium post"

    site.user("cy", name="Cy")
    site.link("cy", "pu-cy")
    at(site, day(11, 5))
    for member, name, tier, cents in (("m1", "Ada", "t10", 1000), ("m2", "Bo", "t5", 500), ("m3", "Cy", "t3", 300),
                                      ("m4", "Di", "t5", 500), ("m5", "Eve", "t3", 300)):
        site.apply(member, full_name=name, email=f"{name.lower()}@example.com", user_id=f"pu-{name.lower()}",
                   entitled_cents=cents, entitled_tier_ids=(tier,), observed_at=day(11, 5))
    at(site, day(12, 2))
    assert site.get("/premium", user=None).status_code == 403
    assert site.get("/premium", user="cy").status_code == 403  # Bronze: below Gold
    at(site, day(12, 4))
    site.apply("m3", full_name="Cy", email="cy@example.com", user_id="pu-cy", entitled_cents=1000,
               entitled_tier_ids=("t10",), observed_at=day(12, 4))  # an upgrade that followed the banner
    at(site, day(12, 10))
    site.apply("m2", full_name="Bo", email="bo@example.com", user_id="pu-bo", entitled_cents=500,
               entitled_tier_ids=("t5",), last_charge_status="Declined", observed_at=day(12, 10))
    at(site, day(12, 20))
    site.apply("m5", full_name="Eve", email="eve@example.com", user_id="pu-eve", entitled_cents=300,
               entitled_tier_ids=("t3",), patron_status="former_patron", observed_at=day(12, 20))
    at(site, NOW)
    return site


@pytest.fixture
def site(make_app: Callable[..., Flask]) -> AdminSite:
    return build(make_app)


def test_the_dashboard_is_german(site: AdminSite) -> None:
    english, german = both(site, "/dashboard")
    assert "Setup is not finished:" in english and "At the end of each month (this month: now)" in english
    assert "Die Einrichtung ist nicht abgeschlossen:" in german and "Zur Einrichtung" in german
    assert "Aktive Patrons nach Stufe" in german and "Monat für Monat" in german
    assert "Abwanderung: im Monat gekündigte Unterstützungen je 100 Patrons" in german
    assert "Dezember 2026" in german and "December 2026" not in german  # the months, in the table and the charts
    assert "Aktiv zu Beginn" in german and "Ablehnungsquote" in german
    assert "Was das Banner jeder Sperre gebracht hat" in german and "Besucher, die ihr Banner sahen" in german
    assert "Jeder Besucher zählt einmal am Tag je Sperre und Grund." in german
    assert "innerhalb von 7 Tagen davor gesehen hat" in german
    assert "Patrons herunterladen (CSV)" in german
    # the health panel: its heading, its verdict and each check's sentence
    assert "Zustand" in german and "Der letzte Abgleich konnte" not in german
    assert "Patreons Antworten sehen aus wie erwartet." in german
    assert "Kein Abgleich wartet auf deine Entscheidung." in german
    assert_no_english_left(english, german, at_least=20)


def test_an_empty_dashboard_is_german(make_app: Callable[..., Flask]) -> None:
    site = german_site(make_app)
    english, german = both(site, "/dashboard")
    assert "No visitor has been shown a lock's banner yet." in english
    assert "Noch keinem Besucher wurde das Banner einer Sperre gezeigt." in german
    assert "Noch kein Patron-Verlauf: Er beginnt mit dem ersten Abgleich" in german
    assert "innerhalb von 7 Tagen folgten." in german
    assert "Noch kein Abgleich hat alle Patrons von Patreon gelesen" in german
    assert_no_english_left(english, german, at_least=8)
    site.apply("m1", full_name="Ada")
    english, german = both(site, "/dashboard")
    assert "Noch keine Abwanderung oder Ablehnungsquote" in german
    assert "beginnt im März 2026. Die ersten Quoten erscheinen für April 2026." in german
    assert_no_english_left(english, german, at_least=8)


def test_the_patrons_list_is_german(site: AdminSite) -> None:
    english, german = both(site, "/patrons")
    assert "5 patrons." in english and "5 Patrons." in german
    assert "Name oder E-Mail" in german and "Jeder Status" in german and "Jede Stufe" in german
    assert "Hier verbunden" in german and "Letzte Änderung" in german
    assert "Nie unterstützt (Follower, kostenlose Mitglieder)" in german  # the status filter's options
    assert_no_english_left(english, german, at_least=5)

    english, german = both(site, "/patrons?q=Bo")
    assert "1 patron matches." in english and "1 Patron passt." in german
    english, german = both(site, "/patrons?q=nobody")
    assert "No patron matches." in english and "Kein Patron passt." in german
    assert_no_english_left(english, german, at_least=1)


def test_a_patrons_page_is_german(site: AdminSite) -> None:
    # Cy: connected here, upgraded to Gold; the explainer answers for the premium lock
    english, german = both(site, "/patrons/m3?lock=premium")
    assert "Connected to Cy (user cy) on this site." in english
    assert "Auf dieser Website mit Cy (Nutzer cy) verbunden." in german
    assert "Zugang jetzt:" in german and "Diesen Patron jetzt abgleichen" in german
    assert "Was Patreon gemeldet hat" in german and "Bezahlt am" in german
    assert "Ja:" in german and "Wie das entschieden wurde" in german
    assert "Keine Freizugänge: Dieser Patron hat den Zugang, den seine Unterstützung gibt." in german
    assert "Verlauf" in german and "Felder geändert" in german
    assert_no_english_left(english, german, at_least=8)

    # Bo: not connected here, payment declined
    english, german = both(site, "/patrons/m2?lock=premium")
    assert "Not connected to an account on this site." in english
    assert "Mit keinem Konto auf dieser Website verbunden." in german
    assert "Nein: Dieses Patreon-Konto ist mit keinem Konto hier verbunden" in german
    assert "Nach dem Verbinden: nein:" in german and "Abgelehnt am" in german
    assert_no_english_left(english, german, at_least=6)


def test_the_what_if_confirmation_is_german(site: AdminSite) -> None:
    form = {"enabled": "y", "tiers": ["t5"], "min_amount": "", "lifetime_amount": "", "patron_since_before": "",
            "drip_months": "", "combine": "all"}  # Gold or higher -> Silver or higher: Di gains it
    english, german = both(site, "/locks/premium", data=form)
    assert "1 patron would gain access, no patron would lose it." in english
    assert "from the 5 patrons stored for your campaign" in english
    assert "1 Patron würde Zugang erhalten, kein Patron würde ihn verlieren." in german
    assert "Berechnet aus den 5 Patrons, die für deine Kampagne gespeichert sind" in german
    assert "Wen das betrifft" in german and "Zeigen, wer" in german and "Würden Zugang erhalten" in german
    assert "Abbrechen: nichts ändern" in german
    assert_no_english_left(english, german, at_least=4)

    off = dict(form, enabled="", tiers=["t10"])  # switched off: open to everyone
    english, german = both(site, "/locks/premium", data=off)
    assert "This opens it to everyone." in english and "3 patrons would gain access, no patron" in english
    assert "3 Patrons würden Zugang erhalten, kein Patron würde ihn verlieren." in german
    assert "Damit ist sie für alle offen." in german
    assert "sieht dann, was diese Sperre schützt." in german
    assert_no_english_left(english, german, at_least=3)


def test_the_add_ons_page_and_its_message_are_german(site: AdminSite) -> None:
    from flask_patronlock.addons import Addon

    class Echo(Addon):
        name = "echo"
        version = "1.0"
        description = "Hears every patron change"

        def init_app(self, app: Flask, hooks: Any) -> None:
            pass

    site.state.extension.register_addon(Echo(), app=site.app)
    english, german = both(site, "/addons/echo", data={"enabled": "0"}, follow_redirects=True)
    assert "Add-on 'echo' is off. Every page follows within a few seconds." in english
    assert "Die Erweiterung 'echo' ist aus. Jede Seite übernimmt das innerhalb weniger Sekunden." in german
    assert "Erweiterungen sind zusätzliche Funktionen" in german and "Von Nutzer admin am" in german
    assert "ausgeschaltet." in german and "Was sie tut" in german
    assert "Hears every patron change" in german  # the add-on's own description is its author's words
    assert_no_english_left(english, german, at_least=4)


def test_the_campaign_choice_is_german(site: AdminSite) -> None:
    campaigns = [SimpleNamespace(id="c1", creation_name="", vanity="", patron_count=1),
                 SimpleNamespace(id="c2", creation_name="Kopi's Studio", vanity="kopi", patron_count=12)]
    pages = []
    for german in (False, True):
        language: AbstractContextManager[None] = nullcontext() if german else without_babel(site)
        with language, site.app.test_request_context(ADMIN_PREFIX + "/setup/campaign"):
            pages.append(text(render_template("patronlock/admin/campaign.html", campaigns=campaigns, current=None)))
            pages.append(text(render_template("patronlock/admin/campaign.html", campaigns=[], current=None)))
    english, english_none, german, german_none = pages
    assert "Untitled campaign 1 1 patron" in english and "Kopi's Studio 12 patrons" in english
    assert "Kampagne ohne Titel 1 1 Patron" in german and "Kopi's Studio 12 Patrons" in german
    assert "Patrons der Kampagne, die du auswählst, schalten die Inhalte dieser Website frei." in german
    assert "Diese Kampagne verwenden" in german and "Abbrechen" in german
    assert "Das verbundene Patreon-Konto hat keine Kampagne." in german_none
    assert "Zurück zur Einrichtung" in german_none
    assert_no_english_left(english, german, at_least=3)
    assert_no_english_left(english_none, german_none, at_least=2)


def test_the_403_pages_are_german(make_app: Callable[..., Flask]) -> None:
    site = german_site(make_app)
    english, german = both(site, "/dashboard", "bob")
    assert "Die Patron-Einstellungen sind für die Admins der Website" in german
    assert "Du bist angemeldet, aber dein Konto ist kein Admin dieser Website." in german
    assert_no_english_left(english, german, at_least=2)


def test_the_403_page_without_an_admin_callback_is_german(make_app: Callable[..., Flask]) -> None:
    site = german_site(make_app, admin_loader=False)
    english, german = both(site, "/dashboard")
    assert "Registriere eine Admin-Funktion neben deinem Objekt PatronLock und starte die App neu:" in german
    assert "Admins kommen außerdem durch jede Sperre der Website." in german
    assert_no_english_left(english, german, at_least=3)


def test_health_sentences_and_numbers_are_german(site: AdminSite) -> None:
    with site.app.test_request_context("/"):
        assert _ago(timedelta(hours=3)) == "vor 3 Stunden" and _ago(timedelta(days=1)) == "vor 1 Tag"
        assert _webhook_trouble(True, True, 3).startswith("Patreon hat den Webhook nach 3 fehlgeschlagenen "
                                                          "Zustellungen in Folge pausiert")
        assert month_label(day(3, 1)) == "März 2026" and percent_text(12.5) == "12,5\xa0%"
        report = health_report(site.app)
        assert "Patreons Antworten sehen aus wie erwartet." in [c.message for c in report.checks]
    with without_babel(site), site.app.test_request_context("/"):
        assert _ago(timedelta(hours=3)) == "3 hours ago" and _ago(timedelta(seconds=5)) == "just now"
        assert _webhook_trouble(False, False, 0) == ("Patreon no longer lists the webhook registered here, so changes "
                                                     "on Patreon reach this site only with the next sync.")
        assert month_label(day(3, 1)) == "March 2026" and percent_text(12.5) == "12.5%"


def test_without_flask_babel_the_pages_are_english(make_app: Callable[..., Flask]) -> None:
    site = make_admin_site(make_app)
    site.apply("m1", full_name="Ada")
    site.apply("m2", full_name="Bo", last_charge_status="Declined")
    dashboard = site.get(ADMIN_PREFIX + "/dashboard").get_data(as_text=True)
    assert '<html lang="en">' in dashboard
    assert "<h2>What each lock's banner brought</h2>" in dashboard  # as typed: no entity for the apostrophe
    assert "Churn: pledges cancelled during the month per 100 patrons active at its start." in dashboard
    assert "March 2026" in dashboard and "Patreon's answers look as expected." in html.unescape(dashboard)
    patron = text(site.get(ADMIN_PREFIX + "/patrons/m2?lock=premium"))
    assert "No: this Patreon account is not connected to an account here, so its owner sees the \"connect your " \
        "Patreon account\" banner. Once connected:" in patron
    assert "Entitled $10.00 a month" in patron and "Last charge Declined on" in patron
    patrons = text(site.get(ADMIN_PREFIX + "/patrons"))
    assert "2 patrons. Name E-mail Status Tier Connected here Last change" in patrons




def test_a_bar_charts_description_is_markup_not_text() -> None:
    from flask_patronlock.admin.charts import bar_chart

    svg = str(bar_chart([("Gold <b>", 2.0)], title="t"))
    assert "<desc>Gold &lt;b&gt;: 2</desc>" in svg and "&lt;desc&gt;" not in svg
