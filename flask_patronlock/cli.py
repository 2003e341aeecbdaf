"""``flask patronlock …`` commands. Each needs only an app context.

What a command prints is in the language of ``PATRONLOCK_LOCALE`` when the app initialised Flask-Babel (a command
has no request to ask the locale selector about), English without it; the options' help stays English.

Over 600 lines: every command of the ``flask patronlock`` group, each a thin wrapper that parses its arguments and
prints what a function of the package returns; one module keeps ``flask patronlock --help`` and this file in step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC
from typing import Any, TypeVar

import click
from flask.cli import AppGroup

from . import config as _config
from .errors import ConfigurationError
from .i18n import N_, command_locale, gettext, ngettext
from .models import schema_gaps
from .state import PatronLockState, get_state

T = TypeVar("T")


def _in_command_locale(f: Callable[..., T]) -> Callable[..., T]:
    """``f`` run in the command line's language (:func:`flask_patronlock.i18n.command_locale`)."""

    @functools.wraps(f)
    def run(*args: Any, **kwargs: Any) -> T:
        with command_locale():
            return f(*args, **kwargs)

    return run


class _Group(AppGroup):
    """An :class:`~flask.cli.AppGroup` whose commands, groups and subgroups print in the command line's language:
    each callback runs in :func:`~flask_patronlock.i18n.command_locale`, inside the app context."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], click.Command]:  # type: ignore[override]
        decorate = super().command(*args, **kwargs)
        return lambda f: decorate(_in_command_locale(f))

    def group(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], click.Group]:  # type: ignore[override]
        kwargs.setdefault("cls", _Group)
        decorate = super().group(*args, **kwargs)
        return lambda f: decorate(_in_command_locale(f))


patronlock_cli = _Group("patronlock", help="flask-patronlock: Patreon patrons, locks, sync and webhooks.")


@patronlock_cli.command("check")
@click.option(
    "--live",
    is_flag=True,
    help="Instead: read the campaign, one members page and the webhooks from Patreon and report every difference "
    "from what flask-patronlock expects (writes nothing).",
)
@click.option(
    "--save", "save_path", default=None, metavar="PATH", help="With --live: write the findings, anonymised, as JSON."
)
def check_command(live: bool, save_path: str | None) -> None:
    """Say which configuration is missing or invalid, whether the tables exist, whether a secret is stored in the
    clear, whether Patreon still accepts the creator's token, and the health report's checks (the last complete sync,
    incomplete runs, drift, held runs, webhook deliveries). Exit status 1 when anything needs fixing (a degraded
    creator token or a failing health check included; a warning alone does not).

    With ``--live``: the live self-check (:func:`flask_patronlock.livecheck.live_check`); exit status 1 when a
    finding would make a sync page drift."""
    from .webhooks import webhook_secret_in_clear

    if save_path is not None and not live:
        raise click.UsageError(gettext("--save goes with --live"))
    if live:
        _check_live(save_path)
        return
    state = get_state()
    cfg = state.app.config
    problems = 0
    for key, purpose in (
        ("PATRONLOCK_CLIENT_ID", N_("Log in / connect with Patreon")),
        ("PATRONLOCK_CLIENT_SECRET", N_("Log in / connect with Patreon")),
        ("PATRONLOCK_CAMPAIGN_ID", N_("matching members to this site")),
        ("PATRONLOCK_WEBHOOK_SECRETS", N_("verifying webhooks")),
    ):
        try:
            _config.require(cfg, key, purpose)
            click.echo(f"{_label(_OK)} {key}")
        except ConfigurationError:
            problems += 1
            needed = gettext("%(key)s  (needed for %(purpose)s)", key=key, purpose=gettext(purpose))
            click.echo(f"{_label(_MISSING)} {needed}")
    problems += _check_token_keys(state)
    missing, columns = schema_gaps(state.store.engine, state.tables)
    if not missing:
        problems += _check_creator_token(state)
    if missing:
        problems += 1
        click.echo(f"{_label(_MISSING)} " + gettext(
            "tables %(tables)s: run db.create_all() or `flask db migrate && flask db upgrade`",
            tables=", ".join(missing),
        ))  # fmt: skip
    if columns:
        problems += 1
        click.echo(f"{_label(_MISSING)} " + gettext(
            "columns %(columns)s (tables made by an earlier version): run `flask db migrate && flask db upgrade`",
            columns=", ".join(columns),
        ))  # fmt: skip
    if not missing and not columns:
        click.echo(f"{_label(_OK)} " + gettext("tables"))
        if webhook_secret_in_clear(state):
            problems += 1
            click.echo(f"{_label(_CLEAR)} " + gettext(
                "the registered webhook's secret is stored in the clear (registered before any key was set): run "
                "`flask patronlock rotate-keys` to encrypt it"
            ))  # fmt: skip
        problems += _check_health(state)
    if problems:
        raise SystemExit(1)


#: the labels of ``check``'s lines, each padded to 8 characters ("ok      ", "missing ").
_OK, _MISSING, _CLEAR, _INVALID, _DEGRADED = N_("ok"), N_("missing"), N_("clear"), N_("invalid"), N_("DEGRADED")
_DRIFT, _NOTE = N_("DRIFT"), N_("note")
#: the health report's statuses in ``check`` and ``health``.
_STATUS_LABELS = {"ok": N_("ok"), "warning": N_("WARNING"), "failing": N_("FAILING")}
_HEALTH_STATUS = {"ok": N_("ok"), "warning": N_("warning"), "failing": N_("failing")}


def _label(label: str) -> str:
    """A line's label, translated and padded: ``"ok      "``."""
    return f"{gettext(label):<8}"


