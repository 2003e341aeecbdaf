"""The sandbox's OAuth endpoints and browser pages: the consent page (``/oauth2/authorize``), the token endpoint
(``/api/oauth2/token``), the campaign's pledge page (``/checkout/<campaign id>``) and placeholder avatars."""

from __future__ import annotations

import html
from collections.abc import Mapping
from urllib.parse import urlencode

from flask import Response, redirect, render_template, request, url_for

from .entities import (
    ALL_SCOPES,
    DEFAULT_USER_SCOPES,
    NotFoundError,
    OAuthError,
    SandboxError,
    User,
)
from .state import Sandbox
from .web import (
    blueprint,
    error_page,
    get_sandbox,
    json_response,
)

#: nothing to import: importing the module adds its routes to the blueprint (see :mod:`.app`).
__all__: list[str] = []

def _with_query(uri: str, params: Mapping[str, str | None]) -> str:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    if not query:
        return uri
    base, _, fragment = uri.partition("#")
    joined = f"{base}{'&' if '?' in base else '?'}{query}"
    return f"{joined}#{fragment}" if fragment else joined


@blueprint.route("/oauth2/authorize", methods=["GET", "POST"])
def authorize() -> Response:
    """Patreon's consent page; see the module docstring for the non-interactive test mode."""
    sandbox = get_sandbox()
    values = request.values
    client_id = values.get("client_id")
    redirect_uri = values.get("redirect_uri")
    state = values.get("state")
    if not sandbox.check_client(client_id):
        return error_page("Unknown client_id: no OAuth client with that id exists in this sandbox.")
    if not redirect_uri or not redirect_uri.startswith(("http://", "https://")):
        return error_page("redirect_uri is missing or is not an absolute http(s) URL.")
    if sandbox.redirect_uris is not None and redirect_uri not in sandbox.redirect_uris:
        return error_page("redirect_uri is not registered for this client.")
    assert client_id is not None

    def fail(error: str, description: str | None = None) -> Response:
        params = {"error": error, "error_description": description, "state": state}
        return redirect(_with_query(redirect_uri, params), 302)  # type: ignore[return-value]

    if values.get("response_type") != "code":
        return fail("unsupported_response_type", "response_type must be code")
    challenge = values.get("code_challenge") or None
    method = values.get("code_challenge_method") or None
    if challenge is not None and method != "S256":
        return fail("invalid_request", "code_challenge_method must be S256")
    if challenge is None and method is not None:
        return fail("invalid_request", "code_challenge_method without code_challenge")
    requested = sandbox.parse_scopes(values.get("scope"))
    unknown = sorted(s for s in requested if s not in _KNOWN_SCOPES)
    if unknown:
        return fail("invalid_scope", f"unknown scope(s): {' '.join(unknown)}")
    scopes = requested or frozenset(DEFAULT_USER_SCOPES)

    decision = values.get("sandbox_decision") or (values.get("decision") if request.method == "POST" else None)
    if decision is None:
        return _consent_page(sandbox, scopes)
    if decision == "deny":
        return fail("access_denied", "The user denied access.")
    if decision != "approve":
        return error_page("sandbox_decision must be approve or deny.")
    try:
        user = _chosen_user(sandbox, values)
    except SandboxError as exc:
        if values.get("sandbox_decision"):
            return error_page(str(exc))
        return _consent_page(sandbox, scopes, error=str(exc))
    code = sandbox.create_code(
        client_id=client_id,
        redirect_uri=redirect_uri,
        user=user,
        scopes=scopes,
        code_challenge=challenge,
        code_challenge_method=method,
    )
    return redirect(_with_query(redirect_uri, {"code": code, "state": state}), 302)  # type: ignore[return-value]


_KNOWN_SCOPES = frozenset((*ALL_SCOPES, "campaigns.posts"))


#: the consent form's choice of a new test user (``user_id=new`` with ``new_email``).
NEW_USER = "new"


def _chosen_user(sandbox: Sandbox, values: Mapping[str, str]) -> User:
    ref = (values.get("sandbox_user") or values.get("user_id") or "").strip()
    new_email = (values.get("new_email") or "").strip()
    if ref == NEW_USER and not new_email:
        raise SandboxError("Give the new test patron an email address.")
    if new_email and ref in ("", NEW_USER):
        with sandbox.lock:
            try:
                return sandbox.user(new_email)
            except NotFoundError:
                return sandbox.add_user(new_email, full_name=(values.get("new_name") or "").strip() or None)
    if not ref:
        raise SandboxError("Choose a test patron, or give an email to create one.")
    try:
        return sandbox.user(ref)
    except NotFoundError:
        if "@" in ref:
            return sandbox.add_user(ref)
        raise


_CONSENT_LIST_LIMIT = 50


_OAUTH_PARAMS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
)


def _creator_flow(scopes: frozenset[str]) -> bool:
    """Whether the app asks for a campaign's scopes: a creator connecting their campaign (Patreon signs in whoever
    is logged in; the sandbox proposes its creator for these, and a new patron for everything else)."""
    return any(scope.startswith(("campaigns", "w:campaigns")) for scope in scopes)


#: names the consent page proposes for a new test patron, in turn (a person's name, as a Patreon account has one, so
#: the site's settings page shows "Robin Meyer", not "Patron3").
_PROPOSED_NAMES = (
    "Robin Meyer", "Noor Haddad", "Mika Tanaka", "Ada Okafor", "Luca Rossi", "Ines Duarte", "Tomás Novak",
    "Priya Raman", "Jonas Berg", "Lea Martin", "Omar Farouk", "Hana Sato",
)  # fmt: skip


