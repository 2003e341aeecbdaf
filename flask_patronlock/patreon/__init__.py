"""Patreon API v2 for flask-patronlock: the OAuth/API client, JSON:API parsing, webhook signatures.

No Flask here: everything in this package works (and is tested) without an application. The client returns the
frozen snapshots of :mod:`flask_patronlock.patreon.types`; the store is the only thing that turns them into state.
"""

from __future__ import annotations

from .client import MAX_PAGE_SIZE, MEMBER_FIELDS, PatreonClient, pkce_pair
from .errors import (
    Forbidden,
    InvalidGrant,
    MalformedDocument,
    NotFound,
    PaginationError,
    PatreonAPIError,
    PatreonError,
    RateLimited,
    ReauthorizationRequired,
    SchemaDrift,
    ServerError,
    TokenError,
    TransportError,
    Unauthorized,
)
from .jsonapi import (
    load_json,
    parse_campaign,
    parse_campaigns,
    parse_datetime,
    parse_identity,
    parse_member_document,
    parse_members_page,
    parse_token_response,
    parse_webhook,
    parse_webhooks,
    schema_drift,
)
from .ratelimit import RateLimiter, shared_rate_limiter
from .signatures import SIGNATURE_HEADER, sign, verify_signature
from .types import (
    CHARGE_STATUSES,
    MEMBER_TRIGGERS,
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

__all__ = [
    "CHARGE_STATUSES",
    "MAX_PAGE_SIZE",
    "MEMBER_FIELDS",
    "MEMBER_TRIGGERS",
    "PATRON_STATUSES",
    "SIGNATURE_HEADER",
    "CampaignSnapshot",
    "Forbidden",
    "Identity",
    "InvalidGrant",
    "MalformedDocument",
    "MemberPage",
    "MemberSnapshot",
    "NotFound",
    "PaginationError",
    "PatreonAPIError",
    "PatreonClient",
    "PatreonError",
    "RateLimited",
    "RateLimiter",
    "ReauthorizationRequired",
    "SchemaDrift",
    "ServerError",
    "TierSnapshot",
    "TokenError",
    "TokenSet",
    "TransportError",
    "Unauthorized",
    "UserSnapshot",
    "WebhookSnapshot",
    "load_json",
    "parse_campaign",
    "parse_campaigns",
    "parse_datetime",
    "parse_identity",
    "parse_member_document",
    "parse_members_page",
    "parse_token_response",
    "parse_webhook",
    "parse_webhooks",
    "pkce_pair",
    "schema_drift",
    "shared_rate_limiter",
    "sign",
    "verify_signature",
]