def _check_live(save_path: str | None) -> None:
    from .livecheck import live_check, save_findings

    report = live_check()
    if report.total is not None:
        click.echo(gettext("read one members page: %(read)s member(s) of %(total)s", read=report.members_read,
                           total=report.total))  # fmt: skip
    for finding in report.findings:
        click.echo(f"{_label(_DRIFT if finding.blocking else _NOTE)} {finding.describe()}")
    if not report.findings:
        click.echo(f"{_label(_OK)} " + gettext("Patreon's campaign, members page and webhooks look as expected"))
    if save_path is not None:
        save_findings(report, save_path)
        click.echo(gettext("findings saved, anonymised, to %(path)s", path=save_path))
    if report.drifting:
        click.echo(gettext("%(num)s finding(s) would make a sync refuse its pages: see docs/sync.rst",
                           num=len(report.blocking)))  # fmt: skip
        raise SystemExit(1)


def _check_health(state: PatronLockState) -> int:
    """Print the health report's lines of ``check`` (the creator token has its own line above); how many fail."""
    from .health import health_report

    problems = 0
    for item in health_report(state.app).checks:
        if item.name == "creator_token":
            continue
        click.echo(f"{_label(_STATUS_LABELS[item.status])} {item.name.replace('_', ' ')}: {item.message}")
        problems += item.status == "failing"
    return problems


@patronlock_cli.command("health")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (what the /health endpoint answers).")
def health_command(as_json: bool) -> None:
    """The health report: the last complete sync, incomplete runs, drift, held runs, the creator token, the webhook.

    Exit status: 0 ok or warning, 1 failing (the endpoint answers 503 then).
    """
    import json

    from .health import health_report

    health = health_report()
    if as_json:
        click.echo(json.dumps(health.as_dict(), indent=2))
    else:
        click.echo(gettext("health: %(status)s", status=gettext(_HEALTH_STATUS.get(health.status, health.status))))
        for item in health.checks:
            click.echo(f"{_label(_HEALTH_STATUS.get(item.status, item.status))} {item.name.replace('_', ' ')}: "
                       f"{item.message}")  # fmt: skip
            if item.detail:
                click.echo(f"         ({item.detail})")
    if health.failing:
        raise SystemExit(1)


