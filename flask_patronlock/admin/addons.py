"""The add-ons page: the installed add-ons (and those that failed to load), each with its on/off switch."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from ..i18n import N_, gettext
from ..settings import list_addons, set_addon_enabled
from .blueprint import admin_user_id, nav, route

nav("patronlock_admin.addons", N_("Add-ons"))


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
    if on:
        said = gettext("Add-on %(name)s is on.", name=repr(name))
    else:
        said = gettext("Add-on %(name)s is off.", name=repr(name))
    flash(said + " " + gettext("Every page follows within a few seconds."), "success")
    return redirect(url_for(".addons"))
