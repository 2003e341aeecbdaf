"""The settings pages: locks (with a preview as a patron of any tier), banners, policies, patrons, the dashboard.

Every change goes through :mod:`flask_patronlock.settings` (version stamp, audit row with ``by=`` the admin's user id)
or, for a patron, :meth:`Store.apply <flask_patronlock.store.Store.apply>`; nothing here writes a table itself.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from types import SimpleNamespace
from typing import Any, get_args

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from markupsafe import Markup

from ..banners import ACTIONS, DEFAULT_TEXTS, PLACEHOLDERS, banner_context, fill
from ..banners import _banner_html as banner_html
from ..dates import add_months
from ..errors import ConfigurationError, TokenDecryptionError
from ..explain import describe_rule, explain
from ..health import health_report
from ..locks import Lock, UnknownLockError, evaluate
from ..patreon.errors import NotFound, PatreonError
from ..patron import Patron
from ..policy import ALLOWING_REASONS, Decision, LockRule, Reason, Viewer, _required_cents, explain_steps
from ..settings import (
    BANNER_REASONS,
    clear_lock_override,
    clear_routing,
    get_banner_text,
    get_policy_settings,
    list_addons,
    list_locks,
    set_addon_enabled,
    set_banner_text,
    set_lock_override,
    set_policy_settings,
    set_routing,
)
from . import charts
from .blueprint import admin_user_id, nav, route, state
from .data import STATUS_FILTERS, patron_timeline, search_patrons, status_history, tier_counts
from .forms import BannerForm, LockForm, PolicyForm, RoutingForm, choices, money_text
from .setup import checklist

__all__: list[str] = []

log = logging.getLogger("flask_patronlock.admin")

for _endpoint, _label in (
    ("dashboard", "Dashboard"),
    ("locks", "Locks"),
    ("banners", "Banners"),
    ("policies", "Policies"),
    ("patrons", "Patrons"),
    ("addons", "Add-ons"),
):
    nav(f"patronlock_admin.{_endpoint}", _label)

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
}


def _money(cents: int | None) -> str:
    symbol = current_app.config["PATRONLOCK_CURRENCY_SYMBOL"] or ""
    return "" if cents is None else f"{symbol}{money_text(cents)}"


@route("/")
def index() -> ResponseReturnValue:
    """The settings page's front door: the checklist until setup is done, then the dashboard."""
    if all(step.done for step in checklist()):
        return redirect(url_for(".dashboard"))
    return redirect(url_for(".setup"))


# -- locks -------------------------------------------------------------------------------------------------------------


def _declared(name: str) -> Lock:
    try:
        lock: Lock = state().extension.locks.get(name)
    except UnknownLockError:
        abort(404)
    return lock


def _routing_form(formdata: Any = None) -> RoutingForm:
    st = state()
    snapshot = st.settings.current()
    cfg = current_app.config
    if snapshot.routing is not None:
        site, paths = snapshot.routing.site_lock, dict(snapshot.routing.path_locks)
    else:
        site, paths = cfg["PATRONLOCK_SITE_LOCK"], dict(cfg["PATRONLOCK_PATH_LOCKS"] or {})
    # each row as an object: a dict would be spread into PathLockForm(**row), where "prefix" is wtforms' own argument
    rows = [SimpleNamespace(prefix=k, lock=v) for k, v in sorted(paths.items())]
    data = {"site_lock": site or "", "paths": rows}
    form = RoutingForm(formdata=formdata, data=None if formdata is not None else data)
    if formdata is None:
        for _ in range(2):  # two empty rows to add a prefix without JavaScript
            form.paths.append_entry()
    form.set_lock_choices(sorted(lock.name for lock in st.extension.locks if lock.name))
    return form


@route("/locks")
def locks() -> ResponseReturnValue:
    """Every named lock with its description, rule in force and on/off; the site-wide and URL-prefix locks."""
    return _render_locks(_routing_form())


def _render_locks(routing: RoutingForm, status: int = 200) -> ResponseReturnValue:
    st = state()
    snapshot = st.settings.current()
    rows = [
        {
            "info": info,
            "described": describe_rule(info.effective, snapshot.tiers),
            "default": describe_rule(snapshot.resolve(info.default), snapshot.tiers),
        }
        for info in list_locks()
    ]
    return (
        render_template(
            "patronlock/admin/locks.html",
            rows=rows,
            routing=routing,
            routing_stored=snapshot.routing is not None,
            tiers=sorted(snapshot.tiers.values(), key=lambda t: (t.amount_cents, t.id)),
        ),
        status,
    )


