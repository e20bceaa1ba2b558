"""A sampler wrapper that keeps joint (relative) samples under the parameter budget.

Counting a model's parameters takes microseconds, training it takes minutes, so a sampler
should never spend a trial on a model that cannot be trained. Once the inner sampler
proposes whole configurations (multivariate TPE, GP, CMA-ES after their start-up trials),
this wrapper draws again until the proposal fits. Proposals drawn one parameter at a time
(the random start-up phase) can still overshoot; those trials are rejected by the
objective and fed back to TPE as infeasible through its constraints function.
"""

from __future__ import annotations

from typing import Any, Callable

from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

DRAWS = 64  # proposals tried before giving up and letting the objective reject the last one


class BudgetSampler(BaseSampler):
    def __init__(self, inner: BaseSampler, fits: Callable[[dict[str, Any]], bool]):
        self.inner = inner
        self.fits = fits

    def infer_relative_search_space(self, study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        params = self.inner.sample_relative(study, trial, search_space)
        for _ in range(DRAWS - 1):
            if not params or self.fits(params):
                break
            params = self.inner.sample_relative(study, trial, search_space)
        return params

    def sample_independent(self, study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution):
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial: FrozenTrial) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(self, study, trial: FrozenTrial, state: TrialState, values) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()

