"""The locks pages: every named lock with its rule in force, one lock's rule (with a preview as a patron of
any tier), and the site-wide and URL-prefix locks. Creators make, rename, describe and delete their own locks here;
locks declared in code are marked so and only their rule changes.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from ..content import lock_usage
from ..explain import describe_rule
from ..i18n import N_, date_text, gettext, ngettext
from ..locks import Lock, UnknownLockError
from ..policy import LockRule
from ..settings import (
    LockError,
    clear_lock_override,
    clear_routing,
    create_lock,
    delete_lock,
    find_lock,
    list_locks,
    lock_in_routing,
    set_lock_override,
    set_routing,
    update_lock,
)
from ..state import get_state
from ..whatif import lock_change, lock_deletion
from .blueprint import admin_user_id, nav, route
from .forms import LockDetailsForm, LockForm, NewLockForm, RoutingForm
from .preview import confirm_change, lock_preview

nav("patronlock_admin.locks", N_("Locks"))


def _declared(name: str) -> Lock:
    try:
        return find_lock(name)
    except UnknownLockError:
        abort(404)


def _lock_names() -> list[str]:
    st = get_state()
    return st.settings.current().lock_names(st.declarations.locks)


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
    form.set_lock_choices(_lock_names())
    return form


@route("/locks")
def locks() -> ResponseReturnValue:
    """Every named lock with its description, rule in force and on/off; the site-wide and URL-prefix locks."""
    return _render_locks(_routing_form())


def _render_locks(
    routing: RoutingForm, status: int = 200, new_lock: NewLockForm | None = None
) -> ResponseReturnValue:
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
            new_lock=new_lock if new_lock is not None else NewLockForm(formdata=None),
            tiers=sorted(snapshot.tiers.values(), key=lambda t: (t.amount_cents, t.id)),
        ),
        status,
    )


@route("/locks/routing", methods=("POST",))
def save_routing() -> ResponseReturnValue:
    """Store the site-wide lock and the URL-prefix locks (they replace the configuration's)."""
    form = _routing_form(request.form)
    value = form.routing(_lock_names())
    if value is None:
        return _render_locks(form, 422)
    set_routing(value, by=admin_user_id())
    flash(gettext("Saved the site-wide and URL locks. Every page follows them within a few seconds."), "success")
    return redirect(url_for(".locks"))


@route("/locks/routing/reset", methods=("POST",))
def reset_routing() -> ResponseReturnValue:
    """Go back to PATRONLOCK_SITE_LOCK and PATRONLOCK_PATH_LOCKS."""
    clear_routing(by=admin_user_id())
    flash(gettext("The site-wide and URL locks are those of the app's configuration again."), "success")
    return redirect(url_for(".locks"))


#: names whose lock page address would be one of this page's own (``/locks/routing``).
_RESERVED = frozenset({"routing"})


@route("/locks", methods=("POST",))
def new_lock() -> ResponseReturnValue:
    """Make a lock: it opens to any patron until its rule is chosen on its page, where this leads."""
    form = NewLockForm(request.form)
    if not form.validate():
        return _render_locks(_routing_form(), 422, form)
    typed = (form.name.data or "").strip()
    if typed in _RESERVED:
        form.show_errors(
            [("name", gettext("“%(name)s” is taken by this page's own addresses: choose another.", name=typed))]
        )
        return _render_locks(_routing_form(), 422, form)
    try:
        made = create_lock(
            form.name.data or "", title=form.title.data or "", description=form.description.data or "",
            by=admin_user_id(),
        )
    except LockError as exc:
        form.show_errors(exc.errors)
        return _render_locks(_routing_form(), 422, form)
    flash(
        gettext(
            "Made the lock “%(lock)s”. Any patron may pass it for now: choose below who may see it.",
            lock=made.display_name,
        ),
        "success",
    )
    return redirect(url_for(".edit_lock", name=made.name))


@route("/locks/<name>/details", methods=("POST",))
def lock_details(name: str) -> ResponseReturnValue:
    """Rename or describe a lock a creator made (its short name stays, so nothing that uses it breaks)."""
    lock = _declared(name)
    form = LockDetailsForm(request.form)
    if form.validate():
        try:
            update_lock(name, title=form.title.data or "", description=form.description.data or "", by=admin_user_id())
        except LockError as exc:
            form.show_errors(exc.errors)
        else:
            flash(gettext("Saved the lock's name and description."), "success")
            return redirect(url_for(".edit_lock", name=name))
    return _render_lock(lock, _lock_form(lock), 422, details=form)


@route("/locks/<name>/delete", methods=("POST",))
def remove_lock(name: str) -> ResponseReturnValue:
    """Delete a lock a creator made. Content still on it stays locked to everyone but admins (the page said so)."""
    lock = _declared(name)
    try:
        delete_lock(name, by=admin_user_id())
    except LockError as exc:
        flash(str(exc), "error")
        return redirect(url_for(".edit_lock", name=name))
    used = lock_usage(name)
    if used:
        deleted = gettext("Deleted the lock “%(lock)s”.", lock=lock.display_name)
        still = ngettext(
            "%(things)s is still on it: nobody but admins can see them until you choose another lock for them.",
            "%(things)s are still on it: nobody but admins can see them until you choose another lock for them.",
            _count(used),
            things=_things(used),
        )
        flash(f"{deleted} {still}", "success")
    else:
        flash(gettext("Deleted the lock “%(lock)s”.", lock=lock.display_name), "success")
    return redirect(url_for(".locks"))


def _things(used: list[tuple[str, int]]) -> str:
    """``[("posts", 3), ("video", 1)]`` -> ``"3 posts and 1 video"`` (the labels are the content models' own)."""
    parts = [f"{count} {label}" for label, count in used]
    if len(parts) == 1:
        return parts[0]
    return gettext("%(items)s and %(last)s", items=", ".join(parts[:-1]), last=parts[-1])


def _count(used: list[tuple[str, int]]) -> int:
    """How many rows in all ``used`` (1: the sentence says "is")."""
    return sum(count for _label, count in used)


def _usage_text(used: list[tuple[str, int]]) -> str:
    """``[("posts", 3), ("video", 1)]`` -> ``"3 posts and 1 video are still on this lock."``."""
    return ngettext(
        "%(things)s is still on this lock.", "%(things)s are still on this lock.", _count(used), things=_things(used)
    )


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
        if rule is None:
            return _render_lock(lock, form, 422)
        if request.form.get("edit") == "1":  # back from the what-if step, with what was typed
            return _render_lock(lock, form)
        if request.form.get("confirm") != "1":  # first: who this would let in or shut out
            return _confirm_rule(lock, rule)
        set_lock_override(name, rule, by=admin_user_id())
        described = describe_rule(rule, get_state().settings.current().tiers)
        flash(gettext("Saved lock %(name)s: %(rule)s.", name=repr(name), rule=described), "success")
        return redirect(url_for(".edit_lock", name=name))
    return _render_lock(lock, _lock_form(lock))


def _confirm_rule(lock: Lock, rule: LockRule, *, back: bool = True) -> ResponseReturnValue:
    """The what-if step of a change of ``lock``'s rule to ``rule`` (a new rule, or switched on or off)."""
    snapshot = get_state().settings.current()
    before = describe_rule(snapshot.base_rule_for(lock), snapshot.tiers)
    after = describe_rule(snapshot.resolve(rule), snapshot.tiers)
    if before != after:
        what = gettext("“%(lock)s”: from %(before)s to %(after)s.", lock=lock.display_name, before=before, after=after)
    else:
        what = gettext("“%(lock)s” stays: %(rule)s.", lock=lock.display_name, rule=after)
    name = lock.name or ""
    return confirm_change(
        title=gettext("Before you save “%(lock)s”", lock=lock.display_name),
        what=what,
        change=lock_change(lock, rule),
        action=request.path,
        back=url_for(".edit_lock", name=name) if back else None,
        cancel_url=url_for(".edit_lock", name=name),
    )


def _render_lock(
    lock: Lock, form: LockForm, status: int = 200, details: LockDetailsForm | None = None
) -> ResponseReturnValue:
    st = get_state()
    snapshot = st.settings.current()
    info = next(i for i in list_locks() if i.name == lock.name)
    preview = lock_preview(lock)
    made = snapshot.creator_locks.get(lock.name or "")
    if details is None and made is not None:
        details = LockDetailsForm(formdata=None, data={"title": lock.title, "description": lock.description})
    used = lock_usage(lock.name or "") if made is not None else []
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
            made=made,
            made_on=date_text(made.created_at) if made is not None and made.created_at is not None else None,
            details=details,
            usage=_usage_text(used) if used else None,
            losing=lock_deletion(lock).lost if used else (),
            in_routing=lock_in_routing(lock.name or "") if made is not None else None,
        ),
        status,
    )


