"""The Setup and Sync pages in the site's locale (Flask-Babel): the checklist's steps done and not done, the runs
(complete, held, incomplete) and why, a run's page, and the flashes after Sync now and approving a held run are
German on a German site; no English sentence of the catalogue is left on them; without Flask-Babel they are English
as before. A run's reason is stored in English and said again in the site's language where it is shown."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from babel.messages.pofile import read_po
from flask import Flask
from flask_babel import Babel
from sqlalchemy import select

from flask_patronlock.admin.runwords import reason_text, run_summary
from flask_patronlock.i18n import DOMAIN, TRANSLATIONS
from flask_patronlock.settings import set_policy_settings
from flask_patronlock.sync import RunResult
from tests.helpers.admin import ADMIN_PREFIX, AdminSite, make_admin_site, sync_admin_site

ROOT = Path(__file__).resolve().parents[2]
#: the templates and modules this file checks: their msgids are the English the pages must not show in German.
SOURCES = (
    "flask_patronlock/admin/setup.py",
    "flask_patronlock/admin/syncpages.py",
    "flask_patronlock/admin/runwords.py",
    "flask_patronlock/templates/patronlock/admin/setup.html",
    "flask_patronlock/templates/patronlock/admin/sync.html",
    "flask_patronlock/templates/patronlock/admin/run.html",
    "flask_patronlock/templates/patronlock/admin/steps/sync.html",
    "flask_patronlock/templates/patronlock/admin/steps/webhook.html",
)


@pytest.fixture
def site(make_app: Callable[..., Flask], patreon_sandbox: Any) -> AdminSite:
    return sync_admin_site(make_app, patreon_sandbox)


def text(page: str) -> str:
    """A page's visible text (tags dropped, entities read, white space collapsed)."""
    page = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S)
    page = re.sub(r'<section class="pl-panel pl-health.*?</section>', " ", page, flags=re.S)  # not these pages'
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def english_sentences() -> list[str]:
    """The English of this file's msgids, cut at their placeholders: the pieces long enough to be a phrase."""
    with (TRANSLATIONS / "de" / "LC_MESSAGES" / f"{DOMAIN}.po").open("rb") as f:
        catalogue = read_po(f)
    ours = "".join((ROOT / source).read_text(encoding="utf-8") for source in SOURCES)
    pieces: set[str] = set()
    for message in catalogue:
        if not message.id:
            continue
        for msgid in [message.id] if isinstance(message.id, str) else message.id:
            if " " not in msgid or msgid.split("%(")[0][:20] not in ours.replace("\n", " "):
                continue
            pieces.update(p.strip(" .;:,()") for p in re.split(r"%\(\w+\)\w", msgid))
    return sorted(p for p in pieces if len(p) >= 14 and " " in p)


class Pages:
    """One site, read in English or German (the locale selector's answer) with the same data."""

    def __init__(self, site: AdminSite) -> None:
        self.site = site
        self.locale = "en"
        Babel(site.app, locale_selector=lambda: self.locale)

    def get(self, path: str, locale: str) -> str:
        self.locale = locale
        return text(self.site.get(ADMIN_PREFIX + path).get_data(as_text=True))

    def post(self, path: str, locale: str, data: dict[str, str] | None = None) -> str:
        """POST as a browser does, then the page it leads to (with its flash)."""
        self.locale = locale
        response = self.site.post(ADMIN_PREFIX + path, data)
        assert response.status_code == 302, response.get_data(as_text=True)
        return text(self.site.client("admin").get(response.headers["Location"]).get_data(as_text=True))

    def both(self, path: str) -> tuple[str, str]:
        return self.get(path, "en"), self.get(path, "de")


def assert_german(english: str, german: str) -> None:
    """Each English sentence of the catalogue the English page shows is gone from the German one."""
    shown = [s for s in english_sentences() if s in english]
    assert shown, "the English page shows none of the catalogue's sentences"
    left = [s for s in shown if s in german]
    assert not left, left


def runs(site: AdminSite) -> list[dict[str, Any]]:
    r = site.state.tables.sync_runs
    with site.state.store.engine.connect() as conn:
        return [dict(row) for row in conn.execute(select(r).order_by(r.c.id)).mappings()]


