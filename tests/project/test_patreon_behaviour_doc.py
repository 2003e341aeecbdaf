"""The catalogue of Patreon's behaviour (``docs/patreon-behaviour.rst``) names, for every entry, the tests that show
it and the sandbox scenario that plays it: each named test must exist, each named scenario must be one the sandbox
plays, and every scenario the sandbox plays must be in the catalogue."""

from __future__ import annotations

import re
from pathlib import Path

from flask_patronlock.sandbox import SCENARIO_NAMES

ROOT = Path(__file__).resolve().parents[2]
TEXT = (ROOT / "docs" / "patreon-behaviour.rst").read_text()


def _entries() -> dict[str, dict[str, str]]:
    """Each behaviour's title -> its definition-list parts ("Sandbox", "Tests", ...), as text."""
    entries: dict[str, dict[str, str]] = {}
    for match in re.finditer(r"^(\S[^\n]*)\n~+\n(.*?)(?=^\S[^\n]*\n[~-]+\n|\Z)", TEXT, re.M | re.S):
        parts: dict[str, str] = {}
        for part in re.finditer(r"^(\S[^\n]*)\n((?:   [^\n]*\n|\n)+)", match.group(2), re.M):
            parts[part.group(1)] = part.group(2)
        entries[match.group(1)] = parts
    return entries


def _tests(text: str) -> list[tuple[str, str]]:
    """(file, function or "") for every ``tests/...`` reference; ``::name`` continues the file named before."""
    named: list[tuple[str, str]] = []
    current = ""
    for ref in re.findall(r"``([^`]+)``", text):
        path, _, name = ref.partition("::")
        if path and not path.startswith("tests/"):
            continue
        current = path or current
        named.append((current, name))
    return named


def test_every_entry_names_tests_that_exist() -> None:
    entries = _entries()
    assert len(entries) >= 17
    for title, parts in entries.items():
        assert "Tests" in parts, f"{title!r} names no tests"
        named = _tests(parts["Tests"])
        assert named, f"{title!r} names no tests"
        for path, name in named:
            assert path.startswith("tests/") and (ROOT / path).is_file(), (title, path)
            if name:
                source = (ROOT / path).read_text()
                assert re.search(rf"^def {re.escape(name)}\(", source, re.M), f"{path}::{name} is named in {title!r}"
        # the policy side is named test by test, never as a whole file
        assert ("tests/policy/test_billing_truth.py", "") not in named, title


def test_every_scenario_is_catalogued_and_every_catalogued_scenario_is_played() -> None:
    named: set[str] = set()
    for title, parts in _entries().items():
        sandbox = parts.get("Sandbox", "")
        here: set[str] = set()
        for listed in re.findall(r"Scenarios?\s+((?:``\w+\([^`]*\)``(?:,?\s+and\s+|,\s+)?)+)", sandbox):
            for name in re.findall(r"``(\w+)\(", listed):
                assert name in SCENARIO_NAMES, f"{title!r} names a scenario the sandbox does not play: {name}"
                here.add(name)
        named |= here
        if here:
            # an entry with a scenario names an end-to-end test of it
            assert "tests/policy/test_billing_scenarios_e2e.py" in parts["Tests"], title
    assert set(SCENARIO_NAMES) <= named, f"scenarios missing from the catalogue: {set(SCENARIO_NAMES) - named}"
