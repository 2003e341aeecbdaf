"""The locks, lock, policies and comps pages in the site's locale (Flask-Babel), from flask-patronlock's own
catalogue: their words, form labels and choices, validation messages, flashes and the what-if sentences. Each page is
read in English and in German on the same site: every English sentence the catalogue translates is on the English
page and gone from the German one. Without Flask-Babel the pages read as the English ones."""

from __future__ import annotations

import re
from collections.abc import Callable
from html import unescape
from typing import Any

import pytest
from flask import Flask
from flask_babel import Babel

from flask_patronlock.comps import grant_comp
from flask_patronlock.state import get_state
from tests.helpers.admin import ADMIN_PREFIX, AdminSite, make_admin_site
from tests.helpers.constants import NOW

LOCKS = ADMIN_PREFIX + "/locks"
LOCK = LOCKS + "/premium"
POLICIES = ADMIN_PREFIX + "/policies"
COMPS = ADMIN_PREFIX + "/comps"


class Locale:
    """The site's locale for the next request (the test's Flask-Babel locale selector)."""

    def __init__(self) -> None:
        self.value = "en"

    def __call__(self) -> str:
        return self.value


def populate(site: AdminSite) -> None:
    """Patrons of every tier (Gold, Silver, Bronze) and a comp, as a creator's site has them."""
    site.apply("m-gia", full_name="Gia", entitled_cents=1000, entitled_tier_ids=("t10",))
    site.apply("m-sil", full_name="Sil", entitled_cents=500, entitled_tier_ids=("t5",))
    site.apply("m-bea", full_name="Bea", entitled_cents=300, entitled_tier_ids=("t3",), email="bea@example.com")
    with site.app.app_context():
        grant_comp(get_state(), member_id="m-bea", lock="premium", note="press copy", by="admin", source="admin",
                   expires_at=NOW.replace(year=NOW.year + 1))


@pytest.fixture
def site(make_app: Callable[..., Flask]) -> tuple[AdminSite, Locale]:
    site = make_admin_site(make_app)
    populate(site)
    locale = Locale()
    Babel(site.app, locale_selector=locale)
    return site, locale


def text(response: Any) -> str:
    """The page's visible text: tags dropped (inline ones without a space), entities decoded, white space folded."""
    html = response.get_data(as_text=True)
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    html = re.sub(r"</?(code|strong|em|a)\b[^>]*>", "", html)  # inline markup inside a sentence
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def both(site: tuple[AdminSite, Locale], method: str, path: str, data: dict[str, Any] | None = None,
         **kwargs: Any) -> tuple[str, str]:
    """The visible text of the same request in English, then in German."""
    admin, locale = site
    pages = []
    for value in ("en", "de"):
        locale.value = value
        response = admin.get(path, **kwargs) if method == "get" else admin.post(path, dict(data or {}), **kwargs)
        pages.append(text(response))
    locale.value = "en"
    return pages[0], pages[1]


def translated(english: str, german: str, sentences: list[str], expected: list[str]) -> None:
    """Each English sentence is on the English page and not on the German one; each German one is there."""
    for sentence in sentences:
        assert sentence in english, sentence
        assert sentence not in german, sentence
    for sentence in expected:
        assert sentence in german, sentence


def policy_form(**changes: Any) -> dict[str, Any]:
    data = {"declined": "grace", "declined_grace_days": "3", "cancelled": "at_once", "first_charge":
            "after_first_charge", "count_free_trials": "y", "missing_runs": "3", "missing_hours": "",
            "breaker_min_patrons": "10", "breaker_percent": "5"}
    data.update(changes)
    return data


def rule_form(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"enabled": "y", "tiers": ["t10"], "tier_match": "or_higher", "min_amount": "",
                            "lifetime_amount": "", "patron_since_before": "", "drip_months": "", "combine": "all"}
    data.update(changes)
    return data


