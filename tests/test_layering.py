"""The house's floors (DESIGN.md section 1), checked on the package's source with ``ast``.

A module may import only from its own floor or below, and the module import graph has no circle. Every import is
counted, also one inside a function (those are allowed only for optional dependencies, which are not probinv modules),
so a future import that breaks the layering fails here.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "probinv"

# floor of each top-level part of the package: the first dotted component after "probinv"
FLOORS = {
    "physics": 1, "survey": 1, "validation": 1, "_files": 1, "_version": 1,
    "fields": 2, "misfits": 2, "metrics": 2, "io": 2, "linearisation": 2,
    "models": 3, "surrogate": 3,
    "inference": 4, "diagnostics": 4, "plotting": 4,
    "scenarios": 5, "config": 5, "workflow": 5,
    "cli": 6, "demo": 6, "__main__": 6,
    "jax": 4,  # the NumPyro backend mirrors models + inference
    "distributed": 1,  # torch.distributed helpers only
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The probinv modules that module ``name`` imports (anywhere in the file)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(name, is_package, node)
            # "from .physics import acoustic" names a module when physics/acoustic.py exists, else a package member
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target.startswith("probinv") and target != name:
                out.add(target)
    return out


def _floor(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) == 1:
        return None  # the package face (probinv/__init__.py) only re-exports the version
    return FLOORS.get(parts[1])


GRAPH = {name: _imports(name, path, _modules()) for name, path in _modules().items()}


def test_every_module_has_a_floor():
    missing = sorted(m for m in GRAPH if "." in m and _floor(m) is None)
    assert not missing, f"modules without a floor in tests/test_layering.py::FLOORS: {missing}"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_only_from_own_floor_or_below(module):
    own = _floor(module)
    if own is None:
        return
    upward = sorted(f"{t} (floor {_floor(t)})" for t in GRAPH[module] if (_floor(t) or 0) > own)
    assert not upward, f"{module} (floor {own}) imports from a higher floor: {upward}"


def test_no_import_circles():
    # Tarjan's strongly connected components over the module graph
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_the_parser_finds_known_imports():
    # the tests above would pass vacuously if the parser found no imports: check two edges that must exist
    assert "probinv.physics.acoustic" in GRAPH["probinv.models._forward"] or "probinv.physics" in GRAPH[
        "probinv.models._forward"]
    inference = GRAPH["probinv.inference._laplace"] | GRAPH["probinv.inference._common"]
    assert any(t.startswith("probinv.models") for t in inference)
