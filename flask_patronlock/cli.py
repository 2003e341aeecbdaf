"""``flask patronlock …`` commands. Each needs only an app context."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from . import config as _config
from .errors import ConfigurationError
from .extension import get_state

patronlock_cli = AppGroup("patronlock", help="flask-patronlock: Patreon patrons, locks, sync and webhooks.")


@patronlock_cli.command("check")
def check_command() -> None:
    """Say which configuration is missing and whether the tables exist."""
    state = get_state()
    cfg = state.app.config
    problems = 0
    for key, purpose in (
        ("PATRONLOCK_CLIENT_ID", "Log in / connect with Patreon"),
        ("PATRONLOCK_CLIENT_SECRET", "Log in / connect with Patreon"),
        ("PATRONLOCK_CAMPAIGN_ID", "matching members to this site"),
        ("PATRONLOCK_CREATOR_ACCESS_TOKEN", "reconcile runs and webhooks"),
        ("PATRONLOCK_TOKEN_KEYS", "storing patrons' tokens"),
        ("PATRONLOCK_WEBHOOK_SECRETS", "verifying webhooks"),
    ):
        try:
            _config.require(cfg, key, purpose)
            click.echo(f"ok       {key}")
        except ConfigurationError:
            problems += 1
            click.echo(f"missing  {key}  (needed for {purpose})")
    from sqlalchemy import inspect

    existing = set(inspect(state.store.engine).get_table_names())
    missing = [t.name for t in state.tables.all() if t.name not in existing]
    if missing:
        problems += 1
        click.echo(
            f"missing  tables {', '.join(missing)}: run db.create_all() or `flask db migrate && flask db upgrade`"
        )
    else:
        click.echo("ok       tables")
    if problems:
        raise SystemExit(1)


# -- locks (issue 4) -------------------------------------------------------------------------------------------------


@patronlock_cli.command("explain")
@click.argument("user")
@click.argument("lock")
def explain_command(user: str, lock: str) -> None:
    """Explain, step by step, whether USER (a user id, or "-" for an anonymous visitor) may see LOCK."""
    from .explain import explain
    from .locks import UnknownLockError

    state = get_state()
    subject: object = None
    if user != "-":
        manager = getattr(state.app, "login_manager", None)
        loader = getattr(manager, "_user_callback", None)
        subject = loader(user) if loader is not None else None
        if subject is None:
            if loader is not None:
                click.echo(f"note: the user loader found no user {user!r}; explaining for the bare id")
            subject = user
    try:
        result = explain(subject, lock)
    except UnknownLockError as exc:
        raise click.BadParameter(str(exc), param_hint="LOCK") from None
    click.echo(str(result))
    verdict = "ALLOWED" if result.decision.allowed else "DENIED"
    click.echo(f"=> {verdict} ({result.decision.reason})")


# -- tokens at rest (accounts.py) ------------------------------------------------------------------------------------


@patronlock_cli.command("rotate-keys")
def rotate_keys_command() -> None:
    """Re-encrypt every stored Patreon token under the first key of PATRONLOCK_TOKEN_KEYS.

    Put the new key first in the list (keep the old ones after it), run this, then remove the old keys.
    """
    from .accounts import get_accounts
    from .creator import rotate_creator_tokens
    from .errors import TokenDecryptionError

    try:
        report = get_accounts().rotate_keys()
        creator = rotate_creator_tokens(get_state())  # the creator's, connected on the settings page (issue 7)
    except (TokenDecryptionError, ConfigurationError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"Re-encrypted {report.tokens} token(s) of {report.accounts} linked account(s) under the first key of "
        "PATRONLOCK_TOKEN_KEYS"
        + (f", and the creator's {creator} token(s)" if creator else "")
        + ". The other keys can now be removed."
    )


# -- add-ons (issue 6) -----------------------------------------------------------------------------------------------

addons_cli = AppGroup("addons", help="Installed add-ons: list them, switch them on or off.")
patronlock_cli.add_command(addons_cli)


@addons_cli.command("list")
def addons_list_command() -> None:
    """List the add-ons found for this app: name, version, on/off, where from, and why a broken one failed."""
    from .settings import list_addons

    found = list_addons()
    if not found:
        click.echo("No add-ons installed (entry point group flask_patronlock.addons).")
        return
    for info in found:
        status = "BROKEN" if not info.loaded else "on" if info.enabled else "off"
        click.echo(f"{info.name:<24} {info.version or '-':<12} {status:<6} {info.description}")
        click.echo(f"{'':<24} from {info.origin}")
        if info.error:
            click.echo(f"{'':<24} error: {info.error}")


def _switch(name: str, enabled: bool, by: str | None) -> None:
    from .settings import set_addon_enabled

    try:
        set_addon_enabled(name, enabled, by=by)
    except LookupError as exc:
        raise click.BadParameter(str(exc.args[0]), param_hint="NAME") from None
    click.echo(f"Add-on {name} is now {'on' if enabled else 'off'} (every worker within "
               "PATRONLOCK_SETTINGS_CHECK_SECONDS).")


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
