"""The ``patronlock`` blueprint: connect with Patreon, log in with Patreon, unlink, refresh my status, status page.

Registered by :meth:`PatronLock.init_app <flask_patronlock.PatronLock.init_app>` under ``PATRONLOCK_URL_PREFIX``
(default ``/patreon``):

=========================  ======  ==========================================================================
endpoint                   method  what it does
=========================  ======  ==========================================================================
``patronlock.status``      GET     ``/``: linked? which Patreon account, patron status, needs re-authorization?
``patronlock.connect``     GET     ``/connect``: a logged-in user starts linking their Patreon account
``patronlock.login``       GET     ``/login``: an anonymous visitor starts logging in with Patreon
``patronlock.callback``    GET     ``/callback``: Patreon sends the user back here (the redirect URI)
``patronlock.unlink``      POST    ``/unlink``: remove the link (CSRF-protected)
``patronlock.refresh``     POST    ``/refresh``: re-read the patron's status from Patreon (CSRF-protected)
=========================  ======  ==========================================================================

Everything that can go wrong with Patreon (the user cancelled, the state is off, the token endpoint is down, a 5xx, a
timeout) raises a :class:`ConnectProblem`, a werkzeug :class:`~werkzeug.exceptions.HTTPException` that renders
``patronlock/connect/problem.html`` with what happened and what to do next. Customise it with
``@app.errorhandler(ConnectProblem)`` or by shadowing the template. Tokens and Patreon's own error texts never
appear on a page.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, current_app, flash, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import generate_csrf, validate_csrf
from werkzeug.exceptions import HTTPException, NotFound
from wtforms import ValidationError

from . import oauth, signals
from .accounts import (
    AlreadyLinked,
    LinkResult,
    NeedsReauthorization,
    NotLinked,
    RefreshTooSoon,
    get_accounts,
    interactive_client,
)
from .errors import ConfigurationError, TokenDecryptionError
from .patreon.errors import InvalidGrant, PatreonError, RateLimited, TokenError
from .patreon.types import Identity, MemberSnapshot, TierSnapshot, TokenSet, UserSnapshot
from .patron import Patron
from .policy import Entitlement, PolicySettings, entitlement
from .state import get_state
from .viewers import current_viewer_changed as viewer_changed

__all__ = ["ConnectProblem", "blueprint", "describe_access"]

log = logging.getLogger("flask_patronlock.views")

blueprint = Blueprint("patronlock", __name__, template_folder="templates")

PROBLEM_TEMPLATE = "patronlock/connect/problem.html"
#: what needs a token key when a patron connects (named by the error when none is set).
_STORING_TOKENS = "storing a patron's Patreon connection"
STATUS_TEMPLATE = "patronlock/connect/status.html"


# -- problems --------------------------------------------------------------------------------------------------------


class ConnectProblem(HTTPException):
    """Connecting or logging in with Patreon did not work; the page says what happened and what to do.

    :ivar kind: a short machine name (``access_denied``, ``state_expired``, ``patreon_unavailable``, ...).
    :ivar title: the page's heading.
    :ivar description: what happened, for the visitor (never a token or Patreon's raw error text).
    :ivar next_steps: what the visitor can do now.
    :ivar actions: ``(label, url)`` links to offer (try again, log in, ...).
    :ivar retry_after: seconds, sent as ``Retry-After`` when set.
    :ivar owner_details: what the site's owner must fix, shown folded away under "For the site's owner" (never a
        secret or a trace).
    """

    code = 400

    def __init__(
        self,
        kind: str,
        title: str,
        description: str,
        next_steps: str = "",
        *,
        code: int | None = None,
        actions: tuple[tuple[str, str], ...] = (),
        retry_after: float | None = None,
        owner_details: str = "",
    ) -> None:
        super().__init__(description)
        if code is not None:
            self.code = code
        self.kind = kind
        self.title = title
        self.next_steps = next_steps
        self.actions = actions
        self.retry_after = retry_after
        self.owner_details = owner_details

    @property
    def name(self) -> str:
        """The page's heading."""
        return self.title

    def get_response(self, environ: Any = None, scope: Any = None) -> Response:
        """The rendered problem page."""
        body = render_template(PROBLEM_TEMPLATE, problem=self)
        response = Response(body, self.code, mimetype="text/html")
        if self.retry_after is not None:
            response.headers["Retry-After"] = str(max(1, round(self.retry_after)))
        response.headers["Cache-Control"] = "no-store"
        return response