@route("/locks/routing", methods=("POST",))
def save_routing() -> ResponseReturnValue:
    """Store the site-wide lock and the URL-prefix locks (they replace the configuration's)."""
    form = _routing_form(request.form)
    value = form.routing(lock.name for lock in state().extension.locks if lock.name)
    if value is None:
        return _render_locks(form, 422)
    set_routing(value, by=admin_user_id())
    flash("Saved the site-wide and URL locks. Every page follows them within a few seconds.", "success")
    return redirect(url_for(".locks"))


@route("/locks/routing/reset", methods=("POST",))
def reset_routing() -> ResponseReturnValue:
    """Go back to PATRONLOCK_SITE_LOCK and PATRONLOCK_PATH_LOCKS."""
    clear_routing(by=admin_user_id())
    flash("The site-wide and URL locks are those of the app's configuration again.", "success")
    return redirect(url_for(".locks"))


def _lock_form(lock: Lock, formdata: Any = None) -> LockForm:
    st = state()
    snapshot = st.settings.current()
    override = snapshot.overrides.get(lock.name or "")
    rule = override.rule if override is not None else lock.rule
    form = LockForm(formdata=formdata)
    if formdata is None:
        form.fill_from(snapshot.resolve(rule))
    tiers = sorted(snapshot.tiers.values(), key=lambda t: (t.amount_cents, t.id))
    keep = [*snapshot.resolve(rule).tier_ids, *(request.form.getlist("tiers") if formdata is not None else [])]
    form.set_tier_choices(tiers, keep)
    return form


@route("/locks/<name>", methods=("GET", "POST"))
def edit_lock(name: str) -> ResponseReturnValue:
    """One lock: its rule (tier from the campaign's real tiers, or an amount; lifetime; date; drip) and a preview."""
    lock = _declared(name)
    if request.method == "POST":
        form = _lock_form(lock, request.form)
        rule = form.rule()
        if rule is not None:
            set_lock_override(name, rule, by=admin_user_id())
            flash(f"Saved lock {name!r}: {describe_rule(rule, state().settings.current().tiers)}.", "success")
            return redirect(url_for(".edit_lock", name=name))
        return _render_lock(lock, form, 422)
    return _render_lock(lock, _lock_form(lock))


def _render_lock(lock: Lock, form: LockForm, status: int = 200) -> ResponseReturnValue:
    st = state()
    snapshot = st.settings.current()
    info = next(i for i in list_locks() if i.name == lock.name)
    preview = _preview(lock)
    return (
        render_template(
            "patronlock/admin/lock.html",
            lock=lock,
            info=info,
            form=form,
            described=describe_rule(info.effective, snapshot.tiers),
            default=describe_rule(snapshot.resolve(info.default), snapshot.tiers),
            tiers=sorted(snapshot.tiers.values(), key=lambda t: (t.amount_cents, t.id)),
            preview=preview,
        ),
        status,
    )


@route("/locks/<name>/reset", methods=("POST",))
def reset_lock(name: str) -> ResponseReturnValue:
    """Remove the creator's override: the default rule declared in code applies again."""
    _declared(name)
    if clear_lock_override(name, by=admin_user_id()):
        flash(f"Lock {name!r} follows its default rule again.", "success")
    return redirect(url_for(".edit_lock", name=name))


@route("/locks/<name>/toggle", methods=("POST",))
def toggle_lock(name: str) -> ResponseReturnValue:
    """Switch a lock on or off, keeping its rule."""
    lock = _declared(name)
    snapshot = state().settings.current()
    override = snapshot.overrides.get(name)
    rule = override.rule if override is not None else lock.rule
    on = request.form.get("enabled") == "1"
    set_lock_override(name, _with(rule, enabled=on), by=admin_user_id())
    flash(f"Lock {name!r} is {'on' if on else 'off: everyone may see what it guards'}.", "success")
    return redirect(url_for(".edit_lock", name=name) if request.form.get("back") == "lock" else url_for(".locks"))


def _with(rule: LockRule, **changes: Any) -> LockRule:
    return LockRule.from_dict({**rule.to_dict(), **changes})


# -- "preview as a patron of tier X" -----------------------------------------------------------------------------------

#: the preview's viewers that are not a tier.
PREVIEW_VIEWERS = {
    "anonymous": "A visitor who is not signed in",
    "not_linked": "Signed in, Patreon not connected",
    "not_a_patron": "Connected to Patreon, not a patron",
}


def preview_viewer(choice: str, months: int) -> tuple[Viewer, str] | None:
    """A made-up viewer for the preview: ``anonymous``, ``not_linked``, ``not_a_patron`` or a tier id (an active
    patron of that tier who has pledged ``months`` months and paid each of them)."""
    st = state()
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
    label = f"A {tier.title or tier.id} patron ({_money(tier.amount_cents)} a month) for {months} month(s)"
    return Viewer(authenticated=True, linked=True, patron=patron), label


