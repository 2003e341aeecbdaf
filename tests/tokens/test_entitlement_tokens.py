"""Entitlement tokens: a signed-in patron gets a short-lived signed token of what they may see; anything holding the
key checks it without the database (here: the example's tiny service, run as its own process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask

from flask_patronlock.entitlement_tokens import (
    EntitlementDenied,
    InvalidEntitlementToken,
    check_entitlement_token,
)
from flask_patronlock.entitlements import check_for_app, entitlement_keys
from flask_patronlock.extension import get_state
from tests.helpers.constants import NOW
from tests.helpers.sites import Site, make_site

# 64 bytes: long enough for HS512 too, so the test below forges HS512 tokens with the very same key
KEY = "k" * 32 + "-entitlement-test-key-0123456789"
OLD_KEY = "o" * 32 + "-entitlement-test-key-0123456789"
ROOT = Path(__file__).resolve().parents[2]


def build(make_app: Callable[..., Flask], **config: Any) -> Site:
    config.setdefault("PATRONLOCK_ENTITLEMENT_KEYS", {"k2": KEY})
    site = make_site(make_app, **config)
    site.ext.lock("premium", tier="Gold")
    site.ext.lock("supporters", min_cents=100)
    site.linked_patron("gold")
    site.linked_patron("silver", entitled_cents=500, entitled_tier_ids=("t5",))
    site.user("stranger")  # signed in, never linked
    return site


@pytest.fixture
def site(make_app: Callable[..., Flask]) -> Site:
    return build(make_app)


def issue(site: Site, user: str | None) -> Any:
    return site.get("/patreon/entitlement-token", user)


def token_of(site: Site, user: str) -> str:
    response = issue(site, user)
    assert response.status_code == 200, response.status
    assert response.headers["Cache-Control"] == "no-store"
    return str(response.json["token"])


def test_a_patron_gets_a_token_that_checks_without_the_app(site: Site) -> None:
    response = issue(site, "gold")
    body = response.json
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300
    assert body["expires_at"] == (NOW + timedelta(seconds=300)).isoformat()
    assert body["locks"] == ["premium", "supporters"]
    claims = check_entitlement_token(body["token"], "premium", key={"k2": KEY}, now=NOW + timedelta(seconds=10))
    assert claims.subject == "gold" and claims.locks == {"premium", "supporters"}
    assert claims.state == "active" and claims.cents == 1000 and claims.tier_ids == ("t10",) and claims.until is None
    assert claims.kid == "k2" and claims.issued_at == NOW and claims.expires_at == NOW + timedelta(seconds=300)
    assert not claims.is_admin
    assert jwt.get_unverified_header(body["token"])["alg"] == "HS256"


def test_below_the_lock_the_token_is_valid_but_denies_it(site: Site) -> None:
    token = token_of(site, "silver")
    claims = check_entitlement_token(token, "supporters", key=KEY, now=NOW)
    assert claims.locks == {"supporters"} and claims.tier_ids == ("t5",)
    with pytest.raises(EntitlementDenied) as denied:
        check_entitlement_token(token, "premium", key=KEY, now=NOW)
    assert denied.value.claims.subject == "silver"
    stranger = check_entitlement_token(token_of(site, "stranger"), key=KEY, now=NOW)
    assert stranger.locks == frozenset() and stranger.state == "none"


def test_admins_token_opens_every_lock(site: Site) -> None:
    site.user("boss", admin=True)
    claims = check_entitlement_token(token_of(site, "boss"), "premium", key=KEY, now=NOW)
    assert claims.is_admin and claims.allows("anything-at-all")


def test_anonymous_visitors_get_401(site: Site) -> None:
    response = issue(site, None)
    assert response.status_code == 401 and response.json == {"error": "login_required"}


def test_expired_and_not_yet_valid_tokens_are_refused(site: Site) -> None:
    token = token_of(site, "gold")
    check_entitlement_token(token, key=KEY, now=NOW + timedelta(seconds=299))
    with pytest.raises(InvalidEntitlementToken, match="expired"):
        check_entitlement_token(token, key=KEY, now=NOW + timedelta(seconds=300))
    check_entitlement_token(token, key=KEY, now=NOW + timedelta(seconds=305), leeway=10)
    with pytest.raises(InvalidEntitlementToken, match="not valid yet"):
        check_entitlement_token(token, key=KEY, now=NOW - timedelta(seconds=60))
    with pytest.raises(InvalidEntitlementToken, match="expired"):
        check_entitlement_token(token, key=KEY)  # the real clock: long after the tests' NOW


def test_tampered_tokens_are_refused(site: Site) -> None:
    token = token_of(site, "silver")
    header, payload, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["locks"] = ["premium", "supporters"]
    forged_payload = jwt.encode(claims, KEY, algorithm="HS256", headers={"kid": "k2"}).split(".")[1]
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    for bad in (
        f"{header}.{forged_payload}.{signature}",  # more locks, the old signature
        f"{header}.{payload}.{flipped}",
        token[:-1],
        "not-a-token",
        "",
    ):
        with pytest.raises(InvalidEntitlementToken):
            check_entitlement_token(bad, key=KEY, now=NOW)
    # re-signed with a key the site never had
    other = jwt.encode(claims, "x" * 40, algorithm="HS256", headers={"kid": "k2", "typ": "patronlock-entitlement+jwt"})
    with pytest.raises(InvalidEntitlementToken):
        check_entitlement_token(other, key=KEY, now=NOW)


def test_other_algorithms_are_refused(site: Site) -> None:
    claims = jwt.decode(token_of(site, "silver"), options={"verify_signature": False})
    headers = {"kid": "k2", "typ": "patronlock-entitlement+jwt"}
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for token in (
        jwt.encode(claims, KEY, algorithm="HS512", headers=headers),
        jwt.encode(claims, None, algorithm="none", headers=headers),
        jwt.encode(claims, private, algorithm="RS256", headers=headers),
    ):
        with pytest.raises(InvalidEntitlementToken):
            check_entitlement_token(token, key=KEY, now=NOW)
        with pytest.raises(InvalidEntitlementToken):
            check_entitlement_token(token, key={"k2": KEY}, now=NOW)
    # the right key and algorithm, but a JWT made for something else (no entitlement type), or another audience
    plain = jwt.encode(claims, KEY, algorithm="HS256", headers={"kid": "k2"})
    with pytest.raises(InvalidEntitlementToken):
        check_entitlement_token(plain, key=KEY, now=NOW)
    with pytest.raises(InvalidEntitlementToken):
        check_entitlement_token(token_of(site, "silver"), key=KEY, audience="another-service", now=NOW)
    with pytest.raises(InvalidEntitlementToken):
        check_entitlement_token(token_of(site, "silver"), key=KEY, issuer="someone-else", now=NOW)


def test_keys_rotate_by_kid(make_app: Callable[..., Flask]) -> None:
    site = build(make_app, PATRONLOCK_ENTITLEMENT_KEYS={"old": OLD_KEY})
    old_token = token_of(site, "gold")
    site.app.config["PATRONLOCK_ENTITLEMENT_KEYS"] = {"new": KEY, "old": OLD_KEY}  # sign with new, accept both
    new_token = token_of(site, "gold")
    assert jwt.get_unverified_header(new_token)["kid"] == "new"
    both = {"new": KEY, "old": OLD_KEY}
    for token in (old_token, new_token):
        assert check_entitlement_token(token, "premium", key=both, now=NOW).subject == "gold"
    with site.app.app_context():
        assert check_for_app(old_token, "premium").kid == "old"
    with pytest.raises(InvalidEntitlementToken, match="unknown key"):
        check_entitlement_token(old_token, key={"new": KEY}, now=NOW)  # the old key dropped


def test_without_configured_keys_one_is_derived_from_secret_key(make_app: Callable[..., Flask]) -> None:
    site = build(make_app, PATRONLOCK_ENTITLEMENT_KEYS=None)
    keys = entitlement_keys(site.app)
    ((kid, key),) = keys.items()
    assert kid.startswith("sk-") and key != b"test-secret" and len(key) == 32
    token = token_of(site, "gold")
    assert check_entitlement_token(token, "premium", key=keys, now=NOW).kid == kid
    with pytest.raises(InvalidEntitlementToken):
        check_entitlement_token(token, key=b"test-secret" * 3, now=NOW)


def test_a_grace_period_caps_the_tokens_life(make_app: Callable[..., Flask]) -> None:
    site = build(make_app, PATRONLOCK_ENTITLEMENT_TOKEN_SECONDS=30 * 86400)
    site.linked_patron(
        "late", patron_status="declined_patron", last_charge_status="Declined", last_charge_date=NOW - timedelta(days=5)
    )
    token = token_of(site, "late")
    claims = check_entitlement_token(token, "premium", key=KEY, now=NOW)
    assert claims.state == "grace" and claims.until is not None
    assert NOW < claims.until < NOW + timedelta(days=30) and claims.expires_at == claims.until
    with pytest.raises(InvalidEntitlementToken, match="expired"):
        check_entitlement_token(token, key=KEY, now=claims.until)


# -- the example's tiny service, as its own process ---------------------------------------------------------------


@pytest.fixture
def token_service() -> Iterator[str]:
    env = {**os.environ, "EXAMPLE_ENTITLEMENT_KEY": KEY, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "example_site.token_service", "--port", "0"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("token service on "), line
        yield line.split(" on ", 1)[1].strip().rstrip("/")
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def ask(base: str, lock: str, token: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"{base}/locks/{lock}", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def test_the_example_token_service_checks_tokens_on_its_own(make_app: Callable[..., Flask], token_service: str) -> None:
    now = datetime.now(UTC)  # the service checks against the real clock
    site = build(make_app, PATRONLOCK_ENTITLEMENT_KEYS={"example": KEY})
    state = get_state(site.app)
    state.store.clock = lambda: datetime.now(UTC)
    recent = dict(
        last_charge_date=now - timedelta(days=3), next_charge_date=now + timedelta(days=27),
        pledge_start=now - timedelta(days=100), observed_at=now,
    )
    site.linked_patron("fresh-gold", **recent)
    site.linked_patron("fresh-silver", entitled_cents=500, entitled_tier_ids=("t5",), **recent)
    gold, silver = token_of(site, "fresh-gold"), token_of(site, "fresh-silver")
    assert ask(token_service, "premium", gold) == (200, {
        "user": "fresh-gold", "lock": "premium", "until": check_entitlement_token(gold, key=KEY).expires_at.isoformat()
    })
    assert ask(token_service, "premium", silver) == (403, {"error": "locked", "lock": "premium"})
    assert ask(token_service, "supporters", silver)[0] == 200
    assert ask(token_service, "premium", silver[:-3] + "abc") == (401, {"error": "invalid_token"})
    state.store.clock = lambda: now - timedelta(minutes=10)  # issued ten minutes ago: expired five minutes ago
    assert ask(token_service, "premium", token_of(site, "fresh-gold")) == (401, {"error": "invalid_token"})
