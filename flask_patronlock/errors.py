"""Exceptions of flask-patronlock that are not about talking to Patreon (those live in :mod:`.patreon.errors`)."""

from __future__ import annotations


class PatronLockError(Exception):
    """Base class of flask-patronlock's own errors."""


class ConfigurationError(PatronLockError, RuntimeError):
    """A required configuration key is missing or invalid; the message names the key to set."""


class TokenDecryptionError(PatronLockError):
    """A stored token could not be decrypted with any of ``PATRONLOCK_TOKEN_KEYS`` (was a key removed?)."""