def _preview(lock: Lock) -> dict[str, Any] | None:
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
    st = state()
    now = st.store.clock()
    rule, _decided, decision = evaluate(lock, viewer, user=None, state=st, now=now)
    snapshot = st.settings.current()
    steps = explain_steps(rule, viewer, snapshot.policy, now, tiers=snapshot.tiers)
    banner = Markup("")
    if not decision.allowed:  # exactly what a page shows: the real template, then the banner-html filter
        banner = banner_html(lock, decision, banner_context(lock, decision, state=st))
    return {"label": label, "decision": decision, "banner": banner, "steps": steps, "choice": choice,
            "months": months}


# -- banners ----------------------------------------------------------------------------------------------------------


def _banner_lock(name: str | None) -> Lock:
    locks = state().extension.locks
    if name and name in locks:
        lock: Lock = locks.get(name)
        return lock
    declared = sorted((lk for lk in locks if lk.name), key=lambda lk: lk.name or "")
    return declared[0] if declared else Lock(name=None, rule=LockRule(min_cents=500))


def _sample_decision(reason: str, lock: Lock) -> Decision:
    """A denial with ``reason`` for ``lock``, as a page view would make it (for the banner preview)."""
    st = state()
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
    context = banner_context(lock, decision, state=state())
    values = {key: context.get(key) for key in PLACEHOLDERS}
    context["message"] = fill(text.strip() or DEFAULT_TEXTS[reason], values)
    return banner_html(lock, decision, context)


@route("/banners")
def banners() -> ResponseReturnValue:
    """Every banner reason with its current text."""
    snapshot = state().settings.current()
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
    names = sorted((lk.name for lk in state().extension.locks if lk.name), key=str)
    return render_template("patronlock/admin/banners.html", rows=rows, lock=lock, lock_names=names)


@route("/banners/<reason>", methods=("GET", "POST"))
def edit_banner(reason: str) -> ResponseReturnValue:
    """One reason's text, its placeholders, and a live preview rendered by the real banner template. The "Preview"
    button shows the typed text without saving; JavaScript, when on, refreshes the preview while typing."""
    if reason not in BANNER_REASONS:
        abort(404)
    st = state()
    form = BannerForm(formdata=request.form if request.method == "POST" else None)
    locks = sorted((lk.name for lk in st.extension.locks if lk.name), key=str)
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


# -- policies ---------------------------------------------------------------------------------------------------------


@route("/policies", methods=("GET", "POST"))
def policies() -> ResponseReturnValue:
    """Declined payments, cancellations, first charges, free trials and gifts, missing-from-sync, the breaker."""
    if request.method == "POST":
        form = PolicyForm(formdata=request.form)
        settings = form.settings()
        if settings is not None:
            set_policy_settings(settings, by=admin_user_id())
            flash("Saved the access policies. Every page follows them within a few seconds.", "success")
            return redirect(url_for(".policies"))
        return render_template("patronlock/admin/policies.html", form=form), 422
    form = PolicyForm(formdata=None)
    form.fill_from(get_policy_settings())
    return render_template("patronlock/admin/policies.html", form=form)


# -- patrons -----------------------------------------------------------------------------------------------------------


@route("/patrons")
def patrons() -> ResponseReturnValue:
    """Search by name or e-mail; filter by status and tier."""
    st = state()
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
        money=_money,
    )


def _load_user(user_id: str | None) -> Any:
    if user_id is None:
        return None
    manager = getattr(current_app, "login_manager", None)
    loader = getattr(manager, "user_callback", None)
    if loader is None:
        return None
    try:
        return loader(user_id)
    except Exception:  # a host loader that cannot parse an id: show the id only
        log.exception("the user_loader failed for user id %r", user_id)
        return None


def _user_label(user: Any, user_id: str | None) -> str:
    if user_id is None:
        return ""
    parts = [str(getattr(user, attr)) for attr in ("name", "email") if user is not None and getattr(user, attr, None)]
    return f"{' · '.join(parts)} (user {user_id})" if parts else f"user {user_id}"


