"""Pruning within groups: a trial is judged only against the trials that share its values of some
categorical keys (`pruner: {name: successive_halving, within: [schedule.name, optimizer.name]}`).

An early pruner ranks trials by how fast they start. In budget-8k's studies every one-cycle and
AdamW trial lost at the first rung to SGD with step decay, whose accuracy rises sooner, though
one-cycle ends strong (README, "Results"). Compared only with their own kind, each schedule and
optimizer keeps its best trials to the end, and the study ranks them on their final accuracy.

Optuna's median, percentile and successive-halving pruners read the study's trials through
`Study.get_trials`; they are handed a view of the study whose `get_trials` lists the trial's
group alone. (Hyperband, Wilcoxon and the others read more than that, so `within` is refused for
them when the study file is parsed.)
"""

from __future__ import annotations

from typing import Any, Sequence

import optuna

GROUPABLE = ("median", "percentile", "successive_halving")


def group_of(trial: optuna.trial.FrozenTrial, keys: Sequence[str]) -> tuple:
    """The trial's values of `keys` (None for a key its config does not take)."""
    return tuple(trial.params.get(key) for key in keys)


class WithinGroups(optuna.pruners.BasePruner):
    """`pruner`, judging each trial among the trials of its group only."""

    def __init__(self, pruner: optuna.pruners.BasePruner, keys: Sequence[str]):
        self.pruner, self.keys = pruner, tuple(keys)

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return self.pruner.prune(_GroupView(study, self.keys, group_of(trial, self.keys)), trial)


class _GroupView:
    """The study, as far as a pruner reads it, with only the trials of one group."""

    def __init__(self, study: optuna.Study, keys: tuple, group: tuple):
        self._study, self._keys, self._group = study, keys, group

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[optuna.trial.FrozenTrial]:
        return [t for t in self._study.get_trials(deepcopy=deepcopy, states=states)
                if group_of(t, self._keys) == self._group]

    @property
    def trials(self) -> list[optuna.trial.FrozenTrial]:
        return self.get_trials()

    def __getattr__(self, name: str) -> Any:  # direction, _storage, ...: the study's own
        return getattr(self._study, name)
