"""Fast file delivery: hand a locked file to the front server (``X-Accel-Redirect``, ``X-Sendfile``) instead of
streaming it through a Python worker, and short-lived signed download links any worker or edge checks without the
database.

* :func:`send_allowed_file` is what :func:`~flask_patronlock.locks.send_locked_file` does once the viewer may see
  the file: confine it to ``PATRONLOCK_FILE_ROOT`` and answer as ``PATRONLOCK_FILE_DELIVERY`` says.
* :func:`locked_file_url` issues a signed link to a viewer who may see a lock (:mod:`flask_patronlock.file_links`
  signs and verifies); the ``patronlock_files.signed_file`` endpoint (``PREFIX/files/<path>``) serves it, and
  :func:`send_signed_file` does the same in a view of the app's own.

See ``docs/files.rst`` for the front servers' configuration.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any, cast
from urllib.parse import quote

from flask import Blueprint, Flask, current_app, request, session, url_for
from flask import Response as FlaskResponse
from werkzeug.exceptions import Forbidden, NotFound
from werkzeug.security import safe_join
from werkzeug.utils import send_file as werkzeug_send_file

from .config import as_list
from .errors import ConfigurationError, PatronLockError
from .file_links import InvalidFileLink, derive_key, link_query, normalize_link_path, verify_file_link
from .i18n import gettext
from .locks import Lock, LockedError, LockLike, as_lock, decision_for, lock_exempt

__all__ = [
    "DELIVERIES",
    "FileLinkError",
    "file_url_keys",
    "init_files",
    "locked_file_url",
    "previews_enabled",
    "send_allowed_file",
    "send_image_preview",
    "send_signed_file",
]

log = logging.getLogger("flask_patronlock.files")

#: The values of ``PATRONLOCK_FILE_DELIVERY``.
DELIVERIES = ("python", "x-accel-redirect", "x-sendfile")


class FileLinkError(Forbidden, PatronLockError):
    """A signed download link that is not honoured (altered, expired, or another viewer's): a ``403``, with
    ``reason`` from :class:`~flask_patronlock.file_links.InvalidFileLink`. Handle it with
    ``@app.errorhandler(FileLinkError)`` to send the viewer back to the page that issues fresh links."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        text = (gettext("This download link has expired. Go back to the page you found it on for a new one.")
                if reason == "expired" else gettext("This download link is not valid. Go back to the page you found "
                                                    "it on for a new one."))
        super().__init__(description=text)


# -- where files live --------------------------------------------------------------------------------------------------


def _delivery(app: Flask) -> str:
    value = app.config["PATRONLOCK_FILE_DELIVERY"] or "python"
    if value not in DELIVERIES:
        raise ConfigurationError(
            f"PATRONLOCK_FILE_DELIVERY is {value!r}; it must be one of {', '.join(repr(d) for d in DELIVERIES)}"
        )
    return str(value)


def _root(app: Flask, purpose: str) -> str | None:
    """The real path of ``PATRONLOCK_FILE_ROOT`` (relative: to the app's root path), ``None`` when unset."""
    root = app.config["PATRONLOCK_FILE_ROOT"]
    if root is None or root == "":
        return None
    real = os.path.realpath(os.path.join(app.root_path, os.fspath(root)))
    if not os.path.isdir(real):
        raise ConfigurationError(f"PATRONLOCK_FILE_ROOT is {os.fspath(root)!r}, which is not a directory ({purpose})")
    return real


def _require_root(app: Flask, purpose: str) -> str:
    root = _root(app, purpose)
    if root is None:
        raise ConfigurationError(
            f"PATRONLOCK_FILE_ROOT is not set, but {purpose} needs it: set it to the directory the locked files live "
            "in (the front server's internal location or X-Sendfile path serves that directory only)."
        )
    return root


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _has_control(text: str) -> bool:
    return _CONTROL.search(text) is not None


