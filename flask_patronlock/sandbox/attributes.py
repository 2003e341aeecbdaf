"""Every attribute of each resource the sandbox serves: the attribute names per type (the API's, and the webhook
bodies' from the captured fixtures) and the functions that build a record's full attribute dict, cached on members
and users until they change. :mod:`.documents` picks from these what a request asks for."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..patreon.types import MEMBER_ATTRIBUTES
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
    "address_attributes",
    "campaign_attributes",
    "member_attributes",
    "tier_attributes",
    "user_attributes",
    "webhook_attributes",
]

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
