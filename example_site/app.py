"""The example site's app factory."""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.fernet import Fernet
from flask import Flask, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import LoginManager, UserMixin, current_user, login_required, login_user, logout_user
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import FlaskForm
from flask_wtf.csrf import generate_csrf, validate_csrf
from sqlalchemy import String, Text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.security import check_password_hash, generate_password_hash
from wtforms.validators import ValidationError

from flask_patronlock import ConfigurationError, PatronLock, UnknownLockError, locked
from flask_patronlock.comps import grant_comp, list_comps
from flask_patronlock.content import LockedContentMixin, LockField
from flask_patronlock.formatting import date_text
from flask_patronlock.locks import named_lock
from flask_patronlock.policy import LockRule
from flask_patronlock.settings import create_lock, find_lock
from flask_patronlock.state import get_state

from .demo import move_database_aside
from .downloads import init_downloads

log = logging.getLogger(__name__)

db = SQLAlchemy()
login_manager = LoginManager()
login_manager.login_view = "login"
patronlock = PatronLock(db=db)

# The site's named locks: defaults in code, editable by the creator in the settings page.
patronlock.lock("supporters", description="Anything for patrons of any paid tier", min_cents=100)
patronlock.lock("silver", tier="Silver", description="Silver patrons and up")
patronlock.lock("gold", tier="Gold", description="Gold patrons only")
patronlock.lock("founders", patron_since_before="2027-01-01", description="Patrons who joined before 2027")
patronlock.lock("downloads", tier="Bronze", description="Downloadable files, Bronze and up")
patronlock.lock("premium", min_cents=100, description="Premium posts: choose their tier in the settings page")


@dataclass(frozen=True)
class DemoAccount:
    """An account the offline demo prepares, to sign in to with one click (see :func:`_demo_accounts_open`)."""

    key: str
    email: str
    name: str
    is_admin: bool
    #: how the demo bar names this account's side.
    role: str = "a reader"
    #: what signing in to it says, after "Signed in as <name>, ".
    welcome: str = "a reader, not a patron yet"
    #: a lock the creator comps this account on first start (its note, days until it ends), as a creator would on the
    #: settings page's Comps page.
    comp: tuple[str, str, int] | None = None


#: The offline demo's sides: the creator (an admin: every lock opens for them), a reader who is not a patron yet, and a
#: friend of the studio whom the creator gave a comp for the masterclass (no pledge at all).
DEMO_ACCOUNTS = (
    DemoAccount("creator", "kopi@example.com", "Kopi", is_admin=True, role="the creator",
                welcome="the creator: every post is open to you"),
    DemoAccount("reader", "sam@example.com", "Sam", is_admin=False),
    DemoAccount("friend", "alex@example.com", "Alex", is_admin=False, role="a friend with a comp",
                welcome="a friend of the studio: Kopi gave you a comp for the masterclass",
                comp=("gold", "A thank-you for sitting for the masterclass's portraits", 90)),
)


class User(UserMixin, db.Model):  # type: ignore[name-defined]
    __tablename__ = "example_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(default=False)


class Post(LockedContentMixin, db.Model):  # type: ignore[name-defined]
    """A post; its ``lock`` (from LockedContentMixin) is chosen by the creator in the post editor: ``""`` is free for
    everyone, else the name of a lock (declared below in code, or made in the settings page)."""

    __tablename__ = "example_posts"
    locked_content_label = "post"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(80), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    teaser: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)

    @property
    def public_after(self) -> datetime | None:
        """Early access: when the post's lock opens to everyone (its rule's ``public_after``), if it does."""
        if not self.lock:
            return None
        state = get_state()
        return state.settings.current().rule_for(named_lock(state, self.lock)).public_after


class PostLockForm(FlaskForm):
    """The post editor's one setting: who may read the post."""

    lock = LockField("Who may read it", public_label="Free for everyone")


