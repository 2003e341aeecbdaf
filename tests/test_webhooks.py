"""The webhook endpoint and its processing, against the live sandbox: verification, dedupe, re-fetch, fallback."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sync_helpers import access_of, count, sandbox_app, set_policy, sync, webhook_app

from flask_patronlock.patreon.signatures import sign
from flask_patronlock.patreon.types import MEMBER_TRIGGERS
from flask_patronlock.sandbox import Delivery, Sandbox
from flask_patronlock.state import get_state
from flask_patronlock.webhooks import dedupe_key

pytestmark = pytest.mark.timeout(180)
URL = "/patreon/webhook"


@pytest.fixture
def sb_app(make_app: Callable[..., Flask], patreon_sandbox: Sandbox) -> Flask:
    return webhook_app(make_app, patreon_sandbox, URL)


def post(app: Flask, body: bytes, event: str = "members:update", secret: str | None = None, **headers: str) -> Any:
    hdrs = {"X-Patreon-Event": event, "Content-Type": "application/json", **headers}
    if secret is not None:
        hdrs["X-Patreon-Signature"] = sign(body, secret)
    return app.test_client().post(URL, data=body, headers=hdrs)


def deliveries(app: Flask) -> list[dict[str, Any]]:
    state = get_state(app)
    t = state.tables.webhook_deliveries
    with state.store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(t.select().order_by(t.c.id)).mappings()]


@pytest.mark.patreon_sandbox(members=0)
def test_a_delivery_is_verified_stored_and_applied_from_the_api(sb_app: Flask, patreon_sandbox: Sandbox) -> None:
    member = patreon_sandbox.add_patron("ann@example.com", tier="Gold")
    sent = patreon_sandbox.flush_webhooks()
    assert sent and all(d.status == 200 for d in sent)
    patron = get_state(sb_app).store.get_patron(member.id)
    assert patron is not None and patron.source == "webhook" and patron.access is True
    rows = deliveries(sb_app)
    # one change is one body, sent once per trigger (members:create and members:pledge:create): one delivery
    assert len(rows) == len({d.body for d in sent}) < len(sent) and {r["status"] for r in rows} == {"done"}


@pytest.mark.patreon_sandbox(members=0)
def test_bad_input_is_refused_before_anything_is_stored(sb_app: Flask, patreon_sandbox: Sandbox) -> None:
    secret = patreon_sandbox.webhook_secret
    member = patreon_sandbox.add_patron("ann@example.com", tier="Gold")
    (good, *_) = patreon_sandbox.flush_webhooks()
    before = len(deliveries(sb_app))
    assert post(sb_app, good.body, good.event).status_code == 403  # no signature
    assert post(sb_app, good.body, good.event, secret="not-the-secret").status_code == 403
    assert post(sb_app, good.body + b" ", good.event, **{"X-Patreon-Signature": good.signature}).status_code == 403
    big = b"{" + b" " * (1_048_576 + 1) + b"}"
    assert post(sb_app, big, secret=secret).status_code == 413
    assert post(sb_app, b'{"data": ', secret=secret).status_code == 400
    assert post(sb_app, b'{"data": {"type": "campaign", "id": "1"}}', secret=secret).status_code == 400
    assert post(sb_app, good.body, "posts:publish", secret=secret).status_code == 200  # unknown event: logged
    assert len(deliveries(sb_app)) == before
    assert get_state(sb_app).store.get_patron(member.id) is not None


@pytest.mark.patreon_sandbox(members=0)
def test_a_change_back_whose_document_reads_as_before_is_applied(sb_app: Flask, patreon_sandbox: Sandbox) -> None:
    """Silver, Gold, then Silver again: Patreon's third document can be byte-identical to the first, which the dedupe
    on the body took for a duplicate, so the patron kept Gold until a sync. A body seen again after the re-check
    window re-checks the member once; within the window it stays a duplicate."""
    sandbox, store = patreon_sandbox, get_state(sb_app).store
    window = sb_app.config["PATRONLOCK_WEBHOOK_RECHECK_SECONDS"]
    member = sandbox.add_patron("ann@example.com", tier="Silver")
    silver = sandbox.flush_webhooks()[0]
    sandbox.advance(seconds=window + 60)
    sandbox.change_tier(member, "Gold")
    sandbox.flush_webhooks()
    assert store.get_patron(member.id).entitled_cents == 1000  # type: ignore[union-attr]
    sandbox.advance(seconds=window + 60)
    sandbox.change_tier(member, "Silver")
    sandbox.transport = lambda uri, headers, body: 200  # Patreon's own delivery is replaced by the identical first one
    sandbox.flush_webhooks()
    signed = {"X-Patreon-Signature": silver.signature}
    assert post(sb_app, silver.body, "members:pledge:update", **signed).get_data() == b"ok\n"
    assert store.get_patron(member.id).entitled_cents == 500  # type: ignore[union-attr]
    # at once again (Patreon's second trigger for the same change, or a replay): a duplicate, no more work
    assert post(sb_app, silver.body, "members:update", **signed).get_data() == b"duplicate\n"
    assert [d["status"] for d in deliveries(sb_app)].count("pending") == 0


@pytest.mark.patreon_sandbox(members=0)
def test_duplicates_and_replays_cannot_roll_anyone_back(sb_app: Flask, patreon_sandbox: Sandbox) -> None:
    sandbox, store = patreon_sandbox, get_state(sb_app).store
    member = sandbox.add_patron("ann@example.com", tier="Silver")
    first: list[Delivery] = sandbox.flush_webhooks()
    sandbox.advance(minutes=5)
    sandbox.change_tier(member, "Gold")
    sandbox.flush_webhooks()
    gold = store.get_patron(member.id)
    assert gold is not None and gold.entitled_cents == 1000
    audit = count(sb_app, "events")
    old = first[0]
    again = post(sb_app, old.body, old.event, **{"X-Patreon-Signature": old.signature})
    assert again.status_code == 200 and again.get_data() == b"duplicate\n"
    # the same old body under another trigger is the same delivery (the signature covers the body only)
    other = "members:pledge:update" if old.event != "members:pledge:update" else "members:update"
    assert post(sb_app, old.body, other, secret=sandbox.webhook_secret).get_data() == b"duplicate\n"
    # the old state in a body never seen here (other bytes: new work) is processed, but the API says Gold
    respaced = json.dumps(json.loads(old.body), indent=1).encode()
    assert post(sb_app, respaced, old.event, secret=sandbox.webhook_secret).get_data() == b"ok\n"
    assert store.get_patron(member.id).entitled_cents == 1000  # type: ignore[union-attr]
    assert count(sb_app, "events") == audit  # nothing changed, so no audit row


@pytest.mark.patreon_sandbox(members=0)
def test_api_down_applies_the_payload_where_not_older_and_retries(sb_app: Flask, patreon_sandbox: Sandbox) -> None:
    sandbox, state = patreon_sandbox, get_state(sb_app)
    sb_app.config["PATRONLOCK_WEBHOOK_RETRY_SECONDS"] = 60
    member = sandbox.add_patron("ann@example.com", tier="Silver")
    old = sandbox.flush_webhooks()
    sandbox.advance(days=40)  # a charge happened: last_charge_date moved on
    sandbox.change_tier(member, "Gold")
    sandbox.api_down = True
    sandbox.flush_webhooks()
    patron = state.store.get_patron(member.id)
    assert patron is not None and patron.entitled_cents == 1000  # from the payload
    rows = deliveries(sb_app)
    assert rows[-1]["status"] == "retry" and rows[-1]["next_attempt_at"] > sandbox.now
    # an old payload in new bytes (not a duplicate) while the API is down is older than the stored state: skipped
    stale = json.dumps(json.loads(old[0].body), indent=1).encode()
    assert post(sb_app, stale, old[0].event, secret=sandbox.webhook_secret).get_data() == b"ok\n"
    assert state.store.get_patron(member.id).entitled_cents == 1000  # type: ignore[union-attr]
    sandbox.api_down = False
    sandbox.advance(minutes=2)
    assert state.jobs.retry_due() >= 1
    assert {r["status"] for r in deliveries(sb_app)} == {"done"}


@pytest.mark.patreon_sandbox(members=0)
def test_twenty_identical_deliveries_at_once_are_one_effect(sb_app: Flask, patreon_sandbox: Sandbox) -> None:
    member = patreon_sandbox.add_patron("ann@example.com", tier="Gold")
    patreon_sandbox.transport = lambda uri, headers, body: 200  # capture only
    (delivery, *_) = patreon_sandbox.flush_webhooks()
    barrier = threading.Barrier(20)
    statuses: list[int] = []

    def send() -> None:
        client = sb_app.test_client()
        barrier.wait()
        statuses.append(
            client.post(URL, data=delivery.body, headers=delivery.headers).status_code
        )

    threads = [threading.Thread(target=send) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 20
    assert len(deliveries(sb_app)) == 1
    e = get_state(sb_app).tables.events
    assert count(sb_app, "events", e.c.member_id == member.id) == 1


@pytest.mark.patreon_sandbox(members=150)
def test_a_run_with_fifty_webhooks_arriving_loses_nothing(sb_app: Flask, patreon_sandbox: Sandbox) -> None:
    sandbox, store = patreon_sandbox, get_state(sb_app).store
    set_policy(sb_app, cancelled="at_once")
    sync(sb_app, sandbox)
    sandbox.transport = lambda uri, headers, body: 200  # capture, deliver below from threads
    targets = [m for m in sandbox.members if m.patron_status == "active_patron"][:50]
    for i, member in enumerate(targets):
        sandbox.change_tier(member, "Gold") if i % 2 else sandbox.cancel(member)
    captured = sandbox.flush_webhooks()
    errors: list[BaseException] = []

    def deliver(batch: list[Delivery]) -> None:
        client = sb_app.test_client()
        for d in batch:
            try:
                assert client.post(URL, data=d.body, headers=d.headers).status_code == 200
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

    def run() -> None:
        try:
            sync(sb_app, sandbox)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run)] + [
        threading.Thread(target=deliver, args=(captured[i::4],)) for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for i, member in enumerate(targets):
        patron = store.get_patron(member.id)
        assert patron is not None
        if i % 2:
            # Gold is 1000 cents a month; Patreon reports an annual pledge's annual total
            assert patron.entitled_cents == 1000 * (member.cadence or 1) and patron.access is True
        else:
            assert patron.patron_status == "former_patron" and patron.access is False
    assert {r["status"] for r in deliveries(sb_app)} == {"done"}


MEMBER_DOC = {
    "data": {
        "type": "member",
        "id": "m-1",
        "attributes": {"patron_status": "active_patron", "currently_entitled_amount_cents": 500},
        "relationships": {"campaign": {"data": {"type": "campaign", "id": "c"}}},
    }
}


def _mutations() -> st.SearchStrategy[bytes]:
    leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20))
    value = st.recursive(leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                         max_leaves=8)

    def mutate(doc_and_path: tuple[Any, list[str], Any]) -> bytes:
        _doc, path, new = doc_and_path
        cursor = json.loads(json.dumps(MEMBER_DOC))
        target = cursor
        for key in path[:-1]:
            target = target.setdefault(key, {}) if isinstance(target, dict) else target
        if isinstance(target, dict):
            target[path[-1]] = new
        return json.dumps(cursor).encode()

    paths = st.sampled_from([["data"], ["data", "id"], ["data", "type"], ["data", "attributes"],
                             ["data", "attributes", "patron_status"], ["data", "relationships"], ["included"]])
    return st.tuples(st.just(None), paths, value).map(mutate)


#: values a hostile or broken sender could put anywhere: beyond 64 bits, wrong types, NULs, dates past the calendar.
_EXTREMES = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([2**31, 2**63, -(2**63) - 1, 2**70, 10**400, -1, 0, 1.5, float("inf"), True, None, "", "\x00",
                     "a" * 400, "9999-12-31T23:59:59+00:00", "0001-01-01T00:00:00+01:00", "2026-13-45", [], {}]),
    st.text(max_size=12),
)
_ATTRIBUTES = ["patron_status", "last_charge_status", "last_charge_date", "next_charge_date",
               "currently_entitled_amount_cents", "will_pay_amount_cents", "campaign_lifetime_support_cents",
               "lifetime_support_cents", "pledge_relationship_start", "pledge_cadence", "is_free_trial", "is_gifted",
               "is_follower", "email", "full_name"]


@st.composite
def _member_bodies(draw: st.DrawFn, campaign_id: str, member_ids: list[str]) -> bytes:
    """A member document shaped like Patreon's, with extreme values in its attributes, ids and campaign."""
    attributes = draw(st.dictionaries(st.sampled_from(_ATTRIBUTES), _EXTREMES, max_size=5))
    member_id = draw(st.sampled_from([*member_ids, "new-member", "m" * 65, "a,b", "\x00", ""]) | st.text(max_size=8))
    campaign = draw(st.sampled_from([campaign_id, None, "another-campaign", 2**70, "\x00"]))
    tiers = draw(st.lists(st.sampled_from(["t1", "a,b", "x" * 70, 5]), max_size=2))
    rels: dict[str, Any] = {"currently_entitled_tiers": {"data": [{"type": "tier", "id": t} for t in tiers]}}
    if campaign is not None:
        rels["campaign"] = {"data": {"type": "campaign", "id": campaign}}
    included = [{"type": "tier", "id": "t1", "attributes": {"amount_cents": draw(_EXTREMES), "title": "Gold"}}]
    return json.dumps({"data": {"type": "member", "id": member_id, "attributes": attributes, "relationships": rels},
                       "included": included}).encode()


