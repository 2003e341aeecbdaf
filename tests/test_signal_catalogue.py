"""The signal catalogue: every signal on flask-patronlock's namespace fires exactly once, with exactly the keyword
arguments its documentation lists, at the moment it documents.

Adding a signal is adding one :class:`Entry` to :data:`CATALOGUE`: ``test_every_signal_is_catalogued`` fails for a
signal on the namespace that is not in it, and ``test_documented_kwargs`` for one whose ``#:`` documentation does not
list exactly the catalogued keyword arguments.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import connect_site
import lockhelpers
import pytest
import sync_helpers
from blinker import Signal
from flask import Flask, g, has_request_context, render_template_string
from sphinx.pycode import ModuleAnalyzer
from sqlalchemy import create_engine, select
from sqlalchemy.pool import NullPool

from flask_patronlock import signals
from flask_patronlock.patreon.signatures import sign
from flask_patronlock.patron import Patron
from flask_patronlock.sandbox import render_webhook_member
from flask_patronlock.state import get_state
from flask_patronlock.sync import run_sync

Site = lockhelpers.Site
NOW = lockhelpers.NOW


@dataclass
class ConnectWorld:
    """A host site with Flask-Login and the patronlock views, pointed at a live sandbox; ``client`` is a browser."""

    site: connect_site.Site
    sandbox: Any
    client: Any
    user: Any = None

    @property
    def app(self) -> Flask:
        return self.site.app

# -- scenarios -------------------------------------------------------------------------------------------------------
#
# ``setup`` brings the world (a lockhelpers.Site, or a ConnectWorld) to the state before the event (receivers are not
# connected yet); ``act`` makes the catalogued signal fire exactly once. Page views go to /page, which asks for the
# "gold" lock twice (can_view and the template tag): a decision is made once per request and lock.

LATER = NOW + timedelta(minutes=5)


def _nothing(site: Site) -> None:
    pass


def _old_patron(site: Site, **kw: Any) -> None:
    """A patron first seen long after their pledge began (not news: no events)."""
    site.patron("m1", "p1", **kw)


def _new_patron(site: Site) -> None:
    site.patron("m1", "p1", pledge_start=NOW - timedelta(days=2))


def _update(**kw: Any) -> Callable[[Site], None]:
    def act(site: Site) -> None:
        site.patron("m1", "p1", observed_at=LATER, **kw)

    return act


def _declined(site: Site) -> None:
    _old_patron(site, patron_status="declined_patron", last_charge_status="Declined")


def _linked_not_patron(site: Site) -> None:
    site.link("u1", "p-u1")  # linked, but no membership stored: not_a_patron, a banner with a pledge button


def _view_page(site: Site) -> None:
    response = site.get("/page", user="u1")
    assert response.status_code == 200


def _view_page_twice(site: Site) -> None:
    _view_page(site)
    _view_page(site)


PATREON_EMAIL = "pat@patreon.example"


def _ready_to_connect(world: ConnectWorld) -> None:
    world.sandbox.add_patron(PATREON_EMAIL, tier="Gold")
    world.user = world.site.add_user("pat@site.example")
    connect_site.log_in(world.client, world.user)


def _connect(world: ConnectWorld) -> None:
    assert connect_site.oauth_flow(world.client, PATREON_EMAIL).status_code == 302


def _connected(world: ConnectWorld) -> None:
    _ready_to_connect(world)
    _connect(world)


def _unlink(world: ConnectWorld) -> None:
    token = connect_site.csrf_token(world.client)
    assert world.client.post("/patreon/unlink", data={"csrf_token": token}).status_code == 302


def _ready_to_sign_up(world: ConnectWorld) -> None:
    world.sandbox.add_patron(PATREON_EMAIL, tier="Gold")
    world.site.allow_signup()


def _log_in_with_patreon(world: ConnectWorld) -> None:
    browser = world.app.test_client()
    assert connect_site.oauth_flow(browser, PATREON_EMAIL, path="/patreon/login").status_code == 302


@dataclass
class SyncWorld:
    """An app pointed at a live sandbox, its work inline (reconcile runs and webhooks, issue 5)."""

    app: Flask
    sandbox: Any


def _patrons_in_sandbox(world: SyncWorld) -> None:
    world.sandbox.generate_members(60)
    assert run_sync(world.app).status == "complete"


def _run(world: SyncWorld) -> None:
    run_sync(world.app)


def _incomplete_once(world: SyncWorld) -> None:
    """With the alert after one incomplete run, a run that cannot read page 1 raises it."""
    world.app.config["PATRONLOCK_SYNC_ALERT_AFTER"] = 1
    world.sandbox.add_fault("error", page=1, status=400, times=None)
    assert not run_sync(world.app).complete


def _everyone_gone(world: SyncWorld) -> None:
    """The API suddenly lists nobody: a complete run that would revoke every patron is held by the breaker."""
    for member in list(world.sandbox.members):
        world.sandbox.delete_member(member)
    assert run_sync(world.app).status == "held"


def _post_webhook(world: SyncWorld) -> None:
    member = world.sandbox.add_patron("hook@patreon.example", tier="Gold")
    body = render_webhook_member(world.sandbox, member)
    secret = world.app.config["PATRONLOCK_WEBHOOK_SECRETS"][0]
    response = world.app.test_client().post(
        "/patreon/webhook",
        data=body,
        headers={"X-Patreon-Event": "members:pledge:create", "X-Patreon-Signature": sign(body, secret),
                 "Content-Type": "application/json"},
    )
    assert response.status_code == 200


def _run_with_a_dead_creator_token(world: SyncWorld) -> None:
    """Patreon kills the configured creator token, and no refresh token is configured to renew it."""
    world.sandbox.expire_creator_token()
    assert run_sync(world.app).status == "incomplete"


def _revocable(site: Site) -> None:
    _old_patron(site)


# -- the moments -------------------------------------------------------------------------------------------------------


def _read_elsewhere(app: Flask, statement: Any) -> Any:
    """The first row of ``statement`` on a connection of its own (not the app's pool): only committed data."""
    engine = create_engine(app.config["SQLALCHEMY_DATABASE_URI"], poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(statement).first()
    finally:
        engine.dispose()


def _committed(site: Site, kwargs: dict[str, Any]) -> bool:
    """An action is sent after commit: a new connection of its own already reads the patron's new state."""
    patron: Patron = kwargs["patron"]
    p = site.state.tables.patrons
    row = _read_elsewhere(
        site.app, select(p.c.observed_at, p.c.patron_status).where(p.c.member_id == patron.member_id)
    )
    return row is not None and (row.observed_at, row.patron_status) == (patron.observed_at, patron.patron_status)


def _linked(world: ConnectWorld, kwargs: dict[str, Any]) -> bool:
    """Sent after the link is committed: a connection of its own already reads the user's account row."""
    a = get_state(world.app).tables.accounts
    return _read_elsewhere(world.app, select(a.c.patreon_user_id).where(a.c.user_id == kwargs["user_id"])) is not None


def _unlinked(world: ConnectWorld, kwargs: dict[str, Any]) -> bool:
    """Sent after the unlink is committed: the account row is gone for a connection of its own."""
    a = get_state(world.app).tables.accounts
    return _read_elsewhere(world.app, select(a.c.patreon_user_id).where(a.c.user_id == kwargs["user_id"])) is None


def _in_page_view(site: Site, kwargs: dict[str, Any]) -> bool:
    return has_request_context()


def _before_the_decision(site: Site, kwargs: dict[str, Any]) -> bool:
    """The lock's rule is filtered before any decision of the lock is made (and so before one is cached)."""
    return has_request_context() and "gold" not in (g.get("_patronlock_decisions") or {})


def _run_row(world: SyncWorld, run_id: int) -> Any:
    runs = get_state(world.app).tables.sync_runs
    return _read_elsewhere(world.app, select(runs.c.status).where(runs.c.id == run_id))


def _run_started(world: SyncWorld, kwargs: dict[str, Any]) -> bool:
    """Sent once the run's row is committed as running."""
    row = _run_row(world, kwargs["run_id"])
    return row is not None and row.status == "running"


def _run_final(world: SyncWorld, kwargs: dict[str, Any]) -> bool:
    """Sent after the run's row is final."""
    row = _run_row(world, kwargs["run"].run_id)
    return row is not None and row.status == kwargs["run"].status != "running"


def _streak_final(world: SyncWorld, kwargs: dict[str, Any]) -> bool:
    """Sent after the row of the run that made the streak is final."""
    row = _run_row(world, kwargs["run"].run_id)
    return row is not None and row.status == "incomplete" and kwargs["streak"] == 1 and kwargs["last_complete"] is None


def _hold_committed(world: SyncWorld, kwargs: dict[str, Any]) -> bool:
    held = get_state(world.app).tables.held_revocations
    return _read_elsewhere(world.app, select(held.c.run_id).where(held.c.run_id == kwargs["run_id"])) is not None


def _delivery_stored(world: SyncWorld, kwargs: dict[str, Any]) -> bool:
    """Sent after the delivery row is committed."""
    d = get_state(world.app).tables.webhook_deliveries
    return _read_elsewhere(world.app, select(d.c.id).where(d.c.id == kwargs["delivery_id"])) is not None


def _delivery_done(world: SyncWorld, kwargs: dict[str, Any]) -> bool:
    """Sent after the delivery's processing is committed (applied from the API: the patron row exists)."""
    p = get_state(world.app).tables.patrons
    found = _read_elsewhere(world.app, select(p.c.member_id).where(p.c.member_id == kwargs["member_id"]))
    return kwargs["outcome"] == "applied" and found is not None


def _degraded_committed(world: SyncWorld, kwargs: dict[str, Any]) -> bool:
    """Sent after the degraded state is committed: a connection of its own reads it."""
    from flask_patronlock.creator import CREATOR_KEY

    s = get_state(world.app).tables.settings
    row = _read_elsewhere(world.app, select(s.c.value).where(s.c.key == CREATOR_KEY))
    return row is not None and row.value["needs_reauth"] and row.value["failure"] == kwargs["reason"]


@dataclass(frozen=True)
class Entry:
    """One signal: how to make it fire once, and what a receiver then gets."""

    signal: Signal
    #: exactly the documented keyword arguments.
    kwargs: frozenset[str]
    setup: Callable[[Any], None]
    act: Callable[[Any], None]
    #: asserted inside the receiver: it fires at the documented moment.
    moment: Callable[[Any, dict[str, Any]], bool]
    #: the fixture the scenario runs in: ``locks_world`` (a lockhelpers.Site), ``connect_world`` (a ConnectWorld) or
    #: ``sync_world`` (a SyncWorld).
    world: str = "locks_world"

    @property
    def is_filter(self) -> bool:
        return "value" in self.kwargs


ACTION = frozenset({"patron", "previous", "source", "run_id"})

CATALOGUE: tuple[Entry, ...] = (
    # actions: sent by Store.apply, after commit
    Entry(signals.patron_changed, ACTION | {"changes", "events"}, _nothing, _old_patron, _committed),
    Entry(signals.pledge_started, ACTION, _nothing, _new_patron, _committed),
    Entry(signals.tier_changed, ACTION | {"direction"}, _old_patron,
          _update(entitled_cents=2500, entitled_tier_ids=("t25",), will_pay_cents=2500), _committed),
    Entry(signals.charge_succeeded, ACTION | {"charged_at"}, _old_patron,
          _update(last_charge_date=NOW, next_charge_date=NOW + timedelta(days=30)), _committed),
    Entry(signals.payment_declined, ACTION, _old_patron,
          _update(patron_status="declined_patron", last_charge_status="Declined"), _committed),
    Entry(signals.payment_recovered, ACTION, _declined, _update(last_charge_date=NOW), _committed),
    Entry(signals.pledge_cancelled, ACTION, _old_patron,
          _update(patron_status="former_patron", entitled_cents=0, entitled_tier_ids=()), _committed),
    # filters: folded during a page view
    Entry(signals.access_decision, frozenset({"value", "lock", "rule", "viewer", "user", "now"}),
          _linked_not_patron, _view_page, _in_page_view),
    Entry(signals.banner_context, frozenset({"value", "lock", "decision"}), _linked_not_patron, _view_page,
          _in_page_view),
    Entry(signals.pledge_url, frozenset({"value", "tier", "cents", "lock", "decision"}), _linked_not_patron,
          _view_page, _in_page_view),
    Entry(signals.banner_html, frozenset({"value", "lock", "decision", "context"}), _linked_not_patron, _view_page,
          _in_page_view),
    # once per lock and settings version: two page views, one fold
    Entry(signals.lock_rule, frozenset({"value", "lock", "source"}), _linked_not_patron,
          _view_page_twice, _before_the_decision),
    # connect / log in with Patreon (issue 3): sent by the views, after the link is committed
    Entry(signals.patron_linked, frozenset({"user", "user_id", "patreon_user", "patron", "via"}), _ready_to_connect,
          _connect, _linked, "connect_world"),
    Entry(signals.patron_unlinked, frozenset({"user_id", "patreon_user_id", "reason"}), _connected, _unlink,
          _unlinked, "connect_world"),
    Entry(signals.patron_logged_in, frozenset({"user", "user_id", "patreon_user", "patron"}), _connected,
          _log_in_with_patreon, _linked, "connect_world"),
    Entry(signals.user_created_from_patreon, frozenset({"user", "user_id", "patreon_user"}), _ready_to_sign_up,
          _log_in_with_patreon, _linked, "connect_world"),
    # reconcile runs and webhooks (issue 5)
    Entry(signals.access_granted, ACTION, _nothing, _new_patron, _committed),
    Entry(signals.access_revoked, ACTION, _revocable,
          _update(patron_status="former_patron", last_charge_status="Refunded", entitled_cents=0,
                  entitled_tier_ids=()), _committed),
    Entry(signals.sync_started, frozenset({"run_id", "trigger", "started_at"}), _nothing, _run, _run_started,
          "sync_world"),
    Entry(signals.sync_finished, frozenset({"run"}), _nothing, _run, _run_final, "sync_world"),
    Entry(signals.sync_incomplete, frozenset({"run", "streak", "last_complete"}), _nothing, _incomplete_once,
          _streak_final, "sync_world"),
    Entry(signals.revocations_held, frozenset({"run_id", "revoking", "total", "member_ids", "reason", "losses"}),
          _patrons_in_sandbox, _everyone_gone, _hold_committed, "sync_world"),
    Entry(signals.webhook_received, frozenset({"delivery_id", "event", "member_id"}), _nothing, _post_webhook,
          _delivery_stored, "sync_world"),
    Entry(signals.webhook_processed, frozenset({"delivery_id", "event", "member_id", "outcome", "result"}), _nothing,
          _post_webhook, _delivery_done, "sync_world"),
    # the creator's token
    Entry(signals.creator_token_failed, frozenset({"reason", "failed_at", "origin"}), _nothing,
          _run_with_a_dead_creator_token, _degraded_committed, "sync_world"),
)


def _attribute_docs() -> dict[str, str]:
    """Each signal's ``#:`` documentation, by signal name."""
    docs = ModuleAnalyzer.for_module("flask_patronlock.signals").find_attr_docs()
    out = {}
    for (_, attr), lines in docs.items():
        value = getattr(signals, attr, None)
        if isinstance(value, Signal) and getattr(value, "name", None):
            out[value.name] = " ".join(line.strip() for line in lines)
    return out


def documented_kwargs(doc: str) -> set[str]:
    """The names after ``kwargs:`` in a signal's documentation, skipping what the parentheses say about them."""
    _, found, rest = doc.partition("kwargs:")
    assert found, f"no 'kwargs:' in {doc!r}"
    depth, top = 0, []
    for char in rest:
        depth += char == "("
        if depth == 0:
            top.append(char)
        depth -= char == ")" and depth > 0
    return set(re.findall(r"``([a-z_]+)``", "".join(top)))


def test_every_signal_is_catalogued() -> None:
    assert set(signals.patronlock_signals) == {entry.signal.name for entry in CATALOGUE}


@pytest.mark.parametrize("entry", CATALOGUE, ids=lambda e: e.signal.name)
def test_documented_kwargs(entry: Entry) -> None:
    doc = _attribute_docs()[entry.signal.name]
    assert documented_kwargs(doc) == set(entry.kwargs)
    assert doc.startswith("Filter:") == entry.is_filter  # the docs say which signals are filters


def test_kwargs_parser_skips_parentheses() -> None:
    assert documented_kwargs("x. kwargs: ``a``, ``b`` (dict of ``c`` -> (``d``, new)), ``e``.") == {"a", "b", "e"}


@pytest.fixture
def locks_world(make_app: Callable[..., Flask]) -> Iterator[Site]:
    site = lockhelpers.make_site(make_app)
    site.ext.lock("gold", tier="Gold")

    @site.app.get("/page")
    def page() -> str:
        return render_template_string(
            '{{ can_view("gold") }}{% patronlock "gold" %}the secret{% endpatronlock %}'
        )

    yield site


@pytest.fixture
def connect_world(make_app: Callable[..., Flask], patreon_sandbox: Any) -> ConnectWorld:
    site = connect_site.sandbox_site(make_app, patreon_sandbox)
    return ConnectWorld(site=site, sandbox=patreon_sandbox, client=site.app.test_client())


@pytest.fixture
def sync_world(make_app: Callable[..., Flask], patreon_sandbox: Any) -> SyncWorld:
    return SyncWorld(app=sync_helpers.sandbox_app(make_app, patreon_sandbox), sandbox=patreon_sandbox)


@pytest.mark.parametrize("entry", CATALOGUE, ids=lambda e: e.signal.name)
def test_fires_once_with_the_documented_kwargs_at_the_documented_moment(
    request: pytest.FixtureRequest, make_app: Callable[..., Flask], entry: Entry
) -> None:
    world = request.getfixturevalue(entry.world)  # make_app above: the world is on each database
    entry.setup(world)
    calls: list[tuple[Any, dict[str, Any], bool]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        calls.append((sender, kwargs, entry.moment(world, kwargs)))

    entry.signal.connect(receiver, sender=world.app)
    try:
        entry.act(world)
    finally:
        entry.signal.disconnect(receiver)
    assert len(calls) == 1, f"{entry.signal.name} fired {len(calls)} times"
    sender, kwargs, at_the_moment = calls[0]
    assert sender is world.app  # the real app, never the proxy
    assert set(kwargs) == entry.kwargs
    assert at_the_moment