def _check_creator_token(state: PatronLockState) -> int:
    """Print the creator token's line(s) of ``check``; returns the number of problems."""
    from .creator import get_creator_connection

    cfg = state.app.config
    connection = get_creator_connection(state)
    problems = 0
    if connection is not None and connection.needs_reauth:
        failure = connection.failure or gettext("refused")
        if connection.failed_at:
            stopped = gettext("creator token: Patreon stopped accepting it on %(when)s UTC (%(failure)s)",
                              when=f"{connection.failed_at:%Y-%m-%d %H:%M}", failure=failure)  # fmt: skip
        else:
            stopped = gettext("creator token: Patreon stopped accepting it (%(failure)s)", failure=failure)
        if connection.origin == "config":
            fix = gettext(
                "%(stopped)s; runs cannot complete until you set new tokens in PATRONLOCK_CREATOR_ACCESS_TOKEN and "
                "PATRONLOCK_CREATOR_REFRESH_TOKEN, or connect the creator account on the settings page (Setup)",
                stopped=stopped,
            )  # fmt: skip
        else:
            fix = gettext(
                "%(stopped)s; runs cannot complete until you connect the creator account again on the settings page "
                "(Setup)", stopped=stopped,
            )  # fmt: skip
        click.echo(f"{_label(_DEGRADED)} {fix}")
        problems += 1
    elif connection is not None:
        if connection.origin == "config":
            click.echo(f"{_label(_OK)} " + gettext("creator token (stored, from the configuration)"))
        else:
            click.echo(f"{_label(_OK)} " + gettext("creator token (stored, connected on the settings page)"))
    elif cfg.get("PATRONLOCK_CREATOR_ACCESS_TOKEN") or cfg.get("PATRONLOCK_CREATOR_REFRESH_TOKEN"):
        click.echo(f"{_label(_OK)} PATRONLOCK_CREATOR_ACCESS_TOKEN / PATRONLOCK_CREATOR_REFRESH_TOKEN")
    else:
        click.echo(f"{_label(_MISSING)} " + gettext(
            "PATRONLOCK_CREATOR_ACCESS_TOKEN  (needed for reconcile runs and webhooks; or connect the creator account "
            "on the settings page)"
        ))  # fmt: skip
        problems += 1
    # a missing PATRONLOCK_TOKEN_KEYS (without which a configured refresh token is never stored, so never used) is
    # reported once, by _check_token_keys
    return problems


def _check_token_keys(state: PatronLockState) -> int:
    """Report ``PATRONLOCK_TOKEN_KEYS``: missing, invalid or ok; how many problems."""
    from .crypto import NEW_KEY_COMMAND

    problems = 0
    if not state.app.config.get("PATRONLOCK_TOKEN_KEYS"):
        problems += 1
        click.echo(f"{_label(_MISSING)} " + gettext(
            "PATRONLOCK_TOKEN_KEYS  (needed for encrypting patrons' and the creator's Patreon tokens and the webhook's "
            "secret; make a key with `%(command)s`)", command=NEW_KEY_COMMAND
        ))  # fmt: skip
    else:
        try:
            state.token_cipher()
            click.echo(f"{_label(_OK)} PATRONLOCK_TOKEN_KEYS")
        except ConfigurationError as exc:
            problems += 1
            click.echo(f"{_label(_INVALID)} PATRONLOCK_TOKEN_KEYS  ({exc})")
    return problems


# -- reconcile runs and webhooks (issue 5) -----------------------------------------------------------------------------


@patronlock_cli.group("sync", invoke_without_command=True)
@click.option("--trigger", default="cron", show_default=True, help="Recorded on the run (cron, manual ...).")
@click.option("--quiet", is_flag=True, help="No progress bar; print only the summary.")
@click.pass_context
def sync_command(ctx: click.Context, trigger: str, quiet: bool) -> None:
    """Run one reconcile pass now (for cron), with progress and a summary.

    Exit status: 0 complete (or held), 1 incomplete or failed, 2 another run is already running.
    """
    if ctx.invoked_subcommand is not None:
        return
    from .sync import AlreadyRunning, Progress, run_sync

    def show(p: Progress) -> None:
        if not quiet:
            total = p.total if p.total is not None else "?"
            counted = gettext("pages %(pages)s  members %(members)s/%(total)s", pages=p.pages, members=p.members,
                              total=total)  # fmt: skip
            click.echo(f"\r  {counted}", nl=False, err=True)

    try:
        result = run_sync(trigger=trigger, progress=show)
    except AlreadyRunning as exc:
        click.echo(gettext("already running: %(error)s", error=exc), err=True)
        raise SystemExit(2) from None
    if not quiet:
        click.echo("", err=True)
    click.echo(_summary(result))
    if result.status == "held":
        click.echo(gettext(
            "revocations held: review with `flask patronlock sync held %(run)s`, then `flask patronlock sync approve "
            "%(run)s` or `reject %(run)s`", run=result.run_id
        ))  # fmt: skip
    if not result.complete:
        raise SystemExit(1)