def _bodies(campaign_id: str, member_ids: list[str]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        _member_bodies(campaign_id, member_ids),
        _mutations(),
        st.binary(max_size=300),  # not JSON, not UTF-8
        st.integers(min_value=1, max_value=50_000).map(lambda depth: b'{"data":' + b"[" * depth + b"]" * depth + b"}"),
        st.sampled_from([b"\xff\xfe{}", '{"data": {"type": "member", "id": "\u00e9"}}'.encode("utf-16")]),
    )


@pytest.mark.patreon_sandbox(members=2)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), event=st.sampled_from(sorted(MEMBER_TRIGGERS)) | st.sampled_from(["posts:publish", ""])
       | st.text(max_size=20))
def test_fuzzed_signed_bodies_never_get_a_5xx_and_every_delivery_ends(
    sb_app: Flask, patreon_sandbox: Sandbox, data: st.DataObject, event: str
) -> None:
    """Any signed body under any event: the answer is never 5xx, and a stored delivery's processing ends ``done``,
    ``ignored`` or ``failed`` (the jobs run inline: an exception escaping processing would leave it ``processing``,
    an unforeseen one caught by the cap would leave it ``retry``)."""
    state = get_state(sb_app)
    body = data.draw(_bodies(state.campaign_id(), [m.id for m in patreon_sandbox.members]))
    try:
        header_ok = event.encode("latin-1") and "\n" not in event and "\r" not in event
    except UnicodeEncodeError:
        header_ok = False
    before = len(deliveries(sb_app))
    status = post(sb_app, body, event if header_ok else "members:update", secret=patreon_sandbox.webhook_secret)
    assert status.status_code in {200, 400, 413}
    t = state.tables.webhook_deliveries
    with state.store.engine.connect() as conn:
        row = conn.execute(select(t.c.status, t.c.error).where(t.c.dedupe_key == dedupe_key(body))).first()
    if status.get_data() in (b"ok\n", b"duplicate\n"):
        assert row is not None and row.status in {"done", "ignored", "failed"}, row
    else:
        assert len(deliveries(sb_app)) == before


