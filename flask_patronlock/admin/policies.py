"""The policies page: declined payments, cancellations, first charges, free trials and gifts, missing-from-sync,
the breaker.
"""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from ..i18n import N_, gettext
from ..settings import get_policy_settings, set_policy_settings
from ..whatif import policy_change
from .blueprint import admin_user_id, nav, route
from .forms import PolicyForm
from .preview import confirm_change

nav("patronlock_admin.policies", N_("Policies"))


@route("/policies", methods=("GET", "POST"))
def policies() -> ResponseReturnValue:
    """Declined payments, cancellations, first charges, free trials and gifts, missing-from-sync, the breaker."""
    if request.method == "POST":
        form = PolicyForm(formdata=request.form)
        settings = form.settings()
        if settings is not None and request.form.get("edit") == "1":  # back from the what-if, with what was typed
            return render_template("patronlock/admin/policies.html", form=form)
        if settings is not None and request.form.get("confirm") != "1":  # first: who this would let in or shut out
            return confirm_change(
                title=gettext("Before you save the access policies"),
                what=gettext("You are changing how a patron's standing on Patreon turns into access here."),
                change=policy_change(settings),
                action=url_for(".policies"),
                back=url_for(".policies"),
                cancel_url=url_for(".policies"),
            )
        if settings is not None:
            set_policy_settings(settings, by=admin_user_id())
            flash(gettext("Saved the access policies. Every page follows them within a few seconds."), "success")
            return redirect(url_for(".policies"))
        return render_template("patronlock/admin/policies.html", form=form), 422
    form = PolicyForm(formdata=None)
    form.fill_from(get_policy_settings())
    return render_template("patronlock/admin/policies.html", form=form)
