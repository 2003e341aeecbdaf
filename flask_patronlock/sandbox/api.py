"""Patreon's API v2 as the sandbox serves it (``/api/oauth2/v2/...``): identity, campaigns, members and webhooks,
JSON:API with ``fields[...]`` and ``include`` (see :mod:`.documents` for the attribute rules), errors in Patreon's
format, and the members listing's injected faults."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import urlencode

from flask import Response, request, url_for

from .attributes import WEBHOOK_ATTRIBUTES
from .documents import Renderer
from .entities import (
    Fault,
    SandboxError,
    Token,
)
from .state import Sandbox
from .web import (
    JSONAPI_MIMETYPE,
    abort_with,
    api_error,
    api_response,
    api_root,
    as_bool,
    blueprint,
    get_sandbox,
    is_creator,
    query_fields,
    query_include,
    renderer_for,
    require_token,
)

#: nothing to import: importing the module adds its routes to the blueprint (see :mod:`.app`).
__all__: list[str] = []

DEFAULT_PAGE_COUNT = 20


MAX_PAGE_COUNT = 1000


IDENTITY_INCLUDES = (
    "memberships",
    "campaign",
    "memberships.campaign",
    "memberships.currently_entitled_tiers",
    "memberships.user",
    "memberships.address",
)


CAMPAIGN_INCLUDES = ("tiers", "creator", "benefits", "goals")


MEMBER_INCLUDES = ("address", "campaign", "currently_entitled_tiers", "user")


WEBHOOK_INCLUDES = ("campaign",)


# -- API v2 ---------------------------------------------------------------------------------------------------------


def _read(scope: str, includes: tuple[str, ...]) -> tuple[Sandbox, Token, Callable[..., Renderer]]:
    """A read's sandbox and token (``scope`` required), and its renderer factory for the request's ``fields[...]``
    and ``include`` (both checked, answering 400, before anything is read)."""
    sandbox = get_sandbox()
    token = require_token(scope)
    fields, _ = query_fields()
    include = query_include(includes)
    return sandbox, token, partial(renderer_for, sandbox, token, fields, include)


@blueprint.route("/api/oauth2/v2/identity")
def identity() -> Response:
    """The token's user; ``include=memberships[...]``, ``campaign``. Email needs the ``identity[email]`` scope."""
    sandbox, token, renderer_of = _read("identity", IDENTITY_INCLUDES)
    with sandbox.lock:
        user = sandbox.user(token.user_id)
        renderer = renderer_of(email_scope="identity[email]")
        renderer.mark_primary("user", user.id)
        data = renderer.user(user)
        doc = renderer.document(data, links={"self": f"{api_root()}/user/{user.id}"})
    return api_response(doc)


@blueprint.route("/api/oauth2/v2/campaigns")
def campaigns() -> Response:
    """The token user's campaigns (the sandbox campaign for the creator's token, none for patrons')."""
    sandbox, token, renderer_of = _read("campaigns", CAMPAIGN_INCLUDES)
    with sandbox.lock:
        renderer = renderer_of()
        owned = [sandbox.campaign] if is_creator(sandbox, token) else []
        for campaign in owned:
            renderer.mark_primary("campaign", campaign.id)
        data = [renderer.campaign(c) for c in owned]
        doc = renderer.document(data, meta={"pagination": {"cursors": {"next": None}, "total": len(owned)}})
    return api_response(doc)


def _own_campaign(sandbox: Sandbox, token: Token, campaign_id: str) -> None:
    if campaign_id != sandbox.campaign.id:
        abort_with(api_error(404, f"No campaign {campaign_id}."))
    if not is_creator(sandbox, token):
        abort_with(api_error(403, "Only the campaign's creator may see this."))


@blueprint.route("/api/oauth2/v2/campaigns/<campaign_id>")
def campaign(campaign_id: str) -> Response:
    """One campaign; ``include=tiers,creator`` (``benefits``, ``goals`` are accepted and empty)."""
    sandbox, token, renderer_of = _read("campaigns", CAMPAIGN_INCLUDES)
    _own_campaign(sandbox, token, campaign_id)
    with sandbox.lock:
        renderer = renderer_of()
        renderer.mark_primary("campaign", campaign_id)
        data = renderer.campaign(sandbox.campaign)
        doc = renderer.document(data, links={"self": f"{api_root()}/campaigns/{campaign_id}"})
    return api_response(doc)


