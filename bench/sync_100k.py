"""Benchmark: a full reconcile run over 100,000 sandbox members on SQLite, against the fetch+parse floor.

The sandbox runs as its own process (``python -m flask_patronlock.sandbox``) serving API v2 on loopback, so the peak
RSS printed is this process's alone: the run, its client and SQLite. Steps:

1. warm the sandbox (it renders member documents once and caches them), then time the floor with
   ``bench/fetch_floor.py``'s ``measure_floor``: paging the same 100,000 members through the client and parsing
   them, nothing stored;
2. time a first run into an empty SQLite database in a temporary directory (100,000 rows created);
3. time a second, unchanged run (it must write 0 member rows).

Prints the run time divided by the floor (target <= 1.5), API requests of the run (target <= 100 member pages),
peak RSS (target <= 256 MB) and the rows the second run wrote (target 0). The last line is ``ratio=<x>``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from fetch_floor import client_for, measure_floor  # noqa: E402

MEMBERS = int(os.environ.get("BENCH_MEMBERS", "100000"))


def start_sandbox(members: int) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-m", "flask_patronlock.sandbox", "--port", "0", "--members", str(members),
         "--no-webhook-worker", "--seed", "7"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise SystemExit("the sandbox did not start")
    return proc, json.loads(line)


def _sandbox_view(creds: dict[str, Any]) -> Any:
    """What bench/fetch_floor.py's functions read from a Sandbox, for the sandbox served by another process."""
    return SimpleNamespace(
        url=creds["api_base"],
        client_id=creds["client_id"],
        client_secret=creds["client_secret"],
        creator_access_token=creds["creator_access_token"],
        campaign=SimpleNamespace(id=creds["campaign_id"]),
    )


def make_client(creds: dict[str, Any]) -> Any:
    """The same client as the floor's (bench/fetch_floor.py), so the two are measured alike."""
    return client_for(_sandbox_view(creds))


def fetch_floor(creds: dict[str, Any]) -> tuple[float, int, int]:
    """bench/fetch_floor.py's measurement: seconds to page and parse every member, members seen, requests made."""
    floor = measure_floor(_sandbox_view(creds))
    return floor.seconds, floor.members, floor.requests


def make_app(db_path: Path, creds: dict[str, Any]) -> Any:
    from flask import Flask
    from flask_sqlalchemy import SQLAlchemy

    from flask_patronlock import PatronLock

    app = Flask("bench_sync")
    app.config.update(
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{db_path}",
        PATRONLOCK_CLIENT_ID=creds["client_id"],
        PATRONLOCK_CLIENT_SECRET=creds["client_secret"],
        PATRONLOCK_CREATOR_ACCESS_TOKEN=creds["creator_access_token"],
        PATRONLOCK_CAMPAIGN_ID=creds["campaign_id"],
        PATRONLOCK_API_BASE_URL=creds["api_base"],
        PATRONLOCK_OAUTH_BASE_URL=creds["oauth_base"],
        PATRONLOCK_SCHEDULER=False,
        PATRONLOCK_JOBS="inline",
    )
    db = SQLAlchemy()
    db.init_app(app)
    PatronLock(app, db=db)
    with app.app_context():
        db.create_all()
    return app


def timed_run(app: Any, creds: dict[str, Any]) -> tuple[float, Any]:
    from flask_patronlock.sync import run_sync

    with make_client(creds) as client, app.app_context():
        started = time.perf_counter()
        result = run_sync(app, client=client, trigger="bench")
        return time.perf_counter() - started, result


def main() -> int:
    proc, creds = start_sandbox(MEMBERS)
    try:
        warm, seen, _ = fetch_floor(creds)  # the sandbox renders and caches every document once
        floor, seen, floor_requests = fetch_floor(creds)
        print(f"members={seen} floor(fetch+parse)={floor:.2f}s ({seen / floor:,.0f} members/s; warm-up {warm:.2f}s)")
        with tempfile.TemporaryDirectory() as tmp:
            app = make_app(Path(tmp) / "bench.db", creds)
            first_time, first = timed_run(app, creds)
            print(
                f"run 1: {first_time:.2f}s status={first.status} changed={first.changed} "
                f"api_requests={first.detail['api_requests']} ({first.pages} member pages + 1 campaign with tiers; "
                f"the floor made {floor_requests})"
            )
            second_time, second = timed_run(app, creds)
            print(
                f"run 2 (unchanged): {second_time:.2f}s status={second.status} member_rows_written={second.changed} "
                f"ratio={second_time / floor:.2f}"
            )
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak_rss={peak_mb:.0f}MB (this process: run, client, SQLite; the sandbox is another process)")
        print(f"api_requests={first.pages} member pages (+1 campaign) rows_written_second_run={second.changed}")
        print(f"ratio={first_time / floor:.2f}")
    finally:
        proc.terminate()
        proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
