"""A reconcile run in words, in the site's language: its status, its ``detail`` (keys and the tier catalogue's
values), its stored ``reason`` and its one-line summary, for the Sync page and a run's page.

A run's ``reason`` and ``detail`` are stored in English (the sync writes them, logs and the CLI show them as they
are); each shape :mod:`flask_patronlock.sync` writes is read back here and said again through the catalogue (the
English msgids are the shapes themselves, so an English page shows the stored text unchanged). Technical parts (an
exception's text, a setting's name) stay as they are; a shape not known here is shown as stored.
"""

from __future__ import annotations

import re
from typing import Any

from ..i18n import N_, gettext, ngettext, text_locale
from ..sync import RunResult

__all__ = ["detail_text", "detail_value_text", "reason_text", "run_summary", "status_text"]

#: a run's status in words (translated where shown; in English the status itself).
STATUS_WORDS = {"complete": N_("complete"), "incomplete": N_("incomplete"), "held": N_("held"),
                "failed": N_("failed"), "running": N_("running"), "approved": N_("approved"),
                "rejected": N_("rejected"), "skipped": N_("skipped")}
#: the keys of a run's ``detail`` in words (the run page's table; in English the key with spaces).
DETAIL_WORDS = {"api_requests": N_("api requests"), "deferred": N_("deferred"), "dropped": N_("dropped"),
                "missing_marked": N_("missing marked"), "created": N_("created"), "updated": N_("updated"),
                "unchanged": N_("unchanged"), "stale": N_("stale"), "access_refreshed": N_("access refreshed"),
                "linked": N_("linked"), "tiers": N_("tiers"), "unseen": N_("unseen"), "revoking": N_("revoking"),
                "entitled": N_("entitled"), "losses": N_("losses")}


def status_text(status: str) -> str:
    """A run's status in the site's language (``"complete"``; an unknown status as it is)."""
    return gettext(STATUS_WORDS[status]) if status in STATUS_WORDS else status


def detail_text(key: str) -> str:
    """A key of a run's ``detail`` in words (``"api requests"``)."""
    return gettext(DETAIL_WORDS[key]) if key in DETAIL_WORDS else key.replace("_", " ")


#: why a run read the tier catalogue again (:meth:`flask_patronlock.sync._SyncRun._tiers_stale`), in words.
TIERS_WHY_WORDS = {"never read": N_("never read before"), "unknown tier": N_("a page named a tier not stored yet"),
                   "stale": N_("older than PATRONLOCK_TIERS_MAX_AGE")}
_TIERS_READ = re.compile(r"(?P<result>changed|unchanged) \((?P<why>[^)]*)\)")


def detail_value_text(key: str, value: Any) -> str:
    """A value of a run's ``detail`` in words where the run stored a word (what it did with the tier catalogue:
    ``"fresh"`` -> "up to date, not read again"); numbers and anything else as stored."""
    if key != "tiers" or not isinstance(value, str):
        return str(value)
    if value == "fresh":
        return gettext("up to date, not read again")
    if value.startswith("not refreshed: "):
        return gettext("could not be read again (%(error)s); the stored tiers were used",
                       error=value.removeprefix("not refreshed: "))
    found = _TIERS_READ.fullmatch(value)
    if found is None:
        return value
    why = found["why"]
    why_text = gettext(TIERS_WHY_WORDS[why]) if why in TIERS_WHY_WORDS else why
    if found["result"] == "changed":
        return gettext("read again (%(why)s): changed", why=why_text)
    return gettext("read again (%(why)s): unchanged", why=why_text)


# -- a run's reason and summary in words ------------------------------------------------------------------------------
# A run's ``reason`` is stored in English (the sync writes it, logs and the CLI show it as it is); the pages show it
# in the site's language: each shape :mod:`flask_patronlock.sync` writes is read back here and said again through
# the catalogue (the English msgids are the shapes themselves, so an English page shows the stored text unchanged).
# Technical parts (an exception's text, a setting's name) stay as they are; a shape not known here is shown as stored.

