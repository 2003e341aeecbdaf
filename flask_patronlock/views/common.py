"""What every view of the ``patronlock`` blueprint shares: the blueprint, its response headers, and the helpers that
reach the state, Flask-Login and the landing page. The underscored names are private to :mod:`flask_patronlock.views`.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app
from flask_wtf.csrf import generate_csrf

from .. import oauth, signals
from ..errors import ConfigurationError
from ..extension import PatronLockState, get_state

log = logging.getLogger("flask_patronlock.views")

blueprint = Blueprint(
    "patronlock", __name__, template_folder=str(Path(__file__).resolve().parent.parent / "templates")
)


def _state() -> PatronLockState:
    return get_state()


def _login_manager() -> Any:
    manager = getattr(current_app, "login_manager", None)
    if manager is None:
        raise ConfigurationError(
            "flask-patronlock's connect views need Flask-Login: create a LoginManager and call "
            "login_manager.init_app(app) (with a user_loader) before using them."
        )
    return manager


def _current_user() -> Any:
    _login_manager()
    from flask_login import current_user

    return current_user._get_current_object()


def _user_id(user: Any) -> str:
    return str(user.get_id())


def _next_args(next_url: str | None) -> dict[str, Any]:
    return {"next": next_url} if next_url else {}


def _default_next() -> str:
    return oauth.safe_next(current_app.config.get("PATRONLOCK_DEFAULT_NEXT")) or "/"


def _landing(next_url: str | None) -> str:
    return oauth.safe_next(next_url) or _default_next()


def _now() -> datetime:
    return _state().store.clock()


def _send(signal: Any, **kwargs: Any) -> None:
    state = _state()
    signals.send_action(signal, state.app, strict=bool(state.app.config["PATRONLOCK_STRICT_SIGNALS"]), **kwargs)


@blueprint.after_request
def _no_store(response: Response) -> Response:
    # Pages about a user's account are private, and the callback URL carries a code: keep both out of caches and
    # out of the Referer sent to anything the page loads.
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


@blueprint.context_processor
def _template_globals() -> dict[str, Any]:
    return {"patronlock_csrf_token": generate_csrf}
