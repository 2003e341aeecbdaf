"""The flask-patronlock example site: a small creator site whose posts are locked to Patreon tiers.

It runs offline: SQLite in ``instance/`` and the built-in Patreon sandbox mounted at ``/_patreon`` in the same
process. With real credentials in the environment (``PATRONLOCK_CLIENT_ID`` …, see README) it talks to Patreon
instead — the same code.
"""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
