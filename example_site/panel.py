"""The visitor's control panel: play Patreon with the sandbox mounted in the same process.

"Make me a patron of tier X", decline my payment, recover it, cancel, play one of Patreon's documented behaviours
(a sandbox scenario, e.g. the start-of-month zeroing) on my membership, advance the sandbox's clock a month, send the
queued webhooks (the site's real ``/patreon/webhook`` endpoint receives them), and run a reconcile pass now. Only
there when the sandbox is mounted (no real Patreon credentials in the environment).
"""

from __future__ import annotations

import inspect
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from werkzeug.test import Client

from flask_patronlock.accounts import get_accounts
from flask_patronlock.formatting import date_text, money
from flask_patronlock.policy import PolicySettings
from flask_patronlock.sandbox import SCENARIOS, Sandbox, SandboxError
from flask_patronlock.sandbox.scenarios import describe as describe_scenarios
from flask_patronlock.sandbox.webhooks import default_transport
from flask_patronlock.settings import get_policy_settings, set_policy_settings
from flask_patronlock.state import get_state
from flask_patronlock.sync import AlreadyRunning, run_sync
from flask_patronlock.viewers import forget_cached_viewer
from flask_patronlock.views.describe import describe_access

from .app import form_token_ok

blueprint = Blueprint("panel", __name__, url_prefix="/panel")

ACTIONS = ("pledge", "decline", "recover", "cancel", "scenario", "advance", "flush", "sync")


def init_panel(app: Flask, sandbox: Sandbox, *, base_url: str) -> None:
    """Register the panel and point a sandbox webhook at the site's own endpoint.

    Deliveries to this site go straight into its WSGI app (no socket), so "send the webhooks" -- which delivers in
    the request that asks for it -- cannot wait on a server thread that is busy with that very request.
    """
    app.register_blueprint(blueprint)
    hook_url = base_url.rstrip("/") + "/patreon/webhook"
    _point_webhook_at(sandbox, hook_url)
    local = Client(app)
    own = urlsplit(base_url)

    def transport(uri: str, headers: dict[str, str], body: bytes) -> int:
        target = urlsplit(uri)
        if (target.scheme, target.netloc) != (own.scheme, own.netloc):
            return default_transport(uri, headers, body)
        response = local.post(target.path, data=body, headers=headers, base_url=base_url)
        status = response.status_code
        response.close()
        return status

    sandbox.transport = transport

    # The library's default keeps a declined patron's access for a 7-day grace period; so that "decline my payment"
    # shows its banner at once, the example starts with "restrict" (until the creator picks a policy in settings).
    with app.app_context():
        if get_policy_settings() == PolicySettings():
            set_policy_settings(replace(PolicySettings(), declined="restrict"), by="example-site")


def _point_webhook_at(sandbox: Sandbox, hook_url: str) -> None:
    """One webhook from the sandbox to this site: a kept sandbox has it already (moved here if the site now runs on
    another address of this machine); a new one gets it."""
    own = [
        w for w in sandbox.webhooks if urlsplit(w.uri).path == "/patreon/webhook" and w.secret == sandbox.webhook_secret
    ]
    if any(w.uri == hook_url for w in own):
        return
    if own:
        sandbox.update_webhook(own[0].id, uri=hook_url, paused=False)
    else:
        sandbox.add_webhook(hook_url, secret=sandbox.webhook_secret)


def _sandbox() -> Sandbox:
    sandbox: Sandbox | None = current_app.extensions.get("example_sandbox")
    if sandbox is None:
        abort(404)
    return sandbox


def _my_sandbox_user(sandbox: Sandbox) -> Any:
    """The visitor's Patreon user in the sandbox: the linked one, else the one with their email (or None)."""
    link = get_accounts().get(current_user.get_id())
    for ref in ([link.patreon_user_id] if link else []) + [current_user.email]:
        try:
            return sandbox.user(ref)
        except SandboxError:
            continue
    return None


def _my_member(sandbox: Sandbox, user: Any) -> Any:
    return sandbox.member_for_user(user.id) if user is not None else None


#: a last charge's status in words.
CHARGE_WORDS = {"Paid": "paid", "Declined": "declined", "Pending": "pending", "Refunded": "refunded",
                "Fraud": "refused as fraud", "Deleted": "cancelled"}  # fmt: skip


def _on_patreon(sandbox: Sandbox, member: Any) -> str:
    """The visitor's membership on Patreon (the sandbox), in words."""
    if member is None:
        return "Not a member of the campaign."
    titles = " and ".join(sandbox.tier(t).title for t in member.tier_ids)
    amount = f"${money(member.amount_cents)} a month" + (", paid yearly" if member.cadence == 12 else "")
    charge = ""
    if member.last_charge_status and member.last_charge_date:
        said = CHARGE_WORDS.get(member.last_charge_status, member.last_charge_status.lower())
        charge = f" Last payment {said} on {date_text(member.last_charge_date, day_first=True)}."
    if member.patron_status == "active_patron":
        return f"{titles or 'A'} patron, {amount}.{charge}"
    if member.patron_status == "declined_patron":
        what = "Pledge cancelled after a declined payment." if member.pledge_deleted else "Payment declined."
        return f"{what}{charge}"
    if member.patron_status == "former_patron":
        return f"Cancelled: a former patron.{charge}"
    return "A free member (no pledge)."


