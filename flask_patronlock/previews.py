"""Blurred previews of locked images: what a visitor below a lock sees instead of the picture (Pillow; no Flask here).

:func:`render_preview` makes one: the image is first shrunk to at most :data:`GRID` pixels on its longer side (each
of those pixels the average of a block of the original), then scaled up to at most the asked size, blurred, dimmed,
and marked with a padlock and the tier's name. So a preview carries no more of the picture than a 16-pixel
thumbnail's colours: two images with the same block averages give the very same preview, and nothing finer than a
block can be recovered from it. No metadata of the original (EXIF, GPS, ICC profiles, comments) is copied.

:class:`PreviewCache` keeps the previews on disk, one file per image, size and label, named by a SHA-256 of the
image's real path, modification time and size with the size and label asked for (a changed image gets a new preview;
no name comes from the URL, so no path can be steered), within a byte budget (the least recently used go first).

The request side -- which file, which label, the response -- is :func:`flask_patronlock.files.send_image_preview`,
which :func:`~flask_patronlock.locks.send_locked_file` uses for a locked image (:data:`PATRONLOCK_IMAGE_PREVIEWS`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import tempfile
import warnings
from typing import Any, BinaryIO, Final

from .errors import ConfigurationError, PatronLockError

__all__ = [
    "FORMATS",
    "GRID",
    "MAX_SIZE",
    "MIN_SIZE",
    "PreviewCache",
    "PreviewError",
    "pillow_available",
    "render_preview",
]

log = logging.getLogger("flask_patronlock.previews")

#: the longer side, in pixels, of the thumbnail every preview is made from: the most a preview can tell of a picture.
GRID: Final = 16
#: the image formats a preview is made of (as Pillow names them).
FORMATS: Final = frozenset({"JPEG", "PNG", "WEBP"})
#: the smallest and largest preview sizes (the longer side, in pixels) :data:`PATRONLOCK_PREVIEW_SIZE` may ask for.
MIN_SIZE: Final = 32
MAX_SIZE: Final = 1600
#: bump when the drawing changes: previews cached by an earlier version are then made again.
_VERSION: Final = 1
_BACKGROUND: Final = (128, 128, 128)


class PreviewError(PatronLockError, ValueError):
    """A file no preview can be made of, said in plain words: not a JPEG, PNG or WebP image Pillow can read, or too
    many pixels."""


def pillow_available() -> bool:
    """Whether Pillow is installed (``pip install flask-patronlock[images]``)."""
    try:
        import PIL.Image  # noqa: F401
    except ImportError:
        return False
    return True


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise ConfigurationError(
            "blurred previews of locked images need Pillow: pip install 'flask-patronlock[images]' (or set "
            "PATRONLOCK_IMAGE_PREVIEWS = False for the padlock placeholder)"
        ) from None
    return Image


def render_preview(
    source: str | os.PathLike[str] | BinaryIO,
    *,
    size: int,
    label: str,
    detail: str = "",
    max_pixels: int = 50_000_000,
) -> bytes:
    """A blurred JPEG preview of the image ``source``, at most ``size`` pixels on its longer side (never larger than
    the image), with a padlock, ``label`` (e.g. "For patrons at Gold") and ``detail`` (a second, smaller line).

    :raises PreviewError: ``source`` is not a JPEG, PNG or WebP image Pillow can read, or has more than
        ``max_pixels`` pixels.
    :raises ValueError: ``size`` outside :data:`MIN_SIZE`..:data:`MAX_SIZE`.
    :raises ConfigurationError: Pillow is not installed.
    """
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"a preview's size is {MIN_SIZE} to {MAX_SIZE} pixels, not {size!r}")
    image_module = _pillow()
    from PIL import Image, UnidentifiedImageError

    name = os.fspath(source) if isinstance(source, str | os.PathLike) else "the image"
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = image_module.open(source)
        except (UnidentifiedImageError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise PreviewError(f"{name} is not an image a preview can be made of (JPEG, PNG or WebP): {exc}") from None
        except (OSError, SyntaxError) as exc:  # a header Pillow knows, cut short or corrupt
            raise PreviewError(f"{name} could not be read as an image: {exc}") from None
        try:
            return _render(image, size=size, label=label, detail=detail, max_pixels=max_pixels, name=name)
        except (OSError, SyntaxError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            # a truncated or corrupt file: Pillow reads the header, then fails on the pixels
            raise PreviewError(f"{name} could not be read as an image: {exc}") from None
        finally:
            image.close()


def _render(image: Any, *, size: int, label: str, detail: str, max_pixels: int, name: str) -> bytes:
    from PIL import Image, ImageFilter, ImageOps
    if image.format not in FORMATS:
        kind = image.format or "an unknown format"
        raise PreviewError(f"{name} is {kind}; previews are made of JPEG, PNG and WebP images only")
    width, height = image.size
    if width < 1 or height < 1 or width * height > max_pixels:
        raise PreviewError(
            f"{name} has {width} x {height} pixels, more than the {max_pixels} a preview is made of "
            "(PATRONLOCK_PREVIEW_MAX_PIXELS)"
        )
    target = min(size, max(width, height, GRID))  # the preview's longer side: never more than the image's
    if image.format == "JPEG":
        image.draft("RGB", (GRID * 8, GRID * 8))  # let the decoder scale down (1/2 .. 1/8): far less to decode
    image = ImageOps.exif_transpose(image)
    width, height = image.size  # as shown (turned by its EXIF orientation), perhaps decoded smaller
    image = _flatten(image, Image)
    longer = max(width, height)
    grid = (max(1, round(width * GRID / longer)), max(1, round(height * GRID / longer)))
    tiny = image.resize(grid, Image.Resampling.BOX)  # each pixel the average of one block: the information bound
    out = (max(1, round(width * target / longer)), max(1, round(height * target / longer)))
    preview = tiny.resize(out, Image.Resampling.BICUBIC)
    preview = preview.filter(ImageFilter.GaussianBlur(radius=max(out) / (GRID * 2)))
    preview = Image.blend(preview, Image.new("RGB", out, _BACKGROUND), 0.35)  # dimmed, so the label reads
    _mark(preview, label, detail)
    preview.info = {}  # Pillow carries the original's info (its JPEG comment, ICC profile ...) through: drop it all
    buffer = io.BytesIO()
    preview.save(buffer, "JPEG", quality=80, optimize=True)
    return buffer.getvalue()


def _flatten(image: Any, image_module: Any) -> Any:
    """RGB, with any transparency laid over the neutral background."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        base = image_module.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        base.alpha_composite(rgba)
        return base.convert("RGB")
    return image.convert("RGB")


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def _mark(preview: Any, label: str, detail: str) -> None:
    """Draw the padlock and the words, centred."""
    from PIL import ImageDraw

    width, height = preview.size
    short = min(width, height)
    draw = ImageDraw.Draw(preview)
    ink, paper = (255, 255, 255), (40, 40, 40)
    # the padlock: a body and a shackle, about a fifth of the shorter side
    body = max(8, short // 5)
    cx = width // 2
    lines = [(label, max(10, short // 14)), (detail, max(9, short // 20))]
    fonts = [(text, _fit(draw, text, points, width)) for text, points in lines if text]
    text_height = sum(_box(draw, text, font)[1] + 4 for text, font in fonts)
    top = max(2, (height - (body + body // 2 + 6 + text_height)) // 2)
    shackle = body // 2
    draw.rounded_rectangle((cx - body // 2, top + shackle, cx + body // 2, top + shackle + body * 4 // 5),
                           radius=max(1, body // 8), fill=ink)
    draw.arc((cx - body // 3, top, cx + body // 3, top + shackle * 2), 180, 360, fill=ink, width=max(2, body // 8))
    y = top + shackle + body * 4 // 5 + 6
    for text, font in fonts:
        w, h = _box(draw, text, font)
        x = (width - w) // 2
        draw.rectangle((x - 4, y - 2, x + w + 4, y + h + 2), fill=paper)
        draw.text((x, y), text, font=font, fill=ink, anchor="lt")
        y += h + 4


def _box(draw: Any, text: str, font: Any) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font, anchor="lt")
    return int(right - left), int(bottom - top)


def _fit(draw: Any, text: str, points: int, width: int) -> Any:
    """The largest font of at most ``points`` in which ``text`` fits the width (or the smallest tried)."""
    font = _font(points)
    while points > 8 and _box(draw, text, font)[0] > width - 12:
        points -= 2
        font = _font(points)
    return font


class PreviewCache:
    """Previews on disk, one per image, size and label, within ``max_bytes`` (least recently used go first).

    :param directory: where the files go (made on first use, readable by this user only).
    :param max_bytes: the budget; after a write that passes it, files are removed, least recently used first, until
        the cache is under nine tenths of it.
    """

    def __init__(self, directory: str | os.PathLike[str], *, max_bytes: int) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ConfigurationError(f"PATRONLOCK_PREVIEW_CACHE_MAX_BYTES must be a positive number, not {max_bytes!r}")
        self.directory = os.fspath(directory)
        self.max_bytes = max_bytes

    def key(self, real_path: str, *, size: int, label: str, detail: str) -> str:
        """The cache key of one preview: the image by real path, modification time and size; the preview's size and
        words; the drawing's version."""
        stat = os.stat(real_path)
        parts = [str(_VERSION), real_path, str(stat.st_mtime_ns), str(stat.st_size), str(size), label, detail]
        return hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()

    def _path(self, key: str) -> str:
        return os.path.join(self.directory, key[:2], key + ".jpg")

    def get(self, real_path: str, *, size: int, label: str, detail: str = "", max_pixels: int = 50_000_000) -> bytes:
        """The preview of the image at ``real_path`` (a resolved path: the caller confines it), made and stored on
        first use.

        :raises PreviewError: it is not an image a preview can be made of.
        :raises FileNotFoundError: there is no such file.
        """
        key = self.key(real_path, size=size, label=label, detail=detail)
        path = self._path(key)
        try:
            with open(path, "rb") as cached:
                data = cached.read()
            os.utime(path)  # recently used: kept longest
            return data
        except FileNotFoundError:
            pass
        data = render_preview(real_path, size=size, label=label, detail=detail, max_pixels=max_pixels)
        self._store(path, data)
        return data

    def _store(self, path: str, data: bytes) -> None:
        folder = os.path.dirname(path)
        os.makedirs(self.directory, mode=0o700, exist_ok=True)  # (makedirs gives the mode to the last folder only)
        os.makedirs(folder, mode=0o700, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".jpg")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.replace(temporary, path)  # whole or not at all, whatever another worker does meanwhile
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        self.prune()

    def files(self) -> list[tuple[float, int, str]]:
        """Every cached preview as ``(last used, bytes, path)``."""
        found = []
        try:
            folders = list(os.scandir(self.directory))
        except FileNotFoundError:
            return []
        for folder in folders:
            if not folder.is_dir(follow_symlinks=False):
                continue
            for entry in os.scandir(folder.path):
                if entry.name.endswith(".jpg") and not entry.name.startswith(".") and entry.is_file(
                    follow_symlinks=False
                ):
                    try:
                        stat = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    found.append((stat.st_mtime, stat.st_size, entry.path))
        return found

    def prune(self) -> int:
        """Keep the cache within its budget; how many files were removed. (Two workers pruning at once remove a few
        files more than needed, never a file being written: that is renamed into place whole.)"""
        found = self.files()
        total = sum(size for _, size, _ in found)
        if total <= self.max_bytes:
            return 0
        removed = 0
        target = self.max_bytes * 9 // 10
        for _, size, path in sorted(found):
            if total <= target:
                break
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            total -= size
            removed += 1
        log.info("preview cache: removed %d file(s) to stay within %d bytes", removed, self.max_bytes)
        return removed
