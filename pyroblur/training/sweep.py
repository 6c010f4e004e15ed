"""Hyperparameter sweeps, the training side: the search space as Optuna distributions, the
sampler and the pruner a sweep's config asks for, a trial's train section, and the ultralytics
callback that reports each epoch's validation figure to the trial and stops a pruned one.

Why Optuna rather than ultralytics' own tuner (``model.tune``): the tuner is a mutation loop
that runs its trials one after another in one process, keeps its state in a CSV file in the run
folder, scores trials on ultralytics' fitness (a mAP blend, not our coverage) and cannot stop a
bad trial early. Optuna gives grid, random and model-based (TPE) samplers, pruners fed with
per-epoch figures, an ask/tell interface that lets trials run anywhere (here: as flow runs on the
gpu pool) and a study stored in a real database that several processes share and a restarted
sweep continues (docs/sweep.md).

The objective is recall first (:func:`objective_value`): the worst class's coverage at
anonymization's operating point, with mAP50-95 as a tie-breaker weighted
:data:`TIE_BREAK_WEIGHT`. The per-epoch figure used for pruning has the same shape, on what
ultralytics' validator reports after every epoch (mean recall and mAP50-95 on the val split):
coverage needs the anonymizer's detector, too costly to run every epoch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from pyroblur.config import PruningConfig, SweepConfig, TrainConfig, is_int_dimension, ultralytics_defaults
from pyroblur.core.hashing import digest_of

log = logging.getLogger(__name__)

#: Weight of mAP50-95 in the objective: below the resolution of coverage that matters (0.001),
#: so mAP only orders trials whose coverages (nearly) tie.
TIE_BREAK_WEIGHT = 1e-3

#: Ultralytics' per-epoch validation figures the pruning figure is made of (``trainer.metrics``).
EPOCH_RECALL, EPOCH_MAP = "metrics/recall(B)", "metrics/mAP50-95(B)"


def objective_value(coverage: float, map50_95: float) -> float:
    """The sweep's objective (higher is better): ``coverage`` plus ``map50_95`` as a tie-breaker."""
    return float(coverage) + TIE_BREAK_WEIGHT * float(map50_95)


def epoch_figure(metrics: Mapping[str, Any]) -> float | None:
    """The figure reported for pruning after an epoch, from ultralytics' validation metrics:
    :func:`objective_value` of the mean recall and mAP50-95 on the val split; ``None`` when the
    epoch was not validated."""
    recall, map50_95 = metrics.get(EPOCH_RECALL), metrics.get(EPOCH_MAP)
    if recall is None or map50_95 is None:
        return None
    return objective_value(float(recall), float(map50_95))


def distributions(sweep: SweepConfig) -> dict[str, Any]:
    """The search space as Optuna distributions, one per dimension (integers where the train
    field or ultralytics' default is an integer)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    defaults = ultralytics_defaults()
    out: dict[str, Any] = {}
    for name, dim in sweep.space.items():
        if dim.choices is not None:
            out[name] = CategoricalDistribution(list(dim.choices))
        elif is_int_dimension(name, defaults):
            out[name] = IntDistribution(int(dim.low), int(dim.high), step=int(dim.step or 1), log=dim.log)
        else:
            out[name] = FloatDistribution(float(dim.low), float(dim.high), step=dim.step, log=dim.log)
    return out


def sampler_seed(seed: int, index: int) -> int:
    """The sampler's seed for the ``index``-th trial of a sweep (a 32-bit number)."""
    return int(digest_of("sweep-sampler", seed, index)[:8], 16)


def make_sampler(sweep: SweepConfig, index: int) -> Any:
    """The sampler for the ``index``-th trial (counting every trial but the interrupted ones;
    the grid's points are queued by :func:`grid_point`, the sampler only fills none).

    A new sampler per trial, seeded from ``(sweep.seed, index)``: samplers keep their random
    state in memory, so one seeded once would start its sequence again after a restart and
    repeat the first trials; this way trial ``index`` draws the same numbers whether or not the
    sweep was stopped before it (TPE reads the finished trials from the study each time).
    """
    import optuna

    seed = sampler_seed(sweep.seed, index)
    if sweep.strategy in ("random", "grid"):  # grid: every parameter comes from grid_point()
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=sweep.tpe_startup_trials, constant_liar=True)


