"""What a trial records in the study database, and how trials are counted: the shared vocabulary.

A leaf module (it imports only Optuna's trial states): the objective writes these attributes,
and the runner, the display, `hpo studies`, export and the report read them by these names, and
pick the best trial (or a multi-objective study's Pareto front) by the functions below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

from optuna.trial import FrozenTrial, TrialState

# ----------------------------------------------------------------- a trial's user attributes

N_PARAMS = "n_params"              # the model's parameters (frozen ones too), counted before any step
CONFIG = "config"                  # the full training config, as `hpo train --config` reads it
REJECTED = "rejected"              # "over_budget": PRUNED before any step; not counted toward --trials
FAIL_REASON = "fail_reason"        # "diverged: ...", "time_limit: ...", "out_of_memory: ...", or the error
DIVERGED = "diverged: "            # how a diverged trial's fail_reason starts (the loss went nan or inf)
EPOCH_SECONDS = "epoch_seconds"    # wall seconds of each epoch, as the trainer measured them
PACKED = "packed"                  # trials trained at once in each epoch (hpo run --pack); epoch_seconds are shares
TRAIN_LOSS = "train_loss"          # mean training loss of each epoch
BEST_EPOCH = "best_epoch"          # the epoch with the highest reported accuracy...
BEST_ACCURACY = "best_accuracy"    # ...and that accuracy (the trial's value is the final epoch's)
TEST_ACCURACY = "test_accuracy"    # with `eval: val`: the test set's accuracy, measured once, at the end
DEVICE = "device"                  # "cpu" or the GPU's name
THREADS = "torch_threads"          # on a CPU: the torch threads it trained with (its epoch seconds depend on them)
VERSIONS = "versions"              # hpo, torch, optuna, python
WORKER = "worker"                  # host:pid of the process that ran it (which one to look at, or kill)
BASE = "base"                      # True on trial 0: the study file's base recipe, enqueued
RESUMED_AT_EPOCH = "resumed_at_epoch"  # a retry that continued from its checkpoint: its first trained epoch
EPOCH_ACCURACY = "epoch_accuracy"  # multi-objective studies only: each epoch's accuracy (Optuna takes no reports)

# ----------------------------------------------------------------- a trial's values

# what a study may optimize, in the order a study file lists them, and which way; accuracy comes
# first, so a trial's values[0] is always its final-epoch accuracy
ACCURACY = "accuracy"              # the final epoch's accuracy, maximized (the value of every study)
PARAMS = "params"                  # the model's parameters, minimized
OBJECTIVES = {ACCURACY: "maximize", PARAMS: "minimize"}

# ----------------------------------------------------------------- a study's user attributes

FINGERPRINT = "hpo_fingerprint"    # what the study searches: a different file under the same name differs
SOURCE = "hpo_study_file"          # the study file it was created from
SPEC = "hpo_spec"                  # the study file's content, as parsed YAML
UID = "hpo_uid"                    # a random id, made with the study: its checkpoints' key, with the database's
DATA = "hpo_data"                  # own data: its digest (hpo.owndata.digest); the same data run after run
MODEL_CODE = "hpo_model_code"      # your own model: {factory: {file, digest}} (hpo.usermodel.code_digest)

# ----------------------------------------------------------------- kinds and counts

KINDS = ("complete", "pruned", "rejected", "failed", "running", "waiting")


def made_by_hpo(study_user_attrs: dict) -> bool:
    """A study `hpo run` made, and made whole (its fingerprint is set last), not Optuna's own: one
    whose values are accuracies and whose trials carry their configs."""
    return FINGERPRINT in study_user_attrs


def held_out(study_user_attrs: dict) -> bool:
    """Whether a study scores its epochs on held-out training images (`eval: val`), its trials'
    test accuracy measured once, at the end (TEST_ACCURACY), as its study file said."""
    spec = study_user_attrs.get(SPEC)
    return isinstance(spec, dict) and spec.get("eval") == "val"


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

    def in_words(self) -> str:
        """'4 complete, 2 pruned, 1 queued': the states these trials are in, those with any."""
        return ", ".join(f"{n:,} {'queued' if state == 'waiting' else state}"
                         for state, n in ((k, getattr(self, k)) for k in KINDS) if n)

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


def no_complete_trial(study_name: str, trials: Iterable[FrozenTrial], doing: str, source: Optional[str] = None,
                      storage_option: str = "", note: str = "") -> str:
    """Why `doing` (export, report) has nothing to work on: no trial yet, or how its trials ended.
    `source`: the study file it was made from, which `hpo run --study` takes (its name may differ);
    `storage_option`: ' --storage URL' where the command was given one, so the hints open it too,
    and `note` what follows them (hpo.errors.password_note)."""
    import shlex  # noqa: PLC0415

    ended = count(trials).in_words()
    run = f"hpo run --study {shlex.quote(source or study_name)} --trials N{storage_option}"
    if not ended:
        return f"study {study_name!r} has no complete trial to {doing} yet; run it first: {run}{note}"
    return (f"study {study_name!r} has no complete trial to {doing}: {ended} (hpo studies {shlex.quote(study_name)}"
            f"{storage_option} says why); run more: {run}{note}")


def accuracy(t: FrozenTrial) -> Optional[float]:
    """A complete trial's final-epoch accuracy (its value, or its first of several); None otherwise."""
    return t.values[0] if t.state == TrialState.COMPLETE and t.values else None


