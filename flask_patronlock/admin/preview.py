"""The "preview as a patron of tier X": a made-up viewer, and what a page would show them for a lock."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import request
from markupsafe import Markup

from ..banners import _banner_html as banner_html
from ..banners import banner_context, money
from ..dates import add_months
from ..locks import Lock, evaluate
from ..patron import Patron
from ..policy import Viewer, explain_steps
from ..state import get_state

#: the preview's viewers that are not a tier.
PREVIEW_VIEWERS = {
    "anonymous": "A visitor who is not signed in",
    "not_linked": "Signed in, Patreon not connected",
    "not_a_patron": "Connected to Patreon, not a patron",
}


def preview_viewer(choice: str, months: int) -> tuple[Viewer, str] | None:
    """A made-up viewer for the preview: ``anonymous``, ``not_linked``, ``not_a_patron`` or a tier id (an active
    patron of that tier who has pledged ``months`` months and paid each of them)."""
    st = get_state()
    now = st.store.clock()
    if choice == "anonymous":
        return Viewer(authenticated=False, linked=False), PREVIEW_VIEWERS[choice]
    if choice == "not_linked":
        return Viewer(authenticated=True, linked=False), PREVIEW_VIEWERS[choice]
    if choice == "not_a_patron":
        return Viewer(authenticated=True, linked=True, patron=None), PREVIEW_VIEWERS[choice]
    tier = st.settings.current().tiers.get(choice)
    if tier is None:
        return None
    months = max(0, min(months, 1200))
    patron = Patron(
        member_id="preview",
        campaign_id=st.campaign_id_or_none(),
        full_name="Preview patron",
        patron_status="active_patron",
        last_charge_status="Paid",
        last_charge_date=now - timedelta(days=1),
        entitled_cents=tier.amount_cents,
        entitled_tier_ids=(tier.id,),
        lifetime_cents=tier.amount_cents * max(months, 1),
        pledge_start=add_months(now, -months) - timedelta(days=1),
        pledge_cadence=1,
        observed_at=now,
        source="admin",
    )
    label = f"A {tier.title or tier.id} patron ({money(tier.amount_cents)} a month) for {months} month(s)"
    return Viewer(authenticated=True, linked=True, patron=patron), label


def lock_preview(lock: Lock) -> dict[str, Any] | None:
    choice = request.args.get("as", "")
    if not choice:
        return None
    try:
        months = int(request.args.get("months", "1") or 1)
    except ValueError:
        months = 1
    found = preview_viewer(choice, months)
    if found is None:
        return {"error": "That tier is not among the campaign's tiers any more: read the tiers again."}
    viewer, label = found
    st = get_state()
    now = st.store.clock()
    rule, _decided, decision = evaluate(lock, viewer, user=None, state=st, now=now)
    snapshot = st.settings.current()
    steps = explain_steps(rule, viewer, snapshot.policy, now, tiers=snapshot.tiers)
    banner = Markup("")
    if not decision.allowed:  # exactly what a page shows: the real template, then the banner-html filter
        banner = banner_html(lock, decision, banner_context(lock, decision, state=st, shown=False))
    return {"label": label, "decision": decision, "banner": banner, "steps": steps, "choice": choice,
            "months": months}