def grid_point(sweep: SweepConfig, index: int) -> dict[str, Any]:
    """The grid strategy's ``index``-th point: every combination of the dimensions' values in an
    order shuffled with ``sweep.seed``, cycling when more trials than points are asked.

    By the sweep's own trial index rather than Optuna's ``GridSampler``, which numbers its points
    by trial number: after an interrupted trial was tried again the numbers shift by one and a
    restarted grid would skip a point and repeat another.
    """
    import itertools
    import random

    grid = sweep.grid()
    names = sorted(grid)
    points = list(itertools.product(*(grid[n] for n in names)))
    random.Random(sweep.seed).shuffle(points)
    return dict(zip(names, points[index % len(points)], strict=True))


def make_pruner(p: PruningConfig) -> Any:
    """Optuna's median pruner with the config's start-up and warm-up, or none."""
    import optuna

    if not p.enabled:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup_epochs, interval_steps=p.interval_epochs
    )


def trial_train_config(base: TrainConfig, params: Mapping[str, Any]) -> TrainConfig:
    """``base`` with a trial's parameters: train fields set as fields, the rest in ``args``
    (validated like a config file's train section)."""
    fields = {k: v for k, v in params.items() if k in TrainConfig.model_fields}
    args = {**base.args, **{k: v for k, v in params.items() if k not in TrainConfig.model_fields}}
    data = {**base.model_dump(), **fields, "args": args}
    return TrainConfig.model_validate(data)


class Pruned(Exception):  # noqa: N818 - a decision, not an error
    """Raised from the epoch callback to stop a trial the pruner rejected."""

    def __init__(self, epoch: int, figure: float) -> None:
        super().__init__(f"pruned after epoch {epoch} (figure {figure:.4f})")
        self.epoch = epoch
        self.figure = figure


class PruningCallback:
    """Ultralytics callbacks that report each validated epoch's :func:`epoch_figure` to an Optuna
    trial (step = the epoch, 1-based) and raise :class:`Pruned` when the pruner says so.

    ``on_train_epoch_end`` marks the epoch; ``on_fit_epoch_end`` (after validation and
    ``last.pt``) reports it. Ultralytics calls ``on_fit_epoch_end`` once more after training for
    its final evaluation of ``best.pt``; without a marked epoch that call is ignored. On a
    resumed training the epochs already trained are not reported again.

    Attributes:
        epochs: epochs reported; ``epoch_seconds`` their wall times; ``planned``: the epochs the
            training was to run.
    """

    def __init__(self, trial: Any) -> None:
        self.trial = trial
        self.epochs: list[int] = []
        self.epoch_seconds: list[float] = []
        self.planned = 0
        self._marked: int | None = None
        self._started = time.perf_counter()

    def on_train_epoch_start(self, trainer: Any) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: Any) -> None:
        self._marked = int(trainer.epoch)

    def on_fit_epoch_end(self, trainer: Any) -> None:
        if self._marked is None or self._marked != int(trainer.epoch):
            return  # ultralytics' final evaluation of best.pt, not an epoch
        self._marked = None
        self.planned = int(trainer.epochs)
        epoch = int(trainer.epoch) + 1
        self.epoch_seconds.append(time.perf_counter() - self._started)
        self.epochs.append(epoch)
        figure = epoch_figure(getattr(trainer, "metrics", None) or {})
        if figure is None:
            return
        self.trial.report(figure, step=epoch)
        if epoch < self.planned and self.trial.should_prune():
            log.info(
                "trial %s pruned after epoch %d of %d (figure %.4f)", self.trial.number, epoch, self.planned, figure
            )
            for loader in (getattr(trainer, "train_loader", None), getattr(trainer, "test_loader", None)):
                if hasattr(loader, "close"):
                    loader.close()  # no dataloader worker outlives the stopped training
            raise Pruned(epoch, figure)

    def callbacks(self) -> dict[str, Any]:
        """Event name -> function, for :func:`pyroblur.training.trainer.train`."""
        return {
            "on_train_epoch_start": self.on_train_epoch_start,
            "on_train_epoch_end": self.on_train_epoch_end,
            "on_fit_epoch_end": self.on_fit_epoch_end,
        }

    def seconds_saved(self) -> float:
        """Estimated training time a pruning saved: the epochs not trained times the mean epoch."""
        if not self.epoch_seconds or not self.epochs:
            return 0.0
        left = max(0, self.planned - self.epochs[-1])
        return left * sum(self.epoch_seconds) / len(self.epoch_seconds)
