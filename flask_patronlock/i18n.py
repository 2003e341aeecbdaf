"""Translations and the site's locale: the patron-facing words in the viewer's language, amounts and dates in its
format.

flask-patronlock ships its own gettext catalogue, in its own domain (``flask_patronlock``, under
``flask_patronlock/translations/``), so the host's catalogues and ours never mix. It is used when the host has
initialised `Flask-Babel <https://python-babel.github.io/flask-babel/>`_ (``pip install flask-patronlock[i18n]``,
then ``Babel(app, locale_selector=...)``): the locale is then Flask-Babel's :func:`flask_babel.get_locale` (the host's
locale selector). Without Flask-Babel, or before the host initialises it, every string is English and the locale is
``PATRONLOCK_LOCALE`` (``"en"`` by default).

In Python::

    from flask_patronlock.i18n import N_, gettext, ngettext

    flash(gettext("Your Patreon account %(name)s is connected.", name=name))
    TEXTS = {"x": N_("Log in")}   # marked for extraction; translated where it is shown: gettext(TEXTS["x"])

(Call them by these names: ``make translations`` extracts ``gettext``, ``ngettext``, ``lazy_gettext`` and ``N_``,
not an alias such as ``_``.)

In the library's templates, ``pl_`` and ``pl_n`` (never the host's ``_``)::

    {{ pl_("Log in") }}  {{ pl_n("%(num)d month", "%(num)d months", months) }}

Amounts and dates (:func:`money`, :func:`date_text`) go through Babel in the site's locale and
``PATRONLOCK_CURRENCY``; for an English locale and US dollars they read as they always did (``$5.00``,
``January 4, 2027``), with ``PATRONLOCK_CURRENCY_SYMBOL``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from flask import Flask, current_app, has_app_context
from markupsafe import Markup, escape

from . import formatting

__all__ = [
    "DOMAIN",
    "N_",
    "TRANSLATIONS",
    "amount_text",
    "command_locale",
    "countdown_text",
    "date_text",
    "day_text",
    "format_args",
    "gettext",
    "init_app",
    "lazy_gettext",
    "locale",
    "moment_text",
    "money",
    "month_text",
    "ngettext",
    "text_locale",
    "words",
]

#: The folder of the shipped catalogues (``<lang>/LC_MESSAGES/flask_patronlock.mo``).
TRANSLATIONS = Path(__file__).resolve().parent / "translations"
#: The gettext domain of the library's strings.
DOMAIN = "flask_patronlock"

try:  # an optional integration: the core works without it
    import flask_babel
except ImportError:  # pragma: no cover - exercised by the no-Flask-Babel tests through _babel_active
    flask_babel = None

_domain: Any = (
    flask_babel.Domain(translation_directories=[str(TRANSLATIONS)], domain=DOMAIN) if flask_babel is not None else None
)


def _babel_active() -> bool:
    """Flask-Babel is installed and the current app initialised it."""
    return _domain is not None and has_app_context() and "babel" in current_app.extensions


def N_(string: str) -> str:
    """Mark ``string`` for extraction without translating it (module-level tables); translate it where it is
    shown with :func:`gettext`."""
    return string


def gettext(string: str, **variables: Any) -> str:
    """``string`` in the current locale (through the ``flask_patronlock`` domain), then ``% variables`` if given;
    ``string`` itself without Flask-Babel."""
    if _babel_active():
        return str(_domain.gettext(string, **variables))
    return string % variables if variables else string


def ngettext(singular: str, plural: str, num: int, **variables: Any) -> str:
    """The singular or plural form for ``num`` in the current locale; ``%(num)d`` is available in the strings."""
    if _babel_active():
        return str(_domain.ngettext(singular, plural, num, **variables))
    variables.setdefault("num", num)
    return (singular if num == 1 else plural) % variables


def lazy_gettext(string: str, **variables: Any) -> Any:
    """Like :func:`gettext`, translated when it is used as text (class attributes, form labels)."""
    if flask_babel is not None:
        from flask_babel.speaklater import LazyString

        return LazyString(gettext, string, **variables)
    return string % variables if variables else string


def locale() -> str:
    """The site's locale for the current request, e.g. ``"de"`` or ``"en_GB"``: Flask-Babel's ``get_locale()`` when
    the host initialised Flask-Babel, else ``PATRONLOCK_LOCALE`` (``"en"`` outside an app)."""
    if _babel_active():
        found = flask_babel.get_locale()
        if found is not None:
            return str(found)
    if has_app_context():
        return str(current_app.config.get("PATRONLOCK_LOCALE") or "en")
    return "en"


def format_args() -> tuple[str | None, str | None]:
    """(locale, currency) to pass to :mod:`flask_patronlock.formatting` for the current request: ``(None, None)`` -- "
    "today's English
    output -- for an English locale with US dollars, or when Babel is not installed."""
    site_locale = locale()
    currency = str(current_app.config.get("PATRONLOCK_CURRENCY") or "USD").upper() if has_app_context() else "USD"
    if site_locale.split("_")[0].lower() == "en" and currency == "USD":
        return None, None
    try:
        import babel  # noqa: F401 - the formats need it (Flask-Babel depends on it)
    except ImportError:  # pragma: no cover - babel comes with the i18n extra
        return None, None
    return site_locale, currency


def money(cents: int | None) -> str:
    """``1250`` as the site writes an amount: ``$12.50`` (English, ``PATRONLOCK_CURRENCY_SYMBOL``), ``12,50 $``
    (German), ``€12.50`` (English with ``PATRONLOCK_CURRENCY = "EUR"``); ``""`` for ``None``."""
    site_locale, currency = format_args()
    symbol = str(current_app.config.get("PATRONLOCK_CURRENCY_SYMBOL") or "") if has_app_context() else ""
    return formatting.money(cents, symbol, locale=site_locale, currency=currency)


def date_text(when: datetime, *, day_first: bool = False, now: datetime | None = None) -> str:
    """``when`` as the site writes a date: ``January 4, 2027`` (English), ``4. Januar 2027`` (German); see
    :func:`flask_patronlock.formatting.date_text`."""
    site_locale, _currency = format_args()
    return formatting.date_text(when, day_first=day_first, now=now, locale=site_locale)


def _escape_text(text: str) -> Markup:
    """``text`` escaped as template text: ``<``, ``>``, ``&`` and ``"`` are, an apostrophe is kept (as the page's
    literal text kept it before it was translatable; every attribute of the templates is in double quotes)."""
    return Markup(str(escape(text)).replace("&#39;", "'"))


def _template_gettext(string: str, **variables: Any) -> Markup:
    """``pl_``: the translation is template text (escaped), the variables are escaped unless they are markup."""
    translated = gettext(string)
    return _escape_text(translated) % variables if variables else _escape_text(translated)


def _template_ngettext(singular: str, plural: str, num: int, **variables: Any) -> Markup:
    """``pl_n``: :func:`ngettext` escaped as ``pl_`` is; the variables (``num`` and any other, e.g.
    ``pl_n("%(num)d patron of %(tier)s", "%(num)d patrons of %(tier)s", n, tier=name)``) are put in once, escaped
    unless they are markup."""
    variables.setdefault("num", num)
    if _babel_active():
        translated = str(_domain.get_translations().ungettext(singular, plural, num))
    else:
        translated = singular if num == 1 else plural
    return _escape_text(translated) % variables


#: the words :func:`flask_patronlock.formatting.countdown_text` says for a day that is not "in N days".
_COUNTDOWN_WORDS = (N_("today"), N_("tomorrow"))


def countdown_text(when: datetime, now: datetime) -> str:
    """:func:`flask_patronlock.formatting.countdown_text` in the current locale: "today", "tomorrow", "in 5 days"
    (German: "heute", "morgen", "in 5 Tagen")."""
    english = formatting.countdown_text(when, now)
    days = (when.date() - now.date()).days
    if english in _COUNTDOWN_WORDS:
        return gettext(english)
    return ngettext("in %(num)d day", "in %(num)d days", days)


def words(table: dict[str | None, str], code: str | None) -> str:
    """:func:`flask_patronlock.formatting.words` in the current locale: ``words(REASON_WORDS, "anonymous")`` is "not
    signed in" (German: "nicht angemeldet"); a code the table does not know stays its fallback text."""
    text = formatting.words(table, code)
    return gettext(text) if text else text


