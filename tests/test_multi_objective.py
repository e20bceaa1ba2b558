"""Multi-objective studies (`objectives: [accuracy, params]`): parsed strictly, created with two
directions, trained without pruning (each epoch's accuracy kept as a user attribute), told both
values, and shown and exported as a Pareto front.

The end-to-end test runs the real CLI on a 300-image subset for 2 epochs: seconds on a CPU. No
assertion depends on how fast the machine is or on which trials the sampler happens to propose.
"""

from __future__ import annotations

import copy
import io

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from rich.console import Console

from cli_helpers import hpo
from hpo import display, records
from hpo.config import load_config
from hpo.errors import ConfigError, UserError
from hpo.export import Exported
from hpo.objective import TrialHooks
from hpo.report import build_report, curves_figure
from hpo.runner import ensure_study
from hpo.schema import plural
from hpo.storage import Storage
from hpo.study import load_spec, parse_study

STUDY = {
    "name": "front",
    "base": {"model": {"family": "convnet", "layers": [4, "M", 8, "GAP", "H"], "batchnorm": False},
             "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}, "batch_size": 64, "epochs": 2,
             "data": {"train_subset": 300, "test_subset": 200}},
    "search": {"optimizer.lr": {"float": [0.005, 0.3], "log": True},
               "model.layers.0": {"int": [2, 32]},
               "model.layers.2": {"int": [2, 64]}},
    "budget": {"max_params": 3000, "epochs": 2},
    "objectives": ["accuracy", "params"],
    "sampler": {"name": "random", "seed": 0},
}
OVER_BUDGET = {"optimizer.lr": 0.05, "model.layers.0": 32, "model.layers.2": 64}  # about 19,000 parameters


def spec_with(**changes):
    raw = copy.deepcopy(STUDY)
    raw.update(copy.deepcopy(changes))
    return parse_study({k: v for k, v in raw.items() if v is not None}, "front.yaml", "front")


# ----------------------------------------------------------------- the study file


def test_two_objectives_mean_two_directions_and_no_pruner():
    spec = spec_with()
    assert spec.objectives == ("accuracy", "params") and spec.multi_objective
    assert spec.directions == ["maximize", "minimize"]
    assert spec.metric_names == ["test accuracy", "parameters"]
    assert spec.pruner.name == "none"  # absent: no pruner, not the single-objective default (median)
    assert spec_with(pruner={"name": "none"}).pruner.name == "none"
    assert spec_with(sampler={"name": "nsgaii", "seed": 0, "population_size": 8}).sampler.name == "nsgaii"
    assert spec_with(sampler={"name": "gp", "seed": 0}).sampler.name == "gp"
    single = spec_with(objectives=None)
    assert (single.objectives, single.directions, single.pruner.name) == (("accuracy",), ["maximize"], "median")
    assert load_spec("budget-pareto").objectives == ("accuracy", "params")
    assert load_spec("budget-pareto").pruner.name == "none"


