"""Browser tests: headless Chromium (the Debian package) driven by Playwright's Python package, against the example
site served live on a free port with the sandbox mounted in it.

They skip, saying why, when ``/usr/bin/chromium`` (or ``PATRONLOCK_CHROMIUM``) or the ``playwright`` package is
missing; ``.ci/run`` installs both. Never ``playwright install``: the Debian browser is the one used.

Screenshots of each page go to ``tests/browser/screenshots/<test>/`` (gitignored), or under
``PATRONLOCK_SCREENSHOTS`` when set, and are listed at the end of the test run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.helpers.browser import CHROMIUM, CHROMIUM_ARGS, SAVED, SCREENSHOTS, TIMEOUT_MS, Shots
from tests.helpers.example_server import serve_example_site


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium per test module (each test opens its own contexts). Not per session: Playwright's sync
    API keeps an event loop running in the main thread while it is open, which would break later tests of async
    views (asgiref refuses to run inside a running loop)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set PATRONLOCK_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install playwright; no 'playwright install')")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=TIMEOUT_MS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Shots:
    """``shots(page, "name")`` saves a full-page screenshot."""
    name = request.node.name.replace("[", "-").replace("]", "").replace("/", "-")
    return Shots(SCREENSHOTS / name)


@pytest.fixture
def live_site(db_url: str, tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """The example site served on a free port (threaded), on this test's database, with the sandbox mounted.

    The creator's token and the campaign are left unset, so the creator sets them up in the settings page."""
    config = {"PATRONLOCK_CREATOR_ACCESS_TOKEN": None, "PATRONLOCK_CAMPAIGN_ID": None}
    with _example_site_on(db_url, tmp_path, config) as served:
        yield served


@pytest.fixture
def demo_site_on_db(db_url: str, tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """The example site as ``make example`` serves it (the sandbox set up as the campaign, the demo's accounts), on
    this test's database: SQLite, or PostgreSQL when configured."""
    with _example_site_on(db_url, tmp_path, {}) as served:
        yield served


@contextmanager
def _example_site_on(db_url: str, tmp_path: Path, config: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    _drop_example_tables(db_url)
    config = {
        "SQLALCHEMY_DATABASE_URI": db_url,
        "PATRONLOCK_STRICT_SIGNALS": True,
        "PATRONLOCK_FILE_ROOT": str(tmp_path / "files"),  # the demo's downloads, outside the repository
        **config,
    }
    with serve_example_site(config) as served:
        yield served
    _drop_example_tables(db_url)


def _drop_example_tables(url: str) -> None:
    if url.startswith("sqlite"):
        return
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS example_users"))
        conn.execute(text("DROP TABLE IF EXISTS example_posts"))  # the posts and the locks the creator chose
        conn.execute(text("DROP TABLE IF EXISTS example_sandbox"))  # the demo's kept sandbox goes with its users
    engine.dispose()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """List the screenshots this run saved."""
    if SAVED:
        terminalreporter.section("browser screenshots")
        for path in SAVED:
            terminalreporter.write_line(str(path))