def test_setup_sync_and_run_pages_are_german_on_a_german_site(site: AdminSite, patreon_sandbox: Any) -> None:
    pages = Pages(site)

    # the checklist before any sync: the creator's token from the configuration (done), no tiers, no webhook
    english, german = pages.both("/setup")
    assert "Setup" in english and "steps done." in english and "Creator account connected" in english
    assert "Einrichtung" in german and "Schritten erledigt." in german
    assert "Zugangsdaten der App" in german and "Creator-Konto verbunden" in german and "Kampagne gewählt" in german
    assert "Das Token aus PATRONLOCK_CREATOR_ACCESS_TOKEN wird verwendet." in german
    assert "Die Kampagne ist in der Konfiguration der Website festgelegt; ihre Stufen wurden noch nicht gelesen." in (
        german
    )
    assert "Es ist kein Webhook registriert, und Patreon hat dieser Website noch keine Nachricht geschickt" in german
    assert "Noch kein vollständiger Abgleich: Patrons sind erst bekannt, sobald sie sich verbinden." in german
    assert "erledigt" in german and "offen" in german
    assert "Jetzt abgleichen" in german and "Webhook registrieren" in german
    assert_german(english, german)

    # Sync now: the flash, then a complete run on the Sync page
    started = pages.post("/sync/start", "de")
    assert "Abgleich gestartet: Jedes Mitglied der Kampagne wird gelesen." in started
    assert "Sync started" not in started
    english, german = pages.both("/sync")
    assert "Ein Abgleich liest jedes Mitglied der Kampagne von Patreon" in german and "vollständig" in german
    assert "Läufe" in german and "Ergebnis" in german and "6 von 6" in german
    assert "Hier empfangene Nachrichten von Patreon: noch keine." in german
    assert_german(english, german)

    # the checklist after it: the last complete sync, a day in German words
    english, german = pages.both("/setup")
    assert "The last complete sync read all 6 members on" in english
    last = r"Der letzte vollständige Abgleich hat am \d+\. \w+ \d{4}, \d\d:\d\d UTC alle 6 Mitglieder gelesen"
    assert re.search(last, german), german
    assert_german(english, german)

    # a held run: the Sync page, its reason, and its own page
    with site.app.app_context():
        set_policy_settings({"breaker_min_patrons": 1, "breaker_fraction": 0.1}, by="test")
    for i in range(3):
        patreon_sandbox.delete_member(patreon_sandbox.member(f"p{i}@example.com"))
    pages.post("/sync/start", "de")
    held = runs(site)[-1]
    assert held["status"] == "held"
    english, german = pages.both("/sync")
    assert "Wartet auf deine Freigabe" in german
    assert f"Lauf {held['id']} würde 3 Patrons den Zugang entziehen." in german
    assert f"Lauf {held['id']} prüfen" in german and "wartet auf Freigabe" in german
    assert "3 berechtigte Patrons fehlen in der Liste: Der Lauf würde 3 von 6 berechtigten Patrons etwas wegnehmen" in (
        german
    )
    assert "the run would take something away" in english and "the run would take something away" not in german
    assert_german(english, german)

    english, german = pages.both(f"/sync/runs/{held['id']}")
    assert f"Lauf {held['id']}: zurückgehalten" in german
    summary = (rf"Lauf {held['id']}: vollständig, ZURÜCKGEHALTEN; \d Seiten, 3 Mitglieder von 3; 0 geändert, "
               r"0 entzogen, 3 zurückgehalten; Grund: 3 berechtigte Patrons fehlen in der Liste: Der Lauf")
    assert re.search(summary, german)
    assert "Wartet auf deine Freigabe: 3 Patrons würden den Zugang verlieren oder das, wofür sie zahlen" in german
    assert "Die Sicherung hat diesen Lauf zurückgehalten" in german and "fehlt im Lauf" in german
    assert "Patron 1" in german  # data stays as it is
    assert "Freigeben: ihnen den Zugang entziehen" in german and "Ablehnen: Alle behalten den Zugang" in german
    assert "API-Anfragen" in german and "api requests" in english
    assert_german(english, german)

    # approving it: the flash, the run's page after, and approving twice
    approved = pages.post(f"/sync/runs/{held['id']}/approve", "de")
    assert (f"Lauf {held['id']} freigegeben: 3 zurückgehaltene Änderungen angewendet; Zugang jetzt entzogen für 0 "
            "Patrons. Patrons, die bei Abgleichen fehlen, verlieren den Zugang") in approved
    assert "Approved run" not in approved
    assert f"Lauf {held['id']}: freigegeben" in approved
    again = pages.post(f"/sync/runs/{held['id']}/approve", "de")
    assert f"Lauf {held['id']} ist freigegeben, nicht zurückgehalten: Es gibt nichts zu entscheiden" in again

    # the first, complete run's page
    first = runs(site)[0]
    english, german = pages.both(f"/sync/runs/{first['id']}")
    summary = f"Lauf {first['id']}: vollständig; 3 Seiten, 6 Mitglieder von 6; 6 geändert, 0 entzogen, 0 zurückgehalten"
    assert summary in german
    assert "Gelesene Seiten" in german and "Gesehene Mitglieder" in german and "6 von 6 laut Patreon" in german
    assert_german(english, german)