def _resolve(app: Flask, path: str | os.PathLike[str], directory: str | os.PathLike[str] | None,
             root: str | None) -> tuple[str, str | None]:
    """The real path of the file to send, and its ``/``-separated path under ``root`` (``None`` without a root).

    A path from the URL (``directory`` given) that leaves the directory, names no regular file, holds a control
    character, or (through a symlink) resolves outside ``root`` is a :class:`~werkzeug.exceptions.NotFound`, as
    ``send_from_directory`` answers. A ``path`` given alone is the app's own, so one outside ``root`` is a
    :class:`~flask_patronlock.errors.ConfigurationError`.
    """
    name = os.fspath(path)
    if _has_control(name):  # no honest file name has one; a CR/LF would be a header injection further on
        raise NotFound()
    if directory is not None:
        base = os.path.join(app.root_path, os.fspath(directory))
        joined = safe_join(base, name)  # refuses "..", absolute paths and "\" tricks, as send_from_directory does
        if joined is None:
            raise NotFound()
    else:
        joined = os.path.join(app.root_path, name)
    try:
        real = os.path.realpath(joined, strict=True)
    except (OSError, ValueError):
        raise NotFound() from None
    if not os.path.isfile(real):
        raise NotFound()
    if root is None:
        return real, None
    relative = os.path.relpath(real, root)
    if relative == os.pardir or relative.startswith(os.pardir + os.sep) or os.path.isabs(relative):
        if directory is None:
            raise ConfigurationError(
                f"{name!r} is outside PATRONLOCK_FILE_ROOT ({root}): the front server serves that directory only"
            )
        log.warning("refused %r: it resolves outside PATRONLOCK_FILE_ROOT (a symlink?)", name)
        raise NotFound()
    return real, relative.replace(os.sep, "/")


def _accel_prefix(app: Flask) -> str:
    prefix = str(app.config["PATRONLOCK_X_ACCEL_PREFIX"] or "")
    if not prefix.startswith("/") or _has_control(prefix) or any(c in prefix for c in "?#% \\"):
        raise ConfigurationError(
            f"PATRONLOCK_X_ACCEL_PREFIX is {prefix!r}; it must be a URL path starting with '/' (the internal location "
            "that maps PATRONLOCK_FILE_ROOT), such as '/_patronlock_files/'"
        )
    return prefix if prefix.endswith("/") else prefix + "/"


# -- answering with a file ------------------------------------------------------------------------------------------


def send_allowed_file(
    path: str | os.PathLike[str],
    *,
    directory: str | os.PathLike[str] | None = None,
    **send_kwargs: Any,
) -> FlaskResponse:
    """Send a file the viewer may see, as ``PATRONLOCK_FILE_DELIVERY`` says (what
    :func:`~flask_patronlock.locks.send_locked_file` does once the lock is passed).

    * ``"python"`` (default): Flask's ``send_from_directory`` / ``send_file``, as before; with
      ``PATRONLOCK_FILE_ROOT`` set, only files that really are inside it (symlinks resolved).
    * ``"x-accel-redirect"``: an empty response with ``X-Accel-Redirect: PATRONLOCK_X_ACCEL_PREFIX + <path under
      PATRONLOCK_FILE_ROOT>`` (percent-encoded; nginx decodes it once), for nginx to send the file from its internal
      location.
    * ``"x-sendfile"``: an empty response with ``X-Sendfile: <absolute real path>`` (percent-encoded where the name
      needs it), for Apache's mod_xsendfile or lighttpd.

    Headers that the front servers keep (``Content-Type``, ``Content-Disposition``, ``Cache-Control``) are set here
    as ``send_file`` would; ``Range`` and conditional requests are the front server's to answer.

    :raises werkzeug.exceptions.NotFound: for a file that is missing, or (from the URL) outside ``directory`` or the
        root.
    :raises ConfigurationError: for a bad delivery setting, or a front-server delivery without ``PATRONLOCK_FILE_ROOT``.
    """
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    delivery = _delivery(app)
    if delivery == "python":
        root = _root(app, "send_locked_file")
        if root is None:  # exactly Flask's own behaviour
            from flask import send_file, send_from_directory

            if directory is not None:
                return send_from_directory(directory, path, **send_kwargs)
            return send_file(path, **send_kwargs)
    else:
        root = _require_root(app, f"PATRONLOCK_FILE_DELIVERY = {delivery!r}")
    real, relative = _resolve(app, path, directory, root)
    return _send(app, delivery, real, relative, os.path.basename(os.fspath(path)), send_kwargs)


