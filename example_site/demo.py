"""The offline demo's own machinery, when the Patreon sandbox is mounted in the site (no real credentials).

* **One clock.** :class:`DemoClock` is the time for both sides: the sandbox's clock (Patreon's) runs with real time,
  and the site reads it through ``PATRONLOCK_CLOCK``. "Advance the clock a month" moves the sandbox, so the site
  decides a month later too, and every date on every page comes from the same clock.
* **Kept together.** :class:`KeptSandbox` saves the sandbox's whole state in the site's own database (table
  ``example_sandbox``) after every request that changed it, and :func:`open_demo` loads it on the next start. The
  site's patrons and the sandbox's members therefore survive a restart together, and a new visitor never gets a
  Patreon id the sandbox gave someone before. A database whose patrons the sandbox does not know (one an earlier
  version of the example made) is moved aside, with a message, and both start afresh.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Column, DateTime, Engine, Integer, MetaData, Table, Text, inspect, select, update

from flask_patronlock import ConfigurationError
from flask_patronlock.dbutil import transaction
from flask_patronlock.models import tables_for
from flask_patronlock.sandbox import Sandbox, SandboxError

__all__ = ["Demo", "DemoClock", "KeptSandbox", "move_database_aside", "open_demo", "sandbox_table"]

log = logging.getLogger(__name__)

#: the table the sandbox is kept in, beside the site's own.
TABLE = "example_sandbox"
#: the version of what the row holds (the sandbox's own format is checked by ``Sandbox.load_state``).
FORMAT = 1

def sandbox_table(metadata: MetaData) -> Table:
    """The one-row table of the kept sandbox on ``metadata`` (defined on first use)."""
    table = metadata.tables.get(TABLE)
    if table is None:
        table = Table(
            TABLE,
            metadata,
            Column("id", Integer, primary_key=True),
            Column("state", Text, nullable=False),
            Column("saved_at", DateTime(timezone=True), nullable=False),  # for the curious: when, in UTC
        )
    return table


class DemoClock:
    """The demo's one clock: the sandbox's, kept running with real time.

    :meth:`now` moves the sandbox's clock up to real time plus the demo's offset (which is what makes renewals fall
    due as days pass) and returns it. Whoever moves the sandbox's clock on purpose (the panel's "advance the clock a
    month", the sandbox's own controls) moves the offset with it: from then on the demo runs that much ahead.
    """

    def __init__(
        self, sandbox: Sandbox, offset: timedelta = timedelta(0), real: Callable[[], datetime] | None = None
    ) -> None:
        self.sandbox = sandbox
        self._offset = offset
        self._real = real or (lambda: datetime.now(UTC))
        self._seen = sandbox.now

    @property
    def offset(self) -> timedelta:
        """How far the demo's time is ahead of the real time."""
        return self._offset

    def now(self) -> datetime:
        """The time on both sides, to the second (aware UTC)."""
        sandbox = self.sandbox
        with sandbox.lock:
            real = self._real().replace(microsecond=0)
            if sandbox.now != self._seen:  # moved on purpose since we last looked: keep that lead from now on
                self._offset = sandbox.now - real
            target = real + self._offset
            if target > sandbox.now:
                sandbox.travel_to(target)  # what falls due on Patreon meanwhile happens (renewals, retries)
            self._seen = sandbox.now
            return self._seen


def _read(engine: Engine, table: Table) -> dict[str, Any] | None:
    with engine.connect() as conn:
        text = conn.execute(select(table.c.state).where(table.c.id == 1)).scalar_one_or_none()
    return json.loads(text) if text is not None else None


