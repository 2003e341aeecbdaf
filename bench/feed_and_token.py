"""What do a private feed request and an entitlement token check cost, against a plain view?

One site (as in ``bench/gate_overhead.py``: a SQLite file, Flask-SQLAlchemy, Flask-Login with a user loader reading
the database, an entitled Gold patron), served by Flask's test client in one process. Interleaved request by request:

* ``plain``: ``@login_required`` with the session cookie, returning a page;
* ``feed``: the same page from a ``@feed_view`` endpoint fetched with no cookie, by its feed token (the token's row
  found by hash, the request counted against the rate limit and its address recorded: one write transaction), plus a
  ``can_view("premium")`` decision for the feed's patron;
* ``token``: a view that checks an ``Authorization: Bearer`` entitlement token for ``premium`` with
  :func:`~flask_patronlock.entitlement_tokens.check_entitlement_token` (no database) and returns the page.

Each variant's time is the median over rounds of the per-round median request time. Prints the medians and, on its
last two lines, ``feed_ratio=<feed / plain>`` and ``token_ratio=<token / plain>``.

    python bench/feed_and_token.py [--rounds 20] [--requests 300]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flask import abort, request
from flask_login import login_required

from bench.gate_overhead import PAGE, build, interleaved_calls, rounds_parser
from flask_patronlock import can_view
from flask_patronlock.entitlement_tokens import EntitlementTokenError, check_entitlement_token
from flask_patronlock.entitlements import entitlement_keys
from flask_patronlock.feeds import feed_view, get_feed_tokens
from flask_patronlock.state import get_state

KEY = "bench-entitlement-key-" + "x" * 32


def run(rounds: int, requests: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        app = build(Path(tmp) / "bench.db")
        app.config.update(
            PATRONLOCK_ENTITLEMENT_KEYS={"bench": KEY}, PATRONLOCK_FEED_RATE_LIMIT=10**9, PATRONLOCK_SCHEDULER=False
        )
        keys = entitlement_keys(app)

        @app.route("/plain-page")
        @login_required
        def plain_page() -> str:
            return PAGE

        @app.route("/feed/<feed_token>/page")
        @feed_view
        def feed_page() -> str:
            return PAGE if can_view("premium") else "locked"

        @app.route("/api/page")
        def token_page() -> str:
            bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
            try:
                check_entitlement_token(bearer, "premium", key=keys)
            except EntitlementTokenError:
                abort(403)
            return PAGE

        client = app.test_client()
        assert client.get("/login").status_code == 200
        with app.app_context():
            feed_token = get_feed_tokens(get_state(app)).token_for("1")
        token = client.get("/patreon/entitlement-token").json["token"]
        anonymous = app.test_client()
        paths = {
            "plain": lambda: client.get("/plain-page"),
            "feed": lambda: anonymous.get(f"/feed/{feed_token}/page"),
            "token": lambda: anonymous.get("/api/page", headers={"Authorization": f"Bearer {token}"}),
        }
        for name, call in paths.items():
            response = call()
            assert response.status_code == 200 and response.get_data(as_text=True) == PAGE, (name, response.status)
        medians = interleaved_calls(paths, rounds, requests)
        with app.app_context():
            get_state(app).store.engine.dispose()
    print(f"rounds={rounds} requests/round={requests}")
    print(f"plain view (cookie, login_required)  median {medians['plain'] * 1e6:8.1f} us/request")
    print(f"feed request (token in the URL)      median {medians['feed'] * 1e6:8.1f} us/request")
    print(f"entitlement token check (Bearer)     median {medians['token'] * 1e6:8.1f} us/request")
    feed_ratio, token_ratio = medians["feed"] / medians["plain"], medians["token"] / medians["plain"]
    print(f"feed_ratio={feed_ratio:.3f}")
    print(f"token_ratio={token_ratio:.3f}")
    return feed_ratio, token_ratio


def main() -> None:
    args = rounds_parser(__doc__, requests=300).parse_args()
    run(args.rounds, args.requests)


if __name__ == "__main__":
    main()