#: The posts the site starts with (slug, title, lock, teaser, body); stored in ``example_posts`` on the first start,
#: after which the creator chooses each post's lock in the post editor (``/editor``). The second is early access: its
#: lock, "first-look", is one the demo makes as a creator would on the settings page (:func:`_make_early_access`).
POSTS = [
    ("welcome", "Welcome to the studio", "", "Hello! This one is free for everyone.",
         "Everything else here is for patrons: log in, connect your Patreon account, and read on."),
    ("new-series", "First look: the harbour series", "first-look",
         "Six paintings of the harbour at dawn: patrons see them first.",
         "The whole harbour series, with the colour notes for each painting..."),
    ("sketchbook", "Sketchbook, week 12", "supporters", "Twelve new sketches, with notes on each.",
         "Thank you for supporting the studio. Here are this week's sketches in full resolution..."),
    ("process", "How I paint a city at night", "silver", "A look at the palette and the first layers.",
         "Step one: block in the sky with a warm dark... (the full twenty-step process follows)"),
    ("masterclass", "Masterclass: light and reflections", "gold", "Two hours of live painting.",
         "The full masterclass video and the layered source files."),
    ("founders-letter", "A letter to the founding patrons", "founders", "To the people who were here first.",
         "You believed in this before anyone else did. Here is what your support built..."),
    ("premium-archive", "The premium archive", "premium", "Ten years of studies, sorted by theme.",
         "The whole archive: every study, with its reference photos and notes."),
]


#: How long the early-access post is for patrons only, from the demo's first start (its own clock: "advance the clock
#: a month" in Play Patreon opens it to everyone).
EARLY_ACCESS = timedelta(days=14)
#: Where the early-access post's patrons-only time starts when the site runs against the real Patreon (no demo clock).
EARLY_ACCESS_START = datetime(2026, 12, 1, tzinfo=UTC)


def _make_early_access(start: datetime) -> None:
    """Make the early-access lock of the first posts: patrons of any paid tier from ``start``, everyone
    :data:`EARLY_ACCESS` later, as on Patreon. Made like a creator makes one on the settings page, so the creator can
    change its date or delete it there."""
    create_lock(
        "first-look",
        title="First look (early access)",
        description="New series: patrons of any paid tier see them first, everyone two weeks later.",
        rule=LockRule(min_cents=100, public_after=start + EARLY_ACCESS),
    )


#: Set these in the environment to use the real Patreon instead of the sandbox (lists: comma-separated).
REAL_PATREON_KEYS = (
    "PATRONLOCK_CLIENT_ID", "PATRONLOCK_CLIENT_SECRET", "PATRONLOCK_CAMPAIGN_ID", "PATRONLOCK_CREATOR_ACCESS_TOKEN",
    "PATRONLOCK_CREATOR_REFRESH_TOKEN", "PATRONLOCK_WEBHOOK_SECRETS", "PATRONLOCK_TOKEN_KEYS",
    "PATRONLOCK_REDIRECT_URI",
)
#: Also read from the environment: how locked files are sent (e.g. behind nginx: ``x-accel-redirect``).
FILE_KEYS = ("PATRONLOCK_FILE_DELIVERY", "PATRONLOCK_FILE_ROOT", "PATRONLOCK_X_ACCEL_PREFIX")


#: the offline demo's own secrets, made on its first start, beside its database (or in ``instance/``).
SECRETS_FILE = "example-secrets.json"
#: how to make each secret, for the message that stops a site with real credentials and no secrets of its own.
HOW_TO_MAKE = {
    "SECRET_KEY": "export EXAMPLE_SECRET_KEY=\"$(python -c 'import secrets; print(secrets.token_hex(32))')\"",
    "PATRONLOCK_TOKEN_KEYS": (
        "export PATRONLOCK_TOKEN_KEYS=\"$(python -c "
        "'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')\""
    ),
}


def _secrets_path(app: Flask) -> Path:
    url = make_url(app.config["SQLALCHEMY_DATABASE_URI"])
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).resolve().parent / SECRETS_FILE
    return Path(app.instance_path) / SECRETS_FILE


