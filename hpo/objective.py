"""The objective: the one place that maps a trial to a config, reports to Optuna and prunes.

A worker asks the study for a trial, then:
    plan = prepare(trial, ...)           # sample a config; enforce the budget before any step
    hooks = TrialHooks(trial, ...)       # what the trainer calls each step and epoch
    outcome = backend.run([...])         # train (hpo.backend)
    finish(study, trial, outcome, ...)   # tell Optuna how it ended: COMPLETE (its value or values), PRUNED or FAIL
"""

from __future__ import annotations

import os
import platform
import socket
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

import optuna
import torch
from optuna.trial import TrialState

import hpo
from hpo import records
from hpo.checkpoints import checkpoint_path
from hpo.backend import Outcome
from hpo.config import TrainConfig, parse_config
from hpo.errors import ConfigError
from hpo.retry import is_outage
from hpo.space import model_size
from hpo.study import StudySpec
from hpo.trainer import Diverged, EpochResult, evaluate, out_of_memory


class TrialTimeLimit(Exception):
    """The trial ran past the study's budget.trial_seconds."""


def versions() -> dict:
    return {"hpo": hpo.__version__, "torch": torch.__version__, "optuna": optuna.__version__,
            "python": platform.python_version()}


def device_name(device: torch.device) -> str:
    return str(device) if device.type != "cuda" else torch.cuda.get_device_name(device)


def fail_reason(error: BaseException) -> str:
    """A short, stable reason for a FAIL trial: `diverged`, `time_limit`, `out_of_memory`, or the error."""
    if isinstance(error, Diverged):
        return f"{records.DIVERGED}{error}"
    if isinstance(error, TrialTimeLimit):
        return f"time_limit: {error}"
    if out_of_memory(error):
        return f"out_of_memory: {str(error).splitlines()[0] if str(error) else 'CUDA out of memory'}"
    return f"{type(error).__name__}: {error}"


# ----------------------------------------------------------------- before training


@dataclass(frozen=True)
class Plan:
    """A trial ready to train: its config within budget, and where its checkpoint lives."""

    config: TrainConfig
    n_params: int
    checkpoint: Optional[Path]


