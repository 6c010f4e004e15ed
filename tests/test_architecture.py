"""Imports point one way (flows -> tasks -> pyroblur, and down the library's floors) and the
project has no import cycle, between modules or between packages.

Read from the source files with ``ast`` (every import statement, lazy ones inside functions
too), so a lazy ``import prefect`` or a lazy upward import deep in a library function is caught.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("pyroblur", "tasks", "flows")
FORBIDDEN_IN_LIBRARY = ("prefect", "flows", "tasks")


def _modules() -> dict[str, Path]:
    out = {}
    for top in PROJECT:
        for path in (ROOT / top).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, int]]:
    """(imported module, line) for every import in the file; relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            found.append((mod, node.lineno))
            found += [(f"{mod}.{a.name}", node.lineno) for a in node.names if f"{mod}.{a.name}" in MODULES]
    return found


def _project_edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for name, path in MODULES.items():
        for mod, _ in _imports(name, path):
            # importing a.b.c imports a and a.b too
            parts = mod.split(".")
            for i in range(1, len(parts) + 1):
                target = ".".join(parts[:i])
                if target in MODULES and target != name:
                    edges[name].add(target)
    return edges


#: The floors, bottom first. A module may import its own floor's modules and any floor below,
#: never one above, counting every import statement (lazy ones inside functions too). Why this
#: order: see README.md "Package order".
FLOORS: tuple[tuple[str, ...], ...] = (
    ("pyroblur.core", "pyroblur"),  # shared types and helpers; the root package holds the class ids
    ("pyroblur.manifests",),  # the stages' small result models
    ("pyroblur.data",),  # download, archives, formats, sources
    ("pyroblur.config",),  # the typed configs (they embed the sources' models)
    ("pyroblur.curation",),
    ("pyroblur.training",),  # training and the ONNX export of its weights
    ("pyroblur.registry",),  # the model store: which model is champion, its files and records
    ("pyroblur.anonymize",),  # reads the champion from the registry
    ("pyroblur.serve",),  # the HTTP service over the anonymizer
    ("pyroblur.evaluation",),  # measures the anonymizer's detector, so above it
    ("pyroblur.preflight",),  # checks every stage's prerequisites
    ("tasks",),
    ("flows",),
    ("flows.cli",),  # the command line: it runs flows, so nothing imports it
)


def floor_of(module: str) -> int:
    """Index of the floor ``module`` lives on (longest matching prefix); KeyError if none."""
    best: tuple[int, int] | None = None
    for i, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (i, len(prefix))
    if best is None:
        raise KeyError(f"{module} is on no floor: add its package to FLOORS in tests/test_architecture.py")
    return best[0]


def order_violations(imports: dict[str, list[tuple[str, int]]]) -> list[str]:
    """``importer:line imports target`` for every import of a module on a higher floor."""
    bad = []
    for name, found in sorted(imports.items()):
        for target, line in found:
            if target.split(".")[0] not in PROJECT or target == name:
                continue
            if floor_of(target) > floor_of(name):
                bad.append(f"{name}:{line} imports {target} (floor {floor_of(target)} > {floor_of(name)})")
    return bad


def package_of(module: str) -> str:
    """The package a module belongs to for the package-cycle check (``pyroblur.<pkg>`` or top)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "pyroblur" and len(parts) > 1 else parts[0]


def package_edges(imports: dict[str, list[tuple[str, int]]]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for name, found in imports.items():
        src = package_of(name)
        edges.setdefault(src, set())
        for target, _ in found:
            if target.split(".")[0] in PROJECT and (dst := package_of(target)) != src:
                edges[src].add(dst)
                edges.setdefault(dst, set())
    return edges


def _all_imports() -> dict[str, list[tuple[str, int]]]:
    return {name: _imports(name, path) for name, path in MODULES.items()}


def test_every_module_is_on_a_floor():
    for name in MODULES:
        floor_of(name)


def test_imports_go_down_the_floors_only():
    bad = order_violations(_all_imports())
    assert not bad, "imports that point up the package order (FLOORS):\n" + "\n".join(bad)


def test_no_cycle_between_packages():
    edges = package_edges(_all_imports())
    edges = {k: {t for t in v if not (k == "pyroblur" or t == "pyroblur")} for k, v in edges.items()}
    cycle = _find_cycle(edges)
    assert cycle is None, "package cycle: " + " -> ".join(cycle)


PLANTED = """
from pyroblur.core.hashing import digest_of


