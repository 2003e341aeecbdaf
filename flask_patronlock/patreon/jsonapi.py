"""Patreon API v2 JSON:API documents -> the typed snapshots of :mod:`flask_patronlock.patreon.types`.

Every ``parse_*`` function takes a decoded JSON document (a ``dict``; use :func:`load_json` for raw bytes) and either
returns snapshots or raises :class:`~flask_patronlock.patreon.errors.MalformedDocument` naming what was wrong. Nothing
else escapes: no ``KeyError``, ``TypeError`` or ``ValueError`` from a hostile or truncated document.

Attributes that are absent (Patreon's sparse fieldsets) or ``null`` take the dataclass defaults. Attributes that are
present with the wrong JSON type are errors, because a silently defaulted amount or status could grant or revoke
access. So are values no column or date can hold, checked here rather than left to fail in the database: an integer
outside its column's range (:data:`INT32` for amounts and counts, :data:`INT64` for lifetime support), a cadence
outside 0-120 months, a timestamp outside the years 1900-2999 (date arithmetic on 9999-12-31 overflows), an id that
is not 1-64 characters without control characters or commas, and a string with a NUL character (PostgreSQL text
cannot hold one) or longer than its column.

The ``included`` array is indexed once per document and each included user and tier is parsed once, so a page of a
thousand members costs one pass over ``data`` and one over ``included``.

Over 600 lines: every document kind Patreon sends is parsed here against the same hostile-input rules (ranges,
types, the located error); one parser per kind in its own module would repeat them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard, TypeVar
from urllib.parse import parse_qs, urlsplit

from .errors import MalformedDocument, SchemaDrift
from .types import (
    CHARGE_STATUSES,
    PATRON_STATUSES,
    CampaignSnapshot,
    Identity,
    MemberPage,
    MemberSnapshot,
    TierSnapshot,
    TokenSet,
    UserSnapshot,
    WebhookSnapshot,
)

_T = TypeVar("_T")

__all__ = [
    "INT32",
    "INT64",
    "MAX_ID_LENGTH",
    "is_patreon_id",
    "load_json",
    "member_drift",
    "parse_campaign",
    "parse_campaigns",
    "parse_datetime",
    "parse_identity",
    "parse_member_document",
    "parse_members_page",
    "parse_token_response",
    "parse_webhook",
    "parse_webhooks",
    "schema_drift",
]

logger = logging.getLogger("flask_patronlock.patreon")

_EMPTY: dict[str, Any] = {}


# --------------------------------------------------------------------------------------------------------------------
# scalars
# --------------------------------------------------------------------------------------------------------------------


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def _bad(key: str, expected: str, value: object) -> MalformedDocument:
    return MalformedDocument(f"{key}: expected {expected}, got {_type_name(value)}")


#: the range of an ``INTEGER`` column (amounts in cents, counts): wider values are malformed, not an overflow later.
INT32 = (-(2**31), 2**31 - 1)
#: the range of a ``BIGINT`` column (lifetime support in cents).
INT64 = (-(2**63), 2**63 - 1)
#: months between charges: 1 (monthly) or 12 (annual) in practice; anything beyond ten years is nonsense.
_CADENCE = (0, 120)
#: the longest id any ``patronlock_*`` column holds (``VARCHAR(64)``).
MAX_ID_LENGTH = 64
#: string attributes stored in a column of this many characters (the others are stored as text or not at all).
_MAX_LENGTH = {"email": 320, "full_name": 255, "patron_status": 32, "last_charge_status": 32, "title": 255,
               "url": 512}
#: the years a timestamp may fall in: wide enough for any real date, far enough from 9999 for date arithmetic.
_YEARS = (1900, 2999)
_FORBIDDEN_IN_IDS = frozenset(",\x7f") | {chr(c) for c in range(32)}
_ID_PROBLEM = f"'id' missing or not a non-empty string (an id: 1-{MAX_ID_LENGTH} characters, no commas)"


def is_patreon_id(value: object) -> TypeGuard[str]:
    """Whether ``value`` can be a Patreon id here: a string of 1 to :data:`MAX_ID_LENGTH` characters, without
    control characters or commas (ids are stored comma-separated in one column)."""
    return (
        type(value) is str
        and 0 < len(value) <= MAX_ID_LENGTH
        and not any(ch in _FORBIDDEN_IN_IDS for ch in value)
    )


#: strings shown to people and decided on by nothing: a patron's own over-long or odd name (or a creator's tier
#: title) is cleaned and cut to its column, never a malformed page -- one patron's name must not leave every sync
#: run incomplete, and so nobody revocable.
_DISPLAY = frozenset({"full_name", "title", "description", "creation_name", "vanity", "image_url", "url",
                      "pledge_url"})


def _checked_str(key: str, value: str) -> str:
    limit = _MAX_LENGTH.get(key)
    if key in _DISPLAY:
        value = value.replace("\x00", "")
        return value[:limit] if limit is not None else value
    if "\x00" in value:
        raise MalformedDocument(f"{key}: contains a NUL character")
    if limit is not None and len(value) > limit:
        raise MalformedDocument(f"{key}: longer than {limit} characters")
    return value


def _str(attrs: dict[str, Any], key: str, default: str = "") -> str:
    value = attrs.get(key)
    if value is None:
        return default
    if type(value) is str:
        return _checked_str(key, value)
    raise _bad(key, "a string", value)


def _opt_str(attrs: dict[str, Any], key: str) -> str | None:
    value = attrs.get(key)
    if value is None:
        return None
    if type(value) is str:
        return _checked_str(key, value)
    raise _bad(key, "a string or null", value)


def _in_range(key: str, value: int, bounds: tuple[int, int]) -> int:
    if bounds[0] <= value <= bounds[1]:
        return value
    raise MalformedDocument(f"{key}: integer out of range ({bounds[0]} to {bounds[1]})")


def _int(attrs: dict[str, Any], key: str, default: int = 0, bounds: tuple[int, int] = INT32) -> int:
    value = attrs.get(key)
    if value is None:
        return default
    if type(value) is int:  # not bool, not float
        return _in_range(key, value, bounds)
    raise _bad(key, "an integer", value)


def _opt_int(attrs: dict[str, Any], key: str, bounds: tuple[int, int] = INT32) -> int | None:
    value = attrs.get(key)
    if value is None:
        return None
    if type(value) is int:
        return _in_range(key, value, bounds)
    raise _bad(key, "an integer or null", value)


def _bool(attrs: dict[str, Any], key: str, default: bool = False) -> bool:
    value = attrs.get(key)
    if value is None:
        return default
    if value is True or value is False:
        return value
    raise _bad(key, "a boolean", value)


def _opt_bool(attrs: dict[str, Any], key: str) -> bool | None:
    value = attrs.get(key)
    if value is None or value is True or value is False:
        return value
    raise _bad(key, "a boolean or null", value)


def _str_tuple(attrs: dict[str, Any], key: str) -> tuple[str, ...]:
    value = attrs.get(key)
    if value is None:
        return ()
    if type(value) is list:
        for item in value:
            if type(item) is not str:
                raise _bad(f"{key}[]", "a string", item)
        return tuple(value)
    raise _bad(key, "an array of strings", value)


def parse_datetime(value: object, what: str = "datetime") -> datetime | None:
    """Parse one of Patreon's timestamps (``"2023-12-29T05:26:19.000+00:00"``) to an aware UTC datetime.

    ``None`` stays ``None``; a timestamp without an offset is taken as UTC.

    :raises MalformedDocument: ``value`` is not a string, not an ISO 8601 timestamp, or outside the years 1900-2999.
    """
    if value is None:
        return None
    if type(value) is not str:
        raise _bad(what, "an ISO 8601 timestamp string", value)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise MalformedDocument(f"{what}: not an ISO 8601 timestamp") from None
    tz = parsed.tzinfo
    if tz is None:
        parsed = parsed.replace(tzinfo=UTC)
    elif tz is not UTC:
        try:
            parsed = parsed.astimezone(UTC)
        except (OverflowError, ValueError):  # e.g. 0001-01-01T00:00:00+01:00
            raise MalformedDocument(f"{what}: timestamp out of range") from None
    if not _YEARS[0] <= parsed.year <= _YEARS[1]:
        raise MalformedDocument(f"{what}: timestamp out of range (years {_YEARS[0]} to {_YEARS[1]})")
    return parsed


def _dt(attrs: dict[str, Any], key: str) -> datetime | None:
    value = attrs.get(key)
    if value is None:
        return None
    return parse_datetime(value, key)


# --------------------------------------------------------------------------------------------------------------------
# documents, resources, relationships
# --------------------------------------------------------------------------------------------------------------------


def load_json(raw: bytes | bytearray | str) -> Any:
    """Decode a JSON body (a webhook's raw bytes, a response's content).

    :raises MalformedDocument: not valid JSON (or not UTF-8, or nested absurdly deep).
    """
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise MalformedDocument(f"not valid JSON: {type(exc).__name__}") from None


def _document(doc: object) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise MalformedDocument(f"document: expected a JSON object, got {_type_name(doc)}")
    if "data" not in doc:
        if "errors" in doc:
            raise MalformedDocument("document: has 'errors' instead of 'data'")
        raise MalformedDocument("document: no 'data' member")
    return doc


def _single(doc: object, expected_type: str) -> tuple[dict[str, Any], dict[str, Any]]:
    document = _document(doc)
    data = document["data"]
    if not isinstance(data, dict):
        raise MalformedDocument(f"data: expected a {expected_type!r} resource object, got {_type_name(data)}")
    return document, data


def _many(doc: object, expected_type: str) -> tuple[dict[str, Any], list[Any]]:
    document = _document(doc)
    data = document["data"]
    if not isinstance(data, list):
        raise MalformedDocument(f"data: expected an array of {expected_type!r} resources, got {_type_name(data)}")
    return document, data


def _resource_id(resource: object, expected_type: str, where: str) -> str:
    """Check ``resource`` is a resource object of ``expected_type`` and return its id."""
    if not isinstance(resource, dict):
        raise MalformedDocument(f"{where}: expected a resource object, got {_type_name(resource)}")
    return _typed_id(resource, expected_type, where)


def _typed_id(item: dict[str, Any], expected_type: str, where: str) -> str:
    """The id of a resource object or identifier ``item`` whose ``type`` must be ``expected_type``."""
    rtype = item.get("type")
    if rtype != expected_type:
        if type(rtype) is not str:
            raise MalformedDocument(f"{where}: 'type' missing or not a string")
        raise MalformedDocument(f"{where}: expected type {expected_type!r}, got {rtype!r:.40}")
    rid = item.get("id")
    if not is_patreon_id(rid):
        raise MalformedDocument(f"{where}: {_ID_PROBLEM}")
    return rid


def _object(resource: dict[str, Any], key: str) -> dict[str, Any]:
    """A resource's ``attributes`` or ``relationships`` object (empty when absent)."""
    value = resource.get(key)
    if value is None:
        return _EMPTY
    if type(value) is dict:
        return value
    raise _bad(key, "an object", value)