def test_the_locks_page_is_german(site: tuple[AdminSite, Locale]) -> None:
    english, german = both(site, "get", LOCKS)
    translated(english, german, [
        "Each lock guards some of the site's content. Change who may pass it here; every page follows the change "
        "within a few seconds.",
        "Who may see it",
        "made in code",
        "Make a lock",
        "A lock is a named rule, like “Early access” for Silver patrons and up.",
        "What creators and patrons read, e.g. Early access.",
        "Name patrons read",
        "Short name (optional)",
        "Make the lock",
        "The whole site and parts of it",
        "Where two addresses match, the longer one decides.",
        "Sign-in pages, the Patreon connection pages and these settings are never locked.",
        "(now: the app's configuration)",
        "Site-wide lock",
        "None: the whole site is open",
        "Address starts with",
        "Save the site and address locks",
    ], [
        "Jede Sperre schützt einen Teil der Inhalte der Website. Ändere hier, wer durchkommt; jede Seite übernimmt "
        "die Änderung innerhalb weniger Sekunden.",
        "Wer es sehen darf",
        "im Code angelegt",
        "Eine Sperre erstellen",
        "Name, den Patrons lesen",
        "Kurzname (optional)",
        "Sperre erstellen",
        "Die ganze Website und Teile davon",
        "Sperre die ganze Website oder jede Seite unter einer Adresse: /members sperrt /members und jede Adresse "
        "darunter, etwa /members/news, aber nicht /membership. Passen zwei Adressen, entscheidet die längere.",
        "Anmeldeseiten, die Seiten zur Patreon-Verbindung und diese Einstellungen werden nie gesperrt.",
        "(jetzt: die Konfiguration der App)",
        "Sperre für die ganze Website",
        "Keine: Die ganze Website ist offen",
        "Website- und Adresssperren speichern",
    ])


def test_a_lock_page_its_preview_and_its_what_if_are_german(site: tuple[AdminSite, Locale]) -> None:
    english, german = both(site, "get", LOCK + "?as=t10&months=3")
    translated(english, german, [
        "Lock “premium”",
        "← All locks",
        "Its rule can be changed here; its name and description come from the site's code, and it can't be deleted "
        "here.",
        "This is the default rule from the site's code.",
        "On (off: everyone may see what this lock guards)",
        "Which patrons of these tiers",
        "A ticked tier, or any tier that costs at least as much",
        "Silver (5.00 a month) Gold (10.00 a month)",  # the tiers to tick
        "…or at least this much a month",
        "Everything the patron has given you in total. Empty: no minimum.",
        "The content opens for each patron after this many months of pledging.",
        "Combine the conditions",
        "All conditions must hold",
        "Early access: open to everyone on",
        "Save the lock",
        "Preview as a patron",
        "See this lock as",
        "a visitor who is not signed in",
        "a patron of Gold",
        "A Gold patron ($10.00 a month) for 3 months",
        "sees the content",
    ], [
        "Sperre „premium“",
        "← Alle Sperren",
        "Das ist die Standardregel aus dem Code der Website.",
        "An (aus: Alle dürfen sehen, was diese Sperre schützt)",
        "Welche Patrons dieser Stufen",
        "Silver (5,00 $ im Monat) Gold (10,00 $ im Monat)",  # tier names are the creator's
        "…oder mindestens so viel im Monat",
        "Die Bedingungen verknüpfen",
        "Alle Bedingungen müssen erfüllt sein",
        "Früher Zugang: für alle offen ab",
        "Sperre speichern",
        "Vorschau als Patron",
        "einen Patron mit Gold",
        "Ein Patron mit Gold (10,00 $ im Monat) seit 3 Monaten",
        "sieht den Inhalt",
    ])

    # the what-if step before the rule is saved: Gold or higher -> Silver or higher lets Sil in
    english, german = both(site, "post", LOCK, rule_form(tiers=["t5"]))
    translated(english, german, [
        "Before you save “premium”",
        "1 patron would gain access, no patron would lose it.",
        "Save the change",
        "Change it again",
    ], [
        "Bevor du „premium“ speicherst",
        "1 Patron würde Zugang erhalten, kein Patron würde ihn verlieren.",
        "Änderung speichern",
        "Noch einmal ändern",
    ])
    english, german = both(site, "post", LOCKS + "/supporters", rule_form())  # $1 -> Gold: Sil and Bea lose it
    translated(english, german, ["No patron would gain access, 2 patrons would lose it."],
               ["Kein Patron würde Zugang erhalten, 2 Patrons würden ihn verlieren."])