def _on_this_site(patron: Any) -> str:
    """What the site has stored of the visitor, in the words of its own status page."""
    snapshot = get_state().settings.current()
    currency = current_app.config.get("PATRONLOCK_CURRENCY_SYMBOL") or ""
    return describe_access(patron, dict(snapshot.tiers), get_state().store.clock(), snapshot.policy, currency=currency)


#: where the site learned what it stored, in words.
SOURCE_WORDS = {"oauth": "when you connected or refreshed your status", "webhook": "from a webhook",
                "sync": "from a reconcile run", "admin": "from the settings page",
                "clock": "as time passed"}  # fmt: skip


@blueprint.app_context_processor
def _nav() -> dict[str, Any]:
    return {"sandbox_panel": True}


@blueprint.get("/")
@login_required
def panel() -> str:
    sandbox = _sandbox()
    user = _my_sandbox_user(sandbox)
    patron = get_state().store.patron_for_user(current_user.get_id())
    return render_template(
        "panel.html",
        sandbox=sandbox,
        sandbox_user=user,
        member=_my_member(sandbox, user),
        link=get_accounts().get(current_user.get_id()),
        patron=patron,
        on_patreon=_on_patreon(sandbox, _my_member(sandbox, user)),
        on_this_site=_on_this_site(patron) if patron is not None else None,
        learned=SOURCE_WORDS.get(patron.source or "", "") if patron is not None else "",
        tiers=[t for t in sandbox.tiers if t.amount_cents > 0],
        scenarios=describe_scenarios(),
        pending=sandbox.pending_deliveries(),
        recent=list(sandbox.deliveries)[-5:][::-1],
    )


@blueprint.post("/<action>")
@login_required
def act(action: str) -> Any:
    if action not in ACTIONS:
        abort(404)
    if not form_token_ok():
        flash("That form expired: try again.", "error")
        return redirect(url_for(".panel"))
    sandbox = _sandbox()
    try:
        flash(_do(action, sandbox), "info")
    except SandboxError as exc:
        flash(f"The sandbox said no: {exc}", "error")
    forget_cached_viewer(current_user.get_id())
    return redirect(url_for(".panel"))


def _do(action: str, sandbox: Sandbox) -> str:
    if action == "flush":
        deliveries = sandbox.flush_webhooks()
        get_state().jobs.wait_idle(timeout=10.0)  # thread mode: let the worker re-fetch and apply them
        ok = sum(1 for d in deliveries if d.ok)
        if not deliveries:
            return "There were no webhooks waiting: Patreon had nothing new to tell this site."
        sent = "one webhook" if len(deliveries) == 1 else f"{len(deliveries)} webhooks"
        if ok == len(deliveries):
            return f"Sent {sent} to this site, which accepted and processed {'it' if ok == 1 else 'them'}."
        return f"Sent {sent} to this site; it accepted {ok} (the rest wait to be sent again)."
    if action == "sync":
        try:
            result = run_sync(trigger="manual")
        except AlreadyRunning:
            return "A reconcile run is already under way (the site starts one by itself): its result shows in a moment."
        return f"Reconcile run {result.status}: the site re-read every member from Patreon."
    if action == "advance":
        sandbox.advance_months(1)
        when = date_text(sandbox.now, day_first=True)
        return (f"The clock moved a month: it is now {when}, on Patreon and on this site. Renewals due meanwhile "
                "were charged on Patreon (send the webhooks, or sync, to tell the site).")  # fmt: skip
    user = _my_sandbox_user(sandbox)
    member = _my_member(sandbox, user)
    if get_accounts().get(current_user.get_id()) is None:
        raise SandboxError("connect your Patreon account first (the link at the top of this page), then pledge")
    if action == "scenario":
        return _play(sandbox, request.form.get("scenario", ""), user, member)
    if action == "pledge":
        tier = request.form.get("tier", "")
        if member is not None and member.patron_status in ("active_patron", "declined_patron"):
            sandbox.change_tier(member, tier)
            return f"You now pledge at {tier} (the webhooks are queued: send them, or run a sync)."
        if user is not None:
            sandbox.add_patron(user=user, tier=tier)
        else:
            sandbox.add_patron(current_user.email, tier=tier, full_name=current_user.name)
        return f"You are a {tier} patron on Patreon (the webhooks are queued: send them, or run a sync)."
    if member is None:
        raise SandboxError("you are not a member of the campaign yet: become a patron first")
    if action == "decline":
        sandbox.decline(member)
        return "Your payment was declined on Patreon."
    if action == "recover":
        sandbox.recover(member)
        return "Your payment went through on Patreon."
    sandbox.cancel(member)
    return "You cancelled your pledge on Patreon."


def _play(sandbox: Sandbox, name: str, user: Any, member: Any) -> str:
    """Play scenario ``name`` on the visitor's own membership (or, for those that make one, as the visitor)."""
    func = SCENARIOS.get(name)
    if func is None:
        raise SandboxError("choose one of the listed behaviours")
    takes = inspect.signature(func).parameters
    params: dict[str, Any] = {}
    if "email" in takes and (member is None or "members" not in takes):
        params["email"] = user.email if user is not None else current_user.email
    elif "members" in takes:
        if member is None:
            raise SandboxError("you are not a member of the campaign yet: become a patron first")
        params["members"] = [member.id]
    sandbox.scenario(name, **params)
    summary = (inspect.getdoc(func) or name).split("\n", 1)[0].rstrip(".")
    return f"Played on Patreon: {summary}. (The webhooks are queued: send them, or run a sync.)"
