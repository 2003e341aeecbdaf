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

from flask_patronlock import get_accounts, get_state
from flask_patronlock.policy import PolicySettings
from flask_patronlock.sandbox import SCENARIOS, Sandbox, SandboxError
from flask_patronlock.sandbox.scenarios import describe as describe_scenarios
from flask_patronlock.sandbox.webhooks import default_transport
from flask_patronlock.settings import get_policy_settings, set_policy_settings
from flask_patronlock.sync import run_sync
from flask_patronlock.viewers import forget_cached_viewer

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
    sandbox.add_webhook(hook_url, secret=sandbox.webhook_secret)
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


@blueprint.app_context_processor
def _nav() -> dict[str, Any]:
    return {"sandbox_panel": True}


@blueprint.get("/")
@login_required
def panel() -> str:
    sandbox = _sandbox()
    user = _my_sandbox_user(sandbox)
    state = get_state()
    return render_template(
        "panel.html",
        sandbox=sandbox,
        sandbox_user=user,
        member=_my_member(sandbox, user),
        link=get_accounts().get(current_user.get_id()),
        patron=state.store.patron_for_user(current_user.get_id()),
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
        return f"Sent {len(deliveries)} webhook(s) to this site ({ok} accepted) and processed them."
    if action == "sync":
        result = run_sync(trigger="manual")
        return f"Reconcile run {result.status}: the site re-read every member from Patreon."
    if action == "advance":
        sandbox.advance_months(1)
        return f"The sandbox's clock moved a month, to {sandbox.now:%Y-%m-%d}: renewals were charged."
    user = _my_sandbox_user(sandbox)
    member = _my_member(sandbox, user)
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
