"""Study files: every shipped file parses; bad files fail with the file, the key and the reason."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import optuna
import pytest
import yaml

from hpo import models, schema
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
            if p.name in params and p.kind == "categorical":
                assert params[p.name] in p.choices
            elif p.name in params:
                assert p.low <= params[p.name] <= p.high, (name, p.name)


def test_budget_studies_match_the_seeds():
    assert load_spec("budget-8k").budget.max_params == 8000
    assert load_spec("budget-8k").budget.epochs == 15
    assert load_spec("budget-14k").budget.max_params == 14000
    assert load_spec("budget-14k").budget.epochs == 20
    # a variant keeps its study's budget, so its result stands in that study's row
    variants = (("budget-8k-cosine", "budget-8k"), ("budget-8k-deep", "budget-8k"),
                ("budget-14k-cosine", "budget-14k"), ("budget-14k-adamw", "budget-14k"),
                ("budget-14k-sgd", "budget-14k"), ("budget-14k-recipe", "budget-14k"),
                ("budget-14k-deep", "budget-14k"), ("budget-14k-separable", "budget-14k"),
                ("budget-14k-separable-deep", "budget-14k"), ("budget-14k-mobile", "budget-14k"),
                ("budget-14k-separable-recipe", "budget-14k"),
                ("lenet-cosine", "lenet-tuning"))
    for variant, study in variants:
        assert load_spec(variant).budget == load_spec(study).budget, variant
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
    (("search/model.layers.4", {"int": [8, 26], "step": 4}), "search.model.layers.4.step",
     "nothing above 24 would ever be drawn; make high 24 or 28"),
    (("search/model.dropout", {"float": [0.0, 0.5], "step": 0.2}), "search.model.dropout.step",
     "nothing above 0.4 would ever be drawn; make high 0.4 or 0.6"),
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
    (("pruner", {"name": "median", "n_startup_trials": -1}), "pruner.n_startup_trials", "whole number >= 0, got -1"),
    (("pruner", {"name": "successive_halving", "min_resource": 0}), "pruner", "min_resource"),
    (("sampler", {"name": "tpe", "seed": 1.5}), "sampler.seed", "expected a whole number from 0 to 4,294,967,295, got 1.5 (float)"),
    (("sampler", {"name": "tpe", "sed": 1}), "sampler.sed", "not an option of tpe"),
    # pruning within groups: searched keys with choices, for the pruners that read get_trials alone
    (("pruner", {"name": "median", "within": ["optimizer.lr"]}), "pruner.within.0",
     "'optimizer.lr' is not a searched key with choices; choose from optimizer.name"),
    (("pruner", {"name": "median", "within": "optimizer.name"}), "pruner.within", "expected a list"),
    (("pruner", {"name": "median", "within": ["optimizer.name", "optimizer.name"]}), "pruner.within.1",
     "listed twice"),
    (("pruner", {"name": "hyperband", "within": ["optimizer.name"]}), "pruner.within",
     "hyperband cannot prune within groups"),
    (("sampler", {"name": "nsgaii", "population_size": 1}), "sampler", "nsgaii: `population_size`"),
    # a required option left out named Python's TypeError against 'pruner'
    (("pruner", {"name": "percentile"}), "pruner.percentile",
     "percentile needs it: give pruner: {name: percentile, percentile: ...}"),
    (("pruner", {"name": "patient", "wrapped": "median"}), "pruner.patience", "patient needs it"),
    (("sampler", {"name": "tpe", "seed": "abc"}), "sampler.seed", "expected a whole number from 0 to 4,294,967,295, got 'abc' (str)"),
    (("sampler", {"name": "tpe", "n_startup_trials": -3}), "sampler.n_startup_trials", "whole number >= 0, got -3"),
    (("pruner", {"name": "median", "n_warmup_steps": True}), "pruner.n_warmup_steps", "whole number >= 0, got True (bool: YAML reads yes, on and true unquoted as true"),
    # a threshold is compared with each epoch's accuracy, a fraction: 50 would stop every trial
    (("pruner", {"name": "threshold", "lower": 50}), "pruner.lower", "outside [0, 1]: trials report accuracy as a "
                                                                     "fraction (0.5 for 50%), so it would stop every "
                                                                     "trial or none; for 50% write 0.5"),
    (("pruner", {"name": "patient", "patience": 1, "wrapped": {"name": "threshold", "upper": -1}}),
     "pruner.wrapped.upper", "-1 is outside [0, 1]"),
    # objectives: accuracy alone (the default), or accuracy then params; Optuna prunes no multi-objective study
    (("objectives", "accuracy"), "objectives", "expected a list, e.g. objectives: [accuracy, params]"),
    (("objectives", ["accuracy", "loss"]), "objectives.1", "unknown objective 'loss'; choose from accuracy, params"),
    (("objectives", ["accuracy", "params", "params"]), "objectives.2", "listed twice"),
    (("objectives", ["params", "accuracy"]), "objectives", "accuracy comes first"),
    (("objectives", ["accuracy", "params"]), "pruner", "Optuna does not prune multi-objective studies"),
    (("budget/max_params", 50), "budget.max_params", "smallest model"),
    (("budget/max_params", 7000), "budget.max_params", "base model has 7,416"),
    (("budget/epochs", 0), "budget.epochs", "must be in"),
    (("budget/epochs", "ten"), "budget.epochs", "expected an integer"),
    # the name becomes a folder under --checkpoint-dir
    (("name", "../../etc"), "name", "cannot name a study"),
    (("name", "a/b"), "name", "letters, digits, '.', '_' or '-'"),
    (("name", "x" * 101), "name", "1 to 100"),
    (("name", 7), "name", "expected a string, got int"),
    # every searched key is tried at both ends (each choice) against what the training config accepts
    (("search/model.dropout", {"float": [0.0, 1.5]}), "search.model.dropout", "1.5 is not a valid value here"),
    (("search/batch_size", {"float": [32, 512]}), "search.batch_size", "expected an integer, got 32.0"),
    (("search/optimizer.lrr", {"float": [0.001, 0.1]}), "search.optimizer.lrr", "optimizer has: name, lr"),
    (("search/model.layers.9", {"int": [1, 2]}), "search.model.layers.9", "9 entries, 0 to 8"),
    (("search/model.layers.3", {"int": [1, 2]}), "search.model.layers.3", "'M' has no width"),
    (("search/optimizer.name", {"choices": ["sgd", "adamm"]}), "search.optimizer.name", "unknown optimizer 'adamm'"),
    (("search/optimizer.momentum", {"float": [0.5, 1.5], "when": {"optimizer.name": "sgd"}}),
     "search.optimizer.momentum", "(with optimizer.name: sgd): must be in [0, 1)"),
    (("search/optimizer.momentum", {"float": [0.5, 0.9], "when": {"optimizer.name": "adam"}}),
     "search.optimizer.momentum", "never takes effect"),
    (("search/optimizer.lr", {"float": [0.001, float("inf")]}), "search.optimizer.lr.float.1", "finite"),
    (("search/optimizer.lr", {"float": [float("nan"), 0.1]}), "search.optimizer.lr.float.0", "finite"),
    (("search/optimizer.lr", {"float": [0.001, 10**400]}), "search.optimizer.lr.float.1", "too large"),
    (("search/optimizer.name", {"choices": ["sgd", float("inf")]}), "search.optimizer.name.choices.1", "finite"),
    (("search", {1: {"int": [1, 2]}}), "search.1", "dotted training config key"),
    (("search", []), "search", "expected a mapping"),
    # a `when` that can never hold would drop its key without a word
    (("search/optimizer.momentum", {"float": [0.5, 0.9], "when": {"optimizer.name": "sdg"}}),
     "search.optimizer.momentum.when.optimizer.name", "'sdg' can never hold"),
    (("search/optimizer.momentum", {"float": [0.5, 0.9], "when": {"optimizer.name": ["sgd", "rmsprop"]}}),
     "search.optimizer.momentum.when.optimizer.name", "searched among 'sgd', 'adam'"),
    (("search/optimizer.momentum", {"float": [0.5, 0.9], "when": {"epochs": 4}}),
     "search.optimizer.momentum.when.epochs", "keeps the base's 3"),
    (("search/seed", {"int": [0, 9], "when": {"model.layers.4": 17}}),
     "search.seed.when.model.layers.4", "over [8, 24] in steps of 4"),
    (("search/optimizer.momentum", {"float": [0.5, 0.9], "when": {"optimizer.name": []}}),
     "search.optimizer.momentum.when.optimizer.name", "matches nothing"),
    (("search/optimizer.momentum", {"float": [0.5, 0.9], "when": {"optimizer.name": {"x": 1}}}),
     "search.optimizer.momentum.when.optimizer.name", "plain finite numbers"),
    # sampled in file order: a `when` on a key searched further down would see the base's value
    (("search/optimizer.momentum", {"float": [0.5, 0.9], "when": {"model.layers.4": [8, 12]}}),
     "search.optimizer.momentum.when.model.layers.4", "model.layers.4 is searched after this key "
                                                      "(search.model.layers.4), and a `when` sees only values drawn "
                                                      "before it; move this key below it"),
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


def test_a_default_name_from_the_file_name_must_be_safe_too():
    raw = copy.deepcopy(GOOD)  # no name: the file's stem names the study
    with pytest.raises(ConfigError, match=r"'my study' cannot name a study \(taken from the file name\)"):
        parse_study(raw, "studies/my study.yaml", "my study")


def test_searched_keys_of_one_optimizer_are_checked_under_an_optimizer_that_takes_them():
    raw = variant("search/optimizer.beta1", {"float": [0.5, 1.5]})  # the base is sgd; adam is among the choices
    with pytest.raises(ConfigError, match=r"1.5 is not a valid value here \(with optimizer.name: adam\)"):
        parse_study(raw, "x.yaml", "x")
    raw = variant("search/optimizer.name", None, delete=True)  # now only sgd, which has no beta1
    raw["search"]["optimizer.beta1"] = {"float": [0.5, 0.9]}
    raw["search"]["optimizer.momentum"].pop("when")
    with pytest.raises(ConfigError, match="never takes effect: it applies to adam/adamw/nadam/adabelief only"):
        parse_study(raw, "x.yaml", "x")


@pytest.mark.parametrize("schedule, search, key", [
    # each key valid at both of its ends, but a trial drawing 2.5 epochs of warm-up and 2 epochs would fail
    ({"name": "cosine"}, {"epochs": {"int": [2, 5]}, "schedule.warmup_epochs": {"float": [0.0, 2.5]}},
     "search.schedule.warmup_epochs"),
    # one key alone: its end is tried against the base's other (every searched key is)
    ({"name": "cosine", "warmup_epochs": 1.0}, {"epochs": {"int": [1, 5]}}, "search.epochs"),
    ({"name": "none"}, {"schedule.name": {"choices": ["none", "cosine"]}, "epochs": {"int": [2, 5]},
                        "schedule.warmup_epochs": {"float": [0.0, 2.0], "when": {"schedule.name": "cosine"}}},
     "search.schedule.warmup_epochs"),
])
def test_a_space_whose_cosine_warmup_can_outlast_the_epochs_is_refused(schedule, search, key):
    raw = variant("base/schedule", schedule)
    raw["search"].update(search)
    with pytest.raises(ConfigError, match="leav(e|ing) none .*(for the|the) (cosine )?decay") as caught:
        parse_study(raw, "x.yaml", "x")
    assert caught.value.key == key
    raw["search"]["epochs"] = {"int": [3, 5]}  # fewest epochs now above the most warm-up: a valid study
    parse_study(raw, "x.yaml", "x")


def test_short_runs_kept_away_from_cosine_by_a_when_are_no_conflict():
    raw = variant("base/schedule", {"name": "step"})
    raw["base"]["epochs"] = 5
    raw["search"].update({"schedule.name": {"choices": ["step", "cosine"]},
                          "schedule.warmup_epochs": {"float": [0.0, 4.0], "when": {"schedule.name": "cosine"}},
                          "epochs": {"int": [1, 5], "when": {"schedule.name": "step"}}})  # cosine keeps 5
    parse_study(raw, "x.yaml", "x")
    raw["search"]["epochs"]["when"] = {"schedule.name": ["step", "cosine"]}
    with pytest.raises(ConfigError, match="leaving none for the decay"):
        parse_study(raw, "x.yaml", "x")


STUDY_TEXT = """\
base: {model: {preset: mnistnet2}, optimizer: {name: sgd, lr: 0.05, momentum: 0.9}, epochs: 3}
search:
  optimizer.name: {choices: [sgd, adam]}
  optimizer.lr: {float: [0.001, 0.1], log: true}
  optimizer.momentum: {float: [0.5, 0.95], when: {optimizer.name: sgd}}
  model.dropout: {float: &range [0.0, 0.5]}
