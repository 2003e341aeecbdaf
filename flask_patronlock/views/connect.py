"""Connect with Patreon and log in with Patreon: start the OAuth flow, take Patreon's answer at the callback, then
link the Patreon account to the logged-in user (connect), or find, link or create the local user and log them in
(login)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import current_app, flash, redirect, request, session, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import NotFound

from .. import oauth, signals
from ..accounts import AlreadyLinked, LinkResult, get_accounts
from ..errors import ConfigurationError
from ..i18n import N_, gettext
from ..patreon.errors import PatreonError
from ..patreon.types import Identity, TokenSet
from ..patron import Patron
from ..state import get_state
from ..viewers import current_viewer_changed as viewer_changed
from .common import _current_user, _landing, _login_manager, _next_args, _now, _send, _user_id, blueprint, log
from .describe import _account_label, _describe
from .problems import ConnectProblem, _patreon_problem, _state_problem, _try_again

#: what needs a token key when a patron connects (named by the error when none is set).
_STORING_TOKENS = "storing a patron's Patreon connection"


#: the problem pages of the callback, by kind: (title, what happened, next step, status). The first three: Patreon
#: sent the visitor back without a sign-in.
_PROBLEMS: dict[str, tuple[str, str, str, int]] = {
    "access_denied": (
        N_("You cancelled on Patreon"),
        N_("Patreon says you did not allow this site to see your Patreon account, so nothing was changed."),
        N_("To unlock patron posts here, try again and choose Allow on Patreon."),
        403,
    ),
    "authorize_error": (
        N_("Patreon did not complete the sign-in"),
        N_("Patreon sent you back with an error instead of a sign-in. Nothing was changed."),
        N_("Try again; if it keeps happening, please tell the site's owner."),
        502,
    ),
    "no_code": (
        N_("Patreon did not complete the sign-in"),
        N_("Patreon sent you back without a sign-in code. Nothing was changed."),
        N_("Try again from this site."),
        ConnectProblem.code,
    ),
    "session_changed": (
        N_("You were logged out meanwhile"),
        N_("The account that started connecting Patreon is no longer the one logged in here, so nothing was linked."),
        N_("Log in to your account here, then connect Patreon again."),
        403,
    ),
    "linked_elsewhere": (
        N_("That Patreon account is connected to another account here"),
        N_("The Patreon account you approved is already connected to a different account on this site, so it was "
        "not connected to this one."),
        N_("Log in to that other account and unlink Patreon there first, or connect a different Patreon account."),
        409,
    ),
}


def _problem(kind: str, *actions: tuple[str, str]) -> ConnectProblem:
    """The problem page ``kind`` of :data:`_PROBLEMS`, with its ``actions`` (label, URL)."""
    title, description, next_steps, code = _PROBLEMS[kind]
    return ConnectProblem(kind, gettext(title), gettext(description), gettext(next_steps), code=code, actions=actions)


def _sent_back(flow: oauth.PendingFlow, kind: str) -> ConnectProblem:
    """The problem page for a callback without a sign-in, offering to try again."""
    return _problem(kind, _try_again(flow.flow, flow.next_url))


# -- starting the flows ----------------------------------------------------------------------------------------------


def _authorize(flow: oauth.Flow, next_url: str | None, user_id: str | None) -> ResponseReturnValue:
    state = get_state()
    cfg = state.app.config
    # configuration errors (no redirect URI, no client id, no key to store the tokens with) surface before anything is
    # remembered in the session, and before the visitor is sent to Patreon for nothing
    redirect_uri = oauth.redirect_uri(state.app)
    state.token_cipher(_STORING_TOKENS)
    client = state.client(purpose="connecting with Patreon")
    oauth_state, challenge = oauth.begin_flow(
        flow, next_url=next_url, user_id=user_id, now=_now(), pkce=bool(cfg["PATRONLOCK_USE_PKCE"])
    )
    try:
        url = client.authorization_url(
            redirect_uri, oauth_state, list(cfg["PATRONLOCK_SCOPES"]), code_challenge=challenge
        )
    finally:
        client.close()
    return redirect(url, 302)


@blueprint.get("/connect")
def connect() -> ResponseReturnValue:
    """A logged-in user links (or re-authorizes) their Patreon account. Anonymous visitors are sent to log in with
    Patreon when that is on, else to Flask-Login's login view."""
    next_url = oauth.safe_next(request.args.get("next"))
    user = _current_user()
    if not user.is_authenticated:
        if current_app.config["PATRONLOCK_LOGIN_ENABLED"]:
            return redirect(url_for("patronlock.login", **_next_args(next_url)))
        return _login_manager().unauthorized()
    return _authorize("connect", next_url, _user_id(user))


