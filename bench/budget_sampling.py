#!/usr/bin/env python
"""What the parameter budget costs the sampler: rejected proposals and seconds per trial.

For each sampler (tpe, gp, cmaes) on a budget study's search space, two ways of keeping
proposals under the budget are run side by side on the same synthetic objective (no training:
a smooth function of the config that rewards models near the budget, so model-based samplers
press against it, as they do in a real budget study):

- before: the wrapper hpo shipped until 2026-11-27: ask the inner sampler for a joint proposal
  up to 64 times until one fits; values drawn one at a time (random start-up) never redrawn,
  so those trials were rejected;
- now: hpo.sampler.BudgetSampler: the joint proposal asked for once, independent draws redrawn
  up to 16 times, what is still over the budget shrunk onto it.

Columns: rejected trials (over the budget, trained nothing), sampler seconds per trial (mean
and worst: `study.ask` plus the config's sampling), inner `sample_relative` calls per trial,
the mean size of the models proposed, and the best synthetic value reached.

    python bench/budget_sampling.py                       # budget-8k, 40 trials each
    python bench/budget_sampling.py --trials 60 --samplers tpe gp
"""

from __future__ import annotations

import argparse
import datetime
import math
import random
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_model  # noqa: E402

import optuna  # noqa: E402
import torch  # noqa: E402
from optuna.samplers import BaseSampler  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from hpo.sampler import BudgetSampler  # noqa: E402
from hpo.study import SAMPLERS as BUILD, load_spec  # noqa: E402

SAMPLERS = {
    "tpe": {"name": "tpe", "multivariate": True},
    "gp": {"name": "gp"},
    "cmaes": {"name": "cmaes"},
}


class RedrawSampler(BaseSampler):
    """The wrapper before 2026-11-27 (hpo/sampler.py at dddd0ec), kept here to measure against."""

    DRAWS = 64

    def __init__(self, inner: BaseSampler, fits):
        self.inner, self.fits = inner, fits

    def infer_relative_search_space(self, study, trial):
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        params = self.inner.sample_relative(study, trial, search_space)
        for _ in range(self.DRAWS - 1):
            if not params or self.fits(params):
                break
            params = self.inner.sample_relative(study, trial, search_space)
        return params

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial):
        self.inner.before_trial(study, trial)

    def after_trial(self, study, trial, state, values):
        self.inner.after_trial(study, trial, state, values)


def synthetic(cfg: dict, size: int, budget: int, rng: random.Random) -> float:
    """Accuracy-like: bigger models (up to the budget) and a learning rate near 0.05 score higher."""
    lr = cfg["optimizer"]["lr"]
    return (0.995 - 0.01 * (1 - size / budget) ** 2 - 0.004 * (math.log10(lr) + 1.3) ** 2
            - 0.01 * cfg["model"].get("dropout", 0) + rng.gauss(0, 0.0005))


def run(spec, sampler_name: str, way: str, trials: int, seed: int) -> dict[str, Any]:
    kwargs = {**SAMPLERS[sampler_name], "seed": seed}
    name = kwargs.pop("name")
    inner = BUILD[name](**kwargs)
    budget = spec.budget.max_params
    calls = [0]
    original = inner.sample_relative

    def counted(study, trial, search_space):
        calls[0] += 1
        return original(study, trial, search_space)

    inner.sample_relative = counted
    sampler = (BudgetSampler(inner, spec.space, budget) if way == "now"
               else RedrawSampler(inner, lambda values: spec.space.fits(values, budget)))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.enqueue_trial(spec.space.base_params())
    rng = random.Random(seed)
    seconds, sizes, rejected, best = [], [], 0, -1.0
    for _ in range(trials):
        started = time.perf_counter()
        trial = study.ask()
        cfg = spec.space.sample(trial)
        seconds.append(time.perf_counter() - started)
        size = spec.space.n_params(cfg)
        trial.set_constraint("params_over_budget", size - budget)  # as hpo.objective.prepare does
        if size > budget:
            rejected += 1
            study.tell(trial, state=TrialState.PRUNED)
            continue
        sizes.append(size)
        value = synthetic(cfg, size, budget, rng)
        best = max(best, value)
        study.tell(trial, value)
    return {"sampler": sampler_name, "way": way, "trials": trials, "rejected": rejected,
            "mean_s": statistics.mean(seconds), "worst_s": max(seconds), "calls": calls[0] / trials,
            "size": statistics.mean(sizes) if sizes else float("nan"), "best": best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", default="budget-8k")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=list(SAMPLERS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", message="Constraints have been set")  # CMA-ES: it cannot use them
    torch.set_num_threads(1)
    spec = load_spec(args.study)
    print(f"# budget sampling: {args.study} (max {spec.budget.max_params:,} parameters), {args.trials} trials each, "
          f"seed {args.seed}; {cpu_model()}, {torch.get_num_threads()} torch thread, optuna {optuna.__version__}, "
          f"{datetime.date.today()}")
    print("| sampler | way | rejected | sampler s/trial (mean) | worst | inner calls/trial | mean model size | best value |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in args.samplers:
        for way in ("before", "now"):
            r = run(spec, name, way, args.trials, args.seed)
            print(f"| {name} | {way} | {r['rejected']}/{r['trials']} ({r['rejected'] / r['trials']:.0%}) | "
                  f"{r['mean_s']:.3f} | {r['worst_s']:.2f} | {r['calls']:.1f} | {r['size']:,.0f} | {r['best']:.4f} |",
                  flush=True)


if __name__ == "__main__":
    main()
