"""Numbers and ids from outside on the settings page: huge, negative, non-numeric or unicode values in every path
parameter, query argument and form field of every route (enumerated from the URL map, so a new route cannot escape)
answer 404 or 400 -- never 500."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.routing import Rule

from tests.helpers.admin import ADMIN_PREFIX, AdminSite, make_admin_site

BLUEPRINT = "patronlock_admin"
HUGE = str(2**70)
BIGINT_PLUS_ONE = str(2**63)

#: every query argument and form field an admin page reads (numbers, ids, choices), fuzzed together.
FIELDS = (
    "page", "run", "id", "after", "since", "months", "as", "lock", "q", "status", "tier", "check", "days", "back",
    "action", "enabled", "text", "campaign_id", "min_amount", "lifetime_amount", "patron_since_before", "drip_months",
    "tiers", "combine", "declined", "declined_grace_days", "cancelled", "first_charge", "missing_runs",
    "missing_hours", "breaker_min_patrons", "breaker_percent", "site_lock", "paths-0-prefix", "paths-0-lock",
    "state", "code", "error",
)

_ARG = re.compile(r"<(?:[^<>:]+:)?(\w+)>")


@pytest.fixture
def site(make_app: Callable[..., Flask]) -> AdminSite:
    site = make_admin_site(make_app, PATRONLOCK_CLIENT_ID="id", PATRONLOCK_CLIENT_SECRET="secret")
    site.app.config["PROPAGATE_EXCEPTIONS"] = False  # a bug is a 500 answer here, as in production
    site.apply("m1", full_name="Ada Lovelace", email="ada@example.com")
    return site


def admin_rules(app: Flask) -> list[Rule]:
    rules = [r for r in app.url_map.iter_rules()
             if r.endpoint.startswith(BLUEPRINT + ".") and r.endpoint != f"{BLUEPRINT}.static"]
    assert len(rules) > 15, "the blueprint is not registered?"
    return rules


def fill(rule: Rule, value: str) -> str:
    """The rule's path with every parameter set to ``value`` (percent-encoded, as a browser sends it)."""
    return _ARG.sub(lambda _m: quote(value, safe="") or "x", rule.rule)


# -- the attacks, written out ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [
    f"/sync/runs/{HUGE}", f"/sync/runs/{BIGINT_PLUS_ONE}", "/sync/runs/0", "/sync/runs/99999",
    "/patrons/" + "m" * 65, "/patrons/m1%2C",
    f"/patrons?page={HUGE}", f"/patrons?page={BIGINT_PLUS_ONE}", "/patrons?page=-1", "/patrons?page=0",
    "/patrons?page=2", "/patrons?page=abc",
])
def test_huge_negative_and_impossible_ids_and_pages_are_not_found(site: AdminSite, path: str) -> None:
    assert site.get(ADMIN_PREFIX + path).status_code == 404


@pytest.mark.parametrize("action", ["approve", "reject"])
@pytest.mark.parametrize("run_id", [HUGE, BIGINT_PLUS_ONE])
def test_deciding_a_run_that_cannot_exist_is_not_found(site: AdminSite, action: str, run_id: str) -> None:
    assert site.post(f"{ADMIN_PREFIX}/sync/runs/{run_id}/{action}").status_code == 404


@pytest.mark.parametrize("path", ["/patrons/%00", "/patrons/m1%00", "/patrons?q=%00", "/patrons?tier=%00",
                                  "/locks/premium?as=%00"])
def test_a_nul_anywhere_is_a_bad_request(site: AdminSite, path: str) -> None:
    assert site.get(ADMIN_PREFIX + path).status_code == 400


def test_the_first_page_of_an_empty_list_is_still_a_page(site: AdminSite) -> None:
    assert site.get(ADMIN_PREFIX + "/patrons?page=1&q=nobody-has-this-name").status_code == 200


# -- the fuzz ----------------------------------------------------------------------------------------------------------

#: values a fuzzer finds only by luck, each put in every parameter and field of every route at once.
NASTY = [HUGE, BIGINT_PLUS_ONE, "-1", "0", "\x00", "m1\x00", "\u0663", "9" * 400, "nan", "1e999"]


def _send(site: AdminSite, rule: Rule, path_value: str, values: dict[str, str], token: str) -> None:
    path = fill(rule, path_value)
    for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
        query = path + "?" + urlencode(values)
        if method == "GET":
            response = site.client("admin").get(query)
        else:
            response = site.client("admin").post(query, data={**values, "csrf_token": token})
        assert response.status_code < 500, (method, path, values, response.status_code)


@pytest.mark.parametrize("value", NASTY, ids=["2**70", "2**63", "-1", "0", "nul", "id-nul", "arabic-3", "400-nines",
                                              "nan", "1e999"])
def test_every_route_with_every_parameter_set_to_a_nasty_value(site: AdminSite, value: str) -> None:
    token = site.csrf()
    for rule in admin_rules(site.app):
        _send(site, rule, value, dict.fromkeys(FIELDS, value), token)



def _values() -> st.SearchStrategy[str]:
    return st.one_of(
        st.integers(min_value=-(2**80), max_value=2**80).map(str),
        st.sampled_from([HUGE, BIGINT_PLUS_ONE, "-1", "0", "1e999", "nan", "inf", "-inf", "0x10", "1_000",
                         "\u0663", "\uff11\uff12", "\x00", "9" * 400, "", " ", "m1", "premium", "amount_too_low"]),
        st.text(max_size=40),
    )


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path_value=_values(), values=st.dictionaries(st.sampled_from(FIELDS), _values(), max_size=6))
def test_no_admin_route_answers_5xx_whatever_its_parameters(
    site: AdminSite, path_value: str, values: dict[str, str]
) -> None:
    token = site.csrf()
    for rule in admin_rules(site.app):
        _send(site, rule, path_value, values, token)


def test_the_fuzz_reaches_every_route(site: AdminSite) -> None:
    """Every rule's parameters are filled (none left as ``<...>``) and a plain value reaches each view."""
    token = site.csrf()
    for rule in admin_rules(site.app):
        path = fill(rule, "1")
        assert "<" not in path, path
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            data: dict[str, Any] = {"csrf_token": token}
            response = site.client("admin").open(path, method=method, data=data if method == "POST" else None)
            assert response.status_code < 500, (method, path)


@pytest.mark.parametrize("action", ["approve", "reject"])
def test_the_command_line_says_no_such_run_for_an_id_beyond_64_bits(site: AdminSite, action: str) -> None:
    result = site.app.test_cli_runner().invoke(args=["patronlock", "sync", action, HUGE])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)  # a message, not a traceback
    assert f"there is no sync run {HUGE}" in result.output
