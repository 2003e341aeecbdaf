"""flask-patronlock: lock Flask content to Patreon patrons by tier."""

from __future__ import annotations

from .accounts import Accounts, LinkedAccount, get_accounts
from .errors import ConfigurationError, PatronLockError, TokenDecryptionError
from .extension import PatronLock, PatronLockState, get_state
from .patreon.types import CampaignSnapshot, MemberSnapshot, TierSnapshot, UserSnapshot
from .patron import Patron
from .store import ApplyResult, Store
from .views import ConnectProblem

__version__ = "0.1.0.dev0"

__all__ = [
    "Accounts",
    "ApplyResult",
    "CampaignSnapshot",
    "ConfigurationError",
    "ConnectProblem",
    "LinkedAccount",
    "MemberSnapshot",
    "Patron",
    "PatronLock",
    "PatronLockError",
    "PatronLockState",
    "Store",
    "TierSnapshot",
    "TokenDecryptionError",
    "UserSnapshot",
    "__version__",
    "get_accounts",
    "get_state",
]
