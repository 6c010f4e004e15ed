"""The cache key's code part follows what a stage runs and what the code means (issues 10, 20),
and the policy never deletes.

The fixture builds a small package on disk: ``stages.py`` holds two "tasks"; ``load`` imports
``a`` lazily, ``a`` imports ``b``, ``b`` imports ``c`` (two imports away from ``a``); ``d`` is
imported only by the other task. Editing code must change exactly the digests that reach it;
editing comments, docstrings or formatting must change none, in the toy package and in every
real stage of the pipeline.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
from prefect.filesystems import LocalFileSystem
from prefect.results import ResultStore

from pyroblur.core import codegraph
from pyroblur.core.codegraph import code_digest, forget_parsed, function_closure
from pyroblur.manifests import ExportManifest
from tasks._cache import StagePolicy, resolve_key
from tasks._keys import stage_digest

FILES = {
    "__init__.py": "",
    "stages.py": """
        from toypkg.util import helper

        LIMIT = 3

        def load(x):
            from toypkg import a
            return a.f(x) + helper() + LIMIT

        def other(x):
            from toypkg.d import g
            return g(x)
        """,
    "util.py": "def helper():\n    return 1\n\n\ndef unused():\n    return 5\n",
    "a.py": "from toypkg.b import h\n\ndef f(x):\n    return h(x)\n",
    "b.py": "def h(x):\n    from toypkg import c\n    return c.k(x)\n",
    "c.py": "def k(x):\n    return x + 1\n",
    "d.py": "def g(x):\n    return x * 2\n",
}

#: A change to code (not to comments) in each file: old text -> new text.
CODE_EDITS = {
    "util.py": ("return 1", "return 2"),
    "a.py": ("return h(x)", "return h(x + 0)"),
    "b.py": ("return c.k(x)", "return c.k(x) * 1"),
    "c.py": ("x + 1", "x + 2"),
    "d.py": ("x * 2", "x * 3"),
}


@pytest.fixture
def toypkg(tmp_path, monkeypatch):
    root = tmp_path / "src"
    pkg = root / "toypkg"
    pkg.mkdir(parents=True)
    for name, text in FILES.items():
        (pkg / name).write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr("pyroblur.core.codegraph.PROJECT_PACKAGES", ("toypkg",))
    importlib.invalidate_caches()
    forget_parsed()  # another test's toypkg lived in another temporary folder
    mod = importlib.import_module("toypkg.stages")
    yield pkg, mod
    for name in [m for m in sys.modules if m == "toypkg" or m.startswith("toypkg.")]:
        del sys.modules[name]
    forget_parsed()


def _rewrite(path: Path, old: str, new: str) -> None:
    st = path.stat()
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))
    # make sure the parse cache (keyed on mtime and size) sees a new file on coarse clocks too
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def _append(path: Path, extra: str) -> None:
    _rewrite(path, path.read_text(), path.read_text() + extra)


def _digest(fn) -> str:
    closure = function_closure(fn, packages=("toypkg",))
    return closure.digest()


def test_closure_follows_lazy_and_transitive_imports(toypkg):
    _, mod = toypkg
    mods = function_closure(mod.load, packages=("toypkg",)).modules
    assert {"toypkg.a", "toypkg.b", "toypkg.c", "toypkg.util"} <= mods
    assert "toypkg.d" not in mods
    assert "toypkg.d" in function_closure(mod.other, packages=("toypkg",)).modules
    assert "toypkg.c" not in function_closure(mod.other, packages=("toypkg",)).modules


@pytest.mark.parametrize("changed", ["c.py", "b.py", "a.py", "util.py"])
def test_change_to_code_a_stage_runs_changes_its_key(toypkg, changed):
    pkg, mod = toypkg
    before_load, before_other = _digest(mod.load), _digest(mod.other)
    _rewrite(pkg / changed, *CODE_EDITS[changed])
    assert _digest(mod.load) != before_load
    assert _digest(mod.other) == before_other  # ``other`` reaches none of these


def test_change_to_code_a_stage_does_not_run_keeps_its_key(toypkg):
    pkg, mod = toypkg
    before = _digest(mod.load)
    _rewrite(pkg / "d.py", *CODE_EDITS["d.py"])
    _rewrite(pkg / "util.py", "return 5", "return 6")  # a module it imports, a function it never calls
    _append(pkg / "util.py", "\n\ndef new_unused():\n    return 7\n")
    assert _digest(mod.load) == before


def _docstrings_added(path: str, text: str) -> str:
    """A docstring at the top of the module and of every function and class."""
    tree = ast.parse(text)
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            node.body.insert(0, ast.Expr(ast.Constant("An added docstring.")))
    return ast.unparse(tree)


@pytest.mark.parametrize("transform", ["_comment_everywhere", "_docstrings_added", "_reformatted"])
def test_comment_docstring_and_formatting_edits_keep_the_toy_keys(toypkg, transform):
    pkg, mod = toypkg
    before = _digest(mod.load), _digest(mod.other)
    for name in FILES:
        text = (pkg / name).read_text()
        _rewrite(pkg / name, text, globals()[transform](name, text))
    assert (_digest(mod.load), _digest(mod.other)) == before


def test_same_module_helpers_count_but_other_definitions_do_not(toypkg):
    pkg, mod = toypkg
    before_load, before_other = _digest(mod.load), _digest(mod.other)
    _rewrite(pkg / "stages.py", "LIMIT = 3", "LIMIT = 4")
    assert _digest(mod.load) != before_load  # load uses LIMIT
    assert _digest(mod.other) == before_other


# ----------------------------------------------------------------------------- the real stages


def _stages() -> dict[str, object]:
    import tasks.anonymize as ta
    import tasks.pipeline as tp

    names = ["download", "curate", "balance_split", "export", "train", "benchmark", "promote"]
    return {**{n: getattr(tp, n) for n in names}, "anonymize_file": ta.anonymize_file_task}


def _keys_with(monkeypatch, transform) -> dict[str, str]:
    """Every stage's code digest when every project file reads as ``transform(path, text)``."""
    real = codegraph._read
    monkeypatch.setattr(codegraph, "_read", lambda path: transform(path, real(path)))
    forget_parsed()
    try:
        return {name: code_digest(task) for name, task in _stages().items()}
    finally:
        monkeypatch.setattr(codegraph, "_read", real)
        forget_parsed()


