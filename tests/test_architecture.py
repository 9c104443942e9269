"""The package's layers: every import of ``src/safemerge`` goes to the same or a lower layer, and no module imports
itself back through other modules (no import cycle). docs/ARCHITECTURE.md describes the layers; the table is here.

The graph is read with :mod:`ast` from the source, so it holds every ``import`` statement: at module level, inside
functions (lazy imports) and under ``if TYPE_CHECKING:`` (a type is a dependency too). ``from pkg import name``
is an edge to the module ``pkg.name`` where that is a module, else to ``pkg`` itself. Imports through
``importlib.import_module`` (the CLI's command table, ``safemerge.evaluate``'s lazy exports, the judge registry)
name modules of their own layer and are not parsed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# The layers, lowest first: a module may import modules of its own layer and of lower layers only. The pipeline is
# data -> train -> merge -> search -> study; evaluate sits below search because the search scores candidates with
# it (safemerge.evaluate.loss), and evaluate needs nothing of train, merge or search. A module takes the layer of
# the longest entry that is a dotted prefix of its name.
LAYERS: dict[str, int] = {
    "safemerge": 0,  # the package itself: __version__ (only the exact name; its folders are listed below)
    "safemerge.errors": 0,  # the one-line user errors, raised everywhere
    "safemerge.utils": 1,  # atomic writes, hashing, paths, progress, config helpers, GGUF reading, malloc policy
    "safemerge.data": 2,  # the built-in world (tables, tokenizer, base model), tiny test checkpoints, synth specs
    "safemerge.train": 3,  # SFT / DPO and the study's training recipes
    "safemerge.merge": 4,  # the merge methods, planner and streaming engine
    "safemerge.evaluate": 5,  # generation, judges, metrics, answer loss, serve
    "safemerge.search": 6,  # merge-coefficient search (scores with evaluate), synthetic data written by the pool
    "safemerge.study": 7,  # the study runner and its report: uses everything below
    "safemerge.cli": 8,  # the command line: registers every folder's cli module
}


def module_files(src: Path = SRC) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``) for every ``.py`` file under ``src/safemerge``."""
    out = {}
    for path in sorted((src / "safemerge").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def _imported(node: ast.AST, module: str, is_pkg: bool, known: set[str]) -> set[str]:
    """The ``safemerge`` modules named by one import statement (relative imports resolved against ``module``)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        package = module.split(".") if is_pkg else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        target = ".".join(package + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return {f"{target}.{a.name}" if f"{target}.{a.name}" in known else target for a in node.names}


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """Module -> the ``safemerge`` modules it imports anywhere in its source (functions and TYPE_CHECKING too)."""
    files = module_files(src)
    known = set(files)
    graph: dict[str, set[str]] = {}
    for module, (path, is_pkg) in files.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges |= {m for m in _imported(node, module, is_pkg, known) if m.split(".")[0] == "safemerge"}
        unknown = edges - known
        assert not unknown, f"{module} imports {sorted(unknown)}, which is no module of src/safemerge"
        graph[module] = edges - {module}
    return graph


def layer(module: str) -> int:
    """The layer of ``module``: that of the longest :data:`LAYERS` entry that is ``module`` or a dotted prefix."""
    if module in LAYERS:
        return LAYERS[module]
    prefixes = [p for p in LAYERS if p != "safemerge" and module.startswith(p + ".")]
    if not prefixes:
        raise KeyError(f"{module} is in no layer; add its folder to LAYERS in tests/test_architecture.py "
                       "and to docs/ARCHITECTURE.md")
    return LAYERS[max(prefixes, key=len)]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """``importer -> imported`` for every import of a higher layer."""
    return [f"{m} (layer {layer(m)}) -> {t} (layer {layer(t)})"
            for m in sorted(graph) for t in sorted(graph[m]) if layer(t) > layer(m)]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted: every import cycle lies in
    one of them."""
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
    return sorted(found)


def test_every_module_has_a_layer():
    missing = []
    for module in import_graph():
        try:
            layer(module)
        except KeyError as exc:
            missing.append(str(exc))
    assert not missing, "\n".join(missing)


def test_imports_only_go_down():
    up = upward_imports(import_graph())
    assert not up, "imports of a higher layer:\n" + "\n".join(up)


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles among:\n" + "\n".join(" <-> ".join(c) for c in found)


@pytest.mark.parametrize("source, problem", [
    ({"a.py": "from safemerge.b import f\n", "b.py": "def f():\n    from safemerge import a\n"}, "cycle"),
    ({"utils/x.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from safemerge.study import y\n",
      "study/y.py": ""}, "upward"),
    ({"merge/p.py": "def g():\n    from ..search import q\n", "search/q.py": "from safemerge.merge import p\n"},
     "both"),
])
def test_the_checks_see_lazy_relative_and_type_checking_imports(tmp_path, source, problem):
    """The graph holds imports inside functions, under TYPE_CHECKING and relative ones, so both checks can fail."""
    root = tmp_path / "safemerge"
    for name, text in {"__init__.py": "", **source}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").touch()
        path.write_text(text)
    graph = import_graph(tmp_path)
    if problem in ("cycle", "both"):
        assert cycles(graph)
    if problem in ("upward", "both"):
        assert upward_imports(graph)


@pytest.mark.parametrize("fact, home", [
    ('("en", "fr", "es", "ru", "hi", "ar")', "safemerge/__init__.py"),  # the language list
    ('extra="forbid"', "safemerge/utils/config.py"),  # the strict config base (StrictModel)
    ("DEFAULT_SAFETY_FRACTION =", "safemerge/__init__.py"),  # the reference 15 % safety mixture
    ('"harm change vs base %"', "safemerge/evaluate/metric_table.py"),  # the metric table: labels
    ('"harm chg %"', "safemerge/evaluate/metric_table.py"),  # and short column titles
    ('"over-refusal %"', "safemerge/evaluate/metric_table.py"),
])
def test_each_fact_is_written_once(fact, home):
    """A fact lives in one module; everything else imports it (issue 14: grep finds each fact in one place)."""
    found = sorted(str(p.relative_to(SRC)) for p in (SRC / "safemerge").rglob("*.py") if fact in p.read_text())
    assert found == [home], f"{fact!r} is written in {found}; keep it in {home} only and import it"