def _linkage(rels: dict[str, Any], name: str) -> Any:
    rel = rels.get(name)
    if rel is None:
        return None
    if type(rel) is not dict:
        raise _bad(f"relationships.{name}", "a relationship object", rel)
    return rel.get("data")


def _identifier(item: object, expected_type: str, where: str) -> str:
    if type(item) is not dict:
        raise _bad(where, "a resource identifier object", item)
    return _typed_id(item, expected_type, where)


def _to_one(rels: dict[str, Any], name: str, expected_type: str) -> str | None:
    data = _linkage(rels, name)
    if data is None:
        return None
    return _identifier(data, expected_type, f"relationships.{name}.data")


def _to_many(rels: dict[str, Any], name: str, expected_type: str) -> tuple[str, ...] | None:
    """Ids of a to-many relationship; ``None`` when the relationship is absent (not the same as empty)."""
    data = _linkage(rels, name)
    if data is None:
        return None
    if type(data) is not list:
        raise _bad(f"relationships.{name}.data", "an array", data)
    where = f"relationships.{name}.data[]"
    return tuple([_identifier(item, expected_type, where) for item in data])


def _in(where: str, exc: MalformedDocument) -> MalformedDocument:
    return MalformedDocument(f"{where}: {exc}")


@contextmanager
def _located(where: str) -> Iterator[None]:
    """Prefix a :class:`MalformedDocument` raised inside with ``where`` (not used in the per-member hot loop)."""
    try:
        yield
    except MalformedDocument as exc:
        raise _in(where, exc) from None


