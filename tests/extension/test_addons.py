"""Add-ons: discovery through entry points, registration in code, the enable switch, isolation and strict mode."""

from __future__ import annotations

import gc
import importlib.metadata
import logging
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Blueprint, Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import insert, select

from flask_patronlock import Addon, AddonHooks, PatronLock, signals
from flask_patronlock.addons import ENTRY_POINT_GROUP, AddonError
from flask_patronlock.banners import pledge_link
from flask_patronlock.settings import is_addon_enabled, list_addons, set_addon_enabled
from flask_patronlock.state import get_state
from tests.helpers.constants import T0
from tests.helpers.patrons import snap
from tests.helpers.sites import count_queries, make_site


class Recorder(Addon):
    """Records patron changes and marks pledge links."""

    name = "recorder"
    version = "1.2"
    description = "Records what it hears."

    def __init__(self) -> None:
        self.changes: list[tuple[Any, str]] = []

    def init_app(self, app: Flask, hooks: AddonHooks) -> None:
        hooks.connect(signals.patron_changed, self.changed)
        hooks.connect(signals.pledge_url, self.mark, priority=10)

    def changed(self, app: Flask, *, patron: Any, **kwargs: Any) -> None:
        self.changes.append((app, patron.member_id))

    def mark(self, app: Flask, *, value: str, **kwargs: Any) -> str:
        return value + "#recorder"


class Boom(Addon):
    """Fails in every receiver."""

    name = "boom"

    def init_app(self, app: Flask, hooks: AddonHooks) -> None:
        @hooks.receiver(signals.patron_changed)
        def explode(app: Flask, **kwargs: Any) -> None:
            raise RuntimeError("boom in an action")

        @hooks.receiver(signals.access_decision, priority=1)
        def deny_everyone(app: Flask, **kwargs: Any) -> None:
            raise RuntimeError("boom in a filter")


class WithBlueprint(Addon):
    name = "pages"
    bp = Blueprint("addon_pages", __name__)

    def init_app(self, app: Flask, hooks: AddonHooks) -> None:
        hooks.register_blueprint(self.bp, url_prefix="/addon-pages")


@WithBlueprint.bp.get("/")
def addon_page() -> str:
    return "the add-on's page"


class HalfInstalled(Addon):
    name = "half"

    def init_app(self, app: Flask, hooks: AddonHooks) -> None:
        hooks.connect(signals.patron_changed, lambda app, **kw: None)
        raise ValueError("cannot finish")


NotAnAddon = object()  # an entry point target without init_app


@pytest.fixture
def new_app(db_url: str) -> Iterator[Callable[..., Flask]]:
    """``new_app(*addons, **config)``: an app whose PatronLock has ``addons`` registered in code before init_app."""
    made: list[tuple[Flask, SQLAlchemy]] = []

    def factory(*addons: Any, **config: Any) -> Flask:
        app = Flask(f"addon_app_{len(made)}")
        app.config.update(
            TESTING=True, SECRET_KEY="s", SQLALCHEMY_DATABASE_URI=db_url, PATRONLOCK_STRICT_SIGNALS=True,
            PATRONLOCK_CAMPAIGN_ID="c1",
        )
        app.config.update(config)
        db = SQLAlchemy()
        db.init_app(app)
        patronlock = PatronLock(db=db)
        for addon in addons:
            patronlock.register_addon(addon)
        patronlock.init_app(app)
        with app.app_context():
            db.create_all()
        made.append((app, db))
        return app

    yield factory
    for app, db in made:
        with app.app_context():
            db.engine.dispose()


def fake_entry_points(monkeypatch: pytest.MonkeyPatch, *specs: tuple[str, str]) -> list[str]:
    """Make ``importlib.metadata.entry_points(group=...)`` list ``specs`` ((name, "module:attr")); returns the
    names of the entry points that were loaded, in order."""
    loaded: list[str] = []

    class Tracking(importlib.metadata.EntryPoint):
        def load(self) -> Any:
            loaded.append(self.name)
            return super().load()

    points = importlib.metadata.EntryPoints(Tracking(name, value, ENTRY_POINT_GROUP) for name, value in specs)
    real = importlib.metadata.entry_points

    def entry_points(**params: Any) -> Any:
        if params.get("group") == ENTRY_POINT_GROUP:
            return points
        return real(**params)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    return loaded


# -- installing --------------------------------------------------------------------------------------------------------


def test_registered_in_code_and_listed(new_app: Callable[..., Flask]) -> None:
    recorder = Recorder()
    app = new_app(recorder)
    with app.app_context():
        (info,) = list_addons()
        assert (info.name, info.version, info.description, info.enabled, info.origin, info.loaded) == (
            "recorder", "1.2", "Records what it hears.", True, "code", True
        )
        get_state().store.apply(snap(), source="sync", observed_at=T0)
    assert recorder.changes == [(app, "m1")]


