"""The banners pages: each denying reason's text, its placeholders, and a preview rendered by the real banner
template.
"""

from __future__ import annotations

from typing import get_args

from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from markupsafe import Markup

from ..banners import ACTIONS, DEFAULT_TEXTS, PLACEHOLDERS, banner_context, fill, money
from ..banners import _banner_html as banner_html
from ..dates import add_months
from ..formatting import date_text
from ..locks import Lock
from ..policy import ALLOWING_REASONS, Decision, LockRule, Reason, _required_cents
from ..settings import BANNER_REASONS, get_banner_text, set_banner_text
from ..state import get_state
from .blueprint import admin_user_id, nav, route
from .forms import BannerForm, choices

nav("patronlock_admin.banners", "Banners")


#: the banner reasons in the order a visitor meets them.
REASON_ORDER = tuple(r for r in get_args(Reason) if r not in ALLOWING_REASONS)
REASON_TITLES = {
    "anonymous": "Not signed in",
    "not_linked": "Signed in, Patreon not connected",
    "not_a_patron": "Not a patron",
    "amount_too_low": "Pledge below the lock's tier",
    "payment_declined": "Payment declined",
    "former_patron": "Membership ended",
    "not_patron_at_date": "Joined after the lock's date",
    "drip_not_reached": "Not pledged long enough yet",
    "lifetime_too_low": "Lifetime support too low",
    "wrong_tier": "Pledged to another tier than the lock's (exact tiers)",
    "not_a_member": "Not a member, on a lock free members may see",
    "lock_unavailable": "Its lock was deleted",
}
PLACEHOLDER_HELP = {
    "tier": "the tier to pledge or upgrade to (the cheapest one that opens the lock)",
    "amount": "the amount asked for, e.g. $5.00",
    "creator": "your name (PATRONLOCK_CREATOR_NAME)",
    "pledge_url": "a Patreon link that preselects that tier",
    "connect_url": "where to connect a Patreon account here",
    "login_url": "where to sign in here",
    "billing_url": "Patreon's page to update a payment method",
    "date": "the lock's date, or when a drip lock opens",
    "months": "the drip lock's months",
    "public_date": "when an early-access lock opens to everyone",
}


def _banner_lock(name: str | None) -> Lock:
    st = get_state()
    declared = st.settings.current().all_locks(st.declarations.locks)
    named = [lk for lk in declared if lk.name == name]
    if named or declared:
        return (named or declared)[0]
    return Lock(name=None, rule=LockRule(min_cents=500))


def _sample_decision(reason: str, lock: Lock) -> Decision:
    """A denial with ``reason`` for ``lock``, as a page view would make it (for the banner preview)."""
    st = get_state()
    snapshot = st.settings.current()
    rule = snapshot.rule_for(lock)
    available = None
    if reason == "drip_not_reached":
        available = add_months(st.store.clock(), rule.drip_months or 1)
    return Decision(
        allowed=False,
        reason=reason,  # type: ignore[arg-type]
        required_cents=_required_cents(rule, snapshot.tiers),
        required_tier_ids=rule.tier_ids,
        available_at=available,
    )


def render_preview(reason: str, text: str, lock: Lock) -> Markup:
    """The banner of ``reason`` for ``lock`` with ``text`` (saved or not), rendered by the real banner template."""
    decision = _sample_decision(reason, lock)
    st = get_state()
    context = banner_context(lock, decision, state=st, shown=False)
    values = {key: context.get(key) for key in PLACEHOLDERS}
    # a lock without the reason's condition never shows this banner; its preview borrows a sample value, so the
    # sentence reads as it will on a lock that has one (never "patrons on ." or "supported you with in total")
    if reason == "not_patron_at_date" and not values.get("date"):
        values["date"] = date_text(st.store.clock().replace(month=1, day=1))
    if reason == "lifetime_too_low" and not values.get("amount"):
        values["amount"] = money(5000)
    context["message"] = fill(text.strip() or DEFAULT_TEXTS[reason], values)
    return banner_html(lock, decision, context)


@route("/banners")
def banners() -> ResponseReturnValue:
    """Every banner reason with its current text."""
    snapshot = get_state().settings.current()
    lock = _banner_lock(request.args.get("lock"))
    rows = [
        {
            "reason": reason,
            "title": REASON_TITLES[reason],
            "text": get_banner_text(reason),
            "custom": bool(snapshot.banner_texts.get(reason)),
            "preview": render_preview(reason, get_banner_text(reason), lock),
        }
        for reason in REASON_ORDER
        if reason in BANNER_REASONS
    ]
    st = get_state()
    names = st.settings.current().lock_names(st.declarations.locks)
    return render_template("patronlock/admin/banners.html", rows=rows, lock=lock, lock_names=names)


@route("/banners/<reason>", methods=("GET", "POST"))
def edit_banner(reason: str) -> ResponseReturnValue:
    """One reason's text, its placeholders, and a live preview rendered by the real banner template. The "Preview"
    button shows the typed text without saving; JavaScript, when on, refreshes the preview while typing."""
    if reason not in BANNER_REASONS:
        abort(404)
    st = get_state()
    form = BannerForm(formdata=request.form if request.method == "POST" else None)
    locks = st.settings.current().lock_names(st.declarations.locks)
    form.lock.choices = choices((name, name) for name in locks)
    status = 200
    if request.method == "GET":
        form.text.data = get_banner_text(reason)
        form.lock.data = request.args.get("lock") or (locks[0] if locks else "")
    elif request.form.get("action") == "default":
        set_banner_text(reason, None, by=admin_user_id())
        flash(f"The {REASON_TITLES[reason].lower()} banner uses the built-in text again.", "success")
        return redirect(url_for(".edit_banner", reason=reason, lock=form.lock.data or None))
    elif form.validate():
        text = form.text.data or ""
        try:
            from ..banners import check_text

            check_text(text)
        except ValueError as exc:
            form.text.errors = [str(exc)]
            status = 422
        else:
            if request.form.get("action") != "preview":
                set_banner_text(reason, text, by=admin_user_id())
                flash("Saved the banner. Every page shows it within a few seconds.", "success")
                return redirect(url_for(".edit_banner", reason=reason, lock=form.lock.data or None))
    else:
        status = 422
    lock = _banner_lock(form.lock.data)
    text = form.text.data or ""
    return (
        render_template(
            "patronlock/admin/banner.html",
            reason=reason,
            title=REASON_TITLES[reason],
            form=form,
            preview=render_preview(reason, text, lock),
            placeholders=[(name, PLACEHOLDER_HELP[name]) for name in sorted(PLACEHOLDERS)],
            default=DEFAULT_TEXTS[reason],
            action=ACTIONS.get(reason),
            custom=bool(st.settings.current().banner_texts.get(reason)),
        ),
        status,
    )


@route("/banners/<reason>/preview", methods=("POST",))
def banner_preview(reason: str) -> ResponseReturnValue:
    """The live preview's HTML fragment for the text being typed (JavaScript enhancement; saves nothing)."""
    if reason not in BANNER_REASONS:
        abort(404)
    text = request.form.get("text", "")
    try:
        from ..banners import check_text

        check_text(text)
    except ValueError as exc:
        return render_template("patronlock/admin/_preview_error.html", message=str(exc)), 200
    return render_preview(reason, text, _banner_lock(request.form.get("lock")))
