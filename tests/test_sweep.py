"""Hyperparameter sweeps (issue 24): the config section, the study's restart rules, and real
sweeps through ``pyroblur sweep`` (SIGTERM and restart; a pruned trial).

The real sweeps share one data root (the data stages run once, cached) and train YOLO11n from
its .yaml at 64 px for one or two epochs on 60 synthetic images.
"""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from tiny_config import tiny_config

from pyroblur.config import ConfigError, parse_config

ROOT = Path(__file__).resolve().parents[1]
PYROBLUR = Path(sys.executable).parent / "pyroblur"

SPACE = {"lr0": {"low": 0.001, "high": 0.05, "log": True}, "mosaic": {"choices": [0.0, 1.0]}}


def _sweep_config(**sweep: Any) -> dict[str, Any]:
    cfg = tiny_config(**{"train.args": {"plots": False, "optimizer": "SGD"}})
    cfg["sweep"] = {"space": SPACE, **sweep}
    return cfg


# ------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        (
            {"space": {"mosiac": {"choices": [0, 1]}}},
            "'mosiac' is not an ultralytics training argument or a train field (did you mean 'mosaic'?)",
        ),  # fmt: skip
        ({"space": {"imgsz": {"choices": [64, 70]}}}, "multiples of 32"),
        ({"space": {"imgsz": {"low": 64, "high": 128}}}, "needs a step that is a multiple of 32"),
        ({"space": {"lr0": {"low": 0.001, "high": 0.01}}, "strategy": "grid"}, "grid strategy needs choices"),
        ({"space": {"device": {"choices": ["cpu"]}}}, "'device' is not swept: set train.device"),
        ({"space": {"mosaic": {"low": 1, "high": 0}}}, "low must be below high"),
        ({"space": {"mosaic": {"low": 0, "high": 1, "choices": [0]}}}, "either choices or a range"),
        ({"space": {"epochs": {"low": 1.5, "high": 3}}}, "'epochs' takes integers"),
        ({"space": {"lr0": {"low": 0, "high": 0.1, "log": True}}}, "log range needs low > 0"),
        ({"space": {}}, "sweep.space"),
    ],
)
def test_bad_sweep_sections_are_named(sweep: dict[str, Any], message: str) -> None:
    cfg = tiny_config(**{"train.args": {"optimizer": "SGD"}})
    cfg["sweep"] = sweep
    with pytest.raises(ConfigError) as err:
        parse_config(cfg, "bad.yaml")
    assert "bad.yaml" in str(err.value) and message in str(err.value), str(err.value)


def test_learning_rate_search_needs_an_optimizer() -> None:
    cfg = tiny_config()
    cfg["sweep"] = {"space": {"lr0": {"low": 0.001, "high": 0.01}}}
    with pytest.raises(ConfigError, match="ignores with optimizer 'auto'.*set train.args.optimizer"):
        parse_config(cfg, "bad.yaml")


def test_grid_enumerates_choices_and_stepped_ranges() -> None:
    cfg = tiny_config(**{"train.args": {"optimizer": "SGD"}})
    cfg["sweep"] = {"strategy": "grid", "space": {"epochs": {"low": 1, "high": 3}, "mosaic": {"choices": [0.0, 1.0]},
                                                  "imgsz": {"low": 32, "high": 96, "step": 32}}}  # fmt: skip
    sweep = parse_config(cfg).sweep
    assert sweep.grid() == {"epochs": [1, 2, 3], "mosaic": [0.0, 1.0], "imgsz": [32, 64, 96]}
    assert sweep.planned_trials() == 18


def test_sweep_demo_config_is_valid() -> None:
    from pyroblur.config import load_config

    cfg = load_config(ROOT / "configs" / "sweep-demo.yaml")
    assert cfg.sweep is not None and cfg.sweep.planned_trials() >= 3
    demo = load_config(ROOT / "configs" / "demo.yaml")
    # the data stages are the demo's: after `make demo` they are all Cached
    for section in ("sources", "curation", "balance", "split"):
        assert getattr(cfg, section) == getattr(demo, section), section


def test_trial_parameters_land_in_fields_and_args() -> None:
    from pyroblur.config import TrainConfig
    from pyroblur.training.sweep import trial_train_config

    base = TrainConfig(model="yolo11n.yaml", args={"optimizer": "SGD", "plots": False})
    cfg = trial_train_config(base, {"epochs": 3, "imgsz": 96, "lr0": 0.02, "model": "yolo11s.yaml"})
    assert (cfg.epochs, cfg.imgsz, cfg.model) == (3, 96, "yolo11s.yaml")
    assert cfg.args == {"optimizer": "SGD", "plots": False, "lr0": 0.02}


