"""A sampler wrapper that proposes only models within the parameter budget.

Counting a model's parameters takes a fraction of a millisecond, training it takes minutes, so
no trial should be spent on a model that cannot be trained. The wrapper proposes every value
that sets the model's size (`SearchSpace.sizing`: the widths, not the dropout) together, in `sample_relative`, so a proposal
can be checked whole before any of it is used:

- values the inner sampler proposes jointly (multivariate TPE, GP, CMA-ES past their start-up
  trials) are drawn once: a model-based sampler is costly to ask again (GPSampler fits a
  Gaussian process per call), so an over-budget proposal is shrunk onto the budget instead
  (`SearchSpace.shrink`: each size-setting value moved by one shared fraction toward the end
  that builds the smaller model: a width toward its low end, a convpool kernel toward its high);
- values it draws one at a time (random start-up trials, univariate TPE, what a joint sampler
  leaves out) are cheap to draw again: they are redrawn up to REDRAWS times, then shrunk.

So a study with a budget rejects no proposal unless its enqueued or retried values are over the
budget themselves, or a categorical model choice leaves nothing that fits. Those trials are
rejected by the objective (PRUNED, `rejected: over_budget`) and fed back to TPE as infeasible.
"""

from __future__ import annotations

from typing import Any

from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

REDRAWS = 16  # cheap independent draws tried before shrinking the last one


class BudgetSampler(BaseSampler):
    def __init__(self, inner: BaseSampler, space, max_params: int):
        self.inner = inner
        self.space = space  # hpo.space.SearchSpace
        self.max_params = max_params
        self.sizes = {p.name: p.distribution() for p in space.sizing}
        self._inner_space: dict[int, dict[str, BaseDistribution]] = {}  # by trial number, between the two calls

    def infer_relative_search_space(self, study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        space = self.inner.infer_relative_search_space(study, trial)
        self._inner_space[trial.number] = space
        return {**self.sizes, **space}

    def sample_relative(self, study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        inner_space = self._inner_space.pop(trial.number, {})
        params = dict(self.inner.sample_relative(study, trial, inner_space)) if inner_space else {}
        fixed = trial.system_attrs.get("fixed_params", {})  # enqueued or retried: given, not proposed
        drawn = [name for name in self.sizes if name not in params and name not in fixed]
        for _ in range(REDRAWS if drawn else 1):
            for name in drawn:
                params[name] = self.inner.sample_independent(study, trial, name, self.sizes[name])
            if self.space.fits({**params, **fixed}, self.max_params):
                return params
        shrunk = self.space.shrink({**params, **fixed}, self.max_params, keep=fixed)
        return {name: value for name, value in shrunk.items() if name not in fixed and name in search_space}

    def sample_independent(self, study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution):
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial: FrozenTrial) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(self, study, trial: FrozenTrial, state: TrialState, values) -> None:
        self._inner_space.pop(trial.number, None)
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()
