"""The sandbox's ``/_sandbox`` JSON controls, mirroring :class:`~.state.Sandbox`'s Python API (users, patrons,
members, scenarios, the clock, tokens, faults, webhooks, deliveries, events); ``GET /_sandbox/state`` (and ``GET /``)
summarises everything. Who may use them is the app's ``control_guard``'s decision (see
:func:`~.app.create_sandbox_app`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from flask import Response, current_app, request

from .entities import (
    ALL_MEMBER_TRIGGERS,
    NotFoundError,
    SandboxError,
)
from .scenarios import SCENARIOS
from .scenarios import describe as describe_scenarios
from .state import Sandbox
from .web import (
    CONTROLS_KEY,
    abort_with,
    as_bool,
    blueprint,
    get_sandbox,
    json_response,
)

#: nothing to import: importing the module adds its routes to the blueprint (see :mod:`.app`).
__all__: list[str] = []

def _origin(url: str) -> tuple[str, str, int | None]:
    """``(scheme, host, port)`` of an absolute http(s) URL, the port made explicit.

    :raises ValueError: not an absolute http(s) URL with a host.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an absolute http(s) URL")
    port = parts.port  # ValueError for a port that is not a number
    return parts.scheme, parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80)


def _webhook_target_refusal(uri: str) -> str | None:
    """Why the controls refuse a webhook to ``uri``, or None. A flush POSTs every queued event to each webhook, so
    a webhook on any host a caller names would make the sandbox send requests wherever they like (the metadata
    service at 169.254.169.254, a service beside the site); the controls deliver only to the sandbox's own origin
    (the site it is mounted in) and the hosts its app was created to allow."""
    try:
        scheme, host, port = _origin(uri)
    except ValueError:
        return f"webhook uri {uri!r} is not an absolute http(s) URL"
    own = _origin(get_sandbox().base_url)
    allowed = current_app.extensions[CONTROLS_KEY].webhook_hosts
    if (scheme, host, port) == own or any(h == host and p in (None, port) for h, p in allowed):
        return None
    return (
        f"webhook uri {uri!r} is not on this sandbox's own site ({own[0]}://{own[1]}:{own[2]}); the controls only "
        "send webhooks there, or to a host the sandbox was started to allow (webhook_hosts, --webhook-host)"
    )


# -- /_sandbox controls -----------------------------------------------------------------------------------------------


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if body is None:
        return dict(request.form.items())
    if not isinstance(body, dict):
        abort_with(json_response({"error": "the body must be a JSON object"}, 400))
    return body


def _control(func: Any) -> Any:
    """Run a control, mapping sandbox errors to JSON 400/404."""
    try:
        return func()
    except NotFoundError as exc:
        return json_response({"error": str(exc)}, 404)
    except (SandboxError, TypeError, ValueError) as exc:
        return json_response({"error": str(exc)}, 400)


