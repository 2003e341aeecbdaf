"""Call-to-action banners: what a viewer who may not see something reads, and the one next step to take.

Each denying reason has a template, ``patronlock/banners/<reason>.html`` (an app overrides one by putting a template of
the same path in its own ``templates/`` folder), and a text the creator may edit, for every lock or for one lock
(:func:`flask_patronlock.settings.set_banner_text`), of at most :data:`MAX_TEXT_LENGTH` characters, with ``**bold**``,
``*italics*`` and ``[links](https://...)`` (:func:`render_text`) and placeholders filled in here:

``{tier}``
    the title of the tier to pledge or upgrade to (the cheapest one that satisfies the lock), else the amount;
``{amount}``
    the amount asked for: monthly for tier and amount locks, in total for lifetime locks (e.g. ``$5.00``);
``{creator}``
    ``PATRONLOCK_CREATOR_NAME``, else "the creator";
``{pledge_url}``
    a Patreon checkout link that preselects that tier (see :func:`pledge_link`);
``{connect_url}``, ``{login_url}``, ``{billing_url}``
    where to link a Patreon account, sign in, and update a payment method on Patreon;
``{date}``, ``{months}``
    when a drip lock opens and after how many months, or the cut-off date of a "patrons before" lock;
``{public_date}``
    when an early-access lock opens to everyone (empty for other locks). Unless the text uses it, the banner adds
    "Patrons can see this now; it opens to everyone on {public_date}." below the message (``early_access``).

The context of each banner goes through the ``banner-context`` filter (:data:`flask_patronlock.signals.banner_context`)
before rendering, and the rendered HTML through the ``banner-html`` filter
(:data:`flask_patronlock.signals.banner_html`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urljoin, urlsplit

import nh3
from flask import current_app, g, has_request_context, jsonify, render_template, request, url_for
from jinja2 import Template
from markupsafe import Markup, escape
from werkzeug.routing import BuildError

from . import i18n, signals
from .i18n import N_, gettext
from .insight import NOT_DENIALS, anonymous_key, record_banner_view
from .patreon.types import TierSnapshot
from .policy import Decision
from .state import PatronLockState, get_state
from .viewers import _G_USER, _G_VIEWER

if TYPE_CHECKING:
    from flask import Response

    from .locks import Lock, LockedError
    from .settings_cache import SettingsSnapshot

__all__ = [
    "ACTIONS",
    "DEFAULT_TEXTS",
    "MAX_TEXT_LENGTH",
    "PLACEHOLDERS",
    "banner_context",
    "check_text",
    "fill",
    "pledge_link",
    "render_banner",
    "render_text",
]

#: The built-in text of each banner (the creator may replace any of them). English; each is marked for the
#: catalogue (``N_``) and shown in the site's locale (:func:`flask_patronlock.i18n.gettext`). A text the creator
#: wrote is shown as written.
DEFAULT_TEXTS: dict[str, str] = {
    "anonymous": N_("This is for patrons of {creator}. Log in to see it."),
    "not_linked": N_(
        "This is for patrons of {creator}. Your account on this site and your Patreon account are separate: "
        "connect your Patreon account once, and your membership unlocks it."
    ),
    "not_a_patron": N_("This is for patrons of {creator} at {tier} or higher. Pledge {tier} on Patreon to see it."),
    "amount_too_low": N_(
        "This is for patrons of {creator} at {tier} ({amount} a month) or higher. Upgrade your pledge "
        "to {tier} on Patreon to see it."
    ),
    "payment_declined": N_(
        "Your last payment to {creator} on Patreon was declined. Update your payment method on "
        "Patreon to see this again."
    ),
    "former_patron": N_("Your membership of {creator} has ended. Rejoin at {tier} on Patreon to see this again."),
    "not_patron_at_date": N_(
        "This was for those who were already patrons of {creator} on {date}. Thank you for "
        "your support: the rest of the patron content is yours."
    ),
    "drip_not_reached": N_("This unlocks for you on {date}. Keep your pledge and it opens by itself."),
    "lifetime_too_low": N_(
        "This is for patrons who have supported {creator} with {amount} in total. Every month of "
        "your pledge on Patreon brings you closer."
    ),
    "lock_unavailable": N_(
        "This isn't available at the moment: {creator} is changing who can see it. Please look again later."
    ),
    "wrong_tier": N_(
        "This is for patrons of {creator} at {tier}. Your pledge is for another tier: change it to {tier} "
        "on Patreon to see this."
    ),
    "not_a_member": N_(
        "This is for members of {creator}, free or paid. Join {creator} on Patreon (a free membership "
        "is enough) to see it."
    ),
}

#: The built-in texts that read differently for a lock on exact tiers (``tier_match="exact"``), which is not "this
#: tier or higher"; a text the creator wrote applies to every lock.
_EXACT_TEXTS: dict[str, str] = {
    "not_a_patron": N_("This is for patrons of {creator} at {tier}. Pledge {tier} on Patreon to see it."),
}

#: The one next step of each reason: (button label, the context key of its link); ``None`` where nothing can be done
#: now (pledged too late, or wait for the drip). The labels are English, shown in the site's locale.
ACTIONS: dict[str, tuple[str, str] | None] = {
    "anonymous": (N_("Log in"), "login_url"),
    "not_linked": (N_("Connect your Patreon account"), "connect_url"),
    "not_a_patron": (N_("Become a patron on Patreon"), "pledge_url"),
    "amount_too_low": (N_("Upgrade on Patreon"), "pledge_url"),
    "payment_declined": (N_("Update your payment method on Patreon"), "billing_url"),
    "former_patron": (N_("Rejoin on Patreon"), "pledge_url"),
    "not_patron_at_date": None,
    "drip_not_reached": None,
    "lifetime_too_low": (N_("Support on Patreon"), "pledge_url"),
    "wrong_tier": (N_("Change your tier on Patreon"), "pledge_url"),
    "not_a_member": (N_("Join for free on Patreon"), "pledge_url"),
    "lock_unavailable": None,
}

#: The placeholders a banner text may use.
PLACEHOLDERS: frozenset[str] = frozenset(
    {
        "tier", "amount", "creator", "pledge_url", "connect_url", "login_url", "billing_url", "date", "months",
        "public_date",
    }
)

_PLACEHOLDER = re.compile(r"\{(\w+)\}")

#: The longest banner text accepted, in characters as typed (formatting and placeholders included).
MAX_TEXT_LENGTH = 500

#: The placeholders that hold a link (a banner's own link may go to one of them).
LINK_PLACEHOLDERS: frozenset[str] = frozenset({"pledge_url", "connect_url", "login_url", "billing_url"})

# The formatting a banner text may use: [a link](https://...), **bold**, *italics* (nested: a bold link, italics in
# bold); everything else, HTML included, is text.
_INLINE = re.compile(
    r"\[(?P<label>[^\[\]\n]+)\]\((?P<href>[^()\s]+)\)"
    r"|\*\*(?=[^*\s])(?P<bold>(?:\[[^\[\]\n]+\]\([^()\s]+\)|[^*]|\*(?!\*))+?)(?<=[^*\s])\*\*"
    r"|\*(?=[^*\s])(?P<em>(?:\*\*[^*]+\*\*|\[[^\[\]\n]+\]\([^()\s]+\)|[^*])+?)(?<=\S)\*"
)
_LINK_SCHEMES = ("http://", "https://", "mailto:")
_HOST = re.compile(r"[\w-]+(?:\.[\w-]+)*\.?(?::\d{1,5})?")
#: what nh3 lets through: the tags the formatting makes, ``href`` on links only, web and mail links only.
_ALLOWED_TAGS = {"a", "strong", "em"}


def _safe_href(url: str) -> bool:
    """A web link to a host (no user name in it), a mail link, or a page of this site (``/path``, never ``//host``)."""
    lowered = url.lower()
    if lowered.startswith("mailto:"):
        return len(lowered) > len("mailto:")
    if lowered.startswith(_LINK_SCHEMES):
        return bool(_HOST.fullmatch(urlsplit(url).netloc))
    return url.startswith("/") and not url.startswith("//") and "\\" not in url


def check_text(text: str) -> None:
    """Raise :class:`ValueError` (in plain words) if ``text`` is longer than :data:`MAX_TEXT_LENGTH`, uses a
    placeholder that does not exist (a typo would show verbatim) or links to something other than a web page, an
    email address, a page of this site or one of the link placeholders."""
    if len(text) > MAX_TEXT_LENGTH:
        raise ValueError(
            f"The text is {len(text):,} characters long; a banner can be at most {MAX_TEXT_LENGTH} characters. "
            f"Shorten it by {len(text) - MAX_TEXT_LENGTH:,}."
        )
    unknown = sorted({name for name in _PLACEHOLDER.findall(text) if name not in PLACEHOLDERS})
    if unknown:
        raise ValueError(
            f"unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)}; use "
            + ", ".join("{" + p + "}" for p in sorted(PLACEHOLDERS))
        )
    sample = {name: ("https://example.com/" if name in LINK_PLACEHOLDERS else "x") for name in PLACEHOLDERS}
    for match in _INLINE.finditer(text):
        href = match.group("href")
        if href is not None and not _safe_href(fill(href, sample)):
            raise ValueError(
                f"The link \u201c{match.group('label')}\u201d goes to \u201c{href}\u201d. A link must go to a web page "
                "(https://example.com/...), an email address (mailto:...), a page of this site (starting with /) or "
                "one of "
                + ", ".join("{" + p + "}" for p in sorted(LINK_PLACEHOLDERS))
                + "."
            )


def render_text(text: str, values: Mapping[str, Any]) -> tuple[Markup, str]:
    """A banner text as HTML and as plain text, placeholders filled with ``values``.

    The formatting ``**bold**``, ``*italics*`` and ``[a link](https://...)`` becomes ``<strong>``, ``<em>`` and
    ``<a href rel="nofollow noopener">``; anything else, HTML included, is text. A placeholder's value is always text
    (escaped, never formatting), also inside a link's label; a link whose target is not a web page, an email address
    or a page of this site (``/...``), once filled, stays its label. The HTML then goes through nh3 (the ammonia
    sanitiser) allowing only those three tags, ``href`` and the schemes http, https and mailto.
    """
    html_parts: list[str] = []
    text_parts: list[str] = []
    _inline(text, values, html_parts, text_parts, links=True)
    cleaned = nh3.clean(
        "".join(html_parts),
        tags=_ALLOWED_TAGS,
        attributes={"a": {"href"}},
        url_schemes={"http", "https", "mailto"},
        link_rel="nofollow noopener",
    )
    # nh3 writes quotes in text as they are; escape them as Markup would, so the message is safe in an attribute too;
    # a link nh3 found no valid address in stays its label
    cleaned = _BARE_LINK.sub(r"\1", _TEXT_QUOTES.sub(_quote, cleaned))
    return Markup(cleaned), "".join(text_parts)


_TEXT_QUOTES = re.compile(r"(<[^>]*>)|[\"']")  # a tag (its href has no < > " ', see _inline), or a quote in text
_BARE_LINK = re.compile(r'<a rel="nofollow noopener">(.*?)</a>', re.S)
_URL_QUOTES = str.maketrans({'"': "%22", "'": "%27", "<": "%3C", ">": "%3E"})


def _quote(match: re.Match[str]) -> str:
    return match.group(1) or ("&#34;" if match.group(0) == '"' else "&#39;")


def _inline(text: str, values: Mapping[str, Any], html: list[str], plain: list[str], *, links: bool) -> None:
    pos = 0
    for match in _INLINE.finditer(text):
        if match.group("href") is not None and not links:
            continue  # no link inside a link: its brackets are text
        _text(text[pos : match.start()], values, html, plain)
        pos = match.end()
        if match.group("href") is not None:
            href = fill(match.group("href"), values).strip().translate(_URL_QUOTES)
            if _safe_href(href):
                html.append(f'<a href="{escape(href)}">')
                _inline(match.group("label"), values, html, plain, links=False)
                html.append("</a>")
            else:
                _inline(match.group("label"), values, html, plain, links=False)
        else:
            tag = "strong" if match.group("bold") is not None else "em"
            html.append(f"<{tag}>")
            _inline(match.group("bold") or match.group("em"), values, html, plain, links=links)
            html.append(f"</{tag}>")
    _text(text[pos:], values, html, plain)


def _text(text: str, values: Mapping[str, Any], html: list[str], plain: list[str]) -> None:
    """Plain text with placeholders filled: escaped (values too) into ``html``, as it is into ``plain``."""
    plain.append(fill(text, values))

    def sub(match: re.Match[str]) -> str:
        value = values.get(match.group(1))
        return match.group(0) if value is None else str(escape(str(value)))

    html.append(_PLACEHOLDER.sub(sub, str(escape(text))))


def fill(text: str, values: Mapping[str, Any]) -> str:
    """``text`` with each ``{name}`` replaced by ``values[name]``; unknown names are left as they are. Plain
    substitution (no attribute access, no format specs): creator-written text cannot reach into objects."""

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        value = values.get(name)
        return match.group(0) if value is None else str(value)

    return _PLACEHOLDER.sub(sub, text)


def money(cents: int | None) -> str:
    """``1250`` -> ``$12.50`` with ``PATRONLOCK_CURRENCY_SYMBOL``, or in the site's locale and currency (see
    :func:`flask_patronlock.i18n.money`)."""
    return i18n.money(cents)


def _patreon_url(path: str) -> str:
    base = current_app.config["PATRONLOCK_OAUTH_BASE_URL"].rstrip("/") + "/"
    return urljoin(base, path.lstrip("/")) if not path.startswith(("http://", "https://")) else path


def _target_tier(rule_tier_ids: tuple[str, ...], cents: int | None, snapshot: SettingsSnapshot) -> TierSnapshot | None:
    """The tier to suggest: the cheapest known required tier, else the cheapest published tier costing at least
    ``cents``, else (no condition on amount) the cheapest published paid tier."""
    tiers = snapshot.tiers
    required = [tiers[t] for t in rule_tier_ids if t in tiers]
    if required:
        return min(required, key=lambda t: (t.amount_cents, t.id))
    if rule_tier_ids:
        return None  # an unknown tier: suggesting another would mislead
    floor = cents if cents is not None else 1
    offered = [t for t in tiers.values() if t.published and t.amount_cents >= floor]
    return min(offered, key=lambda t: (t.amount_cents, t.id)) if offered else None


def _free_tier(snapshot: SettingsSnapshot) -> TierSnapshot | None:
    """The campaign's $0 tier (its free membership), if the catalogue has one."""
    free = [t for t in snapshot.tiers.values() if t.amount_cents <= 0]
    return min(free, key=lambda t: (not t.published, t.id)) if free else None


def _tier_name(tier_id: str, tiers: Mapping[str, TierSnapshot]) -> str:
    """A required tier by its title (or price), the id only for a tier the campaign does not know."""
    tier = tiers.get(tier_id)
    if tier is None:
        return tier_id
    return tier.title or money(tier.amount_cents)


def pledge_link(
    tier: TierSnapshot | None,
    cents: int | None = None,
    *,
    lock: str | None = None,
    decision: Decision | None = None,
) -> str:
    """An absolute Patreon checkout link for ``tier``: the tier's own ``url`` (like ``/checkout/<campaign>?rid=<tier>``,
    which preselects it) against ``PATRONLOCK_OAUTH_BASE_URL``; without one, ``/checkout/<campaign>?rid=<tier>``;
    without a tier, the campaign's checkout page ``/checkout/<campaign>``; without a campaign id, the Patreon home
    page. Then the ``pledge-url`` filter may change it (``lock``, the lock name, and ``decision`` are passed to it)."""
    campaign = get_state().campaign_id_or_none()
    if tier is not None and tier.url:
        url = _patreon_url(tier.url)
    elif campaign:
        query = f"?{urlencode({'rid': tier.id})}" if tier is not None else ""
        url = _patreon_url(f"/checkout/{campaign}{query}")
    else:
        url = _patreon_url("/")
    if signals.pledge_url.receivers:
        url = _fold(
            signals.pledge_url,
            url,
            tier=tier,
            cents=cents,
            lock=lock,
            decision=decision,
        )
    return str(url)


def _fold(signal: Any, value: Any, **kwargs: Any) -> Any:
    """``value`` folded through the filter ``signal`` with the current app as sender and its strict mode."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    return signals.apply_filter(signal, app, value, strict=bool(app.config["PATRONLOCK_STRICT_SIGNALS"]), **kwargs)


def _next_path() -> str | None:
    if not has_request_context():
        return None
    path = request.full_path
    return path[:-1] if path.endswith("?") else path


def _endpoint_url(endpoint: str, **values: Any) -> str | None:
    if endpoint not in current_app.view_functions:
        return None
    try:
        return url_for(endpoint, **values)
    except (BuildError, RuntimeError):  # RuntimeError: outside a request without SERVER_NAME (e.g. an email)
        return None


def login_url() -> str:
    """Where a banner sends an anonymous visitor: ``PATRONLOCK_LOGIN_URL``, else the ``patronlock.login`` view ("Log
    in with Patreon"), else Flask-Login's ``login_view``; with ``next`` set to the current page. Empty if none."""
    nxt = _next_path()
    configured = current_app.config["PATRONLOCK_LOGIN_URL"]
    if configured:
        return _with_next(configured, nxt)
    url = _endpoint_url("patronlock.login", next=nxt)
    if url:
        return url
    manager = getattr(current_app, "login_manager", None)
    view = getattr(manager, "login_view", None)
    if view:
        if isinstance(view, str) and view.startswith(("/", "http://", "https://")):
            return _with_next(view, nxt)
        return _endpoint_url(str(view), next=nxt) or ""
    return ""


def connect_url() -> str:
    """Where a banner sends a signed-in user to link Patreon: ``PATRONLOCK_CONNECT_URL``, else the
    ``patronlock.connect`` view, with ``next`` set to the current page. Empty if neither exists."""
    nxt = _next_path()
    configured = current_app.config["PATRONLOCK_CONNECT_URL"]
    if configured:
        return _with_next(configured, nxt)
    return _endpoint_url("patronlock.connect", next=nxt) or ""


def _with_next(url: str, nxt: str | None) -> str:
    if not nxt:
        return url
    return f"{url}{'&' if '?' in url else '?'}{urlencode({'next': nxt})}"


def note_banner_shown(state: PatronLockState, lock: str | None, reason: str) -> None:
    """Record, for the dashboard's figures per lock, that the current request's viewer was shown ``lock``'s banner
    for ``reason`` (see :func:`flask_patronlock.insight.record_banner_view`: once a day per viewer, lock and reason).
    Nothing outside a request."""
    if not has_request_context() or reason in NOT_DENIALS:
        return
    values = vars(g)
    user = values.get(_G_USER)
    raw = user.get_id() if user is not None and getattr(user, "is_authenticated", False) else None
    user_id = str(raw) if raw is not None else None
    now = state.store.clock()
    if user_id is not None:
        key = "u:" + user_id
    else:
        key = anonymous_key(current_app.secret_key, now, request.remote_addr, request.user_agent.string)
    patron = getattr(values.get(_G_VIEWER), "patron", None)
    record_banner_view(state, lock=lock, reason=reason, viewer=key, user_id=user_id,
                       patreon_user_id=patron.patreon_user_id if patron is not None else None, now=now)


def banner_context(
    lock: Lock, decision: Decision, *, state: PatronLockState | None = None, shown: bool = True
) -> dict[str, Any]:
    """Everything a banner template gets, after the ``banner-context`` filter:

    ``lock`` (the :class:`~flask_patronlock.locks.Lock`), ``lock_name``, ``decision``, ``reason``, ``message`` (the
    lock's own text, else the site-wide one, else the default; placeholders filled and formatting applied, as safe
    HTML: see :func:`render_text`), ``message_text`` (the same as plain text, for attributes, JSON and emails),
    ``action_label`` and ``action_url`` (the one next step; ``None`` when there is none), the placeholder values
    (``tier``, ``amount``, ``creator``, ``pledge_url``, ``connect_url``, ``login_url``, ``billing_url``, ``date``,
    ``months``, ``public_date``), ``early_access`` (on an early-access lock, the sentence saying when it opens to
    everyone, unless the message says it already; else empty) and ``tier_obj`` (the suggested
    :class:`~flask_patronlock.patreon.types.TierSnapshot`, or ``None``).

    ``shown`` (the default) records that the request's viewer was shown this lock's banner, for the dashboard's
    figures per lock (:func:`note_banner_shown`); previews pass ``False``.
    """
    if state is None:
        state = get_state()
    if shown:
        note_banner_shown(state, lock.name, decision.reason)
    snapshot = state.settings.current()
    rule = snapshot.rule_for(lock)
    reason = decision.reason
    config = current_app.config
    lifetime = reason == "lifetime_too_low"
    cents = rule.lifetime_cents if lifetime else decision.required_cents
    if reason == "not_a_member":
        tier = _free_tier(snapshot)  # joining for free: never a paid tier's checkout
    else:
        tier = None if lifetime else _target_tier(rule.tier_ids, decision.required_cents, snapshot)
    exact = rule.tier_match == "exact" and bool(rule.tier_ids) and not lifetime
    if exact:
        # any of these very tiers: name each of them ("Comics or Music"), the link preselects the cheapest
        tier_text = gettext(" or ").join(_tier_name(t, snapshot.tiers) for t in rule.tier_ids)
    elif tier is not None:
        tier_text = tier.title or money(tier.amount_cents)
    elif rule.tier_ids and not lifetime:
        tier_text = gettext("the tier this asks for")  # tiers the catalogue does not know (yet): never their ids
    elif cents:
        tier_text = money(cents)
    else:
        tier_text = gettext("any tier")
    when = decision.available_at if reason == "drip_not_reached" else decision.pledged_by or rule.patron_since_before
    values: dict[str, Any] = {
        "tier": tier_text,
        "amount": money(cents) if cents else money(tier.amount_cents) if tier is not None else "",
        "creator": config["PATRONLOCK_CREATOR_NAME"] or gettext("the creator"),
        "pledge_url": pledge_link(tier, cents, lock=lock.name, decision=decision),
        "connect_url": connect_url(),
        "login_url": login_url(),
        "billing_url": _patreon_url(config["PATRONLOCK_BILLING_URL"] or "/"),
        "date": i18n.date_text(when) if when is not None else "",
        "months": rule.drip_months if rule.drip_months is not None else "",
        "public_date": i18n.date_text(decision.public_at) if decision.public_at is not None else "",
    }
    # the creator's own text as written; a built-in one in the site's locale
    built_in = (exact and _EXACT_TEXTS.get(reason)) or DEFAULT_TEXTS.get(reason, "")
    text = snapshot.banner_text(reason, lock.name) or (gettext(built_in) if built_in else "")
    message, message_text = render_text(text, values)
    action = ACTIONS.get(reason)
    early = ""
    if values["public_date"] and "{public_date}" not in text:
        early = gettext("Patrons can see this now; it opens to everyone on %(date)s.", date=values["public_date"])
    context: dict[str, Any] = {
        **values,
        "lock": lock,
        "lock_name": lock.name,
        "decision": decision,
        "reason": reason,
        "message": message,
        "message_text": message_text,
        "action_label": gettext(action[0]) if action else None,
        "action_url": (values[action[1]] or None) if action else None,
        "tier_obj": tier,
        "early_access": early,
    }
    if signals.banner_context.receivers:
        folded = signals.apply_filter(
            signals.banner_context,
            state.app,
            context,
            strict=bool(config["PATRONLOCK_STRICT_SIGNALS"]),
            lock=lock.name,
            decision=decision,
        )
        if isinstance(folded, dict):
            context = folded
            changed = context.get("message")
            if changed is not message:  # a receiver rewrote the message: the plain text follows it
                context["message_text"] = changed.striptags() if isinstance(changed, Markup) else str(changed or "")
    return context


def render_banner(
    lock: Lock | str | None = None, decision: Decision | None = None, *, published_at: Any = None
) -> Markup:
    """The banner of ``lock`` for the current viewer (or for ``decision``; ``published_at``: about an item published
    then, see :func:`~flask_patronlock.locks.decision_for`): ``patronlock/banners/<reason>.html`` rendered with
    :func:`banner_context`. Empty when the viewer may see it."""
    from .locks import as_lock, decision_for

    target = as_lock(lock)
    if decision is None:
        decision = decision_for(target, published_at=published_at)
    if decision.allowed:
        return Markup("")
    context = banner_context(target, decision)
    return _banner_html(target, decision, context)


def _banner_html(lock: Lock, decision: Decision, context: dict[str, Any]) -> Markup:
    """The banner's template rendered with ``context``, then folded through the ``banner-html`` filter."""
    html = Markup(render_template(_banner_templates(decision.reason), **context))
    if signals.banner_html.receivers:
        folded = _fold(
            signals.banner_html,
            html,
            lock=lock.name,
            decision=decision,
            context=context,
        )
        html = escape(folded)  # Markup stays as it is; a plain str is text, not HTML
    return html


def _banner_templates(reason: str) -> list[str | Template]:
    # a filter may hand back a Decision with any reason: fall back to the shared layout rather than fail the page
    return [f"patronlock/banners/{reason}.html", "patronlock/banners/_banner.html"]


def _wants_json() -> bool:
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def locked_response(error: LockedError) -> Response:
    """The response of a :class:`~flask_patronlock.locks.LockedError` nobody handled: the locked page, or JSON."""
    context = banner_context(error.lock, error.decision)
    if _wants_json():
        response = jsonify(
            error="locked",
            lock=error.lock.name,
            reason=error.decision.reason,
            message=context["message_text"],
            action_url=context["action_url"],
            early_access=context.get("early_access") or None,
        )
    else:
        banner = _banner_html(error.lock, error.decision, context)
        response = current_app.make_response(
            render_template(
                "patronlock/locked.html",
                patronlock_base_template=current_app.config["PATRONLOCK_BASE_TEMPLATE"],
                banner=banner,
                **context,
            )
        )
    response.status_code = error.code or 403
    return response


def placeholder_response(lock: Lock, decision: Decision) -> Response:
    """A 403 SVG image saying the picture is for patrons (``patronlock/placeholder.svg``)."""
    context = banner_context(lock, decision)
    body = render_template("patronlock/placeholder.svg", **context)
    return current_app.response_class(body, status=403, mimetype="image/svg+xml")

