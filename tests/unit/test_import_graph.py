"""No import circles among the modules of services/ and lab/, read from the source with `ast`.

Every import counts: at module level, under `if TYPE_CHECKING:` and inside functions (a
function-level import that hides a circle is still the circle). A lower layer that must call back
into a higher one gets a `typing.Protocol` instead (STYLE.md; services/nlb_sim/relay.py
`FlowContext`, services/alb_sim/fallback.py `Connection`)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("services", "lab")


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the packages (a package is its __init__)."""
    out: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules among `known` that module `name` (file `path`) imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[:len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return {m for m in found if m in known and m != name}


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    files = module_files(root)
    known = set(files)
    return {name: imports_of(name, path, known) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_relative_type_checking_and_function_level_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "services" / "p"
    pkg.mkdir(parents=True)
    (tmp_path / "lab").mkdir()
    (tmp_path / "services" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import X\n")
    (pkg / "b.py").write_text("def f():\n    from . import c\n")
    (pkg / "c.py").write_text("import services.p.a\n")
    (pkg / "d.py").write_text("from ..p import a\nimport json\n")
    graph = import_graph(tmp_path)
    assert graph["services.p.a"] == {"services.p.b"}
    assert graph["services.p.b"] == {"services.p", "services.p.c"}
    assert graph["services.p.c"] == {"services.p.a"}
    assert graph["services.p.d"] == {"services.p", "services.p.a"}
    assert cycles(graph) == [["services.p.a", "services.p.b", "services.p.c"]]


def test_no_import_cycles_in_services_and_lab() -> None:
    graph = import_graph()
    assert "services.alb_sim.server" in graph and graph["services.alb_sim.server"]  # the walk found imports
    assert cycles(graph) == []