@pytest.mark.patreon_sandbox(members=0)
def test_register_and_status_commands(sb_app: Flask, patreon_sandbox: Sandbox) -> None:
    from cryptography.fernet import Fernet

    sb_app.config["PATRONLOCK_TOKEN_KEYS"] = [Fernet.generate_key().decode()]  # the secret is stored encrypted
    runner = sb_app.test_cli_runner()
    result = runner.invoke(args=["patronlock", "webhooks", "register", "--url", "https://site.test/patreon/webhook"])
    assert result.exit_code == 0, result.output
    assert "created" in result.output
    again = runner.invoke(args=["patronlock", "webhooks", "register", "--url", "https://site.test/patreon/webhook"])
    assert again.exit_code == 0 and "updated" in again.output
    hooks = [w for w in patreon_sandbox.webhooks if w.uri == "https://site.test/patreon/webhook"]
    assert len(hooks) == 1
    status = runner.invoke(args=["patronlock", "webhooks", "status"])
    assert status.exit_code == 0 and "https://site.test/patreon/webhook" in status.output
    assert "paused: no" in status.output


@pytest.mark.patreon_sandbox(members=3)
def test_webhook_cancel_revokes_directly(sb_app: Flask, patreon_sandbox: Sandbox) -> None:
    set_policy(sb_app, cancelled="at_once")
    sync(sb_app, patreon_sandbox)
    member = next(m for m in patreon_sandbox.members if m.patron_status == "active_patron")
    patreon_sandbox.advance(minutes=1)
    patreon_sandbox.cancel(member)
    patreon_sandbox.flush_webhooks()
    assert access_of(sb_app, member.id) is False
    assert timedelta(0) == timedelta(0)