@blueprint.route("/api/oauth2/v2/campaigns/<campaign_id>/members")
def members(campaign_id: str) -> Response:
    """The campaign's members, a page at a time (``page[count]`` default 20, at most 1000; ``page[cursor]``),
    with the next page in both ``links.next`` and ``meta.pagination.cursors.next`` and the member count in
    ``meta.pagination.total``. Faults injected with :meth:`Sandbox.add_fault` act here."""
    sandbox = get_sandbox()
    token = require_token("campaigns.members")
    fields, args = query_fields()
    include = query_include(MEMBER_INCLUDES)
    _own_campaign(sandbox, token, campaign_id)

    raw_count = args.get("page[count]") or args.get("page[size]")
    try:
        count = DEFAULT_PAGE_COUNT if raw_count is None else int(raw_count)
    except ValueError:
        abort_with(api_error(400, "page[count] must be an integer."))
    if count < 1:
        abort_with(api_error(400, "page[count] must be at least 1."))
    count = min(count, MAX_PAGE_COUNT)
    cursor = args.get("page[cursor]") or None
    after_seq, page_no = 0, 1
    if cursor is not None:
        try:
            after_seq, page_no = sandbox.decode_cursor(cursor)
        except SandboxError:
            abort_with(api_error(400, f"Invalid cursor {cursor!r}.", code_name="ParameterInvalid"))

    fired = sandbox.take_faults(page_no)
    faults = {f.kind: f for f in fired}
    if "error" in faults:
        fault = faults["error"]
        return api_error(fault.status, f"Injected fault: page {page_no} fails with {fault.status}.")
    if "rate_limit" in faults:
        wait = faults["rate_limit"].retry_after
        return api_error(
            429,
            "You have made too many attempts. Please try again later.",
            extra={"retry_after_seconds": wait},
            headers={"Retry-After": str(wait)},
        )
    if "slow" in faults:
        time.sleep(faults["slow"].seconds)

    with sandbox.lock:
        page, next_seq = sandbox.page_of_members(after_seq, count)
        total = len(sandbox)
        if "drop" in faults:
            fault = faults["drop"]
            dropped, page = page[: fault.count], page[fault.count :]
            fault.dropped_ids.extend(m.id for m in dropped)
        renderer = renderer_for(sandbox, token, fields, include)
        next_cursor = sandbox.encode_cursor(next_seq, page_no + 1) if next_seq is not None else None
        if "repeat_cursor" in faults:
            next_cursor = cursor or sandbox.encode_cursor(0, 1)
        links = None
        if next_cursor is not None:
            query = [(k, v) for k, v in request.args.items(multi=True) if k != "page[cursor]"]
            query.append(("page[cursor]", next_cursor))
            base = url_for("patronlock_sandbox.members", campaign_id=campaign_id, _external=True)
            links = {"next": f"{base}?{urlencode(query)}"}
        body = renderer.members_page(
            page, links=links, meta={"pagination": {"cursors": {"next": next_cursor}, "total": total}}
        )
    for fault in fired:
        if fault.kind == "drift":
            body = _drift(body, fault)
    if "truncate" in faults:
        body = body[: len(body) // 2]
    return Response(body, mimetype=JSONAPI_MIMETYPE)


def _drift(body: str, fault: Fault) -> str:
    """``body`` (a members page) with a ``drift`` fault's change made to its members."""
    doc = json.loads(body)
    name = fault.field or ""
    relationship = name.startswith("relationships.")
    for resource in doc.get("data", []):
        attrs = resource.setdefault("attributes", {})
        if fault.status_of is not None and attrs.get("patron_status") != fault.status_of:
            continue
        if relationship:
            rels = resource.setdefault("relationships", {})
            key = name.removeprefix("relationships.")
            if fault.remove:
                rels.pop(key, None)
            else:
                rels[key] = {"data": fault.value}
        elif fault.remove:
            attrs.pop(name, None)
        else:
            attrs[name] = fault.value
    return json.dumps(doc)


@blueprint.route("/api/oauth2/v2/members/<member_id>")
def member(member_id: str) -> Response:
    """One member (the creator's token, or the member's own user's token with ``campaigns.members``)."""
    sandbox, token, renderer_of = _read("campaigns.members", MEMBER_INCLUDES)
    with sandbox.lock:
        found = sandbox._members.get(member_id)
        if found is None:
            return api_error(404, f"No member {member_id}.")
        if not is_creator(sandbox, token) and found.user_id != token.user_id:
            return api_error(403, "Only the campaign's creator may see this member.")
        renderer = renderer_of()
        renderer.mark_primary("member", found.id)
        data = renderer.member(found)
        doc = renderer.document(data, links={"self": f"{api_root()}/members/{found.id}"})
    return api_response(doc)


def _webhook_payload() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        abort_with(api_error(400, 'The body must be a JSON:API document: {"data": {"type": "webhook", ...}}.'))
    data: dict[str, Any] = body["data"]
    if data.get("type", "webhook") != "webhook":
        abort_with(api_error(400, "data.type must be webhook."))
    attributes = data.get("attributes") or {}
    if not isinstance(attributes, dict):
        abort_with(api_error(400, "data.attributes must be an object."))
    return data


def _webhook_doc(sandbox: Sandbox, token: Token, webhook_ids: list[str], *, many: bool, all_attrs: bool) -> Any:
    fields, _ = query_fields()
    include = query_include(WEBHOOK_INCLUDES)
    defaults = {"webhook": WEBHOOK_ATTRIBUTES} if all_attrs else None
    renderer = renderer_for(sandbox, token, fields, include, defaults=defaults)
    hooks = [sandbox.webhook(i) for i in webhook_ids]
    if many:
        return renderer.document(
            [renderer.webhook(w) for w in hooks],
            meta={"pagination": {"cursors": {"next": None}, "total": len(hooks)}},
        )
    return renderer.document(renderer.webhook(hooks[0]), links={"self": f"{api_root()}/webhooks/{hooks[0].id}"})


@blueprint.route("/api/oauth2/v2/webhooks", methods=["GET", "POST"], strict_slashes=False)
def webhooks() -> Response:
    """GET: the client's webhooks. POST: register one (Patreon's body; the response carries ``secret``)."""
    sandbox = get_sandbox()
    token = require_token("w:campaigns.webhook")
    if request.method == "GET":
        with sandbox.lock:
            ids = [w.id for w in sandbox.webhooks if w.client_id == token.client_id]
            return api_response(_webhook_doc(sandbox, token, ids, many=True, all_attrs=False))
    data = _webhook_payload()
    attributes = data.get("attributes") or {}
    triggers = attributes.get("triggers")
    uri = attributes.get("uri")
    if not isinstance(triggers, list) or not all(isinstance(t, str) for t in triggers):
        return api_error(400, "attributes.triggers must be a list of trigger names.")
    if not isinstance(uri, str):
        return api_error(400, "attributes.uri is required.")
    campaign_ref = ((data.get("relationships") or {}).get("campaign") or {}).get("data") or {}
    campaign_id = str(campaign_ref.get("id", ""))
    if not campaign_id:
        return api_error(400, "relationships.campaign.data.id is required.")
    _own_campaign(sandbox, token, campaign_id)
    try:
        webhook = sandbox.add_webhook(uri, triggers, client_id=token.client_id)
    except SandboxError as exc:
        return api_error(400, str(exc))
    with sandbox.lock:
        return api_response(_webhook_doc(sandbox, token, [webhook.id], many=False, all_attrs=True), 201)


@blueprint.route("/api/oauth2/v2/webhooks/<webhook_id>", methods=["GET", "PATCH", "DELETE"])
def webhook(webhook_id: str) -> Response:
    """GET one webhook; PATCH ``uri``, ``triggers``, ``paused`` (or Patreon's ``is_paused``); DELETE it."""
    sandbox = get_sandbox()
    token = require_token("w:campaigns.webhook")
    with sandbox.lock:
        found = sandbox._webhooks.get(webhook_id)
        if found is None or found.client_id != token.client_id:
            return api_error(404, f"No webhook {webhook_id}.")
    if request.method == "GET":
        with sandbox.lock:
            return api_response(_webhook_doc(sandbox, token, [webhook_id], many=False, all_attrs=False))
    if request.method == "DELETE":
        sandbox.delete_webhook(webhook_id)
        return Response(status=204)
    data = _webhook_payload()
    attributes = data.get("attributes") or {}
    paused_value = attributes.get("paused", attributes.get("is_paused"))
    triggers = attributes.get("triggers")
    uri = attributes.get("uri")
    if triggers is not None and (not isinstance(triggers, list) or not all(isinstance(t, str) for t in triggers)):
        return api_error(400, "attributes.triggers must be a list of trigger names.")
    if uri is not None and not isinstance(uri, str):
        return api_error(400, "attributes.uri must be a string.")
    try:
        sandbox.update_webhook(
            webhook_id,
            uri=uri,
            triggers=triggers,
            paused=None if paused_value is None else as_bool(paused_value),
        )
    except SandboxError as exc:
        return api_error(400, str(exc))
    with sandbox.lock:
        return api_response(_webhook_doc(sandbox, token, [webhook_id], many=False, all_attrs=True))
