"""The direction of every import shows the architecture (docs/architecture.md): ``ml`` is
torch only, ``service`` never imports ``workers``, ``workers`` is the runtime and holds no
SQL (no SQLAlchemy, no tables), and no module imports itself back through others. Every
import counts, a function-level one too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ml", "service", "workers")
# What each layer must never import, first-party or not (a module or any module under it).
FORBIDDEN = {
    "ml": ("service", "workers", "sqlalchemy", "fastapi", "starlette", "celery", "redis"),
    "service": ("workers", "celery"),
    "workers": ("sqlalchemy", "service.tables"),
}


def _under(target: str, banned: tuple[str, ...]) -> bool:
    return any(target == b or target.startswith(f"{b}.") for b in banned)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module ``name`` imports: first-party ones resolved to modules where the
    imported name is a module (``from pkg import module``), third-party ones as named."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = name if is_package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}".strip(".")
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in known else base)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_no_module_imports_itself_back():
    assert _cycles(_graph()) == []


@pytest.mark.parametrize("layer", PACKAGES)
def test_layers_import_only_downwards(layer):
    banned = FORBIDDEN[layer]
    offending = sorted(
        f"{module} imports {target}"
        for module, targets in _graph().items()
        if module.split(".")[0] == layer
        for target in targets
        if _under(target, banned)
    )
    assert offending == []


def test_the_checks_see_a_circle_and_a_layer_breach():
    """The checks themselves can fail: a made-up circle and breach are found."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    lifecycle = ROOT / "service" / "jobs" / "lifecycle.py"
    known = set(_modules())
    assert "service.outbox" in _imports("service.jobs.lifecycle", lifecycle, known)
    assert _under("service.tables", FORBIDDEN["workers"])
    assert not _under("service.tablesque", FORBIDDEN["workers"])
