"""Blurred previews of locked images: what a visitor below a lock gets from ``send_locked_file`` for a JPEG, PNG or WebP
image, that the preview cannot give the picture back, the disk cache (per image, size and wording; bounded; no path
from the URL), and plain errors for what is not an image."""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from PIL import Image, ImageDraw

from flask_patronlock import send_locked_file
from flask_patronlock.errors import ConfigurationError
from flask_patronlock.files import send_image_preview
from flask_patronlock.previews import GRID, PreviewCache, PreviewError, render_preview
from tests.helpers.sites import Site, make_site

FORMATS = [("photo.jpg", "JPEG"), ("photo.png", "PNG"), ("photo.webp", "WEBP")]


def picture(width: int = 640, height: int = 480, seed: int = 1) -> Image.Image:
    """A busy picture: random noise (every pixel its own) under a few shapes and some text."""
    noise = Image.frombytes("RGB", (width, height), _random_bytes(width * height * 3, seed))
    draw = ImageDraw.Draw(noise)
    draw.rectangle((width // 8, height // 8, width // 2, height // 2), fill=(200, 30, 30))
    draw.text((20, height - 80), "SECRET 1234", fill=(255, 255, 255), font_size=48)
    return noise


def _random_bytes(n: int, seed: int) -> bytes:
    import random

    return random.Random(seed).randbytes(n)


def save(image: Image.Image, path: Path, fmt: str, **kwargs: Any) -> Path:
    image.save(path, fmt, **kwargs)
    return path


@pytest.fixture
def site(make_app: Callable[..., Flask], tmp_path: Path) -> Site:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, fmt in FORMATS:
        save(picture(), photos / name, fmt)
    (photos / "notes.png").write_text("these are notes, not a picture")
    (tmp_path / "secret.png").write_bytes((photos / "photo.png").read_bytes())
    site = make_site(make_app, PATRONLOCK_PREVIEW_CACHE_DIR=str(tmp_path / "previews"))
    site.ext.lock("premium", tier="Gold")

    @site.app.get("/photos/<path:name>")
    def photo(name: str) -> Any:
        return send_locked_file("premium", name, directory=photos)

    @site.app.get("/teasers/<path:name>")
    def teaser(name: str) -> Any:
        return send_image_preview("premium", name, directory=photos, size=240)

    site.linked_patron("gold")
    site.linked_patron("silver", entitled_cents=500, entitled_tier_ids=("t5",))
    return site


def cached(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "previews").rglob("*") if p.is_file())


def opened(response: Any) -> Image.Image:
    image = Image.open(io.BytesIO(response.get_data()))
    image.load()
    return image


# -- what a visitor gets ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "fmt"), FORMATS)
def test_a_visitor_below_the_lock_gets_a_blurred_preview(site: Site, tmp_path: Path, name: str, fmt: str) -> None:
    original = (tmp_path / "photos" / name).read_bytes()
    with site.get(f"/photos/{name}", "gold") as allowed:
        assert (allowed.status_code, allowed.get_data()) == (200, original)
    denied = site.get(f"/photos/{name}", "silver")
    assert denied.status_code == 403
    assert denied.mimetype == "image/jpeg" and denied.headers["Cache-Control"] == "private"
    preview = opened(denied)
    assert preview.format == "JPEG" and max(preview.size) == 480 and preview.size == (480, 360)
    assert denied.get_data() != original
    assert len(cached(tmp_path)) == 1
    anonymous = site.get(f"/photos/{name}")  # another next step ("sign in"), so another preview
    assert anonymous.status_code == 403 and opened(anonymous).size == (480, 360)
    assert anonymous.get_data() != denied.get_data()
    assert len(cached(tmp_path)) == 2


def test_a_preview_is_made_once_per_image_size_and_wording(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flask_patronlock.previews as previews

    made: list[str] = []
    real = previews.render_preview

    def counting(source: Any, **kwargs: Any) -> bytes:
        made.append(os.fspath(source))
        return real(source, **kwargs)

    monkeypatch.setattr(previews, "render_preview", counting)
    first = site.get("/photos/photo.png", "silver").get_data()
    assert site.get("/photos/photo.png", "silver").get_data() == first  # from the cache
    assert len(made) == 1
    teaser = site.get("/teasers/photo.png", "silver")  # another size: another preview
    assert teaser.status_code == 200 and opened(teaser).size == (240, 180)
    assert len(made) == 2
    # a changed image (new content, size and time): a new preview, never the old one
    path = tmp_path / "photos" / "photo.png"
    save(picture(seed=2), path, "PNG")
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    assert site.get("/photos/photo.png", "silver").get_data() != first
    assert len(made) == 3


def test_a_small_image_is_never_blown_up(site: Site, tmp_path: Path) -> None:
    save(picture(100, 50), tmp_path / "photos" / "small.png", "PNG")
    assert opened(site.get("/photos/small.png", "silver")).size == (100, 50)


def test_the_preview_is_turned_as_the_photo_is_shown(site: Site, tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to show
    save(picture(640, 480), tmp_path / "photos" / "turned.jpg", "JPEG", exif=exif)
    assert opened(site.get("/photos/turned.jpg", "silver")).size == (360, 480)


# -- it cannot give the picture back ----------------------------------------------------------------------------------


def _shuffled_within_blocks(image: Image.Image, block: int) -> Image.Image:
    """Every block x block square turned half a turn: other details everywhere, the same average in every square."""
    out = image.copy()
    for x in range(0, image.width, block):
        for y in range(0, image.height, block):
            box = (x, y, x + block, y + block)
            out.paste(image.crop(box).rotate(180), box)
    return out


def test_a_preview_holds_no_more_than_a_16_pixel_thumbnail(tmp_path: Path) -> None:
    """Two pictures whose 40 x 40 squares have the same averages (the 16 x 12 thumbnail of a 640 x 480 picture) but
    different details everywhere give the very same preview: no detail finer than a square is in it."""
    block = 640 // GRID
    a = picture()
    b = _shuffled_within_blocks(a, block)
    assert a.tobytes() != b.tobytes()
    assert a.resize((16, 12), Image.Resampling.BOX).tobytes() == b.resize((16, 12), Image.Resampling.BOX).tobytes()
    pa, pb = save(a, tmp_path / "a.png", "PNG"), save(b, tmp_path / "b.png", "PNG")
    words = {"size": 480, "label": "For patrons at Gold", "detail": "Join on Patreon"}
    assert render_preview(pa, **words) == render_preview(pb, **words)
    # ... while the squares' colours do show: a brighter picture gives another preview (the test can fail)
    brighter = save(a.point(lambda v: min(255, v + 60)), tmp_path / "c.png", "PNG")
    assert render_preview(brighter, **words) != render_preview(pa, **words)


def test_a_preview_is_smooth_and_small(tmp_path: Path) -> None:
    source = save(picture(2000, 1500), tmp_path / "big.png", "PNG")
    preview = Image.open(io.BytesIO(render_preview(source, size=480, label="For patrons")))
    assert preview.size == (480, 360)
    # above the padlock and words (the top fifth), neighbouring pixels differ by little; in the noisy original they
    # differ by a third of the range on average
    band = preview.convert("L").crop((0, 0, 480, 72))
    pixels = band.tobytes()
    steps = [abs(pixels[i] - pixels[i + 1]) for i in range(len(pixels) - 1) if (i + 1) % 480]
    assert max(steps) <= 6
    original = Image.open(source).convert("L").crop((0, 0, 2000, 300))
    raw = original.tobytes()
    assert sum(abs(raw[i] - raw[i + 1]) for i in range(2000 * 10)) / (2000 * 10) > 40


def test_no_metadata_of_the_original_is_carried(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif[0x8825] = {2: (51.0, 30.0, 0.0)}  # GPS latitude
    source = save(picture(), tmp_path / "tagged.jpg", "JPEG", exif=exif, comment=b"shot at home")
    data = render_preview(source, size=320, label="For patrons")
    preview = Image.open(io.BytesIO(data))
    assert not preview.getexif() and "comment" not in preview.info and "icc_profile" not in preview.info
    assert b"SecretCam" not in data and b"shot at home" not in data


# -- plain errors -----------------------------------------------------------------------------------------------------


def test_what_is_not_an_image_gets_the_placeholder_and_a_plain_reason(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="flask_patronlock.files"):
        response = site.get("/photos/notes.png", "silver")
    assert (response.status_code, response.mimetype) == (403, "image/svg+xml")
    assert "notes.png is not an image a preview can be made of (JPEG, PNG or WebP)" in caplog.text
    with pytest.raises(PreviewError, match=r"notes\.png is not an image"):  # an explicit preview says so to its caller
        site.get("/teasers/notes.png", "silver")


def test_other_images_get_the_placeholder_without_a_word(site: Site, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "photos" / "logo.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    picture(64, 48).save(tmp_path / "photos" / "anim.gif", "GIF")
    with caplog.at_level(logging.WARNING, logger="flask_patronlock.files"):
        for name in ("logo.svg", "anim.gif"):
            response = site.get(f"/photos/{name}", "silver")
            assert (response.status_code, response.mimetype) == (403, "image/svg+xml")
    assert caplog.text == "" and cached(tmp_path) == []


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: p.write_text("hello"), "is not an image a preview can be made of (JPEG, PNG or WebP)"),
        (lambda p: picture(64, 48).save(p, "GIF"), "is GIF; previews are made of JPEG, PNG and WebP images only"),
        (lambda p: p.write_bytes(_jpeg_bytes()[:400]), "could not be read as an image"),
        (lambda p: picture(400, 300).save(p, "PNG"), "has 400 x 300 pixels, more than the 100000 a preview is made"),
    ],
)
def test_render_preview_says_why_it_cannot(tmp_path: Path, make: Callable[[Path], Any], words: str) -> None:
    path = tmp_path / "file"
    make(path)
    with pytest.raises(PreviewError, match=words.replace("(", r"\(").replace(")", r"\)")):
        render_preview(path, size=200, label="For patrons", max_pixels=100_000)


def _jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    picture().save(buffer, "JPEG")
    return buffer.getvalue()


def test_a_bad_size_is_refused() -> None:
    with pytest.raises(ValueError, match="32 to 1600 pixels"):
        render_preview(io.BytesIO(_jpeg_bytes()), size=5000, label="x")


# -- where previews are kept ------------------------------------------------------------------------------------------


def test_no_path_from_the_url_reaches_the_disk(site: Site, tmp_path: Path) -> None:
    for path in ("/photos/../secret.png", "/photos/%2e%2e/secret.png", "/photos/..%2fsecret.png"):
        response = site.get(path, "silver")
        assert response.status_code in (403, 404)
        assert response.mimetype != "image/jpeg"  # no preview of a file outside the folder
    assert site.get("/teasers/..%2fsecret.png", "silver").status_code == 404
    assert site.get("/photos/missing.png", "silver").mimetype == "image/svg+xml"  # says nothing of what exists
    assert cached(tmp_path) == []
    site.get("/photos/photo.png", "silver")
    [stored] = cached(tmp_path)
    assert stored.parent.parent == tmp_path / "previews"
    assert len(stored.stem) == 64 and all(c in "0123456789abcdef" for c in stored.stem)  # a hash, never a name


def test_the_cache_stays_within_its_budget(tmp_path: Path) -> None:
    sources = [save(picture(320, 240, seed=i), tmp_path / f"{i}.png", "PNG") for i in range(6)]
    one = len(render_preview(sources[0], size=200, label="For patrons"))
    cache = PreviewCache(tmp_path / "cache", max_bytes=one * 3)
    for source in sources:
        cache.get(str(source), size=200, label="For patrons")
    files = cache.files()
    assert 1 <= len(files) <= 3 and sum(size for _, size, _ in files) <= one * 3
    newest = cache.key(str(sources[-1]), size=200, label="For patrons", detail="")
    assert any(newest in path for _, _, path in files)  # the least recently used went first
    if sys.platform != "win32":
        assert (os.stat(tmp_path / "cache").st_mode & 0o077) == 0  # the site's user's only


# -- configuration ----------------------------------------------------------------------------------------------------


def test_previews_can_be_switched_off(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    save(picture(), tmp_path / "photo.png", "PNG")
    site = make_site(make_app, PATRONLOCK_IMAGE_PREVIEWS=False)
    site.ext.lock("premium", tier="Gold")

    @site.app.get("/photo")
    def photo() -> Any:
        return send_locked_file("premium", tmp_path / "photo.png")

    assert site.get("/photo").mimetype == "image/svg+xml"


def test_asking_for_previews_without_pillow_fails_at_start_up(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ConfigurationError, match=r"need Pillow: pip install 'flask-patronlock\[images\]'"):
        make_app(PATRONLOCK_IMAGE_PREVIEWS=True)
    from flask_patronlock.previews import pillow_available

    assert not pillow_available()  # and by default (None) the placeholder is used then


def test_a_bad_preview_size_fails_at_start_up(make_app: Callable[..., Flask]) -> None:
    with pytest.raises(ConfigurationError, match="PATRONLOCK_PREVIEW_SIZE must be a number of pixels from 32 to 1600"):
        make_app(PATRONLOCK_IMAGE_PREVIEWS=True, PATRONLOCK_PREVIEW_SIZE=4000)