def _kept_secrets(path: Path) -> dict[str, Any]:
    """The secrets kept at ``path``, made now (readable by this user only) if there are none yet."""
    if not path.exists():
        made = {"SECRET_KEY": secrets.token_hex(32), "PATRONLOCK_TOKEN_KEYS": [Fernet.generate_key().decode()]}
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(made, out)
        try:
            os.link(draft, path)  # never over a file another process made meanwhile: theirs is the one kept
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        path.chmod(0o600)
        log.warning("%s was readable by other users (mode %o); made it readable by its owner only", path, mode)
    try:
        kept = json.loads(path.read_text())
        if not (isinstance(kept["SECRET_KEY"], str) and kept["SECRET_KEY"]):
            raise ValueError("no SECRET_KEY")
        Fernet(kept["PATRONLOCK_TOKEN_KEYS"][0])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ConfigurationError(
            f"The example site's secrets file {path} is damaged ({exc}). Look at it, or delete it to make new "
            "secrets on the next start (everyone is logged out, and demo Patreon links must connect again)."
        ) from exc
    return dict(kept)


def _use_own_secrets(app: Flask, *, real_patreon: bool) -> None:
    """Give the site a SECRET_KEY and token keys that are its own, never a string published with the code.

    Offline, missing ones are made once per install and kept in a file readable by this user only (so sessions and
    encrypted demo tokens survive a restart). With real Patreon credentials the site does not start without them
    and says how to make them: tokens of real patrons deserve keys that are chosen, kept and backed up on purpose.
    """
    missing = [key for key in ("SECRET_KEY", "PATRONLOCK_TOKEN_KEYS") if not app.config.get(key)]
    if not missing:
        return
    if real_patreon:
        steps = "\n".join(f"  {HOW_TO_MAKE[key]}" for key in missing)
        raise ConfigurationError(
            "The example site is set up for the real Patreon (PATRONLOCK_CLIENT_ID is set) but has no "
            f"{' and no '.join(missing)} of its own. Make them once, keep them secret and keep them (new token "
            f"keys cannot read the tokens stored under the old ones), then start the site again:\n{steps}"
        )
    kept = _kept_secrets(_secrets_path(app))
    for key in missing:
        app.config[key] = kept[key]


def form_token_ok() -> bool:
    """Whether this POST carries the visitor's CSRF token (field ``csrf_token``). ``WTF_CSRF_ENABLED = False``
    turns the check off (tests only)."""
    if not current_app.config.get("WTF_CSRF_ENABLED", True):
        return True
    try:
        validate_csrf(request.form.get("csrf_token"))
    except ValidationError:
        return False
    return True


def _form_expired(template: str) -> tuple[str, int]:
    """A form posted without its token (a cross-site post, or a page left open past the token's life): the form
    again, with a fresh token and a word on what happened; nothing was done."""
    flash("That form expired or did not come from this site, so nothing was done: please try again.", "error")
    return render_template(template), 400


def _replace_outdated_demo_database(app: Flask) -> None:
    """A demo database an earlier version made lacks the columns added since. Its contents are the sandbox's demo
    data, made again on the next start, so it is moved aside (never deleted) and a new one made, with a message."""
    from flask_patronlock.models import schema_gaps, tables_for

    with app.app_context():
        engine = db.engine
    _, columns = schema_gaps(engine, tables_for(db.metadata))
    if columns:
        lacks = ", ".join(columns)
        move_database_aside(engine, f"The example's database was made by an earlier version (it lacks {lacks})")


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host == "localhost" or host == "::1" or host.startswith("127.")


