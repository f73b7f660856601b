"""Imports run down the layers, and no module imports itself back through others.

Layers, lowest first: data → models → generation → train | eval → pipeline → report → cli.
`train` and `eval` are peers: neither imports the other. `trimpi.errors` is importable from anywhere.
Every import counts, including those inside functions (a lazy import still couples the modules).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
LAYERS = {"data": 0, "models": 1, "generation": 2, "train": 3, "eval": 3, "pipeline": 4, "report": 5, "cli": 6,
          "__main__": 7}
ANYWHERE = {"trimpi", "trimpi.errors", "trimpi.trust"}  # trust: the rule every layer applies (errors only)

# Upward imports still waiting for their owner's fix (each line removed once it is fixed); none now.
KNOWN_UPWARD: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / "trimpi").rglob("*.py"))}


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """trimpi modules imported anywhere in the file; `from pkg import sub` counts as importing pkg.sub."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.add(sub if sub in known else base)
    return {m for m in out if m == "trimpi" or m.startswith("trimpi.")}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) - {name} for name, path in known.items()}


def layer(name: str) -> str | None:
    return None if name in ANYWHERE else name.split(".")[1]


def upward_imports(edges: dict[str, set[str]]) -> set[tuple[str, str]]:
    bad = set()
    for a, targets in edges.items():
        for b in targets:
            la, lb = layer(a), layer(b)
            if la is None or lb is None or la == lb:
                continue
            if LAYERS[lb] >= LAYERS[la]:
                bad.add((a, b))
    return bad


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer():
    unknown = sorted(m for m in modules() if layer(m) is not None and layer(m) not in LAYERS)
    assert not unknown, f"modules outside the layer order (add their layer to LAYERS): {unknown}"


def test_imports_only_go_down_the_layers():
    bad = upward_imports(graph())
    new = sorted(bad - KNOWN_UPWARD)
    assert not new, "upward or peer imports:\n" + "\n".join(f"  {a} imports {b}" for a, b in new)
    fixed = sorted(KNOWN_UPWARD - bad)
    assert not fixed, "no longer upward, remove from KNOWN_UPWARD:\n" + "\n".join(f"  {a} -> {b}" for a, b in fixed)


def test_no_lower_layer_imports_train():
    edges = graph()
    offenders = sorted((a, b) for a, bs in edges.items() for b in bs
                       if layer(b) == "train" and layer(a) in ("data", "models", "generation", "eval"))
    assert not offenders


def test_no_import_cycles():
    found = cycles(graph())
    assert not found, "import cycles:\n" + "\n".join("  " + " <-> ".join(c) for c in found)


def test_the_checker_sees_lazy_relative_and_submodule_imports(tmp_path):
    """The checker itself: an import inside a function, a relative import and `from pkg import sub` all count."""
    edges = {"trimpi.data.x": {"trimpi.train.y"}, "trimpi.train.y": {"trimpi.data.x"}}
    assert upward_imports(edges) == {("trimpi.data.x", "trimpi.train.y")}
    assert cycles(edges) == [["trimpi.data.x", "trimpi.train.y"]]
    pkg = SRC / "trimpi" / "data" / "clevr"
    known = modules()
    assert "trimpi.data.clevr.raycast" in imports_of("trimpi.data.clevr.scene", pkg / "scene.py", known)
    assert "trimpi.data.clevr.blender_render" in imports_of("trimpi.data.clevr.render", pkg / "render.py", known)
    lazy = tmp_path / "m.py"
    lazy.write_text("def f():\n    from . import scene\n    from trimpi.data.clevr import render\n")
    assert imports_of("trimpi.data.clevr.m", lazy, known) == {"trimpi.data.clevr.scene", "trimpi.data.clevr.render"}