def _send(app: Flask, delivery: str, real: str, relative: str | None, requested: str,
          send_kwargs: dict[str, Any]) -> FlaskResponse:
    kwargs = dict(send_kwargs)
    # named (and typed) as asked for, as send_from_directory does, not after a symlink's target
    kwargs.setdefault("download_name", requested)
    if delivery == "python":
        from flask import send_file

        return send_file(real, **kwargs)
    kwargs.setdefault("max_age", app.get_send_file_max_age)
    # The front server answers Range and If-* itself, from the file; a 206 or 304 made here would reach the client with
    # the front server's body (or none), so this response is never conditional.
    kwargs["conditional"] = False
    kwargs["etag"] = False
    response = cast(FlaskResponse, werkzeug_send_file(
        real, request.environ, use_x_sendfile=True, response_class=app.response_class, **kwargs
    ))
    del response.headers["X-Sendfile"]
    del response.headers["Content-Length"]  # the front server sets the file's; an empty body must not claim its size
    if delivery == "x-accel-redirect":
        assert relative is not None
        response.headers["X-Accel-Redirect"] = _accel_prefix(app) + quote(relative, safe="/")
    else:
        response.headers["X-Sendfile"] = quote(real, safe="/")
    return response


# -- signed links ----------------------------------------------------------------------------------------------------


