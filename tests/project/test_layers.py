"""The package's layers, read from its source: no import cycle, and no request globals below the request layer.

Only imports that run when a module is loaded count: top-level ones (also inside ``try``/``if`` at the top level),
not ``if TYPE_CHECKING:`` blocks (never run) nor imports inside functions (run when called, after every module is
loaded). Each check is a function of a graph, so the tests below also show it failing on a made-up one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "flask_patronlock"

#: Modules in the request layer and above, which may import ``flask.request``, ``flask.g`` and ``flask.session``
#: (a name, or a prefix ending in "." for a package's modules). Everything else is below it.
REQUEST_LAYER = (
    "__init__",
    "extension",  # the composition root
    "locks",  # decisions of the current request, the @locked decorator, the path-lock hook
    "viewers",  # the current request's viewer
    "banners",
    "templating",
    "oauth",  # the OAuth state kept in the session
    "csrf",  # the CSRF check of the connect flow's and the settings page's forms
    "feeds",  # a private feed's token names the request's viewer
    "entitlements",  # the token endpoint and issuing a token to the current viewer
    "addons",  # disabled add-ons' blueprints answer 404 before their views
    "webhooks",  # the receiving route (processing takes the state)
    "health",  # the health view (the report takes the state)
    "files",  # locked files handed to the front server, signed links checked against the request
    "views",
    "views.",
    "admin.",
    "contrib.",
    "content",  # the lock picker (a form field, on the settings page's forms) and the content model mixin
    "sandbox.app",  # the offline Patreon's own web server, and its page groups:
    "sandbox.web",
    "sandbox.api",
    "sandbox.authorize",
    "sandbox.controls",
)

#: Modules below the request layer, named so that a new module is placed on purpose: the test fails on one that is in
#: neither list.
BELOW_REQUEST = (
    "accounts",
    "catalogue",
    "comps",  # comps granted by hand: the store's tables and the settings version, through the state
    "dbutil",
    "formatting",
    "i18n",  # the package's gettext domain and the locale (Flask-Babel's, read through the app, not the request)
    "insight",  # the dashboard's figures (pure functions over audit rows) and the banner-view table's one writer
    "runs",
    "story",  # the explainer's answer in sentences (pure)
    "transitions",
    "cli",
    "collector",  # the reconcile run's gc.freeze() around itself: the standard library only
    "config",
    "creator",
    "crypto",
    "data",  # the add-on data API (PatronData): reads through the state
    "dates",
    "declarations",
    "errors",
    "entitlement_tokens",  # signing and checking entitlement tokens: PyJWT only, no app
    "explain",
    "file_links",  # signing and checking download links: the standard library only
    "firstseen",
    "jobs",
    "leases",
    "livecheck",
    "models",
    "pacing",
    "paths",
    "patron",
    "policy",
    "previews",  # blurred previews of locked images and their disk cache: Pillow only, no app
    "settings",
    "settings_cache",
    "signals",
    "whatif",  # who a proposed lock or policy change would let in or shut out: decide over the stored patrons
    "state",
    "store",
    "store.",
    "sync",
    "tokens",
    "viewer_cache",
    "patreon.",
    "sandbox.",
)

REQUEST_GLOBALS = frozenset({"request", "g", "session"})


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _load_time_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements among ``body`` that run when the module is loaded."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _load_time_imports(node.body)
            yield from _load_time_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _load_time_imports(block)


def _package_modules() -> dict[str, tuple[Path, ast.Module]]:
    return {_module_name(p): (p, ast.parse(p.read_text(encoding="utf-8"))) for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module: str, is_package: bool, node: ast.ImportFrom, known: set[str]) -> list[str]:
    """The package modules an ``import from`` loads (the module, and names that are submodules)."""
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
        target = ".".join([*base, *([node.module] if node.module else [])])
    elif node.module and node.module.startswith("flask_patronlock"):
        target = node.module[len("flask_patronlock") :].lstrip(".")
    else:
        return []
    submodules = [m for m in (f"{target}.{a.name}" if target else a.name for a in node.names) if m in known]
    # ``from . import api`` names only submodules: the package itself is already being loaded (a parent package is
    # always imported before its modules), so it adds no edge; a name that is not a submodule reads the package.
    reads_package = node.module is not None or len(submodules) < len(node.names)
    found = [target or "__init__"] if reads_package and (target or "__init__") in known else []
    return list(dict.fromkeys(found + submodules))


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports when loaded (a package's ``__init__`` is named by the package)."""
    modules = _package_modules()
    known = set(modules)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, (path, tree) in modules.items():
        is_package = path.name == "__init__.py"
        for node in _load_time_imports(tree.body):
            if isinstance(node, ast.ImportFrom):
                graph[name].update(m for m in _resolve(name, is_package, node, known) if m != name)
            else:
                for alias in node.names:
                    if alias.name.startswith("flask_patronlock."):
                        target = alias.name[len("flask_patronlock.") :]
                        if target in known and target != name:
                            graph[name].add(target)
    return graph


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (``[a, b, ..., a]``), or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)) is not None:
            return found
    return None


