"""What code a function really runs: its source, the helpers it calls in its own module, and
every project module it imports, followed transitively through the import graph.

Cache keys use :func:`code_digest` so that a change anywhere in that closure, however many
imports away, misses the cache, while a change in a module the function never reaches does
not. The graph is read from the files with :mod:`ast` (nothing is imported or executed), and
every import statement counts, also the lazy ones inside function bodies: a hand-kept list of
modules goes stale silently, the import graph cannot.

Conservative by design: a module that is imported anywhere in a reached module counts, even
if the function's path through it never calls it (a key that changes too often costs a re-run;
one that changes too rarely serves a stale result).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Top-level packages whose code belongs to this project (others are pinned dependencies).
PROJECT_PACKAGES: tuple[str, ...] = ("pyroblur", "tasks", "flows")


@dataclass(frozen=True)
class _Parsed:
    source: str
    tree: ast.Module


@functools.lru_cache(maxsize=4096)
def _parse(path: str, mtime_ns: int, size: int) -> _Parsed:
    source = Path(path).read_text(encoding="utf-8")
    return _Parsed(source, ast.parse(source, filename=path))


def _parsed(path: Path) -> _Parsed:
    st = path.stat()
    return _parse(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=64)
def _package_dir(top: str) -> Path | None:
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def module_file(name: str) -> Path | None:
    """The source file of project module ``name`` (``.py`` or package ``__init__.py``), or None."""
    top, *rest = name.split(".")
    root = _package_dir(top)
    if root is None:
        return None
    base = root.joinpath(*rest)
    for candidate in (base.with_suffix(".py") if rest else None, base / "__init__.py"):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def _is_project(name: str, packages: tuple[str, ...]) -> bool:
    return name.split(".")[0] in packages


def _with_parents(name: str) -> list[str]:
    """``a.b.c`` -> ``a``, ``a.b``, ``a.b.c``: importing a module runs its packages' ``__init__``."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _resolve_from(node: ast.ImportFrom, current: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = current.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imports_in(nodes: Iterable[ast.AST], current: str, is_package: bool, packages: tuple[str, ...]) -> set[str]:
    """Project modules named by an import anywhere inside ``nodes`` (parents not included)."""
    found: set[str] = set()
    for root in nodes:
        for node in ast.walk(root):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mod = _resolve_from(node, current, is_package)
                names = [mod]
                # ``from pkg import sub``: ``sub`` may itself be a module
                names += [f"{mod}.{a.name}" for a in node.names if a.name != "*"]
            for name in names:
                if name and _is_project(name, packages) and module_file(name) is not None:
                    found.add(name)
    return found


def _top_level(tree: ast.Module) -> list[ast.AST]:
    """Statements that run when the module is imported (function and class bodies excluded)."""
    out: list[ast.AST] = []
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out.extend(getattr(node, "decorator_list", []))
            continue
        if isinstance(node, ast.If | ast.Try | ast.With | ast.For | ast.While):
            for field in ("body", "orelse", "finalbody", "handlers"):
                todo.extend(getattr(node, field, []) or [])
            continue
        if isinstance(node, ast.ExceptHandler):
            todo.extend(node.body)
            continue
        out.append(node)
    return out


def module_imports(
    name: str, packages: tuple[str, ...] = PROJECT_PACKAGES, *, import_time_only: bool = False
) -> set[str]:
    """Project modules that module ``name`` imports directly.

    By default every import statement in the file counts, lazy ones inside functions too (the
    module's functions may be called). ``import_time_only`` counts only the statements that run
    when the module is imported: what a package's ``__init__`` pulls in when one of its
    submodules is imported.
    """
    path = module_file(name)
    if path is None:
        return set()
    tree = _parsed(path).tree
    nodes = _top_level(tree) if import_time_only else [tree]
    return _imports_in(nodes, name, path.name == "__init__.py", packages) - {name}


def module_closure(roots: Iterable[str], packages: tuple[str, ...] = PROJECT_PACKAGES) -> set[str]:
    """``roots`` plus every project module reachable from them through imports.

    A module that is imported by name is followed through all of its imports (its functions may
    run); a package that is only the parent of an imported module is followed through the
    imports its ``__init__`` runs at import time (its functions are not called that way).
    """
    used: set[str] = set()  # imported by name: every import statement counts
    parents: set[str] = set()  # only executed as a parent package: import-time statements count
    todo: list[tuple[str, bool]] = [(r, True) for r in roots if module_file(r) is not None]
    while todo:
        mod, full = todo.pop()
        if mod in used or (not full and mod in parents):
            continue
        (used if full else parents).add(mod)
        for parent in _with_parents(mod)[:-1]:
            todo.append((parent, False))
        todo.extend((m, True) for m in module_imports(mod, packages, import_time_only=not full))
    return used | parents


