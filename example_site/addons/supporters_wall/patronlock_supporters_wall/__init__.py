"""Supporters wall: a flask-patronlock add-on with a public page thanking the patrons who chose to be listed.

* ``GET /supporters/`` lists, by tier (dearest first), the display names of the signed-in users who opted in and are
  entitled now — a patron whose pledge ends drops off by themselves, without anyone editing the wall.
* ``POST /supporters/me`` lets a signed-in user opt in (with the name they want shown) or out. Nobody is listed
  without asking: the wall shows only names people typed in themselves.
* The ``banner-html`` filter adds a link to the wall under the banners that invite someone to pledge.

Configuration (on the host app): ``SUPPORTERS_WALL_URL_PREFIX`` (default ``/supporters``) and
``SUPPORTERS_WALL_BANNER_REASONS`` (the banner reasons that get the link; default ``not_a_patron``,
``amount_too_low``, ``former_patron``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from markupsafe import Markup
from sqlalchemy import Column, MetaData, String, Table, and_, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from werkzeug.routing import BuildError
from werkzeug.wrappers import Response as WerkzeugResponse

from flask_patronlock import Addon, AddonHooks, Decision, patron_data, signals
from flask_patronlock.models import UTCDateTime
from flask_patronlock.policy import entitlement

__all__ = ["TABLE_NAME", "SupportersWall", "WallGroup", "entries_table", "wall_groups"]

__version__ = "1.0.0"

#: The add-on's own table: who opted in, and under which name.
TABLE_NAME = "supporters_wall_entries"
#: The longest display name accepted.
MAX_NAME = 60

_CSRF_KEY = "_supporters_wall_csrf"

blueprint = Blueprint("supporters_wall", __name__, template_folder="templates")


def entries_table(metadata: MetaData) -> Table:
    """The opt-in table on ``metadata`` (defined once; two apps sharing a ``db`` share it)."""
    existing = metadata.tables.get(TABLE_NAME)
    if existing is not None:
        return existing
    return Table(
        TABLE_NAME,
        metadata,
        Column("user_id", String(64), primary_key=True),  # the host's user id, as text (like patronlock_accounts)
        Column("display_name", String(MAX_NAME), nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
    )


class SupportersWall(Addon):
    """A public wall of the patrons who opted in, by tier."""

    name = "supporters_wall"
    version = __version__
    description = "A public page thanking the patrons who opted in to be listed, by tier, with a link from banners."

    def init_app(self, app: Flask, hooks: AddonHooks) -> None:
        app.config.setdefault("SUPPORTERS_WALL_URL_PREFIX", "/supporters")
        app.config.setdefault("SUPPORTERS_WALL_BANNER_REASONS", ["not_a_patron", "amount_too_low", "former_patron"])
        entries_table(hooks.data.metadata)
        hooks.register_blueprint(blueprint, url_prefix=app.config["SUPPORTERS_WALL_URL_PREFIX"])
        # late (priority 80): whatever other add-ons do to the banner, the link goes at the end
        hooks.connect(signals.banner_html, self.link_from_banner, priority=80)
        app.extensions["supporters_wall"] = hooks
        app.jinja_env.globals["supporters_wall_url"] = wall_url

    def link_from_banner(self, app: Flask, *, value: Markup, decision: Decision, **kwargs: Any) -> Markup | None:
        """``banner-html``: under a banner inviting someone to pledge, a link to the wall (``None``: unchanged)."""
        if decision.reason not in app.config["SUPPORTERS_WALL_BANNER_REASONS"]:
            return None
        url = wall_url()
        if url is None:
            return None
        creator = app.config.get("PATRONLOCK_CREATOR_NAME") or "the creator"
        return value + Markup(
            '<p class="supporters-wall-note">See who already supports {}: <a href="{}">the supporters wall</a>.</p>'
        ).format(creator, url)


def wall_url() -> str | None:
    """The wall's URL, or ``None`` when the add-on is switched off (or outside a request). A Jinja global too:
    ``{% if supporters_wall_url is defined and supporters_wall_url() %}``."""
    hooks: AddonHooks | None = current_app.extensions.get("supporters_wall")
    if hooks is None or not hooks.is_enabled():
        return None
    try:
        return url_for("supporters_wall.wall")
    except (BuildError, RuntimeError):
        return None


@dataclass
class WallGroup:
    """The listed supporters of one tier."""

    title: str
    amount_cents: int
    names: list[str] = field(default_factory=list)


def wall_groups(app: Flask | None = None) -> list[WallGroup]:
    """The wall: the opted-in users whose linked patron is entitled now, grouped by their dearest entitled tier
    (dearest tier first, names in alphabetical order)."""
    data = patron_data(app)
    policy, known_tiers, now = data.policy(), data.tiers(), data.now()
    e = entries_table(data.metadata)
    a, p = data.tables.accounts, data.tables.patrons
    on = p.c.patreon_user_id == a.c.patreon_user_id
    campaign = data.campaign_id()
    if campaign:
        on = and_(on, p.c.campaign_id == campaign)
    stmt = (
        select(e.c.user_id.label("wall_user_id"), e.c.display_name, p)
        .join(a, a.c.user_id == e.c.user_id)
        .join(p, on)
    )
    groups: dict[str, WallGroup] = {}
    with data.engine.connect() as conn:
        rows = conn.execute(stmt).mappings().all()
    for row in rows:
        patron = data.patron_from_row(row, local_user_id=row["wall_user_id"])
        owed = entitlement(patron, policy, now)
        if not owed.entitled:
            continue
        tiers = [known_tiers[t] for t in owed.tier_ids if t in known_tiers]
        if tiers:
            best = max(tiers, key=lambda t: t.amount_cents)
            title, cents = best.title or "Patrons", best.amount_cents
        else:
            title, cents = "Patrons", -1  # an amount without a known tier: listed last
        group = groups.setdefault(title, WallGroup(title=title, amount_cents=cents))
        group.amount_cents = max(group.amount_cents, cents)
        group.names.append(row["display_name"])
    for group in groups.values():
        group.names.sort(key=str.casefold)
    return sorted(groups.values(), key=lambda g: (-g.amount_cents, g.title))


def _user() -> Any:
    if getattr(current_app, "login_manager", None) is None:
        return None
    from flask_login import current_user

    user = current_user._get_current_object()
    return user if getattr(user, "is_authenticated", False) else None


def _csrf_token() -> str:
    token = session.get(_CSRF_KEY)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(24)
        session[_CSRF_KEY] = token
    return token


@blueprint.get("/")
def wall() -> Response:
    """The wall, and for a signed-in user the opt-in form."""
    user = _user()
    me: dict[str, Any] | None = None
    if user is not None:
        data = patron_data()
        e = entries_table(data.metadata)
        user_id = str(user.get_id())
        with data.engine.connect() as conn:
            listed_as = conn.execute(select(e.c.display_name).where(e.c.user_id == user_id)).scalar()
        from flask_patronlock import current_patron

        suggested = (current_patron.full_name if current_patron else "") or ""
        me = {
            "listed": listed_as is not None,
            "display_name": listed_as or suggested.split(" ")[0],
            "csrf_token": _csrf_token(),
        }
    html = render_template("patronlock_supporters_wall/wall.html", groups=wall_groups(), me=me)
    response = current_app.make_response(html)
    if me is not None:
        response.headers["Cache-Control"] = "private"
    return response


@blueprint.post("/me")
def me() -> WerkzeugResponse:
    """Opt the signed-in user in (``listed=1`` and a ``display_name``) or out (``listed=0``)."""
    user = _user()
    if user is None:
        abort(403)
    token = request.form.get("csrf_token", "")
    expected = session.get(_CSRF_KEY)
    if not isinstance(expected, str) or not secrets.compare_digest(token, expected):
        abort(400, "The form expired; reload the page and try again.")
    data = patron_data()
    e = entries_table(data.metadata)
    user_id = str(user.get_id())
    now = datetime.now(UTC)
    if request.form.get("listed") == "1":
        name = " ".join((request.form.get("display_name") or "").split())
        if not name or len(name) > MAX_NAME:
            flash(f"Choose a name of 1 to {MAX_NAME} characters to be listed under.", "error")
            return redirect(url_for(".wall"))
        try:
            with data.engine.begin() as conn:
                if not conn.execute(
                    update(e).where(e.c.user_id == user_id).values(display_name=name, updated_at=now)
                ).rowcount:
                    conn.execute(insert(e).values(user_id=user_id, display_name=name, created_at=now, updated_at=now))
        except IntegrityError:  # the same form sent twice at once: the other request inserted the row
            with data.engine.begin() as conn:
                conn.execute(update(e).where(e.c.user_id == user_id).values(display_name=name, updated_at=now))
        flash(f"Thank you! You are on the wall as {name} while your pledge is active.", "info")
    else:
        with data.engine.begin() as conn:
            conn.execute(delete(e).where(e.c.user_id == user_id))
        flash("You are no longer listed on the wall.", "info")
    return redirect(url_for(".wall"))
