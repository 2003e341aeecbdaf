"""The locks pages: every named lock with its rule in force, one lock's rule (with a preview as a patron of
any tier), and the site-wide and URL-prefix locks.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from ..explain import describe_rule
from ..locks import Lock, UnknownLockError
from ..policy import LockRule
from ..settings import clear_lock_override, clear_routing, list_locks, set_lock_override, set_routing
from ..state import get_state
from .blueprint import admin_user_id, nav, route
from .forms import LockForm, RoutingForm
from .preview import lock_preview

nav("patronlock_admin.locks", "Locks")


def _declared(name: str) -> Lock:
    try:
        lock: Lock = get_state().extension.locks.get(name)
    except UnknownLockError:
        abort(404)
    return lock


def _routing_form(formdata: Any = None) -> RoutingForm:
    st = get_state()
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
    st = get_state()
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
    value = form.routing(lock.name for lock in get_state().extension.locks if lock.name)
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
    st = get_state()
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
            flash(f"Saved lock {name!r}: {describe_rule(rule, get_state().settings.current().tiers)}.", "success")
            return redirect(url_for(".edit_lock", name=name))
        return _render_lock(lock, form, 422)
    return _render_lock(lock, _lock_form(lock))


def _render_lock(lock: Lock, form: LockForm, status: int = 200) -> ResponseReturnValue:
    st = get_state()
    snapshot = st.settings.current()
    info = next(i for i in list_locks() if i.name == lock.name)
    preview = lock_preview(lock)
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
    snapshot = get_state().settings.current()
    override = snapshot.overrides.get(name)
    rule = override.rule if override is not None else lock.rule
    on = request.form.get("enabled") == "1"
    set_lock_override(name, _with(rule, enabled=on), by=admin_user_id())
    flash(f"Lock {name!r} is {'on' if on else 'off: everyone may see what it guards'}.", "success")
    return redirect(url_for(".edit_lock", name=name) if request.form.get("back") == "lock" else url_for(".locks"))


def _with(rule: LockRule, **changes: Any) -> LockRule:
    return LockRule.from_dict({**rule.to_dict(), **changes})