class _Included:
    """The ``included`` array of one document, indexed by ``(type, id)``, with parsed users and tiers cached."""

    __slots__ = ("_tier_order", "_tiers", "_users", "resources")

    def __init__(self, document: dict[str, Any]) -> None:
        included = document.get("included")
        self.resources: dict[tuple[str, str], dict[str, Any]] = {}
        self._users: dict[str, UserSnapshot | None] = {}
        self._tiers: dict[str, TierSnapshot | None] = {}
        self._tier_order: list[str] = []
        if included is None:
            return
        if type(included) is not list:
            raise _bad("included", "an array", included)
        resources = self.resources
        for position, resource in enumerate(included):
            if type(resource) is not dict:
                raise _bad(f"included[{position}]", "a resource object", resource)
            rtype = resource.get("type")
            rid = resource.get("id")
            if type(rtype) is not str or not is_patreon_id(rid):
                raise MalformedDocument(f"included[{position}]: 'type' or 'id' missing or not an id")
            key = (rtype, rid)
            if key in resources:
                continue  # JSON:API forbids duplicates; keep the first
            resources[key] = resource
            if rtype == "tier":
                self._tier_order.append(rid)

    def user(self, user_id: str | None) -> UserSnapshot | None:
        """The included user ``user_id``, parsed once; ``None`` when not included."""
        if user_id is None:
            return None
        return self._included(self._users, "user", user_id, _user)

    def tier(self, tier_id: str) -> TierSnapshot | None:
        """The included tier ``tier_id``, parsed once; ``None`` when not included."""
        return self._included(self._tiers, "tier", tier_id, _tier)

    def _included(
        self, cache: dict[str, _T | None], kind: str, rid: str, parse: Callable[[dict[str, Any], str], _T]
    ) -> _T | None:
        try:
            return cache[rid]
        except KeyError:
            pass
        resource = self.resources.get((kind, rid))
        snapshot = None
        if resource is not None:
            try:
                snapshot = parse(resource, rid)
            except MalformedDocument as exc:
                raise _in(f"included {kind} {rid!r}", exc) from None
        cache[rid] = snapshot
        return snapshot

    def tiers(self, tier_ids: Iterable[str]) -> tuple[TierSnapshot, ...]:
        """The included tiers among ``tier_ids``, in that order (ids that were not included are left out)."""
        found = []
        for tier_id in tier_ids:
            tier = self.tier(tier_id)
            if tier is not None:
                found.append(tier)
        return tuple(found)

    def all_tiers(self) -> tuple[TierSnapshot, ...]:
        """Every included tier, in document order."""
        return self.tiers(self._tier_order)


