"""Run a standalone Patreon sandbox: ``python -m flask_patronlock.sandbox --port 5055 --members 1000``.

The first line on stdout (flushed at once) is one JSON object with ``api_base``, ``oauth_base``, ``campaign_id``,
``client_id``, ``client_secret``, ``creator_access_token``, ``creator_refresh_token``, ``webhook_secret`` and
``control_token``; with ``--port 0`` it carries the port actually bound. Webhooks are delivered by a background
worker. Stop with Ctrl-C or SIGTERM.

The ``/_sandbox`` controls answer only requests carrying ``control_token`` (header ``X-Sandbox-Token``, or
``?sandbox_token=`` in a browser): a web page the developer visits can reach a loopback port too, and the controls
mint tokens and send webhooks. A webhook registered through them must point at the sandbox's own origin or a host
given with ``--webhook-host``.
"""

from __future__ import annotations

import argparse
import gc
import json
import secrets
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from werkzeug.serving import WSGIRequestHandler, make_server

from .app import CONTROL_TOKEN_HEADER, create_sandbox_app, token_guard
from .server import QuietRequestHandler
from .state import BILLING_MODES, Sandbox


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m flask_patronlock.sandbox",
        description="Serve an offline Patreon (OAuth, API v2, signed webhooks, /_sandbox controls).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5055, help="port to bind; 0 picks a free one (default 5055)")
    parser.add_argument("--members", type=int, default=0, help="generate this many members (default 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed for ids and generated members (default 0)")
    parser.add_argument(
        "--billing", choices=BILLING_MODES, default="anniversary", help="how monthly pledges are billed"
    )
    parser.add_argument("--campaign-id", help="the campaign id (default: derived from the seed)")
    parser.add_argument("--client-id", help="the OAuth client id (default: random)")
    parser.add_argument("--client-secret", help="the OAuth client secret (default: random)")
    parser.add_argument("--creator-access-token", help="the creator's access token (default: random)")
    parser.add_argument("--webhook-secret", help="the secret of webhooks registered through the API (default: random)")
    parser.add_argument(
        "--control-token", help="the token the /_sandbox controls require (default: random, on the first line)"
    )
    parser.add_argument(
        "--webhook-host",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="a host webhooks registered through the controls may point at, besides the sandbox's own (repeatable)",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request on stderr")
    parser.add_argument("--no-webhook-worker", action="store_true", help="queue webhooks; deliver only on flush")
    return parser


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until interrupted; returns the exit status."""
    args = build_parser().parse_args(argv)
    sandbox = Sandbox(
        campaign_id=args.campaign_id,
        client_id=args.client_id,
        client_secret=args.client_secret,
        creator_access_token=args.creator_access_token,
        webhook_secret=args.webhook_secret,
        seed=args.seed,
        billing=args.billing,
    )
    if args.members:
        sandbox.generate_members(args.members)
        gc.freeze()  # the generated records live as long as the process: keep them out of every GC pass
    control_token = args.control_token or secrets.token_urlsafe(24)
    try:
        app = create_sandbox_app(sandbox, control_guard=token_guard(control_token), webhook_hosts=args.webhook_host)
    except ValueError as exc:
        build_parser().error(str(exc))
    handler = WSGIRequestHandler if args.verbose else QuietRequestHandler
    server = make_server(args.host, args.port, app, threaded=True, request_handler=handler)
    host = "127.0.0.1" if args.host in ("", "0.0.0.0", "::") else args.host
    sandbox.url = f"http://{host}:{server.server_port}"
    sys.stdout.write(json.dumps(dict(sandbox.credentials(), control_token=control_token)) + "\n")
    sys.stdout.flush()
    print(
        f"Patreon sandbox on {sandbox.url} (campaign {sandbox.campaign.id}, {len(sandbox)} members); "
        f"state at {sandbox.url}/_sandbox/state?sandbox_token={control_token} (scripts: the {CONTROL_TOKEN_HEADER} "
        "header). Ctrl-C to stop.",
        file=sys.stderr,
        flush=True,
    )
    if not args.no_webhook_worker:
        sandbox.start_webhook_worker()
    signal.signal(signal.SIGTERM, _terminate)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        sandbox.stop_webhook_worker()
    return 0


if __name__ == "__main__":
    sys.exit(main())
