"""Signed download links: sign and verify them without Flask, a database or a session.

A link names one file (its path under ``PATRONLOCK_FILE_ROOT``), the lock it was issued for, the local user it was
issued to and the moment it expires, and carries an HMAC-SHA256 of the four under a key only the site (and the edges
it trusts) hold::

    /patreon/files/albums/2026.zip?lock=premium&user=42&expires=1767225600&sig=...

Everything here is pure (the standard library only), so a worker, a separate verifier service or a CDN edge can check
a link with :func:`verify_file_link` (or :func:`verify_file_uri`, from a raw request URI), or by mounting
:func:`auth_request_app` behind nginx's ``auth_request``. See ``docs/files.rst``.

Rules a verifier applies:

* the signature must match under one of the keys (the first signs, every one verifies: rotation), compared in constant
  time;
* the link is good until ``expires`` plus ``leeway`` seconds (the signer's and the verifier's clocks may differ);
* a link that expires more than ``max_seconds`` (+ ``leeway``) from now is refused, whoever signed it: shortening the
  allowed lifetime takes effect at once, for links already issued too;
* given the viewer (``user_id``), the link must have been issued to that viewer (or to an anonymous one, which a
  lock let pass).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = [
    "FileLink",
    "InvalidFileLink",
    "auth_request_app",
    "derive_key",
    "link_query",
    "normalize_link_path",
    "sign_file_link",
    "verify_file_link",
    "verify_file_uri",
]

#: What the signature covers first: a version, so that a future format can never be confused with this one.
SCHEME = "patronlock-file-link/1"

#: The context a key derived from the app's ``SECRET_KEY`` is made for (never the ``SECRET_KEY`` itself, which signs
#: sessions).
DERIVATION_CONTEXT = b"flask-patronlock: signed file links"

#: Query parameter names, in the order links carry them.
PARAMS = ("lock", "user", "expires", "sig")

#: Keys shorter than this are refused: an HMAC key is only as strong as it is long.
MIN_KEY_BYTES = 16


class InvalidFileLink(ValueError):
    """A link that must not be honoured. ``reason`` is one of ``"malformed"``, ``"bad_signature"``, ``"expired"``,
    ``"too_long"`` (expires further ahead than allowed) or ``"other_viewer"``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class FileLink:
    """What a valid link grants: ``path`` (under the file root, ``/``-separated), issued for ``lock`` (``""`` for a
    one-off rule) to local user ``user_id`` (``""``: an anonymous viewer), good until ``expires`` (Unix seconds)."""

    path: str
    lock: str
    user_id: str
    expires: int


def derive_key(secret: str | bytes) -> bytes:
    """The link-signing key derived from ``secret`` (an app's ``SECRET_KEY``): an HMAC of a fixed context, so a link's
    key never signs anything else and the ``SECRET_KEY`` never leaves the app."""
    raw = secret.encode() if isinstance(secret, str) else bytes(secret)
    return hmac.new(raw, DERIVATION_CONTEXT, hashlib.sha256).digest()


def _key_bytes(key: str | bytes) -> bytes:
    raw = key.encode() if isinstance(key, str) else bytes(key)
    if len(raw) < MIN_KEY_BYTES:
        raise ValueError(f"a file-link key must be at least {MIN_KEY_BYTES} bytes long")
    return raw


def normalize_link_path(path: str) -> str:
    """``path`` as links sign it: ``/``-separated, relative, without empty, ``.`` or ``..`` segments, backslashes or
    control characters.

    :raises ValueError: for a path that could name something outside the root, or one no honest file name has.
    """
    if not isinstance(path, str) or not path:
        raise ValueError("a file link needs a file path")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path) or "\\" in path:
        raise ValueError("a file path may not hold control characters or backslashes")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError("a file path must be relative, without empty, '.' or '..' segments")
    return path


def _message(path: str, lock: str, user_id: str, expires: int) -> bytes:
    # A JSON array is unambiguous whatever the strings hold (no separator a value could forge).
    return json.dumps([SCHEME, path, lock, user_id, expires], ensure_ascii=False, separators=(",", ":")).encode()


def _signature(key: bytes, message: bytes) -> str:
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sign_file_link(key: str | bytes, path: str, *, lock: str, user_id: str, expires: int) -> str:
    """The signature of a link to ``path`` for ``lock`` and viewer ``user_id``, good until ``expires`` (Unix seconds),
    under ``key``. :func:`link_query` builds the whole query string.

    :raises ValueError: on a path :func:`normalize_link_path` refuses, or a key shorter than 16 bytes.
    """
    return _signature(_key_bytes(key), _message(normalize_link_path(path), lock, str(user_id), int(expires)))


def link_query(key: str | bytes, path: str, *, lock: str, user_id: str, expires: int) -> dict[str, str]:
    """The query parameters of a signed link (``lock``, ``user``, ``expires``, ``sig``)."""
    sig = sign_file_link(key, path, lock=lock, user_id=user_id, expires=expires)
    return {"lock": lock, "user": str(user_id), "expires": str(int(expires)), "sig": sig}


def _one(query: Mapping[str, Any], name: str) -> str:
    value = query.get(name)
    if isinstance(value, list | tuple):  # parse_qs's lists: exactly one value, or the link is malformed
        if len(value) != 1:
            raise InvalidFileLink("malformed", f"the link needs exactly one {name!r}")
        value = value[0]
    if not isinstance(value, str):
        raise InvalidFileLink("malformed", f"the link has no {name!r}")
    return value