def _layer_of(module: str, names: tuple[str, ...]) -> bool:
    return any(module == n or (n.endswith(".") and f"{module}.".startswith(n)) for n in names)


def request_globals_below(modules: Mapping[str, ast.Module]) -> list[str]:
    """``module: name`` for every request global imported from flask at load time below the request layer."""
    found = []
    for name, tree in modules.items():
        if _layer_of(name, REQUEST_LAYER):
            continue
        for node in _load_time_imports(tree.body):
            if isinstance(node, ast.ImportFrom) and node.module in ("flask", "flask.globals"):
                found += [f"{name}: {a.name}" for a in node.names if a.name in REQUEST_GLOBALS]
    return found


def test_the_package_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_check_finds_a_cycle() -> None:
    assert find_cycle({"state": {"store"}, "store": {"settings"}, "settings": {"state"}}) == [
        "settings", "state", "store", "settings"
    ]
    assert find_cycle({"extension": {"state", "locks"}, "locks": {"state"}, "state": set()}) is None


def test_the_graph_sees_relative_and_absolute_imports() -> None:
    graph = import_graph()
    assert "state" in graph["locks"] and "store" in graph["state"]  # from .state import ...; from .store import ...
    assert "extension" not in graph["state"]  # only under TYPE_CHECKING there
    assert "state" in graph["admin.blueprint"]  # from ..state import ...
    assert "patreon.client" in graph["patreon"]  # a package's __init__: from .client import ...


def test_every_module_is_placed_in_a_layer() -> None:
    unplaced = [m for m in _package_modules() if not _layer_of(m, REQUEST_LAYER) and not _layer_of(m, BELOW_REQUEST)]
    assert not unplaced, f"place these modules in REQUEST_LAYER or BELOW_REQUEST of {__file__}: {unplaced}"


def test_no_module_below_the_request_layer_imports_request_globals() -> None:
    modules = {name: tree for name, (_path, tree) in _package_modules().items()}
    assert request_globals_below(modules) == []


def test_the_request_globals_check_finds_one() -> None:
    source = """
from flask import Flask, current_app, request
try:
    from flask import g
except ImportError:
    pass
if TYPE_CHECKING:
    from flask import session
"""
    tree = ast.parse(source)
    assert request_globals_below({"store": tree}) == ["store: request", "store: g"]
    assert request_globals_below({"locks": tree}) == []  # the request layer may


@pytest.mark.parametrize("module", ["state", "store", "settings_cache", "declarations", "tokens", "creator"])
def test_the_state_and_what_it_stands_on_never_import_a_layer_above(module: str) -> None:
    above = {"extension", "locks", "viewers", "views", "admin", "banners", "templating", "addons", "jobs", "cli",
             "accounts", "sync", "webhooks", "health", "settings"}
    graph = import_graph()
    reachable, todo = set(), [module]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in reachable:
                reachable.add(nxt)
                todo.append(nxt)
    assert not {m for m in reachable if m.split(".")[0] in above}


#: A module longer than this says at the top of its docstring why it is one module ("Over 600 lines: ...").
LONG_MODULE_LINES = 600


def long_modules_without_a_reason(modules: Mapping[str, tuple[int, ast.Module]]) -> list[str]:
    """The modules over :data:`LONG_MODULE_LINES` lines whose docstring gives no "Over 600 lines:" reason."""
    return sorted(
        f"{name} ({lines} lines)"
        for name, (lines, tree) in modules.items()
        if lines > LONG_MODULE_LINES and "Over 600 lines:" not in (ast.get_docstring(tree) or "")
    )


def test_every_long_module_says_why_it_is_one_module() -> None:
    modules = {
        name: (len(path.read_text(encoding="utf-8").splitlines()), tree)
        for name, (path, tree) in _package_modules().items()
    }
    assert long_modules_without_a_reason(modules) == []


def test_the_long_module_check_finds_one() -> None:
    told = ast.parse('"""Parses.\n\nOver 600 lines: one parser per kind would repeat the checks."""')
    silent = ast.parse('"""Parses."""')
    modules = {"told": (900, told), "silent": (601, silent), "short": (600, silent)}
    assert long_modules_without_a_reason(modules) == ["silent (601 lines)"]
