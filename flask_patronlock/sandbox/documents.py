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

from .entities import iso

if TYPE_CHECKING:
    from .core import SandboxCore
    from .entities import Address, Campaign, Member, Tier, User, Webhook

__all__ = [
    "ADDRESS_ATTRIBUTES",
    "ATTRIBUTES",
    "CAMPAIGN_ATTRIBUTES",
    "MEMBER_ATTRIBUTES",
    "TIER_ATTRIBUTES",
    "USER_ATTRIBUTES",
    "WEBHOOK_ATTRIBUTES",
    "WEBHOOK_MEMBER_ATTRIBUTES",
    "WEBHOOK_USER_ATTRIBUTES",
    "QueryError",
    "Renderer",
    "iso",
    "parse_fields",
    "parse_include",
    "render_webhook_member",
]

#: every member attribute the API serves.
MEMBER_ATTRIBUTES: tuple[str, ...] = (
    "campaign_lifetime_support_cents",
    "currently_entitled_amount_cents",
    "email",
    "full_name",
    "is_follower",
    "is_free_trial",
    "is_gifted",
    "last_charge_date",
    "last_charge_status",
    "lifetime_support_cents",
    "next_charge_date",
    "note",
    "patron_status",
    "pledge_cadence",
    "pledge_relationship_start",
    "will_pay_amount_cents",
)
#: the member attributes of Patreon's webhook payloads (the fixtures' key set; no ``is_gifted``).
WEBHOOK_MEMBER_ATTRIBUTES: tuple[str, ...] = tuple(a for a in MEMBER_ATTRIBUTES if a != "is_gifted")

_SOCIAL = ("discord", "facebook", "google", "instagram", "reddit", "spotify", "spotify_open_access", "twitch",
           "twitter", "vimeo", "youtube")  # fmt: skip

# shared by every user's attributes (never mutated)
_NO_SOCIAL_CONNECTIONS: dict[str, None] = dict.fromkeys(_SOCIAL)

#: every user attribute the API serves.
USER_ATTRIBUTES: tuple[str, ...] = (
    "about",
    "can_see_nsfw",
    "created",
    "email",
    "first_name",
    "full_name",
    "hide_pledges",
    "image_url",
    "is_creator",
    "is_email_verified",
    "last_name",
    "like_count",
    "social_connections",
    "thumb_url",
    "url",
    "vanity",
)
#: the user attributes of Patreon's webhook payloads.
WEBHOOK_USER_ATTRIBUTES: tuple[str, ...] = tuple(
    a for a in USER_ATTRIBUTES if a not in ("can_see_nsfw", "email", "is_email_verified")
)

#: every campaign attribute (the webhook payloads carry all of them).
CAMPAIGN_ATTRIBUTES: tuple[str, ...] = (
    "created_at",
    "creation_name",
    "discord_server_id",
    "google_analytics_id",
    "has_rss",
    "has_sent_rss_notify",
    "image_small_url",
    "image_url",
    "is_charged_immediately",
    "is_monthly",
    "is_nsfw",
    "main_video_embed",
    "main_video_url",
    "one_liner",
    "patron_count",
    "pay_per_name",
    "pledge_url",
    "published_at",
    "rss_artwork_url",
    "rss_feed_title",
    "summary",
    "thanks_embed",
    "thanks_msg",
    "thanks_video_url",
    "url",
    "vanity",
)

#: every tier attribute (the webhook payloads carry all of them).
TIER_ATTRIBUTES: tuple[str, ...] = (
    "amount_cents",
    "created_at",
    "description",
    "discord_role_ids",
    "edited_at",
    "image_url",
    "patron_count",
    "post_count",
    "published",
    "published_at",
    "remaining",
    "requires_shipping",
    "title",
    "unpublished_at",
    "url",
    "user_limit",
)

#: every address attribute.
ADDRESS_ATTRIBUTES: tuple[str, ...] = (
    "addressee",
    "city",
    "confirmed",
    "confirmed_at",
    "country",
    "created_at",
    "line_1",
    "line_2",
    "phone_number",
    "postal_code",
    "state",
)

#: every webhook attribute.
WEBHOOK_ATTRIBUTES: tuple[str, ...] = (
    "last_attempted_at",
    "num_consecutive_times_failed",
    "paused",
    "secret",
    "triggers",
    "uri",
)

#: attribute names per resource type (what ``fields[<type>]`` may name).
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "member": MEMBER_ATTRIBUTES,
    "user": USER_ATTRIBUTES,
    "campaign": CAMPAIGN_ATTRIBUTES,
    "tier": TIER_ATTRIBUTES,
    "address": ADDRESS_ATTRIBUTES,
    "webhook": WEBHOOK_ATTRIBUTES,
    "benefit": (),
    "goal": (),
}

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


# -- attribute dicts ------------------------------------------------------------------------------------------------


