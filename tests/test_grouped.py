"""Pruning within groups (hpo.grouped): a trial is judged only against its own kind, so a
schedule that starts slowly is not stopped for losing to one that starts fast."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from hpo.grouped import WithinGroups
from hpo.study import parse_study
from test_study import variant

SCHEDULE = {"schedule.name": CategoricalDistribution(["step", "onecycle"])}
# step decay starts fast: at the first rung (epoch 4) its trials lead one-cycle's
STEP_AT_4 = [0.99, 0.985, 0.98, 0.975, 0.97, 0.985]


def judged(pruner, onecycle_at_4: list[float]) -> list[bool]:
    """Whether each one-cycle trial is pruned at epoch 4, after the step-decay trials reached it."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize", pruner=pruner)

    def trial(schedule: str, value: float) -> bool:
        study.enqueue_trial({"schedule.name": schedule})
        t = study.ask(SCHEDULE)
        t.report(value, 4)
        pruned = t.should_prune()
        study.tell(t, state=TrialState.PRUNED) if pruned else study.tell(t, value)
        return pruned

    for value in STEP_AT_4:
        trial("step", value)
    return [trial("onecycle", value) for value in onecycle_at_4]


def successive_halving():
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=4, reduction_factor=3)


def test_successive_halving_within_a_schedule_keeps_its_best_one_cycle_trials():
    # against everyone, 0.96 is below the top third of seven (0.985 needed): pruned
    assert judged(successive_halving(), [0.96]) == [True]
    # among one-cycle trials alone: the first is the best so far, 0.95 is not, 0.97 is
    assert judged(WithinGroups(successive_halving(), ["schedule.name"]), [0.96, 0.95, 0.97]) == [False, True, False]


def test_the_median_pruner_within_a_schedule_compares_medians_of_its_own_kind():
    median = lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)  # noqa: E731
    assert judged(median(), [0.96]) == [True]
    # the first two one-cycle trials are its group's start-up; the third is below their median
    assert judged(WithinGroups(median(), ["schedule.name"]), [0.96, 0.95, 0.94]) == [False, False, True]


def test_the_study_file_builds_the_grouped_pruner():
    spec = parse_study(variant("pruner", {"name": "successive_halving", "min_resource": 2,
                                          "within": ["optimizer.name"]}), "studies/x.yaml", "x")
    pruner = spec.make_pruner()
    assert isinstance(pruner, WithinGroups) and pruner.keys == ("optimizer.name",)
    assert isinstance(pruner.pruner, optuna.pruners.SuccessiveHalvingPruner)
    assert spec.fingerprint != parse_study(variant("pruner", {"name": "successive_halving", "min_resource": 2}),
                                           "studies/x.yaml", "x").fingerprint


@pytest.mark.parametrize("keys", [["schedule.name"], ["schedule.name", "optimizer.name"]])
def test_a_trial_without_a_groups_key_is_grouped_with_the_others_that_lack_it(keys):
    frozen = optuna.trial.create_trial(params={"schedule.name": "step"}, distributions=SCHEDULE,
                                       intermediate_values={4: 0.9}, state=TrialState.RUNNING)
    from hpo.grouped import group_of  # noqa: PLC0415

    assert group_of(frozen, keys) == ("step",) + (None,) * (len(keys) - 1)
