"""Tokens at rest: MultiFernet under ``PATRONLOCK_TOKEN_KEYS`` (the first key encrypts, every key decrypts)."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from .errors import ConfigurationError, TokenDecryptionError

#: the shell command that prints a new key for ``PATRONLOCK_TOKEN_KEYS``.
NEW_KEY_COMMAND = "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"


class TokenCipher:
    """Encrypts and decrypts OAuth tokens and the webhook's secret. Add a new key at the *front* of the list, run
    ``flask patronlock rotate-keys``, then drop the old key.

    :param purpose: what needs the key, for the error's message ("storing Patreon tokens").
    :raises ConfigurationError: when no key is configured or a key is not a valid Fernet key.
    """

    def __init__(self, keys: Sequence[str | bytes], *, purpose: str = "storing Patreon tokens") -> None:
        if not keys:
            raise ConfigurationError(
                f"PATRONLOCK_TOKEN_KEYS is empty, but {purpose} needs a key: secrets are only ever stored encrypted. "
                f"Make a key with `{NEW_KEY_COMMAND}`, set PATRONLOCK_TOKEN_KEYS to a list holding it, and restart "
                "the app."
            )
        try:
            self._fernet = MultiFernet([Fernet(k) for k in keys])
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(
                "PATRONLOCK_TOKEN_KEYS holds a value that is not a Fernet key (32 url-safe base64-encoded bytes); "
                f"make one with `{NEW_KEY_COMMAND}`"
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
