import re
import subprocess
import sys
from pathlib import Path

import pytest

from pyroblur.config import ConfigError, PipelineConfig, load_config, parse_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["demo.yaml", "pyroblur.yaml"])
def test_shipped_configs_validate(name):
    cfg = load_config(ROOT / "configs" / name)
    assert isinstance(cfg, PipelineConfig)


def test_real_default_is_the_real_thing():
    cfg = load_config(ROOT / "configs" / "pyroblur.yaml")
    assert cfg.train.model == "yolo11l.pt"
    assert cfg.train.imgsz == 640
    assert cfg.balance.samples_per_class == 1000
    assert cfg.train.device != "cpu"
    assert {s.kind for s in cfg.sources} >= {"wider_face", "hf_coco"}


def test_demo_is_offline_and_small():
    cfg = load_config(ROOT / "configs" / "demo.yaml")
    assert [s.kind for s in cfg.sources] == ["synthetic"]
    assert cfg.train.model.endswith(".yaml") and cfg.train.device == "cpu"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"train": {"epoch": 3}}, "unknown key 'train.epoch' (did you mean 'epochs'?)"),
        ({"trian": {}}, "unknown key 'trian' (did you mean 'train'?)"),
        ({"train": {"args": {"mosiac": 1.0}}}, "'mosiac' is not an ultralytics argument (did you mean 'mosaic'?)"),
        ({"train": {"args": {"data": "x.yaml"}}}, "'data' is set by the pipeline"),
        ({"train": {"args": {"epochs": 3}}}, "set train.epochs instead"),
        ({"train": {"imgsz": 100}}, "multiple of 32"),
        ({"train": {"epochs": "many"}}, "'train.epochs'"),
        ({"split": {"train": 0.5, "val": 0.1, "test": 0.1}}, "must sum to 1"),
        ({"sources": []}, "at least one source"),
        ({"sources": [{"kind": "nope", "name": "x"}]}, "'sources.0'"),
        ([1, 2], "top level must be a mapping"),
    ],
)
def test_bad_configs_name_file_and_key(data, expected):
    with pytest.raises(ConfigError) as err:
        parse_config(data, "configs/bad.yaml")
    assert "configs/bad.yaml" in str(err.value)
    assert expected in str(err.value)


def test_ultralytics_args_are_accepted_when_real():
    cfg = parse_config({"train": {"args": {"mosaic": 0.5, "cache": "ram", "cos_lr": True}}})
    assert cfg.train.args["cache"] == "ram"