def create_app(config: dict[str, Any] | None = None, *, base_url: str = "http://127.0.0.1:5000") -> Flask:
    """The example site. ``base_url`` is where it is served (the sandbox's links and the OAuth redirect need it)."""
    app = Flask(__name__, instance_relative_config=True)
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    app.config.update(
        SECRET_KEY=os.environ.get("EXAMPLE_SECRET_KEY"),
        SQLALCHEMY_DATABASE_URI=os.environ.get(
            "EXAMPLE_DATABASE_URL", f"sqlite:///{Path(app.instance_path) / 'example.db'}"
        ),
        PATRONLOCK_BASE_TEMPLATE="base.html",
        PATRONLOCK_CREATOR_NAME="Kopi's Studio",
        PATRONLOCK_TOKEN_KEYS=[os.environ["EXAMPLE_TOKEN_KEY"]] if os.environ.get("EXAMPLE_TOKEN_KEY") else [],
        # private feeds (example_site/feeds.py) and entitlement tokens for example_site/token_service.py
        PATRONLOCK_FEED_ENDPOINT="feed",
        PATRONLOCK_ENTITLEMENT_KEYS=(
            {"example": os.environ["EXAMPLE_ENTITLEMENT_KEY"]} if os.environ.get("EXAMPLE_ENTITLEMENT_KEY") else None
        ),
        # dev only: the sandbox's /_patreon/_sandbox controls open to every visitor, not only the site's admin
        EXAMPLE_SANDBOX_CONTROLS_OPEN=os.environ.get("EXAMPLE_SANDBOX_CONTROLS_OPEN", "") in ("1", "true", "yes"),
    )
    app.config.update({key: os.environ[key] for key in (*REAL_PATREON_KEYS, *FILE_KEYS) if os.environ.get(key)})
    if config:
        app.config.update(config)
    real_patreon = bool(app.config.get("PATRONLOCK_CLIENT_ID"))
    _use_own_secrets(app, real_patreon=real_patreon)
    # the demo's prepared accounts: offline, on your own machine only (one click signs in as the creator)
    app.config.setdefault("EXAMPLE_DEMO_ACCOUNTS", not real_patreon and _loopback(base_url))

    db.init_app(app)
    login_manager.init_app(app)
    _replace_outdated_demo_database(app)
    if not real_patreon:  # no real credentials: the built-in sandbox, offline, kept in the database with the site
        from .demo import open_demo
        from .sandbox_mount import mount_sandbox, new_sandbox

        demo = open_demo(app, db, new_sandbox)
        mount_sandbox(app, base_url=base_url, sandbox=demo.sandbox, around=demo.kept.wrap)
        app.config["PATRONLOCK_CLOCK"] = demo.clock.now  # the site's time is the sandbox's: one clock
        app.extensions["example_demo"] = demo
    init_downloads(app)  # before init_app: PATRONLOCK_FILE_ROOT is the downloads folder
    patronlock.init_app(app)

    @patronlock.admin_loader
    def is_admin(user: Any) -> bool:
        return bool(getattr(user, "is_admin", False))

    with app.app_context():
        db.create_all()
        demo_opened = app.extensions["example_demo"].opened_at if "example_demo" in app.extensions else None
        _store_the_first_posts(demo_opened or EARLY_ACCESS_START)
        if app.config["EXAMPLE_DEMO_ACCOUNTS"]:
            _prepare_demo_accounts()
        if "example_demo" in app.extensions:
            _store_the_sandbox_tiers(app.extensions["example_demo"].sandbox)
    if "example_sandbox" in app.extensions:  # the visitor's control panel, and webhooks from the sandbox to here
        from .panel import init_panel

        init_panel(app, app.extensions["example_sandbox"], base_url=base_url)

    # No page view calls Patreon, not even for the tiers: the campaign's tiers come from the stored catalogue, which
    # the first reconcile run fills (the scheduler starts one in the background on the first request, and the
    # settings page reads them when the creator connects Patreon).
    _routes(app)
    from .feeds import init_feeds

    init_feeds(app, all_posts)
    if "example_demo" in app.extensions:
        app.extensions["example_demo"].kept.save()  # what the panel set up (its webhook to this site)
    return app


def _store_the_sandbox_tiers(sandbox: Any) -> None:
    """The demo's Patreon lives in this process, so its tiers are stored at start and locks such as "Silver and up"
    mean something from the first page on (a real site reads them in its first reconcile run, which the demo runs
    too, in the background). Not when the creator is to connect a campaign of their choosing in the settings page."""
    from flask_patronlock.patreon import TierSnapshot

    if current_app.config.get("PATRONLOCK_CAMPAIGN_ID") != sandbox.campaign.id:
        return
    tiers = [TierSnapshot(id=t.id, title=t.title, amount_cents=t.amount_cents, published=t.published,
                          description=t.description, url=t.url) for t in sandbox.tiers]  # fmt: skip
    get_state().store.replace_tiers(sandbox.campaign.id, tiers)