_COUNT = r"(?:\d{1,3}(?:,\d{3})+|\d+)"
_FIXED_REASONS = frozenset((
    N_("interrupted: the process running it stopped before it finished"),
    N_("the sync lease was lost: another run took over after PATRONLOCK_SYNC_LEASE_SECONDS without renewal"),
    N_("database connection lost while recording the run's end; the next run marks it interrupted"),
))
_DB_LOST = re.compile(r"database connection lost \((?P<detail>.*)\) after (?P<num>\d+) attempt\(s\)", re.S)
_UNPARSED = re.compile(r"page (?P<page>\d+): (?P<num>\d+) member\(s\) could not be parsed")
_EMPTY = re.compile(r"page\(s\) (?P<pages>\d+(?:, \d+)*) came back empty but pointed to a next page")
_TOTAL = re.compile(r"saw (?P<seen>\d+) member\(s\) but Patreon reported a total of (?P<total>\d+) "
                    r"\(more than (?P<slack>\d+) apart\)")
_PAGE_ERROR = re.compile(r"page (?P<page>\d+): (?P<error>.+)", re.S)
_HELD = re.compile(
    rf"(?P<what>.*): the run would take something away from (?P<revoking>{_COUNT}) of (?P<total>{_COUNT}) entitled "
    r"patron\(s\), more than the breaker allows \(max\((?P<min>\d+), (?P<fraction>[^()]*)\)\); approve or "
    r"reject it",
    re.S,
)
_LOSS = re.compile(rf"(?P<kind>access ended|tiers emptied|entitled cents fell to 0) for (?P<n>{_COUNT}) patron\(s\) "
                   r"on (?P<pages>pages? \d+(?:-\d+)?(?:, \d+(?:-\d+)?)*)")
_MISSING = re.compile(rf"(?P<n>{_COUNT}) entitled patron\(s\) missing from the listing")


def _number(text: str) -> tuple[int, str]:
    """``"1,234"`` (as the sync writes a count) -> ``(1234, "1,234")``, the text in the site's locale."""
    value = int(text.replace(",", ""))
    site_locale = text_locale()
    if site_locale is None:
        return value, text
    from babel.numbers import format_decimal

    return value, str(format_decimal(value, locale=site_locale))


def _pages_text(text: str) -> str:
    """``"pages 1-3, 7"`` (:func:`flask_patronlock.sync._page_ranges`) in the site's language."""
    spans = text.split(" ", 1)[1]
    count = 0
    for span in spans.split(", "):
        first, _dash, last = span.partition("-")
        count += int(last or first) - int(first) + 1
    return ngettext("page %(pages)s", "pages %(pages)s", count, pages=spans)


def _loss_text(part: str) -> str | None:
    loss = _LOSS.fullmatch(part)
    if loss is not None:
        num, n = _number(loss["n"])
        pages = _pages_text(loss["pages"])
        if loss["kind"] == "access ended":
            return ngettext("access ended for %(n)s patron(s) on %(pages)s",
                            "access ended for %(n)s patron(s) on %(pages)s", num, n=n, pages=pages)
        if loss["kind"] == "tiers emptied":
            return ngettext("tiers emptied for %(n)s patron(s) on %(pages)s",
                            "tiers emptied for %(n)s patron(s) on %(pages)s", num, n=n, pages=pages)
        return ngettext("entitled cents fell to 0 for %(n)s patron(s) on %(pages)s",
                        "entitled cents fell to 0 for %(n)s patron(s) on %(pages)s", num, n=n, pages=pages)
    missing = _MISSING.fullmatch(part)
    if missing is not None:
        num, n = _number(missing["n"])
        return ngettext("%(n)s entitled patron(s) missing from the listing",
                        "%(n)s entitled patron(s) missing from the listing", num, n=n)
    return None


