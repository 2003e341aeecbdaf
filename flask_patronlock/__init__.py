"""flask-patronlock: lock Flask content to Patreon patrons by tier."""

from __future__ import annotations

from .accounts import Accounts, LinkedAccount, get_accounts
from .addons import Addon, AddonHooks
from .banners import render_banner
from .errors import ConfigurationError, PatronLockError, TokenDecryptionError
from .explain import Explanation, explain
from .extension import PatronLock
from .files import FileLinkError, locked_file_url, send_signed_file
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
from .patreon.types import CampaignSnapshot, MemberSnapshot, TierSnapshot, UserSnapshot
from .patron import Patron
from .policy import Decision, LockRule, PolicySettings, Viewer
from .state import PatronLockState, get_state
from .store import ApplyResult, Store
from .viewers import forget_viewer, viewer_changed
from .views import ConnectProblem

__version__ = "0.1.0.dev0"

__all__ = [
    "Accounts",
    "Addon",
    "AddonHooks",
    "ApplyResult",
    "CampaignSnapshot",
    "ConfigurationError",
    "ConnectProblem",
    "Decision",
    "Explanation",
    "FileLinkError",
    "LinkedAccount",
    "Lock",
    "LockRule",
    "LockedError",
    "MemberSnapshot",
    "Patron",
    "PatronLock",
    "PatronLockError",
    "PatronLockState",
    "PolicySettings",
    "Store",
    "TierSnapshot",
    "TokenDecryptionError",
    "UnknownLockError",
    "UserSnapshot",
    "Viewer",
    "__version__",
    "can_view",
    "current_patron",
    "current_viewer",
    "decision_for",
    "explain",
    "forget_viewer",
    "get_accounts",
    "get_state",
    "lock_exempt",
    "locked",
    "locked_file_url",
    "render_banner",
    "require",
    "send_locked_file",
    "send_signed_file",
    "viewer_changed",
]
