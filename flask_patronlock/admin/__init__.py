"""The creators' settings page: a blueprint where the site's admins run their patron rewards without code.

Registered by :meth:`PatronLock.init_app <flask_patronlock.PatronLock.init_app>` under
``PATRONLOCK_ADMIN_URL_PREFIX`` (default ``/patronlock/admin``; ``None`` leaves it out). Only admins reach it: the
host says who is one with ``@patronlock.admin_loader`` (the same callback that lets admins pass every lock), and
without one every page answers 403 with the code to register it. Every change is a POST with a Flask-WTF CSRF token,
goes through :mod:`flask_patronlock.settings` (version stamp + audit row naming the admin) or
:meth:`Store.apply <flask_patronlock.store.Store.apply>`, and reaches every worker within
``PATRONLOCK_SETTINGS_CHECK_SECONDS``. No JavaScript is needed (it only refreshes the banner preview while typing),
and nothing is loaded from outside the site.

One module per page group (:data:`PAGES`: ``setup``, ``syncpages``, ``dashboard``, ``locks`` with ``preview``,
``banners``, ``policies``, ``patrons``, ``comps``, ``addons``), beside ``blueprint`` (the guard and the helpers every
page uses), ``forms``, ``data`` (the queries of the patrons list and the dashboard) and ``charts``. No page writes a
table itself.

See ``docs/admin.rst`` for the pages and what each setting means.
"""

from __future__ import annotations

import importlib

from flask import Flask

from .blueprint import blueprint

__all__ = ["blueprint", "init_admin"]

#: the page modules, imported in the navigation's order.
PAGES = ("setup", "syncpages", "dashboard", "locks", "banners", "policies", "patrons", "comps", "addons")


def init_admin(app: Flask) -> None:
    """Register the settings page's blueprint under ``PATRONLOCK_ADMIN_URL_PREFIX``."""
    for page in PAGES:  # each page module attaches its routes to the blueprint and its entry to the navigation
        importlib.import_module(f"{__name__}.{page}")
    app.register_blueprint(blueprint, url_prefix=app.config["PATRONLOCK_ADMIN_URL_PREFIX"])