@pytest.mark.patreon_sandbox(members=0)
@pytest.mark.parametrize("keys_at_register", [True, False], ids=["encrypted", "stored-in-the-clear-before"])
def test_rotate_keys_re_encrypts_the_registered_webhook_secret(
    make_app: Callable[..., Flask], patreon_sandbox: Sandbox, keys_at_register: bool
) -> None:
    from cryptography.fernet import Fernet

    from flask_patronlock.webhooks import WEBHOOK_SETTING_KEY, _secret_cache, stored_webhook, webhook_secrets

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    keys = [old] if keys_at_register else []
    app = sandbox_app(make_app, patreon_sandbox, PATRONLOCK_WEBHOOK_SECRETS=[], PATRONLOCK_TOKEN_KEYS=keys)
    runner = app.test_cli_runner()
    state = get_state(app)
    if keys_at_register:
        args = ["patronlock", "webhooks", "register", "--url", "https://site.test/patreon/webhook"]
        result = runner.invoke(args=args)
        assert result.exit_code == 0, result.output
    else:  # what an earlier version stored when no key was set (registering now refuses: see test_token_keys)
        with state.store.transaction() as conn:
            conn.execute(state.tables.settings.insert().values(
                key=WEBHOOK_SETTING_KEY, value={"id": "1", "uri": "https://site.test/patreon/webhook",
                                                "secret": patreon_sandbox.webhook_secret},
                version=0, updated_at=patreon_sandbox.now,
            ))
    with app.app_context():
        secret = stored_webhook(state)["secret"]  # type: ignore[index]
    assert secret
    if keys_at_register:  # without rotating, removing the old key would lose the secret: every webhook a 403
        app.config["PATRONLOCK_TOKEN_KEYS"] = [new]
        _secret_cache.clear()
        with app.app_context():
            assert webhook_secrets(state) == []
    app.config["PATRONLOCK_TOKEN_KEYS"] = [new, old] if keys_at_register else [new]
    result = runner.invoke(args=["patronlock", "rotate-keys"])
    assert result.exit_code == 0 and "the webhook's secret" in result.output, result.output
    app.config["PATRONLOCK_TOKEN_KEYS"] = [new]
    with app.app_context():
        assert webhook_secrets(state) == [secret]
        with state.store.engine.connect() as conn:
            table = state.tables.settings
            stored = conn.execute(select(table.c.value).where(table.c.key == WEBHOOK_SETTING_KEY)).scalar_one()
    assert "secret_encrypted" in stored and "secret" not in stored  # never in the clear once keys exist
    assert post(app, b'{"data": {}}', secret=secret).status_code != 403


