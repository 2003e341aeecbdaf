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

from flask_patronlock.extension import get_state
from flask_patronlock.patreon.signatures import sign
from flask_patronlock.sandbox import Delivery, Sandbox

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
    assert len(rows) == len(sent) and {r["status"] for r in rows} == {"done"}


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
    # the same old body under another trigger is a new delivery: processed, but the API says Gold
    other = "members:pledge:update" if old.event != "members:pledge:update" else "members:update"
    assert post(sb_app, old.body, other, secret=sandbox.webhook_secret).status_code == 200
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
    # an old payload replayed under another trigger while the API is down is older than the stored state: skipped
    stale = old[0]
    other = "members:pledge:update" if stale.event != "members:pledge:update" else "members:update"
    assert post(sb_app, stale.body, other, secret=sandbox.webhook_secret).status_code == 200
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


@pytest.mark.patreon_sandbox(members=0)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(st.binary(max_size=300), _mutations()),
       event=st.sampled_from(["members:update", "members:pledge:delete", "posts:publish", ""]))
def test_fuzzed_signed_bodies_never_get_a_5xx(sb_app: Flask, patreon_sandbox: Sandbox, body: bytes, event: str) -> None:
    status = post(sb_app, body, event, secret=patreon_sandbox.webhook_secret).status_code
    assert status in {200, 400, 413}


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