def test_a_lock_made_here_and_a_bad_rule_are_german(site: tuple[AdminSite, Locale]) -> None:
    admin, locale = site
    locale.value = "de"
    made = admin.post(LOCKS, {"title": "VIP", "name": "vip"}, follow_redirects=True)
    assert "Die Sperre „VIP“ ist erstellt. Vorerst kommt jeder Patron durch: Wähle unten, wer sie sehen darf." in \
        text(made)  # the flash after saving
    english, german = both(site, "get", LOCKS + "/vip")
    translated(english, german, [
        "made here",
        "Name and description",
        "Renaming changes only what people read: the short name vip stays, so nothing that uses the lock breaks.",
        "Save the name and description",
        "Delete this lock",
        "No content of the site uses this lock.",
        "Templates or code that name vip would stay locked to everyone but admins after it is deleted.",
        "Delete the lock “VIP”",
    ], [
        "hier erstellt am",
        "Name und Beschreibung",
        "Umbenennen ändert nur, was Menschen lesen: Der Kurzname vip bleibt",
        "Diese Sperre löschen",
        "Kein Inhalt der Website verwendet diese Sperre.",
        "Vorlagen oder Code, die vip nennen, blieben nach dem Löschen für alle außer Administratoren gesperrt.",
        "Die Sperre „VIP“ löschen",
    ])
    english, german = both(site, "post", LOCKS, {"title": "", "name": "Not OK!"})
    translated(english, german, [
        "The short name may hold only lower-case letters, digits and single hyphens, such as early-access (not "
        "“Not OK!”).",
    ], [
        "Der Kurzname darf nur Kleinbuchstaben, Ziffern und einzelne Bindestriche enthalten, etwa early-access "
        "(nicht „Not OK!“).",
    ])
    english, german = both(site, "post", LOCK, rule_form(min_amount="lots"))
    translated(english, german, ["'lots' is not an amount: write it like 5 or 5.00"],
               ["'lots' ist kein Betrag: Schreib ihn wie 5 oder 5,00"])
    english, german = both(site, "post", LOCKS + "/routing", {
        "site_lock": "", "paths-0-prefix": "/members?page=2", "paths-0-lock": "premium",
        "paths-1-prefix": "", "paths-1-lock": "",
    })
    translated(english, german,
               ["Write the path only, without the part from ? on: a URL lock never reads the query."],
               ["Schreib nur den Pfad, ohne den Teil ab ?: Eine URL-Sperre liest die Abfrage nie."])


def test_the_policies_page_its_errors_and_its_flash_are_german(site: tuple[AdminSite, Locale]) -> None:
    english, german = both(site, "get", POLICIES)
    translated(english, german, [
        "Access policies",
        "How a patron's standing on Patreon turns into access here.",
        "Declined payments",
        "When a payment is declined",
        "Lock patron content at once",
        "Keep access for a grace period",
        "Patreon retries a declined payment for a while before it ends the membership.",
        "Grace period (days)",
        "Cancelled pledges",
        "Keep access until the end of the period they paid for",
        "Unlock at once (generous)",
        "Free trials unlock their tier",
        "Patrons missing from a sync",
        "A patron missing from this many complete syncs in a row loses access",
        "Safety switch",
        "…and more than this percentage of all patrons",
        "Both must be exceeded, e.g. more than 25 patrons and more than 10%.",
        "Save the policies",
    ], [
        "Zugangsregeln",
        "Wie aus dem Status eines Patrons auf Patreon hier Zugang wird.",
        "Abgelehnte Zahlungen",
        "Wenn eine Zahlung abgelehnt wird",
        "Inhalte für Patrons sofort sperren",
        "Zugang für eine Schonfrist behalten",
        "Schonfrist (Tage)",
        "Sofort freischalten (großzügig)",
        "Sicherheitsschalter",
        "Beides muss überschritten sein, z. B. mehr als 25 Patrons und mehr als 10 %.",
        "Regeln speichern",
    ])
    english, german = both(site, "post", POLICIES, policy_form(breaker_percent="lots"))
    translated(english, german, ["Write a percentage, like 10"], ["Schreib einen Prozentsatz, etwa 10"])
    english, german = both(site, "post", POLICIES, policy_form(breaker_percent="0"))
    translated(english, german, ["The percentage must be above 0 and at most 100."],
               ["Der Prozentsatz muss über 0 und höchstens 100 sein."])
    english, german = both(site, "post", POLICIES, policy_form(declined_grace_days="99999"))
    assert "Number must be between 0 and 3650" in english and "Number must be" not in german  # wtforms' catalogue

    english, german = both(site, "post", POLICIES, policy_form(declined="restrict"))  # the what-if step first
    translated(english, german, [
        "Before you save the access policies",
        "You are changing how a patron's standing on Patreon turns into access here.",
    ], ["Bevor du die Zugangsregeln speicherst", "Du änderst, wie aus dem Status eines Patrons auf Patreon hier"])
    admin, locale = site
    locale.value = "de"
    saved = admin.post(POLICIES, policy_form(confirm="1"), follow_redirects=True)
    assert "Die Zugangsregeln sind gespeichert. Jede Seite übernimmt sie innerhalb weniger Sekunden." in text(saved)
    assert "Saved the access policies" not in text(saved)


