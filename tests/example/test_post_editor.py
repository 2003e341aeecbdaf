"""The example's post editor (issue 17, item 3), over real HTTP: Kopi, the creator, makes a lock in the settings page,
puts it on a post in the site's own editor, and Sam, a Silver patron, sees each change; deleting the lock keeps the
post locked. Readers can't reach the editor."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.example.test_first_minute import config, reason, sam_the_patron
from tests.helpers.example_server import form_token, serve_example_site, sign_in

ADMIN = "/patronlock/admin"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    with serve_example_site(config(tmp_path)) as served:
        yield served


def choose(kopi: requests.Session, base: str, slug: str, lock: str) -> requests.Response:
    token = form_token(kopi, base + f"/editor/{slug}")
    return kopi.post(base + f"/editor/{slug}", data={"csrf_token": token, "lock": lock}, timeout=10)


def admin_post(kopi: requests.Session, base: str, page: str, path: str, **form: str) -> requests.Response:
    token = form_token(kopi, base + ADMIN + page)
    return kopi.post(base + ADMIN + path, data={"csrf_token": token, **form}, timeout=10)


def text(response: requests.Response) -> str:
    return " ".join(unescape(response.text).split())


def test_the_creator_changes_a_posts_lock_and_the_patron_sees_it(site: tuple[str, Any]) -> None:
    base, _ = site
    sam = sam_the_patron(base, "Silver")
    kopi = sign_in(base, "creator")
    assert "post editor" in kopi.get(base + "/", timeout=10).text
    assert "twenty-step process" in sam.get(base + "/posts/process", timeout=10).text  # "silver": Silver and up

    # Kopi puts the post behind the Gold lock (declared in code) in the site's editor
    editor = kopi.get(base + "/editor/process", timeout=10)
    assert editor.status_code == 200 and "Free for everyone" in editor.text and "gold" in editor.text
    saved = choose(kopi, base, "process", "gold")
    assert saved.url == base + "/editor" and "is now for gold" in text(saved)
    page = sam.get(base + "/posts/process", timeout=10)
    assert "twenty-step process" not in page.text and reason(page.text) == "amount_too_low"

    # a lock of Kopi's own, made in the settings page: Early access, Silver and up
    made = admin_post(kopi, base, "/locks", "/locks", title="Early access", name="", description="")
    assert made.url == base + ADMIN + "/locks/early-access" and "Made the lock" in text(made)
    silver = re.search(r'name="tiers" value="([^"]+)"> Silver', made.text)  # the campaign's Silver tier
    assert silver is not None
    saved_rule = admin_post(kopi, base, "/locks/early-access", "/locks/early-access", enabled="y",
                            tiers=silver.group(1), combine="all", confirm="1")
    assert saved_rule.ok and "Saved lock" in text(saved_rule)
    assert "Early access" in choose(kopi, base, "process", "early-access").text
    assert "twenty-step process" in sam.get(base + "/posts/process", timeout=10).text

    # public: everyone, signed in or not
    choose(kopi, base, "process", "")
    assert "twenty-step process" in requests.get(base + "/posts/process", timeout=10).text

    # deleted while a post is on it: the post stays locked for Sam, and the editor says so
    choose(kopi, base, "process", "early-access")
    lock_page = text(kopi.get(base + ADMIN + "/locks/early-access", timeout=10))
    assert "1 post is still on this lock" in lock_page
    assert admin_post(kopi, base, "/locks/early-access", "/locks/early-access/delete").ok
    page = sam.get(base + "/posts/process", timeout=10)
    assert "twenty-step process" not in page.text and reason(page.text) == "lock_unavailable"
    assert "deleted: only you can read it" in kopi.get(base + "/editor", timeout=10).text


def test_readers_cannot_use_the_editor(site: tuple[str, Any]) -> None:
    base, _ = site
    sam = sign_in(base, "reader")
    assert sam.get(base + "/editor", timeout=10).status_code == 403
    assert sam.get(base + "/editor/process", timeout=10).status_code == 403
    kopi = sign_in(base, "creator")
    token = form_token(kopi, base + "/editor/process")
    assert sam.post(base + "/editor/process", data={"csrf_token": token, "lock": ""}, timeout=10).status_code == 403
    bad = choose(kopi, base, "process", "no-such-lock")
    assert bad.status_code == 422 and "Not a valid choice" in bad.text
    assert "twenty-step process" not in requests.get(base + "/posts/process", timeout=10).text  # nothing changed
