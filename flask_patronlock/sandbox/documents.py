"""JSON:API rendering of the sandbox's resources, shaped like Patreon's API v2 and webhook payloads.

Attribute rules (Patreon's API v2 says "all properties must be individually requested"):

* **API responses** carry, for each resource type, exactly the attributes named in ``fields[<type>]``; a type with
  no ``fields[...]`` parameter gets an empty ``attributes`` object, as on Patreon. Unknown attribute names are a
  400. Relationships appear only for relationships named in ``include`` (and every included resource appears once
  in ``included``, never repeating the primary data).
* **Webhook bodies** carry every attribute Patreon's real payloads carry (the key sets of the captured fixtures:
  :data:`WEBHOOK_MEMBER_ATTRIBUTES`, :data:`WEBHOOK_USER_ATTRIBUTES`...), all four member relationships, the
  campaign, user and entitled tiers in ``included``, and ``links.self``.
* ``email`` is left out unless the token has the scope for it (``campaigns.members[email]`` for members,
  ``identity[email]`` for the identity user), as Patreon does.

Attribute dicts of members and users are built once and cached on the record until it changes, so a page of 1000
members is a dict comprehension per member and one :func:`json.dumps`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from .attributes import (
    ADDRESS_ATTRIBUTES,
    ATTRIBUTES,
    CAMPAIGN_ATTRIBUTES,
    TIER_ATTRIBUTES,
    WEBHOOK_MEMBER_ATTRIBUTES,
    WEBHOOK_USER_ATTRIBUTES,
    address_attributes,
    campaign_attributes,
    member_attributes,
    tier_attributes,
    user_attributes,
    webhook_attributes,
)

if TYPE_CHECKING:
    from .core import SandboxCore
    from .entities import Address, Campaign, Member, Tier, User, Webhook

__all__ = [
    "QueryError",
    "Renderer",
    "parse_fields",
    "parse_include",
    "render_webhook_member",
]

_WEBHOOK_DEFAULTS: dict[str, tuple[str, ...]] = {
    "member": WEBHOOK_MEMBER_ATTRIBUTES,
    "user": WEBHOOK_USER_ATTRIBUTES,
    "campaign": CAMPAIGN_ATTRIBUTES,
    "tier": TIER_ATTRIBUTES,
    "address": ADDRESS_ATTRIBUTES,
}


_MEMBER_RELATIONSHIPS = ("address", "campaign", "currently_entitled_tiers", "user")


_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False).encode


_SIGNATURES: dict[tuple[Any, ...], int] = {}


_SIGNATURE_IDS = itertools.count(1)


_MAX_SIGNATURES = 1024


def _signature_id(signature: tuple[Any, ...]) -> int | None:
    """A small int naming a rendering signature (what a cached fragment depends on), None once too many exist."""
    sid = _SIGNATURES.get(signature)
    if sid is None:
        if len(_SIGNATURES) >= _MAX_SIGNATURES:
            return None
        sid = _SIGNATURES.setdefault(signature, next(_SIGNATURE_IDS))
    return sid


def _cached_json(record: Member | User, sid: int | None, build: Callable[..., Any], *args: Any) -> str:
    """``record``'s JSON text for rendering signature ``sid``, built with ``build(*args)``; the last one is kept on
    the record (one slot: a client pages with one set of parameters) until the record changes."""
    cached = record.fragment
    if cached is not None and cached[0] == sid:
        return cached[1]
    fragment: str = _ENCODE(build(*args))
    if sid is not None:
        record.fragment = (sid, fragment)
    return fragment


class QueryError(ValueError):
    """A bad ``fields[...]`` or ``include`` parameter (the API answers 400)."""


def parse_fields(args: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    """``fields[<type>]=a,b`` query parameters as ``{type: (a, b)}``.

    :raises QueryError: an attribute the type does not have (unknown types are ignored).
    """
    fields: dict[str, tuple[str, ...]] = {}
    for key, value in args.items():
        if not (key.startswith("fields[") and key.endswith("]")):
            continue
        rtype = key[7:-1]
        names = tuple(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
        known = ATTRIBUTES.get(rtype)
        if known is None:
            continue
        unknown = [n for n in names if n not in known]
        if unknown:
            raise QueryError(f"unknown {rtype} field(s): {', '.join(unknown)}")
        fields[rtype] = names
    return fields


def parse_include(value: str | None, allowed: Iterable[str]) -> frozenset[str]:
    """``include=a,b.c`` as a set, with every intermediate path added (``b.c`` implies ``b``).

    :raises QueryError: a path this endpoint cannot include.
    """
    if not value:
        return frozenset()
    allowed_set = set(allowed)
    paths = {p.strip() for p in value.split(",") if p.strip()}
    unknown = sorted(p for p in paths if p not in allowed_set)
    if unknown:
        raise QueryError(f"cannot include {', '.join(unknown)}; allowed: {', '.join(sorted(allowed_set))}")
    full: set[str] = set()
    for path in paths:
        parts = path.split(".")
        for i in range(1, len(parts) + 1):
            full.add(".".join(parts[:i]))
    return frozenset(full)


# -- documents ------------------------------------------------------------------------------------------------------


class Renderer:
    """Builds one JSON:API document: resources with the requested attributes and relationships, and the
    ``included`` array (each resource once, never one of the primary ones).

    :param root: the URL prefix of links (``https://www.patreon.com`` on Patreon; the sandbox's URL here).
    :param fields: ``{type: attribute names}`` from :func:`parse_fields`.
    :param include: include paths from :func:`parse_include`.
    :param defaults: attributes for types with no ``fields`` entry (API: none; webhooks: all).
    :param member_email: may member resources show ``email``.
    :param user_email: may user resources show ``email``.
    :param addresses: may addresses be included.
    """

    def __init__(
        self,
        sandbox: SandboxCore,
        *,
        root: str,
        fields: Mapping[str, tuple[str, ...]] | None = None,
        include: Iterable[str] = (),
        defaults: Mapping[str, tuple[str, ...]] | None = None,
        member_email: bool = True,
        user_email: bool = True,
        addresses: bool = True,
    ) -> None:
        self.sandbox = sandbox
        self.root = root.rstrip("/")
        self.api = f"{self.root}/api/oauth2/v2"
        self.include = frozenset(include)
        wanted: dict[str, tuple[str, ...]] = dict(defaults or {})
        wanted.update(fields or {})
        if not member_email and "email" in wanted.get("member", ()):
            wanted["member"] = tuple(a for a in wanted["member"] if a != "email")
        if not user_email and "email" in wanted.get("user", ()):
            wanted["user"] = tuple(a for a in wanted["user"] if a != "email")
        self.wanted = wanted
        self.addresses = addresses
        #: keep the attribute dicts built on the records (off while rendering listings, which cache JSON text).
        self.store_attributes = True
        self.included: dict[tuple[str, str], dict[str, Any]] = {}
        self.primary: set[tuple[str, str]] = set()

    # the attribute subset of one resource
    def _pick(self, rtype: str, attrs: dict[str, Any]) -> dict[str, Any]:
        names = self.wanted.get(rtype)
        if not names:
            return {}
        return {name: attrs[name] for name in names}

    def _add(self, key: tuple[str, str], build: Callable[[], dict[str, Any]]) -> None:
        if key not in self.included and key not in self.primary:
            self.included[key] = {}  # reserve the slot first: keeps order and stops cycles
            self.included[key] = build()

    def mark_primary(self, rtype: str, rid: str) -> None:
        """Declare a resource as primary data (it will not be repeated in ``included``)."""
        self.primary.add((rtype, rid))

    def member(self, member: Member, prefix: str = "") -> dict[str, Any]:
        """A ``member`` resource object; its included relationships go to :attr:`included`."""
        resource = self._member_resource(member, prefix)
        if self.include:
            self._member_includes(member, prefix)
        return resource

    def _member_resource(self, member: Member, prefix: str = "") -> dict[str, Any]:
        resource: dict[str, Any] = {
            "attributes": self._pick("member", member_attributes(self.sandbox, member, self.store_attributes)),
            "id": member.id,
            "type": "member",
        }
        include = self.include
        if not include:
            return resource
        rels: dict[str, Any] = {}
        if prefix + "address" in include:
            address = member.address if self.addresses else None
            rels["address"] = {"data": {"id": address.id, "type": "address"} if address else None}
        if prefix + "campaign" in include:
            campaign_id = member.campaign_id
            rels["campaign"] = {
                "data": {"id": campaign_id, "type": "campaign"},
                "links": {"related": f"{self.api}/campaigns/{campaign_id}"},
            }
        if prefix + "currently_entitled_tiers" in include:
            tiers = self.sandbox._tiers
            rels["currently_entitled_tiers"] = {
                "data": [{"id": tid, "type": "tier"} for tid in member.tier_ids if tid in tiers]
            }
        if prefix + "user" in include:
            rels["user"] = {
                "data": {"id": member.user_id, "type": "user"},
                "links": {"related": f"{self.api}/user/{member.user_id}"},
            }
        if rels:
            resource["relationships"] = rels
        return resource

    def _member_includes(self, member: Member, prefix: str) -> None:
        include = self.include
        sandbox = self.sandbox
        if prefix + "campaign" in include:
            campaign = sandbox.campaign
            self._add(("campaign", campaign.id), partial(self.campaign, campaign, prefix + "campaign."))
        if prefix + "user" in include:
            user = sandbox._users[member.user_id]
            self._add(("user", user.id), partial(self.user, user, prefix + "user."))
        if prefix + "currently_entitled_tiers" in include:
            for tid in member.tier_ids:
                tier = sandbox._tiers.get(tid)
                if tier is not None:
                    self._add(("tier", tid), partial(self.tier, tier))
        if prefix + "address" in include and self.addresses and member.address is not None:
            self._add(("address", member.address.id), partial(self.address, member.address))

    def members_page(self, members: Iterable[Member], *, links: Any = None, meta: Any = None) -> str:
        """A whole listing document as JSON text, fast: each member's resource (and each included user's) is
        serialised once per rendering signature and cached on the record until it changes, so a page is mostly
        a string join. Same output as :meth:`document` over :meth:`member` (included resources may be ordered
        differently)."""
        sandbox = self.sandbox
        include = self.include
        self.store_attributes = False
        member_sid = _signature_id(("member", self.wanted.get("member"), include, self.addresses, self.api))
        user_sid = _signature_id(("user", self.wanted.get("user"), include, self.api))
        want_user = "user" in include
        want_tiers = "currently_entitled_tiers" in include
        want_address = "address" in include and self.addresses
        users = sandbox._users
        tiers = sandbox._tiers
        included: dict[tuple[str, str], str] = {}
        parts: list[str] = []
        append = parts.append
        for member in members:
            append(_cached_json(member, member_sid, self._member_resource, member))
            if want_user and ("user", member.user_id) not in included:
                user = users[member.user_id]
                included["user", user.id] = _cached_json(user, user_sid, self.user, user, "user.")
            if want_tiers:
                for tid in member.tier_ids:
                    if ("tier", tid) not in included and tid in tiers:
                        included["tier", tid] = _ENCODE(self.tier(tiers[tid]))
            if want_address and member.address is not None:
                included["address", member.address.id] = _ENCODE(self.address(member.address))
        if "campaign" in include:
            campaign = sandbox.campaign
            included["campaign", campaign.id] = _ENCODE(self.campaign(campaign, "campaign."))
        out = ['{"data":[', ",".join(parts), "]"]
        if include:
            out += [',"included":[', ",".join(included.values()), "]"]
        if links:
            out += [',"links":', _ENCODE(links)]
        if meta:
            out += [',"meta":', _ENCODE(meta)]
        out.append("}")
        return "".join(out)

    def user(self, user: User, prefix: str = "") -> dict[str, Any]:
        """A ``user`` resource object (relationships ``memberships`` and ``campaign`` when included)."""
        resource: dict[str, Any] = {
            "attributes": self._pick("user", user_attributes(self.sandbox, user, self.store_attributes)),
            "id": user.id,
            "type": "user",
        }
        rels: dict[str, Any] = {}
        sandbox = self.sandbox
        if prefix + "campaign" in self.include:
            if user.id == sandbox.campaign.creator_id:
                campaign = sandbox.campaign
                rels["campaign"] = {
                    "data": {"id": campaign.id, "type": "campaign"},
                    "links": {"related": f"{self.api}/campaigns/{campaign.id}"},
                }
                self._add(("campaign", campaign.id), lambda: self.campaign(campaign, prefix + "campaign."))
            else:
                rels["campaign"] = {"data": None}
        if prefix + "memberships" in self.include:
            member = sandbox._members_by_user.get(user.id)
            refs = []
            if member is not None:
                refs.append({"id": member.id, "type": "member"})
                self._add(("member", member.id), lambda: self.member(member, prefix + "memberships."))
            rels["memberships"] = {"data": refs}
        if rels:
            resource["relationships"] = rels
        return resource

    def campaign(self, campaign: Campaign, prefix: str = "") -> dict[str, Any]:
        """A ``campaign`` resource object (relationships ``tiers``, ``creator``, ``benefits``, ``goals``)."""
        resource: dict[str, Any] = {
            "attributes": self._pick("campaign", campaign_attributes(self.sandbox, campaign))
            if self.wanted.get("campaign")
            else {},
            "id": campaign.id,
            "type": "campaign",
        }
        rels: dict[str, Any] = {}
        sandbox = self.sandbox
        if prefix + "benefits" in self.include:
            rels["benefits"] = {"data": []}
        if prefix + "creator" in self.include:
            creator = sandbox._users[campaign.creator_id]
            rels["creator"] = {
                "data": {"id": creator.id, "type": "user"},
                "links": {"related": f"{self.api}/user/{creator.id}"},
            }
            self._add(("user", creator.id), lambda: self.user(creator, prefix + "creator."))
        if prefix + "goals" in self.include:
            rels["goals"] = {"data": []}
        if prefix + "tiers" in self.include:
            refs = []
            for tier in sandbox._tiers.values():
                refs.append({"id": tier.id, "type": "tier"})
                self._add(("tier", tier.id), partial(self.tier, tier))
            rels["tiers"] = {"data": refs}
        if rels:
            resource["relationships"] = rels
        return resource

    def tier(self, tier: Tier) -> dict[str, Any]:
        """A ``tier`` resource object."""
        attrs = self._pick("tier", tier_attributes(self.sandbox, tier)) if self.wanted.get("tier") else {}
        return {"attributes": attrs, "id": tier.id, "type": "tier"}

    def address(self, address: Address) -> dict[str, Any]:
        """An ``address`` resource object."""
        return {"attributes": self._pick("address", address_attributes(address)), "id": address.id, "type": "address"}

    def webhook(self, webhook: Webhook) -> dict[str, Any]:
        """A ``webhook`` resource object (with its ``campaign`` relationship; the campaign when included)."""
        rel: dict[str, Any] = {"data": {"id": webhook.campaign_id, "type": "campaign"}}
        if "campaign" in self.include and webhook.campaign_id == self.sandbox.campaign.id:
            campaign = self.sandbox.campaign
            rel["links"] = {"related": f"{self.api}/campaigns/{campaign.id}"}
            self._add(("campaign", campaign.id), partial(self.campaign, campaign, "campaign."))
        return {
            "attributes": self._pick("webhook", webhook_attributes(webhook)),
            "id": webhook.id,
            "relationships": {"campaign": rel},
            "type": "webhook",
        }

    def document(
        self, data: Any, *, links: dict[str, Any] | None = None, meta: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The top-level document: ``data``, ``included`` (when anything was asked to be included), ``links``,
        ``meta``."""
        doc: dict[str, Any] = {"data": data}
        if self.include:
            doc["included"] = list(self.included.values())
        if links:
            doc["links"] = links
        if meta:
            doc["meta"] = meta
        return doc


def render_webhook_member(sandbox: SandboxCore, member: Member) -> bytes:
    """The body Patreon POSTs for a ``members:*`` event: the full member document, shaped like the fixtures
    (every attribute, the four relationships, the campaign, user and entitled tiers included, ``links.self``),
    serialised with sorted keys."""
    renderer = Renderer(sandbox, root=sandbox.base_url, include=_MEMBER_RELATIONSHIPS, defaults=_WEBHOOK_DEFAULTS)
    renderer.mark_primary("member", member.id)
    data = renderer.member(member)
    doc = {
        "data": data,
        "included": list(renderer.included.values()),
        "links": {"self": f"{renderer.api}/members/{member.id}"},
    }
    return json.dumps(doc, sort_keys=True).encode("utf-8")
