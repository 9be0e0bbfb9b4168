"""The package's layers point one way: a contract on the import graph, read from the source.

Lowest first: errors; configuration; the session core (store, codec, crypto, the provider
protocol, the memory provider, statistics), which knows nothing of Redis; the Redis core (the
only code that imports redis-py or hiredis, and within it only ``_wire`` touches redis-py's
internals); the opener, which turns a config into a store on the right provider; the web core
(cookies, merge, the request lifecycle: no web framework imported); the web framework
adapters; the operator commands (check, stats); the public package. A module may import its
own layer or lower ones, never higher; no import cycle at all; no import inside a function
that would hide one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import attrs
import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "redis_session"

#: Every module of the package, in its layer, lowest first.
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("errors", frozenset({"_errors", "_version"})),
    (
        "config",
        frozenset(
            {
                "_config",
                "_durations",
                "_config_names",
                "_config_rules",
                "_config_converter",
                "_config_loading",
                "_domains",
            }
        ),
    ),
    (
        "session core",
        frozenset({"_statistics", "_provider", "_codec", "_crypto", "_ids", "_memory", "_store"}),
    ),
    (
        "redis core",
        frozenset(
            {
                "_wire",
                "_slots",
                "_backoff",
                "_tasks",
                "_stalls",
                "_fence",
                "_pool",
                "_tls",
                "_spec",
                "_scripts",
                "_sentinel",
                "_routing",
                "_topology",
                "_cluster",
                "_connections",
                "_redis_provider",
                # Per-node access for the operator commands (check, stats).
                "_probe",
            }
        ),
    ),
    ("opener", frozenset({"_opener"})),
    # The framework-neutral web core: cookies, merge, the per-request session, the lifecycle.
    ("web", frozenset({"_cookies", "_merge", "_web_session", "_web"})),
    # One adapter per framework family, each on the neutral core.
    ("web frameworks", frozenset({"asgi", "aiohttp"})),
    # The operator commands (check, stats, sessions): beside the entry point, above everything
    # they use.
    (
        "command line",
        frozenset(
            {"_cli", "_cli_report", "_cli_nodes", "_cli_check", "_cli_stats", "_cli_sessions"}
        ),
    ),
    ("package", frozenset({"__init__", "__main__"})),
)
#: Third-party packages only the Redis core may import.
REDIS_CLIENTS = frozenset({"redis", "hiredis"})
#: Web frameworks: none is imported anywhere, except by the adapter module named after it.
WEB_FRAMEWORKS = frozenset({"aiohttp", "starlette", "fastapi", "litestar", "django", "quart"})
#: Attributes that are redis-py's (or asyncio's) private state: ``_wire`` alone reads them.
PRIVATE_STATE = frozenset({"_reader", "_writer", "_parser", "_connection_arguments", "_buffer"})
#: Imports inside a function that are fine: optional or deliberately lazy, never ours hiding
#: a cycle (``__main__`` imports the opener late, and ``_cli`` each command's module, so that
#: ``--help`` stays instant).
LAZY_OK = frozenset(
    {
        ("__main__", "_opener"),
        ("_cli", "_cli_check"),
        ("_cli", "_cli_stats"),
        ("_cli", "_cli_sessions"),
    }
)


@attrs.frozen
class Import:
    """One import statement: who imports what, and whether at module level."""

    importer: str
    imported: str  # our module ("_pool") or a top-level package ("redis")
    line: int
    in_function: bool
    #: Whether ``imported`` is one of our modules (``aiohttp`` may be either).
    ours: bool = True


def imports_of(module: str, source: str) -> Iterator[Import]:
    """Every import in ``source`` (module ``module`` of the package)."""
    tree = ast.parse(source)
    functions = {
        id(node)
        for fn in ast.walk(tree)
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
        for node in ast.walk(fn)
    }
    for node in ast.walk(tree):
        inside = id(node) in functions
        if isinstance(node, ast.ImportFrom):
            if node.level:  # from ._pool import x / from . import _pool
                if node.module:
                    yield Import(module, node.module.split(".")[0], node.lineno, inside)
                else:
                    for alias in node.names:
                        yield Import(module, alias.name, node.lineno, inside)
            elif node.module:
                top = node.module.split(".")[0]
                if top == "redis_session":
                    rest = node.module.split(".")[1:]
                    yield Import(module, rest[0] if rest else "__init__", node.lineno, inside)
                else:
                    yield Import(module, top, node.lineno, inside, ours=False)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                # import redis_session._pool: an edge to _pool, as from-imports are.
                ours = parts[0] == "redis_session" and len(parts) > 1
                yield Import(module, parts[1] if ours else parts[0], node.lineno, inside, ours=ours)


def private_state_reads(module: str, source: str) -> Iterator[tuple[str, int]]:
    """``(attribute, line)`` for each read of :data:`PRIVATE_STATE` on another object."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in PRIVATE_STATE:
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id == "self":
                continue  # our own class's attribute of that name
            yield node.attr, node.lineno