"""
# nine lists of nine, each made of the one before: 9**9 values once the aliases expand
BOMB = "[" + ", ".join(f"&l{i} [{', '.join([f'*l{i - 1}' if i else '1'] * 9)}]" for i in range(9)) + "]"

HOSTILE_YAML = [
    # (text appended to STUDY_TEXT, expected key, words in the message)
    ("  optimizer.lr: {float: [0.01, 0.2]}\n", "search.optimizer.lr", "given twice in one mapping (lines 4 and 7)"),
    ("budget: {epochs: 3, epochs: 5}\n", "budget.epochs", "line 7, columns 10 and 21"),
    ("  model.layers.4: {int: [8, 24], when: {optimizer.name: " + BOMB + "}}\n", "",
     "expands to more than 100,000 values through its aliases (a YAML alias bomb?)"),
    ("  seed: {choices: [" + ", ".join(map(str, range(100_001))) + "]}\n", "", "holds more than 100,000 values; "),
    ("budget: &loop [*loop]\n", "", "nested more than 64 levels deep at line 7"),
    ("budget: " + "[" * 2000 + "]" * 2000 + "\n", "", "nested more than 64 levels deep"),
    ("budget: {epochs: 2024-13-01}\n", "", "malformed YAML: month must be in 1..12"),
    ("# " + "x" * (16 << 20) + "\n", "", "over 16 MB, not a study file or a config"),  # refused unread, not parsed
]


@pytest.mark.timeout(20)  # an alias bomb used to hang here, in json.dumps or deepcopy
@pytest.mark.parametrize("text, key, words", HOSTILE_YAML, ids=[h[2][:40] for h in HOSTILE_YAML])
def test_hostile_yaml_is_one_config_error(tmp_path: Path, text: str, key: str, words: str):
    path = tmp_path / "hostile.yaml"
    path.write_text(STUDY_TEXT + text)
    with pytest.raises(ConfigError) as caught:
        load_spec(str(path))
    assert (caught.value.source, caught.value.key) == (str(path), key)
    assert words in caught.value.reason


@pytest.mark.timeout(20)
def test_a_device_or_a_pipe_given_as_a_config_is_refused_unread(tmp_path: Path):
    os.mkfifo(tmp_path / "fifo.yaml")
    for path in ("/dev/zero", tmp_path / "fifo.yaml"):  # read, one never ended and the other never began
        with pytest.raises(ConfigError, match="not a regular file; give a YAML file"):
            schema.load_yaml(path)


def test_aliases_and_merges_in_normal_use_still_load(tmp_path: Path):
    path = tmp_path / "aliases.yaml"
    path.write_text(STUDY_TEXT + "  augment.translate: {float: *range}\n"
                    + "pruner: &p {name: median, n_startup_trials: 2}\nsampler: {<<: {name: tpe}, seed: 3}\n")
    spec = load_spec(str(path))
    assert {p.key: (p.low, p.high) for p in spec.space.params}["augment.translate"] == (0.0, 0.5)
    assert spec.sampler.kwargs() == {"seed": 3}
    assert spec.raw["search"]["optimizer.momentum"]["when"] == {"optimizer.name": "sgd"}


def test_numbers_with_an_exponent_are_numbers_as_yaml_1_2_reads_them(tmp_path: Path):
    """PyYAML (YAML 1.1) reads 1e-3 and 1.0e5 as text; hpo's files read them as the numbers they are.
    Text that only looks close stays text."""
    path = tmp_path / "exp.yaml"
    path.write_text("base: {model: {preset: linear}, optimizer: {name: adamw, lr: 1e-3, weight_decay: 5E-4}, "
                    "epochs: 2}\nsearch: {optimizer.lr: {float: [1e-4, 1.0e-1], log: true}}\n"
                    "budget: {epochs: 2}\npruner: {name: none}\nsampler: {name: tpe, seed: 0}\n")
    assert yaml.safe_load(path.read_text())["base"]["optimizer"]["lr"] == "1e-3"  # what PyYAML alone gives
    spec = load_spec(str(path))
    assert (spec.base["optimizer"]["lr"], spec.base["optimizer"]["weight_decay"]) == (0.001, 0.0005)
    assert [(p.low, p.high) for p in spec.space.params] == [(0.0001, 0.1)]
    for text, value in (("-2.5e+3", -2500.0), (".5e1", 5.0), ("1e", "1e"), ("e5", "e5"), ("1e-3x", "1e-3x")):
        assert schema.StrictSafeLoader(f"v: {text}").get_single_data() == {"v": value}


def test_a_study_without_an_epoch_budget_allows_the_epochs_it_asks_for():
    """No budget.epochs: the most the file asks for, not a hidden 10 that refuses base.epochs: 15."""
    unbudgeted = variant("budget/epochs", None, delete=True)
    unbudgeted["base"]["epochs"] = 15
    assert parse_study(copy.deepcopy(unbudgeted), "a.yaml", "x").budget.epochs == 15
    unbudgeted["search"]["epochs"] = {"int": [10, 25]}
    assert parse_study(copy.deepcopy(unbudgeted), "a.yaml", "x").budget.epochs == 25
    del unbudgeted["budget"]
    unbudgeted["base"]["epochs"] = 3
    del unbudgeted["search"]["epochs"]
    spec = parse_study(unbudgeted, "a.yaml", "x")
    assert (spec.budget.epochs, spec.budget.max_params) == (3, None)
    with pytest.raises(ConfigError, match="'base.epochs': 15 is more than budget.epochs 5"):
        parse_study(variant("base/epochs", 15), "a.yaml", "x")  # a budget given is kept


def test_malformed_yaml_and_unknown_study(tmp_path: Path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("base: {model: [\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: malformed YAML at line"):
        load_spec(str(bad))
    with pytest.raises(UserError, match="^study no-such-study: no such study file; give a path, or one of: .*quickstart"):
        load_spec("no-such-study")  # from Python: no command-line flag named (it said --study)


def test_fingerprint_changes_with_the_file_not_with_formatting():
    a = parse_study(copy.deepcopy(GOOD), "a.yaml", "x")
    b = parse_study(yaml.safe_load(yaml.safe_dump(GOOD, default_flow_style=True, sort_keys=False)), "b.yaml", "x")
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


def test_trial_0_takes_what_the_base_leaves_to_a_default_where_a_draw_can_give_it():
    """Momentum searched, the base's left out: trial 0, labelled the base, trained a drawn 0.748
    and Nesterov on; it trains SGD's own 0.9 and no Nesterov now. A default no draw gives (no ema,
    against an ema range) is drawn, and `hpo check` says so."""
    raw = variant("base/optimizer", {"name": "sgd", "lr": 0.05})
    raw["search"] = {"optimizer.momentum": {"float": [0.5, 0.95]}, "optimizer.nesterov": {"choices": [True, False]},
                     "ema": {"float": [0.9, 0.99]}}
    spec = parse_study(raw, "defaults.yaml", "defaults")
    assert spec.space.base_params() == {"optimizer.momentum": 0.9, "optimizer.nesterov": False}
    assert [p.name for p in spec.space.left_to_the_sampler()] == ["ema"]
    assert spec.notes()[0].startswith("search.ema: the base leaves ema to its default, which this search cannot "
                                      "draw, so trial 0 takes a drawn ema and is not quite the base")
    raw["base"]["ema"] = 0.95
    assert parse_study(raw, "defaults.yaml", "defaults").space.base_params()["ema"] == 0.95


@pytest.mark.parametrize("search, base, message", [
    ({"int": [8, 24], "step": 4}, 10, "the base value 10 is off the grid of step 4 from 8: no draw gives it, and "
                                      "trial 0 must be one; make base 8 or 12, or change the step"),
])
def test_a_base_value_between_the_steps_of_its_range_is_refused(search, base, message):
    raw = variant("search/model.layers.4", search)
    raw["base"]["model"] = {"preset": "mnistnet2", "layers": [8, "M", 12, "M", base, "GAP", "H"]}
    with pytest.raises(ConfigError, match="search.model.layers.4': " + message):
        parse_study(raw, "grid.yaml", "grid")


def test_a_float_base_between_the_steps_is_refused_and_one_on_them_is_not():
    raw = variant("search/model.dropout", {"float": [0.0, 0.3], "step": 0.1})
    raw["base"]["model"] = {"preset": "mnistnet2", "dropout": 0.12}
    with pytest.raises(ConfigError, match="the base value 0.12 is off the grid of step 0.1 from 0: .* make base 0.1 "
                                          "or 0.2"):
        parse_study(raw, "grid.yaml", "grid")
    raw["base"]["model"]["dropout"] = 0.3  # 3 steps of 0.1, which floats make 0.30000000000000004
    assert parse_study(raw, "grid.yaml", "grid").space.base_params()["model.dropout"] == 0.3


def test_a_study_that_searches_nothing_says_every_trial_is_the_base():
    raw = variant("search", {}, delete=True)
    assert parse_study(raw, "nos.yaml", "nos").notes()[0].startswith("search: nothing is searched, so every trial "
                                                                     "trains the base again")


def test_a_searched_key_that_means_nothing_for_the_chosen_optimizer_or_schedule_is_not_drawn():
    """Momentum searched without a `when`, beside AdamW: it was drawn, shown with the trial and
    dropped from its config without a word, a dimension TPE tuned for nothing. It is drawn only
    where it means something now, as if it had the `when`; so is a step schedule's gamma."""
    raw = variant("base/optimizer", {"name": "adamw", "lr": 0.01})
    raw["base"]["schedule"] = {"name": "step", "gamma": 0.5}
    raw["search"] = {"optimizer.name": {"choices": ["sgd", "adamw"]}, "optimizer.momentum": {"float": [0.5, 0.95]},
                     "schedule.name": {"choices": ["step", "cosine"]}, "schedule.gamma": {"float": [0.1, 0.9]}}
    spec = parse_study(raw, "implied.yaml", "implied")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        cfg = spec.space.sample(trial)
        assert ("optimizer.momentum" in trial.params) == (cfg["optimizer"]["name"] == "sgd")
        assert ("schedule.gamma" in trial.params) == (cfg["schedule"]["name"] == "step")
        assert ("momentum" in cfg["optimizer"]) == (cfg["optimizer"]["name"] == "sgd")
        assert ("gamma" not in cfg["schedule"]) or cfg["schedule"]["name"] == "step"
        seen.add((cfg["optimizer"]["name"], cfg["schedule"]["name"]))
    assert len(seen) == 4


def test_a_schedule_setting_the_schedule_does_not_use_is_refused():
    """warmup_epochs under a step schedule trained without a warm-up and said nothing."""
    from hpo.config import parse_config  # noqa: PLC0415

    with pytest.raises(ConfigError, match="key 'schedule.warmup_epochs': applies to the cosine schedule only, not "
                                          "step: remove it, or give schedule.name: cosine"):
        parse_config({"model": {"preset": "linear"}, "schedule": {"name": "step", "warmup_epochs": 1}})
    assert parse_config({"model": {"preset": "linear"}, "schedule": {"name": "cosine", "gamma": 0.1}})  # its default
