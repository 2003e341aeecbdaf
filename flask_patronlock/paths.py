"""URL-prefix locks: which locks cover a request path (pure, no Flask).

A path lock must hold for every spelling of a locked URL that reaches the same content. Routes do not all read
their URL alike: ``send_from_directory`` resolves ``.`` and ``..`` and folds ``//`` in a ``<path:...>`` argument, a
case-insensitive file system (macOS, Windows) or database collation ignores case, Windows drops trailing dots and
spaces from file names and reads ``\\`` as ``/``, and an app may percent-decode its argument once more. So a path is
read four ways, and every lock that covers any reading applies:

1. the path as routed (Flask's ``request.path``: the server already decoded it once);
2. *as written*: percent-escapes left in it decoded (a few rounds) and ``\\`` read as ``/``;
3. *as resolved*: reading 2 with empty and ``.`` segments dropped and ``..`` taking back the segment before it (never
   above the root), as ``send_from_directory`` and a POSIX file system do;
4. *as Windows resolves it*: the same, after cutting trailing dots and spaces from each segment.

Each reading, and each prefix (read the same way), is compared case-insensitively and whole segment by whole segment:
``/files/premium`` covers ``/files/premium`` and ``/files/premium/...`` but not ``/files/premium.txt`` or
``/files/premiumx``. For each reading the longest covering prefix wins. Readings 1 and 2 keep a URL that *reads* as
under a locked prefix locked even where its dot segments resolve elsewhere (a route may use its argument as written),
and readings 3 and 4 lock what ``..`` climbs into. An extra reading can only add locks, never remove one.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

__all__ = ["normalize_path_locks", "normalize_prefix", "path_locks_for", "url_key"]

#: How many times a reading decodes the percent-escapes left in a path (an app that decodes its own argument again
#: decodes once; more rounds cost little and are bounded so a long ``%252525...`` path stays cheap).
DECODE_ROUNDS = 3


def normalize_prefix(prefix: object) -> str:
    """``prefix`` in its one stored spelling: surrounding blanks cut, ``\\`` read as ``/``, repeated slashes folded,
    ``.`` and ``..`` segments resolved and no trailing slash (``"/files/./premium/"`` -> ``"/files/premium"``). Letter
    case and percent-escapes are kept as written (matching ignores case and decodes them anyway).

    :raises ValueError: when ``prefix`` is not a string that starts with ``/``, or has a space or control character
        inside (write ``%20``).
    """
    if not isinstance(prefix, str) or not prefix.strip().startswith("/"):
        raise ValueError(f"a path lock's prefix must be a URL path starting with '/', like /members, not {prefix!r}")
    text = prefix.strip()
    if any(c.isspace() or not c.isprintable() for c in text):
        raise ValueError(f"a path lock's prefix cannot contain spaces or control characters (write %20): {prefix!r}")
    return "/" + "/".join(_resolve(text.replace("\\", "/"), trim=False))


def normalize_path_locks(path_locks: Mapping[Any, Any], *, strict: bool = True) -> dict[str, str]:
    """Check a mapping of URL path prefix to lock name and return it with every prefix normalised
    (:func:`normalize_prefix`). The same URL twice with the same lock is kept once.

    :param strict: refuse two spellings of the same URL (case, escapes and dot segments aside) with different locks.
        When ``False`` and there are such spellings, the mapping is returned as given (checked, not normalised): both
        locks apply, as they did when it was stored.
    :raises ValueError: on a bad prefix, an empty lock name, or (``strict``) two spellings of one URL with different
        locks.
    """
    entries = _entries(path_locks)
    out: dict[str, str] = {}
    first_of: dict[str, str] = {}  # url_key -> the first prefix with it
    for prefix, normal, name in entries:
        first = first_of.setdefault(url_key(normal), normal)
        if first == normal and normal not in out:
            out[normal] = name
        elif out[first] != name:
            if strict:
                raise ValueError(
                    f"the path locks {first!r} and {prefix!r} are the same URL with different locks; keep one"
                )
            return {prefix: name for prefix, _normal, name in entries}
    return out


def path_locks_for(path_locks: Mapping[str, str], path: str) -> tuple[str, ...]:
    """The names of the locks that cover ``path`` (a request path, as Flask's ``request.path``), each once: for each
    reading of the path (see the module's docstring) the lock(s) of the longest prefix that covers it.

    :param path_locks: URL path prefix -> lock name (``PATRONLOCK_PATH_LOCKS``, or the settings page's).
    :raises ValueError: when ``path_locks`` holds a bad prefix or lock name (see :func:`normalize_path_locks`).
    """
    if not path_locks:
        return ()
    try:
        table = _table(tuple(path_locks.items()))
    except (AttributeError, TypeError):  # not a mapping, or an unhashable name: say what is wrong
        normalize_path_locks(path_locks)
        raise
    found: list[str] = []
    for reading in _readings(path):
        matched: str | None = None
        for key, name in table:  # longest first, the same keys side by side
            if matched is None:
                if not (reading == key or reading.startswith(key + "/") or key == ""):
                    continue
                matched = key
            elif key != matched:
                break
            if name not in found:
                found.append(name)
    return tuple(found)


def _entries(path_locks: Mapping[Any, Any]) -> list[tuple[str, str, str]]:
    """``(prefix, normalised prefix, lock name)`` of each path lock, checked."""
    if not isinstance(path_locks, Mapping):
        raise ValueError(f"path locks must be a mapping of URL path prefix to lock name, not {path_locks!r}")
    out = []
    for prefix, name in path_locks.items():
        normal = normalize_prefix(prefix)
        if not isinstance(name, str) or not name:
            raise ValueError(f"the path lock of {prefix!r} needs a lock name")
        out.append((prefix, normal, name))
    return out


@functools.lru_cache(maxsize=64)
def _table(items: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """``(url_key, lock name)`` of each prefix, longest key first and equal keys side by side; cached, as the
    prefixes rarely change."""
    keys = {(url_key(normal), name) for _prefix, normal, name in _entries(dict(items))}
    return tuple(sorted(keys, key=lambda kv: (-len(kv[0]), kv)))


def url_key(prefix: str) -> str:
    """What two prefixes share when they lock the same URLs (case, percent-escapes and dot segments aside), which is
    also what request paths are compared with: decoded, resolved, case-folded; ``""`` for the root."""
    resolved = _resolve(_decoded(prefix), trim=False)
    return ("/" + "/".join(resolved)).casefold() if resolved else ""


def _readings(path: str) -> tuple[str, ...]:
    """The path as routed, as written, as resolved and as Windows resolves it, case-folded (see the module's
    docstring); without a trailing slash, as segment-wise matching needs none."""
    written = _decoded(path)
    readings = (
        path.rstrip("/"),
        written.rstrip("/"),
        "/" + "/".join(_resolve(written, trim=False)),
        "/" + "/".join(_resolve(written, trim=True)),
    )
    return tuple(dict.fromkeys(reading.casefold() for reading in readings))


def _decoded(path: str) -> str:
    for _ in range(DECODE_ROUNDS):
        if "%" not in path:
            break
        decoded = unquote(path, errors="surrogateescape")
        if decoded == path:
            break
        path = decoded
    return path.replace("\\", "/")


def _resolve(path: str, *, trim: bool) -> list[str]:
    """The segments of ``path`` with empty and ``.`` segments dropped and ``..`` resolved (never above the root);
    with ``trim``, trailing dots and spaces are cut from each segment first, as Windows does with file names."""
    out: list[str] = []
    for segment in path.split("/"):
        if trim and segment not in (".", ".."):
            segment = segment.rstrip(". ")
        if segment in ("", "."):
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    return out
