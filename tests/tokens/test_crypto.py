"""Tokens at rest: MultiFernet with rotation."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from flask_patronlock.crypto import TokenCipher
from flask_patronlock.errors import ConfigurationError, TokenDecryptionError


def test_roundtrip_and_rotation() -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    ciphertext = TokenCipher([old]).encrypt("secret-token")
    assert b"secret-token" not in ciphertext
    both = TokenCipher([new, old])
    assert both.decrypt(ciphertext) == "secret-token"
    rotated = both.rotate(ciphertext)
    assert TokenCipher([new]).decrypt(rotated) == "secret-token"
    with pytest.raises(TokenDecryptionError, match="rotate-keys"):
        TokenCipher([new]).decrypt(ciphertext)


def test_bad_configuration() -> None:
    with pytest.raises(ConfigurationError, match="PATRONLOCK_TOKEN_KEYS is empty"):
        TokenCipher([])
    with pytest.raises(ConfigurationError, match="not a Fernet key"):
        TokenCipher(["nope"])