@blueprint.get("/login")
def login() -> ResponseReturnValue:
    """An anonymous visitor logs in with Patreon (404 when ``PATRONLOCK_LOGIN_ENABLED`` is off). A logged-in user is
    sent to connect instead."""
    if not current_app.config["PATRONLOCK_LOGIN_ENABLED"]:
        raise NotFound()
    next_url = oauth.safe_next(request.args.get("next"))
    user = _current_user()
    if user.is_authenticated:
        return _authorize("connect", next_url, _user_id(user))
    return _authorize("login", next_url, None)


# -- the callback ----------------------------------------------------------------------------------------------------


@blueprint.get("/callback")
def callback() -> ResponseReturnValue:
    """Patreon's answer: check the state first (before any token request), then exchange the code, read the identity
    with the membership to this campaign, and finish the flow."""
    state = get_state()
    now = _now()
    try:
        flow = oauth.take_flow(request.args.get("state"), now=now)
    except oauth.StateProblem as exc:
        raise _state_problem(exc.kind) from None

    error = request.args.get("error")
    if error:
        if error != "access_denied":
            log.warning("Patreon authorize answered error=%.64s", error)
        raise _sent_back(flow, "access_denied" if error == "access_denied" else "authorize_error")
    code = request.args.get("code")
    if not code:
        raise _sent_back(flow, "no_code")

    if flow.flow == "login" and not current_app.config["PATRONLOCK_LOGIN_ENABLED"]:
        raise NotFound()
    if flow.flow == "connect":
        user = _current_user()
        if not user.is_authenticated or _user_id(user) != flow.user_id:
            raise _problem("session_changed", (gettext("Connect Patreon"), url_for("patronlock.connect")))

    state.token_cipher(_STORING_TOKENS)  # the keys may have gone since the start: refuse before the code is spent
    client = state.interactive_client("connecting with Patreon")
    try:
        tokens = client.exchange_code(code, oauth.redirect_uri(state.app), flow.code_verifier)
        identity = client.identity(campaign_id=state.campaign_id(), access_token=tokens.access_token)
    except PatreonError as exc:
        raise _patreon_problem(exc, flow.flow, flow.next_url) from None
    finally:
        client.close()
    observed_at = _now()
    if flow.flow == "connect":
        return _finish_connect(flow, tokens, identity, observed_at)
    return _finish_login(flow, tokens, identity, observed_at)


def _finish_connect(
    flow: oauth.PendingFlow, tokens: TokenSet, identity: Identity, observed_at: datetime
) -> ResponseReturnValue:
    accounts = get_accounts()
    user = _current_user()
    try:
        result = accounts.link(_user_id(user), identity.user, tokens)
    except AlreadyLinked:
        raise _problem("linked_elsewhere", (gettext("Your Patreon status"), url_for("patronlock.status"))) from None
    member, patron = accounts.apply_identity(identity, observed_at=observed_at)
    _signal_link(result, user, identity, patron, "connect")
    viewer_changed()  # every worker reads this viewer afresh on their next page
    label = _account_label(identity.user)
    described = _describe(patron, member, observed_at)
    if result.outcome == "reauthorized":
        done = gettext("Reconnected your Patreon account (%(label)s).", label=label) if label else gettext(
            "Reconnected your Patreon account."
        )
    else:
        done = gettext("Connected your Patreon account (%(label)s).", label=label) if label else gettext(
            "Connected your Patreon account."
        )
    flash(f"{done} {described}", "patronlock")
    return redirect(_landing(flow.next_url))


def _load_user(user_id: str) -> Any:
    loader = _login_manager().user_callback
    if loader is None:
        raise ConfigurationError("Log in with Patreon needs a Flask-Login user_loader to load linked users")
    return loader(user_id)