# -- attacks: signed bodies written as an attacker holding a captured delivery (or the secret) would send them --------


def member_body(member_id: str, campaign_id: str | None, **attributes: Any) -> bytes:
    """A raw ``members:*`` body as Patreon shapes it (attributes, and the campaign relationship when named)."""
    attrs = {"patron_status": "active_patron", "last_charge_status": "Paid",
             "last_charge_date": "2026-01-01T00:00:00.000+00:00", "currently_entitled_amount_cents": 500,
             "pledge_relationship_start": "2025-06-01T00:00:00.000+00:00", **attributes}
    rels: dict[str, Any] = {"currently_entitled_tiers": {"data": []}}
    if campaign_id is not None:
        rels["campaign"] = {"data": {"type": "campaign", "id": campaign_id}}
    data = {"type": "member", "id": member_id, "attributes": attrs, "relationships": rels}
    return json.dumps({"data": data}).encode()


@pytest.mark.patreon_sandbox(members=0)
def test_an_integer_beyond_64_bits_ends_the_delivery_failed_not_stuck(sb_app: Flask, patreon_sandbox: Sandbox) -> None:
    """A member Patreon no longer knows (404), so the payload is the last word -- and its amount is 2**70."""
    campaign = get_state(sb_app).campaign_id()
    body = member_body("gone-member-1", campaign, currently_entitled_amount_cents=2**70)
    answer = post(sb_app, body, "members:pledge:delete", secret=patreon_sandbox.webhook_secret)
    assert answer.status_code == 200
    (row,) = deliveries(sb_app)
    assert row["status"] == "failed" and row["attempts"] == 1
    assert "malformed" in row["error"] and "currently_entitled_amount_cents" in row["error"]
    assert get_state(sb_app).store.get_patron("gone-member-1") is None
    assert get_state(sb_app).jobs.retry_due() == 0  # never tried again


