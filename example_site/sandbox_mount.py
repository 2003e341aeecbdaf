"""Mount the built-in Patreon sandbox inside the example site (one process serves both)."""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from flask_patronlock.sandbox import Sandbox, create_sandbox_app

PREFIX = "/_patreon"


def mount_sandbox(app: Flask, *, base_url: str) -> Sandbox:
    """Serve a sandbox at ``/_patreon`` and point the site's PATRONLOCK_* configuration at it."""
    sandbox = Sandbox(seed=7)
    sandbox.url = base_url.rstrip("/") + PREFIX
    # a few patrons to look at in the settings page; visitors become patrons from the control panel
    sandbox.add_patron("ada@example.com", tier="Gold", full_name="Ada")
    sandbox.add_patron("bo@example.com", tier="Bronze", full_name="Bo")
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {PREFIX: create_sandbox_app(sandbox)})  # type: ignore[method-assign]
    for key, value in sandbox.config.items():  # keys the site set itself win (None: "let the creator set it up")
        app.config.setdefault(key, value)
    app.config.setdefault("PATRONLOCK_REDIRECT_URI", base_url.rstrip("/") + "/patreon/callback")
    app.extensions["example_sandbox"] = sandbox
    return sandbox