# --------------------------------------------------------------------------------------------------------------------
# resources -> snapshots
# --------------------------------------------------------------------------------------------------------------------


def _user(resource: dict[str, Any], user_id: str) -> UserSnapshot:
    attrs = _object(resource, "attributes")
    if not attrs:
        return UserSnapshot(id=user_id)
    return UserSnapshot(
        id=user_id,
        full_name=_str(attrs, "full_name"),
        email=_opt_str(attrs, "email"),
        email_verified=_opt_bool(attrs, "is_email_verified"),
        image_url=_opt_str(attrs, "image_url"),
        url=_opt_str(attrs, "url"),
        vanity=_opt_str(attrs, "vanity"),
    )


def _tier(resource: dict[str, Any], tier_id: str) -> TierSnapshot:
    attrs = _object(resource, "attributes")
    return TierSnapshot(
        id=tier_id,
        title=_str(attrs, "title"),
        amount_cents=_int(attrs, "amount_cents"),
        published=_bool(attrs, "published", True),
        description=_str(attrs, "description"),
        url=_opt_str(attrs, "url"),
        patron_count=_opt_int(attrs, "patron_count"),
        discord_role_ids=_str_tuple(attrs, "discord_role_ids"),
    )


def _member(
    resource: dict[str, Any],
    member_id: str,
    included: _Included,
    tiers: tuple[TierSnapshot, ...] | None,
    default_user: UserSnapshot | None = None,
) -> MemberSnapshot:
    """One ``member`` resource. ``tiers=None`` means "the member's own entitled tiers, as included"."""
    attrs = _object(resource, "attributes")
    rels = _object(resource, "relationships")
    entitled = _to_many(rels, "currently_entitled_tiers", "tier") or ()
    user_id = _to_one(rels, "user", "user")
    if user_id is None and default_user is not None:
        user_id = default_user.id
        user: UserSnapshot | None = default_user
    else:
        user = included.user(user_id)

    email = _opt_str(attrs, "email")
    email_verified = None
    full_name = _str(attrs, "full_name")
    if user is not None:
        # is_email_verified belongs to the user's address: only vouch for the member's if it is the same one.
        if email is None:
            email = user.email
            email_verified = user.email_verified
        elif user.email is None or user.email.casefold() == email.casefold():
            email_verified = user.email_verified
        if not full_name:
            full_name = user.full_name

    lifetime = attrs.get("campaign_lifetime_support_cents")
    lifetime_key = "campaign_lifetime_support_cents" if lifetime is not None else "lifetime_support_cents"

    return MemberSnapshot(
        member_id=member_id,
        campaign_id=_to_one(rels, "campaign", "campaign"),
        user_id=user_id,
        email=email,
        email_verified=email_verified,
        full_name=full_name,
        patron_status=_opt_str(attrs, "patron_status"),
        last_charge_status=_opt_str(attrs, "last_charge_status"),
        last_charge_date=_dt(attrs, "last_charge_date"),
        next_charge_date=_dt(attrs, "next_charge_date"),
        entitled_cents=_int(attrs, "currently_entitled_amount_cents"),
        entitled_tier_ids=entitled,
        will_pay_cents=_int(attrs, "will_pay_amount_cents"),
        lifetime_cents=_int(attrs, lifetime_key, bounds=INT64),
        pledge_start=_dt(attrs, "pledge_relationship_start"),
        pledge_cadence=_opt_int(attrs, "pledge_cadence", bounds=_CADENCE),
        is_free_trial=_bool(attrs, "is_free_trial"),
        is_gifted=_bool(attrs, "is_gifted"),
        is_follower=_bool(attrs, "is_follower"),
        tiers=included.tiers(entitled) if tiers is None else tiers,
        user=user,
    )