def _summary(run: Any) -> str:
    """:meth:`flask_patronlock.sync.RunResult.summary` in the command line's language: "run 7: complete; 3 page(s),
    250 member(s) of 250; 4 changed, 1 revoked, 0 held"."""
    if run.status == "failed":
        words = gettext("FAILED")
    elif run.status == "held":
        words = gettext("complete, HELD")
    else:
        words = gettext("complete") if run.complete else gettext("INCOMPLETE")
    line = gettext(
        "run %(run)s: %(words)s; %(pages)s page(s), %(members)s member(s) of %(total)s; %(changed)s changed, "
        "%(revoked)s revoked, %(held)s held",
        run=run.run_id, words=words, pages=run.pages, members=run.members_seen,
        total=run.total_reported if run.total_reported is not None else "?", changed=run.changed,
        revoked=run.revoked, held=run.held,
    )  # fmt: skip
    if run.reason:
        line += gettext("; reason: %(reason)s", reason=run.reason)
    return line


@sync_command.command("runs")
@click.option("--limit", default=10, show_default=True)
def sync_runs_command(limit: int) -> None:
    """List the latest runs."""
    from .sync import list_runs

    for run in list_runs(limit=limit):
        started = run.started_at.isoformat(timespec="seconds") if run.started_at else "?"
        click.echo(f"{started}  {_summary(run)}")


@sync_command.command("held")
@click.argument("run_id", type=int)
def sync_held_command(run_id: int) -> None:
    """Show the revocations a held run waits to make."""
    held = get_state().store.held_revocations(run_id)
    if not held:
        click.echo(gettext("run %(run)s holds no revocations", run=run_id))
    for row in held:
        why = (
            gettext("missing from the run") if row["kind"] == "missing"
            else gettext("Patreon's new state ends the entitlement or empties its tiers or cents")
        )  # fmt: skip
        click.echo(f"{row['member_id']}  {row['full_name'] or '-'}  {row['email'] or '-'}  ({why})")


def _decide(run_id: int, approve: bool, by: str | None) -> None:
    store = get_state().store
    try:
        results = store.approve_run(run_id, by=by) if approve else store.reject_run(run_id, by=by)
    except (LookupError, ValueError) as exc:
        click.echo(str(exc), err=True)
        raise SystemExit(1) from None
    revoked = sum(1 for r in results if "access_revoked" in r.events)
    changed = sum(1 for r in results if r.changed)
    if approve:
        click.echo(gettext("run %(run)s approved: %(revoked)s revoked, %(changed)s patron(s) changed", run=run_id,
                           revoked=revoked, changed=changed))  # fmt: skip
    else:
        click.echo(gettext("run %(run)s rejected: %(revoked)s revoked, %(changed)s patron(s) changed", run=run_id,
                           revoked=revoked, changed=changed))  # fmt: skip


@sync_command.command("approve")
@click.argument("run_id", type=int)
@click.option("--by", default=None, help="Who decided (recorded in the audit log).")
def sync_approve_command(run_id: int, by: str | None) -> None:
    """Apply the revocations a held run is waiting to make."""
    _decide(run_id, True, by)


@sync_command.command("reject")
@click.argument("run_id", type=int)
@click.option("--by", default=None, help="Who decided (recorded in the audit log).")
def sync_reject_command(run_id: int, by: str | None) -> None:
    """Discard a held run's revocations: everyone keeps access."""
    _decide(run_id, False, by)


@patronlock_cli.group("webhooks")
def webhooks_command() -> None:
    """The campaign's Patreon webhook."""


@webhooks_command.command("register")
@click.option("--url", required=True, help="The public URL of this site's webhook route (…/patreon/webhook).")
def webhooks_register_command(url: str) -> None:
    """Create (or update) the campaign webhook with every members:* trigger, and store its secret."""
    from .patreon.errors import PatreonError
    from .webhooks import register_webhook

    try:
        webhook, action, secret_stored = register_webhook(get_state(), url)
    except ConfigurationError as exc:
        click.echo(gettext("%(error)s Nothing was registered.", error=exc), err=True)
        raise SystemExit(1) from None
    except PatreonError as exc:
        click.echo(gettext("Patreon refused: %(error)s", error=exc), err=True)
        raise SystemExit(1) from None
    if action == "created":
        click.echo(gettext("webhook %(id)s created: %(uri)s", id=webhook.id, uri=webhook.uri))
    else:
        click.echo(gettext("webhook %(id)s updated: %(uri)s", id=webhook.id, uri=webhook.uri))
    click.echo(gettext("triggers: %(triggers)s", triggers=", ".join(webhook.triggers)))
    if secret_stored:
        click.echo(gettext("secret stored (encrypted with PATRONLOCK_TOKEN_KEYS)"))


