"""From a trial to a training config: the search space of a study, sampled in file order."""

from __future__ import annotations

import copy

import optuna

from hpo.config import drop_inapplicable
from hpo.study import Param, StudySpec, base_value, set_path


def suggest(trial: optuna.Trial, p: Param):
    if p.kind == "float":
        return trial.suggest_float(p.key, p.low, p.high, log=p.log, step=p.step)
    if p.kind == "int":
        return trial.suggest_int(p.key, int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
    return trial.suggest_categorical(p.key, list(p.choices))


def sample(trial: optuna.Trial, spec: StudySpec) -> dict:
    """The base config with every applicable searched key set from `trial`."""
    cfg = copy.deepcopy(spec.base)
    for p in spec.search:
        if p.applies(cfg):  # conditions see the values sampled before them
            set_path(cfg, p.key, suggest(trial, p))
    return drop_inapplicable(cfg)


def base_params(spec: StudySpec) -> dict:
    """The base recipe as Optuna parameters, for `enqueue_trial`: trial 0 is the human's choice."""
    params = {}
    cfg = copy.deepcopy(spec.base)
    for p in spec.search:
        if p.applies(cfg):
            value = base_value(cfg, p.key)
            if value is None:  # a key the base leaves to its default: let the sampler choose
                continue
            params[p.key] = value
            set_path(cfg, p.key, value)
    return params