def test_one_instance_serves_two_apps_each_hearing_only_its_own(new_app: Callable[..., Flask]) -> None:
    recorder = Recorder()
    first, second = new_app(recorder), new_app(recorder)
    get_state(first).store.apply(snap("m1"), source="sync", observed_at=T0)
    get_state(second).store.apply(snap("m2"), source="sync", observed_at=T0)
    assert recorder.changes == [(first, "m1"), (second, "m2")]


def test_receivers_leave_with_a_discarded_app() -> None:
    def recorder_receivers() -> int:
        refs = signals.patron_changed.receivers.values()
        live = [ref() if isinstance(ref, weakref.ref) else ref for ref in refs]
        return sum(getattr(r, "patronlock_addon", None) == "recorder" for r in live)

    gc.collect()  # the apps of earlier tests
    before = recorder_receivers()
    app = Flask("discarded")
    app.config.update(SQLALCHEMY_DATABASE_URI="sqlite://")
    PatronLock(app, db=SQLAlchemy(app)).register_addon(Recorder(), app=app)
    assert recorder_receivers() == before + 1
    del app
    gc.collect()
    assert recorder_receivers() == before


def test_register_on_one_app_after_init_app(new_app: Callable[..., Flask]) -> None:
    app = new_app()
    recorder = Recorder()
    get_state(app).extension.register_addon(recorder, app=app)
    get_state(app).store.apply(snap(), source="sync", observed_at=T0)
    assert recorder.changes == [(app, "m1")]