@webhooks_command.command("status")
def webhooks_status_command() -> None:
    """Show the campaign's webhooks as Patreon sees them (paused? failures) and the local delivery counts."""
    from .patreon.errors import PatreonError
    from .webhooks import delivery_counts, note_patreon_view, stored_webhook

    state = get_state()
    stored = stored_webhook(state) or {}
    try:
        with state.creator_client("reading the webhooks") as client:
            hooks = client.webhooks()
        note_patreon_view(state, hooks)
    except PatreonError as exc:
        click.echo(gettext("could not ask Patreon: %(error)s", error=exc), err=True)
        hooks = []
    if not hooks:
        click.echo(gettext("no webhook registered: run `flask patronlock webhooks register --url URL`"))
    for hook in hooks:
        mark = gettext("  (registered here)") if hook.id == stored.get("id") else ""
        last = hook.last_attempted_at.isoformat(timespec="seconds") if hook.last_attempted_at else gettext("never")
        paused = gettext("YES") if hook.paused else gettext("no")
        click.echo(f"webhook {hook.id}: {hook.uri}{mark}\n  " + gettext(
            "paused: %(paused)s; consecutive failures: %(failures)s; last attempt: %(last)s",
            paused=paused, failures=hook.num_consecutive_times_failed, last=last,
        ))  # fmt: skip
    counts = delivery_counts(state)
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or gettext("none yet")
    click.echo(gettext("deliveries received: %(summary)s", summary=summary))


@webhooks_command.command("retry")
def webhooks_retry_command() -> None:
    """Process, now, the deliveries that are pending or due for a retry."""
    tried = get_state().jobs.retry_due(limit=10_000)
    click.echo(ngettext("%(num)d delivery processed", "%(num)d deliveries processed", tried))


# -- locks (issue 4) -------------------------------------------------------------------------------------------------


@patronlock_cli.command("explain")
@click.argument("user")
@click.argument("lock")
@click.option(
    "--published-at",
    metavar="DATE",
    help="The item's publish date (ISO, e.g. 2026-11-02), for a lock on patrons at the time it was published.",
)
def explain_command(user: str, lock: str, published_at: str | None) -> None:
    """Explain whether USER (a user id, or "-" for an anonymous visitor) may see LOCK: the story in plain words,
    then each step of the decision."""
    from .explain import explain
    from .locks import UnknownLockError, published_moment

    try:
        published = published_moment(published_at)
    except ValueError:
        raise click.BadParameter(
            gettext("%(value)s is not a date: write it like 2026-11-02 or 2026-11-02T09:30",
                    value=repr(published_at)),
            param_hint="--published-at",
        ) from None

    state = get_state()
    subject: object = None
    if user != "-":
        manager = getattr(state.app, "login_manager", None)
        loader = getattr(manager, "_user_callback", None)
        subject = loader(user) if loader is not None else None
        if subject is None:
            if loader is not None:
                click.echo(gettext("note: the user loader found no user %(user)s; explaining for the bare id",
                                   user=repr(user)))  # fmt: skip
            subject = user
    try:
        result = explain(subject, lock, published_at=published)
    except UnknownLockError as exc:
        raise click.BadParameter(str(exc), param_hint="LOCK") from None
    click.echo(result.story)
    click.echo("\n" + gettext("How this was decided:"))
    click.echo(str(result))
    verdict = gettext("ALLOWED") if result.decision.allowed else gettext("DENIED")
    click.echo(f"=> {verdict} ({result.decision.reason})")


# -- insight (insight.py) ----------------------------------------------------------------------------------------------


@patronlock_cli.command("insight")
@click.option("--months", type=click.IntRange(1, 120), default=12, show_default=True, help="How many months back.")
@click.option("--csv", "as_csv", is_flag=True, help="Print the figures as CSV (what the dashboard's download holds).")
@click.option("--patrons", "patrons", is_flag=True, help="Print every stored patron as CSV instead.")
def insight_command(months: int, as_csv: bool, patrons: bool) -> None:
    """The dashboard's figures: new, cancelled, declined and recovered pledges, churn and decline rate by month, and
    what each lock's banner brought."""
    from .insight import figures_csv, figures_text, insight, patrons_csv

    state = get_state()
    if patrons:
        chunks = patrons_csv(state)
    elif as_csv:
        chunks = figures_csv(insight(state, months=months))
    else:
        chunks = (line + "\n" for line in figures_text(insight(state, months=months)))
    for chunk in chunks:
        click.echo(chunk, nl=False)


