"""The creator's words in the site's language: the word tables (:func:`flask_patronlock.i18n.words`), the settings
pages' days and times (``day()``/``moment()``), the explainer's story and steps, and ``flask patronlock explain``,
which takes its language from ``PATRONLOCK_LOCALE`` (a command has no request). Without Flask-Babel all of it is the
English it always was."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask_babel import Babel

from flask_patronlock import formatting, i18n
from flask_patronlock.formatting import ENTITLEMENT_WORDS, PATRON_STATUS_WORDS, REASON_WORDS, SOURCE_WORDS
from tests.helpers.admin import ADMIN_PREFIX, AdminSite, make_admin_site
from tests.helpers.constants import NOW

TABLES = {
    "PATRON_STATUS_WORDS": PATRON_STATUS_WORDS,
    "ENTITLEMENT_WORDS": ENTITLEMENT_WORDS,
    "SOURCE_WORDS": SOURCE_WORDS,
    "REASON_WORDS": REASON_WORDS,
}

#: the German story of Sam (Silver, payment declined two days ago, in the 7-day grace) for each lock.
SAM_DE = ("Sam wurde am 15. Dezember 2025 Patron mit Silver (5,00 $ im Monat). Die Zahlung vom 13. März 2026 wurde "
          "abgelehnt; dank deiner Kulanzfrist von 7 Tagen besteht der Zugriff noch bis zum 20. März 2026.")  # fmt: skip
#: the English sentence of the wrong tier.
WRONG_TIER_EN = "They can't see 'premium' because it needs tier Gold (10.00 a month) or higher."
SAM_EN = ("Sam pledged Silver (5.00 a month) on 15 December 2025. Their payment on 13 March 2026 was declined; under "
          "your 7-day grace they keep access until 20 March 2026.")  # fmt: skip
#: the steps :mod:`flask_patronlock.explain` writes itself (the policy's own steps follow them).
EXPLAIN_STEPS_DE = (
    "Sperre 'premium': Es gilt die im Code festgelegte Standardregel: Stufe Gold (10,00 $ im Monat) oder höher.",
    "Betrachter: Nutzer sam, angemeldet, verknüpft mit dem Patreon-Nutzer p-sam.",
    "Mitglied: m-sam (Sam) der Kampagne c1, Stand 2026-03-15T12:00:00+00:00, aus sync.",
    "Admin: Laut Admin-Callback ist dieser Nutzer kein Admin.",
)
EXPLAIN_STEPS_EN = (
    "Lock 'premium': the default rule declared in code applies: tier Gold (10.00 a month) or higher.",
    "Viewer: user sam, signed in, linked to Patreon user p-sam.",
    "Member: m-sam (Sam) of campaign c1, as of 2026-03-15T12:00:00+00:00 from sync.",
    "Admin: the admin callback says this user is not an admin.",
)


def declined_site(make_app: Callable[..., Flask], **config: Any) -> AdminSite:
    """The settings-page site with Sam (user ``sam``, member ``m-sam``): Silver, whose payment was declined two days
    before :data:`NOW`, so in the 7-day grace; and Ada (``m-ada``), an active Silver patron not connected here."""
    site = make_admin_site(make_app, **config)
    site.user("sam", name="Sam", email="sam@example.com")
    site.link("sam", "p-sam")
    site.apply("m-sam", user_id="p-sam", full_name="Sam", email="sam@example.com", patron_status="declined_patron",
               last_charge_status="Declined", last_charge_date=NOW - timedelta(days=2), entitled_cents=500,
               entitled_tier_ids=("t5",))  # fmt: skip
    site.apply("m-ada", user_id="p-ada", full_name="Ada", email="ada@example.com", entitled_cents=500,
               entitled_tier_ids=("t5",))  # fmt: skip
    return site


def visible(response: Any) -> str:
    """A page's text as a reader sees it: no tags, entities decoded, runs of spaces (and no-break spaces) as one."""
    assert response.status_code == 200
    text = html.unescape(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)))
    return re.sub(r"\s+", " ", text.replace("\xa0", " "))


def story_of(response: Any) -> str:
    match = re.search(r"<p data-story>(.*?)</p>", response.get_data(as_text=True), re.S)
    assert match is not None, "no story on the page"
    return re.sub(r"\s+", " ", html.unescape(match.group(1)).replace("\xa0", " ")).strip()