def _try_again(flow: str, next_url: str | None) -> tuple[str, str]:
    if flow == "refresh":
        return ("Back to your Patreon status", url_for("patronlock.status"))
    endpoint = "patronlock.login" if flow == "login" else "patronlock.connect"
    args: dict[str, Any] = {"next": next_url} if next_url else {}
    return ("Try again", url_for(endpoint, **args))


def _state_problem(kind: str) -> ConnectProblem:
    texts = {
        "missing": "Patreon sent you back without the check this site needs to trust the answer.",
        "no_session": "This site no longer remembers starting a Patreon sign-in in this browser: the page may have "
        "been open too long, or cookies are blocked for this site.",
        "mismatch": "The answer from Patreon does not belong to a sign-in started in this browser.",
        "reused": "This Patreon sign-in link was already used.",
        "expired": "The Patreon sign-in took longer than 10 minutes.",
    }
    return ConnectProblem(
        f"state_{kind}",
        "That Patreon sign-in can't be finished",
        texts.get(kind, texts["mismatch"]) + " Nothing was changed.",
        "Start again from this site (allow cookies for it), and finish on Patreon within 10 minutes.",
        actions=(("Start again", url_for("patronlock.status")),),
    )


@blueprint.errorhandler(ConfigurationError)
def _not_configured(exc: ConfigurationError) -> Response:
    """A setting the views need is missing or invalid (no token keys, no redirect URI, no client id ...): a page that
    tells the visitor nothing was changed and whom to tell, the fix folded away for the owner, and the log says it
    too. Not a bare 500."""
    log.error("connecting with Patreon is not configured: %s", exc)
    return ConnectProblem(
        "not_configured",
        "Connecting Patreon isn't set up on this site yet",
        "This site can't connect Patreon accounts until its owner finishes setting it up. Nothing was changed.",
        "Please tell the site's owner; connecting with Patreon will work once they have.",
        code=500,
        owner_details=str(exc) + " Run `flask patronlock check` to see everything that is missing.",
    ).get_response()


def _patreon_problem(exc: PatreonError, flow: str, next_url: str | None) -> ConnectProblem:
    """A page for a Patreon failure; logs the error's type and (scrubbed) message, never a token."""
    log.warning("Patreon %s failed: %s: %s", flow, type(exc).__name__, exc)
    again = _try_again(flow, next_url)
    if isinstance(exc, RateLimited):
        return ConnectProblem(
            "patreon_rate_limited",
            "Patreon asked us to slow down",
            "Too many requests went to Patreon just now. Nothing was changed.",
            "Please wait a minute, then try again.",
            code=503,
            actions=(again,),
            retry_after=max(exc.retry_after, 30.0),
        )
    if isinstance(exc, InvalidGrant):
        return ConnectProblem(
            "code_rejected",
            "Patreon did not accept the sign-in",
            "Patreon said the sign-in code was expired or already used. Nothing was changed.",
            "Start again; it only takes a moment.",
            actions=(again,),
        )
    if isinstance(exc, TokenError) and exc.status_code < 500:
        return ConnectProblem(
            "client_rejected",
            "This site's Patreon connection is misconfigured",
            "Patreon refused this site's credentials. Nothing was changed.",
            "Please tell the site's owner; connecting with Patreon will work once they fix the configuration.",
            code=502,
        )
    return ConnectProblem(
        "patreon_unavailable",
        "Patreon is not answering right now",
        "We could not reach Patreon, or it answered with an error. Nothing was changed.",
        "Patreon is probably having a short outage: please try again in a few minutes.",
        code=502,
        actions=(again,),
    )


