"""Every sentence flask-patronlock shows a creator or a patron goes through its catalogue: nothing is left English on a
translated site because a string was never marked.

The proof is a pseudo-translation: a catalogue made here from the shipped template (``flask_patronlock.pot``) in which
every translation is its English text between ``⟦`` and ``⟧``. The example site is served with Flask-Babel choosing
German (so amounts and dates are German, from Babel) and the library's domain reading that catalogue; then the
creator follows every link of the settings page, and Sam (a patron whose payment was declined) and an anonymous
visitor read every post. On the settings pages every visible text, and every ``title``, ``placeholder``,
``aria-label`` and ``alt``, must be inside the marks, except the site's own data (names, e-mails, tier and lock
titles, what the creator typed, add-ons' own descriptions), amounts, dates and numbers. On the posts, the library's
part -- the banners -- is held to the same rule; the example site's own words are its own.

Text inside a ``<details>`` disclosure (the trace behind a sentence, which may show ids and codes; its
``<summary>`` is read), ``<code>``, ``<pre>``, ``<kbd>`` (commands and addresses to copy), ``<script>``, ``<style>`` and
``<textarea>`` (what a creator typed) is not read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import requests
from babel.dates import get_day_names, get_month_names
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from flask_babel import Babel, Domain
from sqlalchemy import select

from flask_patronlock import i18n
from flask_patronlock.i18n import DOMAIN, TRANSLATIONS
from flask_patronlock.settings import list_addons, list_locks
from flask_patronlock.state import get_state
from tests.example.test_plain_words import crawl, declined_sam_and_kopi
from tests.helpers.connect import default_form
from tests.helpers.example_server import serve_example_site

OPEN, CLOSE = "⟦", "⟧"
#: a marked span with no marked span inside it (removed innermost first: a translation may hold another).
MARKED = re.compile(f"{OPEN}[^{OPEN}{CLOSE}]*{CLOSE}")
#: the locale the site asks for: German amounts and dates from Babel, the pseudo-translation from the catalogue.
LOCALE = "de"
SKIPPED = frozenset({"details", "script", "style", "code", "pre", "kbd", "textarea", "template"})
READ_ATTRIBUTES = ("title", "placeholder", "aria-label", "alt")
#: words that are names, not text: the brand, and what stands for a time zone.
PROPER_NAMES = ("Patreon", "UTC")


def pseudo_catalogue(folder: Path) -> Path:
    """Compile the pseudo-translation of the shipped template into ``folder`` (a translation directory)."""
    with (TRANSLATIONS / f"{DOMAIN}.pot").open("rb") as handle:
        template = read_po(handle)
    catalogue = Catalog(locale=LOCALE, domain=DOMAIN)
    for message in template:
        if not message.id:
            continue
        if isinstance(message.id, tuple | list):
            catalogue.add(tuple(message.id), tuple(f"{OPEN}{text}{CLOSE}" for text in message.id))
        else:
            catalogue.add(message.id, f"{OPEN}{message.id}{CLOSE}")
    target = folder / LOCALE / "LC_MESSAGES"
    target.mkdir(parents=True)
    with (target / f"{DOMAIN}.mo").open("wb") as handle:
        write_mo(handle, catalogue)
    return folder


class _Text(HTMLParser):
    """Text nodes and read attributes, each as it stands, with whether it lies inside a banner."""

    VOID = frozenset({"br", "img", "input", "hr", "meta", "link", "source", "wbr", "col", "area", "base", "embed"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[tuple[str, bool]] = []
        self.found: list[tuple[str, bool]] = []

    def _in_banner(self) -> bool:
        return any(banner for _tag, banner in self.open)

    def _skipping(self) -> bool:
        if self.open and self.open[-1][0] == "summary":
            return False  # a disclosure's own label is read, what it discloses is not
        return any(tag in SKIPPED for tag, _banner in self.open)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        banner = "patronlock-banner" in (values.get("class") or "").split()
        if not self._skipping():
            for name in READ_ATTRIBUTES:
                if values.get(name):
                    self.found.append((str(values[name]), banner or self._in_banner()))
            if tag == "input" and values.get("type") in ("submit", "button") and values.get("value"):
                self.found.append((str(values["value"]), banner or self._in_banner()))
        if tag not in self.VOID:
            self.open.append((tag, banner))

    def handle_endtag(self, tag: str) -> None:
        for index in range(len(self.open) - 1, -1, -1):
            if self.open[index][0] == tag:
                del self.open[index:]
                break

    def handle_data(self, data: str) -> None:
        if data.strip() and not self._skipping():
            self.found.append((data, self._in_banner()))


def texts(html: str) -> list[tuple[str, bool]]:
    parser = _Text()
    parser.feed(html)
    return parser.found


def unmarked(text: str, data: list[str], dates: re.Pattern[str]) -> str:
    """The lines of ``text`` left once marked spans, the site's data, dates, amounts and numbers are taken out: ``""``
    when all of it went through the catalogue."""
    previous = None
    while previous != text:
        previous, text = text, MARKED.sub(" ", text)
    for value in data:
        text = text.replace(value, " ")
    text = dates.sub(" ", text)
    text = re.sub(r"(?<![\w/])/[\w./-]*", " ", text)  # an address of the site ("/members"), as typed in a field
    for name in PROPER_NAMES:
        text = re.sub(rf"\b{name}\b", " ", text)
    left = [" ".join(line.split()) for line in text.splitlines()]
    return "\n".join(line for line in left if re.search(r"[^\W\d_]{2,}", line))


def site_data(app: Any) -> list[str]:
    """What the site holds and shows as it is (longest first, so a name inside a title goes with the title)."""
    values: set[str] = {str(app.config.get("PATRONLOCK_CREATOR_NAME") or "")}
    with app.app_context():
        state = get_state(app)
        tables = state.tables
        with state.store.engine.connect() as conn:
            for table, columns in (
                (tables.patrons, ("full_name", "email")),
                (tables.tiers, ("title",)),
                (tables.locks, ("title", "description")),
                (tables.comps, ("note",)),
            ):
                for row in conn.execute(select(*(table.c[name] for name in columns))):
                    values.update(str(value) for value in row if value)
        for lock in list_locks():
            values.update((lock.title, lock.name, lock.description))
        for addon in list_addons():
            values.update((addon.name, addon.description or "", addon.error or ""))
    from example_site.app import db

    with app.app_context():
        for table in db.metadata.sorted_tables:
            for name in ("email", "title", "name", "slug"):
                if name in table.c:
                    values.update(str(v) for (v,) in db.session.execute(select(table.c[name])) if v)
    sandbox = app.extensions.get("example_sandbox")
    if sandbox is not None:  # what Patreon's side calls things (the campaign's name on the campaign choice)
        values.update((sandbox.campaign.creation_name, sandbox.campaign.vanity or ""))
    return sorted((v for v in values if len(v) >= 2), key=len, reverse=True)


def date_words() -> re.Pattern[str]:
    names: set[str] = set()
    for width in ("wide", "abbreviated"):
        names.update(get_month_names(width, locale=LOCALE).values())
        names.update(get_day_names(width, locale=LOCALE).values())
    words = sorted((re.escape(n.rstrip(".")) for n in names), key=len, reverse=True)
    return re.compile(r"\b(?:" + "|".join(words) + r")\b\.?")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    folder = pseudo_catalogue(tmp_path / "pseudo")
    monkeypatch.setattr(i18n, "_domain", Domain(translation_directories=[str(folder)], domain=DOMAIN))
    config = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'site.db'}", "PATRONLOCK_STRICT_SIGNALS": True}
    with serve_example_site(config) as (base, app):
        Babel(app, locale_selector=lambda: LOCALE)
        yield base, app


def test_the_pseudo_translation_marks_what_goes_through_the_catalogue(tmp_path: Path) -> None:
    """The check itself: a marked sentence passes, an unmarked one, or one half-marked, is found."""
    dates = date_words()
    data = ["Kopi's Studio", "Sam Lee"]
    assert unmarked(f"{OPEN}Sam Lee pledged {OPEN}Silver{CLOSE} on 4. Januar 2027{CLOSE}", data, dates) == ""
    assert unmarked("Sam Lee", data, dates) == "" and unmarked("12,50 $", data, dates) == ""
    assert unmarked("Setup is not finished", data, dates) == "Setup is not finished"
    assert unmarked(f"{OPEN}Patrons{CLOSE} (3 active)", data, dates) == "(3 active)"
    assert unmarked(f"{OPEN}Formatting:\nbold\nand\nitalics{CLOSE}\nSave", data, dates) == "Save"
    folder = pseudo_catalogue(tmp_path)
    assert (folder / LOCALE / "LC_MESSAGES" / f"{DOMAIN}.mo").stat().st_size > 1000


def test_every_string_of_the_settings_pages_and_banners_goes_through_the_catalogue(site: tuple[str, Any]) -> None:
    base, app = site
    sam, kopi = declined_sam_and_kopi(base)
    settings = crawl(kopi, base, "/patronlock/admin/", "/patronlock/admin")
    pages = {f"creator {p}": (html, False) for p, html in settings.items()}
    assert len(pages) >= 8, sorted(pages)
    # two pages only a POST reaches: the what-if before switching a lock off, and a form with a mistake in it
    admin = base + "/patronlock/admin"
    policies = default_form(kopi.get(admin + "/policies", timeout=20).text)
    toggle = {"csrf_token": policies["csrf_token"], "enabled": "0"}
    confirm = kopi.post(admin + "/locks/premium/toggle", data=toggle, timeout=20)
    assert confirm.status_code == 200 and 'name="confirm"' in confirm.text, confirm.text[:500]
    pages["creator POST locks/premium/toggle"] = (confirm.text, False)
    mistaken = {**policies, "declined_grace_days": "-3"}
    refused = kopi.post(admin + "/policies", data=mistaken, timeout=20)
    assert refused.status_code == 422 and "pl-field--error" in refused.text, refused.text[-3000:]
    pages["creator POST policies (a mistake)"] = (refused.text, False)
    assert any(OPEN in html for html, _ in pages.values()), "the pseudo-translation is not in use"
    for who, http in (("patron", sam), ("visitor", requests.Session())):
        read = crawl(http, base, "/", "/posts", depth=1)
        read["/"] = http.get(base + "/", timeout=20).text
        pages |= {f"{who} {p}": (html, True) for p, html in read.items()}
    banners = sum(html.count("patronlock-banner ") for html, only_banners in pages.values() if only_banners)
    assert banners >= 3, "the readers met no banner"
    data, dates = site_data(app), date_words()
    failures: dict[str, list[str]] = {}
    for page, (html, only_banners) in sorted(pages.items()):
        # one text for the page, a line per text node: a translation may hold markup ("Formatting: <b>bold</b>"),
        # so its marks may open in one node and close in another
        read = "\n".join(" ".join(text.split()) for text, in_banner in texts(html) if in_banner or not only_banners)
        for line in unmarked(read, data, dates).splitlines():
            failures.setdefault(page, []).append(repr(line[:160]))
    assert not failures, f"{sum(map(len, failures.values()))} texts not from the catalogue:\n" + "\n".join(
        f"{page}:\n  " + "\n  ".join(dict.fromkeys(lines)) for page, lines in failures.items()
    )
