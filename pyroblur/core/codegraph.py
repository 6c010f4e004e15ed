"""What code a function really runs, and a digest of its meaning.

Cache keys use :func:`code_digest`: a change to code the function runs, however many calls
and imports away, misses the cache; a change to code it never reaches, and an edit that does not
change meaning (comments, docstrings, formatting), keeps it.

The graph is read from the files with :mod:`ast` (nothing is imported or executed) at the level
of *definitions*, not modules: starting from the function, every name it uses is followed to the
definition it binds to (a same-module helper, a constant, a class with all its methods, or a
definition in another project module through an import, lazy imports inside function bodies
included, re-exports through a package ``__init__`` followed to the real definition). A module
that is imported but whose definitions the function never uses adds nothing to the key.

What is hashed is ``ast.dump`` of each reached definition with its docstrings removed (comments
and formatting are not in the tree), its qualified name, the external names it binds
(``np = numpy``: swapping a library for another misses), and the import-time statements of every
module on the way (a top-level call such as ``_configure_ultralytics()`` runs on import).

Conservative where it cannot resolve: a project module used as a value (``mod`` passed around
rather than ``mod.name``), a star import, or a name that a module neither defines nor imports
(a module ``__getattr__``) pulls in the whole module. A key that changes too often costs a
re-run; one that changes too rarely serves a stale result.
"""

from __future__ import annotations

import ast
import builtins
import copy
import functools
import hashlib
import importlib.util
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Top-level packages whose code belongs to this project (others are pinned dependencies).
PROJECT_PACKAGES: tuple[str, ...] = ("pyroblur", "tasks", "flows")

#: Modules that compute keys and output names, not results: the walk does not enter them. A
#: change there changes the digests' values, and so every key, by itself; a change that keeps the
#: values (a faster walk) must not re-run every stage.
KEY_MACHINERY: tuple[str, ...] = ("tasks._keys", "pyroblur.core.codegraph")

_BUILTINS = frozenset(dir(builtins))
_DEF = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
_BLOCK = ast.If | ast.Try | ast.With | ast.For | ast.While


def _read(path: str) -> str:
    """The text of a source file (one seam, so tests can present an edited file)."""
    return Path(path).read_text(encoding="utf-8")


# ------------------------------------------------------------------------------- meaning


class _StripDocstrings(ast.NodeTransformer):
    def _strip(self, node: Any) -> Any:
        self.generic_visit(node)
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            if isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
        return node

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = visit_Module = _strip


def meaning(node: ast.AST | Iterable[ast.AST]) -> str:
    """``ast.dump`` of ``node`` (or several) without docstrings, positions or comments."""
    nodes = [node] if isinstance(node, ast.AST) else list(node)
    stripped = [_StripDocstrings().visit(copy.deepcopy(n)) for n in nodes]
    return "\n".join(ast.dump(n, include_attributes=False) for n in stripped)


# ------------------------------------------------------------------------------- modules


@dataclass
class _Module:
    """One parsed project module: what it defines, what it imports, what runs on import."""

    name: str
    is_package: bool
    tree: ast.Module
    defined: dict[str, list[ast.AST]] = field(default_factory=dict)
    imported: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # name -> (module, attr)
    star: list[str] = field(default_factory=list)  # modules imported with ``*``
    on_import: list[ast.AST] = field(default_factory=list)  # top-level statements that do something
    meanings: dict[str, str] = field(default_factory=dict)  # name -> meaning of its definition(s)
    refs: dict[tuple[str, tuple[str, ...]], tuple[tuple[Any, ...], ...]] = field(default_factory=dict)

    def meaning_of_import(self) -> str:
        if "\0import" not in self.meanings:
            self.meanings["\0import"] = meaning(self.on_import)
        return self.meanings["\0import"]

    def meaning_of(self, name: str, root: bool) -> str:
        key = f"{name}\0root" if root else name
        if key not in self.meanings:
            nodes = self.defined[name]
            # decorators configure how a task runs (retries, the cache policy), not what it
            # computes: the root's are left out; every other definition keeps them (@dataclass)
            self.meanings[key] = meaning([_undecorated(n) for n in nodes] if root else nodes)
        return self.meanings[key]