# --------------------------------------------------------------------------- study: stop and restart


def _fake_objective(params: dict[str, Any]) -> float:
    """A deterministic stand-in for a training's objective (no model is trained here)."""
    return -abs(math.log10(params["lr0"]) + 2) + 0.1 * params["mosaic"]


def _run_study(root: Path, name: str, sweep: Any, stop_after: int | None = None) -> list[int]:
    """Drive study ``name`` as the flow's loop does, telling :func:`_fake_objective`; with
    ``stop_after``, ask one more trial after that many and leave it running (a stopped driver).
    Returns the numbers of the trials it asked."""
    from pyroblur.registry import sweeps

    study = sweeps.open_study(root, name, sweep.pruning)
    sweeps.recover(study, sweep.max_requeues)
    asked = []
    while sweeps.progress(study).done < sweep.planned_trials():
        trial = sweeps.ask(study, sweep)
        asked.append(trial.number)
        if stop_after is not None and len(asked) > stop_after:
            sweeps.mark_interrupted(study, [trial.number], "test: SIGTERM")
            return asked
        study.tell(trial.number, _fake_objective(trial.params))
    return asked


@pytest.mark.parametrize("strategy", ["tpe", "grid"])  # tpe starts with random trials
def test_a_restarted_study_asks_the_same_trials_and_finds_the_same_best(tmp_path: Path, strategy: str) -> None:
    from optuna.trial import TrialState

    from pyroblur.registry import sweeps

    space = {**SPACE, "lr0": {"choices": [0.001, 0.01, 0.05]}} if strategy == "grid" else SPACE
    cfg = _sweep_config(strategy=strategy, n_trials=5, seed=3, tpe_startup_trials=2, space=space)
    sweep = parse_config(cfg).sweep
    _run_study(tmp_path, "whole", sweep)
    first = _run_study(tmp_path, "stopped", sweep, stop_after=2)
    again = _run_study(tmp_path, "stopped", sweep)
    whole = sweeps.open_study(tmp_path, "whole")
    stopped = sweeps.open_study(tmp_path, "stopped")

    interrupted = [t for t in stopped.trials if t.state == TrialState.FAIL]
    assert [t.number for t in interrupted] == [first[-1]] and interrupted[0].system_attrs[sweeps.INTERRUPTED]
    # the interrupted trial's parameters ran again, first, as the next trial; the finished ones never
    assert again[0] == first[-1] + 1 and stopped.trials[again[0]].params == interrupted[0].params
    done_whole = sorted(str(t.params) for t in whole.trials if t.state == TrialState.COMPLETE)
    done_stopped = sorted(str(t.params) for t in stopped.trials if t.state == TrialState.COMPLETE)
    assert len(done_stopped) == 5 and done_stopped == done_whole
    assert stopped.best_trial.params == whole.best_trial.params and stopped.best_value == whole.best_value


def test_an_interrupted_trial_is_requeued_a_bounded_number_of_times(tmp_path: Path) -> None:
    from pyroblur.registry import sweeps

    sweep = parse_config(_sweep_config(n_trials=2, max_requeues=1)).sweep
    study = sweeps.open_study(tmp_path, "s", sweep.pruning)
    first = sweeps.ask(study, sweep)  # left RUNNING: its driver died
    assert sweeps.recover(sweeps.open_study(tmp_path, "s"), 1) == [(first.number, first.params)]
    again = sweeps.ask(study, sweep)
    assert again.params == first.params
    sweeps.mark_interrupted(study, [again.number], "stopped again")
    assert sweeps.recover(study, 1) == []  # tried once more already: counted as failed now
    assert sweeps.progress(study).done == 0 and sweeps.progress(study).waiting == 0