def helper():
    from pyroblur.registry.store import load_registry  # lazy: still an import up the floors
    return load_registry
"""


def test_a_planted_function_level_violation_fails(tmp_path):
    # a core module importing the registry inside a function body
    path = tmp_path / "planted.py"
    path.write_text(PLANTED)
    found = _imports("pyroblur.core.planted", path)
    bad = order_violations({"pyroblur.core.planted": found})
    assert bad == [
        f"pyroblur.core.planted:6 imports pyroblur.registry.store (floor {floor_of('pyroblur.registry')} > 0)"
    ]
    # and the same planted import between two packages closes a package cycle
    imports = {**_all_imports(), "pyroblur.core.planted": found}
    assert _find_cycle(package_edges(imports)) is not None


def test_the_walk_sees_the_whole_library():
    assert {
        "pyroblur.core.codegraph",
        "pyroblur.curation.dataset",
        "flows.cli",
        "flows.cli.anonymize",
        "tasks.pipeline",
    } <= set(MODULES)


@pytest.mark.parametrize("name", sorted(m for m in MODULES if m.split(".")[0] == "pyroblur"))
def test_library_module_imports_no_prefect_flows_or_tasks(name):
    bad = [
        f"{MODULES[name].relative_to(ROOT)}:{line} imports {mod}"
        for mod, line in _imports(name, MODULES[name])
        if mod.split(".")[0] in FORBIDDEN_IN_LIBRARY
    ]
    assert not bad, "the library must not import Prefect or the orchestration layer:\n" + "\n".join(bad)


def test_tasks_never_import_flows():
    bad = [
        f"{name}:{line} imports {mod}"
        for name in MODULES
        if name.split(".")[0] == "tasks"
        for mod, line in _imports(name, MODULES[name])
        if mod.split(".")[0] == "flows"
    ]
    assert not bad, "\n".join(bad)


def _find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path a -> ... -> a), or None; parent-package edges excluded."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(edges, WHITE)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        color[node] = GREY
        stack.append(node)
        for nxt in sorted(edges[node]):
            if color[nxt] == GREY:
                return stack[stack.index(nxt) :] + [nxt]
            if color[nxt] == WHITE and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        color[node] = BLACK
        return None

    for node in sorted(edges):
        if color[node] == WHITE and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_in_the_project():
    edges = _project_edges()
    # A package's __init__ importing its own submodules is how packages expose names, and the
    # submodule importing its package is implied by Python itself: not a design cycle.
    for name in edges:
        edges[name] = {t for t in edges[name] if not (t.startswith(name + ".") or name.startswith(t + "."))}
    cycle = _find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_planted_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_each_package_says_what_it_owns():
    for init in sorted((ROOT / "pyroblur").rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and doc.strip(), f"{init.relative_to(ROOT)} needs a one-line docstring saying what it owns"


def test_one_definition_of_image_suffixes():
    defs = [
        f"{p.relative_to(ROOT)}"
        for p in (ROOT / "pyroblur").rglob("*.py")
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.Assign | ast.AnnAssign)
        and any(
            isinstance(t, ast.Name) and t.id == "IMAGE_SUFFIXES"
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        )
    ]
    assert defs == ["pyroblur/core/io.py"], defs


def test_no_test_switch_in_product_code():
    """Fault injection comes from the tests (tests/faults/sitecustomize.py), never from a switch
    the product reads."""
    bad = [
        f"{path.relative_to(ROOT)}:{n}"
        for top in PROJECT
        for path in sorted((ROOT / top).rglob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if "maybe_inject_failure" in line or "PYROBLUR_TEST_" in line or "PYROBLUR_INJECT_FAILURE" in line
    ]
    assert not bad, "test-only switches in product code:\n" + "\n".join(bad)