@functools.lru_cache(maxsize=64)
def _package_dir(top: str) -> Path | None:
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@functools.lru_cache(maxsize=4096)
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


def _resolve_from(node: ast.ImportFrom, current: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = current.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _import_bindings(
    node: ast.Import | ast.ImportFrom, current: str, is_package: bool
) -> dict[str, tuple[str, str | None]]:
    """Names an import statement binds: name -> (module, attribute or None for the module)."""
    out: dict[str, tuple[str, str | None]] = {}
    if isinstance(node, ast.Import):
        for a in node.names:
            if a.asname:  # import a.b as c: c is a.b
                out[a.asname] = (a.name, None)
            else:  # import a.b: binds a
                top = a.name.split(".")[0]
                out[top] = (top, None)
        return out
    mod = _resolve_from(node, current, is_package)
    for a in node.names:
        if a.name == "*":
            continue
        sub = f"{mod}.{a.name}"
        out[a.asname or a.name] = (sub, None) if module_file(sub) is not None else (mod, a.name)
    return out


def _targets(node: ast.AST) -> list[str]:
    if isinstance(node, _DEF):
        return [node.name]
    targets: list[ast.AST] = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, ast.AnnAssign | ast.AugAssign):
        targets = [node.target]
    return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]


@functools.lru_cache(maxsize=4096)
def _load(name: str, path: str, mtime_ns: int, size: int) -> _Module:
    source = _read(path)
    is_package = Path(path).name == "__init__.py"
    mod = _Module(name, is_package, ast.parse(source, filename=path))
    todo: list[ast.AST] = list(mod.tree.body)
    first = True
    while todo:
        node = todo.pop(0)
        is_doc = first and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        first = False
        if is_doc:
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            mod.imported.update(_import_bindings(node, name, is_package))
            if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
                mod.star.append(_resolve_from(node, name, is_package))
        elif names := _targets(node):
            for n in names:
                mod.defined.setdefault(n, []).append(node)
        elif isinstance(node, _BLOCK):
            # try/if blocks at module level: what they bind counts as defined by the whole block
            # (``try: import x / except ImportError: x = None``), and the block runs on import
            bound = {
                n
                for sub in ast.walk(node)
                if isinstance(sub, ast.stmt)
                for n in (_targets(sub) + [k for k in _bound_by_import(sub, name, is_package)])
            }
            for n in bound:
                mod.defined.setdefault(n, []).append(node)
            if not bound:
                mod.on_import.append(node)
        else:
            mod.on_import.append(node)
    return mod


