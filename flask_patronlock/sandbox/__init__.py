"""An offline Patreon for tests and local development.

:class:`Sandbox` holds the state (a campaign with tiers, users, members, an OAuth client, tokens, webhooks, a
controllable clock, injectable faults) and the scenario controls, with billing that follows Patreon's;
:mod:`.scenarios` replays Patreon's rarer documented behaviours by name (``sandbox.scenario("start_of_month")``);
:func:`create_sandbox_app` serves it as Patreon's OAuth and API v2 (plus ``/_sandbox`` JSON controls, behind a guard
of the app's choosing); :class:`SandboxServer` runs that app live in a thread; ``python -m flask_patronlock.sandbox``
runs it standalone (its controls behind a token it prints); the ``patreon_sandbox`` pytest fixture
(:mod:`.pytest_plugin`) gives each test a live one.

A client written against Patreon's documentation works against it unchanged: point its API and OAuth base URLs at
``sandbox.url`` (``app.config.update(sandbox.config)`` for flask-patronlock).
"""

from __future__ import annotations

from .app import CONTROL_TOKEN_HEADER, ControlGuard, create_sandbox_app, get_sandbox, token_guard
from .core import config_from_credentials
from .documents import render_webhook_member
from .entities import (
    ALL_MEMBER_TRIGGERS,
    ALL_SCOPES,
    BILLING_MODES,
    DECLINE_RETRIES,
    DECLINE_RETRY_INTERVAL,
    DEFAULT_USER_SCOPES,
    FAULT_KINDS,
    Campaign,
    Delivery,
    Fault,
    Member,
    MemberEvent,
    NotFoundError,
    OAuthError,
    SandboxError,
    Tier,
    Token,
    Transport,
    User,
    Webhook,
)
from .scenarios import SCENARIO_NAMES, SCENARIOS
from .server import SandboxServer
from .state import Sandbox
from .webhooks import sign

__all__ = [
    "ALL_MEMBER_TRIGGERS",
    "ALL_SCOPES",
    "BILLING_MODES",
    "CONTROL_TOKEN_HEADER",
    "DECLINE_RETRIES",
    "DECLINE_RETRY_INTERVAL",
    "DEFAULT_USER_SCOPES",
    "FAULT_KINDS",
    "SCENARIOS",
    "SCENARIO_NAMES",
    "Campaign",
    "ControlGuard",
    "Delivery",
    "Fault",
    "Member",
    "MemberEvent",
    "NotFoundError",
    "OAuthError",
    "Sandbox",
    "SandboxError",
    "SandboxServer",
    "Tier",
    "Token",
    "Transport",
    "User",
    "Webhook",
    "config_from_credentials",
    "create_sandbox_app",
    "get_sandbox",
    "render_webhook_member",
    "sign",
    "token_guard",
]
