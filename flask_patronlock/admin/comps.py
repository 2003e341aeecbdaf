"""The comps page: access the creator grants by hand (a friend, a press copy, a goodwill month), with a note and an
end date; the open comps with a revoke button each, and the ones that ended. Every change goes through
:mod:`flask_patronlock.comps` (audited, source ``admin``, the admin's user id as ``by``).
"""

from __future__ import annotations

from typing import Any

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from ..comps import (
    CompError,
    CompRecord,
    access_label,
    comp_sentence,
    grant_comp,
    list_comps,
    load_user,
    revoke_comp,
    subject_label,
    user_name,
)
from ..i18n import N_, date_text, gettext
from ..models import is_row_id
from ..state import PatronLockState, get_state
from .blueprint import admin_user_id, nav, route
from .forms import CompForm, attach_error

nav("patronlock_admin.comps", N_("Comps"))


def _form(st: PatronLockState, formdata: Any) -> CompForm:
    form = CompForm(formdata=formdata)
    snapshot = st.settings.current()
    locks = [(lk.name or "", lk.description) for lk in snapshot.all_locks(st.declarations.locks)]
    tiers = sorted(snapshot.tiers.values(), key=lambda t: (t.amount_cents, t.id))
    form.set_access_choices(locks, tiers, str(current_app.config["PATRONLOCK_CURRENCY_SYMBOL"] or ""))
    return form


def _granted_by(st: PatronLockState, record: CompRecord) -> str:
    """Who granted it and where, in words."""
    admin = record.granted_source == "admin"
    if not record.granted_by:
        return gettext("on this settings page") if admin else gettext("from the command line")
    name = (user_name(load_user(st, record.granted_by)) if admin else None) or record.granted_by
    if admin:
        return gettext("on this settings page, by %(name)s", name=name)
    return gettext("from the command line, by %(name)s", name=name)


def rows(st: PatronLockState, records: list[CompRecord]) -> list[dict[str, Any]]:
    """What the comps tables show of each record (also on a patron's page)."""
    now = st.store.clock()
    return [
        {
            "record": r,
            "who": subject_label(st, r),
            "what": access_label(st, r),
            "until": date_text(r.expires_at, day_first=True) if r.expires_at is not None else gettext("no end"),
            "active": r.active_at(now),
            "sentence": comp_sentence(st, r, now=now),
            "granted": gettext(
                "%(date)s, %(how)s", date=date_text(r.created_at, day_first=True), how=_granted_by(st, r)
            ),
            "ended": date_text(r.revoked_at, day_first=True) if r.revoked_at is not None else None,
        }
        for r in records
    ]


@route("/comps", methods=("GET", "POST"))
def comps() -> ResponseReturnValue:
    """The open comps, the form that grants one, and the comps that ended."""
    st = get_state()
    if request.method == "POST":
        form = _form(st, request.form)
        if form.validate() and _grant(st, form):
            return redirect(url_for(".comps"))
        return _page(st, form), 422
    form = _form(st, None)
    member = request.args.get("member", "")[:320]
    if member:  # "Grant a comp" from a patron's page
        form.who.data, form.member.data = "member", member
    user = request.args.get("user", "")[:64]
    if user:
        form.who.data, form.user_id.data = "user", user
    return _page(st, form)


def _grant(st: PatronLockState, form: CompForm) -> bool:
    lock, tier = form.target()
    try:
        who = form.who.data
        member = (form.member.data or "").strip()
        if who == "member" and not member:
            raise CompError("member", gettext("Write the member's e-mail address or Patreon member id."))
        if who == "user" and not (form.user_id.data or "").strip():
            raise CompError("user", gettext("Write the user id of the account on this site."))
        record = grant_comp(
            st,
            user_id=(form.user_id.data or "") if who == "user" else None,
            member_id=member if who == "member" else None,
            lock=lock,
            tier=tier,
            note=form.note.data or "",
            expires_at=form.ends_on.data,
            by=admin_user_id(),
            source="admin",
        )
    except CompError as exc:
        for name, message in exc.errors:
            field = getattr(form, form.ERROR_FIELDS.get(name, ""), None)
            if field is not None:
                field.errors = [*list(field.errors or []), message]
            else:
                attach_error(form, message, {})
        return False
    flash(
        gettext("Granted. %(comp)s. Every page follows within a few seconds.", comp=comp_sentence(st, record)),
        "success",
    )
    return True


def _page(st: PatronLockState, form: CompForm) -> str:
    return render_template(
        "patronlock/admin/comps.html",
        form=form,
        open_rows=rows(st, list_comps(st)),
        ended_rows=rows(st, list_comps(st, ended=True, limit=50)),
    )


@route("/comps/<int:comp_id>/revoke", methods=("POST",))
def revoke(comp_id: int) -> ResponseReturnValue:
    """Revoke a comp now; back to where the button was (the comps page, or a patron's page)."""
    st = get_state()
    if not is_row_id(comp_id):
        abort(404)
    try:
        record = revoke_comp(st, comp_id, by=admin_user_id(), source="admin")
    except LookupError:
        abort(404)
    except CompError as exc:
        flash(str(exc), "info")
    else:
        flash(gettext("Revoked. %(comp)s.", comp=comp_sentence(st, record)), "success")
    back = request.form.get("back", "")
    if back.startswith("patron:"):
        return redirect(url_for(".patron", member_id=back[len("patron:"):]))
    return redirect(url_for(".comps"))