def test_discovered_through_entry_points(new_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = fake_entry_points(monkeypatch, ("recorder", f"{__name__}:Recorder"))
    app = new_app()
    assert loaded == ["recorder"]
    with app.app_context():
        (info,) = list_addons()
        assert info.name == "recorder" and info.loaded
        assert info.origin == f"entry point recorder = {__name__}:Recorder"
        with app.test_request_context():
            assert pledge_link(None).endswith("#recorder")


def test_broken_addons_are_logged_by_name_and_skipped(
    new_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake_entry_points(
        monkeypatch,
        ("missing", "patronlock_no_such_addon_module:Thing"),
        ("not_one", f"{__name__}:NotAnAddon"),
        ("renamed", f"{__name__}:Recorder"),  # the add-on calls itself "recorder"
        ("half", f"{__name__}:HalfInstalled"),
        ("recorder", f"{__name__}:Recorder"),
    )
    app = new_app(PATRONLOCK_STRICT_SIGNALS=False)
    with app.app_context():
        found = {info.name: info for info in list_addons()}
    assert found["recorder"].loaded
    assert "could not be imported" in (found["missing"].error or "")
    assert "has no init_app" in (found["not_one"].error or "")
    assert "entry point is named 'renamed'" in (found["renamed"].error or "")
    assert "init_app failed: ValueError('cannot finish')" in (found["half"].error or "")
    for name in ("missing", "not_one", "renamed", "half"):
        assert f"addon {name} (entry point {name} = " in caplog.text
    # the half-installed add-on's receiver was disconnected again
    assert all(
        getattr(r, "patronlock_addon", None) != "half" for r in signals.patron_changed.receivers_for(app)
    )


def test_strict_mode_raises_for_a_broken_addon(
    new_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_entry_points(monkeypatch, ("missing", "patronlock_no_such_addon_module:Thing"))
    with pytest.raises(AddonError, match=r"addon missing .* could not be imported"):
        new_app()


def test_denylist_and_autoload(new_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = fake_entry_points(
        monkeypatch, ("missing", "patronlock_no_such_addon_module:Thing"), ("recorder", f"{__name__}:Recorder")
    )
    app = new_app(Recorder(), PATRONLOCK_ADDONS_DENYLIST="missing, recorder")
    assert loaded == []  # denied add-ons are not even imported, and code-registered ones are denied too
    assert len(get_state(app).addons) == 0
    recorder = Recorder()
    app = new_app(recorder, PATRONLOCK_ADDONS_AUTOLOAD=False)
    assert loaded == []
    assert [a.origin for a in get_state(app).addons] == ["code"]


def test_the_same_name_twice_keeps_the_first(
    new_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake_entry_points(monkeypatch, ("recorder", f"{__name__}:Recorder"))
    app = new_app(Recorder(), PATRONLOCK_STRICT_SIGNALS=False)
    (installed,) = get_state(app).addons
    assert installed.origin.startswith("entry point") and installed.loaded
    assert "addon recorder (code) is installed twice" in caplog.text
    with pytest.raises(AddonError, match="installed twice"):
        new_app(Recorder())


# -- the switch --------------------------------------------------------------------------------------------------------


def test_disabled_addon_receivers_do_not_run_and_the_switch_is_live(new_app: Callable[..., Flask]) -> None:
    recorder = Recorder()
    app = new_app(recorder, PATRONLOCK_SETTINGS_CHECK_SECONDS=0)
    state = get_state(app)
    with app.app_context():
        set_addon_enabled("recorder", False, by="creator-1")
        assert not is_addon_enabled("recorder")
        (info,) = list_addons()
        assert not info.enabled and info.updated_by == "creator-1" and info.updated_at is not None
        state.store.apply(snap("m1"), source="sync", observed_at=T0)
        with app.test_request_context():
            assert not pledge_link(None).endswith("#recorder")  # a disabled filter leaves the value alone
        set_addon_enabled("recorder", True, by="creator-1")
        state.store.apply(snap("m2"), source="sync", observed_at=T0)
        events = state.tables.events
        with state.store.engine.connect() as conn:
            audit = conn.execute(
                select(events.c.kind, events.c.user_id, events.c.detail).where(events.c.kind == "addon_switched")
            ).all()
    assert recorder.changes == [(app, "m2")]
    assert [(row.user_id, row.detail["enabled"]) for row in audit] == [("creator-1", False), ("creator-1", True)]


def test_off_by_default_until_switched_on(new_app: Callable[..., Flask]) -> None:
    recorder = Recorder()
    app = new_app(recorder, PATRONLOCK_ADDONS_ENABLED_BY_DEFAULT=False)
    get_state(app).store.apply(snap("m1"), source="sync", observed_at=T0)
    with app.app_context():
        assert not list_addons()[0].enabled
        set_addon_enabled("recorder", True)
        get_state().store.apply(snap("m2"), source="sync", observed_at=T0)
    assert recorder.changes == [(app, "m2")]


def test_unknown_addon_cannot_be_switched(new_app: Callable[..., Flask]) -> None:
    app = new_app(Recorder())
    with app.app_context(), pytest.raises(LookupError, match=r"no add-on named 'nope'.*installed: recorder"):
        set_addon_enabled("nope", False)


def test_the_switch_costs_no_query_per_signal(new_app: Callable[..., Flask]) -> None:
    app = new_app(Recorder())
    with app.test_request_context():
        pledge_link(None)  # loads the settings once
        with count_queries(app) as statements:
            for _ in range(20):
                assert pledge_link(None).endswith("#recorder")
    assert statements == []


def test_disabled_addon_blueprint_answers_404(new_app: Callable[..., Flask]) -> None:
    app = new_app(WithBlueprint(), PATRONLOCK_SETTINGS_CHECK_SECONDS=0)
    client = app.test_client()
    assert client.get("/addon-pages/").text == "the add-on's page"
    with app.app_context():
        set_addon_enabled("pages", False)
    assert client.get("/addon-pages/").status_code == 404
    with app.app_context():
        set_addon_enabled("pages", True)
    assert client.get("/addon-pages/").status_code == 200
    get_state(app).addons.uninstall("pages")
    assert client.get("/addon-pages/").status_code == 404  # uninstalled: gone, though switched on


# -- isolation ---------------------------------------------------------------------------------------------------------


def test_a_failing_action_receiver_never_breaks_the_write(
    new_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder()
    app = new_app(Boom(), recorder, PATRONLOCK_STRICT_SIGNALS=False)
    with caplog.at_level(logging.ERROR, logger="flask_patronlock.addons"):
        result = get_state(app).store.apply(snap(), source="webhook", observed_at=T0)
    assert result.changed and get_state(app).store.get_patron("m1") is not None
    assert recorder.changes == [(app, "m1")]  # the other add-on still heard it
    assert "addon boom receiver" in caplog.text and "explode failed on signal 'patron-changed'" in caplog.text


def test_strict_mode_reraises_with_the_addon_named(new_app: Callable[..., Flask]) -> None:
    app = new_app(Boom())
    with pytest.raises(RuntimeError, match="boom in an action") as raised:
        get_state(app).store.apply(snap(), source="sync", observed_at=T0)
    assert any("in addon boom receiver" in note for note in raised.value.__notes__)


def test_a_failing_filter_receiver_never_breaks_a_page_view(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    site = make_site(make_app, PATRONLOCK_STRICT_SIGNALS=False)
    site.ext.lock("gold", tier="Gold")
    site.ext.register_addon(Boom(), app=site.app)

    @site.app.get("/gold")
    def gold() -> str:
        from flask_patronlock import can_view

        return "yes" if can_view("gold") else "no"

    site.linked_patron("u1")  # a Gold patron
    response = site.get("/gold", user="u1")
    assert response.status_code == 200 and response.text == "yes"  # the decision stands
    assert "addon boom receiver" in caplog.text and "deny_everyone failed on signal 'access-decision'" in caplog.text


# -- the CLI -----------------------------------------------------------------------------------------------------------


def test_cli_lists_and_switches(new_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(monkeypatch, ("missing", "patronlock_no_such_addon_module:Thing"))
    app = new_app(Recorder(), PATRONLOCK_STRICT_SIGNALS=False, PATRONLOCK_SETTINGS_CHECK_SECONDS=0)
    runner = app.test_cli_runner()
    listing = runner.invoke(args=["patronlock", "addons", "list"])
    assert listing.exit_code == 0
    assert "recorder" in listing.output and " on " in listing.output and "BROKEN" in listing.output
    assert "error: could not be imported" in listing.output
    off = runner.invoke(args=["patronlock", "addons", "disable", "recorder", "--by", "kopi"])
    assert off.exit_code == 0 and "recorder is now off" in off.output
    with app.app_context():
        assert not is_addon_enabled("recorder")
        assert list_addons()[1].updated_by == "kopi"
    assert runner.invoke(args=["patronlock", "addons", "enable", "recorder"]).exit_code == 0
    unknown = runner.invoke(args=["patronlock", "addons", "enable", "nope"])
    assert unknown.exit_code == 2 and "no add-on named 'nope'" in unknown.output


# -- the add-on data API and the package's public names ----------------------------------------------------------------


class Reader(Addon):
    """Keeps the data its init_app got, and what a receiver read through patron_data(app)."""

    name = "reader"

    def init_app(self, app: Flask, hooks: AddonHooks) -> None:
        self.hooks_data = hooks.data
        self.seen: list[Any] = []
        hooks.connect(signals.patron_changed, self.changed)

    def changed(self, app: Flask, *, patron: Any, **kwargs: Any) -> None:
        from flask_patronlock import patron_data

        data = patron_data(app)  # a receiver has the app, maybe no context
        self.seen.append((data.patron(patron.member_id), data.now()))


def test_the_data_api_reads_what_flask_patronlock_stores(new_app: Callable[..., Flask]) -> None:
    from flask_patronlock import PatronData, patron_data
    from flask_patronlock.patreon import TierSnapshot

    reader = Reader()
    app = new_app(reader)
    state = get_state(app)
    state.store.clock = lambda: T0
    data = reader.hooks_data
    assert isinstance(data, PatronData) and data.engine is state.store.engine and data.tables is state.tables
    assert data.metadata is state.db.metadata
    state.store.replace_tiers("c1", [TierSnapshot(id="t5", title="Gold", amount_cents=500)])
    state.store.apply(snap(), source="sync", observed_at=T0)
    assert [(p.member_id, now) for p, now in reader.seen] == [("m1", T0)]
    with app.app_context():
        current = patron_data()
        assert current.now() == T0 and current.campaign_id() == "c1"
        assert [t.title for t in current.tiers().values()] == ["Gold"]
        assert current.policy() == state.settings.current().policy
        assert current.patron("m1") == state.store.get_patron("m1") and current.patron("nobody") is None
        assert current.patron_for_user("42") is None  # no linked account
    with data.engine.connect() as conn:
        row = conn.execute(select(data.tables.patrons)).mappings().one()
    stored = state.store.get_patron("m1")
    assert data.patron_from_row(row, local_user_id=7) == (stored.replace(local_user_id="7") if stored else None)
    # linked, with a member in this campaign and one in another: the site's campaign's, as a page view reads it
    with state.store.engine.begin() as conn:
        conn.execute(insert(state.tables.accounts).values(user_id="42", patreon_user_id="u-m1", scope=""))
    state.store.apply(snap(campaign_id="c2", member_id="m2", user_id="u-m1"), source="sync", observed_at=T0)
    for campaign, member in (("c1", "m1"), ("c2", "m2")):
        app.config["PATRONLOCK_CAMPAIGN_ID"] = campaign
        linked = data.patron_for_user(42)
        assert linked is not None and (linked.member_id, linked.local_user_id) == (member, "42")


def test_the_public_names_are_few_and_the_former_ones_warn() -> None:
    import flask_patronlock

    assert len(flask_patronlock.__all__) <= 30
    for internal in ("get_state", "PatronLockState", "Store", "ApplyResult", "Accounts"):
        assert internal not in flask_patronlock.__all__
        with pytest.warns(DeprecationWarning, match=f"flask_patronlock.{internal} is no longer"):
            moved = getattr(flask_patronlock, internal)
        assert moved is not None
    with pytest.raises(AttributeError):
        flask_patronlock.no_such_name  # noqa: B018
    for name in flask_patronlock.__all__:
        assert getattr(flask_patronlock, name) is not None