# -- tokens at rest (accounts.py) ------------------------------------------------------------------------------------


@patronlock_cli.command("rotate-keys")
def rotate_keys_command() -> None:
    """Re-encrypt every stored Patreon token and the registered webhook's secret under the first key of
    PATRONLOCK_TOKEN_KEYS.

    Put the new key first in the list (keep the old ones after it), run this, then remove the old keys.
    """
    from .accounts import get_accounts
    from .creator import rotate_creator_tokens
    from .errors import TokenDecryptionError
    from .webhooks import rotate_webhook_secret

    try:
        report = get_accounts().rotate_keys()
        creator = rotate_creator_tokens(get_state())  # the creator's, connected on the settings page (issue 7)
        webhook = rotate_webhook_secret(get_state())  # what `webhooks register` stored
    except (TokenDecryptionError, ConfigurationError) as exc:
        raise click.ClickException(str(exc)) from None
    counts = {"tokens": report.tokens, "accounts": report.accounts, "creator": creator}
    if creator and webhook:
        done = gettext("Re-encrypted %(tokens)s token(s) of %(accounts)s linked account(s) under the first key of "
                       "PATRONLOCK_TOKEN_KEYS, the creator's %(creator)s token(s), the webhook's secret.", **counts)
    elif creator:
        done = gettext("Re-encrypted %(tokens)s token(s) of %(accounts)s linked account(s) under the first key of "
                       "PATRONLOCK_TOKEN_KEYS, the creator's %(creator)s token(s).", **counts)
    elif webhook:
        done = gettext("Re-encrypted %(tokens)s token(s) of %(accounts)s linked account(s) under the first key of "
                       "PATRONLOCK_TOKEN_KEYS, the webhook's secret.", **counts)
    else:
        done = gettext("Re-encrypted %(tokens)s token(s) of %(accounts)s linked account(s) under the first key of "
                       "PATRONLOCK_TOKEN_KEYS.", **counts)
    click.echo(done + " " + gettext("The other keys can now be removed."))


# -- add-ons (issue 6) -----------------------------------------------------------------------------------------------

addons_cli = _Group("addons", help="Installed add-ons: list them, switch them on or off.")
patronlock_cli.add_command(addons_cli)


@addons_cli.command("list")
def addons_list_command() -> None:
    """List the add-ons found for this app: name, version, on/off, where from, and why a broken one failed."""
    from .settings import list_addons

    found = list_addons()
    if not found:
        click.echo(gettext("No add-ons installed (entry point group flask_patronlock.addons)."))
        return
    for info in found:
        status = gettext("BROKEN") if not info.loaded else gettext("on") if info.enabled else gettext("off")
        click.echo(f"{info.name:<24} {info.version or '-':<12} {status:<6} {info.description}")
        click.echo(f"{'':<24} " + gettext("from %(origin)s", origin=info.origin))
        if info.error:
            click.echo(f"{'':<24} " + gettext("error: %(error)s", error=info.error))


def _switch(name: str, enabled: bool, by: str | None) -> None:
    from .settings import set_addon_enabled

    try:
        set_addon_enabled(name, enabled, by=by)
    except LookupError as exc:
        raise click.BadParameter(str(exc.args[0]), param_hint="NAME") from None
    if enabled:
        click.echo(gettext("Add-on %(name)s is now on (every worker within PATRONLOCK_SETTINGS_CHECK_SECONDS).",
                           name=name))  # fmt: skip
    else:
        click.echo(gettext("Add-on %(name)s is now off (every worker within PATRONLOCK_SETTINGS_CHECK_SECONDS).",
                           name=name))  # fmt: skip


@addons_cli.command("enable")
@click.argument("name")
@click.option("--by", default="cli", show_default=True, help="Who made the change (recorded in the audit log).")
def addons_enable_command(name: str, by: str) -> None:
    """Switch the add-on NAME on."""
    _switch(name, True, by)


@addons_cli.command("disable")
@click.argument("name")
@click.option("--by", default="cli", show_default=True, help="Who made the change (recorded in the audit log).")
def addons_disable_command(name: str, by: str) -> None:
    """Switch the add-on NAME off: its receivers stop running and its pages answer 404."""
    _switch(name, False, by)


# -- comps (flask_patronlock.comps) ------------------------------------------------------------------------------------

