"""What does a lock cost a page view? The same view, for an entitled patron, with ``@login_required`` alone and with
``@login_required`` + ``@locked("premium")``, served by Flask's test client in one process.

The site is realistic where it matters: a SQLite file, Flask-SQLAlchemy, a Flask-Login session cookie and a user
loader that reads the user from the database (as every host site does). The two variants are interleaved request by
request so drift (CPU frequency, caches, other processes) hits both alike; each variant's time is the median over
rounds of the per-round median request time. Prints those medians and, on its last line,
``ratio=<locked / plain>``; the target is <= 1.10.

Every locked request makes a real decision (``policy.decide`` with the current time, the ``access-decision`` filter
check, ``Cache-Control: private`` and ``Vary: Cookie``). The viewer's link and stored membership are read from the
database on the user's first request and then, as on a real site, from the worker's viewer cache, read again every
``PATRONLOCK_VIEWER_CACHE_SECONDS`` (2 s by default: one locked request in a couple of thousand here, so the medians
measure the cached steady state; ``--viewer-cache-seconds 0`` measures one query per request instead).

    python bench/gate_overhead.py [--rounds 20] [--requests 500] [--viewer-cache-seconds S]
"""

from __future__ import annotations

import argparse
import functools
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flask import Flask
from flask_login import LoginManager, UserMixin, login_required, login_user
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import insert
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flask_patronlock import PatronLock, locked
from flask_patronlock.patreon import MemberSnapshot, TierSnapshot
from flask_patronlock.state import get_state


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
patronlock = PatronLock(db=db)
patronlock.lock("premium", tier="Gold", description="Gold posts")


class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "bench_users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(default="")


PAGE = "<html><body><h1>Post</h1><p>" + "Lorem ipsum dolor sit amet. " * 40 + "</p></body></html>"


def build(path: Path, viewer_cache_seconds: float | None = None) -> Flask:
    app = Flask("gate_overhead")
    app.config.update(
        SECRET_KEY="bench",
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{path}",
        PATRONLOCK_CAMPAIGN_ID="c1",
    )
    if viewer_cache_seconds is not None:
        app.config["PATRONLOCK_VIEWER_CACHE_SECONDS"] = viewer_cache_seconds
    db.init_app(app)
    patronlock.init_app(app)
    manager = LoginManager(app)

    @manager.user_loader
    def load_user(user_id: str) -> User | None:
        return db.session.get(User, int(user_id))

    @app.route("/login")
    def login() -> str:
        login_user(db.session.get(User, 1))
        return "ok"

    @app.route("/plain")
    @login_required
    def plain() -> str:
        return PAGE

    @app.route("/locked")
    @login_required
    @locked("premium")
    def locked_view() -> str:
        return PAGE

    now = datetime.now(UTC)
    with app.app_context():
        db.create_all()
        db.session.add(User(id=1, name="Kopi"))
        db.session.commit()
        state = get_state()
        state.store.replace_tiers(
            "c1", [TierSnapshot(id="t5", title="Silver", amount_cents=500), TierSnapshot(id="t10", title="Gold",
                                                                                          amount_cents=1000)]
        )
        with state.store.engine.begin() as conn:
            conn.execute(insert(state.tables.accounts).values(user_id="1", patreon_user_id="p1", scope="identity"))
        state.store.apply(
            MemberSnapshot(
                member_id="m1", campaign_id="c1", user_id="p1", patron_status="active_patron",
                last_charge_status="Paid", last_charge_date=now - timedelta(days=3),
                next_charge_date=now + timedelta(days=27), entitled_cents=1000, entitled_tier_ids=("t10",),
                will_pay_cents=1000, lifetime_cents=3000, pledge_start=now - timedelta(days=90), pledge_cadence=1,
            ),
            source="sync", observed_at=now,
        )
    return app


def interleaved_medians(client: Any, paths: list[str], rounds: int, requests: int) -> dict[str, float]:
    """:func:`interleaved_calls` of ``client.get(path)`` for each of ``paths``, by path."""
    return interleaved_calls({path: functools.partial(client.get, path) for path in paths}, rounds, requests)


def interleaved_calls(
    calls: dict[str, Callable[[], Any]], rounds: int, requests: int, *, warm_up: int = 200
) -> dict[str, float]:
    """Each call's median over ``rounds`` of its median time (seconds) in that round, by name.

    After ``warm_up`` calls of each, the calls are interleaved one by one, their order rotated every request (plain,
    locked, locked, plain, ... for two), and each timed: drift and other processes on the machine hit every variant
    alike, and medians drop the calls that were preempted.
    """
    names = list(calls)
    for _ in range(warm_up):
        for name in names:
            calls[name]()
    per_round: dict[str, list[float]] = {name: [] for name in names}
    clock = time.perf_counter
    gc.disable()
    try:
        for i in range(rounds):
            samples: dict[str, list[float]] = {name: [] for name in names}
            for j in range(requests):
                shift = (i + j) % len(names)
                for name in names[shift:] + names[:shift]:
                    start = clock()
                    calls[name]()
                    samples[name].append(clock() - start)
            for name, values in samples.items():
                per_round[name].append(statistics.median(values))
            gc.collect()
    finally:
        gc.enable()
    return {name: statistics.median(values) for name, values in per_round.items()}


def run(rounds: int, requests: int, viewer_cache_seconds: float | None = None) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        app = build(Path(tmp) / "bench.db", viewer_cache_seconds)
        client = app.test_client()
        assert client.get("/login").status_code == 200
        viewers = app.extensions["patronlock"].viewers
        assert "1" not in viewers  # the user's first locked page reads the database
        for path in ("/plain", "/locked"):
            response = client.get(path)
            assert response.status_code == 200 and response.get_data(as_text=True) == PAGE, (path, response.status)
        assert ("1" in viewers) is (app.config["PATRONLOCK_VIEWER_CACHE_SECONDS"] > 0)
        locked_response = client.get("/locked")
        assert locked_response.headers["Cache-Control"] == "private" and locked_response.headers["Vary"] == "Cookie"
        medians = interleaved_medians(client, ["/plain", "/locked"], rounds, requests)
        with app.app_context():
            db.engine.dispose()
    plain, locked_ = medians["/plain"], medians["/locked"]
    ttl = app.config["PATRONLOCK_VIEWER_CACHE_SECONDS"]
    print(f"rounds={rounds} requests/round={requests} PATRONLOCK_VIEWER_CACHE_SECONDS={ttl}")
    print(f"login_required           median {plain * 1e6:8.1f} us/request")
    print(f"login_required + @locked median {locked_ * 1e6:8.1f} us/request  (+{(locked_ - plain) * 1e6:.1f} us)")
    ratio = locked_ / plain
    print(f"ratio={ratio:.3f}")
    return ratio


def rounds_parser(doc: str | None, *, requests: int) -> argparse.ArgumentParser:
    """The command line of an interleaved bench: ``--rounds`` (20) and ``--requests`` per round."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--requests", type=int, default=requests)
    return parser


def main() -> None:
    parser = rounds_parser(__doc__, requests=500)
    parser.add_argument("--viewer-cache-seconds", type=float, default=None,
                        help="PATRONLOCK_VIEWER_CACHE_SECONDS (default: the extension's default; 0: no viewer cache)")
    args = parser.parse_args()
    run(args.rounds, args.requests, args.viewer_cache_seconds)


if __name__ == "__main__":
    main()