def verify_file_link(
    keys: Sequence[str | bytes],
    path: str,
    query: Mapping[str, Any],
    *,
    now: float | None = None,
    leeway: float = 30,
    max_seconds: float = 86400,
    user_id: str | None = None,
) -> FileLink:
    """Check a link: ``path`` is the file's path under the root (decoded, as routed), ``query`` its parameters (a
    mapping of strings, or of lists as :func:`urllib.parse.parse_qs` gives).

    Pure: reads nothing but its arguments (and the clock when ``now`` is ``None``).

    :param keys: the signing keys; a link signed with any of them is accepted (the first signs: rotation).
    :param now: the time (Unix seconds) to judge expiry at; default ``time.time()``.
    :param leeway: seconds a link is still honoured after ``expires`` (clock skew between signer and verifier).
    :param max_seconds: the longest lifetime allowed: a link expiring later than ``now + max_seconds + leeway`` is
        refused.
    :param user_id: the viewer presenting the link, when known: must be the one it was issued to.
    :returns: the :class:`FileLink` it grants.
    :raises InvalidFileLink: naming why not.
    """
    if not keys:
        raise ValueError("no file-link keys: nothing can be verified")
    try:
        path = normalize_link_path(path)
    except ValueError as exc:
        raise InvalidFileLink("malformed", str(exc)) from None
    lock, link_user, expires_text, sig = (_one(query, name) for name in PARAMS)
    if not expires_text.isascii() or not expires_text.isdigit() or len(expires_text) > 12:
        raise InvalidFileLink("malformed", "the link's expiry is not a time")
    expires = int(expires_text)
    message = _message(path, lock, link_user, expires)
    presented = sig.encode("ascii", "replace")
    matched = False
    for key in keys:  # every key, matched or not: the time taken says nothing about which key or how close
        matched |= hmac.compare_digest(_signature(_key_bytes(key), message).encode("ascii"), presented)
    if not matched:
        raise InvalidFileLink("bad_signature", "the link's signature does not match (altered, or an unknown key)")
    moment = time.time() if now is None else now
    if moment > expires + leeway:
        raise InvalidFileLink("expired", "the link has expired")
    if expires > moment + max_seconds + leeway:
        raise InvalidFileLink("too_long", "the link expires further ahead than links may")
    if user_id is not None and link_user and str(user_id) != link_user:  # "": issued to an anonymous viewer
        raise InvalidFileLink("other_viewer", "the link was issued to someone else")
    return FileLink(path=path, lock=lock, user_id=link_user, expires=expires)


def verify_file_uri(
    keys: Sequence[str | bytes],
    uri: str,
    *,
    prefix: str,
    now: float | None = None,
    leeway: float = 30,
    max_seconds: float = 86400,
    user_id: str | None = None,
) -> FileLink:
    """:func:`verify_file_link` for a raw request URI as a front server sees it (nginx's ``$request_uri``):
    ``prefix`` (e.g. ``"/patreon/files/"``) is stripped from the path, which is then percent-decoded once.

    :raises InvalidFileLink: when the URI is not under ``prefix`` or the link is not valid.
    """
    parts = urlsplit(uri)
    base = prefix if prefix.endswith("/") else prefix + "/"
    if not parts.path.startswith(base):
        raise InvalidFileLink("malformed", "the URI is not under the file links' prefix")
    path = unquote(parts.path[len(base):], errors="strict")
    query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=False)
    return verify_file_link(keys, path, query, now=now, leeway=leeway, max_seconds=max_seconds, user_id=user_id)


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def auth_request_app(
    keys: Sequence[str | bytes],
    *,
    prefix: str,
    header: str = "X-Original-URI",
    leeway: float = 30,
    max_seconds: float = 86400,
) -> WSGIApp:
    """A tiny WSGI app for nginx's ``auth_request``: ``204`` when the URI in the ``header`` request header (set it
    from ``$request_uri``) is a valid link under ``prefix``, else ``403``. No Flask, no database::

        # checker.py, served by any WSGI server (gunicorn checker:app)
        from flask_patronlock.file_links import auth_request_app
        app = auth_request_app(["the same key as PATRONLOCK_FILE_URL_KEYS"], prefix="/patreon/files/")

    The answer carries ``X-Patronlock-User`` and ``X-Patronlock-Lock`` (for nginx's ``auth_request_set``, to log who
    downloaded what) on success, and ``X-Patronlock-Reason`` on refusal.
    """
    checked = [_key_bytes(k) for k in keys]  # a short key fails now, at start-up
    environ_key = "HTTP_" + header.upper().replace("-", "_")

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        raw = environ.get(environ_key, "")
        # WSGI hands header values over as latin-1 decoded text; the URI's bytes are ASCII (percent-encoded) anyway.
        try:
            link = verify_file_uri(checked, raw, prefix=prefix, leeway=leeway, max_seconds=max_seconds)
        except (InvalidFileLink, UnicodeDecodeError) as exc:
            reason = exc.reason if isinstance(exc, InvalidFileLink) else "malformed"
            start_response("403 Forbidden", [("Content-Type", "text/plain"), ("Content-Length", "9"),
                                             ("X-Patronlock-Reason", reason)])
            return [b"forbidden"]
        start_response("204 No Content", [("X-Patronlock-User", _header_safe(link.user_id)),
                                          ("X-Patronlock-Lock", _header_safe(link.lock))])
        return []

    return app


def _header_safe(value: str) -> str:
    """``value`` for a header: printable ASCII kept, anything else percent-encoded (never a CR or LF)."""
    return "".join(c if 0x20 <= ord(c) < 0x7F and c != "%" else "".join(f"%{b:02X}" for b in c.encode())
                   for c in value)
