"""Tokens at rest: MultiFernet under ``PATRONLOCK_TOKEN_KEYS`` (the first key encrypts, every key decrypts)."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from .errors import ConfigurationError, TokenDecryptionError


class TokenCipher:
    """Encrypts and decrypts OAuth tokens. Add a new key at the *front* of the list, run
    ``flask patronlock rotate-keys``, then drop the old key.

    :raises ConfigurationError: when no key is configured or a key is not a valid Fernet key.
    """

    def __init__(self, keys: Sequence[str | bytes]) -> None:
        if not keys:
            raise ConfigurationError(
                "PATRONLOCK_TOKEN_KEYS is empty, but storing Patreon tokens needs at least one key. Generate one with "
                "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`."
            )
        try:
            self._fernet = MultiFernet([Fernet(k) for k in keys])
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(
                "PATRONLOCK_TOKEN_KEYS holds a value that is not a Fernet key (32 url-safe base64-encoded bytes)"
            ) from exc

    def encrypt(self, token: str) -> bytes:
        """Ciphertext of ``token`` under the first key."""
        return self._fernet.encrypt(token.encode())

    def decrypt(self, ciphertext: bytes) -> str:
        """The token; :class:`TokenDecryptionError` when no configured key opens it."""
        try:
            return self._fernet.decrypt(bytes(ciphertext)).decode()
        except InvalidToken as exc:
            raise TokenDecryptionError(
                "a stored token could not be decrypted with any key in PATRONLOCK_TOKEN_KEYS; was a key removed "
                "before `flask patronlock rotate-keys` re-encrypted everything?"
            ) from exc

    def rotate(self, ciphertext: bytes) -> bytes:
        """The same token re-encrypted under the first key."""
        try:
            return self._fernet.rotate(bytes(ciphertext))
        except InvalidToken as exc:
            raise TokenDecryptionError("a stored token could not be decrypted with any configured key") from exc
