"""The live self-check: read the creator's campaign, one members page and the webhook list with the real credentials,
and report every way they differ from what the parser and the behaviour catalogue expect -- before a sync trusts
them. Nothing is written (a creator-token refresh aside, which any read may need).

Each :class:`Finding` says what differs (``kind``), in which read (``where``: ``campaign``, ``members page`` or
``webhooks``), which ``field``, and the JSON type seen -- never the value of a personal field. A finding is
``blocking`` when a sync page with it would be refused as drift (:func:`~flask_patronlock.patreon.jsonapi
.schema_drift`) or counted wrong: an access attribute missing, of another type or with an unknown status value, a
document the parser rejects, ``meta.pagination.total`` that does not match the members listed. New attributes,
missing cosmetic ones and webhook problems are reported but do not block.

:func:`anonymised` turns a report into JSON safe to keep and share (ids hashed with SHA-256, emails and names left
out); :func:`flask_patronlock.sandbox.scenarios.replay_live_check` makes the sandbox serve pages with the same shape
differences, so what a real site saw becomes a test.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from flask import Flask, current_app
from sqlalchemy import insert, select, update

from .errors import ConfigurationError
from .patreon.client import REQUESTED_FIELDS
from .patreon.errors import MalformedDocument, PatreonError
from .patreon.jsonapi import (
    MEMBER_ACCESS_ATTRIBUTES,
    MEMBER_ACCESS_RELATIONSHIPS,
    _type_name,
    member_drift,
    parse_campaign,
    parse_members_page,
    parse_webhooks,
)
from .state import get_state

__all__ = [
    "FINDING_KINDS",
    "LIVE_CHECK_SETTING_KEY",
    "Finding",
    "LiveCheckReport",
    "anonymised",
    "live_check",
    "save_findings",
    "store_summary",
    "stored_summary",
]

#: the settings row where the scheduled live check keeps its latest summary (one row, replaced each time).
LIVE_CHECK_SETTING_KEY = "patronlock.live_check"

#: what a finding can say.
FINDING_KINDS = (
    "missing_field",
    "new_field",
    "unknown_value",
    "type_changed",
    "malformed",
    "total_mismatch",
    "webhook_missing",
    "webhook_paused",
    "unreachable",
)
#: attributes whose values are personal: a finding names their type, never their value.
PERSONAL_FIELDS = frozenset({"email", "full_name", "first_name", "last_name", "vanity", "image_url", "url", "note",
                             "thumb_url", "about", "social_connections"})
#: enum attributes whose unknown values are Patreon's vocabulary, not anyone's data: a finding keeps the value.
ENUM_FIELDS = frozenset({"patron_status", "last_charge_status"})
#: how many members the live check reads (one page).
PAGE_SIZE = 20


@dataclass(frozen=True)
class Finding:
    """One difference between what Patreon answered and what flask-patronlock expects."""

    #: one of :data:`FINDING_KINDS`.
    kind: str
    #: ``"campaign"``, ``"members page"`` or ``"webhooks"``.
    where: str
    #: the attribute (``"relationships.<name>"`` for a relationship), or ``""``.
    field: str = ""
    #: the JSON type seen (``"str"``, ``"int"``, ``"boolean"``, ``"null"`` ...), for new fields and changed types.
    value_type: str = ""
    #: the value seen, only for an unknown value of :data:`ENUM_FIELDS` (Patreon's words, nobody's data).
    value: str | None = None
    #: on how many of the page's members it showed (members page findings).
    count: int = 0
    #: whether a sync page showing it would be refused or miscounted.
    blocking: bool = False
    #: the plain-words detail (never a personal value).
    detail: str = ""

    def describe(self) -> str:
        """The finding in plain words."""
        members = f" on {self.count} member(s)" if self.count else ""
        what = {
            "missing_field": f"'{self.field}' is missing{members}",
            "new_field": f"Patreon added '{self.field}' ({self.value_type}){members}",
            "unknown_value": f"'{self.field}' has a value Patreon does not document ({self.value!r}){members}",
            "type_changed": f"'{self.field}' is now {self.value_type}{members}",
        }.get(self.kind, self.detail)
        effect = "a sync would refuse this page" if self.blocking else "informational"
        return f"{self.where}: {what} [{effect}]"


@dataclass
class LiveCheckReport:
    """What :func:`live_check` found."""

    findings: list[Finding] = field(default_factory=list)
    #: how many members the page listed, and ``meta.pagination.total``.
    members_read: int = 0
    total: int | None = None

    @property
    def blocking(self) -> list[Finding]:
        """The findings that would make a sync page drift."""
        return [f for f in self.findings if f.blocking]

    @property
    def drifting(self) -> bool:
        """Whether any finding would make a sync page drift."""
        return bool(self.blocking)


def _resources(doc: Any) -> list[dict[str, Any]]:
    data = doc.get("data") if isinstance(doc, dict) else None
    if isinstance(data, dict):
        data = [data]
    return [r for r in data or [] if isinstance(r, dict)]


def _shape(doc: Any, rtype: str, where: str, skip: frozenset[str] = frozenset()) -> list[Finding]:
    """Attributes of the ``rtype`` resources of ``doc`` not asked for (new), or asked for and on none (missing);
    ``skip``: checked elsewhere."""
    requested = set(REQUESTED_FIELDS[rtype])
    resources = [r for r in _resources(doc) if r.get("type") == rtype]
    seen: dict[str, tuple[str, int]] = {}
    for resource in resources:
        attrs = resource.get("attributes")
        for name, value in (attrs if isinstance(attrs, dict) else {}).items():
            kind, count = seen.get(name, (_type_name(value), 0))
            seen[name] = (kind if value is None or kind != "null" else _type_name(value), count + 1)
    found = [
        Finding("new_field", where, name, value_type=kind, count=count if rtype == "member" else 0)
        for name, (kind, count) in sorted(seen.items())
        if name not in requested
    ]
    if resources:
        found += [
            Finding("missing_field", where, name, detail=f"'{name}' is missing")
            for name in sorted(requested - set(seen) - skip)
        ]
    return found


def _malformed(where: str, exc: MalformedDocument) -> Finding:
    # The parser's message may quote an id; anonymised() hashes quoted words before the report is saved.
    return Finding("malformed", where, blocking=True, detail=f"the parser refuses it: {exc}")


def _members_findings(doc: Any, report: LiveCheckReport) -> list[Finding]:
    where = "members page"
    try:
        drift = member_drift(doc, attributes=REQUESTED_FIELDS["member"], relationships=MEMBER_ACCESS_RELATIONSHIPS)
    except MalformedDocument as exc:
        return [_malformed(where, exc)]
    findings = []
    values = _values(doc)
    for (problem, name, why), whom in drift.items():
        if problem == "absent":
            findings.append(Finding("missing_field", where, name, count=len(whom), blocking=True))
        elif problem == "value":
            for value, count in sorted(values.get(name, Counter()).items()):
                findings.append(Finding("unknown_value", where, name, value_type="str", value=value, count=count,
                                        blocking=True))
        else:
            findings.append(Finding("type_changed", where, name, value_type=why.split(" is ", 1)[1].split(" ")[0],
                                    count=len(whom), blocking=True))
    checked = set(MEMBER_ACCESS_ATTRIBUTES) | {n for (_, n, _) in drift}
    findings += _shape(doc, "member", where, skip=frozenset(checked))
    if not drift:
        try:
            parse_members_page(doc)
        except MalformedDocument as exc:
            findings.append(_malformed(where, exc))
    total, listed, more = _counts(doc)
    report.members_read, report.total = listed, total
    if total is not None and ((not more and total != listed) or listed > total):
        findings.append(Finding(
            "total_mismatch", where, "meta.pagination.total", blocking=True,
            detail=f"meta.pagination.total says {total} but the page lists {listed} member(s)"
            + ("" if more else " and no next page"),
        ))
    return findings


def _counts(doc: Any) -> tuple[int | None, int, bool]:
    """``meta.pagination.total`` (``None`` when absent or not an integer), the members listed, whether a next page
    is announced -- read from the raw page, so a page the parser refuses is still counted."""
    meta = doc.get("meta") if isinstance(doc, dict) else None
    pagination = meta.get("pagination") if isinstance(meta, dict) else None
    pagination = pagination if isinstance(pagination, dict) else {}
    total = pagination.get("total")
    cursors = pagination.get("cursors")
    more = bool(isinstance(cursors, dict) and cursors.get("next")) or bool(
        isinstance(doc.get("links"), dict) and doc["links"].get("next")
    )
    listed = sum(1 for r in _resources(doc) if r.get("type") == "member")
    return (total if type(total) is int else None), listed, more


def _values(doc: Any) -> dict[str, Counter[str]]:
    """The undocumented values of :data:`ENUM_FIELDS` on the page (strings only; other types are type changes)."""
    from .patreon.types import CHARGE_STATUSES, PATRON_STATUSES

    known = {"patron_status": PATRON_STATUSES, "last_charge_status": CHARGE_STATUSES}
    out: dict[str, Counter[str]] = {}
    for resource in _resources(doc):
        attrs = resource.get("attributes")
        for name in ENUM_FIELDS:
            value = attrs.get(name) if isinstance(attrs, dict) else None
            if isinstance(value, str) and value not in known[name]:
                out.setdefault(name, Counter())[value[:40]] += 1
    return out


def _campaign_findings(doc: Any) -> list[Finding]:
    try:
        parse_campaign(doc)
    except MalformedDocument as exc:
        return [_malformed("campaign", exc)]
    return _shape(doc, "campaign", "campaign")


def _webhook_findings(doc: Any, registered_id: str | None) -> list[Finding]:
    where = "webhooks"
    try:
        hooks = parse_webhooks(doc)
    except MalformedDocument as exc:
        return [_malformed(where, exc)]
    findings = _shape(doc, "webhook", where, skip=frozenset({"secret"}))
    mine = [h for h in hooks if registered_id is None or h.id == registered_id]
    if not mine:
        findings.append(Finding("webhook_missing", where, detail=(
            "the webhook registered here is not in Patreon's list" if registered_id else "no webhook is registered"
        )))
    for hook in mine:
        if hook.paused:
            findings.append(Finding("webhook_paused", where, detail=(
                f"a webhook is paused after {hook.num_consecutive_times_failed} failed deliveries"
            )))
    return findings


def live_check(app: Flask | None = None, *, page_size: int = PAGE_SIZE) -> LiveCheckReport:
    """Read the campaign, one members page and the webhook list with the creator's credentials and compare their
    shape with what the parser and the behaviour catalogue expect. Writes nothing.

    A read Patreon refuses (or no creator token) is one ``unreachable`` finding, blocking: nothing was checked.
    """
    from .webhooks import stored_webhook

    state = get_state(app or current_app)
    report = LiveCheckReport()
    try:
        campaign_id = state.campaign_id("the live check")
        with state.creator_client("the live check") as client:
            # Three reads: paced by the in-process limiter only, so the check stores no pacing lease either.
            client.pacer = None
            documents = {what: client.raw_document(what, campaign_id, page_size=page_size)
                         for what in ("campaign", "members", "webhooks")}
    except ConfigurationError as exc:  # it names what is missing
        report.findings.append(Finding("unreachable", "patreon", blocking=True, detail=str(exc)))
        return report
    except (PatreonError, ValueError, OSError) as exc:
        report.findings.append(Finding("unreachable", "patreon", blocking=True,
                                       detail=f"could not read from Patreon: {type(exc).__name__}: {exc}"))
        return report
    report.findings += _campaign_findings(documents["campaign"])
    report.findings += _members_findings(documents["members"], report)
    registered = (stored_webhook(state) or {}).get("id")
    report.findings += _webhook_findings(documents["webhooks"], registered if isinstance(registered, str) else None)
    return report


def _hashed(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def anonymised(report: LiveCheckReport) -> dict[str, Any]:
    """The report as JSON-ready data without anything personal: findings keep kinds, fields, types and enum values;
    free-text details are dropped where they could quote a member's id or value, and any member or user id
    left in them is replaced by its SHA-256."""
    findings = []
    for finding in report.findings:
        item = asdict(finding)
        if finding.kind == "malformed":
            item["detail"] = _scrub(finding.detail)
        if finding.field in PERSONAL_FIELDS:
            item["value"] = None
        findings.append(item)
    return {
        "format": "flask-patronlock live check 1",
        "members_read": report.members_read,
        "total": report.total,
        "findings": findings,
    }


def _scrub(detail: str) -> str:
    """Hash every quoted token of a parser message (``member '123'``, ``got 'x'``): ids and values alike."""
    out, rest = [], detail
    while "'" in rest:
        head, _, tail = rest.partition("'")
        quoted, closed, rest = tail.partition("'")
        if not closed:
            out.append(head + "'" + quoted)
            rest = ""
            break
        out.append(f"{head}'{quoted}'" if quoted in REQUESTED_FIELDS["member"] + REQUESTED_FIELDS["campaign"]
                   else f"{head}{_hashed(quoted)[:23]}")
    return "".join(out) + rest


def save_findings(report: LiveCheckReport, path: str) -> None:
    """Write :func:`anonymised` ``report`` to ``path`` as JSON."""
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(anonymised(report), fh, indent=2, sort_keys=True)
        fh.write("\n")


def load_findings(path: str) -> list[Finding]:
    """The findings of a file :func:`save_findings` wrote.

    :raises ValueError: not such a file.
    """
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict) or not isinstance(data.get("findings"), list):
        raise ValueError(f"{path}: not a saved live check (no 'findings' list)")
    names = {f for f in Finding.__dataclass_fields__}
    try:
        return [Finding(**{k: v for k, v in item.items() if k in names}) for item in data["findings"]]
    except (TypeError, AttributeError):
        raise ValueError(f"{path}: a finding is not an object of the saved fields") from None


def store_summary(app: Flask, report: LiveCheckReport) -> dict[str, Any]:
    """Keep ``report``'s summary in the one settings row :data:`LIVE_CHECK_SETTING_KEY` (the scheduled check does;
    ``flask patronlock check --live`` does not): ``at`` (ISO time), ``drifting``, ``blocking`` (how many) and
    ``findings`` (each in plain words, at most 20). The health view reads it. Returns what was stored."""
    state = get_state(app)
    now = state.store.clock()
    value = {
        "at": now.isoformat(),
        "drifting": report.drifting,
        "blocking": len(report.blocking),
        "findings": [f.describe() for f in report.findings[:20]],
    }
    table = state.tables.settings
    with state.store.transaction() as conn:
        if not conn.execute(
            update(table).where(table.c.key == LIVE_CHECK_SETTING_KEY).values(value=value, updated_at=now)
        ).rowcount:
            conn.execute(insert(table).values(key=LIVE_CHECK_SETTING_KEY, value=value, version=0, updated_at=now))
    return value


def stored_summary(app: Flask) -> dict[str, Any] | None:
    """What :func:`store_summary` kept last, or ``None``."""
    state = get_state(app)
    table = state.tables.settings
    with state.store.engine.connect() as conn:
        value = conn.execute(select(table.c.value).where(table.c.key == LIVE_CHECK_SETTING_KEY)).scalar()
    return value if isinstance(value, dict) else None


def scheduled_live_check(app: Flask, interval: float) -> LiveCheckReport | None:
    """The scheduler's daily check: run :func:`live_check` and store its summary, unless a check (by any worker)
    was stored less than ``interval`` seconds ago; ``None`` then."""
    from datetime import datetime

    last = stored_summary(app)
    if last is not None and isinstance(last.get("at"), str):
        try:
            age = (get_state(app).store.clock() - datetime.fromisoformat(last["at"])).total_seconds()
        except (ValueError, TypeError):
            age = interval
        if 0 <= age < interval * 0.9:
            return None
    report = live_check(app)
    store_summary(app, report)
    return report