def _campaign(
    resource: dict[str, Any], campaign_id: str, included: _Included, *, all_tiers_fallback: bool
) -> CampaignSnapshot:
    attrs = _object(resource, "attributes")
    rels = _object(resource, "relationships")
    tier_ids = _to_many(rels, "tiers", "tier")
    tiers = included.all_tiers() if tier_ids is None and all_tiers_fallback else included.tiers(tier_ids or ())
    return CampaignSnapshot(
        id=campaign_id,
        creation_name=_str(attrs, "creation_name"),
        vanity=_opt_str(attrs, "vanity"),
        url=_opt_str(attrs, "url"),
        pledge_url=_opt_str(attrs, "pledge_url"),
        patron_count=_opt_int(attrs, "patron_count"),
        is_monthly=_bool(attrs, "is_monthly", True),
        creator_user_id=_to_one(rels, "creator", "user"),
        tiers=tiers,
    )


def _webhook(resource: dict[str, Any], webhook_id: str) -> WebhookSnapshot:
    attrs = _object(resource, "attributes")
    rels = _object(resource, "relationships")
    return WebhookSnapshot(
        id=webhook_id,
        uri=_str(attrs, "uri"),
        triggers=_str_tuple(attrs, "triggers"),
        paused=_bool(attrs, "paused"),
        num_consecutive_times_failed=_int(attrs, "num_consecutive_times_failed"),
        last_attempted_at=_dt(attrs, "last_attempted_at"),
        secret=_opt_str(attrs, "secret"),
        campaign_id=_to_one(rels, "campaign", "campaign"),
    )


# --------------------------------------------------------------------------------------------------------------------
# public parsers
# --------------------------------------------------------------------------------------------------------------------


def parse_member_document(doc: object) -> MemberSnapshot:
    """A single-member document (a ``members:*`` webhook body, or ``GET /members/{id}``).

    ``tiers`` holds every tier in ``included`` (Patreon may include tiers the member is not entitled to, and may
    leave ``currently_entitled_tiers`` empty while ``currently_entitled_amount_cents`` is positive: both are kept as
    Patreon said them). ``user`` is the included user, if any.

    :raises MalformedDocument: the document is not a single ``member`` resource, or an attribute has the wrong type.
    """
    document, data = _single(doc, "member")
    member_id = _resource_id(data, "member", "data")
    included = _Included(document)
    with _located(f"data (member {member_id!r})"):
        return _member(data, member_id, included, included.all_tiers())


def _cursor_from_links(document: dict[str, Any]) -> str | None:
    links = document.get("links")
    if links is None:
        return None
    if type(links) is not dict:
        raise _bad("links", "an object", links)
    next_link = links.get("next")
    if next_link is None:
        return None
    if type(next_link) is dict:  # JSON:API also allows {"href": ...}
        next_link = next_link.get("href")
    if type(next_link) is not str:
        raise _bad("links.next", "a URL string", next_link)
    try:
        query = urlsplit(next_link).query
    except ValueError:
        raise MalformedDocument("links.next: not a URL") from None
    values = parse_qs(query).get("page[cursor]")
    return values[0] if values else None


def _pagination(document: dict[str, Any]) -> tuple[str | None, int | None, bool]:
    """``(next_cursor, total, cursors_present)`` from ``meta.pagination``."""
    meta = document.get("meta")
    if meta is None:
        return None, None, False
    if type(meta) is not dict:
        raise _bad("meta", "an object", meta)
    pagination = meta.get("pagination")
    if pagination is None:
        return None, None, False
    if type(pagination) is not dict:
        raise _bad("meta.pagination", "an object", pagination)
    total = _opt_int(pagination, "total", bounds=(0, INT32[1]))
    cursors = pagination.get("cursors")
    if cursors is None:
        return None, total, False
    if type(cursors) is not dict:
        raise _bad("meta.pagination.cursors", "an object", cursors)
    next_cursor = cursors.get("next")
    if next_cursor is not None and type(next_cursor) is not str:
        raise _bad("meta.pagination.cursors.next", "a string or null", next_cursor)
    return next_cursor or None, total, True