def violations(
    layers: Iterable[tuple[str, frozenset[str]]], imports: Iterable[Import]
) -> list[str]:
    """Every broken rule of the contract, in words (empty: the graph is sound)."""
    rank = {m: (i, name) for i, (name, modules) in enumerate(layers) for m in modules}
    found: list[str] = []
    edges: dict[str, set[str]] = {}
    for imp in imports:
        where = f"{imp.importer}.py:{imp.line}"
        if imp.ours and imp.imported in rank:
            (low, low_name), (high, high_name) = rank[imp.imported], rank[imp.importer]
            if low > high:
                found.append(
                    f"{where}: {imp.importer} ({high_name}) imports {imp.imported} "
                    f"({low_name}), a higher layer"
                )
            if imp.in_function and (imp.importer, imp.imported) not in LAZY_OK:
                found.append(f"{where}: {imp.importer} imports {imp.imported} inside a function")
            edges.setdefault(imp.importer, set()).add(imp.imported)
        elif imp.imported in REDIS_CLIENTS and rank[imp.importer][1] != "redis core":
            found.append(f"{where}: {imp.importer} imports {imp.imported} outside the Redis core")
        elif imp.imported in WEB_FRAMEWORKS and imp.imported != imp.importer:
            # The store installs no web framework, and the ASGI middleware is pure ASGI: only
            # a framework's own adapter module (aiohttp.py) may import that framework.
            found.append(f"{where}: {imp.importer} imports the web framework {imp.imported}")
    found.extend(f"import cycle: {' -> '.join(c)}" for c in _cycles(edges))
    return found


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    return cycles


def package_imports() -> list[Import]:
    return [
        imp
        for path in sorted(PACKAGE.glob("*.py"))
        for imp in imports_of(path.stem, path.read_text(encoding="utf-8"))
    ]


def test_every_module_has_a_layer() -> None:
    """A new module must be placed in a layer: the contract covers the whole package."""
    placed = set().union(*(modules for _, modules in LAYERS))
    present = {p.stem for p in PACKAGE.glob("*.py")}
    assert present - placed == set(), "modules in no layer"
    assert placed - present == set(), "layers name modules that no longer exist"


def test_the_import_graph_keeps_the_contract() -> None:
    """Imports go down or across, never up; no cycle; redis-py only in the Redis core."""
    assert violations(LAYERS, package_imports()) == []


def test_only_the_wire_module_reads_redis_pys_private_state() -> None:
    """``_wire`` is the one place a redis-py release can break by moving its internals."""
    found = [
        f"{path.stem}.py:{line}: .{attr}"
        for path in sorted(PACKAGE.glob("*.py"))
        if path.stem != "_wire"
        for attr, line in private_state_reads(path.stem, path.read_text(encoding="utf-8"))
    ]
    assert found == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # The session core reaching up into the Redis core: a back-edge.
        ("from ._pool import NodePool\n", "_store (session core) imports _pool (redis core)"),
        # A lazy import to dodge a cycle.
        ("def f():\n    from ._codec import Codec\n", "_store imports _codec inside a function"),
        # The redis client outside the Redis core.
        ("import redis.asyncio\n", "_store imports redis outside the Redis core"),
        # A back-edge by absolute module import.
        ("import redis_session._pool as p\n", "_store (session core) imports _pool"),
        # A web framework below the web adapters.
        ("from starlette.requests import Request\n", "_store imports the web framework"),
    ],
    ids=["back-edge", "hidden-import", "redis-outside-core", "absolute-import", "framework"],
)
def test_the_contract_fails_on_a_broken_rule(source: str, expected: str) -> None:
    """The check itself: each kind of violation, planted in the store's module, is reported."""
    planted = [imp for imp in package_imports() if imp.importer != "_store"]
    planted += list(imports_of("_store", source))
    found = violations(LAYERS, planted)
    assert any(expected in line for line in found), found


def test_the_contract_finds_a_cycle() -> None:
    """A cycle inside one layer is reported with its path."""
    imports = [Import("_pool", "_wire", 1, False), Import("_wire", "_pool", 1, False)]
    assert violations(LAYERS, imports) == ["import cycle: _pool -> _wire -> _pool"]
