"""oauth.py on its own: safe ``next`` targets, the session-bound state, and a redirect URI from configuration."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import unquote, urlsplit

import pytest
from flask import Flask, session
from hypothesis import given
from hypothesis import strategies as st

from flask_patronlock import ConfigurationError
from flask_patronlock.oauth import (
    MAX_PENDING,
    SESSION_KEY,
    STATE_TTL,
    StateProblem,
    begin_flow,
    redirect_uri,
    safe_next,
    take_flow,
)
from tests.helpers.connect import EVIL_NEXT
from tests.helpers.constants import T0


@pytest.mark.parametrize("target", EVIL_NEXT)
def test_unsafe_next_is_refused(target: str) -> None:
    assert safe_next(target) is None


@pytest.mark.parametrize("target", ["/", "/posts/7", "/account?tab=billing&x=1", "/a#frag", "/caf%C3%A9"])
def test_same_origin_paths_are_kept(target: str) -> None:
    assert safe_next(target) == target


def test_non_strings_are_refused() -> None:
    assert safe_next(None) is None
    assert safe_next(["/x"]) is None


@given(st.text(alphabet=st.sampled_from("/\\:%2Ff5Cc09 \t.ae"), max_size=30))
def test_anything_accepted_is_a_plain_path(target: str) -> None:
    accepted = safe_next(target)
    if accepted is not None:
        decoded = unquote(unquote(unquote(accepted)))
        for form in (accepted, decoded):
            assert form.startswith("/") and not form.startswith("//")
            assert "\\" not in form and not any(ord(ch) <= 0x20 for ch in form)
            assert not urlsplit(form).scheme and not urlsplit(form).netloc


@pytest.fixture
def bare_app() -> Flask:
    app = Flask("oauth_helpers")
    app.config.update(SECRET_KEY="k")

    @app.get("/patreon/callback", endpoint="patronlock.callback")
    def callback() -> str:
        return ""

    return app


def test_state_is_single_use_and_bound_to_the_session(bare_app: Flask) -> None:
    with bare_app.test_request_context():
        state, challenge = begin_flow("connect", next_url="/posts/1", user_id="7", now=T0, pkce=True)
        assert len(state) >= 43  # 32 random bytes, url-safe base64: 256 bits
        assert challenge
        flow = take_flow(state, now=T0 + timedelta(minutes=1))
        assert (flow.flow, flow.next_url, flow.user_id) == ("connect", "/posts/1", "7")
        assert flow.code_verifier
        with pytest.raises(StateProblem) as reused:
            take_flow(state, now=T0 + timedelta(minutes=1))
        assert reused.value.kind == "reused"
    with bare_app.test_request_context():  # another session never knew this state
        with pytest.raises(StateProblem) as other:
            take_flow(state, now=T0)
        assert other.value.kind == "no_session"


def test_state_problems(bare_app: Flask) -> None:
    with bare_app.test_request_context():
        with pytest.raises(StateProblem) as missing:
            take_flow(None, now=T0)
        assert missing.value.kind == "missing"
        state, _ = begin_flow("login", next_url=None, user_id=None, now=T0, pkce=False)
        with pytest.raises(StateProblem) as mismatch:
            take_flow(state + "x", now=T0)
        assert mismatch.value.kind == "mismatch"
        with pytest.raises(StateProblem) as expired:
            take_flow(state, now=T0 + STATE_TTL)
        assert expired.value.kind == "expired"


def test_unsafe_next_is_not_remembered_and_pending_flows_are_capped(bare_app: Flask) -> None:
    with bare_app.test_request_context():
        states = [
            begin_flow("login", next_url="//evil.com", user_id=None, now=T0 + timedelta(seconds=i), pkce=False)[0]
            for i in range(MAX_PENDING + 2)
        ]
        assert len(session[SESSION_KEY]) == MAX_PENDING
        assert states[0] not in session[SESSION_KEY]
        flow = take_flow(states[-1], now=T0 + timedelta(minutes=1))
        assert flow.next_url is None and flow.code_verifier is None


def test_redirect_uri_from_configuration_only(bare_app: Flask) -> None:
    with pytest.raises(ConfigurationError, match="PATRONLOCK_REDIRECT_URI"):
        redirect_uri(bare_app)
    bare_app.config.update(SERVER_NAME="site.example", PREFERRED_URL_SCHEME="https")
    with bare_app.test_request_context("/", headers={"Host": "evil.com", "X-Forwarded-Host": "evil.com"}):
        assert redirect_uri(bare_app) == "https://site.example/patreon/callback"
    bare_app.config["PATRONLOCK_REDIRECT_URI"] = "https://configured.example/cb"
    assert redirect_uri(bare_app) == "https://configured.example/cb"
