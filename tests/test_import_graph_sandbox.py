"""The sandbox's modules import each other without a cycle.

Read from the source (``ast``), not from ``sys.modules``: an import under ``if TYPE_CHECKING:`` or in a class body
counts (it ties the modules together as much as a runtime one); an import inside a function is lazy and does not,
but one that would close a cycle must say why in a comment (on its line or the line above).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import flask_patronlock.sandbox

PACKAGE = "flask_patronlock.sandbox"
SANDBOX_DIR = Path(flask_patronlock.sandbox.__file__).parent

#: an import inside a function: (importing module, imported module, line, the line or the one above has a comment).
Lazy = tuple[str, str, int, bool]


def sandbox_sources() -> dict[str, str]:
    """Every module of the sandbox package by dotted name (the package's ``__init__`` as the package's name)."""
    sources = {}
    for path in sorted(SANDBOX_DIR.glob("*.py")):
        name = PACKAGE if path.stem == "__init__" else f"{PACKAGE}.{path.stem}"
        sources[name] = path.read_text(encoding="utf-8")
    return sources


def _targets(node: ast.Import | ast.ImportFrom, module: str, modules: Mapping[str, str]) -> Iterator[str]:
    """The package's modules an import statement in ``module`` names."""
    if isinstance(node, ast.Import):
        bases = [alias.name for alias in node.names]
        names: list[str] = []
    else:
        if node.level:
            package = module if module == PACKAGE else module.rsplit(".", 1)[0]
            parts = package.split(".")
            package = ".".join(parts[: len(parts) - (node.level - 1)])
            base = f"{package}.{node.module}" if node.module else package
        else:
            base = node.module or ""
        bases = [base]
        names = [alias.name for alias in node.names]
    for base in bases:
        submodules = [f"{base}.{name}" for name in names if f"{base}.{name}" in modules]
        if submodules:  # ``from . import x``: the submodule x
            yield from submodules
        elif base in modules:
            yield base


def import_graph(modules: Mapping[str, str]) -> tuple[dict[str, set[str]], list[Lazy]]:
    """(module-level imports among ``modules``, lazy imports among them)."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    lazy: list[Lazy] = []
    for module, source in modules.items():
        lines = source.splitlines()

        def visit(node: ast.AST, in_function: bool, module: str = module, lines: list[str] = lines) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.Import | ast.ImportFrom):
                    for target in _targets(child, module, modules):
                        if target == module:
                            continue
                        if in_function:
                            above = lines[child.lineno - 2].strip() if child.lineno > 1 else ""
                            commented = "#" in lines[child.lineno - 1] or above.startswith("#")
                            lazy.append((module, target, child.lineno, commented))
                        else:
                            graph[module].add(target)
                visit(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

        visit(ast.parse(source), False)
    return graph, lazy


def find_path(graph: Mapping[str, set[str]], start: str, goal: str) -> list[str] | None:
    """A chain of imports from ``start`` to ``goal``, or None."""
    stack = [[start]]
    seen = {start}
    while stack:
        path = stack.pop()
        if path[-1] == goal:
            return path
        for nxt in sorted(graph.get(path[-1], ())):
            if nxt not in seen:
                seen.add(nxt)
                stack.append([*path, nxt])
    return None


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One import cycle (``[a, b, ..., a]``), or None."""
    for module in sorted(graph):
        for target in sorted(graph[module]):
            back = find_path(graph, target, module)
            if back is not None:
                return [module, *back]
    return None


def uncommented_cycle_closers(graph: Mapping[str, set[str]], lazy: list[Lazy]) -> list[str]:
    """Lazy imports that would close a cycle and give no reason in a comment."""
    return [
        f"{module}:{line} imports {target} lazily, closing {' -> '.join([module, *path])}, with no comment saying why"
        for module, target, line, commented in lazy
        if not commented and (path := find_path(graph, target, module)) is not None
    ]


def test_no_import_cycle_among_the_sandbox_modules() -> None:
    graph, _ = import_graph(sandbox_sources())
    assert len(graph) >= 10, sorted(graph)  # the package was read
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle or ())


def test_a_lazy_import_that_would_close_a_cycle_says_why() -> None:
    graph, lazy = import_graph(sandbox_sources())
    assert uncommented_cycle_closers(graph, lazy) == []


def test_records_import_no_sandbox_module_and_documents_and_webhooks_not_the_facade() -> None:
    graph, _ = import_graph(sandbox_sources())
    assert graph[f"{PACKAGE}.entities"] == set()
    for module in ("core", "documents", "webhooks"):
        assert f"{PACKAGE}.state" not in graph[f"{PACKAGE}.{module}"], module


# the checks themselves, on small made-up packages (the old sandbox's shape among them), so they can fail


def test_the_check_finds_a_cycle_through_a_type_checking_import() -> None:
    old_shape = {
        PACKAGE: "from .state import Sandbox\n",
        f"{PACKAGE}.state": "from .documents import iso\nfrom .webhooks import WebhookDispatcher\n",
        f"{PACKAGE}.documents": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .state import Member, Sandbox\n"
        ),
        f"{PACKAGE}.webhooks": "from .documents import render_webhook_member\n",
    }
    graph, _ = import_graph(old_shape)
    assert graph[f"{PACKAGE}.documents"] == {f"{PACKAGE}.state"}
    cycle = find_cycle(graph)
    assert cycle is not None
    assert cycle[0] == cycle[-1] and f"{PACKAGE}.state" in cycle and f"{PACKAGE}.documents" in cycle


def test_the_check_resolves_package_relative_and_absolute_imports() -> None:
    modules = {
        PACKAGE: "from . import app\n",
        f"{PACKAGE}.app": "from flask_patronlock.sandbox import state\nfrom ..dates import add_months\n",
        f"{PACKAGE}.state": "import flask_patronlock.sandbox.app\n",
    }
    graph, _ = import_graph(modules)
    assert graph == {
        PACKAGE: {f"{PACKAGE}.app"},
        f"{PACKAGE}.app": {f"{PACKAGE}.state"},
        f"{PACKAGE}.state": {f"{PACKAGE}.app"},
    }
    assert find_cycle(graph) is not None


def test_a_lazy_import_closing_a_cycle_needs_a_comment() -> None:
    def modules(lazy_import: str) -> dict[str, str]:
        return {
            f"{PACKAGE}.state": f"def scenario():\n{lazy_import}    return play()\n",
            f"{PACKAGE}.scenarios": "from .state import Sandbox\n",
            f"{PACKAGE}.server": "def serve():\n    from .state import Sandbox\n",
        }

    graph, lazy = import_graph(modules("    from .scenarios import play\n"))
    assert find_cycle(graph) is None  # lazy imports are not edges
    [problem] = uncommented_cycle_closers(graph, lazy)  # server's lazy import closes nothing
    assert problem.startswith(f"{PACKAGE}.state:2 imports {PACKAGE}.scenarios lazily")

    graph, lazy = import_graph(modules("    # scenarios import this module's type\n    from .scenarios import play\n"))
    assert uncommented_cycle_closers(graph, lazy) == []
