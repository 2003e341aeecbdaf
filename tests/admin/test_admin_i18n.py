"""The settings page's layout and banner pages in the site's locale (Flask-Babel), from flask-patronlock's own
catalogue; the other settings pages are English yet."""

from __future__ import annotations

import html
from collections.abc import Callable

from flask import Flask
from flask_babel import Babel

from tests.helpers.admin import ADMIN_PREFIX, make_admin_site


def test_the_banner_pages_are_german_on_a_german_site(make_app: Callable[..., Flask]) -> None:
    site = make_admin_site(make_app)
    Babel(site.app, locale_selector=lambda: "de")
    overview = html.unescape(site.get(ADMIN_PREFIX + "/banners?lock=premium").get_data(as_text=True))
    assert '<html lang="de">' in overview and "Patron-Einstellungen" in overview and "Zurück zur Website" in overview
    assert ">Banner</a>" in overview and ">Übersicht</a>" in overview  # the navigation
    assert "<h2>Unterstützung unter der Stufe der Sperre" in overview and "Text bearbeiten" in overview
    assert "Das ist für Patrons von" in overview  # the preview: the built-in text as a German visitor reads it

    editor = html.unescape(site.get(ADMIN_PREFIX + "/banners/amount_too_low?lock=premium").get_data(as_text=True))
    assert "Banner: Unterstützung unter der Stufe der Sperre" in editor
    assert "Banner speichern" in editor and "Vorschau ohne Speichern" in editor
    assert 'data-words="%(used)s von höchstens %(max)s Zeichen"' in editor  # the counter's words for the script
    assert "von höchstens 500 Zeichen" in editor
    assert "Die Schaltfläche führt zu: Auf Patreon erhöhen." in editor


def test_without_flask_babel_the_banner_pages_are_english(make_app: Callable[..., Flask]) -> None:
    site = make_admin_site(make_app)
    editor = html.unescape(site.get(ADMIN_PREFIX + "/banners/amount_too_low?lock=premium").get_data(as_text=True))
    assert "Banner: Pledge below the lock's tier" in editor and "Save the banner" in editor
    assert "of at most 500 characters" in editor and "The button leads to: Upgrade on Patreon." in editor
