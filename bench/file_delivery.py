"""What does fast file delivery cost the app? Three requests of an entitled, signed-in patron, against the site of
``bench/gate_overhead.py`` (SQLite, Flask-SQLAlchemy, a Flask-Login session whose user loader reads the database):

* ``plain``: a ``@login_required`` view returning a page;
* ``accel``: ``send_locked_file("premium", ...)`` of a 200 MB file answered with ``X-Accel-Redirect`` (the lock is
  decided, the file is left to nginx);
* ``signed``: a signed download link (``locked_file_url``) checked by the built-in endpoint, which also answers with
  ``X-Accel-Redirect``: no lock decision, no database, the session only compared.

Interleaved request by request, medians of per-round medians, as ``gate_overhead.py`` measures. Prints the medians and,
on its last two lines, ``ratio_accel=<accel / plain>`` and ``ratio_signed=<signed / plain>``.

    python bench/file_delivery.py [--rounds 20] [--requests 300]
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.gate_overhead import (  # the same site, so the three ratios compare alike
    PAGE,
    build,
    db,
    interleaved_medians,
    rounds_parser,
)
from flask_patronlock import locked_file_url, send_locked_file

BIG = 200 * 1024 * 1024


def run(rounds: int, requests: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "files"
        root.mkdir()
        with (root / "album.zip").open("wb") as big:
            big.truncate(BIG)  # sparse: the app never reads it, nginx would
        app = build(Path(tmp) / "bench.db")
        app.config.update(PATRONLOCK_FILE_DELIVERY="x-accel-redirect", PATRONLOCK_FILE_ROOT=str(root),
                          PATRONLOCK_FILE_URL_SECONDS=3600)

        @app.route("/files/<path:name>")
        def download(name: str) -> object:
            return send_locked_file("premium", name, directory=root)

        @app.route("/link")
        def link() -> str:
            return locked_file_url("premium", "album.zip")

        client = app.test_client()
        assert client.get("/login").status_code == 200
        signed = client.get("/link").get_data(as_text=True)
        paths = {"plain": "/plain", "accel": "/files/album.zip", "signed": signed}
        for name, path in paths.items():
            response = client.get(path)
            assert response.status_code == 200, (name, response.status)
            if name == "plain":
                assert response.get_data(as_text=True) == PAGE
            else:
                assert response.headers["X-Accel-Redirect"] == "/_patronlock_files/album.zip" and not response.data
        timed = interleaved_medians(client, list(paths.values()), rounds, requests)
        median = {name: timed[path] for name, path in paths.items()}
        with app.app_context():
            db.engine.dispose()
    print(f"rounds={rounds} requests/round={requests} file={BIG >> 20} MB (sparse) pid={os.getpid()}")
    print(f"plain  (@login_required page)            median {median['plain'] * 1e6:8.1f} us/request")
    print(f"accel  (send_locked_file, X-Accel)       median {median['accel'] * 1e6:8.1f} us/request")
    print(f"signed (signed link checked, X-Accel)    median {median['signed'] * 1e6:8.1f} us/request")
    accel, signed_ = median["accel"] / median["plain"], median["signed"] / median["plain"]
    print(f"ratio_accel={accel:.3f}")
    print(f"ratio_signed={signed_:.3f}")
    return accel, signed_


def main() -> None:
    args = rounds_parser(__doc__, requests=300).parse_args()
    run(args.rounds, args.requests)


if __name__ == "__main__":
    main()
