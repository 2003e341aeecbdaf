"""Saving a sandbox and loading it back, so an offline Patreon survives a restart of the process that holds it.

:meth:`Sandbox.dump_state <.state.Sandbox.dump_state>` gives a JSON-ready dict of everything Patreon would remember:
the campaign, tiers, users, members with their billing, the OAuth client, tokens and codes, webhooks with their queued
events, the events and deliveries logged, faults, what scenarios scheduled for later, the clock, and where the id
counters and the random generator stand (so a loaded sandbox never hands out an id it gave before).
:meth:`Sandbox.load_state <.state.Sandbox.load_state>` builds a sandbox from it.

Not kept: what belongs to the running process rather than to Patreon -- the URL it is served at, the webhook
transport and worker, the API request log and the rate limiter's window (real time). A scheduled action that is not a
scenario's (:class:`.scenarios.Timer`) cannot be saved: :func:`dump_state` refuses rather than drop it.

Records are written field by field with a type tag where JSON has no type of its own (a datetime, bytes, a tuple, a
set, a queue, a nested record), so the format follows the records in :mod:`.entities` without a second list of their
fields.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
from collections import deque
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .entities import (
    Address,
    AuthCode,
    Campaign,
    Delivery,
    Fault,
    Member,
    MemberEvent,
    QueuedEvent,
    SandboxError,
    Tier,
    Token,
    User,
    Webhook,
)
from .scenarios import Timer, timer

if TYPE_CHECKING:
    from .state import Sandbox

__all__ = ["FORMAT", "dump_state", "load_state"]

#: the version of the saved format; :func:`load_state` refuses another.
FORMAT = 1

#: the records that may appear in a saved state, by name.
_RECORDS: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        Tier, User, Address, Member, Campaign, Token, AuthCode, Webhook, QueuedEvent, MemberEvent, Fault, Delivery
    )
}
#: fields that are caches or belong to the running process: rebuilt, never saved.
_NOT_SAVED = frozenset({"cache", "fragment", "counted_tiers", "retry_not_before"})
#: the id counters, saved as the next value each would give.
_COUNTERS = ("_user_ids", "_tier_ids", "_webhook_ids", "_address_ids", "_member_seq", "_fault_ids", "_email_counter",
             "_timer_order")  # fmt: skip
#: plain settings of the sandbox, saved as they are.
_SETTINGS = ("seed", "access_token_ttl", "code_ttl", "max_webhook_failures", "webhook_retry_delay", "log_limit",
             "revision", "client_id", "client_secret", "webhook_secret", "creator_access_token",
             "creator_refresh_token")  # fmt: skip
_TAG = "__type__"


def _encode(value: Any) -> Any:
    """``value`` as JSON: plain values as they are, the rest tagged with their type."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return {_TAG: "datetime", "value": value.isoformat()}
    if isinstance(value, bytes):
        return {_TAG: "bytes", "value": base64.b64encode(value).decode("ascii")}
    if isinstance(value, tuple):
        return {_TAG: "tuple", "items": [_encode(v) for v in value]}
    if isinstance(value, frozenset | set):
        return {_TAG: "frozenset", "items": sorted((_encode(v) for v in value), key=repr)}
    if isinstance(value, deque):
        return {_TAG: "deque", "items": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and _TAG not in value:
            return {k: _encode(v) for k, v in value.items()}
        return {_TAG: "dict", "items": [[_encode(k), _encode(v)] for k, v in value.items()]}
    name = type(value).__name__
    if dataclasses.is_dataclass(value) and _RECORDS.get(name) is type(value):
        saved = [f.name for f in dataclasses.fields(value) if f.name not in _NOT_SAVED]
        return {_TAG: name, "fields": {field: _encode(getattr(value, field)) for field in saved}}
    raise SandboxError(f"the sandbox cannot save a {name}")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    kind = value.get(_TAG)
    if kind is None:
        return {k: _decode(v) for k, v in value.items()}
    if kind == "datetime":
        return datetime.fromisoformat(value["value"])
    if kind == "bytes":
        return base64.b64decode(value["value"])
    if kind == "tuple":
        return tuple(_decode(v) for v in value["items"])
    if kind == "frozenset":
        return frozenset(_decode(v) for v in value["items"])
    if kind == "deque":
        return deque(_decode(v) for v in value["items"])
    if kind == "dict":
        return {_decode(k): _decode(v) for k, v in value["items"]}
    record = _RECORDS.get(kind)
    if record is None:
        raise SandboxError(f"a saved sandbox holds an unknown kind of record, {kind!r}")
    return record(**{k: _decode(v) for k, v in value["fields"].items()})


def _next_value(sandbox: Sandbox, name: str) -> int:
    """The value counter ``name`` would give next (the counter is put back as it was)."""
    value = next(getattr(sandbox, name))
    setattr(sandbox, name, itertools.count(value))
    return int(value)


def dump_state(sandbox: Sandbox) -> dict[str, Any]:
    """Everything ``sandbox`` remembers, as a JSON-ready dict (see the module docstring for what is left out).

    :raises SandboxError: a scheduled action is not one of the scenarios' (:data:`.scenarios.TIMERS`).
    """
    with sandbox.lock:
        timers = []
        for at, _, action in sorted(sandbox._timers, key=lambda t: (t[0], t[1])):
            if not isinstance(action, Timer):
                raise SandboxError(
                    f"the sandbox cannot save the action scheduled at {at.isoformat()} ({action!r}): only the "
                    "scenarios' scheduled actions can be saved"
                )
            timers.append({"at": _encode(at), "kind": action.kind, "params": _encode(action.params)})
        tokens = {id(t): t for t in (*sandbox._tokens.values(), *sandbox._refresh_tokens.values())}
        return {
            "format": FORMAT,
            "now": _encode(sandbox.now),
            "settings": {name: getattr(sandbox, name) for name in _SETTINGS},
            "redirect_uris": sorted(sandbox.redirect_uris) if sandbox.redirect_uris is not None else None,
            "token_rate_limit": list(sandbox.token_rate_limit) if sandbox.token_rate_limit else None,
            "rng": _encode(sandbox._rng.getstate()),
            "counters": {name: _next_value(sandbox, name) for name in _COUNTERS},
            "campaign": _encode(sandbox.campaign),
            "tiers": [_encode(t) for t in sandbox._tiers.values()],
            "users": [_encode(u) for u in sandbox._users.values()],
            "members": [_encode(m) for m in sandbox._order],
            "tokens": [
                {
                    "token": _encode(t),
                    "access": sandbox._tokens.get(t.access_token) is t,
                    "refresh": sandbox._refresh_tokens.get(t.refresh_token) is t,
                }
                for t in tokens.values()
            ],
            "codes": [_encode(c) for c in sandbox._codes.values()],
            "webhooks": [_encode(w) for w in sandbox._webhooks.values()],
            "faults": [_encode(f) for f in sandbox.faults],
            "api_down": sandbox._api_down,
            "blanked_attributes": sorted(sandbox.blanked_attributes),
            "timers": timers,
            "events": [_encode(e) for e in sandbox.events],
            "deliveries": [_encode(d) for d in sandbox.deliveries],
        }


def load_state(data: dict[str, Any], *, sandbox_class: type[Sandbox] | None = None) -> Sandbox:
    """A sandbox in the state :func:`dump_state` saved: the same campaign, people, pledges, tokens, webhooks and
    clock; its id counters go on from where they stood. Serve it (or set ``url``) as any new sandbox.

    :param sandbox_class: the class to build (a subclass of :class:`~.state.Sandbox`); default that class.
    :raises SandboxError: ``data`` is not a saved sandbox of this format.
    """
    from .state import Sandbox  # lazily: the Sandbox's own dump_state and load_state import this module

    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise SandboxError(f"not a saved sandbox of format {FORMAT} (found {found!r})")
    try:
        return _load(sandbox_class or Sandbox, data)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, SandboxError):
            raise
        raise SandboxError(f"a saved sandbox that cannot be read: {type(exc).__name__}: {exc}") from exc


