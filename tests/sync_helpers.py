"""Helpers shared by the reconcile-run, webhook and jobs tests: an app wired to a live sandbox, fast clients."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from flask import Flask
from sqlalchemy import func, select

from flask_patronlock.patreon.client import PatreonClient
from flask_patronlock.patreon.ratelimit import RateLimiter
from flask_patronlock.policy import PolicySettings
from flask_patronlock.sandbox import Sandbox
from flask_patronlock.state import get_state
from flask_patronlock.sync import RunResult, run_sync


def sandbox_app(make_app: Callable[..., Flask], sandbox: Sandbox, **config: Any) -> Flask:
    """An app pointed at ``sandbox``, work inline, the store's clock the sandbox's."""
    settings = dict(sandbox.config, PATRONLOCK_JOBS="inline", PATRONLOCK_SYNC_PAGE_SIZE=50)
    settings.update(config)
    app = make_app(**settings)
    get_state(app).store.clock = lambda: sandbox.now
    return app


def webhook_app(make_app: Callable[..., Flask], sandbox: Sandbox, path: str = "/patreon/webhook") -> Flask:
    """:func:`sandbox_app` with a sandbox webhook that delivers into the app's own webhook route at ``path``."""
    app = sandbox_app(make_app, sandbox)
    client = app.test_client()
    sandbox.add_webhook("http://site.test" + path)
    sandbox.transport = lambda uri, headers, body: client.post(
        urlsplit(uri).path, data=body, headers=headers
    ).status_code
    return app


def set_policy(app: Flask, **settings: Any) -> None:
    policy = PolicySettings(**settings)
    get_state(app).store.policy_settings = lambda: policy


def fast_client(sandbox: Sandbox, *, max_retries: int = 2, read_timeout: float = 5.0) -> PatreonClient:
    """The creator's client without waiting between retries (fault tests)."""
    return PatreonClient(
        client_id=sandbox.client_id,
        client_secret=sandbox.client_secret,
        access_token=sandbox.creator_access_token,
        api_base=sandbox.base_url,
        oauth_base=sandbox.base_url,
        timeout=(2.0, read_timeout),
        max_retries=max_retries,
        rate_limiter=RateLimiter(max_calls=100_000, period=1.0),
        sleep=lambda _: None,
    )


def sync(app: Flask, sandbox: Sandbox, **kw: Any) -> RunResult:
    with fast_client(sandbox, **kw) as client:
        return run_sync(app, client=client)


def count(app: Flask, table: str, *where: Any) -> int:
    state = get_state(app)
    t = getattr(state.tables, table)
    with state.store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(t).where(*where)).scalar_one())


def access_of(app: Flask, member_id: str) -> bool | None:
    patron = get_state(app).store.get_patron(member_id)
    return None if patron is None else patron.access


def revoked_in_run(app: Flask, run_id: int) -> int:
    e = get_state(app).tables.events
    return count(app, "events", e.c.run_id == run_id, e.c.events.like("%access_revoked%"))