def _comment_everywhere(path: str, text: str) -> str:
    """A comment above every statement line and after every line that can take one."""
    out = ["# an added comment"]
    for line in text.splitlines():
        indent = line[: len(line) - len(line.lstrip())]
        if line.lstrip().startswith(("def ", "class ", "return ", "@")):
            out.append(f"{indent}# why this is done")
        out.append(line)
    return "\n".join(out) + "\n# the end\n"


def _docstrings_rewritten(path: str, text: str) -> str:
    """Every docstring (module, class, function) replaced by another text of other length."""
    lines = text.splitlines()
    tree = ast.parse(text)
    spans = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                if lines[first.lineno - 1][: first.col_offset].strip() == "" and first.end_lineno is not None:
                    spans.append((first.lineno, first.end_lineno, first.col_offset))
    for start, end, col in sorted(spans, reverse=True):
        lines[start - 1 : end] = [" " * col + '"""Rewritten: says something else entirely, at another length."""']
    return "\n".join(lines) + "\n"


def _reformatted(path: str, text: str) -> str:
    """The same tree printed by ``ast.unparse``: other formatting, no comments, same meaning."""
    return ast.unparse(ast.parse(text))


@pytest.mark.parametrize("transform", [_comment_everywhere, _docstrings_rewritten, _reformatted])
def test_comment_docstring_and_formatting_edits_keep_every_stage_key(monkeypatch, transform):
    before = _keys_with(monkeypatch, lambda path, text: text)
    sample = (Path(codegraph.__file__).parents[1] / "config.py").read_text()
    assert transform("config.py", sample) != sample  # the edit really edits
    assert _keys_with(monkeypatch, transform) == before