def _log_in(user: Any) -> None:
    """Log ``user`` in on a fresh session: every pre-login key is dropped (no session fixation)."""
    remember_cookie = current_app.config.get("REMEMBER_COOKIE_NAME", "remember_token")
    had_remember_cookie = remember_cookie in request.cookies
    session.clear()
    regenerate = getattr(current_app.session_interface, "regenerate", None)
    if callable(regenerate):  # server-side sessions (Flask-Session) get a new session id
        regenerate(session)
    remember = bool(current_app.config["PATRONLOCK_LOGIN_REMEMBER"])
    if had_remember_cookie and not remember:
        session["_remember"] = "clear"  # a previous user's remember-me cookie must not outlive this login
    from flask_login import login_user

    if not login_user(user, remember=remember):
        raise ConnectProblem(
            "inactive_user",
            gettext("This account is disabled"),
            gettext("Your Patreon account is connected to an account here that is not active, so you were not logged "
            "in."),
            gettext("Please contact the site's owner."),
            code=403,
        )


def _finish_login(
    flow: oauth.PendingFlow, tokens: TokenSet, identity: Identity, observed_at: datetime
) -> ResponseReturnValue:
    state = get_state()
    extension = state.extension
    accounts = get_accounts()
    patreon_user = identity.user
    created = False
    via = "login"
    user: Any = None

    existing = accounts.for_patreon_user(patreon_user.id)
    if existing is not None:
        user = _load_user(existing.user_id)
        if user is None:  # the local user was deleted without unlinking: the stale link goes
            accounts.unlink(existing.user_id, reason="user_missing")
            _send(
                signals.patron_unlinked,
                user_id=existing.user_id,
                patreon_user_id=existing.patreon_user_id,
                reason="user_missing",
            )
        elif not existing.consented:
            # A run linked it by e-mail: an address comparison, never a way into the account, whatever the
            # settings. Its owner logs in the usual way and connects once (with Patreon's consent); then this works.
            raise ConnectProblem(
                "linked_by_email",
                gettext("Please log in first"),
                gettext("Your Patreon account was connected to an account here because they share an email address. "
                "For "
                "your safety, Log in with Patreon opens that account only after you have connected Patreon from it "
                "yourself."),
                gettext("Log in to your account here the usual way, then connect Patreon from your account; after "
                "that, "
                "Log in with Patreon works directly."),
                code=409,
                actions=_login_first_actions(flow.next_url),
            )
    if user is None:
        email, verified = patreon_user.email, patreon_user.email_verified is True
        by_email = extension._user_by_email
        local = by_email(email) if email and by_email is not None else None
        if local is not None:
            if not verified:
                raise ConnectProblem(
                    "email_unverified",
                    gettext("Please log in first"),
                    gettext("An account here uses the email address of your Patreon account, but Patreon has not "
                    "verified "
                    "that address, so the two cannot be connected automatically."),
                    gettext("Log in to your account here (or verify your email on Patreon), then connect Patreon "
                    "from your "
                    "account."),
                    code=409,
                    actions=_login_first_actions(flow.next_url),
                )
            auto_link = bool(current_app.config["PATRONLOCK_AUTO_LINK_VERIFIED_EMAIL"])
            if not auto_link or not extension.vouches_for(email or "", _user_id(local)):
                # Auto-linking needs both addresses verified: Patreon's, and the local one by this site (anyone can
                # register someone else's address here and wait for them to log in with Patreon).
                raise ConnectProblem(
                    "email_exists",
                    gettext("You already have an account here"),
                    gettext("An account on this site already uses the email address of your Patreon account. For your "
                    "safety it is not connected to Patreon without you logging in."),
                    gettext("Log in to that account the usual way, then connect Patreon from your account; after that, "
                    "Log in with Patreon works directly."),
                    code=409,
                    actions=_login_first_actions(flow.next_url),
                )
            user, via = local, "email"
        else:
            creator = extension._user_creator
            if creator is None:
                raise ConnectProblem(
                    "signup_not_configured",
                    gettext("Sign-up with Patreon is not available here"),
                    gettext("Your Patreon account is not connected to an account on this site, and this site does "
                    "not create "
                    "accounts from Patreon."),
                    gettext("Create an account on this site (or log in), then connect Patreon from your account."),
                    code=403,
                    actions=_login_first_actions(flow.next_url),
                )
            user = creator(patreon_user)
            if user is None:
                raise ConnectProblem(
                    "signup_refused",
                    gettext("An account could not be created"),
                    gettext("This site did not create an account from your Patreon account."),
                    gettext("Create an account on this site (or log in), then connect Patreon from your account."),
                    code=403,
                    actions=_login_first_actions(flow.next_url),
                )
            created = True

    if not current_app.config["PATRONLOCK_ADMIN_PATREON_LOGIN"]:
        _refuse_admin(user, patreon_user.id, "signup" if created else via, flow.next_url)
    try:
        result = accounts.link(_user_id(user), patreon_user, tokens)
    except AlreadyLinked:  # another login of the same Patreon account linked it a moment ago
        raise ConnectProblem(
            "linked_elsewhere",
            gettext("That Patreon account is connected to another account here"),
            gettext("The Patreon account you approved was just connected to a different account on this site."),
            gettext("Try logging in with Patreon again."),
            code=409,
            actions=(_try_again("login", flow.next_url),),
        ) from None
    member, patron = accounts.apply_identity(identity, observed_at=observed_at)
    _log_in(user)
    user_id = result.account.user_id
    if created:
        _send(signals.user_created_from_patreon, user=user, user_id=user_id, patreon_user=patreon_user)
    _signal_link(result, user, identity, patron, via)
    _send(signals.patron_logged_in, user=user, user_id=user_id, patreon_user=patreon_user, patron=patron)
    viewer_changed()
    described = _describe(patron, member, observed_at)
    label = _account_label(patreon_user)
    if created:
        done = gettext("Welcome! Your account was created from your Patreon account (%(label)s).", label=label) if (
            label
        ) else gettext("Welcome! Your account was created from your Patreon account.")
    else:
        done = gettext("Logged in with your Patreon account (%(label)s).", label=label) if label else gettext(
            "Logged in with your Patreon account."
        )
    flash(f"{done} {described}", "patronlock")
    return redirect(_landing(flow.next_url))


