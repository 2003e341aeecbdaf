"""The banners pages: each denying reason's text -- for every lock, or a lock's own -- its placeholders, and a
preview rendered by the real banner template for the lock chosen.
"""

from __future__ import annotations

from typing import get_args

from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from markupsafe import Markup

from ..banners import (
    ACTIONS,
    DEFAULT_TEXTS,
    MAX_TEXT_LENGTH,
    PLACEHOLDERS,
    banner_context,
    check_text,
    money,
    render_text,
)
from ..banners import _banner_html as banner_html
from ..dates import add_months
from ..declarations import UnknownLockError
from ..i18n import N_, date_text, gettext
from ..locks import Lock
from ..policy import ALLOWING_REASONS, Decision, LockRule, Reason, _required_cents
from ..settings import BANNER_REASONS, get_banner_text, list_banner_overrides, set_banner_text
from ..state import get_state
from .blueprint import admin_user_id, nav, route
from .forms import BannerForm, choices

nav("patronlock_admin.banners", N_("Banners"))


#: the banner reasons in the order a visitor meets them.
REASON_ORDER = tuple(r for r in get_args(Reason) if r not in ALLOWING_REASONS)
REASON_TITLES = {
    "anonymous": N_("Not signed in"),
    "not_linked": N_("Signed in, Patreon not connected"),
    "not_a_patron": N_("Not a patron"),
    "amount_too_low": N_("Pledge below the lock's tier"),
    "payment_declined": N_("Payment declined"),
    "former_patron": N_("Membership ended"),
    "not_patron_at_date": N_("Joined after the lock's date"),
    "drip_not_reached": N_("Not pledged long enough yet"),
    "lifetime_too_low": N_("Lifetime support too low"),
    "wrong_tier": N_("Pledged to another tier than the lock's (exact tiers)"),
    "not_a_member": N_("Not a member, on a lock free members may see"),
    "lock_unavailable": N_("Its lock was deleted"),
}
PLACEHOLDER_HELP = {
    "tier": N_("the tier to pledge or upgrade to (the cheapest one that opens the lock)"),
    "amount": N_("the amount asked for, e.g. $5.00"),
    "creator": N_("your name (PATRONLOCK_CREATOR_NAME)"),
    "pledge_url": N_("a Patreon link that preselects that tier"),
    "connect_url": N_("where to connect a Patreon account here"),
    "login_url": N_("where to sign in here"),
    "billing_url": N_("Patreon's page to update a payment method"),
    "date": N_("the lock's date, or when a drip lock opens"),
    "months": N_("the drip lock's months"),
    "public_date": N_("when an early-access lock opens to everyone"),
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
    # the built-in text as the site shows it: in the site's locale (see flask_patronlock.i18n)
    context["message"], context["message_text"] = render_text(text.strip() or gettext(DEFAULT_TEXTS[reason]), values)
    return banner_html(lock, decision, context)


@route("/banners")
def banners() -> ResponseReturnValue:
    """Every banner reason with the text the chosen lock shows, and which locks have a text of their own."""
    snapshot = get_state().settings.current()
    lock = _banner_lock(request.args.get("lock"))
    rows = []
    for reason in REASON_ORDER:
        if reason not in BANNER_REASONS:
            continue
        text = get_banner_text(reason, lock=lock.name)
        rows.append({
            "reason": reason,
            "title": gettext(REASON_TITLES[reason]),
            "text": text,
            "custom": bool(snapshot.banner_texts.get(reason)),
            "own": lock.name in snapshot.lock_banner_texts.get(reason, {}),
            "overrides": list(list_banner_overrides(reason)),
            "preview": render_preview(reason, text, lock),
        })
    return render_template("patronlock/admin/banners.html", rows=rows, lock=lock, lock_names=_lock_names())


def _typed(text: str | None) -> str:
    """A textarea's text with the browser's CRLF line ends as one character each, as the counter counts them."""
    return (text or "").replace("\r\n", "\n")


def _lock_names() -> list[str]:
    """Every lock in force: declared in code and made by creators."""
    st = get_state()
    return st.settings.current().lock_names(st.declarations.locks)


@route("/banners/<reason>", methods=("GET", "POST"))
def edit_banner(reason: str) -> ResponseReturnValue:
    """One reason's text for every lock or for one lock only, its placeholders, and a preview rendered by the real
    banner template for that lock. The "Preview" button shows the typed text without saving; JavaScript, when on,
    refreshes the preview while typing and counts the characters."""
    if reason not in BANNER_REASONS:
        abort(404)
    st = get_state()
    form = BannerForm(formdata=request.form if request.method == "POST" else None)
    names = _lock_names()
    if request.method == "GET":
        form.lock.data = request.args.get("lock") or (names[0] if names else "")
    lock = _banner_lock(form.lock.data)
    form.lock.data = lock.name or ""
    overrides = list_banner_overrides(reason)
    scopes = [("all", gettext("All locks (those with a text of their own keep it)"))]
    if lock.name:
        scopes.append(("lock", gettext("Only the lock \u201c%(lock)s\u201d", lock=lock.name)))
    form.scope.choices = choices(scopes)
    back = url_for(".edit_banner", reason=reason, lock=lock.name)
    status = 200
    action = request.form.get("action")
    if request.method == "GET":
        own = lock.name in overrides
        form.scope.data = "lock" if own or (request.args.get("scope") == "lock" and lock.name) else "all"
        form.text.data = overrides[lock.name] if own and lock.name else get_banner_text(reason)
    elif action == "default":
        set_banner_text(reason, None, by=admin_user_id())
        flash(gettext("The banner “%(title)s” uses the built-in text again.", title=gettext(REASON_TITLES[reason])),
              "success")
        return redirect(back)
    elif action == "remove":
        name = request.form.get("remove") or lock.name
        if name not in overrides:
            flash(gettext("The lock \u201c%(lock)s\u201d has no text of its own for this banner.", lock=name), "error")
            return redirect(back)
        set_banner_text(reason, None, lock=name, by=admin_user_id())
        flash(gettext("The lock \u201c%(lock)s\u201d shows the text of all locks again.", lock=name), "success")
        return redirect(back)
    elif form.validate():
        text = form.text.data = _typed(form.text.data)
        only = form.scope.data == "lock" and lock.name is not None
        try:
            check_text(text.strip())
            if action != "preview":
                set_banner_text(reason, text, lock=lock.name if only else None, by=admin_user_id())
        except (ValueError, UnknownLockError) as exc:
            form.text.errors = [str(exc)]
            status = 422
        else:
            if action != "preview":
                if only:
                    flash(gettext("Saved the banner for the lock \u201c%(lock)s\u201d only. Its pages show it "
                                  "within a few seconds.", lock=lock.name), "success")
                else:
                    flash(gettext("Saved the banner for all locks without a text of their own. Every page shows "
                                  "it within a few seconds."), "success")
                return redirect(back)
    else:
        status = 422
    text = form.text.data or ""
    snapshot = st.settings.current()
    return (
        render_template(
            "patronlock/admin/banner.html",
            reason=reason,
            title=gettext(REASON_TITLES[reason]),
            form=form,
            lock=lock,
            lock_names=names,
            overrides=overrides,
            preview=render_preview(reason, text, lock),
            placeholders=[(name, gettext(PLACEHOLDER_HELP[name])) for name in sorted(PLACEHOLDERS)],
            default=gettext(DEFAULT_TEXTS[reason]),
            site_text=snapshot.banner_texts.get(reason) or gettext(DEFAULT_TEXTS[reason]),
            max_length=MAX_TEXT_LENGTH,
            action=ACTIONS.get(reason),
            custom=bool(snapshot.banner_texts.get(reason)),
        ),
        status,
    )


@route("/banners/<reason>/preview", methods=("POST",))
def banner_preview(reason: str) -> ResponseReturnValue:
    """The live preview's HTML fragment for the text being typed (JavaScript enhancement; saves nothing)."""
    if reason not in BANNER_REASONS:
        abort(404)
    text = _typed(request.form.get("text"))
    try:
        check_text(text.strip())
    except ValueError as exc:
        return render_template("patronlock/admin/_preview_error.html", message=str(exc)), 200
    return render_preview(reason, text, _banner_lock(request.form.get("lock")))