@route("/locks/<name>/reset", methods=("POST",))
def reset_lock(name: str) -> ResponseReturnValue:
    """Remove the creator's override: the default rule declared in code applies again."""
    _declared(name)
    if clear_lock_override(name, by=admin_user_id()):
        flash(gettext("Lock %(name)s follows its default rule again.", name=repr(name)), "success")
    return redirect(url_for(".edit_lock", name=name))


@route("/locks/<name>/toggle", methods=("POST",))
def toggle_lock(name: str) -> ResponseReturnValue:
    """Switch a lock on or off, keeping its rule."""
    lock = _declared(name)
    snapshot = get_state().settings.current()
    override = snapshot.overrides.get(name)
    rule = override.rule if override is not None else lock.rule
    on = request.form.get("enabled") == "1"
    if request.form.get("confirm") != "1":  # switching off opens it to everyone: say so first
        return _confirm_rule(lock, _with(rule, enabled=on), back=False)
    set_lock_override(name, _with(rule, enabled=on), by=admin_user_id())
    if on:
        flash(gettext("Lock %(name)s is on.", name=repr(name)), "success")
    else:
        flash(gettext("Lock %(name)s is off: everyone may see what it guards.", name=repr(name)), "success")
    return redirect(url_for(".edit_lock", name=name) if request.form.get("back") == "lock" else url_for(".locks"))


def _with(rule: LockRule, **changes: Any) -> LockRule:
    return LockRule.from_dict({**rule.to_dict(), **changes})