# -- helpers ---------------------------------------------------------------------------------------------------------


def _login_manager() -> Any:
    manager = getattr(current_app, "login_manager", None)
    if manager is None:
        raise ConfigurationError(
            "flask-patronlock's connect views need Flask-Login: create a LoginManager and call "
            "login_manager.init_app(app) (with a user_loader) before using them."
        )
    return manager


def _current_user() -> Any:
    _login_manager()
    from flask_login import current_user

    return current_user._get_current_object()


def _user_id(user: Any) -> str:
    return str(user.get_id())


def _next_args(next_url: str | None) -> dict[str, Any]:
    return {"next": next_url} if next_url else {}


def _default_next() -> str:
    return oauth.safe_next(current_app.config.get("PATRONLOCK_DEFAULT_NEXT")) or "/"


def _landing(next_url: str | None) -> str:
    return oauth.safe_next(next_url) or _default_next()


def _now() -> datetime:
    return get_state().store.clock()


def _check_csrf() -> None:
    """Validate the POST's CSRF token (form field ``csrf_token`` or header ``X-CSRFToken``) with Flask-WTF, whether or
    not the app uses ``CSRFProtect``. ``WTF_CSRF_ENABLED = False`` (e.g. in tests) switches it off, as for Flask-WTF."""
    if not current_app.config.get("WTF_CSRF_ENABLED", True):
        return
    token = request.form.get("csrf_token") or request.headers.get("X-CSRFToken") or request.headers.get(
        "X-CSRF-Token"
    )
    try:
        validate_csrf(token)
    except ValidationError as exc:
        raise ConnectProblem(
            "csrf",
            "This form has expired",
            f"The form's security token did not check out ({exc.args[0] if exc.args else 'invalid'}). "
            "Nothing was changed.",
            "Go back, reload the page, and try again.",
            actions=(("Back to your Patreon status", url_for("patronlock.status")),),
        ) from None


def _describe(patron: Patron | None, member: MemberSnapshot | None, now: datetime) -> str:
    """:func:`describe_access` with the creator's policy, the synced tier catalogue (plus the tiers the identity
    named) and the site's currency symbol; all from the per-process settings cache, no query."""
    snapshot = get_state().settings.current()
    tiers = dict(snapshot.tiers)
    if member is not None:
        tiers.update({t.id: t for t in member.tiers if t.title or t.id not in tiers})
    currency = current_app.config.get("PATRONLOCK_CURRENCY_SYMBOL") or ""
    return describe_access(patron, tiers, now, snapshot.policy, currency=currency)


def _money(cents: int, currency: str) -> str:
    return f"{currency}{cents // 100}.{cents % 100:02d}"  # as the banners write amounts


def _mask_email(email: str | None) -> str | None:
    if not email or "@" not in email:
        return None
    local = email.split("@", 1)[0]
    return f"{local}@…"


def _account_label(patreon_user: UserSnapshot | None, detail: Mapping[str, Any] | None = None) -> str:
    email = patreon_user.email if patreon_user else (detail or {}).get("email")
    name = patreon_user.full_name if patreon_user else (detail or {}).get("full_name")
    return _mask_email(email) or (str(name) if name else "")