def _opt_int(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    return None if value is None or value == "" else int(value)


@blueprint.route("/", methods=["GET"])
@blueprint.route("/_sandbox/state", methods=["GET"])
def state() -> Response:
    """Everything at a glance (no secrets)."""
    return json_response(get_sandbox().summary())


@blueprint.route("/_sandbox/users", methods=["POST"])
def control_add_user() -> Response:
    """``{email?, full_name?, email_verified?}`` -> the user."""
    sandbox, body = get_sandbox(), _body()
    return _control(
        lambda: json_response(
            sandbox.add_user(
                body.get("email"),
                full_name=body.get("full_name") or body.get("name"),
                email_verified=as_bool(body.get("email_verified", True)),
            ).to_dict(),
            201,
        )
    )


def _member_json(sandbox: Sandbox, member: Any, status: int = 200) -> Response:
    with sandbox.lock:
        return json_response(dict(member.to_dict(), user=sandbox.user(member.user_id).to_dict()), status)


def _create_member(
    create: Callable[[Sandbox], Callable[..., Any]], options: Callable[[dict[str, Any]], dict[str, Any]]
) -> Response:
    """Run the sandbox method ``create`` on a control body (its ``email``, ``user``, ``full_name`` and ``options``)
    -> the member, 201."""
    sandbox, body = get_sandbox(), _body()

    def run() -> Response:
        member = create(sandbox)(
            body.get("email"),
            user=body.get("user") or body.get("user_id"),
            full_name=body.get("full_name") or body.get("name"),
            **options(body),
        )
        return _member_json(sandbox, member, 201)

    return _control(run)


@blueprint.route("/_sandbox/patrons", methods=["POST"])
def control_add_patron() -> Response:
    """``{email?, tier? (title or id), amount_cents?, full_name?, email_verified?, cadence?, user?, charge?,
    fail_charges?, address?, note?}`` -> the member."""
    return _create_member(
        lambda sandbox: sandbox.add_patron,
        lambda body: {
            "tier": body.get("tier"),
            "amount_cents": _opt_int(body, "amount_cents"),
            "email_verified": as_bool(body.get("email_verified", True)),
            "cadence": int(body.get("cadence", 1)),
            "charge": as_bool(body.get("charge", True)),
            "fail_charges": as_bool(body.get("fail_charges", False)),
            "address": body.get("address"),
            "note": body.get("note", ""),
        },
    )


@blueprint.route("/_sandbox/free_trials", methods=["POST"])
def control_free_trial() -> Response:
    """``{email? | user?, tier, days?}`` -> the member."""
    return _create_member(
        lambda sandbox: sandbox.start_free_trial, lambda body: {"tier": body["tier"], "days": int(body.get("days", 7))}
    )


@blueprint.route("/_sandbox/gifts", methods=["POST"])
def control_gift() -> Response:
    """``{email? | user?, tier, months?}`` -> the member."""
    return _create_member(
        lambda sandbox: sandbox.gift_membership,
        lambda body: {"tier": body["tier"], "months": int(body.get("months", 1))},
    )


@blueprint.route("/_sandbox/members/<ref>", methods=["GET"])
def control_member(ref: str) -> Response:
    """A member by member id, user id or email (plain JSON, not JSON:API)."""
    sandbox = get_sandbox()
    return _control(lambda: _member_json(sandbox, sandbox.member(ref)))


@blueprint.route("/_sandbox/members/<ref>/<action>", methods=["POST"])
def control_member_action(ref: str, action: str) -> Response:
    """``tier`` ``{tier?, amount_cents?}``, ``cancel``, ``decline``, ``recover``, ``fail_charges`` ``{fail?}``,
    ``delete``."""
    sandbox, body = get_sandbox(), _body()
    actions = {
        "tier": lambda: sandbox.change_tier(ref, body.get("tier"), amount_cents=_opt_int(body, "amount_cents")),
        "cancel": lambda: sandbox.cancel(ref),
        "decline": lambda: sandbox.decline(ref),
        "recover": lambda: sandbox.recover(ref),
        "fail_charges": lambda: sandbox.set_fail_charges(ref, as_bool(body.get("fail", True))),
        "delete": lambda: sandbox.delete_member(ref),
    }
    if action not in actions:
        return json_response({"error": f"unknown action {action!r}; one of {', '.join(actions)}"}, 404)
    return _control(lambda: _member_json(sandbox, actions[action]()))


@blueprint.route("/_sandbox/scenarios", methods=["GET"])
def control_scenarios() -> Response:
    """The named scenarios: ``[{name, summary, description, params}]``."""
    return json_response(describe_scenarios())


@blueprint.route("/_sandbox/scenarios/<name>", methods=["POST"])
def control_scenario(name: str) -> Response:
    """Play scenario ``name``; the JSON body holds its params -> ``{scenario, now, members: [member]}``."""
    sandbox, body = get_sandbox(), _body()
    if name not in SCENARIOS:
        return json_response({"error": f"unknown scenario {name!r}; one of {', '.join(SCENARIOS)}"}, 404)

    def run() -> Response:
        with sandbox.lock:
            played = sandbox.scenario(name, **body)
            return json_response(
                {
                    "scenario": name,
                    "now": sandbox.now.isoformat(),
                    "members": [member.to_dict() for member in played],
                }
            )

    return _control(run)


@blueprint.route("/_sandbox/generate", methods=["POST"])
def control_generate() -> Response:
    """``{count, seed?}`` -> ``{created, members}``."""
    sandbox, body = get_sandbox(), _body()

    def run() -> Response:
        created = sandbox.generate_members(int(body.get("count", 0)), seed=_opt_int(body, "seed"))
        return json_response({"created": len(created), "members": len(sandbox)}, 201)

    return _control(run)


@blueprint.route("/_sandbox/clock", methods=["GET", "POST"])
def control_clock() -> Response:
    """GET: ``{now}``. POST ``{days?, hours?, minutes?, seconds?, months?}`` or ``{to: iso datetime}`` ->
    ``{now, changed: [member ids]}``."""
    sandbox = get_sandbox()
    if request.method == "GET":
        return json_response({"now": sandbox.now.isoformat()})
    body = _body()

    def run() -> Response:
        if body.get("to"):
            changed = sandbox.travel_to(datetime.fromisoformat(str(body["to"]).replace("Z", "+00:00")))
        else:
            changed = sandbox.advance_months(int(body.get("months", 0))) if body.get("months") else []
            changed += sandbox.advance(
                days=float(body.get("days", 0)),
                hours=float(body.get("hours", 0)),
                minutes=float(body.get("minutes", 0)),
                seconds=float(body.get("seconds", 0)),
            )
        ids = list(dict.fromkeys(m.id for m in changed))
        return json_response({"now": sandbox.now.isoformat(), "changed": ids})

    return _control(run)


@blueprint.route("/_sandbox/tokens", methods=["POST"])
def control_token() -> Response:
    """``{user (id or email), scopes? (list or space-separated), expires_in?}`` -> a token response + user_id."""
    sandbox, body = get_sandbox(), _body()

    def run() -> Response:
        scopes = body.get("scopes", body.get("scope"))
        if isinstance(scopes, str):
            scopes = sorted(sandbox.parse_scopes(scopes))
        issued = sandbox.issue_token(
            body.get("user") or body.get("user_id") or body.get("email") or "",
            scopes=scopes,
            expires_in=_opt_int(body, "expires_in"),
        )
        return json_response(dict(issued.response(), user_id=issued.user_id), 201)

    return _control(run)


@blueprint.route("/_sandbox/faults", methods=["GET", "POST", "DELETE"])
def control_faults() -> Response:
    """GET: the faults. POST ``{kind, page?, times? (null: persistent), status?, retry_after?, seconds?, count?,
    field?, value?, remove?, status_of?}``.
    DELETE: clear every fault (and ``api_down``)."""
    sandbox = get_sandbox()
    if request.method == "GET":
        with sandbox.lock:
            return json_response({"faults": [f.to_dict() for f in sandbox.faults], "api_down": sandbox.api_down})
    if request.method == "DELETE":
        sandbox.clear_faults()
        return json_response({"faults": [], "api_down": False})
    body = _body()
    return _control(
        lambda: json_response(
            sandbox.add_fault(
                str(body.get("kind")),
                page=_opt_int(body, "page"),
                times=_opt_int(body, "times") if "times" in body else 1,
                status=int(body.get("status", 500)),
                retry_after=int(body.get("retry_after", body.get("retry_after_seconds", 30))),
                seconds=float(body.get("seconds", 1.0)),
                count=int(body.get("count", 1)),
                field=body.get("field"),
                value=body.get("value"),
                remove=bool(body.get("remove", False)),
                status_of=body.get("status_of"),
            ).to_dict(),
            201,
        )
    )


@blueprint.route("/_sandbox/faults/<fault_id>", methods=["DELETE"])
def control_fault(fault_id: str) -> Response:
    """Remove one fault."""
    sandbox = get_sandbox()

    def run() -> Response:
        sandbox.remove_fault(fault_id)
        return json_response({"removed": fault_id})

    return _control(run)


@blueprint.route("/_sandbox/api_down", methods=["POST"])
def control_api_down() -> Response:
    """``{down: bool}``: every ``/api/...`` call answers 503 while down."""
    sandbox, body = get_sandbox(), _body()
    sandbox.api_down = as_bool(body.get("down", True))
    return json_response({"api_down": sandbox.api_down})


@blueprint.route("/_sandbox/webhooks", methods=["GET", "POST"])
def control_webhooks() -> Response:
    """GET: the webhooks (with queue sizes). POST ``{uri, triggers?, secret?}``: register one without the API, on
    the sandbox's own origin or an allowed host only (400 otherwise: see :func:`create_sandbox_app`)."""
    sandbox = get_sandbox()
    if request.method == "GET":
        return json_response({"webhooks": [w.to_dict() for w in sandbox.webhooks]})
    body = _body()
    uri = str(body.get("uri", ""))
    refusal = _webhook_target_refusal(uri)
    if refusal is not None:
        return json_response({"error": refusal}, 400)
    return _control(
        lambda: json_response(
            sandbox.add_webhook(
                uri,
                body.get("triggers") or ALL_MEMBER_TRIGGERS,
                secret=body.get("secret"),
            ).to_dict(),
            201,
        )
    )


@blueprint.route("/_sandbox/webhooks/flush", methods=["POST"])
def control_flush() -> Response:
    """Deliver queued webhook events now -> ``{deliveries: [...]}``."""
    return json_response({"deliveries": [d.to_dict() for d in get_sandbox().flush_webhooks()]})


@blueprint.route("/_sandbox/deliveries", methods=["GET"])
def control_deliveries() -> Response:
    """Every delivery attempt so far."""
    sandbox = get_sandbox()
    with sandbox.lock:
        return json_response({"deliveries": [d.to_dict() for d in sandbox.deliveries]})


@blueprint.route("/_sandbox/events", methods=["GET"])
def control_events() -> Response:
    """Every ``members:*`` event fired so far."""
    sandbox = get_sandbox()
    with sandbox.lock:
        events = [
            {"event": e.event, "member_id": e.member_id, "at": e.at.isoformat(), "version": e.version}
            for e in sandbox.events
        ]
    return json_response({"events": events})
