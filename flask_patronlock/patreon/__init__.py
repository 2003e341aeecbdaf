"""Patreon API v2 for flask-patronlock: the OAuth/API client, JSON:API parsing, webhook signatures.

No Flask here: everything in this package works (and is tested) without an application. The client returns the
frozen snapshots of :mod:`flask_patronlock.patreon.types`; the store is the only thing that turns them into state.
"""

from __future__ import annotations

# The package exports what each module exports: one list per module, kept in the module.
from . import client, errors, jsonapi, ratelimit, signatures, types
from .client import *  # noqa: F403
from .errors import *  # noqa: F403
from .jsonapi import *  # noqa: F403
from .ratelimit import *  # noqa: F403
from .signatures import *  # noqa: F403
from .types import *  # noqa: F403

__all__: list[str] = []
__all__ += client.__all__
__all__ += errors.__all__
__all__ += jsonapi.__all__
__all__ += ratelimit.__all__
__all__ += signatures.__all__
__all__ += types.__all__
