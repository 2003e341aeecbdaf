"""The "preview as a patron of tier X": a made-up viewer, and what a page would show them for a lock; and the
what-if step before a lock or policy change is saved (:func:`confirm_change`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import render_template, request
from flask.typing import ResponseReturnValue
from markupsafe import Markup

from ..banners import _banner_html as banner_html
from ..banners import banner_context, money
from ..dates import add_months
from ..i18n import N_, gettext, ngettext
from ..locks import Lock, evaluate
from ..patron import Patron
from ..policy import Viewer, explain_steps
from ..state import get_state
from ..whatif import AccessChange

#: the preview's viewers that are not a tier.
PREVIEW_VIEWERS = {
    "anonymous": N_("A visitor who is not signed in"),
    "not_linked": N_("Signed in, Patreon not connected"),
    "not_a_patron": N_("Connected to Patreon, not a patron"),
}


def preview_viewer(choice: str, months: int) -> tuple[Viewer, str] | None:
    """A made-up viewer for the preview: ``anonymous``, ``not_linked``, ``not_a_patron`` or a tier id (an active
    patron of that tier who has pledged ``months`` months and paid each of them)."""
    st = get_state()
    now = st.store.clock()
    if choice == "anonymous":
        return Viewer(authenticated=False, linked=False), gettext(PREVIEW_VIEWERS[choice])
    if choice == "not_linked":
        return Viewer(authenticated=True, linked=False), gettext(PREVIEW_VIEWERS[choice])
    if choice == "not_a_patron":
        return Viewer(authenticated=True, linked=True, patron=None), gettext(PREVIEW_VIEWERS[choice])
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
    label = ngettext(
        "A %(tier)s patron (%(amount)s a month) for %(num)d month",
        "A %(tier)s patron (%(amount)s a month) for %(num)d months",
        months,
        tier=tier.title or tier.id,
        amount=money(tier.amount_cents),
    )
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
        return {"error": gettext("That tier is not among the campaign's tiers any more: read the tiers again.")}
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


# -- what-if before saving (issue 17, item 5) --------------------------------------------------------------------------

#: at most this many names per list on the confirmation page (the count is always whole).
NAMES_SHOWN = 200


def _summary(gained: int, lost: int) -> str:
    """"2 patrons would gain access, no patron would lose it." (each count with its noun in the site's language)."""
    if gained == 0:
        gain = gettext("No patron would gain access")
    else:
        gain = ngettext("%(num)d patron would gain access", "%(num)d patrons would gain access", gained)
    if lost == 0:
        lose = gettext("no patron would lose it")
    else:
        lose = ngettext("%(num)d patron would lose it", "%(num)d patrons would lose it", lost)
    return gettext("%(gained)s, %(lost)s.", gained=gain, lost=lose)


def confirm_change(
    *,
    title: str,
    what: str,
    change: AccessChange,
    action: str,
    back: str | None = None,
    back_label: str | None = None,
    cancel_url: str,
    save_label: str | None = None,
) -> ResponseReturnValue:
    """The step before a lock or policy change is saved: who would gain and lose access (names behind a disclosure),
    and whether it opens a lock to everyone; *Save the change* posts the same values again with ``confirm=1``.

    :param what: the change in one sentence ("“premium”: from Gold or higher to Silver or higher").
    :param action: where the form posts (the same view as the first post).
    :param back: where *Change it again* posts the same values with ``edit=1`` (``None``: no such button).
    :param cancel_url: where *Cancel* leads (nothing is saved).
    """
    own = ("csrf_token", "confirm", "edit")
    fields = [(key, value) for key, value in request.form.items(multi=True) if key not in own]
    summary = _summary(len(change.gained), len(change.lost))
    return render_template(
        "patronlock/admin/confirm.html",
        title=title,
        what=what,
        change=change,
        summary=summary,
        gained=change.gained[:NAMES_SHOWN],
        lost=change.lost[:NAMES_SHOWN],
        more_gained=max(len(change.gained) - NAMES_SHOWN, 0),
        more_lost=max(len(change.lost) - NAMES_SHOWN, 0),
        fields=fields,
        action=action,
        back=back,
        back_label=back_label if back_label is not None else gettext("Change it again"),
        cancel_url=cancel_url,
        save_label=save_label if save_label is not None else gettext("Save the change"),
    )
