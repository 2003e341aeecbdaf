"""The setup checklist and its steps: app credentials, the creator's Patreon connection, the campaign, its tiers.

The creator connects their own Patreon account with the campaign scopes (:data:`PATRONLOCK_CREATOR_SCOPES`) through
an OAuth flow of this blueprint, which reuses :mod:`flask_patronlock.oauth` (a session-bound, single-use ``state`` and
PKCE) with the flow name ``creator``; its callback is ``/setup/callback`` under the settings page's prefix. The tokens
are stored encrypted (:mod:`flask_patronlock.creator`) and preferred over ``PATRONLOCK_CREATOR_ACCESS_TOKEN``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, current_app, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from .. import config as _config
from .. import oauth
from ..creator import disconnect_creator, get_creator_connection, save_creator_tokens
from ..errors import ConfigurationError, TokenDecryptionError
from ..health import health_report
from ..i18n import N_, day_text, gettext, moment_text, ngettext
from ..patreon.errors import PatreonError
from ..patreon.types import CampaignSnapshot
from ..settings import set_campaign_id
from ..state import get_state
from .blueprint import admin_user_id, nav, route

__all__ = ["Step", "checklist", "creator_redirect_uri", "day_text", "moment_text", "site_url"]

log = logging.getLogger("flask_patronlock.admin")

CALLBACK_ENDPOINT = "patronlock_admin.creator_callback"

nav("patronlock_admin.setup", N_("Setup"))


@dataclass(frozen=True, slots=True)
class Step:
    """One line of the setup checklist."""

    key: str
    title: str
    done: bool
    #: what is there now, in one sentence.
    detail: str
    #: the exact next step when not done (or a hint when done).
    next_step: str = ""
    #: template fragment name of the step's buttons (``patronlock/admin/steps/<key>.html``), if any.
    actions: bool = True
    #: what the step's buttons need to know about it, in any language (``registered``, ``paused``, ``no_campaign``).
    tag: str = ""


def site_url(app: Flask, endpoint: str, **values: Any) -> str:
    """An absolute URL of this site for Patreon to call back: on the origin (scheme and host) of
    ``PATRONLOCK_REDIRECT_URI``, else built from ``SERVER_NAME``. Never from the request's ``Host`` header.

    :raises ConfigurationError: neither is set.
    """
    cfg = app.config
    patrons = cfg.get("PATRONLOCK_REDIRECT_URI")
    server: str | None
    if patrons:
        parts = urlsplit(str(patrons))
        server, scheme = parts.netloc, parts.scheme or "https"
        root = "/"
    else:
        server, scheme = cfg.get("SERVER_NAME"), cfg.get("PREFERRED_URL_SCHEME") or "http"
        root = cfg.get("APPLICATION_ROOT") or "/"
    if not server:
        raise ConfigurationError(
            "Neither PATRONLOCK_REDIRECT_URI nor SERVER_NAME is set, but Patreon needs this site's address to call it "
            "back. Set one of them (PATRONLOCK_CREATOR_REDIRECT_URI sets the creator connect's callback alone)."
        )
    adapter = app.url_map.bind(server, script_name=root, url_scheme=scheme)
    return adapter.build(endpoint, values, force_external=True)


def creator_redirect_uri(app: Flask) -> str:
    """Where Patreon sends the creator back: ``PATRONLOCK_CREATOR_REDIRECT_URI``; else the settings page's callback
    on the site's origin (:func:`site_url`).

    :raises ConfigurationError: none of ``PATRONLOCK_CREATOR_REDIRECT_URI``, ``PATRONLOCK_REDIRECT_URI`` and
        ``SERVER_NAME`` is set.
    """
    configured = app.config.get("PATRONLOCK_CREATOR_REDIRECT_URI")
    if configured:
        return str(configured)
    return site_url(app, CALLBACK_ENDPOINT)


def _missing_scopes(scope: str) -> list[str]:
    wanted = _config.as_list(current_app.config["PATRONLOCK_CREATOR_SCOPES"], "PATRONLOCK_CREATOR_SCOPES")
    have = set(scope.split())
    return [s for s in wanted if s not in have]


def _stopped_text(when: datetime | None, now: datetime, fallback: bool) -> str:
    """Patreon stopped accepting the creator's connection (``on 4 December``, with the year when it is not this
    year's), and what that means meanwhile."""
    if when is None:
        if fallback:
            return gettext("Patreon stopped accepting the site's connection; the token in "
                           "PATRONLOCK_CREATOR_ACCESS_TOKEN is used meanwhile.")
        return gettext("Patreon stopped accepting the site's connection. Until you reconnect, changes on Patreon do "
                       "not reach this site, and nobody loses access because of it.")
    day = day_text(when, now=now)
    if fallback:
        return gettext("Patreon stopped accepting the site's connection on %(day)s; the token in "
                       "PATRONLOCK_CREATOR_ACCESS_TOKEN is used meanwhile.", day=day)
    return gettext("Patreon stopped accepting the site's connection on %(day)s. Until you reconnect, changes on "
                   "Patreon do not reach this site, and nobody loses access because of it.", day=day)