@route("/patrons/<member_id>")
def patron(member_id: str) -> ResponseReturnValue:
    """One patron: the linked user, the stored snapshot, the audit timeline, "can this patron view lock X?"."""
    st = state()
    found = st.store.get_patron(member_id)
    if found is None:
        abort(404)
    user = _load_user(found.local_user_id)
    snapshot = st.settings.current()
    locks = sorted((lk.name for lk in st.extension.locks if lk.name), key=str)
    chosen = request.args.get("lock") or (locks[0] if locks else "")
    explanation = None
    if chosen in locks:
        if found.local_user_id is not None:
            explanation = {"linked": True, "result": explain(user or found.local_user_id, chosen)}
        else:  # not linked: what they would get once they connect this Patreon account here
            lock = st.extension.locks.get(chosen)
            viewer = Viewer(authenticated=True, linked=True, patron=found)
            now = st.store.clock()
            rule, _d, decision = evaluate(lock, viewer, user=None, state=st, now=now)
            explanation = {
                "linked": False,
                "decision": decision,
                "steps": explain_steps(rule, viewer, snapshot.policy, now, tiers=snapshot.tiers),
            }
    from ..policy import entitlement

    return render_template(
        "patronlock/admin/patron.html",
        patron=found,
        user_label=_user_label(user, found.local_user_id),
        entitlement=entitlement(found, snapshot.policy, st.store.clock()),
        timeline=patron_timeline(st, found),
        locks=locks,
        chosen=chosen,
        explanation=explanation,
        tier_names={t.id: t.title or t.id for t in snapshot.tiers.values()},
        money=_money,
    )


@route("/patrons/<member_id>/sync", methods=("POST",))
def sync_patron(member_id: str) -> ResponseReturnValue:
    """Read this member from Patreon now and store it through ``Store.apply`` (``source="admin"``)."""
    st = state()
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
        flash("Patreon no longer has this member (deleted, or not visible to your account). Nothing was changed; "
              "the next complete sync treats them as missing.", "error")
        return redirect(url_for(".patron", member_id=member_id))
    except (ConfigurationError, TokenDecryptionError, PatreonError) as exc:
        if isinstance(exc, ConfigurationError):
            flash(str(exc), "error")
        else:
            log.warning("syncing member %s failed: %s: %s", member_id, type(exc).__name__, exc)
            flash("Patreon did not answer, so nothing was changed. Try again in a minute.", "error")
        return redirect(url_for(".patron", member_id=member_id))
    campaign = st.campaign_id_or_none()
    if campaign and member.campaign_id and member.campaign_id != campaign:
        flash("Patreon says this member belongs to another campaign; nothing was changed.", "error")
        return redirect(url_for(".patron", member_id=member_id))
    result = st.store.apply(member, source="admin", observed_at=observed_at)
    if result.outcome == "unchanged":
        flash("Synced: Patreon says what this site already knew.", "success")
    elif result.outcome == "stale":
        flash("A newer change arrived meanwhile (a webhook or sync); it was kept.", "info")
    else:
        changed = ", ".join(sorted(result.changes)) or "the record"
        events = f" Events: {', '.join(result.events)}." if result.events else ""
        flash(f"Synced from Patreon: {changed} updated.{events}", "success")
    return redirect(url_for(".patron", member_id=member_id))


# -- dashboard ---------------------------------------------------------------------------------------------------------


@route("/dashboard")
def dashboard() -> ResponseReturnValue:
    """Patrons by tier, active vs declined over the last 12 months, and the monthly decline rate (inline SVG)."""
    st = state()
    history = status_history(st, st.store.clock())
    by_tier = tier_counts(st)
    labels = history.months
    return render_template(
        "patronlock/admin/dashboard.html",
        health=health_report(st.app),
        by_tier=charts.bar_chart(by_tier, title="Active patrons by tier", empty="No active patrons stored yet."),
        over_time=charts.line_chart(
            labels,
            [
                charts.Series("Active", history.active, "#15803d"),
                charts.Series("Payment declined", history.declined, "#c2410c"),
            ],
            title="Active and declined patrons at the end of each month",
            empty="No patron history yet: it starts with the first sync.",
        ),
        decline_rate=charts.line_chart(
            labels,
            [charts.Series("Declines per 100 active patrons", history.decline_rate, "#b45309")],
            title="Monthly decline rate",
            unit="%",
            empty="No month with active patrons yet.",
        ),
        history=history,
        by_tier_rows=by_tier,
        steps=checklist(),
    )


# -- add-ons --------------------------------------------------------------------------------------------------------


@route("/addons")
def addons() -> ResponseReturnValue:
    """The installed add-ons (and those that failed to load), each with its on/off switch."""
    return render_template("patronlock/admin/addons.html", addons=list_addons())


@route("/addons/<name>", methods=("POST",))
def switch_addon(name: str) -> ResponseReturnValue:
    """Switch an add-on on or off; every worker follows within a few seconds."""
    on = request.form.get("enabled") == "1"
    try:
        set_addon_enabled(name, on, by=admin_user_id())
    except LookupError:
        abort(404)
    flash(f"Add-on {name!r} is {'on' if on else 'off'}. Every page follows within a few seconds.", "success")
    return redirect(url_for(".addons"))