def text_locale() -> str | None:
    """The locale the settings pages, the explainer and the command line write dates and amounts in: ``None``
    (today's English, whatever the currency) for an English site or without Flask-Babel (their words are English
    then, so are their dates), else the site's."""
    if not _babel_active():
        return None
    site_locale = locale()
    if site_locale.split("_")[0].lower() == "en":
        return None
    try:
        import babel  # noqa: F401 - the formats need it (Flask-Babel depends on it)
    except ImportError:  # pragma: no cover - babel comes with the i18n extra
        return None
    return site_locale


def day_text(when: datetime | None, *, now: datetime | None = None) -> str:
    """A day as the settings pages write it: ``4 January 2027`` (English), ``4. Januar 2027`` (German); ``""`` for
    ``None``. With ``now``, the year is left out when it is ``now``'s."""
    if when is None:
        return ""
    return formatting.date_text(when, day_first=True, now=now, locale=text_locale())


def moment_text(when: datetime | None, *, now: datetime | None = None) -> str:
    """A time as the settings pages write it: ``7 December 2026, 11:18 UTC`` (English), ``7. Dezember 2026, 11:18
    UTC`` (German); ``""`` for ``None``."""
    if when is None:
        return ""
    return formatting.moment_text(when, now=now, locale=text_locale())


def month_text(when: datetime) -> str:
    """A calendar month: ``January 2027`` (English), ``Januar 2027`` (German)."""
    return formatting.month_text(when, locale=text_locale())


def amount_text(cents: int | None) -> str:
    """An amount as the explainer and the lock rules write it: ``5.00`` (English, no symbol, as always), ``5,00 $``
    (German, in ``PATRONLOCK_CURRENCY``); ``""`` for ``None``."""
    written_in = text_locale()
    if written_in is None:
        return formatting.money(cents)
    _site_locale, currency = format_args()
    return formatting.money(cents, locale=written_in, currency=currency)


@contextmanager
def command_locale() -> Iterator[None]:
    """The command line's language: a command has no request, so Flask-Babel's locale selector is not asked; with
    Flask-Babel initialised, the command runs in ``PATRONLOCK_LOCALE`` (``"en"`` by default); without it, English."""
    if not _babel_active():
        yield
        return
    with flask_babel.force_locale(str(current_app.config.get("PATRONLOCK_LOCALE") or "en")):
        yield


def init_app(app: Flask) -> None:
    """Add ``pl_`` and ``pl_n`` (the library's translations) and ``patronlock_locale`` to ``app``'s Jinja globals;
    the host's ``_`` is left alone."""
    app.jinja_env.globals.update(pl_=_template_gettext, pl_n=_template_ngettext, patronlock_locale=locale)
