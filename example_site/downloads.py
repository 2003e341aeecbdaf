"""The example's locked files: the folder they live in (``PATRONLOCK_FILE_ROOT``, beside the database), the
wallpaper copied there, a large archive generated there when first asked for (never committed), and the downloads
page, which hands the archive out through a short-lived signed link and says how a real site lets nginx send it."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from pathlib import Path
from typing import Any

from flask import Flask, render_template
from sqlalchemy.engine import make_url

from flask_patronlock import send_locked_file

__all__ = ["LARGE_FILE", "WALLPAPER", "files_folder", "init_downloads", "large_file", "prepare_files"]

HERE = Path(__file__).resolve().parent
#: the committed small file, and the generated large one.
WALLPAPER = "wallpaper.svg"
LARGE_FILE = "studio-archive.bin"
#: the lock both downloads are behind (declared in app.py: Bronze and up).
LOCK = "downloads"
_MIB = 1024 * 1024


def files_folder(app: Flask) -> Path:
    """``PATRONLOCK_FILE_ROOT`` when set, else ``example-files`` beside the SQLite database (else in the instance
    folder)."""
    if app.config.get("PATRONLOCK_FILE_ROOT"):
        return Path(app.root_path, app.config["PATRONLOCK_FILE_ROOT"]).resolve()
    url = make_url(app.config["SQLALCHEMY_DATABASE_URI"])
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).resolve().parent / "example-files"
    return Path(app.instance_path) / "example-files"


def _filler() -> bytes:
    """One MiB of bytes that do not compress (so the file is as big on the wire as on disk)."""
    return b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(_MIB // 32))


def _make_large_file(path: Path, size: int) -> None:
    """Write ``size`` bytes to ``path`` (through a temporary file, so nobody is ever sent half of it)."""
    header = (b"Kopi's Studio demo archive. The flask-patronlock example site made this file to show a large locked "
              b"download; it holds nothing else.\n")  # fmt: skip
    block = _filler()
    draft = path.with_name(f".{path.name}.{os.getpid()}.part")
    with draft.open("wb") as out:
        out.write(header[:size])
        left = size - min(len(header), size)
        while left > 0:
            out.write(block[:left])
            left -= min(len(block), left)
    os.replace(draft, path)


def prepare_files(app: Flask) -> Path:
    """Make the files folder, copy the wallpaper in, and point ``PATRONLOCK_FILE_ROOT`` at the folder."""
    folder = files_folder(app)
    folder.mkdir(parents=True, exist_ok=True)
    wallpaper = folder / WALLPAPER
    source = HERE / "files" / WALLPAPER
    if not wallpaper.exists() or wallpaper.read_bytes() != source.read_bytes():
        shutil.copyfile(source, wallpaper)
    app.config["PATRONLOCK_FILE_ROOT"] = str(folder)
    return folder


_making = threading.Lock()


def large_file(app: Flask, folder: Path) -> Path:
    """The large archive, generated the first time it is asked for (``EXAMPLE_LARGE_FILE_MB``, default 64) and
    again only if its size setting changed."""
    size = int(float(app.config.get("EXAMPLE_LARGE_FILE_MB", 64)) * _MIB)
    path = folder / LARGE_FILE
    with _making:
        if not path.exists() or path.stat().st_size != size:
            _make_large_file(path, size)
    return path


def _size_in_words(size: int) -> str:
    if size >= _MIB:
        return f"{size / _MIB:.0f} MB"
    return f"{max(1, round(size / 1024))} KB"


def init_downloads(app: Flask) -> None:
    """The downloads page and the wallpaper's own URL (through the lock, sent by Python or the front server)."""
    folder = prepare_files(app)

    @app.get("/downloads")
    def downloads() -> str:
        return render_template(
            "downloads.html",
            lock=LOCK,
            wallpaper=WALLPAPER,
            large=LARGE_FILE,
            large_size=_size_in_words(large_file(app, folder).stat().st_size),
            folder=folder,
            delivery=app.config.get("PATRONLOCK_FILE_DELIVERY") or "python",
            link_minutes=round(float(app.config.get("PATRONLOCK_FILE_URL_SECONDS") or 300) / 60),
        )

    @app.get("/downloads/<path:name>")
    def download(name: str) -> Any:
        return send_locked_file(LOCK, name, directory=folder)
