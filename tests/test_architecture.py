"""Design rules that keep the code easy to change, checked on the source itself.

- Imports run down the request's flow: each part of `gateway/` may import only the
  parts listed for it in `ALLOWED` (a part is a subpackage or a top-level module).
- No import cycle between modules, counting every import: lazy ones inside functions
  and `TYPE_CHECKING` ones too (a cycle there still ties the modules together).
- Pure cores do no I/O; vendor differences are provider methods, not `kind` branches.

The checks are plain functions over an import graph, so the tests at the end can show
that each one fails on a graph that breaks its rule.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

GATEWAY = Path(__file__).parent.parent / "gateway"

# Each part, with the parts it may import. Read bottom-up: errors and store know
# nothing of requests; config is data; openai is the client-facing contract; providers
# translate; upstream sends; billing counts and charges; state ties them together
# for one worker; api serves requests from it; app and __main__ start everything.
# The server knows only HTTP and ASGI (and the error shape), and shares with upstream
# one I/O primitive below everything: readiness (many sockets watched from one task).
LOW = {"__init__", "errors"}
ALLOWED: dict[str, set[str]] = {
    "__init__": set(),
    "errors": set(),
    "store": set(),
    "config": {"store"},  # the Redis URL parser, to check [state] redis_url at load
    "openai": set(),
    "tokens": set(),
    "auth": {"config", "store"},
    "providers": {"config", "openai", "tokens"},
    "upstream": {"config", "providers", "openai", "offload", "observability", "readiness"},
    # The Responses API's pure core: its request schema is built from the chat
    # validator's rules (openai), and it bridges through the providers' chat
    # translation (providers: the interface, the SSE skeleton of the native relay).
    "responses": {"openai", "providers"},
    "offload": set(),  # runs O(size) steps of big requests in worker threads
    "readiness": set(),  # one epoll set and one task for many sockets (server, pump)
    "observability": {"config"},  # request ids, logs, metrics, traces: below all that uses it
    "billing": {"config", "store", "auth", "providers", "tokens", "offload"},
    "state": {
        "config",
        "store",
        "auth",
        "billing",
        "providers",
        "tokens",
        "upstream",
        "offload",
        "observability",
    },
    # The web console: pages over the admin API's own code (api/key_admin.py), the
    # router's routes, health and metrics; served beside api, so it sits above it.
    "console": {
        "config",
        "store",
        "auth",
        "providers",
        "upstream",
        "billing",
        "observability",
        "state",
        "api",
    },
    "api": {
        "config",
        "store",
        "openai",
        "auth",
        "providers",
        "upstream",
        "billing",
        "state",
        "offload",
        "observability",
        "responses",  # POST /v1/responses and its stored responses
    },
    "server": {"readiness"},
    "cli": {"config", "store", "auth", "billing"},
    "app": {"config", "api", "console", "state", "billing", "store", "tokens", "observability"},
    "__main__": {"config", "app", "server", "cli", "store", "observability"},
}
PURE = [
    "errors.py",
    "config",
    "openai",
    "providers",
    "responses",
    "tokens",
    "auth/keys.py",
    "auth/principal.py",
    "auth/manage.py",
    "billing/spend.py",
    "billing/report.py",
    "billing/limits/budget.py",
    "billing/limits/core.py",
    "billing/limits/gcra.py",
    "billing/limits/responses.py",
    "store/records.py",
    "store/periods.py",
    "store/redis_url.py",
    "upstream/router.py",
    "upstream/surface.py",
    "upstream/health.py",
    "upstream/retry.py",
    "upstream/retry_budget.py",
    "upstream/strategies.py",
    "observability/record.py",
    "observability/traces.py",
    "upstream/unknown_model.py",
    "upstream/chunked.py",
    "upstream/http1.py",
    "server/framing.py",
    "server/http11.py",
    "console/session.py",
    "console/forms.py",
    "console/examples.py",
    "console/svg.py",
    "console/models_view.py",
]
IO_MODULES = {"trio", "httpx", "quart", "quart_trio", "hypercorn", "anyio", "socket", "sqlite3"}

Graph = dict[str, set[str]]


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def import_graph(root: Path) -> Graph:
    """Module -> the modules of the same root package it imports, every import counted."""
    package = root.name
    modules = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: Graph = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import mod` imports the module when `pkg.mod` is one.
                targets = [
                    f"{node.module}.{a.name}"
                    if f"{node.module}.{a.name}" in modules
                    else node.module
                    for a in node.names
                ]
            for target in targets:
                if target == package or target.startswith(package + "."):
                    while target not in modules and "." in target:
                        target = target.rsplit(".", 1)[0]
                    if target != name:
                        deps.add(target)
        graph[name] = deps
    return graph


def part_of(module: str) -> str:
    """The part a module belongs to: `gateway.billing.limits.core` -> `billing`."""
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def wrong_way_imports(graph: Graph, allowed: Mapping[str, set[str]]) -> list[str]:
    """Every import from one part into another that `allowed` does not list."""
    found = []
    for module, deps in sorted(graph.items()):
        src = part_of(module)
        for dep in sorted(deps):
            dst = part_of(dep)
            if dst == src or dst in LOW:
                continue
            if src not in allowed or dst not in allowed[src]:
                found.append(f"{module} imports {dep} ({src} may not import {dst})")
    return found


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan), as sorted lists."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


# ------------------------------------------------------------------ on the real code

GRAPH = import_graph(GATEWAY)


def test_every_part_is_in_the_table() -> None:
    parts = {part_of(m) for m in GRAPH}
    assert parts == set(ALLOWED), "a new part of gateway/: give it a row in ALLOWED"


def test_the_table_itself_has_no_cycle() -> None:
    assert find_cycles(ALLOWED) == []


def test_imports_run_down_the_flow() -> None:
    assert wrong_way_imports(GRAPH, ALLOWED) == []


def test_no_import_cycle_between_modules() -> None:
    assert find_cycles(GRAPH) == []


def pure_files() -> list[Path]:
    out: list[Path] = []
    for name in PURE:
        path = GATEWAY / name
        out.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return out


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", pure_files(), ids=lambda p: str(p.relative_to(GATEWAY)))
def test_pure_modules_do_no_io(path: Path) -> None:
    assert not imported_roots(path) & IO_MODULES


def test_pure_modules_import_only_pure_modules() -> None:
    pure = {module_name(p, GATEWAY) for p in pure_files()}
    for module in pure:
        impure = {d for d in GRAPH[module] if d not in pure and part_of(d) not in LOW}
        assert not impure, f"{module} is pure but imports {sorted(impure)}"


VENDOR_KINDS = {"openai", "anthropic", "gemini", "mock"}


def kind_branches(path: Path) -> list[int]:
    """Lines comparing something's `.kind` with a provider kind name."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Compare)
            and isinstance(node.left, ast.Attribute)
            and node.left.attr == "kind"
            and any(
                isinstance(c, ast.Constant) and c.value in VENDOR_KINDS for c in node.comparators
            )
        ):
            lines.append(node.lineno)
    return lines


