"""The sandbox served for real: the thread server, mounting under a URL prefix, the CLI, the pytest plugin, and paging
100,000 members through the project's Patreon client."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from flask import Flask
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client

from flask_patronlock.sandbox import Sandbox, SandboxServer, create_sandbox_app, render_webhook_member

pytest_plugins = ["pytester"]

REDIRECT = "https://site.test/cb"


def test_server_lifecycle() -> None:
    sb = Sandbox()
    server = SandboxServer(sb)
    with pytest.raises(RuntimeError):
        _ = server.url
    server.start()
    try:
        assert server.url == sb.url == f"http://127.0.0.1:{server.port}"
        assert sb.config["PATRONLOCK_API_BASE_URL"] == server.url
        with pytest.raises(RuntimeError):
            server.start()
        state = requests.get(f"{server.url}/_sandbox/state", timeout=5).json()
        assert state["campaign_id"] == sb.campaign.id and state["url"] == server.url
    finally:
        server.stop()
    server.stop()  # idempotent
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{sb.url}/_sandbox/state", timeout=5)


def test_concurrent_requests() -> None:
    sb = Sandbox()
    sb.generate_members(500)
    with SandboxServer(sb) as server:
        url = f"{server.url}/api/oauth2/v2/campaigns/{sb.campaign.id}/members"
        headers = {"Authorization": f"Bearer {sb.creator_access_token}"}
        totals: list[int] = []

        def read() -> None:
            with requests.Session() as http:
                for _ in range(5):
                    doc = http.get(url, params={"page[count]": "100"}, headers=headers, timeout=10).json()
                    totals.append(doc["meta"]["pagination"]["total"])
                    sb.add_patron(tier="Bronze")

        threads = [threading.Thread(target=read) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(totals) == 20 and all(500 <= t <= 520 for t in totals) and len(sb) == 520


# -- mounted under a prefix -------------------------------------------------------------------------------------------


def _mounted(sb: Sandbox) -> Any:
    host = Flask("host")
    host.add_url_rule("/", "index", lambda: "the host site")
    return DispatcherMiddleware(host, {"/patreon": create_sandbox_app(sb)})


def test_mounted_under_a_prefix_with_the_test_client() -> None:
    sb = Sandbox()
    client = Client(_mounted(sb))
    assert client.get("/").get_data(as_text=True) == "the host site"
    params = {"response_type": "code", "client_id": sb.client_id, "redirect_uri": REDIRECT, "state": "x"}
    page = client.get(f"/patreon/oauth2/authorize?{urlencode(params)}")
    assert page.status_code == 200 and 'action="/patreon/oauth2/authorize"' in page.get_data(as_text=True)
    sb.generate_members(5)
    doc = client.get(
        f"/patreon/api/oauth2/v2/campaigns/{sb.campaign.id}/members",
        query_string={"page[count]": "2"},
        headers={"Authorization": f"Bearer {sb.creator_access_token}"},
    ).get_json()
    assert urlsplit(doc["links"]["next"]).path == f"/patreon/api/oauth2/v2/campaigns/{sb.campaign.id}/members"
    assert sb.base_url == "http://localhost/patreon"  # learnt from the first request, for webhook links


def test_mounted_under_a_prefix_live() -> None:
    sb = Sandbox()
    sb.add_user("mount@example.com")
    with SandboxServer(sb, app=_mounted(sb), prefix="/patreon") as server, requests.Session() as http:
        assert server.url.endswith("/patreon") and sb.url == server.url
        assert http.get(server.url.removesuffix("/patreon") + "/").text == "the host site"
        params = {
            "response_type": "code",
            "client_id": sb.client_id,
            "redirect_uri": REDIRECT,
            "state": "x",
            "sandbox_user": "mount@example.com",
            "sandbox_decision": "approve",
        }
        redirect = http.get(f"{server.url}/oauth2/authorize", params=params, allow_redirects=False)
        code = parse_qs(urlsplit(redirect.headers["Location"]).query)["code"][0]
        token = http.post(
            f"{server.url}/api/oauth2/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT,
                "client_id": sb.client_id,
                "client_secret": sb.client_secret,
            },
        ).json()
        me = http.get(
            f"{server.url}/api/oauth2/v2/identity", headers={"Authorization": f"Bearer {token['access_token']}"}
        ).json()
        assert me["links"]["self"].startswith(f"{server.url}/api/oauth2/v2/user/")
        member = sb.add_patron("mount@example.com", tier="Gold")
        links = json.loads(render_webhook_member(sb, member))["links"]
        assert links["self"] == f"{server.url}/api/oauth2/v2/members/{member.id}"


# -- the CLI ----------------------------------------------------------------------------------------------------------


def test_cli_first_line() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "flask_patronlock.sandbox", "--port", "0", "--members", "50", "--seed", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    timer = threading.Timer(60, proc.kill)  # never hang the suite
    timer.start()
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        expected = {"api_base", "oauth_base", "campaign_id", "client_id", "client_secret", "creator_access_token",
                    "webhook_secret", "control_token"}  # fmt: skip
        assert expected <= set(first)
        base = first["api_base"]
        assert base == first["oauth_base"] and base.startswith("http://127.0.0.1:") and not base.endswith(":0")
        assert first["campaign_id"] == Sandbox(seed=3).campaign.id
        with requests.Session() as http:
            # the controls answer only with the token it printed: a web page can reach a loopback port too
            refused = http.post(f"{base}/_sandbox/tokens", json={"user": first["campaign_id"]}, timeout=10)
            assert refused.status_code == 403 and "control token" in refused.json()["error"]
            assert http.get(f"{base}/_sandbox/state", timeout=10).status_code == 403
            http.headers["X-Sandbox-Token"] = first["control_token"]
            state = http.get(f"{base}/_sandbox/state", timeout=10).json()
            assert state["members"] == 50 and state["campaign_id"] == first["campaign_id"]
            doc = http.get(
                f"{base}/api/oauth2/v2/campaigns/{first['campaign_id']}/members",
                headers={"Authorization": f"Bearer {first['creator_access_token']}"},
                timeout=10,
            ).json()
            assert doc["meta"]["pagination"]["total"] == 50
    finally:
        timer.cancel()
        proc.terminate()
        try:
            proc.wait(10)
        finally:
            proc.kill()
            proc.wait()
            assert proc.stdout is not None and proc.stderr is not None
            proc.stdout.close()
            proc.stderr.close()
    assert proc.returncode in (0, -15)


def test_cli_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flask_patronlock.sandbox", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "--members" in result.stdout and "--port" in result.stdout
    assert "--billing {anniversary,first_of_month}" in result.stdout


# -- the pytest plugin ------------------------------------------------------------------------------------------------


def _plugin_args() -> list[str]:
    """Load the plugin explicitly only when it is not installed as an entry point (loading it twice is an error)."""
    installed = any(ep.name == "patronlock_sandbox" for ep in entry_points(group="pytest11"))
    return [] if installed else ["-p", "flask_patronlock.sandbox.pytest_plugin"]


def test_pytest_plugin(pytester: pytest.Pytester) -> None:
    record = pytester.path / "seen.json"
    pytester.makepyfile(
        f"""
        import json
        import pytest
        import requests

        def test_live(patreon_sandbox):
            url = patreon_sandbox.url
            assert url.startswith("http://127.0.0.1:")
            config = patreon_sandbox.config
            assert config["PATRONLOCK_API_BASE_URL"] == config["PATRONLOCK_OAUTH_BASE_URL"] == url
            assert config["PATRONLOCK_WEBHOOK_SECRETS"] == [patreon_sandbox.webhook_secret]
            assert config["PATRONLOCK_CAMPAIGN_ID"] == patreon_sandbox.campaign.id
            assert set(config) == {{
                "PATRONLOCK_CLIENT_ID", "PATRONLOCK_CLIENT_SECRET", "PATRONLOCK_CREATOR_ACCESS_TOKEN",
                "PATRONLOCK_CAMPAIGN_ID", "PATRONLOCK_WEBHOOK_SECRETS", "PATRONLOCK_API_BASE_URL",
                "PATRONLOCK_OAUTH_BASE_URL",
            }}
            patreon_sandbox.add_patron("p@example.com", tier="Gold")
            state = requests.get(url + "/_sandbox/state", timeout=5).json()
            assert state["members"] == 1
            with open({str(record)!r}, "w") as f:
                json.dump(url, f)

        @pytest.mark.patreon_sandbox(members=30, seed=4, max_webhook_failures=2)
        def test_marker(patreon_sandbox):
            assert len(patreon_sandbox) == 30 and patreon_sandbox.seed == 4
            assert patreon_sandbox.max_webhook_failures == 2

        def test_fresh_each_time(patreon_sandbox):
            assert len(patreon_sandbox) == 0
        """
    )
    result = pytester.runpytest(*_plugin_args(), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    url = json.loads(record.read_text())
    with pytest.raises(requests.ConnectionError):  # stopped at teardown
        requests.get(url + "/_sandbox/state", timeout=5)


def test_pytest_plugin_marker_is_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(*_plugin_args(), "--markers")
    result.stdout.fnmatch_lines(["*patreon_sandbox(members=0, scenarios=(), **sandbox_kwargs)*"])


# -- 100,000 members --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_page_100k_members_through_the_client() -> None:
    from flask_patronlock.patreon.client import PatreonClient

    sb = Sandbox(seed=1)
    sb.generate_members(100_000)
    with SandboxServer(sb) as server:
        client = PatreonClient(access_token=sb.creator_access_token, api_base=server.url, oauth_base=server.url)
        with client:
            pages = list(client.iter_member_pages(sb.campaign.id, page_size=1000))
    assert len(pages) == 100 and all(p.total == 100_000 for p in pages)
    ids = [m.member_id for p in pages for m in p.members]
    assert len(ids) == len(set(ids)) == 100_000
    assert pages[-1].next_cursor is None
