"""What does recording the banners shown (:mod:`flask_patronlock.insight`) cost a denied page view?

The site of ``bench/gate_overhead.py`` (a SQLite file, Flask-SQLAlchemy, Flask-Login, a Gold patron) with a view
locked to a lock the patron cannot open: every request renders the locked page with its banner. Interleaved request
by request, the same request with :data:`PATRONLOCK_INSIGHT_RECORD` off and on. With it on, the first request of the
day queues one row (a timer writes it); every later one finds it in the worker's set of what it recorded today.
Prints the medians and, on its last line, ``ratio=<on / off>`` (expected ~1.0: a page view never writes).

    python bench/banner_views.py [--rounds 20] [--requests 300]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flask_login import login_required
from sqlalchemy import func, select

from bench.gate_overhead import build, interleaved_calls, patronlock, rounds_parser
from flask_patronlock import locked
from flask_patronlock.insight import flush_banner_views
from flask_patronlock.state import get_state

patronlock.lock("platinum", min_cents=5000, description="Above every tier the bench patron has")


def run(rounds: int, requests: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        app = build(Path(tmp) / "bench.db")

        @app.route("/denied")
        @login_required
        @locked("platinum")
        def denied() -> str:  # pragma: no cover - never reached: the patron is below the lock
            return "never"

        client = app.test_client()
        assert client.get("/login").status_code == 200
        assert client.get("/denied").status_code == 403

        def call(record: bool) -> Any:
            app.config["PATRONLOCK_INSIGHT_RECORD"] = record
            return client.get("/denied")

        medians = interleaved_calls({"off": lambda: call(False), "on": lambda: call(True)}, rounds, requests)
        with app.app_context():
            state = get_state()
            flush_banner_views(state)
            table = state.tables.banner_views
            with state.store.engine.connect() as conn:
                rows = conn.execute(select(func.count()).select_from(table)).scalar_one()
            state.store.engine.dispose()
    off, on = medians["off"], medians["on"]
    print(f"rounds={rounds} requests/round={requests} banner-view rows written={rows}")
    print(f"denied page, recording off median {off * 1e6:8.1f} us/request")
    print(f"denied page, recording on  median {on * 1e6:8.1f} us/request  ({(on - off) * 1e6:+.1f} us)")
    ratio = on / off
    print(f"ratio={ratio:.3f}")
    return ratio


def main() -> None:
    args = rounds_parser(__doc__, requests=300).parse_args()
    run(args.rounds, args.requests)


if __name__ == "__main__":
    main()
