"""The README's picture is one of the browser journey's screenshots: the README and the quick start show the file the
journey writes (``make screenshots``), and no other test or script writes it."""

from __future__ import annotations

from pathlib import Path

from tests.browser.test_full_journey import README_PICTURE

ROOT = Path(__file__).parents[2]


def test_the_readme_and_the_quick_start_show_the_journeys_picture() -> None:
    assert README_PICTURE.is_file()
    assert f"]({README_PICTURE.relative_to(ROOT).as_posix()})" in (ROOT / "README.md").read_text()
    assert f".. image:: {README_PICTURE.relative_to(ROOT / 'docs').as_posix()}\n" in (
        ROOT / "docs" / "quickstart.rst"
    ).read_text()


def test_only_the_journey_writes_it() -> None:
    writers = [
        path.relative_to(ROOT).as_posix()
        for folder in ("tests", "bench", "example_site", "flask_patronlock")
        for path in (ROOT / folder).rglob("*.py")
        if README_PICTURE.name in path.read_text() and path.name != "test_readme_picture.py"
    ]
    assert writers == ["tests/browser/test_full_journey.py"]
