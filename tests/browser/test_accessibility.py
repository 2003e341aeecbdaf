"""The settings page passes an automated accessibility check: axe-core (bundled by the ``axe-playwright-python``
package, no download at run time) in Debian's Chromium, over every page the settings page's navigation links to, on
the example site as the demo's creator sees it. A violation of impact ``serious`` or ``critical`` fails the test,
naming the rule, the page and the elements."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.helpers.browser import Shots, new_page
from tests.helpers.example_server import serve_example_site

pytestmark = pytest.mark.slow

#: what fails the check (axe's impacts are minor, moderate, serious and critical).
FAILING_IMPACTS = frozenset({"serious", "critical"})


@pytest.fixture
def demo_site(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    with serve_example_site({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'example.db'}",
                             "PATRONLOCK_STRICT_SIGNALS": True}) as served:  # fmt: skip
        yield served


def serious_violations(results: Any) -> list[str]:
    """One line per serious or critical violation: rule, impact, help text and the elements' selectors."""
    lines = []
    for violation in results.response.get("violations", []):
        if violation.get("impact") in FAILING_IMPACTS:
            targets = ", ".join(" ".join(map(str, node.get("target", []))) for node in violation.get("nodes", []))
            lines.append(f"{violation['id']} ({violation['impact']}): {violation['help']} -- {targets}")
    return lines


def test_the_serious_violations_filter_keeps_only_serious_and_critical() -> None:
    class Results:
        response = {"violations": [
            {"id": "color-contrast", "impact": "serious", "help": "contrast", "nodes": [{"target": ["a.x"]}]},
            {"id": "region", "impact": "moderate", "help": "landmarks", "nodes": [{"target": ["div"]}]},
            {"id": "label", "impact": "critical", "help": "labels", "nodes": [{"target": ["#a"]}, {"target": ["#b"]}]},
        ]}  # fmt: skip

    assert serious_violations(Results()) == [
        "color-contrast (serious): contrast -- a.x",
        "label (critical): labels -- #a, #b",
    ]


def test_every_settings_page_passes_axe(browser: Any, demo_site: tuple[str, Any], shots: Shots) -> None:
    axe_playwright = pytest.importorskip("axe_playwright_python.sync_playwright")
    from playwright.sync_api import expect

    base, _app = demo_site
    context, page = new_page(browser, base, 1200, 900)
    try:
        page.goto("/")
        page.click("[data-demo-sign-in=creator]")
        expect(page.locator(".flash")).to_contain_text("Kopi")
        page.goto("/patronlock/admin/")
        hrefs = page.locator("nav a[href^='/patronlock/admin']").evaluate_all("links => links.map(a => a.href)")
        paths = sorted({urlsplit(href).path for href in hrefs} | {"/patronlock/admin/"})
        assert len(paths) >= 5, paths  # the navigation was found: a check of one page would prove little
        axe = axe_playwright.Axe()
        failures: dict[str, list[str]] = {}
        for path in paths:
            response = page.goto(path)
            assert response is not None and response.status == 200, path
            found = serious_violations(axe.run(page))
            if found:
                failures[path] = found
                shots(page, path.strip("/").replace("/", "-") or "index")
        assert not failures, "\n".join(f"{path}:\n  " + "\n  ".join(lines) for path, lines in failures.items())
    finally:
        context.close()