@pytest.mark.parametrize("changes, key, words", [
    ({"pruner": {"name": "median"}}, "pruner", "Optuna does not prune multi-objective studies"),
    ({"pruner": {"name": "patient", "wrapped": "none", "patience": 2}}, "pruner", "remove the pruner"),
    ({"sampler": {"name": "cmaes"}}, "sampler.name", "cmaes handles one objective only"),
    ({"objectives": []}, "objectives", "or leave the key out"),
    ({"objectives": ["params"]}, "objectives", "accuracy comes first"),
    ({"objectives": ["accuracy", 7]}, "objectives.1", "unknown objective 7"),
    ({"objectives": {"accuracy": "max"}}, "objectives", "expected a list"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_what_optuna_cannot_do_with_two_objectives_fails_at_load(changes, key, words):
    with pytest.raises(ConfigError) as caught:
        spec_with(**changes)
    assert (caught.value.source, caught.value.key) == ("front.yaml", key)
    assert words in caught.value.reason


@pytest.mark.parametrize("sampler", [{"name": "tpe", "seed": 0, "multivariate": True, "n_startup_trials": 3},
                                     {"name": "nsgaii", "seed": 0, "population_size": 2}, {"name": "gp", "seed": 0,
                                     "n_startup_trials": 3}, {"name": "random", "seed": 0}, {"name": "qmc", "seed": 0}],
                         ids=lambda s: s["name"])
def test_each_allowed_sampler_proposes_for_two_objectives(sampler):
    spec = spec_with(sampler=sampler)
    study = optuna.create_study(directions=spec.directions, sampler=spec.make_sampler())
    for i in range(4):  # one proposal past each start-up phase (a GP fit is slow); made-up values, nothing trains
        t = study.ask()
        n = spec.space.n_params(spec.space.sample(t))
        study.tell(t, [0.5 + (i % 3) / 10, n] if n <= 3000 else None, state=None if n <= 3000 else TrialState.PRUNED)
    assert len(study.best_trials) >= 1


# ----------------------------------------------------------------- the front


def trial(acc: float, n: int, state=TrialState.COMPLETE) -> optuna.trial.FrozenTrial:
    values = [acc, n] if state == TrialState.COMPLETE else None
    return optuna.trial.create_trial(state=state, values=values, user_attrs={records.N_PARAMS: n,
                                                                             records.CONFIG: {"n": n}})


def test_the_pareto_front_is_optunas_most_accurate_first():
    trials = [trial(0.90, 500), trial(0.95, 900), trial(0.95, 1200), trial(0.93, 700), trial(0.89, 700),
              trial(0.97, 2000), trial(0.97, 2000), trial(0.80, 300), trial(0.99, 0, TrialState.PRUNED)]
    for number, t in enumerate(trials):
        t.number = number
    front = records.pareto_front(trials)
    assert [(t.values[0], t.values[1]) for t in front] == [(0.97, 2000), (0.97, 2000), (0.95, 900), (0.93, 700),
                                                           (0.90, 500), (0.80, 300)]
    assert [t.number for t in front][:2] == [5, 6]  # the same values: both kept, the earlier first
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.add_trials(trials)
    assert {t.number for t in study.best_trials} == {t.number for t in front}
    assert records.multi_objective(trials) and records.best_trial(trials).number == 5
    assert records.ranked(trials, 3) == front[:3]  # leaders of a front are members of it
    assert Exported("", trials=6, front=6).describe() == "the Pareto front's 6 configs"
    assert Exported("", trials=2, front=6).describe() == "the 2 most accurate of the Pareto front's 6 configs"
    assert not records.multi_objective([trial(0.9, 500, TrialState.PRUNED)])


def test_hooks_record_each_epoch_and_never_report_or_prune():
    spec = spec_with()
    study = optuna.create_study(directions=spec.directions)
    t = study.ask()
    hooks = TrialHooks(t, spec, epochs=2)
    for epoch, acc in ((1, 0.5), (2, 0.7), (1, 0.55), (2, 0.75)):  # epochs 1-2 replayed, as a resumed trial does
        hooks.report(epoch, acc)  # trial.report would raise NotImplementedError here
    frozen = study.trials[0]
    assert frozen.user_attrs[records.EPOCH_ACCURACY] == [0.55, 0.75] and frozen.intermediate_values == {}
    assert records.epochs(frozen) == {1: 0.55, 2: 0.75} and records.last_epoch(frozen) == (2, 0.75)


# ----------------------------------------------------------------- end to end, through the CLI


def test_a_tiny_multi_objective_study_runs_tells_both_values_and_exports_its_front(tmp_path):
    path = tmp_path / "front.yaml"
    path.write_text(yaml.safe_dump(STUDY, sort_keys=False))
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    storage = Storage.resolve(url)
    ensure_study(storage.open(heartbeat=None), load_spec(str(path)), storage)  # as hpo run would create it
    optuna.load_study(study_name="front", storage=url).enqueue_trial(OVER_BUDGET)  # trial 1: rejected, untrained

    done = hpo("run", "--study", str(path), "--trials", "4", "--storage", url, "--device", "cpu", "--quiet",
               cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Pareto front of front" in done.stdout and "hpo export --study front -o front-front.yaml" in done.stdout

    study = optuna.load_study(study_name="front", storage=url)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["test accuracy", "parameters"]
    trials = study.get_trials(deepcopy=False)
    c = records.count(trials)
    assert (c.complete, c.pruned, c.failed, c.running) == (4, 0, 0, 0), [records.kind(t) for t in trials]
    assert records.kind(trials[1]) == "rejected" and trials[1].state == TrialState.PRUNED
    for t in trials:
        if t.state != TrialState.COMPLETE:
            continue
        accuracy, n_params = t.values
        assert n_params == t.user_attrs[records.N_PARAMS] <= 3000
        assert accuracy == t.user_attrs[records.EPOCH_ACCURACY][-1] and len(t.user_attrs[records.EPOCH_ACCURACY]) == 2
        assert t.intermediate_values == {}, "a multi-objective trial reported to Optuna"

    front = records.pareto_front(trials)
    assert {t.number for t in front} == {t.number for t in study.best_trials}
    exported = hpo("export", "--study", "front", "--storage", url, "-o", "pareto.yaml", cwd=tmp_path)
    assert f"wrote the Pareto front's {len(front)} config" in exported.stderr, exported.stderr
    document = yaml.safe_load((tmp_path / "pareto.yaml").read_text())
    assert document["objectives"] == ["accuracy", "params"]
    assert [t["trial"] for t in document["trials"]] == [t.number for t in front]
    assert [t["accuracy"] for t in document["trials"]] == sorted((t.values[0] for t in front), reverse=True)
    assert all(len(t["test_accuracy_per_epoch"]) == 2 for t in document["trials"])
    assert load_config(tmp_path / "pareto.yaml").to_dict() == front[0].user_attrs[records.CONFIG]
    last = document["trials"][-1]["trial"]  # hpo train --trial N: another than the first
    assert load_config(tmp_path / "pareto.yaml", last).to_dict() == study.trials[last].user_attrs[records.CONFIG]

    listed = hpo("studies", "--storage", url, cwd=tmp_path)
    assert f"front: accuracy against size, a Pareto front of {plural(len(front), 'trial')}" in listed.stdout, \
        listed.stdout
    page = build_report(storage=storage.open_existing(), study_name="front")
    assert f"Pareto front: {len(front)} trials" in page and "could not compute" not in page
    curves = curves_figure(trials).data  # each trained trial's epochs, from its epoch_accuracy attribute
    assert sorted(len(line.x) for line in curves) == [2] * c.complete


def test_an_existing_study_cannot_change_its_number_of_objectives(tmp_path):
    storage = Storage.resolve(f"sqlite:///{tmp_path / 'db.sqlite'}")
    rdb = storage.open(heartbeat=None)
    ensure_study(rdb, spec_with(objectives=None, pruner="none"), storage)
    with pytest.raises(UserError, match=r"has one objective \(maximize\), but front.yaml asks for 2 objectives \("
                                        r"accuracy: maximize, params: minimize\); a study's objectives cannot change"):
        ensure_study(rdb, spec_with(), storage)
    ensure_study(rdb, spec_with(name="pareto"), storage)
    with pytest.raises(UserError, match=r"has 2 objectives \(maximize, minimize\), but front.yaml asks for one"):
        ensure_study(rdb, spec_with(name="pareto", objectives=None, pruner="none"), storage)


# ----------------------------------------------------------------- what a person sees


def text_of(renderable) -> str:
    out = Console(file=io.StringIO(), width=200, highlight=False)
    out.print(renderable)
    return out.file.getvalue()


def test_tables_and_lines_show_the_front_without_a_single_value(monkeypatch):
    trials = [trial(0.90, 500), trial(0.95, 900), trial(0.93, 1200), trial(0.5, 700, TrialState.RUNNING)]
    for number, t in enumerate(trials):
        t.number = number
    trials[3].user_attrs.update({records.EPOCH_ACCURACY: [0.41, 0.5], records.CONFIG: {"epochs": 3}})
    assert display.trial_line(trials[1]).startswith("trial    1 complete  95.00%  900 params  ")

    studies = text_of(display.studies_table({"front": trials, "plain": [optuna.trial.create_trial(value=0.8)]}))
    assert "front: accuracy against size, a Pareto front of 2 trials; best is its most accurate" in studies
    assert "95.00%" in studies and "80.00%" in studies

    shown = Console(file=io.StringIO(), width=200, highlight=False)
    monkeypatch.setattr(display, "console", shown)
    view = display.RunDisplay(spec_with(), 4, "sqlite:///x.db", 1, live=False)
    panel = text_of(view.panel(trials))
    assert "Pareto front so far: 2 trials; most accurate: 95.00% (trial 1, 900 params)" in panel
    assert "2/3" in panel and "50.00%" in panel  # the running trial's last epoch, from its recorded curve
    view.summary(trials)
    summary = shown.file.getvalue()
    assert "Pareto front of front: 2 trials" in summary and "93.00%" not in summary  # trial 2: dominated by 1