def test_yaml_syntax_error_names_file(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config(bad)


def test_overrides(tmp_path):
    cfg = load_config(ROOT / "configs" / "demo.yaml", ["train.epochs=2", "balance.seed=7"])
    assert cfg.train.epochs == 2 and cfg.balance.seed == 7


def test_cli_bad_config_exits_nonzero_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epoch: 3\n")
    data = tmp_path / "data"
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "--config", str(bad)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYROBLUR_DATA_DIR": str(data), "PREFECT_HOME": str(tmp_path / "ph")},
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "bad.yaml" in proc.stderr and "train.epoch" in proc.stderr
    assert not data.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_override_list_index_and_errors():
    cfg = load_config(ROOT / "configs" / "demo.yaml", ["sources.0.seed=9"])
    assert cfg.sources[0].seed == 9
    with pytest.raises(ConfigError, match="must look like"):
        load_config(ROOT / "configs" / "demo.yaml", ["train.epochs"])
    with pytest.raises(ConfigError, match="cannot descend"):
        load_config(ROOT / "configs" / "demo.yaml", ["sources.5.seed=1"])


# --- every way a config file can be unusable is one named ConfigError (issue 14) -------------

BOMB = """\
train:
  args:
    plots: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
    save: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
    val: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
    amp: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
    cache: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
    rect: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
    cos_lr: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
    fraction: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
    profile: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "config file is empty"),
        (b"# only a comment\n", "config file is empty"),
        (b"name: caf\xe9\n", "not UTF-8 text (byte 0xe9 at offset 9)"),
        (BOMB.encode(), "expand to more than 100,000 nodes"),
        (b"a: &x [*x]\n", "recursive YAML alias"),
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
    ],
    ids=["empty", "comment-only", "latin-1", "billion-laughs", "recursive", "deep"],
)
def test_unusable_config_files_are_named(tmp_path, content, expected):
    path = tmp_path / "cfg.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=re.escape(expected)) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert err.value.exit_code == 2 and not err.value.transient


def test_folder_and_oversized_file_are_named(tmp_path):
    with pytest.raises(ConfigError, match="is a folder, not a config file"):
        load_config(tmp_path)
    big = tmp_path / "big.yaml"
    big.write_bytes(b"# " + b"x" * 2_000_000 + b"\n")
    with pytest.raises(ConfigError, match="config file of 2,000,003 bytes is over the limit of 1,000,000 bytes"):
        load_config(big)


def test_alias_bomb_in_an_override_is_refused():
    bomb = "[" + ",".join(["&a [1,2,3,4,5,6,7,8,9]"] + ["*a"] * 2000) + "]"
    with pytest.raises(ConfigError, match="override 'train.args.plots=.*more than 1000 YAML aliases"):
        load_config(ROOT / "configs" / "demo.yaml", [f"train.args.plots={bomb}"])


def test_safe_loader_reads_what_yaml_safe_load_reads():
    import yaml

    from pyroblur.core.yamlsafe import load_yaml

    for cfg in (ROOT / "configs").glob("*.yaml"):
        assert load_yaml(cfg.read_text()) == yaml.safe_load(cfg.read_text())
    # A few anchors and merge keys, as people use them, stay allowed.
    doc = "base: &b {epochs: 1, imgsz: 64}\ntrain:\n  <<: *b\n  batch: 8\nother: *b\n"
    assert load_yaml(doc) == yaml.safe_load(doc)


# --- preflight: preconditions checked at flow start, before any stage -------------------------


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    root = tmp_path / "data"
    monkeypatch.setenv("PYROBLUR_DATA_DIR", str(root))
    return root


def _tiny(**changes):
    from tiny_config import tiny_config

    return parse_config(tiny_config(**changes))


def test_preflight_passes_on_a_fresh_root(data_root):
    from pyroblur.preflight import preflight

    preflight(_tiny())
    assert data_root.is_dir()


def test_preflight_names_a_bad_cpu_threads_setting(data_root, monkeypatch):
    from pyroblur.preflight import preflight

    monkeypatch.setenv("PYROBLUR_CPU_THREADS", "two")
    with pytest.raises(ConfigError, match="PYROBLUR_CPU_THREADS='two'"):
        preflight(_tiny())
    preflight(_tiny(), until="export")  # no training: not its business


def test_preflight_rebuilds_a_damaged_registry_cache(data_root):
    from pyroblur.preflight import preflight

    data_root.mkdir()
    (data_root / "registry.json").write_text("{ not json")  # derived from MLflow: rebuilt, not trusted
    preflight(_tiny())


def test_preflight_names_a_tracking_store_that_is_down(data_root, monkeypatch):
    from pyroblur.preflight import preflight
    from pyroblur.registry.tracking import TrackingStoreError

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # the discard port: nothing listens
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with pytest.raises(TrackingStoreError, match="127.0.0.1:9") as err:
        preflight(_tiny())  # before any stage: nothing downloaded, nothing trained
    assert "MLFLOW_TRACKING_URI" in str(err.value)
    assert not (data_root / "raw").exists()


def test_preflight_names_a_missing_package(data_root, monkeypatch):
    import importlib.util

    from pyroblur.preflight import preflight

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "roboflow" else real(name, *a))
    cfg = _tiny(sources=[{"kind": "roboflow", "name": "rf"}])
    with pytest.raises(ConfigError, match="source 'rf' .*needs the Python package 'roboflow'"):
        preflight(cfg)


def test_preflight_names_missing_weights_and_devices(data_root):
    import torch

    from pyroblur.preflight import preflight

    with pytest.raises(ConfigError, match="train.model: weights file 'nope.pt' not found"):
        preflight(_tiny(**{"train.model": "nope.pt", "train.allow_download": False}))
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ConfigError, match=f"train.device: device '{gpus}' asks for GPU {gpus}"):
        preflight(_tiny(**{"train.device": str(gpus)}))
    with pytest.raises(ConfigError, match="benchmark.device: device 'cuda:x' is not one of"):
        preflight(_tiny(**{"benchmark.device": "cuda:x"}))
    # Stopping before training, or training on a GPU deployment, needs no local GPU.
    preflight(_tiny(**{"train.device": str(gpus)}), until="curate")
    preflight(_tiny(**{"train.device": str(gpus), "orchestration.train_deployment": "train_stage/x"}))