def _edit_function(module_file: str, function: str):
    """A transform that adds a statement at the top of ``function`` in ``module_file``."""

    def transform(path: str, text: str) -> str:
        if not path.endswith(module_file):
            return text
        tree = ast.parse(text)
        node = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == function)
        node.body.insert(1 if ast.get_docstring(node) else 0, ast.parse("_unused = 0").body[0])
        return ast.unparse(tree)

    return transform


def test_a_code_change_misses_the_stages_that_run_it_and_only_those(monkeypatch):
    before = _keys_with(monkeypatch, lambda path, text: text)
    after = _keys_with(monkeypatch, _edit_function("pyroblur/training/trainer.py", "train"))
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"train"}
    # video code: the file anonymizer runs it, the benchmark (which builds the same detector) does not
    after = _keys_with(monkeypatch, _edit_function("pyroblur/anonymize/video.py", "anonymize_video"))
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"anonymize_file"}
    # the detector: both the anonymizer and the benchmark's privacy figures run it
    after = _keys_with(monkeypatch, _edit_function("pyroblur/anonymize/models.py", "build_detector"))
    changed = {name for name in before if before[name] != after[name]}
    assert {"anonymize_file", "benchmark"} <= changed and "train" not in changed


def test_the_real_stages_reach_what_they_run_and_nothing_else():
    import tasks.pipeline as tp

    train = function_closure(tp.train).modules
    # train -> pyroblur.training.trainer -> pyroblur.core.devices: two imports away
    assert {"pyroblur.training.trainer", "pyroblur.core.devices"} <= train
    assert not any(m.startswith(("pyroblur.anonymize", "pyroblur.curation", "pyroblur.data.")) for m in train)
    curate = function_closure(tp.curate).modules
    assert {"pyroblur.core.records", "pyroblur.core.hashing", "pyroblur.config", "pyroblur.curation.dataset"} <= curate
    download = function_closure(tp.download).modules
    assert {"pyroblur.data.sources.wider_face", "pyroblur.data.archive", "pyroblur.data.formats.coco"} <= download
    assert "pyroblur.training.trainer" not in download
    # the benchmark builds the anonymizer's detector for its privacy figures, and nothing else of it
    bench = function_closure(tp.benchmark).modules
    assert "pyroblur.anonymize.detector" in bench
    ran_elsewhere = {"video", "files", "images", "audit", "cli", "api", "planning"}
    assert not {m for m in bench if m.rpartition(".")[2] in ran_elsewhere and m.startswith("pyroblur.anonymize")}
    # the cache machinery configures tasks; it is not part of what they compute, and the key
    # machinery (which names outputs by the digest) changes every key by itself when it matters
    assert "tasks._cache" not in train and "tasks._verify" not in train
    assert not {"tasks._keys", "pyroblur.core.codegraph"} & (train | curate)


def test_stage_digest_depends_on_inputs_and_code():
    import tasks.pipeline as tp

    a = stage_digest(tp.export, {"x": 1})
    assert a == stage_digest(tp.export, {"x": 1})
    assert a != stage_digest(tp.export, {"x": 2})
    assert a != stage_digest(tp.train, {"x": 1})
    assert code_digest(tp.export) != code_digest(tp.train)


# ----------------------------------------------------------------------------- the policy


class _Ctx:
    def __init__(self, task, store):
        self.task = task
        self.result_store = store


def _export_manifest(folder: Path, digest: str) -> ExportManifest:
    from pyroblur.curation.export import STAMP

    folder.mkdir(parents=True, exist_ok=True)
    (folder / STAMP).write_text(json.dumps({"digest": digest}))
    return ExportManifest(digest=digest, path=str(folder), data_yaml=str(folder / "data.yaml"), images={"train": 1})