def test_no_vendor_branches_outside_providers() -> None:
    """Per-vendor differences are provider methods, not `if x.kind == "..."` branches."""
    for path in GATEWAY.rglob("*.py"):
        assert not kind_branches(path), f"{path}: {kind_branches(path)}"


MAX_LINES = 700


def test_no_module_is_a_monolith() -> None:
    long = {
        str(p.relative_to(GATEWAY))
        for p in GATEWAY.rglob("*.py")
        if len(p.read_text().splitlines()) > MAX_LINES
    }
    assert long == set()


# ------------------------------------------------------- the checks catch what they should


def write_package(root: Path, files: Mapping[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_a_cycle_is_found_even_through_type_checking_and_lazy_imports(tmp_path: Path) -> None:
    pkg = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from pkg.b import x\n",
            "b.py": "import typing\nif typing.TYPE_CHECKING:\n    from pkg.c import y\n",
            "c.py": "def f():\n    import pkg.a\n",
            "d.py": "from pkg import a\n",
        },
    )
    graph = import_graph(pkg)
    assert graph["pkg.d"] == {"pkg.a"}  # `from pkg import a` is an import of pkg.a
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_a_wrong_way_import_is_named(tmp_path: Path) -> None:
    pkg = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "errors.py": "",
            "store/__init__.py": "",
            "store/sqlite.py": "from pkg.billing.ledger import Ledger\nfrom pkg.errors import E\n",
            "billing/__init__.py": "",
            "billing/ledger.py": "from pkg.store.sqlite import S\n",
        },
    )
    graph = import_graph(pkg)
    found = wrong_way_imports(graph, {"store": set(), "billing": {"store"}})
    assert found == ["pkg.store.sqlite imports pkg.billing.ledger (store may not import billing)"]
    assert find_cycles(graph) == [["pkg.billing.ledger", "pkg.store.sqlite"]]
