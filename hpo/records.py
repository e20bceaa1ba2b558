"""What a trial records in the study database, and how trials are counted: the shared vocabulary.

A leaf module (it imports only Optuna's trial states): the objective writes these attributes,
and the runner, the display, `hpo studies`, export and the report read them by these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

from optuna.trial import FrozenTrial, TrialState

# ----------------------------------------------------------------- a trial's user attributes

N_PARAMS = "n_params"              # the model's trainable parameters, counted before any step
CONFIG = "config"                  # the full training config, as `hpo train --config` reads it
REJECTED = "rejected"              # "over_budget": PRUNED before any step; not counted toward --trials
FAIL_REASON = "fail_reason"        # "diverged: ...", "time_limit: ...", "out_of_memory: ...", or the error
EPOCH_SECONDS = "epoch_seconds"    # wall seconds of each epoch, as the trainer measured them
TRAIN_LOSS = "train_loss"          # mean training loss of each epoch
BEST_EPOCH = "best_epoch"          # the epoch with the highest reported accuracy...
BEST_ACCURACY = "best_accuracy"    # ...and that accuracy (the trial's value is the final epoch's)
TEST_ACCURACY = "test_accuracy"    # with `eval: val`: the test set's accuracy, measured once, at the end
DEVICE = "device"                  # "cpu" or the GPU's name
VERSIONS = "versions"              # hpo, torch, optuna, python
WORKER = "worker"                  # host:pid of the process that ran it (which one to look at, or kill)
BASE = "base"                      # True on trial 0: the study file's base recipe, enqueued
RESUMED_AT_EPOCH = "resumed_at_epoch"  # a retry that continued from its checkpoint: its first trained epoch

# ----------------------------------------------------------------- a study's user attributes

FINGERPRINT = "hpo_fingerprint"    # what the study searches: a different file under the same name differs
SOURCE = "hpo_study_file"          # the study file it was created from
SPEC = "hpo_spec"                  # the study file's content, as parsed YAML

# ----------------------------------------------------------------- kinds and counts

KINDS = ("complete", "pruned", "rejected", "failed", "running", "waiting")


def kind(t: FrozenTrial) -> str:
    """What a person calls the trial's state: an over-budget rejection is not a pruned trial."""
    if t.state == TrialState.PRUNED:
        return "rejected" if t.user_attrs.get(REJECTED) else "pruned"
    return {TrialState.COMPLETE: "complete", TrialState.FAIL: "failed",
            TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}[t.state]


@dataclass(frozen=True)
class Counts:
    complete: int = 0
    pruned: int = 0
    rejected: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0

    @property
    def finished(self) -> int:
        """What `--trials N` counts: complete and pruned trials. Rejections trained nothing and
        failures are re-run, so neither brings the study closer to N."""
        return self.complete + self.pruned


def count(trials: Iterable[FrozenTrial]) -> Counts:
    tally = dict.fromkeys(KINDS, 0)
    for t in trials:
        tally[kind(t)] += 1
    return Counts(**tally)


def best_trial(trials: Iterable[FrozenTrial]) -> Optional[FrozenTrial]:
    """The complete trial with the highest value; the earlier one on a tie."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    return max(complete, key=lambda t: (t.value, -t.number)) if complete else None


def ranked(trials: Iterable[FrozenTrial], top: int) -> list[FrozenTrial]:
    """The `top` complete trials, best first (ties: the earlier trial first)."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    return sorted(complete, key=lambda t: (-t.value, t.number))[:top]


class NewlyEnded:
    """The trials that ended since the last look, each once: what a view of a running study
    prints (trials that had ended before it started, `already`, are not new)."""

    def __init__(self, already: Iterable[FrozenTrial] = ()):
        self.seen = {t.number for t in already if t.state.is_finished()}

    def __call__(self, trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
        new = [t for t in trials if t.state.is_finished() and t.number not in self.seen]
        self.seen.update(t.number for t in new)
        return new


def epoch_seconds(t: FrozenTrial) -> list[float]:
    return list(t.user_attrs.get(EPOCH_SECONDS) or [])


def curve(t: FrozenTrial) -> list[float]:
    """The reported accuracy of every epoch, in order."""
    return [t.intermediate_values[step] for step in sorted(t.intermediate_values)]
