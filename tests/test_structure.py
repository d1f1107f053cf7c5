"""The package's import structure: layers, lowest first, and no import circles.

Every module of ``gapfit`` is parsed (not imported) and each import it makes,
at module level or inside a function, becomes an edge of the graph between
gapfit's modules. Imports under ``if TYPE_CHECKING:`` run at no time and are
left out. A module may import modules of its own layer or of lower layers
only; modules of a subpackage are checked one by one but sit in the layer of
their package. ``from . import x`` counts as importing the submodule
``gapfit.x`` when there is one, else the package itself. Importing
``gapfit.a.b`` is counted as importing ``gapfit.a.b`` only, not the packages
above it (every module would otherwise import ``gapfit/__init__.py``).
"""
from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

PACKAGE = "gapfit"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / PACKAGE

#: The layers, lowest first: (name, the modules or subpackages in it, as named under gapfit).
#: Some entries name modules that do not exist yet; they are placed for when they appear.
#: Checked against the imports the modules make: none had to leave the layer meant for it
#: (metrics and gapstring, for one, need only data/calibration and params).
LAYERS: List[Tuple[str, Tuple[str, ...]]] = [
    ("foundations", ("errors", "_version", "_interrupt", "_loops", "kernels", "sgp", "sparsify", "files",
                     "prediction", "executors", "md_io")),
    ("data and descriptors", ("data", "params", "stream", "sampling", "noise", "descriptors", "gapstring")),
    ("terms and baselines", ("terms", "baselines", "electrostatics", "qeq")),
    ("fitted state and its statistics", ("state", "hyper", "hygiene", "calibration", "metrics", "residual_draws")),
    ("fit and prediction", ("fitting", "predictor", "model_file")),
    ("the estimator", ("model",)),
    # the package's own __init__ (named "" here) gathers the public names and may import anything
    # model_io keeps the whole-model names of earlier versions (load_model, save_model) over model_file
    ("faces", ("model_io", "calculator", "coulomb", "committee", "incremental", "search", "md", "learn", "cli",
               "validation", "lammps", "reweight", "analyze", "", "__main__")),
]

#: (importer, imported) pairs allowed to reach a higher layer: forwards kept so that old user
#: imports keep working, each with its reason. They are left out of the circle check as well,
#: so they must be imports inside a function (run on call, not at import).
EXEMPT: Dict[Tuple[str, str], str] = {}


@dataclass(frozen=True)
class ImportEdge:
    """One import of a gapfit module by another, where it is written."""

    importer: str
    imported: str
    line: int
    at_module_level: bool
    #: for ``from gapfit.a import b`` with no module gapfit.a.b: which name of gapfit.a
    name: str = ""

    def target(self) -> str:
        """The imported module, and the name taken from it when that is no submodule."""
        return f"{self.imported} (its name {self.name!r}: there is no module {self.imported}.{self.name})" \
            if self.name else self.imported