def _bindings(tree: ast.Module, current: str, is_package: bool) -> tuple[dict[str, str], dict[str, ast.AST]]:
    """Module-level names: those bound by imports (name -> module) and those defined here."""
    imported: dict[str, str] = {}
    defined: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:  # import a.b as c: c is a.b
                    imported[a.asname] = a.name
                else:  # import a.b: binds a
                    top = a.name.split(".")[0]
                    imported[top] = top
        elif isinstance(node, ast.ImportFrom):
            mod = _resolve_from(node, current, is_package)
            for a in node.names:
                sub = f"{mod}.{a.name}"
                imported[a.asname or a.name] = sub if module_file(sub) is not None else mod
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defined[node.name] = node
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        defined[n.id] = node
    return imported, defined


def _without_decorators(node: ast.AST) -> list[ast.AST]:
    """The parts of a definition that run when it is called (decorators left out)."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return [node.args, *node.body, *([node.returns] if node.returns else [])]
    if isinstance(node, ast.ClassDef):
        return [*node.bases, *node.keywords, *node.body]
    return [node]


def _names_used(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


@dataclass(frozen=True)
class CodeClosure:
    """What a function runs: source segments of its own module, and project modules reached."""

    function: str
    segments: tuple[str, ...]
    modules: frozenset[str]

    def digest(self) -> str:
        """sha256 over the segments and the current source of every reached module."""
        h = hashlib.sha256()
        h.update(self.function.encode())
        for seg in self.segments:
            h.update(b"\0seg\0" + seg.encode())
        for mod in sorted(self.modules):
            path = module_file(mod)
            h.update(f"\0mod\0{mod}\0".encode())
            h.update(_parsed(path).source.encode() if path else b"<missing>")
        return h.hexdigest()


def function_closure(fn: Callable[..., Any], packages: tuple[str, ...] = PROJECT_PACKAGES) -> CodeClosure:
    """The code closure of ``fn`` (a module-level function of a project module).

    Its own module counts only through the definitions ``fn`` uses (so two tasks in one file
    do not share a key), followed recursively. Decorators are left out: they configure how the
    function runs (retries, the cache policy), not what it computes.
    """
    fn = inspect.unwrap(getattr(fn, "fn", fn))
    current = fn.__module__
    path = module_file(current)
    if path is None:
        raise ValueError(f"{fn!r} is not defined in a project module ({', '.join(packages)})")
    parsed = _parsed(path)
    is_pkg = path.name == "__init__.py"
    imported, defined = _bindings(parsed.tree, current, is_pkg)
    if fn.__name__ not in defined:
        raise ValueError(f"{fn.__qualname__} is not a module-level definition of {current}")

    segments: list[str] = []
    roots: set[str] = set()
    seen: set[str] = set()
    todo = [fn.__name__]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        node = defined[name]
        # The node's segment starts at ``def``: decorators (orchestration settings such as
        # retries and the cache policy itself) configure how the code runs, not what it computes.
        segments.append(ast.get_source_segment(parsed.source, node, padded=False) or ast.dump(node))
        body = _without_decorators(node)
        roots |= _imports_in(body, current, is_pkg, packages)
        for used in {n for part in body for n in _names_used(part)}:
            if used in imported and _is_project(imported[used], packages):
                roots.add(imported[used])
            elif used in defined and used not in seen:
                todo.append(used)
    return CodeClosure(f"{current}:{fn.__qualname__}", tuple(segments), frozenset(module_closure(roots, packages)))


def code_digest(fn: Callable[..., Any]) -> str:
    """Digest of everything ``fn`` runs of this project (see :func:`function_closure`)."""
    return function_closure(fn).digest()


def forget_parsed() -> None:
    """Drop cached parses (the cache already keys on each file's mtime and size)."""
    _parse.cache_clear()
    _package_dir.cache_clear()


__all__ = [
    "PROJECT_PACKAGES",
    "CodeClosure",
    "code_digest",
    "forget_parsed",
    "function_closure",
    "module_closure",
    "module_file",
    "module_imports",
]