def test_an_incomplete_run_says_why_in_german(site: AdminSite, patreon_sandbox: Any) -> None:
    pages = Pages(site)
    pages.post("/sync/start", "en")
    patreon_sandbox.add_fault("error", page=2, times=None)
    pages.post("/sync/start", "de")
    last = runs(site)[-1]
    assert last["status"] == "incomplete" and last["reason"].startswith("page 2: ")
    english, german = pages.both(f"/sync/runs/{last['id']}")
    assert "Ein unvollständiger Lauf hat niemandem den Zugang entzogen" in german
    assert "Warum er unvollständig ist: Seite 2: " in german and "Lauf 2: unvollständig" in german
    assert f"Why it is incomplete: {last['reason']}" in english  # the stored English, as it was
    assert_german(english, german)
    english, german = pages.both("/sync")
    assert "unvollständig" in german and "Seite 2: " in german
    assert_german(english, german)


def test_without_flask_babel_the_pages_are_english(site: AdminSite, patreon_sandbox: Any) -> None:
    def page(path: str) -> str:
        return text(site.get(ADMIN_PREFIX + path).get_data(as_text=True))

    setup = page("/setup")
    assert "Using the token set in PATRONLOCK_CREATOR_ACCESS_TOKEN." in setup
    assert "The campaign is set in the site's configuration; its tiers have not been read yet." in setup
    assert "No complete sync yet: patrons are only known as they connect." in setup and "to do" in setup
    response = site.post(ADMIN_PREFIX + "/sync/start")
    started = text(site.client("admin").get(response.headers["Location"]).get_data(as_text=True))
    assert "Sync started: reading every member of the campaign." in started
    [run] = runs(site)
    sync = page("/sync")
    assert "Only a complete sync (every page read, the count matching Patreon's) may take access away" in sync
    assert "6 of 6" in sync and "Messages from Patreon received here: none yet." in sync
    detail = page(f"/sync/runs/{run['id']}")
    assert f"Run {run['id']}: complete" in detail
    assert f"run {run['id']}: complete; 3 page(s), 6 member(s) of 6; 6 changed, 0 revoked, 0 held" in detail
    assert "6 of 6 Patreon reported" in detail and "api requests" in detail
    assert "The last complete sync read all 6 members on" in page("/setup")
    raw = site.get(ADMIN_PREFIX + "/sync").get_data(as_text=True)
    assert "the count matching Patreon's)" in raw  # an apostrophe as the template wrote it


# -- the stored reasons, said again ----------------------------------------------------------------------------------

REASONS = [
    "interrupted: the process running it stopped before it finished",
    "the sync lease was lost: another run took over after PATRONLOCK_SYNC_LEASE_SECONDS without renewal",
    "database connection lost while recording the run's end; the next run marks it interrupted",
    "database connection lost (applying page 3: OperationalError: server closed the connection) after 3 attempt(s)",
    "page 2: 1 member(s) could not be parsed",
    "page(s) 2, 5 came back empty but pointed to a next page",
    "saw 1 member(s) but Patreon reported a total of 1000 (more than 10 apart)",
    "page 2: PatreonServerError: Patreon answered 503",
    "page 4: SchemaDrift: attribute 'patron_status' null ('never pledged') on 2 of 5 member(s) stored as pledging "
    "(first: member 'm1'), a change Patreon never makes",
    "access ended for 1 patron(s) on page 3; tiers emptied for 1,204 patron(s) on pages 1-3, 7; entitled cents fell "
    "to 0 for 2 patron(s) on pages 2, 4; 12 entitled patron(s) missing from the listing: the run would take something "
    "away from 1,219 of 2,000 entitled patron(s), more than the breaker allows (max(5, 10%)); approve or reject it",
    "3 entitled patron(s) missing from the listing: the run would take something away from 3 of 6 entitled "
    "patron(s), more than the breaker allows (max(1, 10%)); approve or reject it",
    "ValueError: something unexpected",
]