def multi_objective(trials: Iterable[FrozenTrial]) -> bool:
    """Whether these trials' study weighs accuracy against size (its complete trials have two values)."""
    return any(t.state == TrialState.COMPLETE and len(t.values or ()) > 1 for t in trials)


def _complete(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if accuracy(t) is not None]


def _params(t: FrozenTrial) -> float:
    """The parameter count: the second value of a multi-objective trial, else what it recorded."""
    return t.values[1] if len(t.values) > 1 else t.user_attrs.get(N_PARAMS) or 0


def best_trial(trials: Iterable[FrozenTrial]) -> Optional[FrozenTrial]:
    """The complete trial with the highest accuracy (the earlier one on a tie). In a
    multi-objective study, the front's most accurate member (on a tie, the smaller model)."""
    ranking = ranked(trials, 1)
    return ranking[0] if ranking else None


def ranked(trials: Iterable[FrozenTrial], top: int) -> list[FrozenTrial]:
    """The `top` complete trials, most accurate first. In a multi-objective study, the Pareto
    front's trials only: a trial that a smaller, at least as accurate model beats is no leader."""
    trials = list(trials)
    if multi_objective(trials):
        return pareto_front(trials)[:top]
    return sorted(_complete(trials), key=lambda t: (-t.values[0], t.number))[:top]


def pareto_front(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """The complete trials no other beats on both accuracy (up) and parameters (down), most
    accurate first: each is the most accurate model of its size or smaller. Trials with the same
    values are all kept, as Optuna's `study.best_trials` keeps them."""
    front, best = [], float("-inf")
    by_size: dict[float, list[FrozenTrial]] = {}
    for t in _complete(trials):
        by_size.setdefault(_params(t), []).append(t)
    for n in sorted(by_size):
        top = max(t.values[0] for t in by_size[n])
        if top > best:  # more accurate than every smaller model: on the front
            front += [t for t in by_size[n] if t.values[0] == top]
            best = top
    return sorted(front, key=lambda t: (-t.values[0], _params(t), t.number))


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


def epochs(t: FrozenTrial) -> dict[int, float]:
    """Each epoch's accuracy so far, by epoch: what the trial reported to Optuna, or, in a
    multi-objective study (where Optuna takes no reports), the list the objective records."""
    if t.intermediate_values:
        return dict(sorted(t.intermediate_values.items()))
    return {epoch: acc for epoch, acc in enumerate(t.user_attrs.get(EPOCH_ACCURACY) or [], 1) if acc is not None}


def curve(t: FrozenTrial) -> list[float]:
    """The accuracy of every epoch, in order."""
    return list(epochs(t).values())


def last_epoch(t: FrozenTrial) -> tuple[int, Optional[float]]:
    """The last epoch trained so far (0 before the first) and its accuracy."""
    done = epochs(t)
    return (max(done), done[max(done)]) if done else (0, None)