def _store_the_first_posts(early_access_from: datetime) -> None:
    """Store :data:`POSTS`, and make the early-access lock of one of them, when the site has no posts yet (never
    touching posts or locks that exist: a lock the creator deleted stays deleted)."""
    if db.session.execute(db.select(Post.id).limit(1)).first() is None:
        try:
            find_lock("first-look")
        except UnknownLockError:
            _make_early_access(early_access_from)
        for slug, title, lock, teaser, body in POSTS:
            db.session.add(Post(slug=slug, title=title, lock=lock, teaser=teaser, body=body))
        db.session.commit()


def all_posts() -> list[Post]:
    """Every post, in the order they were written."""
    return list(db.session.execute(db.select(Post).order_by(Post.id)).scalars())


def _prepare_demo_accounts() -> None:
    """Make the demo's accounts that are missing (never touching one that exists), and grant the comps they come
    with, once: a comp the creator has since revoked, or one that ended, is not granted again."""
    for account in DEMO_ACCOUNTS:
        if db.session.execute(db.select(User).filter_by(email=account.email)).scalar_one_or_none() is None:
            db.session.add(User(email=account.email, name=account.name, password_hash="!demo-account",
                                is_admin=account.is_admin))  # fmt: skip
    db.session.commit()
    state = get_state()
    creator = db.session.execute(db.select(User).filter_by(is_admin=True).order_by(User.id)).scalars().first()
    granted = {record.user_id for record in (*list_comps(state), *list_comps(state, ended=True))}
    for account in DEMO_ACCOUNTS:
        if account.comp is None:
            continue
        user = db.session.execute(db.select(User).filter_by(email=account.email)).scalar_one()
        if str(user.id) in granted:
            continue
        lock, note, days = account.comp
        grant_comp(state, user_id=str(user.id), lock=lock, note=note,
                   expires_at=(state.store.clock() + timedelta(days=days)).date(),
                   by=str(creator.id) if creator is not None else None)  # fmt: skip


def _creator_only() -> None:
    """The post editor is the creator's (the site's admin)."""
    if not getattr(current_user, "is_admin", False):
        abort(403)


def _who_may_read(lock: str) -> str:
    """``"free for everyone"``, or ``"for Early access"`` (the lock's title)."""
    return f"for {lock_label(lock)}" if lock else "free for everyone"


def lock_label(lock: str) -> str:
    """What the post editor says of a post's lock: "Free for everyone", the lock's title, or that it was deleted."""
    if not lock:
        return "Free for everyone"
    try:
        return find_lock(lock).display_name
    except UnknownLockError:
        return f"{lock} (deleted: only you can read it until you choose another lock)"


def _demo_accounts_open() -> bool:
    """Whether this request may sign in to a demo account with one click: the offline demo, asked from this machine
    (whoever reaches the site from elsewhere registers and logs in as on any site)."""
    return bool(current_app.config.get("EXAMPLE_DEMO_ACCOUNTS")) and _loopback(f"http://{request.remote_addr}")


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    return db.session.get(User, int(user_id))


# Log in with Patreon: find an existing account by email (never linked without logging in first), and create one
# for a new visitor whose Patreon email is verified. This site sends no confirmation mail, so it vouches for no
# address: it registers no @patronlock.verified_users_by_email, and reconcile runs never link anyone by email here.
@patronlock.user_by_email
def user_by_email(email: str) -> User | None:
    return db.session.execute(db.select(User).filter_by(email=email.strip().lower())).scalar_one_or_none()


@patronlock.user_creator
def user_from_patreon(patreon_user: Any) -> User | None:
    if not patreon_user.email or patreon_user.email_verified is not True:
        return None
    email = patreon_user.email.strip().lower()
    user = User(email=email, name=patreon_user.full_name or email.split("@")[0], password_hash="!no-password")
    db.session.add(user)
    db.session.commit()
    return user