def describe_access(
    patron: Patron | None,
    tiers: Mapping[str, TierSnapshot],
    now: datetime,
    settings: PolicySettings | None = None,
    *,
    currency: str = "$",
) -> str:
    """One or two sentences saying what ``patron`` has on this site now, from
    :func:`~flask_patronlock.policy.entitlement` (never from comparing tiers or amounts here), and the next step when
    nothing is unlocked.

    :param tiers: tier titles by id (the identity's tiers, and those synced into ``patronlock_tiers``).
    :param settings: the creator's access policy (default: the defaults).
    :param currency: put before amounts (``PATRONLOCK_CURRENCY_SYMBOL``).
    """
    ent: Entitlement = entitlement(patron, settings or PolicySettings(), now)
    titles = [tiers[t].title for t in ent.tier_ids if t in tiers and tiers[t].title]
    if titles:
        what = f"a {' and '.join(titles)} patron"
        unlocked = f"posts for {' and '.join(titles)} and below are unlocked"
    elif ent.monthly_cents:
        amount = _money(ent.monthly_cents, currency)
        what = f"a patron at {amount} a month"
        unlocked = f"posts for {amount} a month and below are unlocked"
    else:
        what, unlocked = "a patron", "posts for patrons at your level are unlocked"
    until = f" until {ent.until:%B} {ent.until.day}, {ent.until.year}" if ent.until is not None else ""
    if ent.state == "active":
        return f"You're {what}: {unlocked}."
    if ent.state == "grace":
        if ent.basis == "cancelled_paid_period":
            return f"Your pledge has ended, but you paid through this period: {unlocked}{until}."
        if ent.basis.startswith("declined"):
            return (
                f"Patreon could not charge your last payment. You're still {what} for now and {unlocked}{until}; "
                "please update your payment method on Patreon."
            )
        return f"You're {what}: {unlocked}{until}."
    if ent.state == "restricted":
        return (
            "Patreon could not charge your payment, so patron posts are locked for now. Update your payment method "
            "on Patreon, then refresh your status here."
        )
    if ent.state == "former":
        return (
            "Your pledge to this creator has ended, so patron posts are locked. If you pledge again on Patreon, "
            "refresh your status here and they unlock at once."
        )
    if patron is None:
        return (
            "We found no pledge to this creator on that Patreon account, so nothing is unlocked yet. This site and "
            "Patreon are separate accounts: if you pledged with another Patreon account, connect that one instead; "
            "if you pledge now, refresh your status here afterwards."
        )
    if ent.basis == "free_trial_not_counted":
        return "Free trials don't unlock posts on this site; they unlock once Patreon charges your first payment."
    if ent.basis == "gifted_not_counted":
        return "Gifted memberships don't unlock posts on this site. Pledge on Patreon, then refresh your status here."
    if ent.basis in ("first_charge_pending", "refunded"):
        return (
            "Your pledge unlocks posts once Patreon charges your payment. When it has gone through, refresh your "
            "status here."
        )
    if ent.basis == "not_pledged":
        return (
            "That Patreon account follows this creator but has no paid pledge, so nothing is unlocked yet. Pledge on "
            "Patreon, then refresh your status here."
        )
    return "Your Patreon membership does not unlock posts on this site right now."


def _send(signal: Any, **kwargs: Any) -> None:
    state = get_state()
    signals.send_action(signal, state.app, strict=bool(state.app.config["PATRONLOCK_STRICT_SIGNALS"]), **kwargs)


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


@blueprint.after_request
def _no_store(response: Response) -> Response:
    # Pages about a user's account are private, and the callback URL carries a code: keep both out of caches and
    # out of the Referer sent to anything the page loads.
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