def test_the_comps_page_its_errors_and_its_flash_are_german(site: tuple[AdminSite, Locale]) -> None:
    english, german = both(site, "get", COMPS)
    translated(english, german, [
        "Give someone access by hand: a friend, a press copy, a goodwill month after a refund.",
        "Every page follows a change within a few seconds.",
        "What it opens",
        "Revoke",
        "Grant a comp",
        "Who is it for?",
        "A Patreon member",
        "An account on this site",
        "Patreon member: their e-mail address or member id",
        "For someone with an account here but no pledge (a friend, the press).",
        "Choose a lock or a tier",
        "The lock premium: Premium posts",
        "Everything the Gold tier opens ($10.00 a month)",
        "Note (why; only you see it)",
        "Ends on (leave empty for no end)",
        "Access stops at the start of this day.",
        "Grant the comp",
        "on this settings page, by Kopi.",
    ], [
        "Gib jemandem von Hand Zugang: Freunden, der Presse, einen Kulanzmonat nach einer Erstattung.",
        "Was er öffnet",
        "Widerrufen",
        "Freizugang gewähren",
        "Für wen ist er?",
        "Ein Patreon-Mitglied",
        "Wähle eine Sperre oder eine Stufe",
        "Die Sperre premium: Premium posts",
        "Alles, was die Stufe Gold öffnet (10,00 $ im Monat)",
        "Notiz (warum; nur du siehst sie)",
        "auf dieser Einstellungsseite, von Kopi.",
    ])
    english, german = both(site, "post", COMPS, {"who": "member", "member": "", "access": "", "note": ""})
    translated(english, german, [
        "Write the member's e-mail address or Patreon member id.",
    ], ["Schreib die E-Mail-Adresse oder die Patreon-Mitglieds-ID des Mitglieds."])
    english, german = both(site, "post", COMPS, {"who": "member", "member": "nobody@example.com",
                                                 "access": "", "note": ""})
    translated(english, german, [
        "No Patreon member nobody@example.com is known here. Check the spelling, or sync first if they joined just "
        "now.",
        "Choose what the comp opens: one lock, or one tier.",
    ], [
        "Hier ist kein Patreon-Mitglied nobody@example.com bekannt.",
        "Wähle, was der Freizugang öffnet: eine Sperre oder eine Stufe.",
    ])
    admin, locale = site
    locale.value = "de"
    granted = admin.post(COMPS, {"who": "member", "member": "m-sil", "access": "tier:t10", "note": ""},
                         follow_redirects=True)
    assert "Gewährt." in text(granted) and "Jede Seite übernimmt das innerhalb weniger Sekunden." in text(granted)
    assert "Every page follows within a few seconds" not in text(granted)


def test_without_flask_babel_the_pages_read_as_in_english(make_app: Callable[..., Flask]) -> None:
    plain = make_admin_site(make_app)
    populate(plain)
    assert "babel" not in plain.app.extensions
    page = text(plain.get(LOCKS))
    assert "Each lock guards some of the site's content." in page and "Site-wide lock" in page
    page = text(plain.get(LOCK + "?as=t10&months=1"))
    assert "A Gold patron ($10.00 a month) for 1 month:" in page and "Silver (5.00 a month) Gold (10.00" in page
    confirm = text(plain.post(LOCK, rule_form(tiers=["t5"])))
    assert "1 patron would gain access, no patron would lose it." in confirm
    assert "Worked out from the 3 patrons stored for your campaign" in confirm
    page = text(plain.post(POLICIES, policy_form(breaker_percent="lots")))
    assert "Write a percentage, like 10" in page and "Access policies" in page
    page = text(plain.get(COMPS))
    assert "Give someone access by hand" in page and "Everything the Gold tier opens ($10.00 a month)" in page
