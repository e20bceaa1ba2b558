"""Study files: every shipped file parses; bad files fail with the file, the key and the reason."""

from __future__ import annotations

import copy
from pathlib import Path

import optuna
import pytest
import yaml

from hpo import models
from hpo.errors import ConfigError, UserError
from hpo.study import STUDIES_DIR, load_spec, parse_study

SHIPPED = sorted(p.stem for p in STUDIES_DIR.glob("*.yaml"))

GOOD = {
    "base": {"model": {"preset": "mnistnet2"}, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
             "epochs": 3},
    "search": {
        "optimizer.name": {"choices": ["sgd", "adam"]},
        "optimizer.lr": {"float": [0.001, 0.1], "log": True},
        "optimizer.momentum": {"float": [0.5, 0.95], "when": {"optimizer.name": "sgd"}},
        "model.layers.4": {"int": [8, 24], "step": 4},
    },
    "budget": {"max_params": 8000, "epochs": 5},
    "pruner": {"name": "median", "n_startup_trials": 2},
    "sampler": {"name": "tpe", "seed": 1},
}


def variant(path: str, value, *, delete: bool = False) -> dict:
    """GOOD with one dotted key set (or deleted); keys with dots inside `search` are one level."""
    raw = copy.deepcopy(GOOD)
    node = raw
    parts = path.split("/")
    for part in parts[:-1]:
        node = node[part]
    if delete:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value
    return raw


def test_every_shipped_study_parses_and_its_base_is_in_its_space():
    assert {"quickstart", "lenet-tuning", "budget-8k", "budget-14k", "cnn", "mlp", "linear", "classic"} <= set(SHIPPED)
    for name in SHIPPED:
        spec = load_spec(name)
        params = spec.space.base_params()
        for p in spec.space.params:
            if p.key in params and p.kind == "categorical":
                assert params[p.key] in p.choices
            elif p.key in params:
                assert p.low <= params[p.key] <= p.high, (name, p.key)


def test_budget_studies_match_the_seeds():
    assert load_spec("budget-8k").budget.max_params == 8000
    assert load_spec("budget-8k").budget.epochs == 15
    assert load_spec("budget-14k").budget.max_params == 14000
    assert load_spec("budget-14k").budget.epochs == 20
    assert load_spec("lenet-tuning").budget.epochs == 10


def test_comments_say_where_the_base_comes_from():
    for name in SHIPPED:
        text = (STUDIES_DIR / f"{name}.yaml").read_text()
        assert text.startswith("#") and "seed" in text.split("base:")[0].lower(), name


BAD = [
    # (change, expected key, words in the reason)
    (("unknown", 1), "unknown", "unknown key"),
    (("base", None, True), "base", "missing"),
    (("base/optimizer/name", "adamax"), "base.optimizer.name", "unknown optimizer"),
    (("base/bogus", 1), "base.bogus", "unknown key"),
    (("base/epochs", 9), "base.epochs", "more than budget.epochs"),
    (("search/optimizer.lr", {"float": [0.1, 0.001]}), "search.optimizer.lr.float", "greater than high"),
    (("search/optimizer.lr", {"float": [0.0, 0.1], "log": True}), "search.optimizer.lr.float", "log scale"),
    (("search/optimizer.lr", {"float": ["a", 0.1]}), "search.optimizer.lr.float.0", "expected a number"),
    (("search/optimizer.name", {"choices": []}), "search.optimizer.name.choices", "non-empty"),
    (("search/optimizer.name", {"choices": ["sgd"], "int": [1, 2]}), "search.optimizer.name", "exactly one"),
    (("search/optimizer.lr", {"float": [0.001, 0.1], "steps": 2}), "search.optimizer.lr.steps", "unknown key"),
    (("search/model.layers.4", {"int": [18, 24]}), "search.model.layers.4", "base value 16"),
    (("search/model.nothing", {"int": [1, 2]}), "search.model.nothing", "no such key"),
    (("search/colour", {"int": [1, 2]}), "search.colour", "not a training config key"),
    (("search/optimizer.momentum", {"float": [0.5, 0.9], "when": {"model.zzz": 1}}),
     "search.optimizer.momentum.when.model.zzz", "searched earlier"),
    (("pruner", {"name": "sometimes"}), "pruner.name", "unknown pruner"),
    (("pruner", {"name": "median", "patience": 3}), "pruner.patience", "not an option of median"),
    (("pruner", {"name": "patient"}), "pruner.wrapped", "wraps"),
    (("sampler", {"name": "annealing"}), "sampler.name", "unknown sampler"),
    # option values are checked by building the pruner and sampler once, when the file is read
    (("pruner", {"name": "percentile", "percentile": 150}), "pruner", "between 0 and 100"),
    (("pruner", {"name": "median", "n_startup_trials": -1}), "pruner", "cannot be negative"),
    (("pruner", {"name": "successive_halving", "min_resource": 0}), "pruner", "min_resource"),
    (("sampler", {"name": "tpe", "seed": "x"}), "sampler", "tpe: "),
    (("sampler", {"name": "tpe", "sed": 1}), "sampler.sed", "not an option of tpe"),
    (("budget/max_params", 50), "budget.max_params", "smallest model"),
    (("budget/max_params", 7000), "budget.max_params", "base model has 7,416"),
    (("budget/epochs", 0), "budget.epochs", "must be in"),
    (("budget/epochs", "ten"), "budget.epochs", "expected an integer"),
]


