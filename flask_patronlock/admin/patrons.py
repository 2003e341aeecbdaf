"""The patrons pages: search and filter, one patron with their timeline and "can this patron view lock X?", and
reading one member from Patreon now.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from ..banners import money
from ..comps import comps_about, load_user
from ..errors import ConfigurationError, TokenDecryptionError
from ..explain import describe_rule, explain
from ..i18n import N_, gettext
from ..locks import evaluate
from ..patreon.errors import NotFound, PatreonError
from ..policy import Viewer, entitlement, explain_steps
from ..state import get_state
from ..story import story
from ..viewers import with_comps
from .blueprint import nav, route
from .comps import rows as comp_rows
from .data import STATUS_FILTERS, patron_timeline, search_patrons

log = logging.getLogger("flask_patronlock.admin")

nav("patronlock_admin.patrons", N_("Patrons"))

#: Patreon's ``last_charge_status`` values, shown in the site's language (another value is shown as Patreon sent it).
CHARGE_STATUS_WORDS = {
    "Paid": N_("Paid"),
    "Declined": N_("Declined"),
    "Pending": N_("Pending"),
    "Refunded": N_("Refunded"),
    "Deleted": N_("Deleted"),
    "Fraud": N_("Fraud"),
    "Other": N_("Other"),
}


def _charge_status(status: str | None) -> str:
    """The patron page's "Last charge": Patreon's status in words, ``none`` without one."""
    if not status:
        return gettext("none")
    return gettext(CHARGE_STATUS_WORDS[status]) if status in CHARGE_STATUS_WORDS else status


@route("/patrons")
def patrons() -> ResponseReturnValue:
    """Search by name or e-mail; filter by status and tier."""
    st = get_state()
    q = request.args.get("q", "")[:200]
    status = request.args.get("status", "")
    if status not in STATUS_FILTERS:
        status = ""
    tier = request.args.get("tier", "")[:64]
    raw_page = request.args.get("page", "1")
    if not (raw_page.isascii() and raw_page.isdigit() and len(raw_page) <= 9) or int(raw_page) < 1:
        abort(404)  # not a page number (nor one a list of patrons could reach)
    page_number = int(raw_page)
    page = search_patrons(st, q=q, status=status, tier=tier, page=page_number)
    if page_number > page.pages:
        abort(404)
    snapshot = st.settings.current()
    return render_template(
        "patronlock/admin/patrons.html",
        page=page,
        q=q,
        status=status,
        tier=tier,
        statuses=STATUS_FILTERS,
        tiers=sorted(snapshot.tiers.values(), key=lambda t: (t.amount_cents, t.id)),
        tier_names={t.id: t.title or t.id for t in snapshot.tiers.values()},
        money=money,
    )


def _user_label(user: Any, user_id: str | None) -> str:
    if user_id is None:
        return ""
    parts = [str(getattr(user, attr)) for attr in ("name", "email") if user is not None and getattr(user, attr, None)]
    if parts:
        return gettext("%(name)s (user %(id)s)", name=" · ".join(parts), id=user_id)
    return gettext("user %(id)s", id=user_id)


@route("/patrons/<member_id>")
def patron(member_id: str) -> ResponseReturnValue:
    """One patron: the linked user, the stored snapshot, the audit timeline, "can this patron view lock X?"."""
    st = get_state()
    found = st.store.get_patron(member_id)
    if found is None:
        abort(404)
    user = load_user(st, found.local_user_id) if found.local_user_id is not None else None
    snapshot = st.settings.current()
    locks = snapshot.lock_names(st.declarations.locks)
    chosen = request.args.get("lock") or (locks[0] if locks else "")
    explanation = None
    if chosen in locks:
        if found.local_user_id is not None:
            explanation = {"linked": True, "result": explain(user or found.local_user_id, chosen)}
        else:  # not linked: what they would get once they connect this Patreon account here
            lock = snapshot.find_lock(st.declarations.locks, chosen)
            viewer = with_comps(Viewer(authenticated=True, linked=True, patron=found), st, None)
            now = st.store.clock()
            rule, _d, decision = evaluate(lock, viewer, user=None, state=st, now=now)
            explanation = {
                "linked": False,
                "decision": decision,
                "steps": explain_steps(rule, viewer, snapshot.policy, now, tiers=snapshot.tiers, lock=chosen),
                "story": story(
                    who=found.full_name or "This patron",
                    lock=chosen,
                    needs=describe_rule(rule, snapshot.tiers),
                    decision=decision,
                    patron=found,
                    authenticated=True,
                    linked=True,
                    entitlement=entitlement(found, snapshot.policy, now),
                    policy=snapshot.policy,
                    tiers=snapshot.tiers,
                    now=now,
                ),
            }

    return render_template(
        "patronlock/admin/patron.html",
        patron=found,
        user_label=_user_label(user, found.local_user_id),
        entitlement=entitlement(found, snapshot.policy, st.store.clock()),
        timeline=patron_timeline(st, found),
        locks=locks,
        chosen=chosen,
        explanation=explanation,
        comps=comp_rows(st, comps_about(st, found)),
        charge_status=_charge_status(found.last_charge_status),
        tier_names={t.id: t.title or t.id for t in snapshot.tiers.values()},
        money=money,
    )


@route("/patrons/<member_id>/sync", methods=("POST",))
def sync_patron(member_id: str) -> ResponseReturnValue:
    """Read this member from Patreon now and store it through ``Store.apply`` (``source="admin"``)."""
    st = get_state()
    if st.store.get_patron(member_id) is None:
        abort(404)
    try:
        client = st.creator_client("syncing one patron")
        client.max_retries = 1
        try:
            observed_at = st.store.clock()
            member = client.member(member_id)
        finally:
            client.close()
    except NotFound:
        flash(gettext("Patreon no longer has this member (deleted, or not visible to your account). Nothing was "
                      "changed; the next complete sync treats them as missing."), "error")
        return redirect(url_for(".patron", member_id=member_id))
    except (ConfigurationError, TokenDecryptionError, PatreonError) as exc:
        if isinstance(exc, ConfigurationError):
            flash(str(exc), "error")
        else:
            log.warning("syncing member %s failed: %s: %s", member_id, type(exc).__name__, exc)
            flash(gettext("Patreon did not answer, so nothing was changed. Try again in a minute."), "error")
        return redirect(url_for(".patron", member_id=member_id))
    campaign = st.campaign_id_or_none()
    if campaign and member.campaign_id and member.campaign_id != campaign:
        flash(gettext("Patreon says this member belongs to another campaign; nothing was changed."), "error")
        return redirect(url_for(".patron", member_id=member_id))
    result = st.store.apply(member, source="admin", observed_at=observed_at)
    if result.outcome == "unchanged":
        flash(gettext("Synced: Patreon says what this site already knew."), "success")
    elif result.outcome == "stale":
        flash(gettext("A newer change arrived meanwhile (a webhook or sync); it was kept."), "info")
    else:
        changed = ", ".join(sorted(result.changes)) or gettext("the record")
        said = gettext("Synced from Patreon: %(fields)s updated.", fields=changed)
        if result.events:  # the field and event names are the audit log's (technical, as the timeline shows them)
            said += " " + gettext("Events: %(events)s.", events=", ".join(result.events))
        flash(said, "success")
    return redirect(url_for(".patron", member_id=member_id))