def _routes(app: Flask) -> None:
    @app.context_processor
    def site() -> dict[str, Any]:
        return {
            "posts": all_posts,
            "now": get_state().store.clock(),  # the one clock (the sandbox's, offline)
            "csrf_token": generate_csrf,
            "demo_accounts": DEMO_ACCOUNTS if _demo_accounts_open() else (),
            "offline_demo": "example_sandbox" in app.extensions,
        }

    app.add_template_global(lock_label)

    @app.template_filter("day")
    def day(when: datetime | None) -> str:
        """A date in words, "4 January 2027"."""
        return date_text(when, day_first=True) if when is not None else ""

    @app.post("/demo/sign-in/<key>")
    def demo_sign_in(key: str) -> Any:
        account = next((a for a in DEMO_ACCOUNTS if a.key == key), None)
        if account is None or not _demo_accounts_open():
            abort(404)
        if not form_token_ok():
            return _form_expired("index.html")
        user = db.session.execute(db.select(User).filter_by(email=account.email)).scalar_one()
        login_user(user)
        flash(f"Signed in as {account.name}, {account.welcome}.", "info")
        return redirect(url_for("index"))

    @app.get("/")
    def index() -> str:
        return render_template("index.html")

    @app.get("/posts/<slug>")
    def post(slug: str) -> str:
        found = db.session.execute(db.select(Post).filter_by(slug=slug)).scalar_one_or_none()
        if found is None:
            abort(404)
        return render_template("post.html", post=found)

    # The post editor: the creator chooses who may read each post (a LockField of "Free for everyone" and every
    # lock, the ones declared in code above and the ones made in the settings page). The change applies at once.
    @app.get("/editor")
    @login_required
    def editor() -> str:
        _creator_only()
        return render_template("editor.html")

    @app.route("/editor/<slug>", methods=["GET", "POST"])
    @login_required
    def edit_post(slug: str) -> Any:
        _creator_only()
        found = db.session.execute(db.select(Post).filter_by(slug=slug)).scalar_one_or_none()
        if found is None:
            abort(404)
        form = PostLockForm(obj=found)
        if form.validate_on_submit():
            form.populate_obj(found)
            db.session.commit()
            flash(f"Saved: “{found.title}” is now {_who_may_read(found.lock)}.", "info")
            return redirect(url_for("editor"))
        return render_template("edit_post.html", post=found, form=form), 422 if form.errors else 200

    @app.get("/members")
    @login_required
    @locked("supporters")
    def members() -> str:
        return render_template("members.html")

    @app.route("/register", methods=["GET", "POST"])
    def register() -> Any:
        if request.method == "POST" and not form_token_ok():
            return _form_expired("register.html")
        if request.method == "POST":
            email = request.form.get("email", "").strip().lower()
            password = request.form.get("password", "")
            if not email or "@" not in email or len(password) < 8:
                flash("Enter an email address and a password of at least 8 characters.", "error")
            elif db.session.execute(db.select(User).filter_by(email=email)).scalar_one_or_none():
                flash("An account with this email exists: log in instead.", "error")
            else:
                # without the demo's prepared creator, the first account made is the creator's (the site's admin)
                first = db.session.execute(db.select(User)).first() is None
                user = User(email=email, name=request.form.get("name") or email.split("@")[0],
                            password_hash=generate_password_hash(password),
                            is_admin=first and not app.config["EXAMPLE_DEMO_ACCOUNTS"])
                db.session.add(user)
                db.session.commit()
                login_user(user)
                flash("Welcome! Now connect your Patreon account to unlock posts.", "info")
                return redirect(url_for("index"))
        return render_template("register.html")

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        if request.method == "POST" and not form_token_ok():
            return _form_expired("login.html")
        if request.method == "POST":
            email = request.form.get("email", "").strip().lower()
            user = db.session.execute(db.select(User).filter_by(email=email)).scalar_one_or_none()
            if user is None or not check_password_hash(user.password_hash, request.form.get("password", "")):
                flash("That email and password do not match an account on this site.", "error")
            else:
                login_user(user)
                return redirect(url_for("index"))
        return render_template("login.html")

    @app.post("/logout")
    def logout() -> Any:
        if not form_token_ok():  # a cross-site post does not log anyone out
            return _form_expired("index.html")
        logout_user()
        return redirect(url_for("index"))

    @app.get("/whoami")
    def whoami() -> dict[str, Any]:
        return {"user": current_user.get_id() if current_user.is_authenticated else None}
