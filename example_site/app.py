"""The example site's app factory."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Flask, abort, flash, redirect, render_template, request, url_for
from flask_login import LoginManager, UserMixin, current_user, login_required, login_user, logout_user
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.security import check_password_hash, generate_password_hash

from flask_patronlock import ConfigurationError, PatronLock, locked, send_locked_file
from flask_patronlock.sync import refresh_tiers

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent

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


class User(UserMixin, db.Model):  # type: ignore[name-defined]
    __tablename__ = "example_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(default=False)


@dataclass(frozen=True)
class Post:
    slug: str
    title: str
    lock: str | None
    teaser: str
    body: str


POSTS = [
    Post("welcome", "Welcome to the studio", None, "Hello! This one is free for everyone.",
         "Everything else here is for patrons: log in, connect your Patreon account, and read on."),
    Post("sketchbook", "Sketchbook, week 12", "supporters", "Twelve new sketches, with notes on each.",
         "Thank you for supporting the studio. Here are this week's sketches in full resolution..."),
    Post("process", "How I paint a city at night", "silver", "A look at the palette and the first layers.",
         "Step one: block in the sky with a warm dark... (the full twenty-step process follows)"),
    Post("masterclass", "Masterclass: light and reflections", "gold", "Two hours of live painting.",
         "The full masterclass video and the layered source files."),
    Post("founders-letter", "A letter to the founding patrons", "founders", "To the people who were here first.",
         "You believed in this before anyone else did. Here is what your support built..."),
    Post("premium-archive", "The premium archive", "premium", "Ten years of studies, sorted by theme.",
         "The whole archive: every study, with its reference photos and notes."),
]


#: Set these in the environment to use the real Patreon instead of the sandbox (lists: comma-separated).
REAL_PATREON_KEYS = (
    "PATRONLOCK_CLIENT_ID", "PATRONLOCK_CLIENT_SECRET", "PATRONLOCK_CAMPAIGN_ID", "PATRONLOCK_CREATOR_ACCESS_TOKEN",
    "PATRONLOCK_CREATOR_REFRESH_TOKEN", "PATRONLOCK_WEBHOOK_SECRETS", "PATRONLOCK_TOKEN_KEYS",
    "PATRONLOCK_REDIRECT_URI",
)


def _replace_outdated_demo_database(app: Flask) -> None:
    """A demo database an earlier version made lacks the columns added since. Its contents are the sandbox's demo
    data, made again on the next start, so it is moved aside (never deleted) and a new one made, with a message."""
    from flask_patronlock.extension import get_state
    from flask_patronlock.models import schema_gaps

    engine = db.engine
    _, columns = schema_gaps(engine, get_state(app).tables)
    database = engine.url.database
    if not columns or engine.url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return
    engine.dispose()
    old = Path(database)
    kept = old.with_name(f"{old.name}.{datetime.now(UTC):%Y%m%d%H%M%S}.old")
    old.rename(kept)
    app.logger.warning(
        "The example's database was made by an earlier version (it lacks %s); moved it to %s and made a new one.",
        ", ".join(columns),
        kept,
    )
    print(f"Moved the outdated demo database to {kept}; starting with a new one.")
    db.create_all()


def create_app(config: dict[str, Any] | None = None, *, base_url: str = "http://127.0.0.1:5000") -> Flask:
    """The example site. ``base_url`` is where it is served (the sandbox's links and the OAuth redirect need it)."""
    app = Flask(__name__, instance_relative_config=True)
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    app.config.update(
        SECRET_KEY=os.environ.get("EXAMPLE_SECRET_KEY", "example-site-not-secret"),
        SQLALCHEMY_DATABASE_URI=os.environ.get(
            "EXAMPLE_DATABASE_URL", f"sqlite:///{Path(app.instance_path) / 'example.db'}"
        ),
        PATRONLOCK_BASE_TEMPLATE="base.html",
        PATRONLOCK_CREATOR_NAME="Kopi's Studio",
        PATRONLOCK_TOKEN_KEYS=[os.environ.get("EXAMPLE_TOKEN_KEY", "Yx3mDmhQ_9FUA9pjR9d5YQ0H1dFb0cmCd8dJkgJXWdM=")],
    )
    app.config.update({key: os.environ[key] for key in REAL_PATREON_KEYS if os.environ.get(key)})
    if config:
        app.config.update(config)

    if not app.config.get("PATRONLOCK_CLIENT_ID"):  # no real credentials: the built-in sandbox, offline
        from .sandbox_mount import mount_sandbox

        mount_sandbox(app, base_url=base_url)

    db.init_app(app)
    login_manager.init_app(app)
    patronlock.init_app(app)

    @patronlock.admin_loader
    def is_admin(user: Any) -> bool:
        return bool(getattr(user, "is_admin", False))

    with app.app_context():
        db.create_all()
        _replace_outdated_demo_database(app)
    if "example_sandbox" in app.extensions:  # the visitor's control panel, and webhooks from the sandbox to here
        from .panel import init_panel

        init_panel(app, app.extensions["example_sandbox"], base_url=base_url)

    tiers_read = False

    @app.before_request
    def read_tiers_once() -> None:
        # Read the campaign's tiers now rather than at the first reconcile run, so locks can name them at once. Done
        # on the first request because the sandbox mounted here only answers once the server runs.
        nonlocal tiers_read
        if not tiers_read and not request.path.startswith("/_patreon"):
            tiers_read = True
            try:
                refresh_tiers()
            except ConfigurationError:
                tiers_read = False  # not set up yet: the creator connects Patreon in the settings page
            except Exception:
                tiers_read = False
                log.exception("could not read the campaign's tiers; will try again on the next request")

    _routes(app)
    return app


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
        return {"posts": POSTS, "now": datetime.now(UTC)}

    @app.get("/")
    def index() -> str:
        return render_template("index.html")

    @app.get("/posts/<slug>")
    def post(slug: str) -> str:
        found = next((p for p in POSTS if p.slug == slug), None)
        if found is None:
            abort(404)
        return render_template("post.html", post=found)

    @app.get("/members")
    @login_required
    @locked("supporters")
    def members() -> str:
        return render_template("members.html")

    @app.get("/downloads/<path:name>")
    def download(name: str) -> Any:
        return send_locked_file("downloads", name, directory=HERE / "files")

    @app.route("/register", methods=["GET", "POST"])
    def register() -> Any:
        if request.method == "POST":
            email = request.form.get("email", "").strip().lower()
            password = request.form.get("password", "")
            if not email or "@" not in email or len(password) < 8:
                flash("Enter an email address and a password of at least 8 characters.", "error")
            elif db.session.execute(db.select(User).filter_by(email=email)).scalar_one_or_none():
                flash("An account with this email exists: log in instead.", "error")
            else:
                user = User(email=email, name=request.form.get("name") or email.split("@")[0],
                            password_hash=generate_password_hash(password),
                            is_admin=db.session.execute(db.select(User)).first() is None)
                db.session.add(user)
                db.session.commit()
                login_user(user)
                flash("Welcome! Now connect your Patreon account to unlock posts.", "info")
                return redirect(url_for("index"))
        return render_template("register.html")

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Any:
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
        logout_user()
        return redirect(url_for("index"))

    @app.get("/whoami")
    def whoami() -> dict[str, Any]:
        return {"user": current_user.get_id() if current_user.is_authenticated else None}