def parse_members_page(doc: object, *, cursor: str | None = None, strict: bool = True) -> MemberPage:
    """One page of ``GET /campaigns/{id}/members``.

    The next cursor comes from ``meta.pagination.cursors.next``; when ``cursors`` is absent, from the ``page[cursor]``
    query parameter of ``links.next``. Each member's ``tiers`` is the tuple of every tier included in the page (one
    shared tuple, not a copy per member).

    :param cursor: the cursor that was sent to get this page, recorded on the result.
    :param strict: when ``True`` (the default) one malformed member fails the whole page; when ``False`` malformed
        members are skipped (logged without personal data) and ``raw_count - len(members)`` says how many.
    :raises MalformedDocument: the document is not an array of ``member`` resources, or (``strict``) a member is bad.
    """
    document, data = _many(doc, "member")
    included = _Included(document)
    next_cursor, total, cursors_present = _pagination(document)
    if not cursors_present:
        next_cursor = _cursor_from_links(document)
    page_tiers = included.all_tiers()
    members: list[MemberSnapshot] = []
    append = members.append
    for position, resource in enumerate(data):
        try:
            member_id = _resource_id(resource, "member", f"data[{position}]")
            try:
                append(_member(resource, member_id, included, page_tiers))
            except MalformedDocument as exc:
                raise _in(f"data[{position}] (member {member_id!r})", exc) from None
        except MalformedDocument as exc:
            if strict:
                raise
            logger.warning("skipping a malformed member in a members page: %s", exc)
    return MemberPage(members=tuple(members), next_cursor=next_cursor, total=total, cursor=cursor, raw_count=len(data))


def parse_identity(doc: object) -> Identity:
    """``GET /identity``: the user, and their memberships resolved from ``included``.

    Each membership's ``tiers`` are its own ``currently_entitled_tiers`` as included (the document may hold tiers of
    several campaigns), and a membership without a ``user`` relationship belongs to the identity's user. Memberships
    listed in ``relationships.memberships`` but not included are left out.

    :raises MalformedDocument: the document is not a single ``user`` resource, or a membership is malformed.
    """
    document, data = _single(doc, "user")
    user_id = _resource_id(data, "user", "data")
    included = _Included(document)
    with _located(f"data (user {user_id!r})"):
        user = _user(data, user_id)
        membership_ids = _to_many(_object(data, "relationships"), "memberships", "member") or ()
    memberships = []
    for member_id in membership_ids:
        resource = included.resources.get(("member", member_id))
        if resource is None:
            continue
        with _located(f"included member {member_id!r}"):
            memberships.append(_member(resource, member_id, included, None, default_user=user))
    return Identity(user=user, memberships=tuple(memberships))


def parse_campaign(doc: object) -> CampaignSnapshot:
    """``GET /campaigns/{id}``: the campaign with its tiers (``relationships.tiers`` resolved from ``included``, or
    every included tier when the relationship is absent) and its creator's user id.

    :raises MalformedDocument: the document is not a single ``campaign`` resource, or an attribute is malformed.
    """
    document, data = _single(doc, "campaign")
    campaign_id = _resource_id(data, "campaign", "data")
    included = _Included(document)
    with _located(f"data (campaign {campaign_id!r})"):
        return _campaign(data, campaign_id, included, all_tiers_fallback=True)


def parse_campaigns(doc: object) -> list[CampaignSnapshot]:
    """``GET /campaigns``: every campaign with its tiers (from ``relationships.tiers``) and creator user id.

    :raises MalformedDocument: the document is not an array of ``campaign`` resources, or one is malformed.
    """
    document, data = _many(doc, "campaign")
    included = _Included(document)
    campaigns = []
    for position, resource in enumerate(data):
        campaign_id = _resource_id(resource, "campaign", f"data[{position}]")
        with _located(f"data[{position}] (campaign {campaign_id!r})"):
            campaigns.append(_campaign(resource, campaign_id, included, all_tiers_fallback=False))
    return campaigns


def parse_webhook(doc: object) -> WebhookSnapshot:
    """A single-webhook document (the answer to creating or updating one).

    :raises MalformedDocument: the document is not a single ``webhook`` resource, or an attribute is malformed.
    """
    _, data = _single(doc, "webhook")
    webhook_id = _resource_id(data, "webhook", "data")
    with _located(f"data (webhook {webhook_id!r})"):
        return _webhook(data, webhook_id)


