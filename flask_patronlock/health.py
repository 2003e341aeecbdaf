"""The health view: has anything stopped working? One :class:`Health` report, read from stored state only (it never
calls Patreon, and costs a handful of indexed queries), shown three ways: a panel on the settings page's Setup and
Dashboard pages, ``flask patronlock check`` / ``flask patronlock health`` (exit status 1 when failing), and a JSON
endpoint at ``{PATRONLOCK_URL_PREFIX}/health`` for a monitoring system (200 when ok or warning, 503 when failing).

Each :class:`Check` has a status (``ok``, ``warning``, ``failing``), a sentence for the creator, and technical detail;
the report's status is the worst of its checks. See ``docs/deploying.rst`` (Monitoring).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Flask, abort, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import func, select

from .i18n import N_, date_text, format_args, gettext, ngettext
from .locks import lock_exempt
from .state import PatronLockState, get_state
from .sync import RunResult, _row_to_result, incomplete_streak

__all__ = ["Check", "Health", "blueprint", "health_report", "init_health", "when_in_words"]

OK, WARNING, FAILING = "ok", "warning", "failing"
_RANK = {OK: 0, WARNING: 1, FAILING: 2}

#: the last complete run may be this old before the report fails, whatever the sync interval.
FAIL_AFTER = timedelta(days=1)
#: a webhook delivery waiting this long past its due time means nothing is processing deliveries.
STUCK_AFTER = timedelta(minutes=15)
#: the window in which failed webhook deliveries are counted.
FAILED_WINDOW = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Check:
    """One thing the health view looks at."""

    #: ``last_complete_run``, ``incomplete_runs``, ``drift``, ``held_runs``, ``creator_token`` or ``webhook``.
    name: str
    #: ``ok``, ``warning`` or ``failing``.
    status: str
    #: what it means, for the creator (no ids, no timestamps in ISO form).
    message: str
    #: the technical detail (run ids, reasons, counts), for the details disclosure and logs.
    detail: str = ""
    #: the same facts as JSON-ready values.
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Health:
    """The report: every check, and the worst status among them."""

    status: str
    checked_at: datetime
    checks: tuple[Check, ...]

    @property
    def failing(self) -> bool:
        """Whether monitoring should alert (the JSON endpoint answers 503)."""
        return self.status == FAILING

    def check(self, name: str) -> Check:
        """The check called ``name``."""
        return next(c for c in self.checks if c.name == name)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``status``, ``checked_at`` (ISO 8601) and ``checks`` (name, status, message, detail, data)."""
        return {
            "status": self.status,
            "checked_at": self.checked_at.isoformat(),
            "checks": [
                {"name": c.name, "status": c.status, "message": c.message, "detail": c.detail, "data": c.data}
                for c in self.checks
            ],
        }


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None


