"""The Sync page: reconcile runs (complete, incomplete and why, held), approving or rejecting held revocations,
"Sync now" with its progress, and the webhook's health; plus the checklist's webhook and last-sync steps.

Built on issue 5's interfaces: :meth:`Jobs.start_run <flask_patronlock.jobs.Jobs.start_run>` starts a run the way
the app runs background work (a thread, inline, or Celery), :func:`flask_patronlock.sync.list_runs` /
:func:`~flask_patronlock.sync.get_run` read ``patronlock_sync_runs``, :meth:`Store.approve_run
<flask_patronlock.store.Store.approve_run>` / :meth:`~flask_patronlock.store.Store.reject_run` decide a held run,
and :func:`flask_patronlock.webhooks.register_webhook` registers the site's webhook. While a run is running the page
refreshes itself every two seconds (``<meta http-equiv="refresh">``: no JavaScript).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from flask import Flask, abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from ..errors import ConfigurationError, TokenDecryptionError
from ..i18n import N_, day_text, gettext, moment_text, ngettext
from ..patreon.errors import PatreonError
from ..patreon.types import WebhookSnapshot
from ..state import get_state
from ..sync import AlreadyRunning, RunResult, get_run, incomplete_streak, list_runs
from ..webhooks import (
    GAVE_UP,
    MALFORMED,
    NOT_OURS,
    REFUSED,
    delivery_counts,
    delivery_problems,
    last_delivery_at,
    note_patreon_view,
    register_webhook,
    stored_webhook,
)
from .blueprint import admin_user_id, nav, route
from .runwords import detail_text, detail_value_text, reason_text, run_summary, status_text
from .setup import Step, site_url

__all__ = ["webhook_health", "webhook_steps"]

log = logging.getLogger("flask_patronlock.admin")

nav("patronlock_admin.sync", N_("Sync"))

WEBHOOK_ENDPOINT = "patronlock_webhooks.receive"
#: seconds a process remembers what Patreon said about the webhook (the Setup and Sync pages ask it).
HEALTH_TTL = 60.0
_health_cache: dict[int, tuple[float, list[WebhookSnapshot] | None, str | None]] = {}
_health_lock = threading.Lock()


def webhook_url(app: Flask) -> str:
    """The public URL of this site's webhook route, on the site's configured origin (never the request's Host)."""
    return site_url(app, WEBHOOK_ENDPOINT)


def webhook_health(*, refresh: bool = False) -> tuple[list[WebhookSnapshot] | None, str | None]:
    """The campaign's webhooks as Patreon reports them (paused? consecutive failures?), cached for
    :data:`HEALTH_TTL` seconds per process; ``(None, why)`` when Patreon could not be asked."""
    st = get_state()
    key = id(st)
    with _health_lock:
        cached = _health_cache.get(key)
    if cached is not None and not refresh and time.monotonic() - cached[0] < HEALTH_TTL:
        return cached[1], cached[2]
    hooks: list[WebhookSnapshot] | None
    try:
        client = st.creator_client("reading the webhook's health")
        client.max_retries = 1
        try:
            hooks = client.webhooks()
            problem = None
        finally:
            client.close()
        note_patreon_view(st, hooks)
    except (ConfigurationError, TokenDecryptionError) as exc:
        hooks, problem = None, str(exc)
    except PatreonError as exc:
        log.warning("reading the webhooks failed: %s: %s", type(exc).__name__, exc)
        hooks, problem = None, N_("Patreon did not answer just now.")  # cached: translated where shown
    with _health_lock:
        _health_cache[key] = (time.monotonic(), hooks, problem)
    return hooks, problem


def _forget_health() -> None:
    with _health_lock:
        _health_cache.pop(id(get_state()), None)


def _ours(hooks: list[WebhookSnapshot] | None) -> WebhookSnapshot | None:
    stored = stored_webhook(get_state()) or {}
    for hook in hooks or ():
        if hook.id == stored.get("id"):
            return hook
    return None


#: the checklist's webhook step: a name that reads right whether the step is done or not.
WEBHOOK_TITLE = N_("Webhook")
#: what a stored delivery's status means, in words (translated where shown).
DELIVERY_WORDS = {"done": N_("applied"), "pending": N_("waiting"), "retry": N_("to be tried again"),
                  "processing": N_("being applied"), "ignored": N_("set aside"), "failed": N_("failed")}
def received_text(st: Any) -> str | None:
    """``"Patreon has sent this site 12 messages (the last on 4 December)"``; ``None`` when it has sent none."""
    counts = delivery_counts(st)
    total = sum(counts.values())
    if not total:
        return None
    last = last_delivery_at(st)
    if last is None:
        return ngettext("Patreon has sent this site %(num)d message", "Patreon has sent this site %(num)d messages",
                        total)
    return ngettext(
        "Patreon has sent this site %(num)d message (the last on %(day)s)",
        "Patreon has sent this site %(num)d messages (the last on %(day)s)",
        total,
        day=day_text(last, now=st.store.clock()),
    )


def deliveries_text(counts: dict[str, int]) -> str:
    """``"Messages from Patreon received here: 3 applied, 1 failed."`` (``none yet`` without any)."""
    if not counts:
        return gettext("Messages from Patreon received here: none yet.")
    parts = ", ".join(
        f"{count} {gettext(DELIVERY_WORDS[status]) if status in DELIVERY_WORDS else status}"
        for status, count in sorted(counts.items())
    )
    return gettext("Messages from Patreon received here: %(counts)s.", counts=parts)


def webhook_steps(*, live: bool) -> list[Step]:
    """The checklist's webhook step (asking Patreon when ``live``) and its last-complete-sync step."""
    st = get_state()
    stored = stored_webhook(st)
    received = received_text(st)
    title = gettext(WEBHOOK_TITLE)
    if stored is None and received is not None:
        # a webhook made on Patreon's side (or by an earlier install) reaches this site: it works, unwatched
        webhook = Step(
            "webhook",
            title,
            True,
            gettext("No webhook was registered from this site, but %(received)s: one set up on Patreon's side "
                    "reaches it.", received=received),
            gettext("Optional: register it here too, so this page can tell you when Patreon pauses it."),
        )
    elif stored is None:
        webhook = Step(
            "webhook",
            title,
            False,
            gettext("No webhook is registered, and Patreon has sent this site no message yet: changes on Patreon "
                    "reach it only with the next sync."),
            gettext("Register the webhook, so Patreon tells this site about every pledge change at once."),
        )
    elif not live:
        webhook = Step("webhook", title, True, gettext("Registered at %(url)s.", url=stored.get("uri")),
                       tag="registered")
    else:
        hooks, problem = webhook_health()
        ours = _ours(hooks)
        if problem is not None:
            webhook = Step("webhook", title, False,
                           gettext("Registered at %(url)s, but its health is unknown: %(problem)s",
                                   url=stored.get("uri"), problem=gettext(problem)),
                           gettext("Try again in a minute."), tag="registered")
        elif ours is None:
            webhook = Step("webhook", title, False,
                           gettext("Patreon no longer lists the webhook registered here."),
                           gettext("Register the webhook again."))
        elif ours.paused or ours.num_consecutive_times_failed:
            failed = ours.num_consecutive_times_failed
            webhook = Step(
                "webhook",
                title,
                False,
                ngettext("Patreon paused the webhook after %(num)d failed deliveries in a row.",
                         "Patreon paused the webhook after %(num)d failed deliveries in a row.", failed)
                if ours.paused
                else ngettext("Patreon is retrying the webhook after %(num)d failed deliveries in a row.",
                              "Patreon is retrying the webhook after %(num)d failed deliveries in a row.", failed),
                gettext("Check that the site answers at %(url)s, then register the webhook again (it unpauses it, "
                        "and Patreon sends what it missed).", url=ours.uri),
                tag="paused" if ours.paused else "",
            )
        else:
            webhook = Step("webhook", title, True,
                           gettext("Registered at %(url)s; Patreon reports no failed delivery.", url=ours.uri),
                           tag="registered")
    alert = sync_alert()
    if alert is not None:
        streak = int(str(alert["streak"]))
        detail = (
            ngettext("The last %(num)d syncs could not read every patron from Patreon, so nobody who stopped "
                     "pledging has lost access since %(day)s.",
                     "The last %(num)d syncs could not read every patron from Patreon, so nobody who stopped "
                     "pledging has lost access since %(day)s.", streak, day=alert["since"])
            if alert["since"]
            else ngettext("The last %(num)d syncs could not read every patron from Patreon, so nobody who stopped "
                          "pledging has lost access yet.",
                          "The last %(num)d syncs could not read every patron from Patreon, so nobody who stopped "
                          "pledging has lost access yet.", streak)
        )
        return [webhook, Step(
            "sync",
            gettext("Last complete sync"),
            False,
            detail,
            gettext("Open the Sync page to see why, and run a sync once it is fixed."),
        )]
    runs = list_runs(st.app, limit=50)
    complete = next((r for r in runs if r.complete), None)
    when = complete.finished_at or complete.started_at if complete is not None else None
    last = Step(
        "sync",
        gettext("Last complete sync"),
        complete is not None,
        ngettext("The last complete sync read all %(num)d member on %(moment)s.",
                 "The last complete sync read all %(num)d members on %(moment)s.",
                 complete.members_seen, moment=moment_text(when))
        if complete is not None and when is not None
        else gettext("No complete sync yet: patrons are only known as they connect."),
        "" if complete is not None else gettext("Run a sync: it reads every member of the campaign."),
    )
    return [webhook, last]


def problem_sentence(row: dict[str, Any]) -> str:
    """What happened to a delivery that ended ``failed`` or ``ignored``, in words (its ``error`` is the detail)."""
    error = row.get("error") or ""
    if error.startswith(NOT_OURS):
        return gettext("Not applied: Patreon does not confirm this member belongs to your campaign.")
    if error.startswith(MALFORMED):
        return gettext("Patreon's message could not be read (a value in it is out of range or of the wrong kind), "
                       "so it was set aside. The next sync brings this member up to date.")
    if error.startswith(REFUSED):
        return gettext("Patreon would not say more about this member, so the message was set aside.")
    if error.startswith(GAVE_UP):
        attempts = row.get("attempts")
        if isinstance(attempts, int):
            return ngettext("Gave up after %(num)d attempts to process it. The next sync brings this member up to "
                            "date.",
                            "Gave up after %(num)d attempts to process it. The next sync brings this member up to "
                            "date.", attempts)
        return gettext("Gave up after %(attempts)s attempts to process it. The next sync brings this member up to "
                       "date.", attempts=attempts)
    return gettext("Set aside. The next sync brings this member up to date.")


def _registered_text(action: str, uri: str) -> str:
    """The flash after registering the webhook (``action``: ``created`` or ``updated``)."""
    if action == "created":
        return gettext("Webhook created: Patreon now tells %(url)s about every pledge change.", url=uri)
    if action == "updated":
        return gettext("Webhook updated: Patreon now tells %(url)s about every pledge change.", url=uri)
    return gettext("Webhook %(action)s: Patreon now tells %(url)s about every pledge change.", action=action, url=uri)


def _day(run: RunResult | None) -> str | None:
    when = (run.finished_at or run.started_at) if run is not None else None
    return day_text(when) if when is not None else None


def sync_alert() -> dict[str, object] | None:
    """What the Sync page and the checklist say when :data:`PATRONLOCK_SYNC_ALERT_AFTER` runs in a row were
    incomplete: ``streak``, ``since`` (the day of the latest complete run, in words, or ``None``) and ``reason`` (the
    latest run's, for the details disclosure); ``None`` while runs complete."""
    st = get_state()
    after = int(st.app.config["PATRONLOCK_SYNC_ALERT_AFTER"])
    streak, last_complete = incomplete_streak(st.app)
    if after < 1 or streak < after:
        return None
    latest = list_runs(st.app, limit=5)
    reason = next((r.reason for r in latest if r.status != "running"), None)
    return {"streak": streak, "since": _day(last_complete), "reason": reason}


@route("/sync")
def sync() -> ResponseReturnValue:
    """Runs, held revocations, Sync now, and the webhook's health."""
    st = get_state()
    runs = list_runs(st.app, limit=30)
    running = any(r.status == "running" for r in runs)
    # Just started in a thread or on Celery: the run's row may not exist yet. Keep refreshing until a run newer than
    # the one before the click appears (at most a minute: a worker that never picks it up is not waited for).
    starting = False
    after, since = request.args.get("after", type=int), request.args.get("since", type=float)
    if after is not None and since is not None and time.time() - since < 60:
        starting = not any(r.run_id > after for r in runs)
    hooks, problem = webhook_health(refresh=request.args.get("check") == "1")
    try:
        url = webhook_url(st.app)
    except ConfigurationError:
        url = None
    return render_template(
        "patronlock/admin/sync.html",
        runs=runs,
        running=running,
        starting=starting,
        held=[r for r in runs if r.status == "held"],
        alert=sync_alert(),
        stored=stored_webhook(st),
        hooks=hooks,
        ours=_ours(hooks),
        problem=gettext(problem) if problem is not None else None,
        counts=delivery_counts(st),
        deliveries=deliveries_text(delivery_counts(st)),
        received=received_text(st),
        problems=[{**row, "sentence": problem_sentence(row)} for row in delivery_problems(st)],
        webhook_url=url,
        jobs_mode=st.app.config.get("PATRONLOCK_JOBS"),
        status_text=status_text,
        reason_text=reason_text,
    )


@route("/sync/start", methods=("POST",))
def start_sync() -> ResponseReturnValue:
    """Start a reconcile run the way this app runs background work; the page follows its progress."""
    st = get_state()
    try:
        st.campaign_id("a sync")
        st.creator_client("a sync").close()
    except (ConfigurationError, TokenDecryptionError) as exc:
        flash(str(exc), "error")
        return redirect(url_for(".sync"))
    before = list_runs(st.app, limit=1)
    follow = url_for(".sync", after=before[0].run_id if before else 0, since=f"{time.time():.0f}")
    try:
        st.jobs.start_run(trigger="admin")
    except AlreadyRunning:
        flash(gettext("A sync is already running; its progress is below."), "info")
    except PatreonError as exc:  # inline mode runs it here
        log.warning("a sync started from the settings page failed: %s: %s", type(exc).__name__, exc)
        flash(gettext("The sync could not read Patreon; the run below says why. Nothing was revoked."), "error")
    else:
        flash(gettext("Sync started: reading every member of the campaign."), "success")
        return redirect(follow)
    return redirect(url_for(".sync"))


@route("/sync/runs/<int:run_id>")
def run_detail(run_id: int) -> ResponseReturnValue:
    """One run: its counts, why it is incomplete, and the revocations it holds."""
    st = get_state()
    run = get_run(st.app, run_id)
    if run is None:
        abort(404)
    held = st.store.held_revocations(run_id) if run.status == "held" else []
    return render_template("patronlock/admin/run.html", run=run, held=held, summary=run_summary(run),
                           status_text=status_text, reason_text=reason_text, detail_text=detail_text,
                           detail_value_text=detail_value_text)


def _decide(run_id: int, approve: bool) -> ResponseReturnValue:
    st = get_state()
    try:
        results = (st.store.approve_run if approve else st.store.reject_run)(run_id, by=admin_user_id())
    except LookupError:
        abort(404)
    except ValueError as exc:
        flash(_not_held_text(run_id, str(exc)), "error")
        return redirect(url_for(".run_detail", run_id=run_id))
    if approve:
        revoked = sum(1 for r in results if "access_revoked" in r.events)
        changed = sum(1 for r in results if r.changed)
        flash(
            gettext(
                "Approved run %(run)s: %(changes)s applied; %(patrons)s lost access now. Patrons missing from syncs "
                "lose access when the missing-patrons policy says so.",
                run=run_id,
                changes=ngettext("%(num)d held change", "%(num)d held changes", changed),
                patrons=ngettext("%(num)d patron", "%(num)d patrons", revoked),
            ),
            "success",
        )
    else:
        flash(gettext("Rejected run %(run)s: everyone it held keeps access.", run=run_id), "success")
    return redirect(url_for(".run_detail", run_id=run_id))


def _not_held_text(run_id: int, english: str) -> str:
    """Why a run cannot be decided (it is not held), in the site's language: the store's message
    (``"sync run 3 is approved, not held: there is nothing to decide"``) with the run's status in words."""
    run = get_run(get_state().app, run_id)
    if run is None or english != f"sync run {run_id} is {run.status}, not held: there is nothing to decide":
        return english
    return gettext("sync run %(run)s is %(status)s, not held: there is nothing to decide", run=run_id,
                   status=status_text(run.status))


@route("/sync/runs/<int:run_id>/approve", methods=("POST",))
def approve_run(run_id: int) -> ResponseReturnValue:
    """Apply the revocations a held run waits to make."""
    return _decide(run_id, True)


@route("/sync/runs/<int:run_id>/reject", methods=("POST",))
def reject_run(run_id: int) -> ResponseReturnValue:
    """Discard a held run's revocations: everyone keeps access."""
    return _decide(run_id, False)


@route("/sync/webhook", methods=("POST",))
def register() -> ResponseReturnValue:
    """Register (or re-register, which unpauses) the campaign's webhook at this site's webhook URL."""
    st = get_state()
    try:
        url = webhook_url(st.app)
        webhook, action, _encrypted = register_webhook(st, url)
    except (ConfigurationError, TokenDecryptionError) as exc:
        flash(gettext("%(problem)s Nothing was registered.", problem=str(exc)), "error")
    except PatreonError as exc:
        log.warning("registering the webhook failed: %s: %s", type(exc).__name__, exc)
        flash(gettext("Patreon did not accept the webhook just now. Nothing was changed; try again in a minute."),
              "error")
    else:
        flash(_registered_text(action, webhook.uri), "success")
    _forget_health()
    back = request.form.get("back")
    return redirect(url_for(".setup") if back == "setup" else url_for(".sync"))