comp_cli = _Group("comp", help="Comps: access you grant by hand (a friend, a press copy), with a note and an end.")
patronlock_cli.add_command(comp_cli)

#: a comp's field -> the option that sets it, for errors.
_COMP_OPTIONS = {
    "who": "--user / --member / --patreon-user",
    "user": "--user",
    "member": "--member",
    "patreon_user": "--patreon-user",
    "access": "--lock / --tier",
    "lock": "--lock",
    "tier": "--tier",
    "note": "--note",
    "expires_at": "--until / --days",
}


def _comp_end(until: str | None, days: int | None) -> Any:
    from datetime import date, datetime, timedelta

    if until is not None and days is not None:
        raise click.UsageError(gettext("give --until or --days, not both"))
    if days is not None:
        if days < 1:
            raise click.BadParameter(gettext("give at least 1 day"), param_hint="--days")
        return get_state().store.clock() + timedelta(days=days)
    if until is None:
        return None
    text = until.strip()
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            gettext("%(value)s is not a date: write it like 2027-01-04 (or 2027-01-04T12:00+00:00)",
                    value=repr(until)),
            param_hint="--until",
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@comp_cli.command("grant")
@click.option("--user", "user_id", default=None, metavar="USER_ID", help="An account of this site (its user id).")
@click.option("--member", default=None, metavar="MEMBER",
              help="A Patreon member of the campaign: member id or e-mail address.")
@click.option("--patreon-user", "patreon_user_id", default=None, metavar="ID",
              help="A Patreon user id (whatever their membership).")
@click.option("--lock", default=None, metavar="NAME", help="The named lock the comp opens.")
@click.option("--tier", default=None, metavar="TIER", help="Or: the tier (title or id) the comp counts as.")
@click.option("--note", default="", help="Why (shown to you on the settings page and in explanations).")
@click.option("--until", default=None, metavar="DATE", help="The comp ends at the start of this day (UTC).")
@click.option("--days", type=int, default=None, help="Or: the comp ends this many days from now.")
@click.option("--by", default=None, help="Who grants it (recorded in the audit log).")
def comp_grant_command(user_id: str | None, member: str | None, patreon_user_id: str | None, lock: str | None,
                       tier: str | None, note: str, until: str | None, days: int | None, by: str | None) -> None:
    """Grant a comp: to one person (--user, --member or --patreon-user), for one lock or one tier."""
    from .comps import CompError, comp_sentence, grant_comp

    state = get_state()
    expires_at = _comp_end(until, days)
    try:
        record = grant_comp(
            state, user_id=user_id, member_id=member, patreon_user_id=patreon_user_id, lock=lock, tier=tier,
            note=note, expires_at=expires_at, by=by, source="cli",
        )
    except CompError as exc:
        for field, message in exc.errors[1:]:
            also = gettext("Also: %(option)s: %(message)s", option=_COMP_OPTIONS.get(field, field), message=message)
            click.echo(also, err=True)
        raise click.BadParameter(str(exc), param_hint=_COMP_OPTIONS.get(exc.field)) from None
    click.echo(gettext("Comp %(id)s granted. %(comp)s.", id=record.id, comp=comp_sentence(state, record)))


@comp_cli.command("list")
@click.option("--ended", is_flag=True, help="List the comps that were revoked or expired instead.")
def comp_list_command(ended: bool) -> None:
    """List the open comps (newest first), or the ended ones."""
    from .comps import comp_sentence, list_comps

    state = get_state()
    records = list_comps(state, ended=ended)
    if not records:
        if ended:
            click.echo(gettext("No ended comps."))
        else:
            click.echo(gettext("No comps: grant one with `flask patronlock comp grant`."))
    for record in records:
        click.echo(f"{record.id:>6}  {comp_sentence(state, record)}")


@comp_cli.command("revoke")
@click.argument("comp_id", type=int)
@click.option("--by", default=None, help="Who revokes it (recorded in the audit log).")
def comp_revoke_command(comp_id: int, by: str | None) -> None:
    """Revoke the comp COMP_ID now (see `comp list` for the numbers)."""
    from .comps import CompError, comp_sentence, revoke_comp
    from .models import is_row_id

    state = get_state()
    try:
        if not is_row_id(comp_id):
            raise LookupError(gettext("There is no comp %(id)s.", id=comp_id))
        record = revoke_comp(state, comp_id, by=by, source="cli")
    except (LookupError, CompError) as exc:
        raise click.ClickException(str(exc.args[0])) from None
    click.echo(gettext("Comp %(id)s revoked. %(comp)s.", id=comp_id, comp=comp_sentence(state, record)))


