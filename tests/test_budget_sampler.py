"""The budget sampler: no trial is spent on a model over the budget, and a model-based sampler
is asked once per trial; and one config key searched under two names (a range per optimizer)."""

from __future__ import annotations

import copy

import optuna
import pytest
from optuna.trial import TrialState

from hpo import records
from hpo.errors import ConfigError
from hpo.objective import prepare
from hpo.study import load_spec, parse_study

optuna.logging.set_verbosity(optuna.logging.WARNING)

TINY = {
    "base": {"model": {"family": "convnet", "layers": [4, "M", 8, "GAP", "H"], "batchnorm": False},
             "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}, "epochs": 2},
    "search": {
        "optimizer.lr": {"float": [0.0005, 0.5], "log": True},
        "model.layers.0": {"int": [2, 32]},
        "model.layers.2": {"int": [2, 64]},
        "model.dropout": {"float": [0.0, 0.5]},
    },
    "budget": {"max_params": 3000, "epochs": 2},
    "sampler": {"name": "random", "seed": 0},
}


def spec_of(raw: dict = TINY, **changes):
    return parse_study({**copy.deepcopy(raw), **changes}, "tiny.yaml", "tiny")


def ask_many(spec, n: int, value=lambda cfg, n_params: 0.5):
    """`n` trials asked and told as the worker would: (config, parameters) of each."""
    study = optuna.create_study(direction="maximize", sampler=spec.make_sampler())
    seen = []
    for _ in range(n):
        trial = study.ask()
        cfg = spec.space.sample(trial)
        size = spec.space.n_params(cfg)
        seen.append((cfg, size))
        if spec.budget.max_params and size > spec.budget.max_params:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, value(cfg, size))
    return seen


def test_only_the_widths_set_the_size():
    assert [p.name for p in spec_of().space.sizing] == ["model.layers.0", "model.layers.2"]


def test_random_proposals_are_redrawn_or_shrunk_never_rejected():
    spec = spec_of()
    sizes = [size for _, size in ask_many(spec, 40)]
    # without the budget sampler, a uniform draw of both widths overshoots 3,000 parameters often
    unbounded = ask_many(spec_of(budget={"epochs": 2}), 40)
    assert sum(size > 3000 for _, size in unbounded) >= 5
    assert max(sizes) <= 3000
    assert len(set(sizes)) > 10, "the proposals collapsed onto a few models"


@pytest.mark.parametrize("sampler", [{"name": "tpe", "seed": 0, "multivariate": True, "n_startup_trials": 5},
                                     {"name": "cmaes", "seed": 0, "n_startup_trials": 3},
                                     {"name": "gp", "seed": 0, "n_startup_trials": 5}])
def test_a_model_based_sampler_is_asked_once_per_trial_and_its_proposals_fit(sampler, monkeypatch):
    spec = spec_of(sampler=sampler)
    inner = type(spec.make_sampler().inner)
    calls = []
    original = inner.sample_relative

    def counted(self, study, trial, search_space):
        calls.append(trial.number)
        return original(self, study, trial, search_space)

    monkeypatch.setattr(inner, "sample_relative", counted)
    # a value that rewards width, so the model-based proposals press against the budget
    seen = ask_many(spec, 14, value=lambda cfg, size: size / 3000)
    assert max(size for _, size in seen) <= 3000
    assert sorted(calls) == sorted(set(calls)), "the inner sampler was asked twice for one trial"
    assert max(size for _, size in seen[-5:]) > 2000, "shrinking lost the budget's edge"


def test_shrink_keeps_proportions_and_fixed_values():
    space = spec_of().space
    big = {"model.layers.0": 32, "model.layers.2": 64, "model.dropout": 0.3, "optimizer.lr": 0.1}
    assert not space.fits(big, 3000)
    small = space.shrink(big, 3000)
    assert space.fits(small, 3000)
    assert small["model.dropout"] == 0.3 and small["optimizer.lr"] == 0.1  # not sizes: untouched
    assert 2 <= small["model.layers.0"] < 32 and small["model.layers.2"] > small["model.layers.0"]
    one_more = {**small, "model.layers.2": small["model.layers.2"] + 4}
    assert not space.fits(one_more, 3000), "shrunk further than the budget needed"
    kept = space.shrink(big, 3000, keep={"model.layers.2"})
    assert kept["model.layers.2"] == 64 and kept["model.layers.0"] < 32
    assert space.shrink({**big, "model.layers.2": 10**6}, 3000, keep={"model.layers.2"})["model.layers.0"] == 32


LENET_KERNEL = {
    "base": {"model": {"family": "convpool", "convs": [6, 8], "kernel": 5, "fc": [120, 84]}, "epochs": 2},
    "search": {"model.kernel": {"int": [3, 7]}, "model.convs.1": {"int": [8, 32]}},
    "budget": {"max_params": 30000, "epochs": 2},
    "sampler": {"name": "random", "seed": 0},
}