class KeptSandbox:
    """Saves the sandbox (and the clock's offset, and when the demo opened) in the site's database whenever they
    changed."""

    def __init__(self, engine: Engine, table: Table, clock: DemoClock, opened_at: datetime) -> None:
        self.engine = engine
        self.table = table
        self.clock = clock
        #: when the demo first opened, on its own clock: what its dated posts count from.
        self.opened_at = opened_at
        self._lock = threading.RLock()
        self._last: str | None = None
        self._warned = False

    def save(self) -> bool:
        """Write the state if it differs from the last one written (the clock running on alone is no change: it is
        caught up again on load). Returns whether it wrote."""
        with self._lock:
            sandbox = self.clock.sandbox
            try:
                with sandbox.lock:
                    state = sandbox.dump_state()
                    offset = self.clock.offset.total_seconds()
            except SandboxError as exc:  # something not a scenario's is scheduled: keep the last saved state
                if not self._warned:
                    log.warning("The demo's sandbox could not be saved (%s); its last saved state is kept.", exc)
                    self._warned = True
                return False
            now = state.pop("now")
            kept = {"format": FORMAT, "clock_offset": offset, "opened_at": self.opened_at.isoformat(), "sandbox": state}
            compared = json.dumps(kept, sort_keys=True)
            if compared == self._last:
                return False
            state["now"] = now
            text = json.dumps(kept, sort_keys=True)
            table, saved_at = self.table, datetime.now(UTC)
            with transaction(self.engine) as conn:
                done = conn.execute(update(table).where(table.c.id == 1).values(state=text, saved_at=saved_at))
                if done.rowcount == 0:
                    conn.execute(table.insert().values(id=1, state=text, saved_at=saved_at))
            self._last = compared
            return True

    def wrap(self, wsgi_app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
        """``wsgi_app`` with the clock caught up before each request and the state saved after it."""

        def kept(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            self.clock.now()
            try:
                return wsgi_app(environ, start_response)
            finally:
                self.save()

        return kept


@dataclass
class Demo:
    """The demo's sandbox, its clock and its keeper."""

    sandbox: Sandbox
    clock: DemoClock
    kept: KeptSandbox

    @property
    def opened_at(self) -> datetime:
        """When the demo first opened, on its own clock (kept across restarts)."""
        return self.kept.opened_at


def move_database_aside(engine: Engine, why: str) -> Path | None:
    """Rename the SQLite database file of ``engine`` to ``<name>.<timestamp>.old`` (never deleted), saying ``why``;
    the next connection makes a new, empty one. ``None`` for a database that is not a SQLite file."""
    database = engine.url.database
    if engine.url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    engine.dispose()
    old = Path(database)
    kept = old.with_name(f"{old.name}.{datetime.now(UTC):%Y%m%d%H%M%S}.old")
    old.rename(kept)
    log.warning("%s: moved the example's database to %s and made a new one.", why, kept)
    print(f"{why}: moved the demo database to {kept}; starting with a new one.")
    return kept


def _strangers(engine: Engine, metadata: MetaData, sandbox: Sandbox | None) -> list[str]:
    """Patreon user ids the site's database knows (links and stored patrons) that ``sandbox`` does not."""
    tables = tables_for(metadata)
    existing = set(inspect(engine).get_table_names())
    known: set[str] = set()
    with engine.connect() as conn:
        if tables.accounts.name in existing:
            known |= set(conn.execute(select(tables.accounts.c.patreon_user_id)).scalars())
        if tables.patrons.name in existing:
            known |= set(conn.execute(select(tables.patrons.c.patreon_user_id)).scalars())
    known.discard(None)
    if sandbox is None:
        return sorted(known)
    users = {user.id for user in sandbox.users}
    return sorted(known - users)


def open_demo(app: Flask, db: SQLAlchemy, new_sandbox: Callable[[], Sandbox]) -> Demo:
    """The demo's sandbox as it was kept in the site's database (or ``new_sandbox()`` the first time), its clock
    and its keeper. A database that holds patrons the kept sandbox does not know is moved aside first (a SQLite
    file; another database is left alone and the site refuses to start, saying why)."""
    with app.app_context():
        engine = db.engine
    table = sandbox_table(db.metadata)
    table.create(engine, checkfirst=True)
    saved = _read(engine, table)
    sandbox: Sandbox | None = None
    offset = timedelta(0)
    opened_at: datetime | None = None
    problem = None
    if saved is not None:
        try:
            if saved.get("format") != FORMAT:
                raise SandboxError(f"a kept sandbox of another format ({saved.get('format')!r})")
            sandbox = Sandbox.load_state(saved["sandbox"])
            offset = timedelta(seconds=float(saved["clock_offset"]))
            if saved.get("opened_at"):  # kept since the example's early-access post; older rows open now
                opened_at = datetime.fromisoformat(saved["opened_at"])
        except (SandboxError, KeyError, TypeError, ValueError) as exc:
            problem = f"The demo's kept Patreon sandbox cannot be read ({exc})"
    if problem is None:
        strangers = _strangers(engine, db.metadata, sandbox)
        if strangers:
            accounts = "a Patreon account" if len(strangers) == 1 else f"{len(strangers)} Patreon accounts"
            problem = (
                f"The demo database knows {accounts} its sandbox does not (an earlier version of the example made "
                "it, and did not keep the sandbox)"
            )
    if problem is not None:
        if move_database_aside(engine, problem) is None:
            raise ConfigurationError(
                f"{problem}. Empty the example's tables in {engine.url.render_as_string(hide_password=True)} "
                "(or point EXAMPLE_DATABASE_URL at a new database) and start it again."
            )
        table.create(engine, checkfirst=True)
        sandbox, offset, opened_at = None, timedelta(0), None
    if sandbox is None:
        sandbox = new_sandbox()
    clock = DemoClock(sandbox, offset)
    if opened_at is None:
        opened_at = sandbox.now
    kept = KeptSandbox(engine, table, clock, opened_at)
    clock.now()  # caught up with the time that passed while the demo was stopped
    kept.save()
    return Demo(sandbox, clock, kept)

