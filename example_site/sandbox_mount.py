"""Mount the built-in Patreon sandbox inside the example site (one process serves both).

Patreon's side of the sandbox (authorize, the API, the checkout page) is open, as Patreon's is. Its ``/_sandbox``
controls -- mint a token for any user, change anyone's pledge, move the clock, send the webhooks -- are for the
site's admin only, or for everyone when ``EXAMPLE_SANDBOX_CONTROLS_OPEN`` is set (your own machine only). Visitors
play Patreon for themselves in the control panel (:mod:`.panel`) instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, current_app, request
from flask_login import current_user
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from flask_patronlock.sandbox import ControlGuard, Sandbox, create_sandbox_app

PREFIX = "/_patreon"

#: a WSGI application.
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def sandbox_controls_allowed() -> bool:
    """Whether the visitor of the site's current request may use the sandbox's controls (and sees its link)."""
    if current_app.config.get("EXAMPLE_SANDBOX_CONTROLS_OPEN"):
        return True
    return bool(current_user.is_authenticated and getattr(current_user, "is_admin", False))


def _admin_only(site: Flask) -> ControlGuard:
    """The sandbox app's guard: the visitor as the site knows them (its session cookie, read by the site's app)."""

    def guard() -> str | None:
        with site.request_context(dict(request.environ)):
            if sandbox_controls_allowed():
                return None
        return (
            "The sandbox's controls are for this site's admin: log in as the admin (the first account registered). "
            "On your own machine, EXAMPLE_SANDBOX_CONTROLS_OPEN=1 opens them to every visitor."
        )

    return guard


def new_sandbox() -> Sandbox:
    """The demo's Patreon on its first start: the campaign's tiers, and two patrons to look at in the settings page
    (visitors become patrons from the control panel)."""
    sandbox = Sandbox(seed=7)
    sandbox.add_patron("ada@example.com", tier="Gold", full_name="Ada")
    sandbox.add_patron("bo@example.com", tier="Bronze", full_name="Bo")
    return sandbox


def mount_sandbox(
    app: Flask,
    *,
    base_url: str,
    sandbox: Sandbox | None = None,
    around: Callable[[WSGIApp], WSGIApp] | None = None,
) -> Sandbox:
    """Serve ``sandbox`` (default: :func:`new_sandbox`) at ``/_patreon`` and point the site's PATRONLOCK_*
    configuration at it. ``around`` wraps the site's and the sandbox's WSGI apps (the demo keeps its clock and saves
    the sandbox around every request)."""
    sandbox = sandbox if sandbox is not None else new_sandbox()
    sandbox.url = base_url.rstrip("/") + PREFIX
    served = create_sandbox_app(sandbox, control_guard=_admin_only(app))  # its webhooks go to this site only
    wrap = around or (lambda wsgi: wsgi)
    app.wsgi_app = DispatcherMiddleware(  # type: ignore[method-assign]
        wrap(app.wsgi_app), {PREFIX: wrap(served)}
    )
    for key, value in sandbox.config.items():  # keys the site set itself win (None: "let the creator set it up")
        app.config.setdefault(key, value)
    app.config.setdefault("PATRONLOCK_REDIRECT_URI", base_url.rstrip("/") + "/patreon/callback")
    app.jinja_env.globals["sandbox_controls_allowed"] = sandbox_controls_allowed
    app.extensions["example_sandbox"] = sandbox
    return sandbox