def _bound_by_import(node: ast.AST, current: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        return list(_import_bindings(node, current, is_package))
    return []


def _module(name: str) -> _Module | None:
    path = module_file(name)
    if path is None:
        return None
    st = path.stat()
    return _load(name, str(path), st.st_mtime_ns, st.st_size)


def _is_project(name: str, packages: tuple[str, ...]) -> bool:
    return name.split(".")[0] in packages


def _with_parents(name: str) -> list[str]:
    """``a.b.c`` -> ``a``, ``a.b``, ``a.b.c``: importing a module runs its packages' ``__init__``."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def module_imports(name: str, packages: tuple[str, ...] = PROJECT_PACKAGES) -> set[str]:
    """Project modules that module ``name`` imports anywhere (lazy imports inside functions too)."""
    mod = _module(name)
    if mod is None:
        return set()
    found: set[str] = set()
    for node in ast.walk(mod.tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            for target, _ in _import_bindings(node, name, mod.is_package).values():
                if _is_project(target, packages):
                    found.add(target)
            if isinstance(node, ast.ImportFrom):
                found.add(_resolve_from(node, name, mod.is_package))
    return {m for m in found if _is_project(m, packages) and module_file(m) is not None} - {name}


# ------------------------------------------------------------------------------- closure


@dataclass(frozen=True)
class CodeClosure:
    """What a function runs: the meaning of every reached definition, keyed by qualified name."""

    function: str
    items: tuple[tuple[str, str], ...]  # ("module:name" or "module:<import>", meaning), sorted
    modules: frozenset[str]  # modules with a reached definition or import-time statement (their code counts)

    @property
    def names(self) -> frozenset[str]:
        """Qualified names of the reached definitions (``pyroblur.core.io:atomic_write``)."""
        return frozenset(k for k, _ in self.items if not k.endswith(":<import>"))

    def digest(self) -> str:
        """sha256 over the function's name and every reached definition's meaning."""
        h = hashlib.sha256(self.function.encode())
        for key, text in self.items:
            h.update(b"\0" + key.encode() + b"\0" + text.encode())
        return h.hexdigest()


def _refs(mod: _Module, nodes: list[ast.AST], packages: tuple[str, ...]) -> tuple[tuple[Any, ...], ...]:
    """What following the names used in ``nodes`` asks the walk to do (see ``_Walk.uses``)."""
    out: list[tuple[Any, ...]] = []
    # imports inside the nodes (lazy imports); one name may be bound by several of them
    local: dict[str, list[tuple[str, str | None]]] = {}
    for node in nodes:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Import | ast.ImportFrom):
                for n, binding in _import_bindings(sub, mod.name, mod.is_package).items():
                    local.setdefault(n, []).append(binding)
                if isinstance(sub, ast.ImportFrom) and any(a.name == "*" for a in sub.names):
                    out.append(("whole", _resolve_from(sub, mod.name, mod.is_package)))
    attr_of: dict[int, list[str]] = {}  # id(Name) -> the attribute chain read from it
    for node in nodes:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Attribute):
                chain: list[str] = []
                cur: ast.AST = sub
                while isinstance(cur, ast.Attribute):
                    chain.append(cur.attr)
                    cur = cur.value
                if isinstance(cur, ast.Name):
                    prev = attr_of.get(id(cur), [])
                    if len(chain) > len(prev):
                        attr_of[id(cur)] = list(reversed(chain))
    external: dict[str, str] = {}
    for node in nodes:
        for sub in ast.walk(node):
            if not isinstance(sub, ast.Name):
                continue
            name = sub.id
            bindings = local.get(name, []) + ([mod.imported[name]] if name in mod.imported else [])
            if not bindings:
                if name in mod.defined:
                    out.append(("todo", mod.name, name))
                elif mod.star and name not in _BUILTINS:
                    out.extend(("whole", target) for target in mod.star)
                continue
            for target, attr in bindings:
                if not _is_project(target, packages):
                    external[name] = f"{external.get(name, '')}|{target}:{attr or ''}"
                elif attr is not None:
                    out.append(("reach", target, attr))
                else:
                    out.append(("chain", target, tuple(attr_of.get(id(sub), []))))
    if external:
        out.append(("external", repr(sorted(external.items()))))
    return tuple(dict.fromkeys(out))


class _Walk:
    def __init__(self, packages: tuple[str, ...]) -> None:
        self.packages = packages
        self.items: dict[str, str] = {}
        self.modules: set[str] = set()
        self.todo: list[tuple[str, str]] = []
        self.done: set[tuple[str, str]] = set()
        self.whole: set[str] = set()

    # -- modules: importing one runs its parents' and its own import-time statements
    def enter(self, name: str) -> _Module | None:
        if name in KEY_MACHINERY:
            return None
        mod = _module(name)
        if mod is None or name in self.modules:
            return mod
        self.modules.add(name)
        for parent in _with_parents(name)[:-1]:
            self.enter(parent)
        if mod.on_import:
            self.items[f"{name}:<import>"] = mod.meaning_of_import()
            self.uses(mod, "<import>", mod.on_import)
        # what its top-level imports import runs too (their import-time statements only)
        for target, _ in mod.imported.values():
            if _is_project(target, self.packages):
                self.enter(target)
        for target in mod.star:
            self.module_whole(target)
        return mod

    def module_whole(self, name: str) -> None:
        """A module used as a value: everything in it counts."""
        if name in self.whole or not _is_project(name, self.packages) or name in KEY_MACHINERY:
            return
        self.whole.add(name)
        mod = self.enter(name)
        if mod is None:
            return
        for n in mod.defined:
            self.todo.append((name, n))
        for target, attr in mod.imported.values():
            self.reach(target, attr)

    def reach(self, module: str, attr: str | None) -> None:
        """The definition ``attr`` of ``module`` (or the module as a value when ``attr`` is None)."""
        if not _is_project(module, self.packages) or module in KEY_MACHINERY:
            return
        if attr is None:
            self.module_whole(module)
            return
        mod = self.enter(module)
        if mod is None:
            return
        if attr in mod.defined:
            self.todo.append((module, attr))
        elif attr in mod.imported:  # a re-export: follow it to the definition
            self.reach(*mod.imported[attr])
        elif module_file(f"{module}.{attr}") is not None:
            self.module_whole(f"{module}.{attr}")
        else:  # a name this module neither defines nor imports (``__getattr__``, ``*``)
            self.module_whole(module)

    def chain(self, module: str, parts: list[str]) -> None:
        """``mod.a.b``: descend through submodules, then reach the first definition."""
        for part in parts:
            sub = f"{module}.{part}"
            if module_file(sub) is None:
                self.reach(module, part)
                return
            module = sub
            self.enter(module)
        self.module_whole(module)  # the chain ends on a module: it is used as a value

    def uses(self, mod: _Module, key: str, nodes: list[ast.AST]) -> None:
        """Follow every name used in ``nodes`` (definition ``key`` of ``mod``) to what it binds."""
        cache_key = (key, self.packages)
        if cache_key not in mod.refs:  # once per parsed definition, whatever the stage
            mod.refs[cache_key] = _refs(mod, nodes, self.packages)
        for action in mod.refs[cache_key]:
            kind = action[0]
            if kind == "todo":
                self.todo.append((action[1], action[2]))
            elif kind == "whole":
                self.module_whole(action[1])
            elif kind == "reach":
                self.reach(action[1], action[2])
            elif kind == "chain":
                self.chain(action[1], list(action[2]))
            else:  # external bindings: swapping one library for another changes the key
                self.items[f"{mod.name}:<external>:{len(self.items)}"] = action[1]

    def run(self, root_module: str, root_name: str) -> None:
        while self.todo:
            module, name = self.todo.pop()
            if (module, name) in self.done:
                continue
            self.done.add((module, name))
            mod = self.enter(module)
            if mod is None or name not in mod.defined:
                continue
            root = (module, name) == (root_module, root_name)
            self.items[f"{module}:{name}"] = mod.meaning_of(name, root)
            nodes = [_undecorated(n) for n in mod.defined[name]] if root else mod.defined[name]
            self.uses(mod, f"{name}\0root" if root else name, nodes)


def _undecorated(node: ast.AST) -> ast.AST:
    if isinstance(node, _DEF):
        node = copy.copy(node)
        node.decorator_list = []
    return node


def _stable_items(items: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """Sorted items; the external-binding records are renamed by content (their counter is walk order)."""
    out: dict[str, str] = {}
    for key, text in items.items():
        if ":<external>:" in key:
            key = key.rsplit(":", 1)[0] + ":" + hashlib.sha256(text.encode()).hexdigest()[:16]
        out[key] = text
    return tuple(sorted(out.items()))


def function_closure(fn: Callable[..., Any], packages: tuple[str, ...] = PROJECT_PACKAGES) -> CodeClosure:
    """The code closure of ``fn`` (a module-level function of a project module, or a Prefect task)."""
    fn = inspect.unwrap(getattr(fn, "fn", fn))
    current = fn.__module__
    mod = _module(current) if _is_project(current, packages) else None
    if mod is None:
        raise ValueError(f"{fn!r} is not defined in a project module ({', '.join(packages)})")
    if fn.__name__ not in mod.defined:
        raise ValueError(f"{fn.__qualname__} is not a module-level definition of {current}")
    walk = _Walk(packages)
    walk.todo.append((current, fn.__name__))
    walk.run(current, fn.__name__)
    items = _stable_items(walk.items)
    modules = frozenset(key.split(":", 1)[0] for key, _ in items if ":<external>:" not in key)
    return CodeClosure(f"{current}:{fn.__qualname__}", items, modules)


def code_digest(fn: Callable[..., Any]) -> str:
    """Digest of the meaning of everything ``fn`` runs of this project (see :func:`function_closure`).

    Remembered on disk (``<cache dir>/code-digests.json``) under a fingerprint of the text of
    every project source file: while no file changed, a run reads and hashes the files instead
    of parsing and walking them (seconds of every cached re-run). Any edit, even a comment,
    changes the fingerprint and the digests are computed again (and come out the same when the
    edit kept the meaning).
    """
    import json
    import sys

    target = inspect.unwrap(getattr(fn, "fn", fn))
    name = f"{target.__module__}:{target.__qualname__}"
    fingerprint = f"py{sys.version_info[0]}.{sys.version_info[1]}:{_sources_fingerprint(PROJECT_PACKAGES)}"
    store_path = _digest_store_path()
    try:
        store = json.loads(store_path.read_text())
        if not isinstance(store, dict):
            store = {}
    except (OSError, ValueError):
        store = {}
    known = store.get(fingerprint)
    if isinstance(known, dict) and isinstance(known.get(name), str):
        return known[name]
    digest = function_closure(fn, PROJECT_PACKAGES).digest()
    entry = known if isinstance(known, dict) else {}
    entry[name] = digest
    store.pop(fingerprint, None)  # newest last; keep a few source states (branches, bisects)
    store[fingerprint] = entry
    store = dict(list(store.items())[-_STORED_STATES:])
    try:
        from pyroblur.core.io import write_atomic

        write_atomic(store_path, json.dumps(store), durable=False)
    except OSError:
        pass  # a cache: the next run computes the digest again
    return digest


#: How many source states (fingerprints) the digest store keeps.
_STORED_STATES = 8


def _digest_store_path() -> Path:
    from pyroblur.core.settings import cache_dir

    return cache_dir() / "code-digests.json"


@functools.lru_cache(maxsize=8192)
def _text_digest(path: str, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(_read(path).encode()).hexdigest()


def _sources_fingerprint(packages: tuple[str, ...]) -> str:
    """A digest of the path and text of every ``.py`` file of ``packages``."""
    h = hashlib.sha256()
    for top in packages:
        root = _package_dir(top)
        if root is None:
            h.update(f"{top}:absent\n".encode())
            continue
        for path in sorted(root.rglob("*.py")):
            st = path.stat()
            rel = path.relative_to(root.parent).as_posix()
            h.update(f"{rel}:{_text_digest(str(path), st.st_mtime_ns, st.st_size)}\n".encode())
    return h.hexdigest()


def forget_parsed() -> None:
    """Drop cached parses and file digests (the caches already key on each file's mtime and size)."""
    _load.cache_clear()
    _package_dir.cache_clear()
    module_file.cache_clear()
    _text_digest.cache_clear()


__all__ = [
    "PROJECT_PACKAGES",
    "CodeClosure",
    "code_digest",
    "forget_parsed",
    "function_closure",
    "meaning",
    "module_file",
    "module_imports",
]