def _held_text(match: re.Match[str]) -> str | None:
    parts = [_loss_text(part) for part in match["what"].split("; ")] if match["what"] else []
    if any(part is None for part in parts):
        return None
    total, total_text = _number(match["total"])
    _revoking, revoking_text = _number(match["revoking"])
    return ngettext(
        "%(what)s: the run would take something away from %(revoking)s of %(total)s entitled patron(s), more than "
        "the breaker allows (max(%(min)s, %(fraction)s)); approve or reject it",
        "%(what)s: the run would take something away from %(revoking)s of %(total)s entitled patron(s), more than "
        "the breaker allows (max(%(min)s, %(fraction)s)); approve or reject it",
        total,
        what="; ".join(str(part) for part in parts),
        revoking=revoking_text,
        total=total_text,
        min=match["min"],
        fraction=match["fraction"],
    )


def reason_text(reason: str | None) -> str:
    """Why a run is incomplete, failed or held (its stored ``reason``), in the site's language; ``""`` for none."""
    if not reason:
        return ""
    if reason in _FIXED_REASONS:
        return gettext(reason)
    if (held := _HELD.fullmatch(reason)) is not None:
        return _held_text(held) or reason
    if (lost := _DB_LOST.fullmatch(reason)) is not None:
        return ngettext("database connection lost (%(detail)s) after %(num)d attempt(s)",
                        "database connection lost (%(detail)s) after %(num)d attempt(s)", int(lost["num"]),
                        detail=lost["detail"])
    if (unparsed := _UNPARSED.fullmatch(reason)) is not None:
        return ngettext("page %(page)s: %(num)d member(s) could not be parsed",
                        "page %(page)s: %(num)d member(s) could not be parsed", int(unparsed["num"]),
                        page=unparsed["page"])
    if (empty := _EMPTY.fullmatch(reason)) is not None:
        return ngettext("page(s) %(pages)s came back empty but pointed to a next page",
                        "page(s) %(pages)s came back empty but pointed to a next page",
                        empty["pages"].count(",") + 1, pages=empty["pages"])
    if (total := _TOTAL.fullmatch(reason)) is not None:
        return ngettext("saw %(num)d member(s) but Patreon reported a total of %(total)s (more than %(slack)s apart)",
                        "saw %(num)d member(s) but Patreon reported a total of %(total)s (more than %(slack)s apart)",
                        int(total["seen"]), total=total["total"], slack=total["slack"])
    if (page := _PAGE_ERROR.fullmatch(reason)) is not None:
        return gettext("page %(page)s: %(error)s", page=page["page"], error=page["error"])
    return reason


#: :meth:`RunResult.summary <flask_patronlock.sync.RunResult.summary>`'s word for how a run ended.
_SUMMARY_WORDS = {"complete": N_("complete"), "INCOMPLETE": N_("INCOMPLETE"), "complete, HELD": N_("complete, HELD"),
                  "FAILED": N_("FAILED")}


def run_summary(run: RunResult) -> str:
    """:meth:`RunResult.summary <flask_patronlock.sync.RunResult.summary>` (the run page's first line) in the site's
    language, its reason too (:func:`reason_text`)."""
    words = {True: "complete", False: "INCOMPLETE"}[run.complete] if run.status != "held" else "complete, HELD"
    if run.status == "failed":
        words = "FAILED"
    line = gettext(
        "run %(run)s: %(status)s; %(pages)s, %(members)s of %(total)s; %(changed)s changed, %(revoked)s revoked, "
        "%(held)s held",
        run=run.run_id,
        status=gettext(_SUMMARY_WORDS[words]),
        pages=ngettext("%(num)d page(s)", "%(num)d page(s)", run.pages),
        members=ngettext("%(num)d member(s)", "%(num)d member(s)", run.members_seen),
        total=run.total_reported if run.total_reported is not None else "?",
        changed=run.changed,
        revoked=run.revoked,
        held=run.held,
    )
    if run.reason:
        line = gettext("%(summary)s; reason: %(reason)s", summary=line, reason=reason_text(run.reason))
    return line
