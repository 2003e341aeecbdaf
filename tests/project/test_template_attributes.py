"""``pl_`` leaves an apostrophe of a translation as it is (the page's text reads as typed; the translations are the
package's own), so a translated string is safe only inside double-quoted attributes: no template of the package
puts an expression in a single-quoted attribute value."""

from __future__ import annotations

import re
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parents[2] / "flask_patronlock"
#: an attribute whose value is in single quotes and holds a Jinja expression: ``title='{{ ... }}'``.
SINGLE_QUOTED = re.compile(r"""[\w:-]+\s*=\s*'[^'<>]*\{\{""")


def single_quoted_attributes(text: str) -> list[str]:
    return [match.group(0) for match in SINGLE_QUOTED.finditer(text)]


def test_the_check_finds_a_single_quoted_attribute() -> None:
    assert single_quoted_attributes("""<a title='{{ pl_("x") }}'>""") == ["title='{{"]
    assert single_quoted_attributes("""<a title="{{ pl_('x') }}">{{ f(a='b') }}""") == []


def test_no_template_puts_an_expression_in_a_single_quoted_attribute() -> None:
    found = {
        str(path.relative_to(TEMPLATES)): hits
        for path in sorted(TEMPLATES.rglob("*.html")) + sorted(TEMPLATES.rglob("*.svg"))
        if (hits := single_quoted_attributes(path.read_text(encoding="utf-8")))
    }
    assert found == {}