def checklist(*, live: bool = False) -> list[Step]:
    """The setup checklist, in order, from the configuration and the stored settings; ``live`` also asks Patreon
    about the webhook's health (cached for a minute per process)."""
    st = get_state()
    cfg = current_app.config
    steps: list[Step] = []

    missing = [key for key in ("PATRONLOCK_CLIENT_ID", "PATRONLOCK_CLIENT_SECRET", "PATRONLOCK_TOKEN_KEYS")
               if not cfg.get(key)]
    try:
        callback = creator_redirect_uri(st.app)
    except ConfigurationError:
        callback = None
        missing.append("PATRONLOCK_REDIRECT_URI")
    if missing:
        credentials = Step(
            "credentials",
            gettext("App credentials"),
            False,
            gettext("Missing from the app's configuration: %(settings)s.", settings=", ".join(missing)),
            gettext("Register a client at %(url)s, then set %(settings)s in the app's configuration (see the "
                    "configuration docs) and restart the app. This is the one step that needs the server: secrets "
                    "never go through a web page.",
                    url="https://www.patreon.com/portal/registration/register-clients", settings=", ".join(missing)),
        )
    else:
        credentials = Step(
            "credentials",
            gettext("App credentials"),
            True,
            gettext("The Patreon API client's id and secret, a key to encrypt tokens, and the redirect URIs are "
                    "configured."),
            gettext("Patreon must know this redirect URI for the creator's connection: %(url)s", url=callback)
            if callback
            else "",
        )
    steps.append(credentials)

    connection = get_creator_connection(st)
    config_token = bool(cfg.get("PATRONLOCK_CREATOR_ACCESS_TOKEN"))
    creator_title = gettext("Creator account connected")
    if connection is not None and not connection.needs_reauth and connection.origin == "config":
        steps.append(
            Step(
                "creator",
                creator_title,
                True,
                gettext("Using the creator's token from the app's configuration; the site renews it when Patreon "
                        "asks."),
                gettext("Optional: connect your account here instead."),
            )
        )
    elif connection is not None and not connection.needs_reauth:
        gaps = _missing_scopes(connection.scope)
        who = connection.full_name or connection.email or gettext(
            "Patreon user %(id)s", id=connection.patreon_user_id
        )
        steps.append(
            Step(
                "creator",
                creator_title,
                not gaps,
                gettext("Connected as %(who)s. Patreon did not grant: %(scopes)s.", who=who, scopes=", ".join(gaps))
                if gaps
                else gettext("Connected as %(who)s.", who=who),
                gettext("Connect again and allow every permission Patreon asks for.") if gaps else "",
            )
        )
    elif connection is not None:
        fallback = config_token and connection.origin != "config"
        steps.append(
            Step(
                "creator",
                creator_title,
                False,
                _stopped_text(connection.failed_at, st.store.clock(), fallback),
                gettext("Reconnect the creator account here, or set new tokens in PATRONLOCK_CREATOR_ACCESS_TOKEN "
                        "and PATRONLOCK_CREATOR_REFRESH_TOKEN.")
                if connection.origin == "config"
                else gettext("Reconnect the creator account here."),
            )
        )
    else:
        steps.append(
            Step(
                "creator",
                creator_title,
                config_token,
                gettext("Using the token set in PATRONLOCK_CREATOR_ACCESS_TOKEN.")
                if config_token
                else gettext("No creator account is connected, so the campaign's patrons cannot be read."),
                gettext("Optional: connect your account here instead, so the token is refreshed for you.")
                if config_token
                else gettext("Connect your Patreon creator account (you are asked to allow reading your campaign "
                             "and its members, and managing its webhooks)."),
            )
        )

    snapshot = st.settings.current()
    campaign = snapshot.campaign_id or cfg.get("PATRONLOCK_CAMPAIGN_ID")
    tiers = sorted(snapshot.tiers.values(), key=lambda t: (t.amount_cents, t.id))
    if campaign:
        names = ", ".join(t.title or gettext("(untitled)") for t in tiers)
        if snapshot.campaign_id:
            detail = (
                gettext("The campaign is chosen here; its tiers are known: %(tiers)s.", tiers=names)
                if tiers
                else gettext("The campaign is chosen here; its tiers have not been read yet.")
            )
        else:
            detail = (
                gettext("The campaign is set in the site's configuration; its tiers are known: %(tiers)s.",
                        tiers=names)
                if tiers
                else gettext("The campaign is set in the site's configuration; its tiers have not been read yet.")
            )
        steps.append(
            Step(
                "campaign",
                gettext("Campaign chosen"),
                bool(tiers),
                detail,
                "" if tiers else gettext("Read the campaign's tiers, so locks can name them."),
            )
        )
    else:
        steps.append(
            Step(
                "campaign",
                gettext("Campaign chosen"),
                False,
                gettext("No campaign is chosen yet."),
                gettext("Connect your creator account first, then choose the campaign whose patrons unlock this "
                        "site."),
                tag="no_campaign",
            )
        )

    steps.extend(_sync_steps(live))
    return steps


