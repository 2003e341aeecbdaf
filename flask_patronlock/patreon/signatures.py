"""Patreon webhook signatures: ``X-Patreon-Signature`` is the lowercase hex HMAC-MD5 of the raw body, keyed with the
webhook's secret.

MD5 is what Patreon uses; as an HMAC it still authenticates. Verify against the exact bytes received, before any
JSON decoding.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

__all__ = ["SIGNATURE_HEADER", "sign", "verify_signature"]

#: the request header Patreon puts the signature in.
SIGNATURE_HEADER = "X-Patreon-Signature"


def sign(body: bytes, secret: str) -> str:
    """The signature Patreon would send for ``body`` with webhook secret ``secret`` (lowercase hex HMAC-MD5)."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.md5).hexdigest()


def verify_signature(body: bytes, signature: str | None, secrets: Iterable[str]) -> bool:
    """Whether ``signature`` is a valid signature of ``body`` under any of ``secrets``.

    Several secrets allow rotation (the new webhook's and the old one's, while both may deliver). Every secret is
    compared in constant time, and all of them are tried even after a match, so the timing does not reveal which.
    The hex is compared case-insensitively; surrounding whitespace is ignored.

    :param secrets: the configured webhook secrets (a single string is accepted as one secret).
    :returns: ``False`` for a missing or empty signature, or when no (non-empty) secret is configured.
    """
    if not signature:
        return False
    try:
        candidate = signature.strip().lower().encode("ascii")
    except (UnicodeEncodeError, AttributeError):
        return False
    if not candidate:
        return False
    if isinstance(secrets, str):  # one secret passed bare: do not iterate its characters
        secrets = (secrets,)
    matched = False
    for secret in secrets:
        if not secret:
            continue
        expected = sign(body, secret).encode("ascii")
        matched |= hmac.compare_digest(expected, candidate)
    return matched
