"""The error pages of the connect views: :class:`ConnectProblem`, and the problem for each thing that can go wrong
(the state check, a Patreon failure, a missing setting, an expired form)."""

from __future__ import annotations

from typing import Any

from flask import Response, render_template, url_for
from werkzeug.exceptions import HTTPException

from ..errors import ConfigurationError
from ..i18n import N_, gettext
from ..patreon.errors import InvalidGrant, PatreonError, RateLimited, TokenError
from .common import blueprint, log

PROBLEM_TEMPLATE = "patronlock/connect/problem.html"


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
        return (gettext("Back to your Patreon status"), url_for("patronlock.status"))
    endpoint = "patronlock.login" if flow == "login" else "patronlock.connect"
    args: dict[str, Any] = {"next": next_url} if next_url else {}
    return (gettext("Try again"), url_for(endpoint, **args))


def _state_problem(kind: str) -> ConnectProblem:
    texts = {
        "missing": N_("Patreon sent you back without the check this site needs to trust the answer."),
        "no_session": N_(
            "This site no longer remembers starting a Patreon sign-in in this browser: the page may have "
            "been open too long, or cookies are blocked for this site."
        ),
        "mismatch": N_("The answer from Patreon does not belong to a sign-in started in this browser."),
        "reused": N_("This Patreon sign-in link was already used."),
        "expired": N_("The Patreon sign-in took longer than 10 minutes."),
    }
    return ConnectProblem(
        f"state_{kind}",
        gettext("That Patreon sign-in can't be finished"),
        gettext(texts.get(kind, texts["mismatch"])) + " " + gettext("Nothing was changed."),
        gettext("Start again from this site (allow cookies for it), and finish on Patreon within 10 minutes."),
        actions=((gettext("Start again"), url_for("patronlock.status")),),
    )


@blueprint.errorhandler(ConfigurationError)
def _not_configured(exc: ConfigurationError) -> Response:
    """A setting the views need is missing or invalid (no token keys, no redirect URI, no client id ...): a page that
    tells the visitor nothing was changed and whom to tell, the fix folded away for the owner, and the log says it
    too. Not a bare 500."""
    log.error("connecting with Patreon is not configured: %s", exc)
    return ConnectProblem(
        "not_configured",
        gettext("Connecting Patreon isn't set up on this site yet"),
        gettext("This site can't connect Patreon accounts until its owner finishes setting it up. Nothing was "
        "changed."),
        gettext("Please tell the site's owner; connecting with Patreon will work once they have."),
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
            gettext("Patreon asked us to slow down"),
            gettext("Too many requests went to Patreon just now. Nothing was changed."),
            gettext("Please wait a minute, then try again."),
            code=503,
            actions=(again,),
            retry_after=max(exc.retry_after, 30.0),
        )
    if isinstance(exc, InvalidGrant):
        return ConnectProblem(
            "code_rejected",
            gettext("Patreon did not accept the sign-in"),
            gettext("Patreon said the sign-in code was expired or already used. Nothing was changed."),
            gettext("Start again; it only takes a moment."),
            actions=(again,),
        )
    if isinstance(exc, TokenError) and exc.status_code < 500:
        return ConnectProblem(
            "client_rejected",
            gettext("This site's Patreon connection is misconfigured"),
            gettext("Patreon refused this site's credentials. Nothing was changed."),
            gettext("Please tell the site's owner; connecting with Patreon will work once they fix the configuration."),
            code=502,
        )
    return ConnectProblem(
        "patreon_unavailable",
        gettext("Patreon is not answering right now"),
        gettext("We could not reach Patreon, or it answered with an error. Nothing was changed."),
        gettext("Patreon is probably having a short outage: please try again in a few minutes."),
        code=502,
        actions=(again,),
    )


def _csrf_problem(reason: str | None) -> ConnectProblem:
    """The page for a POST whose CSRF token did not check out (see :func:`flask_patronlock.csrf.check_csrf`)."""
    return ConnectProblem(
        "csrf",
        gettext("This form has expired"),
        gettext("The form's security token did not check out (%(reason)s). Nothing was changed.",
                reason=reason if reason is not None else "invalid"),
        gettext("Go back, reload the page, and try again."),
        actions=((gettext("Back to your Patreon status"), url_for("patronlock.status")),),
    )