def _ago(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds >= 86400:
        return ngettext("%(num)d day ago", "%(num)d days ago", seconds // 86400)
    if seconds >= 3600:
        return ngettext("%(num)d hour ago", "%(num)d hours ago", seconds // 3600)
    if seconds >= 60:
        return ngettext("%(num)d minute ago", "%(num)d minutes ago", seconds // 60)
    return gettext("just now")


def _count(n: int) -> str:
    """A count as the site writes it: ``1,234`` (German ``1.234``)."""
    site_locale, _currency = format_args()
    if site_locale is None:
        return f"{n:,}"
    from babel.numbers import format_decimal

    return str(format_decimal(n, locale=site_locale))


def when_in_words(when: datetime, now: datetime) -> str:
    """``4 December, 3 hours ago`` (with the year when it is not this year's; in the site's language)."""
    when, now = when.astimezone(UTC), now.astimezone(UTC)
    return f"{date_text(when, day_first=True, now=now)}, {_ago(now - when)}"


def _seconds(delta: timedelta) -> int:
    return int(delta.total_seconds())


def _run_time(run: RunResult) -> datetime | None:
    return run.finished_at or run.started_at


def health_report(app: Flask | None = None) -> Health:
    """Read the stored state and say what is healthy, what needs a look (warning) and what has stopped (failing)."""
    state = get_state(app)
    now = state.store.clock().astimezone(UTC)
    streak, last_complete = incomplete_streak(state.app)
    runs = state.tables.sync_runs
    with state.store.engine.connect() as conn:
        latest_row = conn.execute(
            select(runs).where(runs.c.status.notin_(("running", "skipped"))).order_by(runs.c.id.desc()).limit(1)
        ).mappings().first()
        held_rows = list(
            conn.execute(select(runs).where(runs.c.status == "held").order_by(runs.c.id)).mappings()
        )
    latest = _row_to_result(latest_row) if latest_row is not None else None
    held = [_row_to_result(r) for r in held_rows]
    checks = (
        _last_complete(state, now, last_complete),
        _incomplete(state, streak, latest),
        _drift(latest, held, state),
        _held(held, now),
        _creator(state),
        _webhook(state, now),
    )
    status = max((c.status for c in checks), key=_RANK.__getitem__)
    return Health(status=status, checked_at=now, checks=checks)


def _last_complete(state: PatronLockState, now: datetime, run: RunResult | None) -> Check:
    interval = timedelta(seconds=float(state.app.config["PATRONLOCK_SYNC_INTERVAL"]))
    warn_after = 2 * interval
    fail_after = max(FAIL_AFTER, warn_after)
    limits = {"warn_after_seconds": _seconds(warn_after), "fail_after_seconds": _seconds(fail_after)}
    when = _run_time(run) if run is not None else None
    if run is None or when is None:
        return Check(
            "last_complete_run", FAILING,
            gettext("No sync has read every patron from Patreon yet, so nobody who stopped pledging loses access."),
            "no complete run is stored", {"run_id": None, "at": None, "age_seconds": None, **limits},
        )
    age = now - when
    data = {"run_id": run.run_id, "at": _iso(when), "age_seconds": _seconds(age), **limits}
    detail = f"run {run.run_id} ({run.status}) finished {_iso(when)}; {run.members_seen} member(s)"
    said = gettext("The last sync that read every patron was on %(when)s.", when=when_in_words(when, now))
    if age > fail_after:
        return Check("last_complete_run", FAILING,
                     said + " " + gettext("Changes on Patreon are not reaching this site, and nobody who stopped "
                                          "pledging loses access until a sync completes."), detail, data)
    if age > warn_after:
        return Check("last_complete_run", WARNING, said + " " + gettext("Syncs should run more often than that."),
                     detail, data)
    return Check("last_complete_run", OK, said, detail, data)


def _incomplete(state: PatronLockState, streak: int, latest: RunResult | None) -> Check:
    alert_after = int(state.app.config["PATRONLOCK_SYNC_ALERT_AFTER"])
    reason = latest.reason if latest is not None and not latest.complete else None
    data = {"streak": streak, "alert_after": alert_after, "latest_run_id": latest.run_id if latest else None,
            "latest_reason": reason}
    if streak == 0:
        said = gettext("No sync has run yet.") if latest is None else gettext("The latest sync read every patron.")
        return Check("incomplete_runs", OK, said, "", data)
    if streak == 1:
        message = gettext("The latest sync could not read every patron from Patreon; the next one tries again.")
    else:  # two or more: English says "syncs" either way, other languages may need the count's own form
        message = ngettext(
            "The last %(num)d syncs in a row could not read every patron from Patreon, so nobody who stopped "
            "pledging loses access until one does.",
            "The last %(num)d syncs in a row could not read every patron from Patreon, so nobody who stopped "
            "pledging loses access until one does.",
            streak,
        ) + " " + gettext("Open the Sync page to see why.")
    detail = f"latest run {latest.run_id} {latest.status}: {reason}" if latest is not None else ""
    status = FAILING if alert_after >= 1 and streak >= alert_after else WARNING
    return Check("incomplete_runs", status, message, detail, data)


#: what a held run's reason says when Patreon's pages emptied tiers or zeroed cents (sync._what_changed).
_LOSS_KINDS = ("tiers", "cents")
#: the drift check's warning for a held run, by what Patreon's pages lost.
_LOSS_MESSAGES = {
    ("tiers",): N_("Patreon suddenly reported no tiers for many patrons who still pledge, so that sync is held for "
                   "your decision on the Sync page."),
    ("cents",): N_("Patreon suddenly reported no pledge amounts for many patrons who still pledge, so that sync is "
                   "held for your decision on the Sync page."),
    ("tiers", "cents"): N_("Patreon suddenly reported no tiers and pledge amounts for many patrons who still pledge, "
                           "so that sync is held for your decision on the Sync page."),
}
#: what to do about answers that changed shape.
_UPDATE = N_("Update flask-patronlock, or report it if you run the latest version.")


def _drift(latest: RunResult | None, held: list[RunResult], state: PatronLockState) -> Check:
    if latest is not None and latest.reason and "SchemaDrift" in latest.reason:
        return Check(
            "drift", FAILING,
            gettext("Patreon's answers changed shape in a way this site does not understand, so syncs stop before "
                    "changing anybody's access.") + " " + gettext(_UPDATE),
            f"run {latest.run_id}: {latest.reason}",
            {"run_id": latest.run_id, "reason": latest.reason},
        )
    for run in reversed(held):
        losses = run.detail.get("losses") or {}
        kinds = tuple(k for k in _LOSS_KINDS if losses.get(k))
        if kinds:
            return Check(
                "drift", WARNING,
                gettext(_LOSS_MESSAGES[kinds]),
                f"held run {run.run_id}: {run.reason}",
                {"run_id": run.run_id, "reason": run.reason, "losses": losses},
            )
    from .livecheck import stored_summary

    live = stored_summary(state.app)
    if live is not None and live.get("drifting"):
        return Check(
            "drift", WARNING,
            gettext("The daily check of Patreon's answers found they changed shape in a way this site does not "
                    "understand: the next sync will stop before changing anybody's access.") + " " + gettext(_UPDATE),
            f"live check at {live.get('at')}: " + "; ".join(str(f) for f in live.get("findings") or []),
            {"run_id": None, "reason": None, "live_check": live},
        )
    return Check("drift", OK, gettext("Patreon's answers look as expected."), "", {"run_id": None, "reason": None})


def _held(held: list[RunResult], now: datetime) -> Check:
    if not held:
        return Check("held_runs", OK, gettext("No sync is waiting for your decision."), "", {"run_ids": []})
    oldest = held[0]
    when = _run_time(oldest)
    patrons = sum(r.held for r in held)
    who = ngettext("%(count)s patron", "%(count)s patrons", patrons, count=_count(patrons))
    if when is not None:
        waits = ngettext(
            "A sync would take access away from %(patrons)s at once, so it waits for your decision since %(when)s.",
            "%(num)d syncs would take access away from %(patrons)s at once, so they wait for your decision since "
            "%(when)s.",
            len(held), patrons=who, when=when_in_words(when, now),
        )
    else:
        waits = ngettext(
            "A sync would take access away from %(patrons)s at once, so it waits for your decision.",
            "%(num)d syncs would take access away from %(patrons)s at once, so they wait for your decision.",
            len(held), patrons=who,
        )
    return Check(
        "held_runs", WARNING,
        waits + " " + gettext("Review on the Sync page."),
        "; ".join(f"run {r.run_id}: {r.reason}" for r in held),
        {"run_ids": [r.run_id for r in held], "held": patrons},
    )


def _creator(state: PatronLockState) -> Check:
    from .creator import get_creator_connection

    cfg = state.app.config
    connection = get_creator_connection(state)
    config_token = bool(cfg.get("PATRONLOCK_CREATOR_ACCESS_TOKEN") or cfg.get("PATRONLOCK_CREATOR_REFRESH_TOKEN"))
    if connection is not None and connection.needs_reauth:
        data = {"state": "needs_reauth", "origin": connection.origin, "failure": connection.failure,
                "failed_at": _iso(connection.failed_at)}
        detail = (f"refused ({connection.failure or 'refused'}) at {_iso(connection.failed_at)}; "
                  f"origin {connection.origin}")
        if config_token and connection.origin != "config":
            return Check("creator_token", WARNING,
                         gettext("Patreon stopped accepting the account connected here; the token from the "
                                 "configuration is used meanwhile.") + " " + gettext("Reconnect on the Setup page."),
                         detail, data)
        return Check("creator_token", FAILING,
                     gettext("Patreon stopped accepting the site's creator account, so changes on Patreon no longer "
                             "reach this site.") + " " + gettext("Reconnect it on the Setup page."), detail, data)
    if connection is not None:
        return Check("creator_token", OK, gettext("Patreon accepts the site's creator account."),
                     f"origin {connection.origin}",
                     {"state": "ok", "origin": connection.origin})
    if config_token:
        return Check("creator_token", OK, gettext("A creator token is configured."),
                     "from the configuration (not stored yet)",
                     {"state": "configured", "origin": "config"})
    return Check("creator_token", FAILING,
                 gettext("No creator account is connected, so the campaign's patrons cannot be read.") + " "
                 + gettext("Connect it on the Setup page."),
                 "no stored connection and no PATRONLOCK_CREATOR_ACCESS_TOKEN",
                 {"state": "missing", "origin": None})


def _webhook(state: PatronLockState, now: datetime) -> Check:
    from .webhooks import WEBHOOK_SETTING_KEY

    settings, deliveries = state.tables.settings, state.tables.webhook_deliveries
    due = func.coalesce(deliveries.c.next_attempt_at, deliveries.c.received_at)
    with state.store.engine.connect() as conn:
        stored = conn.execute(select(settings.c.value).where(settings.c.key == WEBHOOK_SETTING_KEY)).scalar()
        failed = int(conn.execute(
            select(func.count()).where(
                deliveries.c.status == "failed", deliveries.c.processed_at >= now - FAILED_WINDOW
            )
        ).scalar_one())
        retrying = int(conn.execute(select(func.count()).where(deliveries.c.status == "retry")).scalar_one())
        applied = int(conn.execute(select(func.count()).where(deliveries.c.status == "done")).scalar_one())
        stuck = int(conn.execute(
            select(func.count()).where(
                deliveries.c.status.in_(("pending", "retry", "processing")),
                due < now - STUCK_AFTER,
            )
        ).scalar_one())
    registered = isinstance(stored, dict) and bool(stored.get("id"))
    data: dict[str, Any] = {"registered": registered, "applied": applied, "failed_24h": failed, "retrying": retrying,
                            "stuck": stuck}
    detail = f"failed in the last 24 h: {failed}; waiting to retry: {retrying}; overdue by 15+ minutes: {stuck}"
    # what Patreon last said about it, as the Sync page or `webhooks status` heard it (this never asks Patreon)
    patreon = stored.get("patreon") if isinstance(stored, dict) and isinstance(stored.get("patreon"), dict) else None
    if patreon is not None:
        data["patreon"] = patreon
        detail += (f"; Patreon said at {patreon.get('since')}: listed {patreon.get('listed')}, paused "
                   f"{patreon.get('paused')}, {patreon.get('failures')} failure(s) in a row")
    if stuck:
        return Check("webhook", FAILING,
                     ngettext("%(count)s message from Patreon has waited more than 15 minutes: nothing is processing "
                              "them.",
                              "%(count)s messages from Patreon have waited more than 15 minutes: nothing is processing "
                              "them.", stuck, count=_count(stuck))
                     + " " + gettext("Check that the site's background worker runs."), detail, data)
    if not registered and applied:
        return Check("webhook", OK,
                     ngettext("Patreon has sent this site %(count)s message that was applied, through a webhook set "
                              "up on Patreon's side (register it on the Sync page too, to be told when Patreon pauses "
                              "it).",
                              "Patreon has sent this site %(count)s messages that were applied, through a webhook set "
                              "up on Patreon's side (register it on the Sync page too, to be told when Patreon pauses "
                              "it).", applied, count=_count(applied)), detail, data)
    if not registered:
        return Check("webhook", WARNING,
                     gettext("No webhook is registered, so changes on Patreon reach this site only with the next "
                             "sync.") + " " + gettext("Register it on the Sync page."), detail, data)
    if patreon is not None and (not patreon.get("listed") or patreon.get("paused") or patreon.get("failures")):
        failures = int(patreon.get("failures") or 0)
        return Check("webhook", WARNING,
                     _webhook_trouble(bool(patreon.get("listed")), bool(patreon.get("paused")), failures) + " "
                     + gettext("Check that the site answers, then register the webhook again on the Sync page."),
                     detail, data)
    if failed:
        return Check("webhook", WARNING,
                     ngettext("%(count)s message from Patreon could not be applied in the last 24 hours; the next "
                              "sync brings those patrons up to date.",
                              "%(count)s messages from Patreon could not be applied in the last 24 hours; the next "
                              "sync brings those patrons up to date.", failed, count=_count(failed))
                     + " " + gettext("The Sync page says why."), detail, data)
    if retrying:
        return Check("webhook", OK,
                     ngettext("Registered; %(count)s message from Patreon will be tried again shortly.",
                              "Registered; %(count)s messages from Patreon will be tried again shortly.",
                              retrying, count=_count(retrying)), detail, data)
    return Check("webhook", OK, gettext("Registered; every message from Patreon was applied."), detail, data)


def _webhook_trouble(listed: bool, paused: bool, failures: int) -> str:
    """What Patreon did with the webhook registered here (no longer listed, paused, retrying), in one sentence."""
    if not listed:
        return gettext("Patreon no longer lists the webhook registered here, so changes on Patreon reach this site "
                       "only with the next sync.")
    if paused:
        if failures > 1:
            return ngettext("Patreon paused the webhook after %(num)d failed deliveries in a row, so changes on "
                            "Patreon reach this site only with the next sync.",
                            "Patreon paused the webhook after %(num)d failed deliveries in a row, so changes on "
                            "Patreon reach this site only with the next sync.", failures)
        if failures == 1:
            return gettext("Patreon paused the webhook after a failed delivery, so changes on Patreon reach this site "
                           "only with the next sync.")
        return gettext("Patreon paused the webhook, so changes on Patreon reach this site only with the next sync.")
    if failures > 1:
        return ngettext("Patreon is retrying the webhook after %(num)d failed deliveries in a row, so changes on "
                        "Patreon reach this site only with the next sync.",
                        "Patreon is retrying the webhook after %(num)d failed deliveries in a row, so changes on "
                        "Patreon reach this site only with the next sync.", failures)
    if failures == 1:
        return gettext("Patreon is retrying the webhook after a failed delivery, so changes on Patreon reach this "
                       "site only with the next sync.")
    return gettext("Patreon is retrying the webhook, so changes on Patreon reach this site only with the next sync.")


# -- the JSON endpoint -------------------------------------------------------------------------------------------------

blueprint = Blueprint("patronlock_health", __name__)


def init_health(app: Flask) -> None:
    """Register ``GET {PATRONLOCK_URL_PREFIX}/health`` (not registered when the prefix is ``None``)."""
    prefix = app.config.get("PATRONLOCK_URL_PREFIX")
    if prefix is not None:
        app.register_blueprint(blueprint, url_prefix=prefix.rstrip("/") or None)


def _is_admin() -> bool:
    loader = get_state().declarations.admin_loader
    if loader is None:
        return False
    from flask import current_app

    if getattr(current_app, "login_manager", None) is None:
        return False
    from flask_login import current_user

    user = current_user._get_current_object()
    return bool(getattr(user, "is_authenticated", False) and loader(user))


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


@blueprint.get("/health")
@lock_exempt
def report() -> ResponseReturnValue:
    """The report as JSON: 200 when ok or warning, 503 when failing. Who may read it: a request with
    ``Authorization: Bearer <PATRONLOCK_HEALTH_TOKEN>``, or a signed-in admin. Without a token configured, anybody
    else gets 404 (the endpoint is not there for them); with one, a missing or wrong token gets 401."""
    expected = get_state().app.config.get("PATRONLOCK_HEALTH_TOKEN") or None
    given = _bearer()
    allowed = expected is not None and given is not None and hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), str(expected).encode("utf-8", "surrogateescape")
    )
    if not allowed and not _is_admin():
        if expected is None:
            abort(404)
        response = jsonify({"error": "a bearer token (PATRONLOCK_HEALTH_TOKEN) is required"})
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Bearer realm="patronlock-health"'
        response.headers["Cache-Control"] = "no-store"
        return response
    health = health_report()
    response = jsonify(health.as_dict())
    response.status_code = 503 if health.failing else 200
    response.headers["Cache-Control"] = "no-store"
    return response
