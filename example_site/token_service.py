"""A separate tiny service that trusts the site's entitlement tokens: no database, no Flask app, only the key.

    EXAMPLE_ENTITLEMENT_KEY=... python -m example_site.token_service --port 8100
    curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8100/locks/gold

The site signs with the same key (``PATRONLOCK_ENTITLEMENT_KEYS = {"example": key}``, which the example site sets from
``EXAMPLE_ENTITLEMENT_KEY``); a patron's app gets a token from the site's ``/patreon/entitlement-token``. Answers 200
when the token opens the lock, 403 when it is valid but does not, 401 for anything else.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import make_server

from flask_patronlock.entitlement_tokens import EntitlementDenied, EntitlementTokenError, check_entitlement_token

KEYS = {"example": os.environ.get("EXAMPLE_ENTITLEMENT_KEY", "")}


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """``GET /locks/<name>`` with ``Authorization: Bearer <entitlement token>``."""
    lock = environ.get("PATH_INFO", "").removeprefix("/locks/")
    bearer = environ.get("HTTP_AUTHORIZATION", "").removeprefix("Bearer ")
    try:
        claims = check_entitlement_token(bearer, lock, key=KEYS)
        status, body = "200 OK", {"user": claims.subject, "lock": lock, "until": claims.expires_at.isoformat()}
    except EntitlementDenied:
        status, body = "403 Forbidden", {"error": "locked", "lock": lock}
    except EntitlementTokenError:
        status, body = "401 Unauthorized", {"error": "invalid_token"}
    start_response(status, [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Check the example site's entitlement tokens.")
    parser.add_argument("--port", type=int, default=8100)
    port = parser.parse_args().port
    with make_server("127.0.0.1", port, app) as server:
        print(f"token service on http://127.0.0.1:{server.server_port}/", flush=True)
        server.serve_forever()