def prepare(trial: optuna.Trial, spec: StudySpec, *, frozen: optuna.trial.FrozenTrial, device: torch.device,
            checkpoint_dir: Optional[Path], checkpoint_key: str = "") -> Optional[Plan]:
    """Sample the trial's config and record it; None when its model is over the budget (the
    trial is then to be told PRUNED, with `rejected: over_budget`, before any training step).
    `frozen` is the trial as stored: a retry of a dead worker's trial keeps the first attempt's
    checkpoint and constraint. Its checkpoint is checkpoint_path(...)."""
    try:
        cfg = parse_config(spec.space.sample(trial))
    except ConfigError as error:
        trial.set_user_attr(records.FAIL_REASON, f"invalid config: {error}")
        raise
    cfg = replace(cfg, epochs=min(cfg.epochs, spec.budget.epochs))
    n_params = model_size(cfg)
    trial.set_user_attr(records.N_PARAMS, n_params)
    trial.set_user_attr(records.CONFIG, cfg.to_dict())
    limit = spec.budget.max_params
    if limit and not frozen.constraints:
        # > 0 makes the trial infeasible: TPE learns where the budget ends
        trial.set_constraint("params_over_budget", n_params - limit)
    if limit and n_params > limit:
        trial.set_user_attr(records.REJECTED, "over_budget")
        return None
    trial.set_user_attr(records.DEVICE, device_name(device))
    if device.type == "cpu":
        trial.set_user_attr(records.THREADS, torch.get_num_threads())
    trial.set_user_attr(records.VERSIONS, versions())
    trial.set_user_attr(records.WORKER, f"{socket.gethostname()}:{os.getpid()}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        first = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
    checkpoint = checkpoint_path(checkpoint_dir, spec.name, frozen.number if first is None else first,
                                 checkpoint_key) if checkpoint_dir else None
    return Plan(cfg, n_params, checkpoint)


# ----------------------------------------------------------------- during training


class TrialHooks:
    """What the trainer calls for one trial: each epoch is reported to Optuna, which may prune;
    each step checks the trial's time limit. `retry(fn)` runs each report, so training waits
    out a database blip (retry.Backoff). In a multi-objective study Optuna takes no reports and
    prunes nothing: each epoch's accuracy is recorded as a user attribute instead."""

    def __init__(self, trial: optuna.Trial, spec: StudySpec, *, epochs: int,
                 retry: Callable[[Callable[[], Any]], Any] = lambda fn: fn(), clock=time.monotonic):
        """`epochs`: the trial's; its last epoch is reported but never pruned (the trial has
        trained in full by then, so it is complete, with its value)."""
        self.trial, self.retry, self.clock, self.epochs = trial, retry, clock, epochs
        self.limit = spec.budget.trial_seconds
        self.prunes = not spec.multi_objective
        self.started = clock()
        self.seconds: list[float] = []
        self.losses: list[float] = []
        self.accuracies: list[float] = []  # multi-objective: what trial.report would have stored
        self.restored: list[int] = []  # epochs replayed from a checkpoint
        self.packed: list[int] = []  # how many trials trained at once in each epoch (hpo.packed)

    def on_epoch(self, result: EpochResult) -> None:
        self.seconds.append(round(result.seconds, 3))
        self.losses.append(result.train_loss)
        self.packed.append(result.packed)
        if result.restored:
            self.restored.append(result.epoch)
        elif self.restored and result.epoch == max(self.restored) + 1:
            self.trial.set_user_attr(records.RESUMED_AT_EPOCH, result.epoch)

    def report(self, epoch: int, accuracy: float) -> None:
        if self.retry(lambda: self._publish(epoch, accuracy)):
            raise optuna.TrialPruned(f"pruned after epoch {epoch} at {accuracy:.4f}")

    def test_once(self, x, y) -> Callable:
        """`on_done` for a study that reports on held-out training images (`eval: val`): the test
        set is touched once, by the final model, and recorded beside the value."""
        def on_done(model) -> None:
            self.retry(lambda: self.trial.set_user_attr(records.TEST_ACCURACY, evaluate(model, x, y)))
        return on_done

    def on_step(self, step: int, steps: int) -> None:
        if self.limit and self.clock() - self.started > self.limit:
            raise TrialTimeLimit(f"ran past budget.trial_seconds={self.limit:g}")

    def _publish(self, epoch: int, accuracy: float) -> bool:
        if not self.prunes:
            del self.accuracies[epoch - 1:]  # a replayed epoch (a resumed trial) replaces its first record
            self.accuracies.append(accuracy)
            self.trial.set_user_attr(records.EPOCH_ACCURACY, self.accuracies)
        else:
            with warnings.catch_warnings():
                if epoch in self.restored:  # the first attempt may have reported it already
                    warnings.simplefilter("ignore")
                self.trial.report(accuracy, epoch)
        # a trial that trained every epoch is complete: stopping it saves nothing, and a pruned
        # last epoch took a finished net out of the top-K lists and the counts of what pruning saved
        return self.prunes and epoch < self.epochs and self.trial.should_prune()

    def publish_history(self) -> None:
        """Each epoch's seconds and training loss (and how many trials trained at once), written
        once as the trial ends rather than after every epoch: two database round trips fewer an
        epoch (P5). A dead worker's trial loses them with it; its retry reads the epochs it
        resumes from back from the checkpoint (`restored`) and writes them all."""
        if not self.seconds:
            return
        self.retry(lambda: self.trial.set_user_attr(records.EPOCH_SECONDS, self.seconds))
        self.retry(lambda: self.trial.set_user_attr(records.TRAIN_LOSS, self.losses))
        if max(self.packed, default=1) > 1:
            self.retry(lambda: self.trial.set_user_attr(records.PACKED, self.packed))


# ----------------------------------------------------------------- after training


def ended_here(outcome: Outcome) -> bool:
    """Whether this worker is the one to tell how the trial ended. Not when the database failed
    (the trial stays RUNNING, goes stale and is retried from its checkpoint), nor when another
    worker already failed it for being silent past the grace period (a paused process)."""
    return not (is_outage(outcome.error) or isinstance(outcome.error, optuna.exceptions.UpdateFinishedTrialError))


def finish(study: optuna.Study, trial: optuna.Trial, outcome: Outcome, *,
           objectives: tuple[str, ...] = (records.ACCURACY,), n_params: Optional[int] = None) -> TrialState:
    """Tell Optuna how the trial ended: its values (the final epoch's accuracy, and with
    `objectives` (accuracy, params) its `n_params` too), PRUNED, or FAIL with a reason."""
    error = outcome.error
    if isinstance(error, optuna.TrialPruned):
        study.tell(trial, state=TrialState.PRUNED)
        return TrialState.PRUNED
    if error is not None:
        trial.set_user_attr(records.FAIL_REASON, fail_reason(error))
        study.tell(trial, state=TrialState.FAIL)
        return TrialState.FAIL
    history = outcome.history
    best = max(history, key=lambda r: r.test_accuracy)
    trial.set_user_attr(records.BEST_EPOCH, best.epoch)
    trial.set_user_attr(records.BEST_ACCURACY, best.test_accuracy)
    values = {records.ACCURACY: history[-1].test_accuracy, records.PARAMS: n_params}
    study.tell(trial, [values[name] for name in objectives])
    return TrialState.COMPLETE
