"""The cache key's code part follows the import graph (issue 10), and the policy never deletes.

The fixture builds a small package on disk: ``stages.py`` holds two "tasks"; ``load`` imports
``a`` lazily, ``a`` imports ``b``, ``b`` imports ``c`` (two imports away from ``a``); ``d`` is
imported only by the other task. Editing a file must change exactly the digests that reach it.
"""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from pathlib import Path

import pytest
from prefect.filesystems import LocalFileSystem
from prefect.results import ResultStore

from pyroblur.core.codegraph import code_digest, forget_parsed, function_closure, module_closure
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
    "util.py": "def helper():\n    return 1\n",
    "a.py": "from toypkg.b import h\n\ndef f(x):\n    return h(x)\n",
    "b.py": "def h(x):\n    from toypkg import c\n    return c.k(x)\n",
    "c.py": "def k(x):\n    return x + 1\n",
    "d.py": "def g(x):\n    return x * 2\n",
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


def _edit(path: Path, extra: str) -> None:
    st = path.stat()
    path.write_text(path.read_text() + extra)
    # make sure the parse cache (keyed on mtime and size) sees a new file on coarse clocks too
    import os

    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def _digest(fn) -> str:
    closure = function_closure(fn, packages=("toypkg",))
    return closure.digest()


def test_closure_follows_lazy_and_transitive_imports(toypkg):
    _, mod = toypkg
    mods = function_closure(mod.load, packages=("toypkg",)).modules
    assert {"toypkg.a", "toypkg.b", "toypkg.c", "toypkg.util", "toypkg"} <= mods
    assert "toypkg.d" not in mods
    assert "toypkg.d" in function_closure(mod.other, packages=("toypkg",)).modules
    assert "toypkg.c" not in function_closure(mod.other, packages=("toypkg",)).modules


@pytest.mark.parametrize("changed", ["c.py", "b.py", "a.py", "util.py"])
def test_change_in_a_reached_module_changes_the_key(toypkg, changed):
    pkg, mod = toypkg
    before_load, before_other = _digest(mod.load), _digest(mod.other)
    _edit(pkg / changed, "\n# changed\n")
    assert _digest(mod.load) != before_load
    assert _digest(mod.other) == before_other  # ``other`` reaches none of these


def test_change_in_an_unreached_module_keeps_the_key(toypkg):
    pkg, mod = toypkg
    before = _digest(mod.load)
    _edit(pkg / "d.py", "\n# changed\n")
    assert _digest(mod.load) == before


def test_same_module_helpers_count_but_other_definitions_do_not(toypkg):
    pkg, mod = toypkg
    before_load, before_other = _digest(mod.load), _digest(mod.other)
    stages = pkg / "stages.py"
    stages.write_text(stages.read_text().replace("LIMIT = 3", "LIMIT = 4"))
    _edit(stages, "")
    assert _digest(mod.load) != before_load  # load uses LIMIT
    assert _digest(mod.other) == before_other


def test_the_real_stages_reach_what_they_import_and_nothing_else():
    import tasks.pipeline as tp

    train = function_closure(tp.train).modules
    # train -> pyroblur.training.trainer -> pyroblur.core.devices: two imports away
    assert {"pyroblur.training.trainer", "pyroblur.core.devices"} <= train
    assert not any(m.startswith(("pyroblur.anonymize", "pyroblur.curation")) for m in train)
    # config imports the source models, which runs sources/__init__, but reaches no source kind
    assert not any(m.startswith("pyroblur.data.sources.") and m != "pyroblur.data.sources.models" for m in train)
    curate = function_closure(tp.curate).modules
    # the modules the old hand-kept list missed
    assert {"pyroblur.core.records", "pyroblur.core.hashing", "pyroblur.config", "pyroblur.curation.dataset"} <= curate
    download = function_closure(tp.download).modules
    assert {"pyroblur.data.sources.wider_face", "pyroblur.data.archive", "pyroblur.data.formats.coco"} <= download
    assert "pyroblur.training.trainer" not in download
    # the cache machinery configures tasks; it is not part of what they compute
    assert "tasks._cache" not in train and "tasks._verify" not in train


def test_module_closure_contains_parent_packages():
    assert {"pyroblur", "pyroblur.curation", "pyroblur.curation.importer"} <= module_closure(
        ["pyroblur.curation.importer"]
    )


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