@lru_cache(maxsize=None)
def module_files() -> Dict[str, Path]:
    """Every module of the package by its dotted name (a package by its own name, for its __init__)."""
    out = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST) -> Iterator[Tuple[ast.stmt, bool]]:
    """The import statements of a module with whether each is at module level, skipping TYPE_CHECKING blocks."""
    def visit(node: ast.AST, at_module_level: bool) -> Iterator[Tuple[ast.stmt, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, at_module_level
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.orelse:
                    yield from visit(ast.Module(body=[stmt], type_ignores=[]), at_module_level)
            else:
                nested = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
                yield from visit(child, at_module_level and not nested)
    yield from visit(tree, True)


def _targets(node: ast.stmt, importer: str, modules: Dict[str, Path]) -> List[Tuple[str, str]]:
    """The gapfit modules one import statement of ``importer`` names (existing or not), each with
    the name taken from it when a ``from`` import takes a name that is not a submodule ("" otherwise)."""
    if isinstance(node, ast.Import):
        return [(a.name, "") for a in node.names if a.name.split(".")[0] == PACKAGE]
    if node.level:
        package = importer if modules[importer].name == "__init__.py" else importer.rpartition(".")[0]
        base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
        if source.split(".")[0] != PACKAGE:
            return []
    # ``from .a import b``: the submodule gapfit.a.b when there is one, else a name of gapfit.a
    return [(f"{source}.{a.name}", "") if f"{source}.{a.name}" in modules
            else (source, a.name if source in modules and modules[source].name == "__init__.py" else "")
            for a in node.names]


@lru_cache(maxsize=None)
def package_imports() -> List[ImportEdge]:
    """Every import of a gapfit module by another (self-imports left out; missing modules kept)."""
    modules = module_files()
    out = []
    for importer, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, at_module_level in _import_nodes(tree):
            # one edge per statement, however many names it takes from a module
            seen: Set[str] = set()
            for imported, name in _targets(node, importer, modules):
                if imported != importer and imported not in seen:
                    seen.add(imported)
                    out.append(ImportEdge(importer, imported, node.lineno, at_module_level, name))
    return out


def layer_of(module: str) -> Optional[int]:
    """The layer index of a gapfit module (a subpackage's modules: their package's), None when unplaced."""
    top = module.split(".")[1] if "." in module else ""
    for k, (_, names) in enumerate(LAYERS):
        if top in names:
            return k
    return None


def _describe(module: str, shown_as: str = "") -> str:
    k = layer_of(module)
    return f"{shown_as or module} (layer {k}: {LAYERS[k][0]})"


def _where(imp: ImportEdge) -> str:
    path = module_files()[imp.importer].relative_to(PACKAGE_DIR.parent)
    return f"{path}:{imp.line}"


def _strongly_connected(edges: Dict[str, Set[str]]) -> List[List[str]]:
    """Tarjan's strongly connected components of a directed graph (iterative)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    components = []
    nodes = sorted(set(edges) | {b for bs in edges.values() for b in bs})
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return components


def existing_imports() -> List[ImportEdge]:
    """The imports of :func:`package_imports` that name an existing module (the others fail their own test)."""
    modules = module_files()
    return [i for i in package_imports() if i.imported in modules]


def test_imports_name_existing_modules():
    missing = [f"  {_where(i)}: {i.importer} imports {i.target()}, which is not a module of {PACKAGE}"
               for i in package_imports() if i.imported not in module_files()]
    if missing:
        pytest.fail("imports of missing modules:\n" + "\n".join(missing), pytrace=False)


def test_every_module_has_a_layer():
    unplaced = [m for m in module_files() if layer_of(m) is None]
    if unplaced:
        pytest.fail("modules in no layer: " + ", ".join(unplaced) + ". Place each in a layer of LAYERS in "
                    "tests/test_structure.py (the lowest whose modules it needs, and above those that need it).",
                    pytrace=False)


def test_no_import_circles():
    imports = [i for i in existing_imports() if (i.importer, i.imported) not in EXEMPT]
    edges: Dict[str, Set[str]] = defaultdict(set)
    for i in imports:
        edges[i.importer].add(i.imported)
    report = []
    for circle in (c for c in _strongly_connected(edges) if len(c) > 1):
        members = set(circle)
        lines = [f"  {i.importer} -> {i.target()} ({_where(i)}{'' if i.at_module_level else ', inside a function'})"
                 for i in sorted(imports, key=lambda i: (i.importer, i.imported, i.line))
                 if i.importer in members and i.imported in members]
        report.append(f"circle of {len(circle)} modules: {', '.join(circle)}\n" + "\n".join(lines))
    if report:
        pytest.fail("import circles:\n" + "\n".join(report), pytrace=False)


def test_no_import_reaches_a_higher_layer():
    imports = [i for i in existing_imports() if (i.importer, i.imported) not in EXEMPT]
    placed = [i for i in imports if None not in (layer_of(i.importer), layer_of(i.imported))]
    upward = [i for i in placed if layer_of(i.imported) > layer_of(i.importer)]
    lines = [f"  {_where(i)}: {_describe(i.importer)} imports {_describe(i.imported, i.target())}"
             for i in sorted(upward, key=lambda i: (i.importer, i.line, i.imported))]
    unchecked = len(imports) - len(placed)
    if upward:
        pytest.fail(f"{len(upward)} imports reach a higher layer (move the code down, or the import up; see "
                    "LAYERS in tests/test_structure.py):\n" + "\n".join(lines)
                    + (f"\n({unchecked} imports from or of modules in no layer not checked)" if unchecked else ""),
                    pytrace=False)


def test_exemptions_are_in_use_and_lazy():
    imports = existing_imports()
    used = {(i.importer, i.imported) for i in imports}
    stale = [pair for pair in EXEMPT if pair not in used]
    assert not stale, f"EXEMPT lists imports that no longer exist (remove them): {stale}"
    eager = [f"{_where(i)}: {i.importer} imports {i.imported}" for i in imports
             if (i.importer, i.imported) in EXEMPT and i.at_module_level]
    assert not eager, ("exempt forwards must import inside a function, not at module level (else they are "
                       "circles): " + "; ".join(eager))


# ------------------------------------------------- the reading of imports itself
#: A made-up package for reading imports: module name -> file (only whether it is an __init__ matters).
_FAKE_MODULES = {name: Path(name.replace(".", "/") + ".py") for name in
                 ("gapfit.calculator", "gapfit.errors", "gapfit.data", "gapfit.files", "gapfit.model",
                  "gapfit.model_io", "gapfit.sampling", "gapfit.terms.base", "gapfit.terms.soap", "gapfit.terms.sites")}
_FAKE_MODULES.update({"gapfit": Path("gapfit/__init__.py"), "gapfit.terms": Path("gapfit/terms/__init__.py")})


def _read(code: str, importer: str) -> List[Tuple[str, str, bool]]:
    return [(module, name, at_module_level) for node, at_module_level in _import_nodes(ast.parse(code))
            for module, name in _targets(node, importer, _FAKE_MODULES)]


def test_imports_are_read_as_documented():
    """Submodules, names of a package, relative levels, TYPE_CHECKING and function scope, as the docstring says."""
    code = """
from typing import TYPE_CHECKING
from . import errors, Thing
from .terms import base, Term
import gapfit.terms.soap as soap
import numpy
if TYPE_CHECKING:
    from .model import GAP
else:
    from .data import Labels
class C:
    from .files import atomic_write
def f():
    from .model_io import load_model
"""
    assert _read(code, "gapfit.calculator") == [
        ("gapfit.errors", "", True), ("gapfit", "Thing", True),
        ("gapfit.terms.base", "", True), ("gapfit.terms", "Term", True),
        ("gapfit.terms.soap", "", True),
        ("gapfit.data", "", True),
        ("gapfit.files", "", True),
        ("gapfit.model_io", "", False)]
    # relative levels from a subpackage's module and from its __init__
    code = "from .base import Term\nfrom ..sampling import PrioritySample\nfrom .. import errors\n"
    expected = [("gapfit.terms.base", "", True), ("gapfit.sampling", "", True), ("gapfit.errors", "", True)]
    assert _read(code, "gapfit.terms.sites") == expected
    assert _read(code, "gapfit.terms") == expected
