"""The example's early-access post, over real HTTP: on the first screen, for patrons now and everyone from a date
counted on the demo's own clock (so "advance the clock a month" in Play Patreon opens it), and that date kept across
a restart."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest
import requests

from example_site.app import EARLY_ACCESS
from flask_patronlock.formatting import date_text
from tests.example.test_first_minute import config, press, sam_the_patron
from tests.helpers.example_server import serve_example_site, sign_in

BODY = "The whole harbour series"
TEASER = "Six paintings of the harbour at dawn"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    with serve_example_site(config(tmp_path)) as served:
        yield served


def message(page: str) -> str:
    return unescape(" ".join(re.findall(r'<p class="patronlock-[a-z-]+(?: patronlock-early-access)?">(.*?)</p>', page)))


def test_patrons_read_it_now_and_everyone_once_the_demo_clock_passes_the_date(site: tuple[str, Any]) -> None:
    base, app = site
    sandbox = app.extensions["example_sandbox"]
    opens = app.extensions["example_demo"].opened_at + EARLY_ACCESS
    assert opens > sandbox.now

    first = requests.get(base + "/", timeout=10).text  # the first screen lists it, saying until when
    item = re.search(r'<li data-post="new-series">(.*?)</li>', first, re.S)
    assert item is not None and 'data-early-access="on"' in item.group(1)
    assert f"early access: patrons now, everyone from {date_text(opens, day_first=True)}" in unescape(item.group(1))

    anonymous = requests.get(base + "/posts/new-series", timeout=10).text
    assert TEASER in anonymous and BODY not in anonymous
    assert f"Patrons can see this now; it opens to everyone on {date_text(opens)}." in message(anonymous)
    reader = sign_in(base, "reader")
    assert BODY not in reader.get(base + "/posts/new-series", timeout=10).text

    sam = sam_the_patron(base, "Bronze")  # any paid tier
    assert BODY in sam.get(base + "/posts/new-series", timeout=10).text
    sam_home = sam.get(base + "/", timeout=10).text
    assert re.search(r'<li data-post="new-series">.*?data-open="yes"', sam_home, re.S)

    press(sam, base, "advance")  # a month on Patreon, and so on the site: past the date
    assert sandbox.now >= opens
    anonymous = requests.get(base + "/posts/new-series", timeout=10).text
    assert BODY in anonymous and "patronlock-banner" not in anonymous
    first = unescape(requests.get(base + "/", timeout=10).text)
    assert f"free for everyone since {date_text(opens, day_first=True)} (patrons saw it first)" in first
    assert BODY not in requests.get(base + "/posts/masterclass", timeout=10).text  # the other locks stay


def test_the_date_is_kept_across_a_restart(tmp_path: Path) -> None:
    with serve_example_site(config(tmp_path)) as (_base, app):
        opened = app.extensions["example_demo"].opened_at
    with serve_example_site(config(tmp_path)) as (base, app):
        assert app.extensions["example_demo"].opened_at == opened
        page = requests.get(base + "/posts/new-series", timeout=10).text
        assert date_text(opened + EARLY_ACCESS) in unescape(page)
