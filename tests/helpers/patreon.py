"""The four real Patreon webhook payloads (copied from the project's shared fixtures into tests/fixtures/patreon/)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES_DIR = Path(__file__).parents[1] / "fixtures" / "patreon"
FIXTURE_NAMES = (
    "members_pledge_create.json",
    "members_pledge_update.json",
    "members_pledge_delete.json",
    "members_update_free_trial.json",
)


def fixture_bytes(name: str) -> bytes:
    """The raw bytes of one payload, exactly as Patreon sent it (signatures are computed over these)."""
    return (FIXTURES_DIR / name).read_bytes()


def fixture_json(name: str) -> dict[str, Any]:
    """One payload, parsed."""
    data: dict[str, Any] = json.loads(fixture_bytes(name))
    return data
