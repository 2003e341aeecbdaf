"""The CSRF check of every POST the extension's own pages accept (the connect views and the settings page)."""

from __future__ import annotations

from collections.abc import Callable

from flask import current_app, request
from flask_wtf.csrf import validate_csrf
from wtforms import ValidationError

__all__ = ["check_csrf"]


def check_csrf(problem: Callable[[str | None], Exception]) -> None:
    """Validate the request's CSRF token (form field ``csrf_token`` or header ``X-CSRFToken``) with Flask-WTF, whether
    or not the app uses ``CSRFProtect``; ``WTF_CSRF_ENABLED = False`` (e.g. in tests) switches it off, as for
    Flask-WTF.

    :param problem: makes the exception raised when the token does not check out, from Flask-WTF's reason (``None``
        when it gave none); each page answers in its own words.
    """
    if not current_app.config.get("WTF_CSRF_ENABLED", True):
        return
    token = request.form.get("csrf_token") or request.headers.get("X-CSRFToken") or request.headers.get(
        "X-CSRF-Token"
    )
    try:
        validate_csrf(token)
    except ValidationError as exc:
        raise problem(str(exc.args[0]) if exc.args else None) from None
