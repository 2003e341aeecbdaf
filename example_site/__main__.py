"""``python -m example_site [--host 127.0.0.1] [--port 5000]``: run the example site (threaded: the site calls the
sandbox mounted in the same process while serving a request)."""

from __future__ import annotations

import argparse

from flask_patronlock import ConfigurationError

from .app import create_app


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the flask-patronlock example site.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args()
    try:
        app = create_app(base_url=f"http://{args.host}:{args.port}")
    except ConfigurationError as exc:  # e.g. real credentials without the site's own secrets: say what to do
        parser.exit(2, f"{exc}\n")
    print(f" * flask-patronlock example site: http://{args.host}:{args.port}/  (Patreon sandbox at /_patreon)")
    app.run(host=args.host, port=args.port, threaded=True, debug=args.debug, use_reloader=False)


if __name__ == "__main__":
    main()