@blueprint.context_processor
def _template_globals() -> dict[str, Any]:
    return {"patronlock_csrf_token": generate_csrf}


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
        if error == "access_denied":
            raise ConnectProblem(
                "access_denied",
                "You cancelled on Patreon",
                "Patreon says you did not allow this site to see your Patreon account, so nothing was changed.",
                "To unlock patron posts here, try again and choose Allow on Patreon.",
                code=403,
                actions=(_try_again(flow.flow, flow.next_url),),
            )
        log.warning("Patreon authorize answered error=%.64s", error)
        raise ConnectProblem(
            "authorize_error",
            "Patreon did not complete the sign-in",
            "Patreon sent you back with an error instead of a sign-in. Nothing was changed.",
            "Try again; if it keeps happening, please tell the site's owner.",
            code=502,
            actions=(_try_again(flow.flow, flow.next_url),),
        )
    code = request.args.get("code")
    if not code:
        raise ConnectProblem(
            "no_code",
            "Patreon did not complete the sign-in",
            "Patreon sent you back without a sign-in code. Nothing was changed.",
            "Try again from this site.",
            actions=(_try_again(flow.flow, flow.next_url),),
        )

    if flow.flow == "login" and not current_app.config["PATRONLOCK_LOGIN_ENABLED"]:
        raise NotFound()
    if flow.flow == "connect":
        user = _current_user()
        if not user.is_authenticated or _user_id(user) != flow.user_id:
            raise ConnectProblem(
                "session_changed",
                "You were logged out meanwhile",
                "The account that started connecting Patreon is no longer the one logged in here, so nothing was "
                "linked.",
                "Log in to your account here, then connect Patreon again.",
                code=403,
                actions=(("Connect Patreon", url_for("patronlock.connect")),),
            )

    state.token_cipher(_STORING_TOKENS)  # the keys may have gone since the start: refuse before the code is spent
    client = interactive_client(state, "connecting with Patreon")
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
        raise ConnectProblem(
            "linked_elsewhere",
            "That Patreon account is connected to another account here",
            "The Patreon account you approved is already connected to a different account on this site, so it was "
            "not connected to this one.",
            "Log in to that other account and unlink Patreon there first, or connect a different Patreon account.",
            code=409,
            actions=(("Your Patreon status", url_for("patronlock.status")),),
        ) from None
    member, patron = accounts.apply_identity(identity, observed_at=observed_at)
    _signal_link(result, user, identity, patron, "connect")
    viewer_changed()  # every worker reads this viewer afresh on their next page
    label = _account_label(identity.user)
    verb = "Reconnected" if result.outcome == "reauthorized" else "Connected"
    described = _describe(patron, member, observed_at)
    flash(f"{verb} your Patreon account{f' ({label})' if label else ''}. {described}", "patronlock")
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
            "This account is disabled",
            "Your Patreon account is connected to an account here that is not active, so you were not logged in.",
            "Please contact the site's owner.",
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
                "Please log in first",
                "Your Patreon account was connected to an account here because they share an email address. For "
                "your safety, Log in with Patreon opens that account only after you have connected Patreon from it "
                "yourself.",
                "Log in to your account here the usual way, then connect Patreon from your account; after that, "
                "Log in with Patreon works directly.",
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
                    "Please log in first",
                    "An account here uses the email address of your Patreon account, but Patreon has not verified "
                    "that address, so the two cannot be connected automatically.",
                    "Log in to your account here (or verify your email on Patreon), then connect Patreon from your "
                    "account.",
                    code=409,
                    actions=_login_first_actions(flow.next_url),
                )
            auto_link = bool(current_app.config["PATRONLOCK_AUTO_LINK_VERIFIED_EMAIL"])
            if not auto_link or not extension.vouches_for(email or "", _user_id(local)):
                # Auto-linking needs both addresses verified: Patreon's, and the local one by this site (anyone can
                # register someone else's address here and wait for them to log in with Patreon).
                raise ConnectProblem(
                    "email_exists",
                    "You already have an account here",
                    "An account on this site already uses the email address of your Patreon account. For your "
                    "safety it is not connected to Patreon without you logging in.",
                    "Log in to that account the usual way, then connect Patreon from your account; after that, "
                    "Log in with Patreon works directly.",
                    code=409,
                    actions=_login_first_actions(flow.next_url),
                )
            user, via = local, "email"
        else:
            creator = extension._user_creator
            if creator is None:
                raise ConnectProblem(
                    "signup_not_configured",
                    "Sign-up with Patreon is not available here",
                    "Your Patreon account is not connected to an account on this site, and this site does not create "
                    "accounts from Patreon.",
                    "Create an account on this site (or log in), then connect Patreon from your account.",
                    code=403,
                    actions=_login_first_actions(flow.next_url),
                )
            user = creator(patreon_user)
            if user is None:
                raise ConnectProblem(
                    "signup_refused",
                    "An account could not be created",
                    "This site did not create an account from your Patreon account.",
                    "Create an account on this site (or log in), then connect Patreon from your account.",
                    code=403,
                    actions=_login_first_actions(flow.next_url),
                )
            created = True

    try:
        result = accounts.link(_user_id(user), patreon_user, tokens)
    except AlreadyLinked:  # another login of the same Patreon account linked it a moment ago
        raise ConnectProblem(
            "linked_elsewhere",
            "That Patreon account is connected to another account here",
            "The Patreon account you approved was just connected to a different account on this site.",
            "Try logging in with Patreon again.",
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
    first = "Welcome! Your account was created from" if created else "Logged in with"
    flash(f"{first} your Patreon account{f' ({label})' if label else ''}. {described}", "patronlock")
    return redirect(_landing(flow.next_url))


def _login_first_actions(next_url: str | None) -> tuple[tuple[str, str], ...]:
    """A "Log in" link to Flask-Login's login view that comes back to connect Patreon, when a login view is set."""
    view = getattr(_login_manager(), "login_view", None)
    if not view:
        return ()
    from flask_login import login_url

    connect = url_for("patronlock.connect", **_next_args(next_url))
    return (("Log in", login_url(view, next_url=connect)),)


# -- unlink, refresh, status -----------------------------------------------------------------------------------------


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
    _check_csrf()
    accounts = get_accounts()
    removed = accounts.unlink(_user_id(user), reason="user")
    if removed is None:
        flash("No Patreon account was connected.", "patronlock")
    else:
        _send(signals.patron_unlinked, user_id=removed.user_id, patreon_user_id=removed.patreon_user_id, reason="user")
        viewer_changed()
        flash(
            "Disconnected your Patreon account. Patron posts are locked for this account until you connect Patreon "
            "again.",
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
    _check_csrf()
    accounts = get_accounts()
    user_id = _user_id(user)
    back = _landing(request.form.get("next")) if request.form.get("next") else url_for(".status")
    interval = float(current_app.config["PATRONLOCK_STATUS_REFRESH_INTERVAL"])
    try:
        previous = accounts.claim_status_refresh(user_id, interval=interval)
    except NotLinked:
        flash("Connect your Patreon account first; then your status can be refreshed.", "patronlock")
        return redirect(url_for(".status"))
    except RefreshTooSoon as exc:
        minutes = max(1, -(-int(exc.retry_after) // 60))
        flash(
            f"Your status was refreshed a moment ago. You can refresh it again in {minutes} "
            f"minute{'s' if minutes != 1 else ''}; Patreon changes also arrive here on their own.",
            "patronlock",
        )
        return redirect(back)
    try:
        identity = accounts.identity(user_id)
    except NeedsReauthorization:
        flash(
            "Patreon asks you to connect your account again before your status can be read. Nothing about your "
            "access changed.",
            "patronlock",
        )
        return redirect(url_for(".status"))
    except TokenDecryptionError:
        log.error("the stored Patreon tokens of local user %s cannot be decrypted (PATRONLOCK_TOKEN_KEYS?)", user_id)
        flash("Please connect your Patreon account again to refresh your status.", "patronlock")
        return redirect(url_for(".status"))
    except PatreonError as exc:
        if not isinstance(exc, RateLimited):
            accounts.release_status_refresh(user_id, previous)
        raise _patreon_problem(exc, "refresh", None) from None
    now = _now()
    member, patron = accounts.apply_identity(identity, observed_at=now)
    viewer_changed()  # also when nothing changed: no signal then, but the viewer asked to see the fresh state
    described = _describe(patron, member, now)
    flash(f"Refreshed your Patreon status. {described}", "patronlock")
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