def steps_of(response: Any) -> list[str]:
    block = re.search(r'<ol class="pl-steps">(.*?)</ol>', response.get_data(as_text=True), re.S)
    assert block is not None, "no steps on the page"
    return [html.unescape(s).replace("\xa0", " ") for s in re.findall(r"<li>(.*?)</li>", block.group(1), re.S)]


def sentences(text: str) -> list[str]:
    """``text`` cut after each full stop that ends a sentence (not inside "5.00")."""
    return [s.strip() for s in re.split(r"(?<=\.)\s+(?=[A-Z])", text) if s.strip()]


def test_the_word_tables_are_german_through_i18n_words(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    Babel(app, locale_selector=lambda: "de")
    with app.test_request_context("/"):
        assert i18n.words(REASON_WORDS, "anonymous") == "nicht angemeldet"
        assert i18n.words(REASON_WORDS, "amount_too_low") == "die Unterstützung liegt unter der Stufe der Sperre"
        assert i18n.words(PATRON_STATUS_WORDS, "declined_patron") == "unterstützt, Zahlung abgelehnt"
        assert i18n.words(PATRON_STATUS_WORDS, None) == "nie unterstützt"
        assert i18n.words(ENTITLEMENT_WORDS, "grace") == "ja, in einer Kulanzfrist"
        assert i18n.words(SOURCE_WORDS, "webhook") == "eine Nachricht von Patreon"
        for name, table in TABLES.items():
            for code, english in table.items():
                german = i18n.words(table, code)
                assert german and german != english, f"{name}[{code!r}] is not translated: {english!r}"
        # a code the table does not know stays its fallback text, and never raises
        assert i18n.words(PATRON_STATUS_WORDS, "some_new_status") == "some new status"
        assert i18n.words(REASON_WORDS, "") == ""
        # the settings pages' globals take the same arguments as before
        when = NOW.replace(month=1, day=4, year=2027)
        assert i18n.day_text(when) == "4. Januar 2027" and i18n.day_text(None) == ""
        assert i18n.moment_text(NOW.replace(month=12, day=7, hour=11, minute=18)) == "7. Dezember 2026, 11:18 UTC"
        assert i18n.month_text(when) == "Januar 2027"


def test_without_flask_babel_the_words_and_dates_are_english(make_app: Callable[..., Flask]) -> None:
    app = make_app(PATRONLOCK_LOCALE="de")  # no Flask-Babel: no translations, so English dates too
    with app.test_request_context("/"):
        for table in TABLES.values():
            for code in table:
                assert i18n.words(table, code) == formatting.words(table, code)
        when = NOW.replace(month=1, day=4, year=2027)
        assert i18n.day_text(when) == "4 January 2027"
        assert i18n.moment_text(NOW.replace(month=12, day=7, hour=11, minute=18)) == "7 December 2026, 11:18 UTC"
        assert i18n.moment_text(NOW, now=NOW) == "15 March, 12:00 UTC"
        assert i18n.month_text(when) == "January 2027"
        assert i18n.amount_text(500) == "5.00"


def test_the_explainer_and_the_settings_dates_are_german(make_app: Callable[..., Flask]) -> None:
    site = declined_site(make_app)
    language = {"code": "en"}
    Babel(site.app, locale_selector=lambda: language["code"])

    pages: dict[str, dict[str, Any]] = {"en": {}, "de": {}}
    for code in ("en", "de"):
        language["code"] = code
        for lock in ("supporters", "premium"):
            pages[code][lock] = site.get(ADMIN_PREFIX + f"/patrons/m-sam?lock={lock}")
        pages[code]["ada"] = site.get(ADMIN_PREFIX + "/patrons/m-ada?lock=premium")

    # Sam in the grace, on a lock the grace opens ...
    grace = visible(pages["de"]["supporters"])
    assert story_of(pages["de"]["supporters"]) == (
        f"{SAM_DE} „supporters“ ist für diese Person sichtbar; nötig ist: mindestens 1,00 $ im Monat."
    )
    assert "jede Bedingung der Sperre ist erfüllt" in grace  # words(REASON_WORDS, ...)
    # ... and on a lock of a higher tier than theirs (the wrong tier)
    assert story_of(pages["de"]["premium"]) == (
        f"{SAM_DE} „premium“ bleibt gesperrt, denn nötig ist: Stufe Gold (10,00 $ im Monat) oder höher."
    )
    assert steps_of(pages["de"]["premium"])[:4] == list(EXPLAIN_STEPS_DE)
    wrong_tier = visible(pages["de"]["premium"])
    assert "die Unterstützung liegt unter der Stufe der Sperre" in wrong_tier
    # not connected here: the story of what they would get once connected, German too
    assert story_of(pages["de"]["ada"]).endswith(
        "„premium“ bleibt gesperrt, denn nötig ist: Stufe Gold (10,00 $ im Monat) oder höher."
    )
    assert "Ada wurde am 15. Dezember 2025 Patron mit Silver (5,00 $ im Monat)." in story_of(pages["de"]["ada"])

    # the word tables and the dates of the page, through words(), day() and moment()
    for phrase in ("ja, in einer Kulanzfrist", "20. März 2026", "unterstützt, Zahlung abgelehnt",
                   "13. März 2026", "15. Dezember 2025", "15. März 2026, 12:00 UTC", "ein Abgleich"):  # fmt: skip
        assert phrase in grace, phrase

    # what the English page says in these words is gone from the German one
    english = visible(pages["en"]["supporters"])
    english_story = story_of(pages["en"]["supporters"])
    assert english_story == f"{SAM_EN} They can see 'supporters', which needs at least 1.00 a month."
    assert story_of(pages["en"]["premium"]) == f"{SAM_EN} {WRONG_TIER_EN}"
    assert steps_of(pages["en"]["premium"])[:4] == list(EXPLAIN_STEPS_EN)
    translated = [
        *sentences(english_story), *sentences(story_of(pages["en"]["premium"])),
        *sentences(story_of(pages["en"]["ada"])),
        *EXPLAIN_STEPS_EN, "yes, in a grace period", "pledging, payment declined", "a reconcile run",
        "every condition of the lock holds", "the pledge is below the lock's tier", "20 March 2026", "13 March 2026",
        "15 December 2025", "15 March 2026, 12:00 UTC", "tier Gold (10.00 a month) or higher",
    ]  # fmt: skip
    # (the policy's own steps, flask_patronlock.policy.explain_steps, are English yet: "Condition: at least ...")
    for phrase in translated:
        assert phrase in english + visible(pages["en"]["premium"]) + visible(pages["en"]["ada"]), phrase
        assert phrase not in grace + wrong_tier + visible(pages["de"]["ada"]), phrase


def test_without_flask_babel_the_explainer_page_is_unchanged_english(make_app: Callable[..., Flask]) -> None:
    site = declined_site(make_app)
    grace = site.get(ADMIN_PREFIX + "/patrons/m-sam?lock=supporters")
    assert story_of(grace) == f"{SAM_EN} They can see 'supporters', which needs at least 1.00 a month."
    text = visible(grace)
    assert "Access now: yes, in a grace period until 20 March 2026." in text
    assert "Status pledging, payment declined" in text and "Pledging since 15 December 2025" in text
    assert "As of 15 March 2026, 12:00 UTC, from a reconcile run" in text
    wrong_tier = site.get(ADMIN_PREFIX + "/patrons/m-sam?lock=premium")
    assert story_of(wrong_tier).endswith(WRONG_TIER_EN)
    assert steps_of(wrong_tier)[:4] == list(EXPLAIN_STEPS_EN)


def _never_asked() -> str:
    raise AssertionError("a command has no request: the locale selector must not be asked")


def test_flask_patronlock_explain_speaks_patronlock_locale(make_app: Callable[..., Flask]) -> None:
    site = declined_site(make_app, PATRONLOCK_LOCALE="de")
    Babel(site.app, locale_selector=_never_asked)
    runner = site.app.test_cli_runner()

    german = runner.invoke(args=["patronlock", "explain", "sam", "premium"])
    assert german.exit_code == 0, german.output
    lines = german.output.replace("\xa0", " ").splitlines()
    assert lines[0] == f"{SAM_DE} „premium“ bleibt gesperrt, denn nötig ist: Stufe Gold (10,00 $ im Monat) oder höher."
    assert lines[2] == "So wurde entschieden:"
    assert lines[3:7] == [f"{i}. {step}" for i, step in enumerate(EXPLAIN_STEPS_DE, 1)]
    assert lines[-1] == "=> VERWEIGERT (amount_too_low)"
    listed = runner.invoke(args=["patronlock", "lock", "list"]).output.replace("\xa0", " ")
    assert "premium: Stufe Gold (10,00 $ im Monat) oder höher; im Code angelegt." in listed

    site.app.config["PATRONLOCK_LOCALE"] = "en"  # the same command, English
    english = runner.invoke(args=["patronlock", "explain", "sam", "premium"]).output
    assert english.splitlines()[0] == f"{SAM_EN} {WRONG_TIER_EN}"
    assert "How this was decided:" in english and english.splitlines()[-1] == "=> DENIED (amount_too_low)"
    for line in [*sentences(english.splitlines()[0]), *EXPLAIN_STEPS_EN, "How this was decided:", "DENIED"]:
        assert line in english and line not in german.output, line


@pytest.mark.parametrize("locale", ["en", "de"])
def test_without_flask_babel_the_command_line_is_english(make_app: Callable[..., Flask], locale: str) -> None:
    site = declined_site(make_app, PATRONLOCK_LOCALE=locale)
    result = site.app.test_cli_runner().invoke(args=["patronlock", "explain", "sam", "premium"])
    assert result.exit_code == 0, result.output
    assert result.output == (
        f"{SAM_EN} {WRONG_TIER_EN}\n"
        "\nHow this was decided:\n"
        + "".join(f"{i}. {step}\n" for i, step in enumerate(EXPLAIN_STEPS_EN, 1))
        + "5. The viewer is signed in and linked to Patreon.\n"
        "6. Patreon status: declined_patron; last charge: Declined on 2026-03-13T12:00:00+00:00.\n"
        "7. Policy: the payment was declined; the 'grace' policy keeps access for 7 day(s).\n"
        "8. Entitlement: grace until 2026-03-20T12:00:00+00:00, 5.00 a month, tiers t5.\n"
        "9. Condition: tier t10 (10.00 a month) or higher; the patron has a tier of 5.00 a month: not met.\n"
        "10. Result: denied, reason 'amount_too_low' (tier t10 or higher).\n"
        "=> DENIED (amount_too_low)\n"
    )



def test_flask_patronlock_insight_speaks_patronlock_locale(make_app: Callable[..., Flask]) -> None:
    site = declined_site(make_app, PATRONLOCK_LOCALE="de")
    Babel(site.app, locale_selector=_never_asked)
    runner = site.app.test_cli_runner()
    german = runner.invoke(args=["patronlock", "insight", "--months", "2"]).output.splitlines()
    assert german[0].split() == ["Monat", "Aktiv", "zu", "Beginn", "Neu", "Gekündigt", "Abgelehnt", "Wieder",
                                 "bezahlt", "Abwanderung", "Ablehnungen", "Aktiv", "am", "Ende"]  # fmt: skip
    assert german[2].startswith("März 2026 ")
    assert german[-1] == "In diesen Monaten hat kein Besucher das Banner einer Sperre gesehen."
    site.app.config["PATRONLOCK_LOCALE"] = "en"
    english = runner.invoke(args=["patronlock", "insight", "--months", "2"]).output.splitlines()
    assert english[0] == ("Month           Active at start   New  Cancelled  Declined  Recovered   Churn  Declines  "
                          "Active at end")  # fmt: skip
    assert english[2].startswith("March 2026 ") and len(english[2]) == len(english[0])
    assert english[-1] == "No visitor has been shown a lock's banner in these months."


def test_every_reason_and_timeline_event_has_words() -> None:
    """A decision's reason and what a patron's timeline shows (an audit row's kind, the events a change was inferred
    to be) are said in words, never as a code with its underscores taken out: every one the package writes is in
    its table."""
    import re
    from pathlib import Path

    from flask_patronlock.formatting import EVENT_WORDS, REASON_WORDS
    from flask_patronlock.insight import STATE_KINDS
    from flask_patronlock.policy import REASONS

    assert set(REASON_WORDS) >= REASONS
    source = (Path(__file__).resolve().parents[2] / "flask_patronlock" / "transitions.py").read_text(encoding="utf-8")
    inferred = set(re.findall(r'events\.append\("([a-z_]+)"\)', source))
    inferred |= set(re.findall(r'"(access_(?:granted|revoked))"', source))
    assert {"pledge_started", "payment_declined", "access_granted"} <= inferred  # the search finds them
    assert inferred <= set(EVENT_WORDS), inferred - set(EVENT_WORDS)
    assert set(STATE_KINDS) <= set(EVENT_WORDS), set(STATE_KINDS) - set(EVENT_WORDS)