def _load(sandbox_class: type[Sandbox], data: dict[str, Any]) -> Sandbox:
    settings = data["settings"]
    campaign: Campaign = _decode(data["campaign"])
    sandbox = sandbox_class(
        campaign_id=campaign.id,
        client_id=settings["client_id"],
        client_secret=settings["client_secret"],
        webhook_secret=settings["webhook_secret"],
        creator_access_token=settings["creator_access_token"],
        creator_refresh_token=settings["creator_refresh_token"],
        now=_decode(data["now"]),
        seed=settings["seed"],
        access_token_ttl=settings["access_token_ttl"],
        code_ttl=settings["code_ttl"],
        max_webhook_failures=settings["max_webhook_failures"],
        webhook_retry_delay=settings["webhook_retry_delay"],
        redirect_uris=data["redirect_uris"],
        default_tiers=False,
        billing=campaign.billing,
    )
    with sandbox.lock:
        sandbox.log_limit = settings["log_limit"]
        sandbox.revision = settings["revision"]
        limit = data["token_rate_limit"]
        sandbox.token_rate_limit = (int(limit[0]), float(limit[1])) if limit else None
        version, internal, gauss = _decode(data["rng"])
        sandbox._rng.setstate((version, tuple(internal), gauss))
        sandbox.campaign = campaign
        sandbox._tiers = {t.id: t for t in map(_decode, data["tiers"])}
        users: list[User] = [_decode(u) for u in data["users"]]
        sandbox._users = {u.id: u for u in users}
        sandbox._users_by_email = {u.email.lower(): u for u in users if u.email is not None}
        sandbox.creator = sandbox._users[campaign.creator_id]
        members: list[Member] = sorted((_decode(m) for m in data["members"]), key=lambda m: m.seq)
        sandbox._members = {m.id: m for m in members}
        sandbox._members_by_user = {m.user_id: m for m in members}
        sandbox._order = members
        sandbox._order_seqs = [m.seq for m in members]
        sandbox._tier_counts = {tier_id: 0 for tier_id in sandbox._tiers}
        sandbox._patron_count = 0
        for member in members:
            sandbox._count(member)

        sandbox._tokens, sandbox._refresh_tokens = {}, {}
        for saved in data["tokens"]:
            token: Token = _decode(saved["token"])
            if saved["access"]:
                sandbox._tokens[token.access_token] = token
            if saved["refresh"]:
                sandbox._refresh_tokens[token.refresh_token] = token
        sandbox._codes = {c.code: c for c in map(_decode, data["codes"])}
        sandbox._webhooks = {w.id: w for w in map(_decode, data["webhooks"])}
        sandbox.faults = [_decode(f) for f in data["faults"]]
        sandbox._api_down = bool(data["api_down"])
        sandbox.blanked_attributes = frozenset(data["blanked_attributes"])
        sandbox._timers = []
        for saved in data["timers"]:  # in their saved order, before the counters (scheduling takes one each)
            sandbox.schedule(_decode(saved["at"]), timer(sandbox, saved["kind"], **_decode(saved["params"])))
        for name, value in data["counters"].items():
            if name not in _COUNTERS:
                raise SandboxError(f"a saved sandbox names an unknown counter {name!r}")
            setattr(sandbox, name, itertools.count(int(value)))
        sandbox.events = [_decode(e) for e in data["events"]]
        sandbox.deliveries = [_decode(d) for d in data["deliveries"]]
    return sandbox
