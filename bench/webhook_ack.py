"""Benchmark: webhook acknowledgement under load, against a bare Flask route on the same gunicorn server.

gunicorn serves one app on 127.0.0.1 with 2 workers (gthread, 4 threads each): ``POST /bare`` reads the body and
answers 200; ``POST /patreon/webhook`` is flask-patronlock's route (verify, dedupe, store -- in SQLite by default --
hand to the worker thread, answer). A Patreon sandbox (its own process) answers the re-fetches the processing makes.

32 concurrent senders post the same number of requests to each route (bounded). Every member's signed webhook is
sent twice (the second must be recognised as a duplicate). Prints requests/s of both routes and their ratio (target
>= 0.5), the p99 acknowledgement latency of the webhook route (target <= 50 ms), and, once processing has drained,
the deliveries still queued (stored, waiting for Patreon's rate limit: each re-fetches its member, and an access
token gets 100 requests a minute, so 4,000 members take 40 minutes to drain; ``BENCH_DRAIN_SECONDS``, default 180,
is how long the script waits; a delivery waiting to retry counts as queued), lost ones (acknowledged but never
stored, or ended failed or ignored) and double-applied ones (processed more than once, or stored twice). The last
line is ``ratio=<x>``.

``BENCH_DB_URL=postgresql+psycopg://...`` measures on PostgreSQL instead (in a schema of its own, dropped afterwards);
``BENCH_MEMBERS`` sets the number of members (default 4,000: 8,000 webhook requests, enough to steady the ratio on a
shared machine); ``BENCH_NO_PROCESSING=1`` measures the acknowledgement alone.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SENDERS = 32
MEMBERS = int(os.environ.get("BENCH_MEMBERS", "4000"))  # webhook requests = 2 x MEMBERS (each sent twice)
DRAIN_SECONDS = float(os.environ.get("BENCH_DRAIN_SECONDS", "180"))  # how long processing may drain afterwards


def create_app() -> Any:
    """The app gunicorn serves (configured from BENCH_* environment variables)."""
    from flask import Flask, request
    from flask_sqlalchemy import SQLAlchemy
    from sqlalchemy import event

    from flask_patronlock import PatronLock
    from flask_patronlock.sandbox import config_from_credentials

    creds = json.loads(os.environ["BENCH_CREDS"])
    app = Flask("bench_webhook_ack")
    app.config.update(
        config_from_credentials(creds),
        SQLALCHEMY_DATABASE_URI=os.environ["BENCH_DB"],
        PATRONLOCK_SCHEDULER=False,
    )
    db = SQLAlchemy()
    db.init_app(app)
    PatronLock(app, db=db)
    with app.app_context():  # what docs/deploying.rst recommends for SQLite with several workers
        if db.engine.dialect.name == "sqlite":
            event.listen(db.engine, "connect", _sqlite_pragmas)

    if os.environ.get("BENCH_NO_PROCESSING"):  # diagnostics: measure the acknowledgement alone
        app.extensions["patronlock"].jobs.submit_webhook = lambda delivery_id: None

    @app.post("/bare")
    def bare() -> tuple[str, int]:
        request.get_data()
        return "ok\n", 200

    return app


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on port {port}")


def fire(port: int, requests_: list[tuple[str, bytes, dict[str, str]]]) -> tuple[float, list[float], list[int]]:
    """Send ``requests_`` from SENDERS threads with keep-alive connections; (seconds, latencies, statuses)."""
    latencies: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()
    chunks = [requests_[i::SENDERS] for i in range(SENDERS)]
    barrier = threading.Barrier(SENDERS + 1)

    def sender(chunk: list[tuple[str, bytes, dict[str, str]]]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[tuple[float, int]] = []
        barrier.wait()
        for path, body, headers in chunk:
            started = time.perf_counter()
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            mine.append((time.perf_counter() - started, response.status))
        conn.close()
        with lock:
            for latency, status in mine:
                latencies.append(latency)
                statuses.append(status)

    threads = [threading.Thread(target=sender, args=(c,)) for c in chunks]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - started, latencies, statuses


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def main() -> int:
    from sqlalchemy import create_engine, text

    from flask_patronlock.patreon.signatures import sign

    path = os.pathsep.join([str(ROOT), str(ROOT / "bench"), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path)
    sandbox = subprocess.Popen(
        [sys.executable, "-m", "flask_patronlock.sandbox", "--port", "0", "--members", str(MEMBERS),
         "--no-webhook-worker", "--seed", "11"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )
    assert sandbox.stdout is not None
    creds = json.loads(sandbox.stdout.readline())
    server = None
    schema: str | None = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            db_url, schema = _database(tmp)
            env.update(BENCH_CREDS=json.dumps(creds), BENCH_DB=db_url)
            # create the tables once, before the workers start
            subprocess.run([sys.executable, "-c", "import webhook_ack as w; a = w.create_app(); "
                            "a.app_context().push(); a.extensions['sqlalchemy'].create_all()"],
                           env=env, check=True, cwd=str(ROOT / "bench"))
            port = free_port()
            server = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "-w", "2", "-k", "gthread",
                 "--threads", "4", "--log-level", "warning", "webhook_ack:create_app()"],
                env=env, cwd=str(ROOT / "bench"),
            )
            wait_for(port)
            bodies = _member_bodies(creds)
            secret = creds["webhook_secret"]
            hooks = [
                ("/patreon/webhook", body, {"Content-Type": "application/json", "X-Patreon-Event": "members:update",
                                            "X-Patreon-Signature": sign(body, secret)})
                for body in bodies
            ]
            webhook_requests = hooks + hooks  # every delivery twice: the second is a duplicate
            bare_requests = [("/bare", body, {"Content-Type": "application/json"}) for _, body, _ in webhook_requests]
            fire(port, bare_requests[:200])  # warm both workers' connections and imports
            bare_time, bare_latencies, bare_statuses = fire(port, bare_requests)
            hook_time, latencies, hook_statuses = fire(port, webhook_requests)
            engine = create_engine(db_url)
            with engine.connect() as conn:
                during = conn.execute(text(
                    "SELECT count(*) FROM patronlock_webhook_deliveries WHERE status = 'done'")).scalar_one()
            bare_rps, hook_rps = len(bare_requests) / bare_time, len(webhook_requests) / hook_time
            bad = sum(1 for s in [*bare_statuses, *hook_statuses] if s != 200)
            # let the workers' threads drain the processing (each delivery re-fetches its member: Patreon allows an
            # access token 100 requests a minute, so more than a few hundred members take longer than this)
            deadline = time.monotonic() + DRAIN_SECONDS
            rows: list[Any] = []
            while time.monotonic() < deadline:
                with engine.connect() as conn:
                    rows = conn.execute(text("SELECT status, attempts FROM patronlock_webhook_deliveries")).all()
                if len(rows) >= len(hooks) and all(r.status == "done" for r in rows):
                    break
                time.sleep(0.5)
            with engine.connect() as conn:
                patrons = conn.execute(text("SELECT count(*) FROM patronlock_patrons")).scalar_one()
                audit = conn.execute(text(
                    "SELECT count(*) FROM patronlock_events WHERE source = 'webhook'")).scalar_one()
            engine.dispose()
            # queued: stored, not processed yet (pending, or waiting to retry after the token's rate limit when the
            # drain window closed); lost: acknowledged but never stored, or ended without being applied (failed,
            # ignored: every delivery here is a valid member of the campaign)
            queued = sum(1 for r in rows if r.status in ("pending", "processing", "retry"))
            lost = max(0, len(hooks) - len(rows)) + sum(1 for r in rows if r.status not in ("done", "pending",
                                                                                              "processing", "retry"))
            double = sum(1 for r in rows if r.attempts > 1) + max(0, len(rows) - len(hooks)) + max(0, audit - patrons)
            print(f"requests per route={len(webhook_requests)} senders={SENDERS} non-200={bad}")
            print(f"bare: {bare_rps:,.0f} req/s; webhook: {hook_rps:,.0f} req/s")
            median = sorted(latencies)[len(latencies) // 2]
            print(f"p99_ack_ms={p99(latencies) * 1000:.1f} (median {median * 1000:.1f}; the bare route's p99 "
                  f"{p99(bare_latencies) * 1000:.1f})")
            print(f"deliveries stored={len(rows)} of {len(hooks)} unique; patrons applied={patrons}")
            print(f"processed while the senders were sending: {during}")
            print(f"queued={queued} after {DRAIN_SECONDS:.0f} s of draining (a token gets 100 re-fetches a minute)")
            print(f"lost={lost} double_applied={double}")
            print(f"ratio={hook_rps / bare_rps:.2f}")
    finally:
        if server is not None:
            server.terminate()
            server.wait(15)
        sandbox.terminate()
        sandbox.wait(15)
        if schema is not None:
            _drop_schema(schema)
    return 0


def _database(tmp: str) -> tuple[str, str | None]:
    """The database URL to measure on: SQLite in ``tmp``, or ``BENCH_DB_URL`` (PostgreSQL, as deployed), where the
    run gets a schema of its own that is dropped afterwards (nothing is left in the database's own tables)."""
    from sqlalchemy import create_engine, text

    url = os.environ.get("BENCH_DB_URL")
    if not url:
        return f"sqlite:///{Path(tmp) / 'ack.db'}", None
    if not url.startswith("postgresql"):
        raise SystemExit("BENCH_DB_URL: only PostgreSQL URLs are supported (SQLite is the default)")
    schema = f"patronlock_bench_{os.getpid()}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}", schema


def _drop_schema(schema: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(os.environ["BENCH_DB_URL"])
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


def _member_bodies(creds: dict[str, Any]) -> list[bytes]:
    """Each member's document as Patreon would send it in a webhook (the API's single-member document)."""
    from flask_patronlock.patreon.client import PatreonClient
    from flask_patronlock.patreon.ratelimit import RateLimiter

    client = PatreonClient(access_token=creds["creator_access_token"], api_base=creds["api_base"],
                           rate_limiter=RateLimiter(max_calls=100_000, period=1.0))
    bodies = []
    with client:
        for page in client.iter_member_pages(creds["campaign_id"]):
            for member in page.members:
                doc = {
                    "data": {"type": "member", "id": member.member_id,
                             "attributes": {"patron_status": member.patron_status,
                                            "currently_entitled_amount_cents": member.entitled_cents,
                                            "full_name": member.full_name},
                             "relationships": {"campaign": {"data": {"type": "campaign",
                                                                     "id": creds["campaign_id"]}}}},
                    "included": [],
                }
                bodies.append(json.dumps(doc).encode())
    return bodies


if __name__ == "__main__":
    sys.exit(main())