def _sync_steps(live: bool) -> list[Step]:
    """The webhook and last-sync steps (:mod:`flask_patronlock.admin.syncpages`)."""
    from .syncpages import webhook_steps

    return webhook_steps(live=live)


@route("/setup")
def setup() -> ResponseReturnValue:
    """The setup checklist."""
    steps = checklist(live=True)
    return render_template(
        "patronlock/admin/setup.html",
        steps=steps,
        done=sum(1 for s in steps if s.done),
        connection=get_creator_connection(get_state()),
        health=health_report(get_state().app),
    )


# -- the creator's connection -----------------------------------------------------------------------------------------


@route("/setup/connect", methods=("POST",))
def creator_connect() -> ResponseReturnValue:
    """Start the creator's OAuth connect (a POST, so another site cannot start it in the admin's browser)."""
    st = get_state()
    cfg = current_app.config
    try:
        redirect_uri = creator_redirect_uri(st.app)
        st.token_cipher("storing your Patreon connection")  # fail here, before Patreon, when no key can store it
        client = st.client(purpose="connecting the creator's Patreon account")
    except ConfigurationError as exc:
        flash(str(exc), "error")
        return redirect(url_for(".setup"))
    oauth_state, challenge = oauth.begin_flow(
        "creator",
        next_url=None,
        user_id=admin_user_id(),
        now=st.store.clock(),
        pkce=bool(cfg["PATRONLOCK_USE_PKCE"]),
    )
    scopes = _config.as_list(cfg["PATRONLOCK_CREATOR_SCOPES"], "PATRONLOCK_CREATOR_SCOPES")
    try:
        url = client.authorization_url(redirect_uri, oauth_state, scopes, code_challenge=challenge)
    finally:
        client.close()
    return redirect(url, 302)


_STATE_TEXTS = {
    "missing": N_("Patreon sent you back without the check this site needs to trust the answer. Nothing was changed; "
                  "connect again."),
    "no_session": N_("This browser no longer has the connection that was started (cookies blocked, or it took long). "
                     "Nothing was changed; connect again."),
    "mismatch": N_("The answer from Patreon does not belong to a connection started from this page. Nothing was "
                   "changed; connect again."),
    "reused": N_("This answer from Patreon was already used. Nothing was changed; connect again."),
    "expired": N_("Connecting took longer than 10 minutes. Nothing was changed; connect again."),
}


@route("/setup/callback")
def creator_callback() -> ResponseReturnValue:
    """Patreon sends the creator back here: check the state, exchange the code, store the tokens (encrypted)."""
    st = get_state()
    try:
        flow = oauth.take_flow(request.args.get("state"), now=st.store.clock(), flows=("creator",))
    except oauth.StateProblem as exc:
        flash(gettext(_STATE_TEXTS.get(exc.kind, _STATE_TEXTS["mismatch"])), "error")
        return redirect(url_for(".setup"))
    if flow.user_id != admin_user_id():
        flash(gettext("The connection was started by another account here. Nothing was changed; connect again."),
              "error")
        return redirect(url_for(".setup"))
    error = request.args.get("error")
    if error or not request.args.get("code"):
        if error == "access_denied":
            flash(gettext("You did not allow access on Patreon, so nothing was connected."), "error")
        else:
            log.warning("the creator's Patreon authorization answered error=%.64s", error or "(no code)")
            flash(gettext("Patreon did not complete the connection. Nothing was changed; try again."), "error")
        return redirect(url_for(".setup"))
    try:  # the keys may have gone since the connect started: refuse before the code is spent
        st.token_cipher("storing your Patreon connection")
    except ConfigurationError as exc:
        flash(gettext("%(problem)s Nothing was connected; connect again once it is set.", problem=str(exc)), "error")
        return redirect(url_for(".setup"))
    client = st.client(purpose="connecting the creator's Patreon account")
    client.max_retries = 1
    try:
        tokens = client.exchange_code(request.args["code"], creator_redirect_uri(st.app), flow.code_verifier)
        identity = client.identity(access_token=tokens.access_token)
    except PatreonError as exc:
        log.warning("connecting the creator's account failed: %s: %s", type(exc).__name__, exc)
        flash(gettext("Patreon did not answer as expected, so nothing was connected. Please try again in a minute."),
              "error")
        return redirect(url_for(".setup"))
    finally:
        client.close()
    connection = save_creator_tokens(st, identity.user, tokens, by=admin_user_id())
    who = connection.full_name or connection.email or connection.patreon_user_id
    flash(gettext("Connected your Patreon creator account (%(who)s).", who=who), "success")
    if not st.settings.current().campaign_id and not current_app.config.get("PATRONLOCK_CAMPAIGN_ID"):
        return redirect(url_for(".choose_campaign"))
    gaps = _missing_scopes(connection.scope)
    if gaps:
        flash(gettext("Patreon did not grant %(scopes)s; some features will not work until you connect again.",
                      scopes=", ".join(gaps)), "error")
    return redirect(url_for(".setup"))


