"""The ``patronlock`` blueprint: connect with Patreon, log in with Patreon, unlink, refresh my status, status page.

Registered by :meth:`PatronLock.init_app <flask_patronlock.PatronLock.init_app>` under ``PATRONLOCK_URL_PREFIX``
(default ``/patreon``):

=========================  ======  ==========================================================================
endpoint                   method  what it does
=========================  ======  ==========================================================================
``patronlock.status``      GET     ``/``: linked? which Patreon account, patron status, needs re-authorization?
``patronlock.connect``     GET     ``/connect``: a logged-in user starts linking their Patreon account
``patronlock.login``       GET     ``/login``: an anonymous visitor starts logging in with Patreon
``patronlock.callback``    GET     ``/callback``: Patreon sends the user back here (the redirect URI)
``patronlock.unlink``      POST    ``/unlink``: remove the link (CSRF-protected)
``patronlock.refresh``     POST    ``/refresh``: re-read the patron's status from Patreon (CSRF-protected)
=========================  ======  ==========================================================================

Everything that can go wrong with Patreon (the user cancelled, the state is off, the token endpoint is down, a 5xx, a
timeout) raises a :class:`ConnectProblem`, a werkzeug :class:`~werkzeug.exceptions.HTTPException` that renders
``patronlock/connect/problem.html`` with what happened and what to do next. Customise it with
``@app.errorhandler(ConnectProblem)`` or by shadowing the template. Tokens and Patreon's own error texts never
appear on a page.

The modules: ``connect`` (connect and log in with Patreon: start, callback, finish), ``account`` (status, unlink,
refresh), ``problems`` (the error pages), ``describe`` (the patron's access in words), ``common`` (the blueprint and
what every view shares).
"""

from __future__ import annotations

from . import account, connect  # noqa: F401  (the modules attach their routes to the blueprint)
from .common import blueprint
from .describe import describe_access
from .problems import ConnectProblem

__all__ = ["ConnectProblem", "blueprint", "describe_access"]