def test_policy_steps_past_a_stale_record_without_deleting_it(tmp_path):
    import tasks.pipeline as tp

    storage = tmp_path / "results"
    store = ResultStore(result_storage=LocalFileSystem(basepath=str(storage)))
    policy = StagePolicy(stage="export")
    inputs = {"selection": {"digest": "abc"}}
    key = policy.compute_key(_Ctx(tp.export, store), inputs, {})
    assert key.startswith("export-")
    assert policy.compute_key(_Ctx(tp.export, store), inputs, {}) == key  # deterministic, no record yet

    out = tmp_path / "export"
    store.write(obj=_export_manifest(out, "d1"), key=key)
    assert policy.compute_key(_Ctx(tp.export, store), inputs, {}) == key  # intact record: same key

    (out / ".pyroblur-export.json").unlink()  # outputs gone: the record is stale
    derived = policy.compute_key(_Ctx(tp.export, store), inputs, {})
    assert derived != key and derived.startswith(key)
    assert (storage / key).exists(), "computing a key must not delete anything"
    assert policy.compute_key(_Ctx(tp.export, store), inputs, {}) == derived  # deterministic

    store.write(obj=_export_manifest(tmp_path / "export-rerun", "d1"), key=derived)  # the re-run's result
    assert policy.compute_key(_Ctx(tp.export, store), inputs, {}) == derived  # found again: no permanent miss


def test_unreadable_record_is_stale():
    class Store:
        def exists(self, key):
            return key == "base"

        def read(self, key):
            raise ValueError("garbage")

    key = resolve_key(Store(), "base", intact=lambda m: True)
    assert key != "base" and key.startswith("base~")


def test_stale_records_under_derived_keys_lead_on_to_a_fresh_key():
    """Two stale records in a row (the outputs deleted twice): the walk must not come back to
    the same derived key and serve its stale record as a hit."""

    class Record:
        result = {"same": "manifest"}  # every record describes the same (deleted) outputs

    class Store:
        def __init__(self, base):
            self.keys = {base}

        def exists(self, key):
            return key in self.keys

        def read(self, key):
            return Record()

    BASE = "curate-" + "0123456789abcdef" * 4  # noqa: N806 - a real key's shape
    store = Store(BASE)
    first = resolve_key(store, BASE, intact=lambda m: False)
    store.keys.add(first)  # the re-run's result went stale too
    second = resolve_key(store, BASE, intact=lambda m: False)
    assert second not in store.keys, "a stale record was served"
    assert second == resolve_key(store, BASE, intact=lambda m: False)  # deterministic


# ----------------------------------------------------------------------------- the digest store


def test_digests_are_remembered_while_no_source_changes_and_recomputed_after_any_edit(monkeypatch, tmp_path, toypkg):
    pkg, mod = toypkg
    monkeypatch.setenv("PYROBLUR_CACHE_DIR", str(tmp_path / "cache"))
    walked: list[str] = []
    real_closure = codegraph.function_closure

    def counting(fn, *args, **kwargs):
        walked.append(fn.__name__)
        return real_closure(fn, *args, **kwargs)

    monkeypatch.setattr(codegraph, "function_closure", counting)
    first = code_digest(mod.load)
    assert walked == ["load"] and (tmp_path / "cache" / "code-digests.json").is_file()
    forget_parsed()  # as a new process would start
    assert code_digest(mod.load) == first and walked == ["load"]  # served from the store, no walk
    # a comment-only edit: the store misses (walks again) and the digest is the same
    _rewrite(pkg / "c.py", (pkg / "c.py").read_text(), "# a comment\n" + (pkg / "c.py").read_text())
    assert code_digest(mod.load) == first and walked == ["load", "load"]
    # a code edit: walked again, another digest
    _rewrite(pkg / "c.py", *CODE_EDITS["c.py"])
    assert code_digest(mod.load) != first and walked == ["load", "load", "load"]


def test_an_unreadable_digest_store_is_recomputed_not_trusted(monkeypatch, tmp_path, toypkg):
    _, mod = toypkg
    cache = tmp_path / "cache"
    monkeypatch.setenv("PYROBLUR_CACHE_DIR", str(cache))
    expected = codegraph.function_closure(mod.load, ("toypkg",)).digest()
    cache.mkdir()
    (cache / "code-digests.json").write_text("{not json")
    assert code_digest(mod.load) == expected