def _proposed_person(sandbox: Sandbox) -> tuple[str, str]:
    """``(name, email)`` the consent page proposes for a new test patron: the first of :data:`_PROPOSED_NAMES` whose
    address (``robin.meyer@example.com``) no user has, then ``patron<N>@example.com`` with no name (nothing is
    created)."""
    for name in _PROPOSED_NAMES:
        email = name.lower().replace(" ", ".").replace("á", "a") + "@example.com"
        try:
            sandbox.user(email)
        except NotFoundError:
            return name, email
    number = len(sandbox.users)
    while True:
        email = f"patron{number}@example.com"
        try:
            sandbox.user(email)
        except NotFoundError:
            return "", email
        number += 1


def _consent_page(sandbox: Sandbox, scopes: frozenset[str], error: str | None = None) -> Response:
    creator_flow = _creator_flow(scopes)
    with sandbox.lock:
        rows = []
        for user in sandbox.users[:_CONSENT_LIST_LIMIT]:
            member = sandbox.member_for_user(user.id)
            if member is None:
                status = "creator" if user.is_creator else "no membership"
            else:
                titles = ", ".join(sandbox.tier(t).title for t in member.tier_ids)
                status = f"{member.patron_status or 'free member'}{f' · {titles}' if titles else ''}"
            rows.append({"id": user.id, "name": user.full_name, "email": user.email or "", "status": status})
        total = len(sandbox.users)
        suggested_name, suggested = _proposed_person(sandbox)
    hidden = {k: v for k, v in request.values.items() if k in _OAUTH_PARAMS}
    chosen = request.values.get("user_id") if error else (sandbox.creator.id if creator_flow else NEW_USER)
    body = render_template(
        "patronlock_sandbox/authorize.html",
        users=rows,
        total_users=total,
        hidden=hidden,
        scopes=sorted(scopes),
        error=error,
        action=url_for("patronlock_sandbox.authorize"),
        chosen=chosen,
        new_user=NEW_USER,
        new_email=request.values.get("new_email") if error else suggested,
        new_name=request.values.get("new_name", "") if error else suggested_name,
        creator_flow=creator_flow,
    )
    return Response(body, mimetype="text/html")


@blueprint.route("/api/oauth2/token", methods=["POST"])
def token() -> Response:
    """Patreon's token endpoint (form body or query string; client secret in the body or HTTP Basic)."""
    sandbox = get_sandbox()
    params: dict[str, str] = dict(request.args.items())
    params.update(request.form.items())
    client_id = params.get("client_id")
    client_secret = params.get("client_secret")
    auth = request.authorization
    if auth is not None and auth.type == "basic" and auth.username:
        client_id, client_secret = auth.username, auth.password
    no_store = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    if not client_secret or not sandbox.check_client(client_id, client_secret):
        return json_response({"error": "invalid_client"}, 401, headers=no_store)
    assert client_id is not None
    grant_type = params.get("grant_type")
    try:
        if grant_type == "authorization_code":
            issued = sandbox.exchange_code(
                client_id=client_id,
                code=params.get("code"),
                redirect_uri=params.get("redirect_uri"),
                code_verifier=params.get("code_verifier"),
            )
        elif grant_type == "refresh_token":
            issued = sandbox.refresh(client_id=client_id, refresh_token=params.get("refresh_token"))
        else:
            return json_response({"error": "unsupported_grant_type"}, 400, headers=no_store)
    except OAuthError as exc:
        body = {"error": exc.error}
        if exc.description:
            body["error_description"] = exc.description
        return json_response(body, exc.status, headers=no_store)
    return json_response(issued.response(), headers=no_store)


@blueprint.route("/_sandbox/avatar/<name>.svg")
def avatar(name: str) -> Response:
    """A placeholder avatar (users' and the campaign's ``image_url``)."""
    label = html.escape(name[-2:].upper())
    hue = sum(map(ord, name)) % 360
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100" viewBox="0 0 100 100">'
        f'<rect width="100" height="100" fill="hsl({hue},55%,55%)"/>'
        '<text x="50" y="62" font-size="36" text-anchor="middle" fill="#fff" font-family="sans-serif">'
        f"{label}</text></svg>"
    )
    return Response(svg, mimetype="image/svg+xml")


@blueprint.route("/checkout/<campaign_id>", methods=["GET", "POST"])
def checkout(campaign_id: str) -> Response:
    """The campaign's pledge page (``pledge_url``; ``?rid=<tier id>`` preselects a tier): pick or create a user and
    a tier, and pledge. For trying a site by hand."""
    sandbox = get_sandbox()
    if campaign_id != sandbox.campaign.id:
        return error_page(f"No campaign {campaign_id}.", 404)
    message = error = None
    if request.method == "POST":
        form = request.form
        try:
            user = _chosen_user(sandbox, form)
            tier_ref = form.get("tier") or ""
            existing = sandbox.member_for_user(user.id)
            if existing is not None and existing.patron_status in ("active_patron", "declined_patron"):
                sandbox.change_tier(existing, tier_ref)
                message = f"{user.full_name} now pledges at {sandbox.tier(tier_ref).title}."
            else:
                sandbox.add_patron(user=user, tier=tier_ref, cadence=int(form.get("cadence", 1)))
                message = f"{user.full_name} pledged at {sandbox.tier(tier_ref).title}."
        except (SandboxError, ValueError) as exc:
            error = str(exc)
    with sandbox.lock:
        tiers = [t for t in sandbox.tiers if t.published]
        users = [u for u in sandbox.users[:_CONSENT_LIST_LIMIT] if not u.is_creator]
    body = render_template(
        "patronlock_sandbox/checkout.html",
        tiers=tiers,
        users=users,
        selected=request.args.get("rid"),
        message=message,
        error=error,
        action=url_for("patronlock_sandbox.checkout", campaign_id=campaign_id, rid=request.args.get("rid")),
    )
    return Response(body, mimetype="text/html")