def member_attributes(sandbox: SandboxCore, member: Member, store: bool = True) -> dict[str, Any]:
    """Every attribute of ``member`` (cached on the record until it changes, unless ``store`` is false)."""
    cached = member.cache
    if cached is not None:
        return cached
    user = sandbox._users[member.user_id]
    lifetime = member.lifetime_cents
    attrs = {
        "campaign_lifetime_support_cents": lifetime,
        "currently_entitled_amount_cents": member.entitled_cents,
        "email": user.email,
        "full_name": user.full_name,
        "is_follower": member.is_follower,
        "is_free_trial": member.is_free_trial,
        "is_gifted": member.is_gifted,
        "last_charge_date": iso(member.last_charge_date),
        "last_charge_status": member.last_charge_status,
        "lifetime_support_cents": lifetime,
        "next_charge_date": iso(member.next_charge_date),
        "note": member.note,
        "patron_status": member.patron_status,
        "pledge_cadence": member.cadence,
        "pledge_relationship_start": iso(member.pledge_start),
        "will_pay_amount_cents": member.will_pay_cents,
    }
    for name in sandbox.blanked_attributes:  # a known outage of a field (the charge_dates_missing scenario)
        attrs[name] = None
    if store:
        member.cache = attrs
    return attrs


def user_attributes(sandbox: SandboxCore, user: User, store: bool = True) -> dict[str, Any]:
    """Every attribute of ``user`` (cached until the user changes, unless ``store`` is false)."""
    cached = user.cache
    if cached is not None:
        return cached
    base = sandbox.base_url
    image = f"{base}/_sandbox/avatar/{user.id}.svg"
    attrs = {
        "about": user.about,
        "can_see_nsfw": True,
        "created": iso(user.created),
        "email": user.email,
        "first_name": user.first_name,
        "full_name": user.full_name,
        "hide_pledges": user.hide_pledges,
        "image_url": image,
        "is_creator": user.is_creator,
        "is_email_verified": user.email_verified,
        "last_name": user.last_name,
        "like_count": user.like_count,
        "social_connections": _NO_SOCIAL_CONNECTIONS,
        "thumb_url": image,
        "url": f"{base}/{user.vanity}" if user.vanity else f"{base}/user?u={user.id}",
        "vanity": user.vanity,
    }
    if store:
        user.cache = attrs
    return attrs


def tier_attributes(sandbox: SandboxCore, tier: Tier) -> dict[str, Any]:
    """Every attribute of ``tier`` (``patron_count``: active patrons entitled to it)."""
    counts, _ = sandbox.tier_patron_counts()
    created = iso(tier.created_at)
    remaining = None if tier.user_limit is None else max(0, tier.user_limit - counts.get(tier.id, 0))
    return {
        "amount_cents": tier.amount_cents,
        "created_at": created,
        "description": tier.description,
        "discord_role_ids": tier.discord_role_ids,
        "edited_at": created,
        "image_url": tier.image_url,
        "patron_count": counts.get(tier.id, 0),
        "post_count": tier.post_count,
        "published": tier.published,
        "published_at": created if tier.published else None,
        "remaining": remaining,
        "requires_shipping": tier.requires_shipping,
        "title": tier.title,
        "unpublished_at": None if tier.published else created,
        "url": tier.url,
        "user_limit": tier.user_limit,
    }


def campaign_attributes(sandbox: SandboxCore, campaign: Campaign) -> dict[str, Any]:
    """Every attribute of ``campaign`` (``patron_count``: its active patrons)."""
    _, patrons = sandbox.tier_patron_counts()
    base = sandbox.base_url
    image = f"{base}/_sandbox/avatar/campaign-{campaign.id}.svg"
    return {
        "created_at": iso(campaign.created_at),
        "creation_name": campaign.creation_name,
        "discord_server_id": campaign.discord_server_id,
        "google_analytics_id": campaign.google_analytics_id,
        "has_rss": False,
        "has_sent_rss_notify": False,
        "image_small_url": image,
        "image_url": image,
        "is_charged_immediately": campaign.is_charged_immediately,
        "is_monthly": campaign.is_monthly,
        "is_nsfw": campaign.is_nsfw,
        "main_video_embed": None,
        "main_video_url": None,
        "one_liner": campaign.one_liner,
        "patron_count": patrons,
        "pay_per_name": campaign.pay_per_name,
        "pledge_url": campaign.pledge_url,
        "published_at": iso(campaign.published_at),
        "rss_artwork_url": None,
        "rss_feed_title": None,
        "summary": campaign.summary,
        "thanks_embed": None,
        "thanks_msg": None,
        "thanks_video_url": None,
        "url": f"{base}/{campaign.vanity}",
        "vanity": campaign.vanity,
    }


def address_attributes(address: Address) -> dict[str, Any]:
    """Every attribute of ``address``."""
    created = iso(address.created_at)
    return {
        "addressee": address.addressee,
        "city": address.city,
        "confirmed": address.confirmed,
        "confirmed_at": created if address.confirmed else None,
        "country": address.country,
        "created_at": created,
        "line_1": address.line_1,
        "line_2": address.line_2,
        "phone_number": address.phone_number,
        "postal_code": address.postal_code,
        "state": address.state,
    }


def webhook_attributes(webhook: Webhook) -> dict[str, Any]:
    """Every attribute of ``webhook`` (``secret`` included: Patreon shows it to the client that made it)."""
    return {
        "last_attempted_at": iso(webhook.last_attempted_at),
        "num_consecutive_times_failed": webhook.num_consecutive_times_failed,
        "paused": webhook.paused,
        "secret": webhook.secret,
        "triggers": list(webhook.triggers),
        "uri": webhook.uri,
    }


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