def _refuse_admin(user: Any, patreon_user_id: str, via: str, next_url: str | None) -> None:
    """Refuse Log in with Patreon for a site admin (``PATRONLOCK_ADMIN_PATREON_LOGIN`` off, the default), as
    Patreon's WordPress plugin does: a Patreon account is not a second key to the site's settings. Audited
    (``admin_patreon_login_refused``) and logged; nothing is linked, nobody is signed in."""
    loader = get_state().declarations.admin_loader
    if loader is None or not loader(user):
        return
    user_id = _user_id(user)
    store = get_state().store
    with store.transaction() as conn:
        store.record_event(
            conn,
            "admin_patreon_login_refused",
            source="oauth",
            patreon_user_id=patreon_user_id,
            user_id=user_id,
            detail={"via": via},
        )
    log.warning(
        "Log in with Patreon refused for admin user %s (Patreon user %s): PATRONLOCK_ADMIN_PATREON_LOGIN is off",
        user_id,
        patreon_user_id,
    )
    raise ConnectProblem(
        "admin_login_refused",
        gettext("Administrators sign in with their password"),
        gettext("This Patreon account belongs to an administrator of this site. For the site's safety, administrators "
        "cannot sign in with Patreon, so you were not signed in."),
        gettext("Sign in with your password on this site's login page instead."),
        code=403,
        actions=_password_login_actions(next_url),
    )


def _password_login_actions(next_url: str | None) -> tuple[tuple[str, str], ...]:
    """A "Sign in with your password" link to Flask-Login's login view, back to ``next_url``, when one is set."""
    view = getattr(_login_manager(), "login_view", None)
    if not view:
        return ()
    from flask_login import login_url

    return ((gettext("Sign in with your password"), login_url(view, next_url=_landing(next_url))),)


def _login_first_actions(next_url: str | None) -> tuple[tuple[str, str], ...]:
    """A "Log in" link to Flask-Login's login view that comes back to connect Patreon, when a login view is set."""
    view = getattr(_login_manager(), "login_view", None)
    if not view:
        return ()
    from flask_login import login_url

    connect = url_for("patronlock.connect", **_next_args(next_url))
    return ((gettext("Log in"), login_url(view, next_url=connect)),)


def _signal_link(result: LinkResult, user: Any, identity: Identity, patron: Patron | None, via: str) -> None:
    user_id = result.account.user_id
    if result.claimed_from_user_id is not None:
        _send(
            signals.patron_unlinked,
            user_id=result.claimed_from_user_id,
            patreon_user_id=result.account.patreon_user_id,
            reason="claimed",
        )
    if result.replaced_patreon_user_id is not None:
        _send(
            signals.patron_unlinked,
            user_id=user_id,
            patreon_user_id=result.replaced_patreon_user_id,
            reason="relinked",
        )
    if result.new_link:
        _send(signals.patron_linked, user=user, user_id=user_id, patreon_user=identity.user, patron=patron, via=via)