@pytest.mark.parametrize("reason", REASONS)
def test_a_reason_reads_as_stored_in_english(reason: str) -> None:
    assert reason_text(reason) == reason


def test_the_run_summary_reads_as_the_cli_s_in_english() -> None:
    for status, complete, reason, total in [
        ("complete", True, None, 6), ("incomplete", False, REASONS[4], None), ("held", True, REASONS[10], 6),
        ("failed", False, REASONS[3], 2),
    ]:
        run = RunResult(run_id=7, status=status, complete=complete, reason=reason, pages=1, members_seen=1,
                        total_reported=total, changed=2, revoked=0, held=3)
        assert run_summary(run) == run.summary()


def test_the_reasons_in_german(make_app: Callable[..., Flask]) -> None:
    site = make_admin_site(make_app)
    Babel(site.app, locale_selector=lambda: "de")
    with site.app.test_request_context():
        german = [reason_text(reason) for reason in REASONS]
        summary = run_summary(RunResult(run_id=7, status="held", complete=True, reason=REASONS[10], pages=1,
                                        members_seen=1, total_reported=None, changed=2, revoked=0, held=3,
                                        started_at=datetime(2026, 12, 7, tzinfo=UTC)))
    assert german[0] == "unterbrochen: Der Prozess, der ihn ausführte, hat vor dem Ende aufgehört"
    assert german[3] == ("Datenbankverbindung verloren (applying page 3: OperationalError: server closed the "
                         "connection) nach 3 Versuchen")
    assert german[4] == "Seite 2: 1 Mitglied konnte nicht gelesen werden"
    assert german[5] == "Seiten 2, 5 kamen leer zurück, verwiesen aber auf eine nächste Seite"
    assert german[6] == "1 Mitglied gesehen, aber Patreon meldete insgesamt 1000 (mehr als 10 Unterschied)"
    assert german[7] == "Seite 2: PatreonServerError: Patreon answered 503"  # the technical detail stays
    assert german[9] == (
        "Zugang endete für 1 Patron auf Seite 3; Stufen geleert für 1.204 Patrons auf Seiten 1-3, 7; berechtigte Cents "
        "fielen auf 0 für 2 Patrons auf Seiten 2, 4; 12 berechtigte Patrons fehlen in der Liste: Der Lauf würde 1.219 "
        "von 2.000 berechtigten Patrons etwas wegnehmen, mehr als die Sicherung erlaubt (max(5, 10%)); gib ihn frei "
        "oder lehne ihn ab"
    )
    assert german[11] == "ValueError: something unexpected"  # a shape the pages do not know: as stored
    assert summary.startswith(
        "Lauf 7: vollständig, ZURÜCKGEHALTEN; 1 Seite, 1 Mitglied von ?; 2 geändert, 0 entzogen, 3 zurückgehalten; "
        "Grund: 3 berechtigte Patrons fehlen in der Liste: Der Lauf würde 3 von 6 berechtigten Patrons"
    )


def test_pl_n_puts_in_variables_besides_num(make_app: Callable[..., Flask]) -> None:
    site = make_admin_site(make_app)
    Babel(site.app, locale_selector=lambda: "de")
    template = '{{ pl_n("Run %(run)s would take access from %(num)d patron.", ' \
               '"Run %(run)s would take access from %(num)d patrons.", n, run="<b>") }}'
    with site.app.test_request_context():
        one = site.app.jinja_env.from_string(template).render(n=1)
        many = site.app.jinja_env.from_string(template).render(n=4)
    assert one == "Lauf &lt;b&gt; würde 1 Patron den Zugang entziehen."
    assert many == "Lauf &lt;b&gt; würde 4 Patrons den Zugang entziehen."