def test_the_study_lives_beside_mlflow_in_its_own_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pyroblur.registry import sweeps

    monkeypatch.delenv(sweeps.STORAGE_ENV, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    assert sweeps.storage_url(tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow' / 'optuna.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    with pytest.raises(sweeps.SweepStorageError, match="PYROBLUR_OPTUNA_STORAGE.*alembic_version"):
        sweeps.storage_url(tmp_path)
    monkeypatch.setenv(sweeps.STORAGE_ENV, "postgresql://u:secret@db:5432/optuna")
    assert sweeps.storage_url(tmp_path).endswith("/optuna") and "secret" not in sweeps._safe(
        sweeps.storage_url(tmp_path)
    )


# ----------------------------------------------------------------------------------- real sweeps

STUDY_DATASET = "pyroblur-test-sweep"


def _cli_config(path: Path, study: str, **changes: Any) -> Path:
    cfg = tiny_config(**{"curation.dataset_name": STUDY_DATASET, "train.args": {"plots": False, "optimizer": "SGD"},
                         **changes})  # fmt: skip
    cfg["sweep"] = {"space": SPACE, "strategy": "random", "seed": 7, "n_trials": 3, "study_name": study,
                    "pruning": {"enabled": False}}  # fmt: skip
    for key, value in list(changes.items()):
        if key.startswith("sweep."):
            cfg["sweep"][key.removeprefix("sweep.")] = value
            cfg.pop(key, None)
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def sweep_env(tmp_path_factory: pytest.TempPathFactory, prefect_server: str) -> dict[str, str]:
    """One data root (and result store) for this module's sweeps, against the session's server."""
    base = tmp_path_factory.mktemp("sweeps")
    return {
        **os.environ,
        "PYROBLUR_DATA_DIR": str(base / "data"),
        "PREFECT_LOCAL_STORAGE_PATH": str(base / "data" / "prefect-results"),
        "PREFECT_API_URL": prefect_server,
        "PYTHONPATH": str(ROOT),
    }


def _sweep(env: dict[str, str], config: Path, *extra: str) -> subprocess.Popen:
    log = config.with_suffix(".log").open("w")
    return subprocess.Popen(
        [str(PYROBLUR), "sweep", "-c", str(config), "--until", "sweep", *extra],
        env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def _finish(proc: subprocess.Popen, config: Path, timeout: float = 600) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"sweep did not end in {timeout} s\n{config.with_suffix('.log').read_text()[-4000:]}")


def _study(env: dict[str, str], name: str) -> Any:
    from pyroblur.registry import sweeps

    return sweeps.open_study(Path(env["PYROBLUR_DATA_DIR"]), name)


def _done_stamps(study: Any) -> dict[int, int]:
    """Trial number -> mtime (ns) of its run folder's done stamp (written once per training)."""
    from pyroblur.training.trainer import DONE

    return {t.number: (Path(t.user_attrs["run_dir"]) / DONE).stat().st_mtime_ns for t in study.trials
            if t.state.name == "COMPLETE"}  # fmt: skip


@pytest.mark.slow
@pytest.mark.integration
def test_sigterm_mid_sweep_then_restart_finishes_like_an_uninterrupted_sweep(sweep_env, tmp_path) -> None:
    """Acceptance 2: a sweep stopped by SIGTERM after two trials and started again does not run
    the finished trials again, tries the interrupted one again, and ends with the same best as an
    uninterrupted sweep with the same seed."""
    from optuna.trial import TrialState

    from pyroblur.registry import sweeps

    whole_cfg = _cli_config(tmp_path / "whole.yaml", "whole", **{"train.epochs": 1})
    proc = _sweep(sweep_env, whole_cfg)
    assert _finish(proc, whole_cfg) == 0, whole_cfg.with_suffix(".log").read_text()[-4000:]
    whole = _study(sweep_env, "whole")
    # each epoch reported once (step = epoch), ultralytics' final evaluation of best.pt not as an epoch
    assert [list(t.intermediate_values) for t in whole.trials] == [[1], [1], [1]]

    # The same sweep in its own study; verbose (set false by the trainer anyway) gives its trials run
    # folders of their own, so that they train rather than find the first sweep's finished folders.
    stop_cfg = _cli_config(tmp_path / "stopped.yaml", "stopped", **{"train.epochs": 1, "train.args": {
        "plots": False, "optimizer": "SGD", "verbose": False}})  # fmt: skip
    proc = _sweep(sweep_env, stop_cfg)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        db = Path(sweep_env["PYROBLUR_DATA_DIR"]) / "mlflow" / "optuna.db"
        if db.exists():
            states = [t.state for t in _study(sweep_env, "stopped").trials] if _has_study(sweep_env, "stopped") else []
            if states.count(TrialState.COMPLETE) == 2 and TrialState.RUNNING in states:
                break
        time.sleep(0.5)
    else:
        pytest.fail(f"no third trial running in time\n{stop_cfg.with_suffix('.log').read_text()[-4000:]}")
    proc.send_signal(signal.SIGTERM)
    assert _finish(proc, stop_cfg) == 143, stop_cfg.with_suffix(".log").read_text()[-4000:]
    before = _study(sweep_env, "stopped")
    (stopped,) = [t for t in before.trials if t.state == TrialState.FAIL]
    assert stopped.system_attrs.get(sweeps.INTERRUPTED), stopped.system_attrs
    finished = {t.number: t.datetime_complete for t in before.trials if t.state == TrialState.COMPLETE}
    stamps = _done_stamps(before)

    proc = _sweep(sweep_env, stop_cfg)
    assert _finish(proc, stop_cfg) == 0, stop_cfg.with_suffix(".log").read_text()[-4000:]
    after = _study(sweep_env, "stopped")
    complete = [t for t in after.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 3
    # finished trials were not run again: same completion times, their trainings' stamps untouched
    assert {t.number: t.datetime_complete for t in complete if t.number in finished} == finished
    assert {k: v for k, v in _done_stamps(after).items() if k in stamps} == stamps
    (requeued,) = [t for t in complete if t.number not in finished]
    assert requeued.params == stopped.params and requeued.system_attrs[sweeps.REQUEUE_OF] == stopped.number
    # the same trials as the uninterrupted sweep, so the same best
    assert sorted(str(t.params) for t in complete) == sorted(
        str(t.params) for t in whole.trials if t.state == TrialState.COMPLETE
    )
    assert after.best_trial.params == whole.best_trial.params
    assert after.best_value == pytest.approx(whole.best_value, abs=1e-6)
    # MLflow: one child run per trial under the sweep's run; the interrupted one KILLED
    runs = {int(r.data.tags[sweeps.TRIAL_TAG]): r for r in sweeps.trial_runs(Path(sweep_env["PYROBLUR_DATA_DIR"]),
                                                                               "stopped")}  # fmt: skip
    assert sorted(runs) == sorted(t.number for t in after.trials)
    assert len({r.data.tags["mlflow.parentRunId"] for r in runs.values()}) == 1
    assert runs[stopped.number].info.status == "KILLED"
    assert runs[stopped.number].data.tags[sweeps.STATE_TAG] == "INTERRUPTED"
    assert all(runs[t.number].info.status == "FINISHED" and "objective" in runs[t.number].data.metrics
               for t in complete)  # fmt: skip
    table = list(
        csv.DictReader((Path(sweep_env["PYROBLUR_DATA_DIR"]) / "sweeps" / "stopped" / "comparison.csv").open())
    )
    assert [r["state"] for r in table].count("COMPLETE") == 3 and table[-1]["state"] == "INTERRUPTED"


def _has_study(env: dict[str, str], name: str) -> bool:
    import optuna

    from pyroblur.registry import sweeps

    url = sweeps.storage_url(Path(env["PYROBLUR_DATA_DIR"]))
    try:
        return name in {s.study_name for s in optuna.get_all_study_summaries(url)}
    except Exception:  # noqa: BLE001 - the database is being created by the sweep
        return False


@pytest.mark.slow
@pytest.mark.integration
def test_a_trial_clearly_worse_at_an_epoch_is_pruned_and_marked(sweep_env, tmp_path) -> None:
    """Acceptance 3: with a finished trial whose figure at every epoch is out of reach (2.0; a
    real one is at most 1.001), the next trial is pruned after its first epoch of two: PRUNED in
    the study, KILLED with optuna.trial.state PRUNED in MLflow, the time saved recorded."""
    import optuna

    from pyroblur.registry import sweeps
    from pyroblur.training.sweep import distributions

    cfg = _cli_config(tmp_path / "pruned.yaml", "pruned", **{"train.epochs": 2, "sweep.n_trials": 2,
                      "sweep.pruning": {"enabled": True, "startup_trials": 1, "warmup_epochs": 0}})  # fmt: skip
    sweep = parse_config(yaml.safe_load(cfg.read_text())).sweep
    study = sweeps.open_study(Path(sweep_env["PYROBLUR_DATA_DIR"]), "pruned", sweep.pruning)
    study.add_trial(optuna.trial.create_trial(
        params={"lr0": 0.01, "mosaic": 1.0}, distributions=distributions(sweep), value=2.0,
        intermediate_values={1: 2.0, 2: 2.0},
    ))  # fmt: skip
    proc = _sweep(sweep_env, cfg)
    assert _finish(proc, cfg) == 0, cfg.with_suffix(".log").read_text()[-4000:]
    trial = _study(sweep_env, "pruned").trials[1]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert list(trial.intermediate_values) == [1]  # stopped after epoch 1 of 2
    assert trial.user_attrs["pruned_at"] == 1 and trial.user_attrs["planned_epochs"] == 2
    assert trial.user_attrs["seconds_saved"] > 0
    (run,) = [r for r in sweeps.trial_runs(Path(sweep_env["PYROBLUR_DATA_DIR"]), "pruned")]
    assert run.info.status == "KILLED" and run.data.tags[sweeps.STATE_TAG] == "PRUNED"
    assert run.data.metrics["trial/epochs"] == 1 and run.data.metrics["trial/seconds_saved"] > 0
    assert "objective" not in run.data.metrics
    log = cfg.with_suffix(".log").read_text()
    assert "pruned after epoch 1 of 2" in log and "seconds_saved_by_pruning" in log
