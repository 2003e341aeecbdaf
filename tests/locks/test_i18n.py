"""Languages: with Flask-Babel initialised by the site and a locale selector saying "de", a locked page's banner, its
button, amounts and dates are German, from flask-patronlock's own catalogue (domain ``flask_patronlock``); without
Flask-Babel nothing changes. The shipped catalogue covers every marked string and is compiled."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po
from flask import Flask, render_template_string
from flask_babel import Babel
from flask_babel import gettext as host_gettext

from flask_patronlock import formatting, i18n, locked
from flask_patronlock.i18n import DOMAIN, TRANSLATIONS
from flask_patronlock.settings import set_banner_text
from tests.helpers.constants import NOW
from tests.helpers.sites import Site, make_site

ROOT = Path(__file__).resolve().parents[2]
BASE = "https://patreon.test"
NBSP = "\xa0"
KEYWORDS = {"gettext": None, "ngettext": (1, 2), "lazy_gettext": None, "N_": None, "pl_": None, "pl_n": (1, 2)}


def build(make_app: Callable[..., Flask], *, locale: str | None, **config: object) -> Site:
    site = make_site(make_app, PATRONLOCK_OAUTH_BASE_URL=BASE, PATRONLOCK_CREATOR_NAME="Kopi Studio", **config)
    if locale is not None:
        Babel(site.app, locale_selector=lambda: locale)
    site.ext.lock("premium", tier="Gold")
    site.ext.lock("drip", drip_months=6)
    site.ext.lock("sneak-peek", tier="Gold", public_after=NOW + timedelta(days=20))
    for name in ("premium", "drip", "sneak-peek"):
        site.app.add_url_rule(f"/{name}", name, locked(name)((lambda n: lambda: f"SECRET:{n}")(name)))
    site.user("stranger")
    site.linked_patron("silver", entitled_cents=500, entitled_tier_ids=("t5",))
    site.linked_patron("gold")
    return site


def page(site: Site, path: str, user: str | None = None) -> str:
    response = site.get(path, user)
    assert response.status_code == 403
    return html.unescape(response.get_data(as_text=True))


def message(body: str) -> str:
    return re.search(r'<p class="patronlock-message">(.*?)</p>', body, re.S).group(1)  # type: ignore[union-attr]


def action(body: str) -> str:
    return re.search(r'class="patronlock-action" href="[^"]*"[^>]*>(.*?)</a>', body, re.S).group(1)  # type: ignore[union-attr]


def test_a_german_site_shows_the_locked_page_in_german(make_app: Callable[..., Flask]) -> None:
    site = build(make_app, locale="de")
    body = page(site, "/premium", "silver")
    assert message(body) == (
        f"Das ist für Patrons von Kopi Studio ab Gold (10,00{NBSP}$ im Monat). Erhöhe deine Unterstützung auf Patreon "
        "auf Gold, um es zu sehen."
    )
    assert action(body) == "Auf Patreon erhöhen"
    assert "<title>Nur für Patrons</title>" in body and '<html lang="de">' in body

    drip = page(site, "/drip", "gold")
    assert message(drip) == (
        "Das wird für dich am 5. Juni 2026 freigeschaltet. Bleib dabei, und es öffnet sich von selbst."
    )
    assert '<time datetime="2026-06-05T12:00:00+00:00">5. Juni 2026</time>' in drip

    early = page(site, "/sneak-peek")
    assert "Patrons sehen das schon jetzt; für alle öffnet es sich am 4. April 2026." in early
    assert action(early) == "Anmelden"
    assert site.get("/sneak-peek", headers={"Accept": "application/json"}).get_json()["message"] == (
        "Das ist für Patrons von Kopi Studio. Melde dich an, um es zu sehen."
    )

    hint = page(site, "/premium", "stranger")
    assert "Schon Patron? Das Verbinden ist ein Klick auf Patreon" in hint
    assert action(hint) == "Dein Patreon-Konto verbinden"


def test_without_flask_babel_the_english_output_is_unchanged(make_app: Callable[..., Flask]) -> None:
    site = build(make_app, locale=None)
    assert "babel" not in site.app.extensions
    body = page(site, "/premium", "silver")
    assert message(body) == (
        "This is for patrons of Kopi Studio at Gold ($10.00 a month) or higher. Upgrade your pledge to Gold on Patreon "
        "to see it."
    )
    assert action(body) == "Upgrade on Patreon"
    assert "<title>Patrons only</title>" in body and '<html lang="en">' in body
    assert "This unlocks for you on June 5, 2026." in message(page(site, "/drip", "gold"))


def test_without_flask_babel_installed_the_output_is_english(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(i18n, "flask_babel", None)  # as if `pip install flask-patronlock` had no i18n extra
    monkeypatch.setattr(i18n, "_domain", None)
    site = build(make_app, locale="de")
    body = page(site, "/premium", "silver")
    # Flask-Babel's locale selector is not asked: PATRONLOCK_LOCALE ("en") is the locale, the words are English
    assert "at Gold ($10.00 a month) or higher" in message(body)
    assert action(body) == "Upgrade on Patreon" and "<title>Patrons only</title>" in body
    assert i18n.lazy_gettext("Log in %(x)s", x=1) == "Log in 1"


def test_flask_babel_in_english_changes_nothing(make_app: Callable[..., Flask]) -> None:
    site = build(make_app, locale="en")
    body = page(site, "/premium", "silver")
    assert "at Gold ($10.00 a month) or higher" in message(body) and action(body) == "Upgrade on Patreon"
    assert "on June 5, 2026." in message(page(site, "/drip", "gold"))


@pytest.mark.parametrize(
    ("locale", "expected"), [(None, "at Gold (€10.00 a month)"), ("de", f"ab Gold (10,00{NBSP}€ im Monat)")]
)
def test_a_configured_currency_is_written_by_babel(
    make_app: Callable[..., Flask], locale: str | None, expected: str
) -> None:
    site = build(make_app, locale=locale, PATRONLOCK_CURRENCY="EUR")
    assert expected in message(page(site, "/premium", "silver"))


def test_a_creators_own_text_is_never_translated(make_app: Callable[..., Flask]) -> None:
    site = build(make_app, locale="de")
    with site.app.app_context():
        set_banner_text("amount_too_low", "Upgrade to {tier} for {amount}, friend.")
    body = page(site, "/premium", "silver")
    assert message(body) == f"Upgrade to Gold for 10,00{NBSP}$, friend."  # as written; the amount in the locale
    assert action(body) == "Auf Patreon erhöhen"  # the built-in button is still German


def test_the_hosts_catalogue_and_underscore_are_left_alone(make_app: Callable[..., Flask]) -> None:
    site = build(make_app, locale="de")
    with site.app.test_request_context("/"):
        # our domain is not the host's: the host's gettext finds no translation of our strings
        assert host_gettext("Upgrade on Patreon") == "Upgrade on Patreon"
        assert render_template_string("{{ _('Log in') }}|{{ pl_('Log in') }}") == "Log in|Anmelden"


def test_the_connect_status_page_is_german(make_app: Callable[..., Flask]) -> None:
    site = build(make_app, locale="de")
    body = html.unescape(site.get("/patreon/", "stranger").get_data(as_text=True))
    assert "<h1>Deine Patreon-Verbindung</h1>" in body and ">Patreon verbinden</a>" in body


def test_the_countdown_and_the_access_sentence_are_german(make_app: Callable[..., Flask]) -> None:
    site = build(make_app, locale="de")
    with site.app.test_request_context("/"):
        days = [i18n.countdown_text(NOW + timedelta(days=d), NOW) for d in (0, 1, 5)]
        assert days == ["heute", "morgen", "in 5 Tagen"]
    body = html.unescape(site.get("/patreon/", "silver").get_data(as_text=True))
    assert "Du bist Patron mit Silver: Beiträge für Silver und darunter sind freigeschaltet." in body


def test_pure_formatting_takes_locale_and_currency() -> None:
    when = NOW.replace(year=2027, month=1, day=4)
    assert formatting.money(500, "$") == "$5.00" and formatting.money(500) == "5.00"
    assert formatting.money(500, locale="de") == f"5,00{NBSP}$"
    assert formatting.money(500, currency="GBP") == "£5.00"
    assert formatting.date_text(when) == "January 4, 2027"
    assert formatting.date_text(when, day_first=True) == "4 January 2027"
    assert formatting.date_text(when, locale="de") == "4. Januar 2027"
    assert formatting.date_text(when, locale="de", now=when) == "4. Januar"


def _catalogue() -> tuple[set[object], Path]:
    with (ROOT / "babel.cfg").open() as cfg:
        method_map, options_map = parse_mapping_cfg(cfg)
    extracted = {
        message
        for _file, _line, message, _comments, _context in extract_from_dir(
            str(ROOT), method_map, options_map, keywords=KEYWORDS
        )
    }
    return extracted, TRANSLATIONS / "de" / "LC_MESSAGES"


def test_the_shipped_catalogue_has_every_marked_string_in_german() -> None:
    extracted, folder = _catalogue()
    ids = {m if isinstance(m, str) else m[0] for m in extracted}
    with (TRANSLATIONS / f"{DOMAIN}.pot").open("rb") as f:
        template = {m.id if isinstance(m.id, str) else m.id[0] for m in read_po(f) if m.id}
    assert ids == template, "run `make translations`: the .pot is out of date"
    with (folder / f"{DOMAIN}.po").open("rb") as f:
        po = read_po(f)
    untranslated = [m.id for m in po if m.id and not (all(m.string) if isinstance(m.string, tuple) else m.string)]
    assert not untranslated
    assert not [m.id for m in po if m.id and m.fuzzy]
    assert {m.id if isinstance(m.id, str) else m.id[0] for m in po if m.id} == template
    for m in po:  # every placeholder kept
        if m.id:
            source = m.id if isinstance(m.id, str) else m.id[-1]
            target = m.string if isinstance(m.string, str) else m.string[-1]
            found = re.compile(r"\{\w+\}|%\(\w+\)\w")
            assert set(found.findall(source)) == set(found.findall(target)), m.id
    with (folder / f"{DOMAIN}.mo").open("rb") as f:
        mo = read_mo(f)
    def pairs(catalog: object) -> dict[object, object]:
        return {_key(m.id): _key(m.string) for m in catalog if m.id}  # type: ignore[attr-defined]

    assert pairs(mo) == pairs(po), "compile the .mo again"


def _key(value: object) -> object:
    return tuple(value) if isinstance(value, list | tuple) else value


def test_babel_cfg_extracts_the_package_only() -> None:
    extracted, _folder = _catalogue()
    assert "Upgrade on Patreon" in extracted and "Patrons only" in extracted
    assert not any("sandbox" in str(m).lower() for m in extracted)
