"""send_locked_file: the file when allowed, an SVG placeholder for images, the locked page for anything else."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from flask_patronlock import send_locked_file
from tests.helpers.sites import Site, make_site

PNG = b"\x89PNG\r\n\x1a\nfake-image-bytes"


@pytest.fixture
def site(make_app: Callable[..., Flask], tmp_path: Path) -> Site:
    site = make_site(make_app)
    site.ext.lock("premium", tier="Gold")
    files = tmp_path / "files"
    files.mkdir()
    (files / "art.png").write_bytes(PNG)
    (files / "book.pdf").write_bytes(b"%PDF-1.4 secret")
    (tmp_path / "outside.txt").write_text("not yours")

    @site.app.route("/files/<path:name>")
    def serve(name: str) -> object:
        return send_locked_file("premium", name, directory=files)

    @site.app.route("/direct")
    def direct() -> object:
        return send_locked_file("premium", files / "art.png", download_name="art.png")

    site.linked_patron("gold")
    site.linked_patron("silver", entitled_cents=500, entitled_tier_ids=("t5",))
    return site


def test_allowed_gets_the_file(site: Site) -> None:
    with site.get("/files/art.png", "gold") as response:
        assert response.status_code == 200 and response.data == PNG and response.mimetype == "image/png"
        assert "private" in response.headers["Cache-Control"] and "Cookie" in response.headers["Vary"]
    with site.get("/direct", "gold") as response:
        assert response.data == PNG
    with site.get("/files/book.pdf", "gold") as response:
        assert response.data == b"%PDF-1.4 secret"


def test_denied_image_gets_a_placeholder(site: Site) -> None:
    response = site.get("/files/art.png", "silver")
    assert response.status_code == 403 and response.mimetype == "image/svg+xml"
    body = response.get_data(as_text=True)
    assert body.startswith("<svg") and "fake-image-bytes" not in body
    assert 'data-patronlock-reason="amount_too_low"' in body and "For patrons at Gold" in body
    assert response.headers["Cache-Control"] == "private" and "Cookie" in response.headers["Vary"]
    assert site.get("/direct", None).mimetype == "image/svg+xml"


def test_denied_other_file_gets_the_locked_page(site: Site) -> None:
    response = site.get("/files/book.pdf", None)
    assert response.status_code == 403 and response.mimetype == "text/html"
    assert "secret" not in response.get_data(as_text=True)
    assert 'data-patronlock-reason="anonymous"' in response.get_data(as_text=True)
    as_json = site.get("/files/book.pdf", "silver", headers={"Accept": "application/json"})
    assert as_json.get_json()["reason"] == "amount_too_low"
    assert as_json.headers["Cache-Control"] == "private"


def test_paths_from_the_url_stay_inside_the_directory(site: Site) -> None:
    assert site.get("/files/../outside.txt", "gold").status_code == 404
    assert site.get("/files/missing.png", "gold").status_code == 404
