"""The policies page: declined payments, cancellations, first charges, free trials and gifts, missing-from-sync,
the breaker.
"""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from ..settings import get_policy_settings, set_policy_settings
from .blueprint import admin_user_id, nav, route
from .forms import PolicyForm

nav("patronlock_admin.policies", "Policies")


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