def test_shrink_moves_a_convpool_kernel_up_where_a_larger_kernel_builds_the_smaller_model():
    # a larger kernel leaves a smaller feature map, so fewer inputs to the first dense layer
    space = spec_of(LENET_KERNEL).space
    size = lambda values: space.n_params(space.apply(values))  # noqa: E731
    big = {"model.kernel": 3, "model.convs.1": 32}
    assert size({"model.kernel": 3, "model.convs.1": 8}) > 30000, "the narrowest net at kernel 3 is over: " \
                                                                    "no shrink toward kernel 3 can fit"
    small = space.shrink(big, 30000)
    assert space.fits(small, 30000)
    assert small["model.kernel"] > 3 and small["model.convs.1"] < 32
    one_step_back = {"model.kernel": small["model.kernel"] - 1, "model.convs.1": small["model.convs.1"]}
    assert not space.fits(one_step_back, 30000), "moved the kernel further than the budget needed"
    assert max(size for _, size in ask_many(spec_of(LENET_KERNEL), 20)) <= 30000, "a proposal was rejected"


def test_an_enqueued_model_over_the_budget_is_kept_and_rejected_before_training(tmp_path):
    spec = spec_of()
    study = optuna.create_study(direction="maximize", sampler=spec.make_sampler())
    study.enqueue_trial({"model.layers.0": 32, "model.layers.2": 64})
    trial = study.ask()
    plan = prepare(trial, spec, frozen=study._storage.get_trial(trial._trial_id), device=__import__("torch").device("cpu"),
                   checkpoint_dir=tmp_path)
    assert plan is None
    assert trial.params["model.layers.0"] == 32 and trial.params["model.layers.2"] == 64
    attrs = study._storage.get_trial(trial._trial_id).user_attrs
    assert attrs[records.REJECTED] == "over_budget" and attrs[records.N_PARAMS] > 3000


# ----------------------------------------------------------------- one key under two names

PER_OPTIMIZER = {
    **TINY,
    "search": {
        "optimizer.name": {"choices": ["sgd", "adamw"]},
        "optimizer.lr": {"float": [0.01, 0.3], "log": True, "when": {"optimizer.name": "sgd"}},
        "adamw_lr": {"key": "optimizer.lr", "float": [0.001, 0.005], "log": True, "when": {"optimizer.name": "adamw"}},
    },
}


def test_one_key_takes_a_range_per_optimizer_under_two_names():
    spec = spec_of(PER_OPTIMIZER)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(20):
        trial = study.ask()
        cfg = spec.space.sample(trial)
        name, lr = cfg["optimizer"]["name"], cfg["optimizer"]["lr"]
        seen.add(name)
        if name == "sgd":
            assert set(trial.params) == {"optimizer.name", "optimizer.lr"} and 0.01 <= lr <= 0.3
        else:
            assert set(trial.params) == {"optimizer.name", "adamw_lr"} and 0.001 <= lr <= 0.005
            assert lr == trial.params["adamw_lr"]
        assert spec.space.apply(trial.params) == cfg
        study.tell(trial, 0.5)
    assert seen == {"sgd", "adamw"}
    assert spec.space.base_params() == {"optimizer.name": "sgd", "optimizer.lr": 0.05}


@pytest.mark.parametrize("when, message", [
    (None, "sets optimizer.lr, as search.optimizer.lr does"),
    ({"optimizer.name": ["sgd", "adamw"]}, "at most one of them applies"),
])
def test_two_names_for_one_key_must_never_both_apply(when, message):
    raw = copy.deepcopy(PER_OPTIMIZER)
    if when is None:
        del raw["search"]["adamw_lr"]["when"]
    else:
        raw["search"]["adamw_lr"]["when"] = when
    with pytest.raises(ConfigError, match=message) as error:
        spec_of(raw)
    assert "search.adamw_lr" in str(error.value)


def test_a_bad_key_under_a_name_says_where():
    raw = copy.deepcopy(PER_OPTIMIZER)
    raw["search"]["adamw_lr"]["key"] = "optimizer.learning_rate"
    with pytest.raises(ConfigError, match="search.adamw_lr.*no such key"):
        spec_of(raw)
    raw["search"]["adamw_lr"]["key"] = 3
    with pytest.raises(ConfigError, match="search.adamw_lr.key.*dotted training config key"):
        spec_of(raw)


def test_the_shipped_budget_study_searches_every_card_dimension():
    spec = load_spec("budget-8k")
    keys = {p.key for p in spec.space.params}
    assert {"batch_size", "optimizer.name", "optimizer.lr", "optimizer.weight_decay", "model.dropout",
            "model.layers.0"} <= keys
    assert spec.eval == "val"