@route("/setup/disconnect", methods=("POST",))
def creator_disconnect() -> ResponseReturnValue:
    """Forget the creator's stored tokens."""
    if disconnect_creator(get_state(), by=admin_user_id()):
        flash(gettext("Disconnected your Patreon creator account from this site."), "success")
    else:
        flash(gettext("No creator account was connected here."), "info")
    return redirect(url_for(".setup"))


# -- the campaign and its tiers ---------------------------------------------------------------------------------------


#: what :func:`_patreon_failure` says Patreon did not answer to (the English phrase is also the log's).
_DOING_TEXTS = {
    "listing your campaigns": N_("Patreon did not answer while listing your campaigns. Nothing was changed; try again "
                                 "in a minute."),
    "reading your tiers": N_("Patreon did not answer while reading your tiers. Nothing was changed; try again in a "
                             "minute."),
}


def _patreon_failure(exc: Exception, doing: str) -> None:
    if isinstance(exc, ConfigurationError):
        flash(str(exc), "error")
    elif isinstance(exc, TokenDecryptionError):
        flash(gettext("The stored creator token cannot be decrypted with PATRONLOCK_TOKEN_KEYS: connect again."),
              "error")
    else:
        log.warning("%s failed: %s: %s", doing, type(exc).__name__, exc)
        flash(gettext(_DOING_TEXTS[doing]) if doing in _DOING_TEXTS else
              f"Patreon did not answer while {doing}. Nothing was changed; try again in a minute.", "error")


@route("/setup/campaign", methods=("GET", "POST"))
def choose_campaign() -> ResponseReturnValue:
    """List the connected creator's campaigns; choosing one stores it and reads its tiers."""
    st = get_state()
    campaigns: list[CampaignSnapshot] = []
    try:
        client = st.creator_client("listing your campaigns")
        try:
            campaigns = client.campaigns()
        finally:
            client.close()
    except (ConfigurationError, TokenDecryptionError, PatreonError) as exc:
        _patreon_failure(exc, "listing your campaigns")
        return redirect(url_for(".setup"))
    current = st.campaign_id_or_none()
    if request.method == "POST":
        chosen = request.form.get("campaign_id", "")
        match = next((c for c in campaigns if c.id == chosen), None)
        if match is None:
            flash(gettext("Choose one of your campaigns."), "error")
        else:
            set_campaign_id(match.id, by=admin_user_id())
            _store_tiers(match)
            flash(gettext("This site now unlocks for the patrons of %(campaign)s.",
                          campaign=match.creation_name or match.id), "success")
            return redirect(url_for(".setup"))
    return render_template("patronlock/admin/campaign.html", campaigns=campaigns, current=current)


def _store_tiers(campaign: CampaignSnapshot) -> None:
    st = get_state()
    if not campaign.tiers:  # the list may come without tiers: read the campaign itself
        client = st.creator_client("reading your tiers")
        try:
            campaign = client.campaign(campaign.id)
        finally:
            client.close()
    st.store.replace_tiers(campaign.id, campaign.tiers)
    st.settings.invalidate()
    names = ", ".join(t.title or t.id for t in sorted(campaign.tiers, key=lambda t: t.amount_cents))
    flash(ngettext("Read %(num)d tier: %(tiers)s.", "Read %(num)d tiers: %(tiers)s.", len(campaign.tiers),
                   tiers=names), "success")


@route("/setup/tiers", methods=("POST",))
def refresh_tiers() -> ResponseReturnValue:
    """Read the campaign's tiers again now (a sync does it too)."""
    st = get_state()
    try:
        campaign_id = st.campaign_id("reading your tiers")
        client = st.creator_client("reading your tiers")
        try:
            campaign = client.campaign(campaign_id)
        finally:
            client.close()
        _store_tiers(campaign)
    except (ConfigurationError, TokenDecryptionError, PatreonError) as exc:
        _patreon_failure(exc, "reading your tiers")
    back = url_for(".locks") if request.form.get("back") == "locks" else url_for(".setup")
    return redirect(back)
