"""flask-patronlock: lock Flask content to Patreon patrons by tier.

The names below are the public API a site and its add-ons use. Everything else lives in its module
(``flask_patronlock.accounts``, ``flask_patronlock.patreon`` ...) and is documented there; the per-app state
(``flask_patronlock.state``) and the store are internal.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from .addons import Addon, AddonHooks
from .banners import render_banner
from .data import PatronData, patron_data
from .errors import ConfigurationError, PatronLockError
from .explain import explain
from .extension import PatronLock
from .files import locked_file_url, send_signed_file
from .locks import (
    Lock,
    LockedError,
    UnknownLockError,
    can_view,
    current_patron,
    current_viewer,
    decision_for,
    lock_exempt,
    locked,
    require,
    send_locked_file,
)
from .patron import Patron
from .policy import Decision, LockRule, PolicySettings, Viewer
from .viewers import current_viewer_changed, forget_cached_viewer

__version__ = "0.1.0.dev0"

__all__ = [
    "Addon",
    "AddonHooks",
    "ConfigurationError",
    "Decision",
    "Lock",
    "LockRule",
    "LockedError",
    "Patron",
    "PatronData",
    "PatronLock",
    "PatronLockError",
    "PolicySettings",
    "UnknownLockError",
    "Viewer",
    "__version__",
    "can_view",
    "current_patron",
    "current_viewer",
    "current_viewer_changed",
    "decision_for",
    "explain",
    "forget_cached_viewer",
    "lock_exempt",
    "locked",
    "locked_file_url",
    "patron_data",
    "render_banner",
    "require",
    "send_locked_file",
    "send_signed_file",
]

#: Names this package exported before its public API was narrowed, and the module each lives in now. Importing one
#: from ``flask_patronlock`` still works, with a DeprecationWarning naming where it went.
_MOVED: dict[str, str] = {
    "Accounts": "flask_patronlock.accounts",
    "LinkedAccount": "flask_patronlock.accounts",
    "get_accounts": "flask_patronlock.accounts",
    "ApplyResult": "flask_patronlock.transitions",
    "Store": "flask_patronlock.store",
    "PatronLockState": "flask_patronlock.state",
    "get_state": "flask_patronlock.state",
    "CampaignSnapshot": "flask_patronlock.patreon",
    "MemberSnapshot": "flask_patronlock.patreon",
    "TierSnapshot": "flask_patronlock.patreon",
    "UserSnapshot": "flask_patronlock.patreon",
    "Explanation": "flask_patronlock.explain",
    "ConnectProblem": "flask_patronlock.views",
    "TokenDecryptionError": "flask_patronlock.errors",
    "forget_viewer": "flask_patronlock.viewers",
    "viewer_changed": "flask_patronlock.viewers",
}


def __getattr__(name: str) -> Any:
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module 'flask_patronlock' has no attribute {name!r}")
    internal = name in ("get_state", "PatronLockState", "Store")
    hint = "; for add-ons, flask_patronlock.patron_data(app)" if internal else ""
    warnings.warn(
        f"flask_patronlock.{name} is no longer part of the package's public names: import it from {module}{hint}",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(module), name)
