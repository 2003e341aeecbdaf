"""The threat model in ``docs/security.rst`` names, for every row, the tests that show the defence: each must exist,
so a renamed or deleted test cannot leave the table pointing at nothing."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _named_tests() -> list[tuple[str, str]]:
    text = (ROOT / "docs" / "security.rst").read_text()
    lines = text.split("Threat model\n------------", 1)[1].split(".. list-table::", 1)[1].splitlines()
    table = "\n".join(line for line in lines[: next(i for i, x in enumerate(lines) if x and not x.startswith(" "))])
    named: list[tuple[str, str]] = []
    for row in table.split("   * - ")[2:]:  # the first piece is the table's options, the second its header
        last = row.rsplit("     - ", 1)[1]
        current = ""
        for ref in re.findall(r"``([^`]+)``", last):
            path, _, name = ref.rpartition("::")
            current = path or current
            named.append((current, name))
    return named


def test_the_threat_model_has_a_row_per_defence_and_every_named_test_exists() -> None:
    named = _named_tests()
    assert len(named) >= 19
    for path, name in named:
        assert path.startswith("tests/"), (path, name)
        source = (ROOT / path).read_text()
        assert re.search(rf"^def {re.escape(name)}\(", source, re.M), f"{path}::{name} is named in security.rst"
