"""The account views: the status page, unlink, and "refresh my status" (re-read the patron from Patreon now)."""

from __future__ import annotations

from typing import Any

from flask import current_app, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from .. import signals
from ..accounts import NeedsReauthorization, NotLinked, RefreshTooSoon, get_accounts
from ..csrf import check_csrf
from ..errors import TokenDecryptionError
from ..i18n import gettext, ngettext
from ..patreon.errors import PatreonError, RateLimited
from ..state import get_state
from ..viewers import current_viewer_changed as viewer_changed
from .common import _current_user, _landing, _login_manager, _now, _send, _user_id, blueprint, log
from .describe import _account_label, _describe, _mask_email
from .problems import _csrf_problem, _patreon_problem

STATUS_TEMPLATE = "patronlock/connect/status.html"


def _require_user() -> Any:
    user = _current_user()
    if not user.is_authenticated:
        return None
    return user


@blueprint.post("/unlink")
def unlink() -> ResponseReturnValue:
    """Remove the current user's link (CSRF-protected). Patron posts lock again for this account."""
    user = _require_user()
    if user is None:
        return _login_manager().unauthorized()
    check_csrf(_csrf_problem)
    accounts = get_accounts()
    removed = accounts.unlink(_user_id(user), reason="user")
    if removed is None:
        flash(gettext("No Patreon account was connected."), "patronlock")
    else:
        _send(signals.patron_unlinked, user_id=removed.user_id, patreon_user_id=removed.patreon_user_id, reason="user")
        viewer_changed()
        flash(
            gettext("Disconnected your Patreon account. Patron posts are locked for this account until you connect "
            "Patreon "
            "again."),
            "patronlock",
        )
    return redirect(_landing(request.form.get("next")) if request.form.get("next") else url_for(".status"))


@blueprint.post("/refresh")
def refresh() -> ResponseReturnValue:
    """Re-read the current user's status from Patreon now (CSRF-protected; at most once per
    ``PATRONLOCK_STATUS_REFRESH_INTERVAL`` seconds per user)."""
    user = _require_user()
    if user is None:
        return _login_manager().unauthorized()
    check_csrf(_csrf_problem)
    accounts = get_accounts()
    user_id = _user_id(user)
    back = _landing(request.form.get("next")) if request.form.get("next") else url_for(".status")
    interval = float(current_app.config["PATRONLOCK_STATUS_REFRESH_INTERVAL"])
    try:
        previous = accounts.claim_status_refresh(user_id, interval=interval)
    except NotLinked:
        flash(gettext("Connect your Patreon account first; then your status can be refreshed."), "patronlock")
        return redirect(url_for(".status"))
    except RefreshTooSoon as exc:
        minutes = max(1, -(-int(exc.retry_after) // 60))
        flash(
            ngettext(
                "Your status was refreshed a moment ago. You can refresh it again in %(num)d minute; Patreon changes "
                "also arrive here on their own.",
                "Your status was refreshed a moment ago. You can refresh it again in %(num)d minutes; Patreon changes "
                "also arrive here on their own.",
                minutes,
            ),
            "patronlock",
        )
        return redirect(back)
    try:
        identity = accounts.identity(user_id)
    except NeedsReauthorization:
        flash(
            gettext("Patreon asks you to connect your account again before your status can be read. Nothing about your "
            "access changed."),
            "patronlock",
        )
        return redirect(url_for(".status"))
    except TokenDecryptionError:
        log.error("the stored Patreon tokens of local user %s cannot be decrypted (PATRONLOCK_TOKEN_KEYS?)", user_id)
        flash(gettext("Please connect your Patreon account again to refresh your status."), "patronlock")
        return redirect(url_for(".status"))
    except PatreonError as exc:
        if not isinstance(exc, RateLimited):
            accounts.release_status_refresh(user_id, previous)
        raise _patreon_problem(exc, "refresh", None) from None
    now = _now()
    member, patron = accounts.apply_identity(identity, observed_at=now)
    viewer_changed()  # also when nothing changed: no signal then, but the viewer asked to see the fresh state
    described = _describe(patron, member, now)
    flash(f"{gettext('Refreshed your Patreon status.')} {described}", "patronlock")
    return redirect(back)


@blueprint.get("/")
def status() -> ResponseReturnValue:
    """The current user's Patreon link: which account, patron status, whether it needs re-authorization."""
    user = _require_user()
    if user is None:
        if current_app.config["PATRONLOCK_LOGIN_ENABLED"]:
            return render_template(STATUS_TEMPLATE, user=None, account=None)
        return _login_manager().unauthorized()
    state = get_state()
    accounts = get_accounts()
    user_id = _user_id(user)
    account = accounts.get(user_id)
    patron = described = label = None
    if account is not None:
        patron = state.store.patron_for_user(user_id, state.campaign_id_or_none())
        now = _now()
        described = _describe(patron, None, now)
        label = (
            _mask_email(patron.email) if patron is not None and patron.email else None
        ) or _account_label(None, accounts.last_link_detail(user_id))
    return render_template(
        STATUS_TEMPLATE,
        user=user,
        account=account,
        patron=patron,
        described=described,
        label=label,
        refresh_interval=int(current_app.config["PATRONLOCK_STATUS_REFRESH_INTERVAL"]),
    )