@pytest.mark.parametrize("change, key, words", BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_bad_study_files_name_file_key_and_reason(change, key, words):
    raw = variant(change[0], change[1], delete=len(change) > 2 and change[2])
    with pytest.raises(ConfigError) as caught:
        parse_study(raw, "studies/x.yaml", "x")
    assert caught.value.source == "studies/x.yaml"
    assert caught.value.key == key
    assert words in caught.value.reason
    assert str(caught.value).startswith("studies/x.yaml: key ")


def test_malformed_yaml_and_unknown_study(tmp_path: Path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("base: {model: [\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: malformed YAML at line"):
        load_spec(str(bad))
    with pytest.raises(UserError, match="no such study file; give a path, or one of: .*quickstart"):
        load_spec("no-such-study")


def test_fingerprint_changes_with_the_file_not_with_formatting():
    a = parse_study(copy.deepcopy(GOOD), "a.yaml", "x")
    b = parse_study(yaml.safe_load(yaml.safe_dump(GOOD, default_flow_style=True)), "b.yaml", "x")
    c = parse_study(variant("search/optimizer.lr", {"float": [0.001, 0.2], "log": True}), "a.yaml", "x")
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_sampling_is_conditional_and_sets_convnet_widths():
    spec = parse_study(copy.deepcopy(GOOD), "x.yaml", "x")
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=3))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        cfg = spec.space.sample(trial)
        name = cfg["optimizer"]["name"]
        seen.add(name)
        assert ("optimizer.momentum" in trial.params) == (name == "sgd")
        assert ("momentum" in cfg["optimizer"]) == (name == "sgd")  # Adam never sees SGD's momentum
        assert cfg["model"]["layers"][4] == trial.params["model.layers.4"]
        assert cfg["model"]["layers"][2] == "t8"  # tokens not searched keep their kind
        study.tell(trial, 0.5)
    assert seen == {"sgd", "adam"}


def test_transition_token_width_is_searchable():
    raw = variant("search/model.layers.2", {"int": [4, 12]})
    spec = parse_study(raw, "x.yaml", "x")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    cfg = spec.space.sample(trial)
    assert cfg["model"]["layers"][2] == f"t{trial.params['model.layers.2']}"
    assert models.spec_params(models.parse_model(cfg["model"])) > 0


def test_budget_sampler_only_proposes_models_that_fit():
    spec = load_spec("budget-8k")
    sampler = spec.make_sampler()
    study = optuna.create_study(direction="maximize", sampler=sampler)
    # a tiny fake history, so multivariate TPE is past its random start-up phase
    for i in range(12):
        trial = study.ask()
        cfg = spec.space.sample(trial)
        n = models.spec_params(models.parse_model(cfg["model"]))
        if n > 8000:
            trial.set_constraint("params_over_budget", n - 8000)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, 0.9 + i / 1000)
    for _ in range(10):
        trial = study.ask()
        cfg = spec.space.sample(trial)
        assert models.spec_params(models.parse_model(cfg["model"])) <= 8000
        study.tell(trial, 0.95)