def parse_webhooks(doc: object) -> list[WebhookSnapshot]:
    """``GET /webhooks``: the webhooks this client registered.

    :raises MalformedDocument: the document is not an array of ``webhook`` resources, or one is malformed.
    """
    _, data = _many(doc, "webhook")
    webhooks = []
    for position, resource in enumerate(data):
        webhook_id = _resource_id(resource, "webhook", f"data[{position}]")
        with _located(f"data[{position}] (webhook {webhook_id!r})"):
            webhooks.append(_webhook(resource, webhook_id))
    return webhooks


# --------------------------------------------------------------------------------------------------------------------
# drift: Patreon's member data changing shape under us
# --------------------------------------------------------------------------------------------------------------------

#: member attributes that access depends on (what the policy reads). On a members page that asked for them in
#: ``fields[member]``, each must be present on every member (``null`` is a value; absent is not) and of its documented
#: type. ``is_gifted`` and the deprecated ``lifetime_support_cents`` are left out: Patreon's own payloads do not
#: always carry them (see :doc:`patreon-behaviour`).
MEMBER_ACCESS_ATTRIBUTES: tuple[str, ...] = (
    "patron_status",
    "last_charge_status",
    "last_charge_date",
    "next_charge_date",
    "currently_entitled_amount_cents",
    "pledge_cadence",
    "pledge_relationship_start",
    "is_free_trial",
    "campaign_lifetime_support_cents",
)
#: member relationships that access depends on: on a page that asked for them in ``include``, each must be present.
MEMBER_ACCESS_RELATIONSHIPS: tuple[str, ...] = ("currently_entitled_tiers",)

_INT = "an integer or null"
_TEXT = "a string or null"
_FLAG = "a boolean or null"
#: the JSON type (or closed set of values) each access attribute may have besides null.
_ACCESS_KINDS: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "patron_status": (_TEXT, PATRON_STATUSES),
    "last_charge_status": (_TEXT, CHARGE_STATUSES),
    "last_charge_date": (_TEXT, None),
    "next_charge_date": (_TEXT, None),
    "currently_entitled_amount_cents": (_INT, None),
    "pledge_cadence": (_INT, None),
    "pledge_relationship_start": (_TEXT, None),
    "is_free_trial": (_FLAG, None),
    "campaign_lifetime_support_cents": (_INT, None),
}
_KIND_TYPES: dict[str, type] = {_INT: int, _TEXT: str, _FLAG: bool}


def _drift_of(value: object, kind: str, allowed: tuple[str, ...] | None) -> str | None:
    """Why ``value`` is not what the attribute documents, or ``None`` when it is."""
    if value is None:
        return None
    if type(value) is not _KIND_TYPES[kind]:
        return f"{_type_name(value)} instead of {kind}"
    if allowed is not None and value not in allowed:
        return "a value Patreon does not document"
    return None


def member_drift(
    doc: object, *, attributes: Iterable[str] = MEMBER_ACCESS_ATTRIBUTES, relationships: Iterable[str] = ()
) -> dict[tuple[str, str, str], list[str]]:
    """What :func:`schema_drift` checks, as data: ``(problem, field, why) -> the members showing it`` (their ids, or
    ``data[i]``), where ``problem`` is ``"absent"``, ``"type"`` (``why`` names the type found) or ``"value"`` (a
    value Patreon does not document). The live check (:mod:`flask_patronlock.livecheck`) reads it; a sync raises.

    :raises MalformedDocument: the document is not an array of resources at all.
    """
    _, data = _many(doc, "member")
    wanted = [(name, *_ACCESS_KINDS[name]) for name in attributes if name in _ACCESS_KINDS]
    rel_names = tuple(name for name in relationships if name in MEMBER_ACCESS_RELATIONSHIPS)
    found: dict[tuple[str, str, str], list[str]] = {}
    for position, resource in enumerate(data):
        if type(resource) is not dict:
            continue  # the parser reports it
        rid = resource.get("id")
        who = f"member {rid!r:.40}" if type(rid) is str else f"data[{position}]"
        attrs = resource.get("attributes")
        attrs = attrs if type(attrs) is dict else _EMPTY
        for name, kind, allowed in wanted:
            if name not in attrs:
                found.setdefault(("absent", name, f"attribute {name!r} absent"), []).append(who)
                continue
            why = _drift_of(attrs[name], kind, allowed)
            if why is not None:
                problem = "value" if why.startswith("a value") else "type"
                found.setdefault((problem, name, f"attribute {name!r} is {why}"), []).append(who)
        rels = resource.get("relationships")
        rels = rels if type(rels) is dict else _EMPTY
        for name in rel_names:
            rel = rels.get(name)
            field = f"relationships.{name}"
            if type(rel) is not dict or "data" not in rel:
                found.setdefault(("absent", field, f"relationship {name!r} absent"), []).append(who)
            elif type(rel["data"]) is not list:
                why = f"relationship {name!r} is {_type_name(rel['data'])} instead of an array"
                found.setdefault(("type", field, why), []).append(who)
    return found


