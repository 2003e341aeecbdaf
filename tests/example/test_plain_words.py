"""Every page a creator or a patron reads speaks plainly: no raw id, ISO timestamp, reason or status code, or empty
placeholder outside a "details" disclosure (``<details>``), where the trace behind a sentence may show them.

The example site is served for real with Sam as a Silver patron whose payment was declined, and then read as it is
met: Kopi, the creator, follows every link of the settings page (two clicks deep); Sam and an anonymous visitor read
every post. Text inside ``<details>``, ``<script>``, ``<style>``, ``<code>``, ``<pre>`` and ``<kbd>`` (commands and
addresses to copy) is not read; attributes never are."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
import requests

from flask_patronlock.patreon.types import PATRON_STATUSES
from flask_patronlock.policy import REASONS
from tests.example.test_first_minute import press, sam_the_patron
from tests.helpers.example_server import serve_example_site, sign_in

#: elements whose text is not read: disclosures, code to copy, and what is not text.
SKIPPED = frozenset({"details", "script", "style", "code", "pre", "kbd", "textarea", "template"})
#: codes a page must say in words.
CODES = sorted({code for code in (*REASONS, *PATRON_STATUSES) if code and "_" in code}, key=len, reverse=True)
#: what stands in for the text of a ``<code>``, ``<pre>`` or ``<kbd>`` (so "like <code>/x</code>." stays a sentence).
CODE = "CODE"

CHECKS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("ISO timestamp", re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}|\b)")),
    ("raw id", re.compile(r"\b(?:\d{6,}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\b")),
    ("reason or status code", re.compile(r"\b(?:" + "|".join(map(re.escape, CODES)) + r")\b")),
    ("empty placeholder", re.compile(r"\{\{|\}\}|\{%|%\}|\{[a-z_]+\}|%\([a-z_]+\)s|(?<!^)\bNone\b|\(\s*\)|\[\s*\]")),
    ("space before punctuation", re.compile(r"\w\s+[.,;:!?](?:\s|$)")),
    ("dangling preposition", re.compile(r"\b(?:of|with|at|after|before|by|to|from|for)\s*[.;](?:\s|$)")),
    ("doubled word", re.compile(r"\b(\w+)\s+\1\b", re.IGNORECASE)),
)


class _Text(HTMLParser):
    """The text a reader sees, one string per block, skipping :data:`SKIPPED` elements."""

    VOID = frozenset({"br", "img", "input", "hr", "meta", "link", "source", "wbr", "col", "area", "base", "embed"})
    BLOCKS = frozenset({"p", "div", "li", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6", "dt", "dd", "section",
                        "header", "footer", "nav", "form", "label", "button", "option", "tr", "caption", "legend",
                        "figcaption", "blockquote", "main", "article", "aside", "summary", "br"})  # fmt: skip

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.skipping: list[str] = []
        self.blocks: list[str] = [""]

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in self.BLOCKS:
            self.blocks.append("")
        if tag in SKIPPED and tag not in self.VOID:
            if tag in ("code", "pre", "kbd") and not self.skipping:
                self.blocks[-1] += f" {CODE}"
            self.skipping.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if self.skipping and self.skipping[-1] == tag:
            self.skipping.pop()
        if tag in self.BLOCKS:
            self.blocks.append("")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.blocks[-1] += data


def visible_blocks(html: str) -> list[str]:
    parser = _Text()
    parser.feed(html)
    return [text for block in parser.blocks if (text := " ".join(block.split()))]


def developer_speak(html: str) -> list[str]:
    """``"<check>: <the text>"`` for every block of visible text that fails a check of :data:`CHECKS`."""
    found = []
    for block in visible_blocks(html):
        for name, pattern in CHECKS:
            if pattern.search(block):
                found.append(f"{name}: {block[:160]}")
    return found


def test_the_checks_find_what_they_are_for() -> None:
    bad = {
        "ISO timestamp": "<p>Paid until 2027-01-04T00:00:00+00:00.</p>",
        "raw id": "<p>tier Bronze (id 29939081, 3.00 a month)</p>",
        "reason or status code": "<td>former_patron</td>",
        "empty placeholder": "<p>Pledge None on Patreon to read {lock_title}.</p>",
        "space before punctuation": "<p>already patrons of Kopi's Studio on .</p>",
        "dangling preposition": "<p>after month(s) of membership for .</p>",
        "doubled word": "<p>supported the the studio</p>",
    }
    for name, html in bad.items():
        assert any(line.startswith(name) for line in developer_speak(html)), (name, developer_speak(html))
    assert developer_speak("<p>Unlocked until 4 January 2027.</p><details><summary>Details</summary>"
                           "<p>member 8f2e4c1a-0b7d-4f8e-9a1c-2d3e4f5a6b7c, 2027-01-04T00:00:00</p></details>"
                           "<p>Run <code>flask patronlock sync approve 123456</code>.</p>") == []  # fmt: skip


# -- the example site, read as it is met ------------------------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    config = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'site.db'}", "PATRONLOCK_STRICT_SIGNALS": True}
    with serve_example_site(config) as served:
        yield served


def crawl(http: requests.Session, base: str, start: str, prefix: str, depth: int = 2) -> dict[str, str]:
    """``{path: html}`` of every page under ``prefix`` reachable from ``start`` in ``depth`` clicks (GET only)."""
    pages: dict[str, str] = {}
    frontier = [start]
    for _ in range(depth + 1):
        following: list[str] = []
        for path in frontier:
            if path in pages or len(pages) >= 80:
                continue
            response = http.get(base + path, timeout=20)
            if response.status_code != 200 or "text/html" not in response.headers.get("Content-Type", ""):
                continue
            pages[path] = response.text
            for href in re.findall(r'<a [^>]*href="([^"#]+)"', response.text):
                target = urlsplit(urljoin(base + path, href.replace("&amp;", "&")))
                if target.netloc == urlsplit(base).netloc and target.path.startswith(prefix):
                    following.append(target.path + (f"?{target.query}" if target.query else ""))
        frontier = following
    return pages


def declined_sam_and_kopi(base: str) -> tuple[requests.Session, requests.Session]:
    """The demo as these crawls meet it: Sam, a Silver patron whose payment was declined (the site told), and Kopi,
    the creator, signed in; their sessions."""
    sam = sam_the_patron(base, "Silver")
    press(sam, base, "decline")
    press(sam, base, "flush")
    return sam, sign_in(base, "creator")


def test_no_page_a_creator_or_patron_reads_speaks_developer(site: tuple[str, Any]) -> None:
    base, _app = site
    sam, kopi = declined_sam_and_kopi(base)
    pages = {f"creator {p}": html for p, html in crawl(kopi, base, "/patronlock/admin/", "/patronlock/admin").items()}
    assert len(pages) >= 8, sorted(pages)  # the crawl reached the settings page's pages, not just its front
    for who, http in (("patron", sam), ("visitor", requests.Session())):
        pages |= {f"{who} {p}": html for p, html in crawl(http, base, "/", "/posts", depth=1).items()}
        pages[f"{who} /"] = http.get(base + "/", timeout=20).text
    failures = {page: found for page, html in sorted(pages.items()) if (found := developer_speak(html))}
    assert not failures, "\n".join(f"{page}:\n  " + "\n  ".join(lines) for page, lines in failures.items())
