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