def schema_drift(
    doc: object, *, attributes: Iterable[str] = MEMBER_ACCESS_ATTRIBUTES, relationships: Iterable[str] = ()
) -> None:
    """Check a members page for drift: each of ``attributes`` (those of :data:`MEMBER_ACCESS_ATTRIBUTES` the request
    asked for) present on every member with its documented type and, for ``patron_status`` and
    ``last_charge_status``, one of the documented values; each of ``relationships`` (those of
    :data:`MEMBER_ACCESS_RELATIONSHIPS` the request included) present, as an array. A page that fails says
    Patreon's API changed, not that members left: it must not be applied.

    Kept apart from :func:`parse_members_page`, which reads what is there: webhook bodies and sparse documents may
    leave these out. Only the fields the policy reads are checked, so a new attribute or a dropped cosmetic one
    changes nothing. :func:`member_drift` returns the same findings as data.

    :raises SchemaDrift: naming each drifted field, how many of the page's members showed it and the first one's id.
    :raises MalformedDocument: the document is not an array of resources at all.
    """
    found = member_drift(doc, attributes=attributes, relationships=relationships)
    if found:
        total = len(_many(doc, "member")[1])
        parts = [f"{why} on {len(whom)} of {total} member(s) (first: {whom[0]})" for (_, _, why), whom in found.items()]
        raise SchemaDrift("Patreon's member data changed shape: " + "; ".join(parts))


#: longest ``expires_in`` accepted (ten years); anything longer is treated as malformed rather than overflowing.
_MAX_EXPIRES_IN = 10 * 365 * 24 * 3600


def parse_token_response(data: object, *, now: datetime | None = None) -> TokenSet:
    """The token endpoint's JSON answer -> :class:`TokenSet`.

    ``expires_in`` (seconds) becomes an aware UTC ``expires_at`` counted from ``now`` (default: the current time);
    ``scope`` (a space-separated string, or a list) becomes a tuple.

    :raises MalformedDocument: not an object, no ``access_token``, or a field of the wrong type. The message never
        contains the tokens.
    """
    if not isinstance(data, dict):
        raise MalformedDocument(f"token response: expected a JSON object, got {_type_name(data)}")
    access_token = data.get("access_token")
    if type(access_token) is not str or not access_token:
        raise MalformedDocument("token response: 'access_token' missing or not a non-empty string")
    refresh_token = data.get("refresh_token")
    if refresh_token is not None and type(refresh_token) is not str:
        raise MalformedDocument("token response: 'refresh_token' is not a string")
    token_type = data.get("token_type")
    if token_type is None:
        token_type = "Bearer"
    elif type(token_type) is not str:
        raise MalformedDocument("token response: 'token_type' is not a string")

    expires_at = None
    expires_in = data.get("expires_in")
    if expires_in is not None:
        if type(expires_in) is str and expires_in.isdigit():
            expires_in = int(expires_in)
        if type(expires_in) not in (int, float) or not 0 <= expires_in <= _MAX_EXPIRES_IN:
            raise MalformedDocument("token response: 'expires_in' is not a number of seconds")
        expires_at = (now or datetime.now(UTC)) + timedelta(seconds=expires_in)
    elif data.get("expires_at") is not None:
        raw = data["expires_at"]
        if type(raw) not in (int, float):
            raise MalformedDocument("token response: 'expires_at' is not a timestamp")
        try:
            expires_at = datetime.fromtimestamp(raw, UTC)
        except (OverflowError, OSError, ValueError):
            raise MalformedDocument("token response: 'expires_at' is out of range") from None

    scope_value = data.get("scope")
    scope: tuple[str, ...]
    if scope_value is None:
        scope = ()
    elif type(scope_value) is str:
        scope = tuple(scope_value.split())
    elif type(scope_value) is list and all(type(s) is str for s in scope_value):
        scope = tuple(scope_value)
    else:
        raise MalformedDocument("token response: 'scope' is not a string")

    return TokenSet(
        access_token=access_token,
        refresh_token=refresh_token or None,
        expires_at=expires_at,
        scope=scope,
        token_type=token_type,
    )