def file_url_keys(app: Flask | None = None) -> list[bytes]:
    """The keys signed links are signed (the first) and verified (all) with: ``PATRONLOCK_FILE_URL_KEYS``, else
    keys derived from ``SECRET_KEY`` and ``SECRET_KEY_FALLBACKS`` (:func:`~flask_patronlock.file_links.derive_key`).

    :raises ConfigurationError: when neither is set, or a configured key is shorter than 16 bytes.
    """
    target: Flask = app if app is not None else current_app._get_current_object()  # type: ignore[attr-defined]
    configured = as_list(target.config["PATRONLOCK_FILE_URL_KEYS"], "PATRONLOCK_FILE_URL_KEYS")
    if configured:
        keys = [k.encode() for k in configured]
        if any(len(k) < 16 for k in keys):
            raise ConfigurationError(
                "PATRONLOCK_FILE_URL_KEYS holds a key shorter than 16 bytes; make one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        return keys
    secret = target.config.get("SECRET_KEY")
    if not secret:
        raise ConfigurationError(
            "signed file links need a key: set PATRONLOCK_FILE_URL_KEYS, or the app's SECRET_KEY to derive one from"
        )
    fallbacks = target.config.get("SECRET_KEY_FALLBACKS") or []
    return [derive_key(s) for s in [secret, *fallbacks]]


def _seconds(app: Flask, name: str) -> float:
    value = app.config[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigurationError(f"{name} must be a number of seconds, not {value!r}")
    return float(value)


def locked_file_url(
    lock: LockLike,
    path: str,
    *,
    expires_in: float | None = None,
    endpoint: str = "patronlock_files.signed_file",
    external: bool = False,
    published_at: Any = None,
    **url_values: Any,
) -> str:
    """A signed, short-lived link to ``path`` (under ``PATRONLOCK_FILE_ROOT``) for the current viewer, who must pass
    ``lock`` (a declared name, or a :class:`~flask_patronlock.locks.Lock`)::

        <a href="{{ locked_file_url('premium', 'albums/2026.zip') }}">Download</a>

    Whoever holds the link may fetch the file until it expires (a download manager or a CDN sends no cookie); it
    names the viewer it was issued to, and a different signed-in user presenting it is refused. Keep it short-lived.

    :param expires_in: seconds the link is good for; default ``PATRONLOCK_FILE_URL_SECONDS``, at most
        ``PATRONLOCK_FILE_URL_MAX_SECONDS``.
    :param endpoint: the view that serves it (its URL rule takes ``<path:name>``): the built-in
        ``patronlock_files.signed_file``, or one of the app's own that calls :func:`send_signed_file`.
    :param external: an absolute URL (``url_for(..., _external=True)``).
    :param published_at: when the file was published, for a lock on "patrons at the time this was published"
        (decided now, when the link is issued: the link itself reads no database).
    :raises LockedError: when the viewer may not see ``lock`` (guard links with ``can_view`` in templates).
    :raises ValueError: for a path that could leave the root, or a lifetime over the maximum.
    """
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    target = as_lock(lock)
    decision = decision_for(target, published_at=published_at)
    if not decision.allowed:
        raise LockedError(target, decision)
    relative = normalize_link_path(path)
    lifetime = _seconds(app, "PATRONLOCK_FILE_URL_SECONDS") if expires_in is None else float(expires_in)
    maximum = _seconds(app, "PATRONLOCK_FILE_URL_MAX_SECONDS")
    if not 0 < lifetime <= maximum:
        raise ValueError(f"a file link may live between 1 second and PATRONLOCK_FILE_URL_MAX_SECONDS ({maximum:g} s)")
    expires = int(time.time() + lifetime)
    if decision.comp is not None and decision.comp.expires_at is not None:
        expires = min(expires, int(decision.comp.expires_at.timestamp()))  # a link never outlives the comp behind it
    query = link_query(file_url_keys(app)[0], relative, lock=target.name or "", user_id=_viewer_id() or "",
                       expires=expires)
    return url_for(endpoint, name=relative, _external=external, **url_values, **query)


def _viewer_id() -> str | None:
    """The signed-in local user's id, from Flask-Login's ``current_user`` (loaded if need be), or ``None``."""
    if getattr(current_app, "login_manager", None) is None:
        return None
    from flask_login import current_user

    if not getattr(current_user, "is_authenticated", False):
        return None
    user_id = current_user.get_id()
    return str(user_id) if user_id is not None else None


def _session_user_id() -> str | None:
    """The local user id Flask-Login keeps in the session (no user loaded, no database), or ``None``."""
    value = session.get("_user_id") if current_app.secret_key else None
    return str(value) if value is not None else None


def send_signed_file(name: str, **send_kwargs: Any) -> FlaskResponse:
    """Serve the file of the signed link this request presents: ``name`` is the ``<path:name>`` of the route, the
    link's parameters come from the query string. Checks the signature, the expiry and, when the session names a
    signed-in user, that the link was issued to them; reads no database. Then sends the file from
    ``PATRONLOCK_FILE_ROOT`` as ``PATRONLOCK_FILE_DELIVERY`` says, marked ``Cache-Control: private``.

    ::

        @app.get("/dl/<path:name>")
        @lock_exempt                     # the link is the permission: no site or path lock applies
        def download(name):
            return send_signed_file(name, as_attachment=True)

    :raises FileLinkError: (403) for a link that is not valid.
    :raises werkzeug.exceptions.NotFound: for a file that is not there.
    """
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    root = _require_root(app, "signed file links")
    try:
        link = verify_file_link(
            file_url_keys(app),
            name,
            request.args.to_dict(flat=False),
            leeway=_seconds(app, "PATRONLOCK_FILE_URL_LEEWAY"),
            max_seconds=_seconds(app, "PATRONLOCK_FILE_URL_MAX_SECONDS"),
            user_id=_session_user_id(),
        )
    except InvalidFileLink as exc:
        raise FileLinkError(exc.reason) from None
    real, relative = _resolve(app, link.path, root, root)
    response = _send(app, _delivery(app), real, relative, link.path.rpartition("/")[2], send_kwargs)
    response.cache_control.public = False
    response.cache_control.private = True
    return response


# -- blurred previews of locked images (flask_patronlock.previews) ----------------------------------------------------


def previews_enabled(app: Flask) -> bool:
    """Whether ``send_locked_file`` answers a locked image with a preview (:data:`PATRONLOCK_IMAGE_PREVIEWS`)."""
    from .previews import pillow_available

    setting = app.config["PATRONLOCK_IMAGE_PREVIEWS"]
    return pillow_available() if setting is None else bool(setting)


def _preview_cache(app: Flask) -> Any:
    from .previews import PreviewCache

    directory = app.config["PATRONLOCK_PREVIEW_CACHE_DIR"] or os.path.join(app.instance_path, "patronlock-previews")
    return PreviewCache(os.path.join(app.root_path, os.fspath(directory)),
                        max_bytes=app.config["PATRONLOCK_PREVIEW_CACHE_MAX_BYTES"])


def _preview_size(app: Flask, size: int | None) -> int:
    from .previews import MAX_SIZE, MIN_SIZE

    value = app.config["PATRONLOCK_PREVIEW_SIZE"] if size is None else size
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_SIZE <= value <= MAX_SIZE:
        what = "PATRONLOCK_PREVIEW_SIZE" if size is None else "a preview's size"
        raise ConfigurationError(f"{what} must be a number of pixels from {MIN_SIZE} to {MAX_SIZE}, not {value!r}")
    return int(value)


def send_image_preview(
    lock: LockLike,
    path: str | os.PathLike[str],
    *,
    directory: str | os.PathLike[str] | None = None,
    size: int | None = None,
    status: int = 200,
) -> FlaskResponse:
    """A blurred, downscaled JPEG preview of the image ``path`` (found as :func:`send_allowed_file` finds it: with
    ``directory``, safely inside it, and inside ``PATRONLOCK_FILE_ROOT`` when that is set), with a padlock, "For
    patrons at <tier>" for ``lock`` and the one next step for the current viewer (:mod:`flask_patronlock.previews`).
    Kept in the preview cache per image, size and wording. :func:`~flask_patronlock.locks.send_locked_file` sends it
    (403) to a viewer below the lock; call it yourself for a teaser that everyone sees::

        @app.get("/gallery/<path:name>/teaser")
        def teaser(name):
            return send_image_preview("gold", name, directory="photos")

    :param size: the longer side in pixels (default :data:`PATRONLOCK_PREVIEW_SIZE`).
    :raises werkzeug.exceptions.NotFound: no such file (or outside ``directory`` or the root).
    :raises flask_patronlock.previews.PreviewError: not a JPEG, PNG or WebP image, or too large.
    :raises ConfigurationError: Pillow is not installed, or a bad size.
    """
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    target = as_lock(lock)
    decision = decision_for(target)
    from .banners import banner_context

    context = banner_context(target, decision)
    label = (gettext("For patrons at %(tier)s", tier=context["tier"]) if context.get("tier_obj") is not None
             else gettext("For patrons"))
    detail = str(context.get("action_label") or "")
    real, _relative = _resolve(app, path, directory, _root(app, "send_image_preview"))
    data = _preview_cache(app).get(real, size=_preview_size(app, size), label=label, detail=detail,
                                   max_pixels=int(app.config["PATRONLOCK_PREVIEW_MAX_PIXELS"]))
    response = app.response_class(data, status=status, mimetype="image/jpeg")
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def locked_image_preview(lock: Lock, path: str | os.PathLike[str],
                         directory: str | os.PathLike[str] | None) -> FlaskResponse | None:
    """The 403 preview :func:`~flask_patronlock.locks.send_locked_file` sends a viewer below ``lock``; ``None`` (the
    placeholder then) when there is no such file -- a visitor below a lock learns nothing of which files exist -- or
    no preview can be made of it (logged, saying why)."""
    from .previews import PreviewError

    try:
        return send_image_preview(lock, path, directory=directory, status=403)
    except NotFound:
        return None
    except PreviewError as exc:
        log.warning("no preview of a locked image, so the placeholder was sent: %s", exc)
        return None


blueprint = Blueprint("patronlock_files", __name__)


@blueprint.get("/files/<path:name>")
@lock_exempt  # the link is the permission: no site or path lock applies
def signed_file(name: str) -> FlaskResponse:
    """``GET PREFIX/files/<path>``: a signed link's file (:func:`send_signed_file`)."""
    return send_signed_file(name)


def init_files(app: Flask) -> None:
    """Register ``GET {PATRONLOCK_URL_PREFIX}/files/<path>`` (not when the prefix is ``None``) and the template global
    ``locked_file_url``, and check the delivery setting at start-up."""
    _delivery(app)
    if app.config["PATRONLOCK_IMAGE_PREVIEWS"]:
        from .previews import _pillow

        _pillow()  # asked for previews: say now, not on the first locked image, that Pillow is missing
        _preview_size(app, None)
    app.add_template_global(locked_file_url)
    prefix = app.config.get("PATRONLOCK_URL_PREFIX")
    if prefix is not None:
        app.register_blueprint(blueprint, url_prefix=prefix.rstrip("/") or None)
