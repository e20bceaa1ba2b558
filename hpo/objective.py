"""The objective: the one place that maps a trial to a config, reports to Optuna and prunes."""

from __future__ import annotations

import os
import platform
import socket
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional

import optuna
import torch

import hpo
from hpo import models
from hpo.config import parse_config
from hpo.data import MNIST
from hpo.errors import ConfigError
from hpo.retry import is_outage
from hpo.space import sample
from hpo.study import StudySpec
from hpo.train import Diverged, train

# user attribute names, read by the display, `hpo studies`, export and the report
REJECTED, FAIL_REASON = "rejected", "fail_reason"


class TrialTimeLimit(Exception):
    """The trial ran past the study's budget.trial_seconds."""


def versions() -> dict:
    return {"hpo": hpo.__version__, "torch": torch.__version__, "optuna": optuna.__version__,
            "python": platform.python_version()}


def fail_reason(error: Exception) -> str:
    """A short, stable reason for a FAIL trial: `diverged`, `time_limit`, `out_of_memory`, or the error."""
    if isinstance(error, Diverged):
        return f"diverged: {error}"
    if isinstance(error, TrialTimeLimit):
        return f"time_limit: {error}"
    if isinstance(error, torch.OutOfMemoryError):
        return f"out_of_memory: {str(error).splitlines()[0] if str(error) else 'CUDA out of memory'}"
    return f"{type(error).__name__}: {error}"


def checkpoint_path(folder: Path, study: str, trial: optuna.Trial) -> Path:
    """One file per trial, shared by its retries (they carry the first attempt's number)."""
    # Optuna 5's Trial has no system_attrs; the storage holds what the retry callback wrote
    first = trial.storage.get_trial_system_attrs(trial._trial_id).get("failed_trial", trial.number)
    return folder / study / f"trial-{first}.pt"


def make_objective(spec: StudySpec, data: MNIST, *, on_start: Callable[[optuna.Trial], None] = lambda t: None,
                   checkpoint_dir: Optional[Path] = None,
                   retry: Callable[[Callable[[], Any]], Any] = lambda fn: fn()):
    """An Optuna objective training on `data`; `on_start(trial)` runs first (the runner's claim).

    With `checkpoint_dir`, each epoch is checkpointed, and a trial retried after its worker
    died resumes from its last finished epoch. The file goes when the trial ends here.
    `retry(fn)` runs each epoch's report, so training waits out a database blip (retry.Backoff).
    """

    def objective(trial: optuna.Trial) -> float:
        on_start(trial)
        # --- sample, validate, and enforce the parameter budget before any training step
        raw = sample(trial, spec)
        try:
            cfg = parse_config(raw)
        except ConfigError as error:
            trial.set_user_attr(FAIL_REASON, f"invalid config: {error}")
            raise
        cfg = replace(cfg, epochs=min(cfg.epochs, spec.budget.epochs))
        n_params = models.spec_params(cfg.model)
        trial.set_user_attr("n_params", n_params)
        trial.set_user_attr("config", cfg.to_dict())
        if spec.budget.max_params and not trial.constraints:
            # > 0 makes the trial infeasible: TPE learns where the budget ends (a retry inherits it)
            trial.set_constraint("params_over_budget", n_params - spec.budget.max_params)
        if spec.budget.max_params and n_params > spec.budget.max_params:
            trial.set_user_attr(REJECTED, "over_budget")
            raise optuna.TrialPruned(f"{n_params:,} parameters, over the budget of {spec.budget.max_params:,}")
        trial.set_user_attr("device", str(data.device) if data.device.type == "cpu"
                            else torch.cuda.get_device_name(data.device))
        trial.set_user_attr("versions", versions())
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")  # which process to look at (or kill)

        # --- train, reporting every epoch so the pruner can stop a poor trial early
        started = time.monotonic()
        seconds, losses, restored = [], [], []

        def publish(epoch: int, accuracy: float) -> bool:
            if epoch in restored:  # replayed from a checkpoint; the first attempt may have reported it
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    trial.report(accuracy, epoch)
            else:
                trial.report(accuracy, epoch)
            trial.set_user_attr("epoch_seconds", seconds)
            trial.set_user_attr("train_loss", losses)
            return trial.should_prune()

        def report(epoch: int, accuracy: float) -> None:
            if retry(lambda: publish(epoch, accuracy)):
                raise optuna.TrialPruned(f"pruned after epoch {epoch} at {accuracy:.4f}")

        def on_epoch(result) -> None:
            seconds.append(round(result.seconds, 3))
            losses.append(result.train_loss)
            if result.restored:
                restored.append(result.epoch)
            elif restored and result.epoch == max(restored) + 1:
                trial.set_user_attr("resumed_at_epoch", result.epoch)

        def on_step(step: int, steps: int) -> None:
            if spec.budget.trial_seconds and time.monotonic() - started > spec.budget.trial_seconds:
                raise TrialTimeLimit(f"ran past budget.trial_seconds={spec.budget.trial_seconds:g}")

        checkpoint = checkpoint_path(checkpoint_dir, spec.name, trial) if checkpoint_dir else None
        ended = True
        try:
            history = train(cfg, data, report=report, on_epoch=on_epoch, checkpoint=checkpoint,
                            on_step=on_step if spec.budget.trial_seconds else None)
        except optuna.TrialPruned:
            raise
        except Exception as error:
            if is_outage(error) or isinstance(error, optuna.exceptions.UpdateFinishedTrialError):
                # the trial did not end here (the database failed, or another worker failed the trial
                # while this one was silent past the grace period): keep the checkpoint for its retry
                ended = False
                raise
            trial.set_user_attr(FAIL_REASON, fail_reason(error))
            raise
        finally:
            if checkpoint and ended:
                checkpoint.unlink(missing_ok=True)
        best = max(history, key=lambda r: r.test_accuracy)
        trial.set_user_attr("best_epoch", best.epoch)
        trial.set_user_attr("best_accuracy", best.test_accuracy)
        return history[-1].test_accuracy

    return objective