@pytest.mark.patreon_sandbox(members=0)
@pytest.mark.parametrize(
    "attributes",
    [
        {"will_pay_amount_cents": 2**31},  # an INTEGER column on PostgreSQL
        {"campaign_lifetime_support_cents": 2**63},  # a BIGINT column
        {"pledge_cadence": 2**31 - 1},  # months added to a date
        {"last_charge_date": "9999-12-31T23:59:59+00:00"},  # a paid period past the end of the calendar
        {"last_charge_status": "Pa\u0000id"},  # PostgreSQL text holds no NUL
    ],
    ids=["int32", "int64", "cadence", "date", "nul"],
)
def test_values_the_database_or_the_calendar_cannot_hold_are_malformed(
    sb_app: Flask, patreon_sandbox: Sandbox, attributes: dict[str, Any]
) -> None:
    campaign = get_state(sb_app).campaign_id()
    body = member_body("gone-member-2", campaign, **attributes)
    assert post(sb_app, body, "members:update", secret=patreon_sandbox.webhook_secret).status_code == 200
    (row,) = deliveries(sb_app)
    assert row["status"] == "failed" and "malformed" in row["error"], row
    assert get_state(sb_app).store.get_patron("gone-member-2") is None


@pytest.mark.patreon_sandbox(members=1)
def test_a_delivery_that_keeps_failing_ends_failed_after_the_cap_and_shows_on_the_settings_page(
    sb_app: Flask, patreon_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    from adminhelpers import ADMIN_PREFIX
    from flask_login import LoginManager, UserMixin

    state, sandbox = get_state(sb_app), patreon_sandbox
    sb_app.config["PATRONLOCK_WEBHOOK_MAX_ATTEMPTS"] = 3
    member = sandbox.members[0]

    class Admin(UserMixin):
        id = "admin"

    LoginManager(sb_app).request_loader(lambda request: Admin())
    state.extension.admin_loader(lambda user: True)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OverflowError("Python int too large to convert to SQLite INTEGER")

    monkeypatch.setattr(state.store, "apply", broken)  # a failure nobody foresaw, on every attempt
    sandbox.change_tier(member, "Gold")
    sandbox.flush_webhooks()
    row = deliveries(sb_app)[0]
    assert row["status"] == "retry" and row["attempts"] == 1
    for _ in range(10):  # the sweep, long after: every claim and backoff has expired
        sandbox.advance(days=1)
        state.jobs.retry_due()
    row = deliveries(sb_app)[0]
    assert row["status"] == "failed" and row["attempts"] == 3
    assert "OverflowError" in row["error"]
    assert state.jobs.retry_due() == 0

    page = sb_app.test_client().get(ADMIN_PREFIX + "/sync").get_data(as_text=True)
    assert "data-failed-deliveries" in page and member.id in page
    assert "gave up after 3 attempts" in page


@pytest.mark.patreon_sandbox(members=0)
def test_a_claim_left_by_a_crashed_worker_counts_against_the_cap(sb_app: Flask, patreon_sandbox: Sandbox) -> None:
    """A worker that dies mid-delivery (killed, out of memory) leaves it ``processing``: the sweep takes it over, but
    only until the cap."""
    state, sandbox = get_state(sb_app), patreon_sandbox
    cap = int(sb_app.config["PATRONLOCK_WEBHOOK_MAX_ATTEMPTS"])
    sandbox.transport = lambda uri, headers, body: 200  # capture
    sandbox.add_patron("ann@example.com", tier="Gold")
    (delivery, *_) = sandbox.flush_webhooks()
    sb_app.config["PATRONLOCK_JOBS"] = "thread"
    state.jobs.submit_webhook = lambda delivery_id: None  # type: ignore[method-assign]  # stored, never processed
    assert sb_app.test_client().post(URL, data=delivery.body, headers=delivery.headers).status_code == 200
    t = state.tables.webhook_deliveries
    with state.store.engine.begin() as conn:
        conn.execute(t.update().values(status="processing", attempts=cap, next_attempt_at=sandbox.now))
    sandbox.advance(minutes=10)
    state.jobs.retry_due()
    (row,) = deliveries(sb_app)
    assert row["status"] == "failed" and row["attempts"] == cap and "attempts" in row["error"]


@pytest.mark.patreon_sandbox(members=0)
def test_a_captured_delivery_replayed_under_another_event_is_a_duplicate(
    sb_app: Flask, patreon_sandbox: Sandbox
) -> None:
    sandbox = patreon_sandbox
    sandbox.transport = lambda uri, headers, body: 200  # capture
    sandbox.add_patron("ann@example.com", tier="Gold")
    captured = sandbox.flush_webhooks()
    first = captured[0]
    client = sb_app.test_client()
    assert client.post(URL, data=first.body, headers=first.headers).get_data() == b"ok\n"
    for event in ("members:pledge:delete", "members:delete", "members:update", "members:pledge:create"):
        replay = {**first.headers, "X-Patreon-Event": event}  # the signature covers the body only: still valid
        answer = client.post(URL, data=first.body, headers=replay)
        assert answer.status_code == 200 and answer.get_data() == b"duplicate\n", event
    assert len(deliveries(sb_app)) == 1


@pytest.mark.patreon_sandbox(members=0)
@pytest.mark.parametrize("campaign", [None, "another-campaign"], ids=["no-campaign", "other-campaign"])
def test_a_member_patreon_cannot_place_in_this_campaign_is_not_stored(
    sb_app: Flask, patreon_sandbox: Sandbox, campaign: str | None
) -> None:
    """Signed, a valid member document, but the API answers 404 for the member and the body names no campaign (or
    another one): nothing says the member is this campaign's patron."""
    state = get_state(sb_app)
    body = member_body("stranger-1", campaign, currently_entitled_amount_cents=100_000, email="eve@example.com")
    assert post(sb_app, body, "members:pledge:create", secret=patreon_sandbox.webhook_secret).status_code == 200
    assert state.store.get_patron("stranger-1") is None
    (row,) = deliveries(sb_app)
    assert row["status"] == "ignored" and "campaign" in row["error"]
    (audit,) = state.store.history("stranger-1")
    assert audit["kind"] == "webhook_ignored" and audit["detail"]["delivery_id"] == row["id"]


@pytest.mark.patreon_sandbox(members=0)
def test_unconfirmed_member_while_the_api_is_down_waits_for_the_api(sb_app: Flask, patreon_sandbox: Sandbox) -> None:
    state, sandbox = get_state(sb_app), patreon_sandbox
    sandbox.api_down = True
    body = member_body("stranger-2", None, currently_entitled_amount_cents=100_000)
    assert post(sb_app, body, "members:update", secret=sandbox.webhook_secret).status_code == 200
    assert state.store.get_patron("stranger-2") is None
    (row,) = deliveries(sb_app)
    assert row["status"] == "retry"
    sandbox.api_down = False
    sandbox.advance(hours=1)
    state.jobs.retry_due()  # the API answers 404 now: still nobody's member here
    assert state.store.get_patron("stranger-2") is None
    assert deliveries(sb_app)[0]["status"] == "ignored"


@pytest.mark.patreon_sandbox(members=0)
def test_a_deleted_member_naming_this_campaign_is_still_applied(sb_app: Flask, patreon_sandbox: Sandbox) -> None:
    """Today's behaviour where Patreon vouches for the campaign: a member gone from the API (404) whose signed body
    names this campaign is applied from the payload."""
    state = get_state(sb_app)
    body = member_body("gone-member-3", state.campaign_id(), patron_status="former_patron")
    assert post(sb_app, body, "members:pledge:delete", secret=patreon_sandbox.webhook_secret).status_code == 200
    patron = state.store.get_patron("gone-member-3")
    assert patron is not None and patron.patron_status == "former_patron" and patron.campaign_id == state.campaign_id()
    assert deliveries(sb_app)[0]["status"] == "done"