# -- locks creators make (flask_patronlock.settings) ------------------------------------------------------------------

lock_cli = _Group("lock", help="Locks: list them, and make, rename or delete the ones not declared in code.")
patronlock_cli.add_command(lock_cli)

#: a lock's field -> the argument or option that sets it, for errors.
_LOCK_OPTIONS = {"name": "NAME", "title": "--title", "description": "--description", "rule": "--tier", "lock": "NAME"}


def _lock_call(action: Callable[[], T]) -> T:
    """``action()``; a :class:`~flask_patronlock.settings.LockError` becomes a usage error naming the argument or option
    at fault (its other problems listed first)."""
    from .settings import LockError

    try:
        return action()
    except LockError as exc:
        for field, message in exc.errors[1:]:
            also = gettext("Also: %(option)s: %(message)s", option=_LOCK_OPTIONS.get(field, field), message=message)
            click.echo(also, err=True)
        raise click.BadParameter(str(exc), param_hint=_LOCK_OPTIONS.get(exc.field)) from None


@lock_cli.command("list")
def lock_list_command() -> None:
    """Every lock: its name, who may pass it now, and whether it was made in code or on the settings page."""
    from .explain import describe_rule
    from .settings import list_locks

    tiers = get_state().settings.current().tiers
    infos = list_locks()
    if not infos:
        click.echo(gettext("No locks: make one with `flask patronlock lock create NAME --title TITLE`."))
    for info in infos:
        title = f" ({info.title})" if info.title != info.name else ""
        rule = describe_rule(info.effective, tiers)
        named = f"{info.name}{title}"
        if info.origin == "code":
            click.echo(gettext("%(lock)s: %(rule)s; made in code.", lock=named, rule=rule))
        else:
            click.echo(gettext("%(lock)s: %(rule)s; made on the settings page.", lock=named, rule=rule))


@lock_cli.command("create")
@click.argument("name", default="")
@click.option("--title", default="", help="The name patrons read (default: NAME).")
@click.option("--description", default="", help="What the lock is for.")
@click.option("--tier", "tiers", multiple=True, metavar="TIER",
              help="Who may pass: this tier (title or id) or higher; repeat for several. Default: any patron.")
@click.option("--by", default=None, help="Who makes it (recorded in the audit log).")
def lock_create_command(name: str, title: str, description: str, tiers: tuple[str, ...], by: str | None) -> None:
    """Make the lock NAME (lower-case letters, digits and hyphens; made from --title when left out)."""
    from .settings import create_lock

    rule = {"tier_ids": list(tiers)} if tiers else None
    lock = _lock_call(
        lambda: create_lock(name, title=title, description=description, rule=rule, by=by, source="cli")
    )
    click.echo(gettext("Made the lock %(name)s (%(title)s). Use it as @locked(%(code)s).", name=lock.name,
                       title=lock.display_name, code=repr(lock.name)))  # fmt: skip


@lock_cli.command("rename")
@click.argument("name")
@click.option("--title", default=None, help="The new name patrons read.")
@click.option("--description", default=None, help="The new description.")
@click.option("--by", default=None, help="Who changes it (recorded in the audit log).")
def lock_rename_command(name: str, title: str | None, description: str | None, by: str | None) -> None:
    """Change the title or description of the lock NAME; NAME itself stays, so nothing that uses it breaks."""
    from .settings import update_lock

    if title is None and description is None:
        raise click.UsageError(gettext("give --title, --description or both"))
    lock = _lock_call(lambda: update_lock(name, title=title, description=description, by=by, source="cli"))
    click.echo(gettext("The lock %(name)s is now called %(title)s.", name=lock.name, title=lock.display_name))


@lock_cli.command("delete")
@click.argument("name")
@click.option("--by", default=None, help="Who deletes it (recorded in the audit log).")
def lock_delete_command(name: str, by: str | None) -> None:
    """Delete the lock NAME, made on the settings page. What still uses it stays locked to everyone but admins."""
    from .settings import delete_lock

    _lock_call(lambda: delete_lock(name, by=by, source="cli"))
    click.echo(gettext("Deleted the lock %(name)s. Anything still on it stays locked to everyone but admins until it "
                       "gets another lock.", name=name))  # fmt: skip
