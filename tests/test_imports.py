"""The architecture holds: every module imports first on its own, the import graph has no cycle, and
nothing imports upward (core never imports the lab or the defences, the lab never the defences).

The graph is built from the source with ``ast``: every ``import`` and ``from ... import``, also inside
functions, so an import that is only deferred to a call still counts."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import toymodels

PKG = Path(toymodels.__file__).parent

SCRIPT = """
import sys
failed = []
for name in sys.argv[1:]:
    for m in [m for m in sys.modules if m == "toymodels" or m.startswith("toymodels.")]:
        del sys.modules[m]  # forget the package: the next module is imported first, as in a fresh process
    try:
        __import__(name)
    except Exception as e:  # noqa: BLE001
        failed.append(f"{name}: {type(e).__name__}: {e}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""

# Layers, bottom first; a module may import its own layer's modules (no cycles) and lower layers only.
LAYERS = [
    {"toymodels.errors", "toymodels.registry", "toymodels.stats", "toymodels.directions", "toymodels.faults",
     "toymodels.machine"},
    {"toymodels.config"},
    {"toymodels.core"},
    {"toymodels.lab"},
    {"toymodels.defences", "toymodels.audit", "toymodels.attack"},
    {"toymodels.presets", "toymodels.plots", "toymodels.io"},
    {"toymodels.experiment", "toymodels.api", "toymodels.audit_command"},
    {"toymodels.cli", "toymodels.reproduce", "toymodels.compare", "toymodels.drift", "toymodels"},
]


def module_names() -> list[str]:
    return ["toymodels"] + [m.name for m in pkgutil.walk_packages(toymodels.__path__, "toymodels.")]


def source(name: str) -> Path:
    rel = name.split(".")[1:]
    path = PKG.joinpath(*rel)
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imports_of(name: str) -> set[str]:
    """The toymodels modules that ``name`` imports anywhere in its source (relative imports resolved)."""
    path = source(name)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    known = set(module_names())
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # "from pkg import sub" imports the submodule sub
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        out |= {t for t in targets if t == "toymodels" or t.startswith("toymodels.")}
    return {t for t in out if t in known} - {name}


def graph() -> dict[str, set[str]]:
    return {m: imports_of(m) for m in module_names()}


def layer(name: str) -> int:
    for i, group in enumerate(LAYERS):
        if any(name == g or name.startswith(g + ".") for g in group - {"toymodels"}):
            return i
    assert name == "toymodels", f"{name} is in no layer: add it to LAYERS"
    return len(LAYERS) - 1


def test_every_module_imports_first():
    names = module_names()
    assert len(names) >= 40, names
    res = subprocess.run([sys.executable, "-c", SCRIPT, *names], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr


def _parent_packages(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def test_import_graph_has_no_cycle():
    g = graph()
    # importing a.b.c runs a/__init__ and a.b/__init__ first: a module importing its own package's
    # __init__ is how Python works, not a cycle of ours; drop those edges
    edges = {m: {t for t in ts if t not in _parent_packages(m)} for m, ts in g.items()}
    seen, stack, cycle = {}, [], None

    def visit(m):
        nonlocal cycle
        seen[m] = "open"
        stack.append(m)
        for t in sorted(edges[m]):
            if seen.get(t) == "open" and cycle is None:
                cycle = stack[stack.index(t):] + [t]
            elif t not in seen:
                visit(t)
        stack.pop()
        seen[m] = "done"

    for m in sorted(edges):
        if m not in seen:
            visit(m)
    assert cycle is None, " -> ".join(cycle)


def test_nothing_imports_upward():
    bad = [f"{m} (layer {layer(m)}) imports {t} (layer {layer(t)})"
           for m, ts in graph().items() for t in ts if layer(t) > layer(m) and t not in _parent_packages(m)]
    assert not bad, "\n".join(bad)


def test_core_and_lab_never_import_the_plug_ins():
    g = graph()
    for m, ts in g.items():
        if m.startswith("toymodels.core"):
            assert not {t for t in ts if t.startswith(("toymodels.lab", "toymodels.defences"))}, (m, ts)
        if m.startswith("toymodels.lab"):
            assert not {t for t in ts if t.startswith("toymodels.defences")}, (m, ts)


def test_the_graph_sees_imports_inside_functions():
    """The check itself: an import deferred into a function body is an edge of the graph."""
    assert "toymodels.experiment" in imports_of("toymodels.api")   # imported inside api.run()


def test_modules_stay_small():
    """Around 400 lines or less a module (one concept each); the few over it say why in their docstring."""
    long = {m: len(source(m).read_text().splitlines()) for m in module_names()}
    over = {m: n for m, n in long.items() if n > 450}
    assert not over, over
