"""Webhook signatures: lowercase hex HMAC-MD5 of the raw body, checked against every configured secret."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flask_patronlock.patreon import SIGNATURE_HEADER, sign, verify_signature
from tests.helpers.patreon import fixture_bytes

BODY = b'{"data": {"type": "member", "id": "m1"}}'


def test_rfc_2104_vector() -> None:
    # RFC 2104 test case 1: key 0x0b * 16, data "Hi There"
    assert sign(b"Hi There", "\x0b" * 16) == "9294727a3638bb1c13f48ef8158bfc9d"


def test_sign_is_lowercase_hex_hmac_md5() -> None:
    expected = hmac.new(b"whsec", BODY, hashlib.md5).hexdigest()
    signature = sign(BODY, "whsec")
    assert signature == expected
    assert signature == signature.lower() and len(signature) == 32


def test_header_name() -> None:
    assert SIGNATURE_HEADER == "X-Patreon-Signature"


def test_verify_a_real_payload() -> None:
    body = fixture_bytes("members_pledge_create.json")
    signature = sign(body, "whsec")
    assert verify_signature(body, signature, ["whsec"])
    # any change to the bytes, even whitespace, breaks it: verify the raw body, never re-serialised JSON
    assert not verify_signature(body.replace(b"\n", b"\r\n"), signature, ["whsec"])


def test_case_and_whitespace_insensitive() -> None:
    signature = sign(BODY, "whsec")
    assert verify_signature(BODY, signature.upper(), ["whsec"])
    assert verify_signature(BODY, f"  {signature}\n", ["whsec"])


@pytest.mark.parametrize("signature", [None, "", "   ", "0" * 32, "not-hex", "é" * 32, sign(BODY, "other")])
def test_rejects_missing_and_wrong_signatures(signature: str | None) -> None:
    assert verify_signature(BODY, signature, ["whsec"]) is False


def test_rejects_a_tampered_body() -> None:
    assert not verify_signature(BODY + b" ", sign(BODY, "whsec"), ["whsec"])


def test_no_secrets_means_no_verification() -> None:
    signature = sign(BODY, "")
    assert verify_signature(BODY, signature, []) is False
    assert verify_signature(BODY, signature, [""]) is False  # an empty secret is "not configured", not a key


def test_rotation_accepts_any_configured_secret() -> None:
    secrets = ["new-secret", "old-secret"]
    assert verify_signature(BODY, sign(BODY, "old-secret"), secrets)
    assert verify_signature(BODY, sign(BODY, "new-secret"), secrets)
    assert not verify_signature(BODY, sign(BODY, "retired-secret"), secrets)
    # any iterable works, including a generator (consumed once)
    assert verify_signature(BODY, sign(BODY, "old-secret"), (s for s in secrets))


def test_every_secret_is_tried_even_after_a_match() -> None:
    tried: list[str] = []

    def secrets():  # type: ignore[no-untyped-def]
        for secret in ("a", "b", "c"):
            tried.append(secret)
            yield secret

    assert verify_signature(BODY, sign(BODY, "a"), secrets())
    assert tried == ["a", "b", "c"]  # constant work: timing does not say which secret matched


def test_a_bare_string_is_one_secret_not_many() -> None:
    assert verify_signature(BODY, sign(BODY, "whsec"), "whsec")
    assert not verify_signature(BODY, sign(BODY, "w"), "whsec")


def test_unicode_secrets_are_utf8() -> None:
    assert sign(BODY, "sécret") == hmac.new("sécret".encode(), BODY, hashlib.md5).hexdigest()


@given(st.binary(max_size=500), st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_property_sign_verifies_and_other_secrets_do_not(body: bytes, secret: str, other: str) -> None:
    signature = sign(body, secret)
    assert verify_signature(body, signature, [secret])
    assert verify_signature(body, signature, [other, secret])
    if sign(body, other) != signature:
        assert not verify_signature(body, signature, [other])
