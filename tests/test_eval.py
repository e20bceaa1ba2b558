"""`eval: val`: a study reports and prunes on held-out training images and touches the test set
once per trial, at its end; picking the best of many trials on the test set would flatter it."""

from __future__ import annotations

import os
import re

import optuna
import torch
import yaml

import cli_zygote
from hpo import records
from hpo.study import parse_study

STUDY = {
    "name": "heldout", "eval": "val",
    "base": {"model": {"preset": "linear"}, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
             "batch_size": 64, "epochs": 2, "data": {"train_subset": 600, "test_subset": 300}},
    "search": {"optimizer.lr": {"float": [0.005, 0.2], "log": True}},
    "budget": {"epochs": 2}, "pruner": "none",
}


def test_the_held_out_images_are_a_fixed_stratified_sixth_of_the_training_set(mnist):
    val = mnist.validation()
    again = mnist.validation()
    assert (len(val.train_y), len(val.test_y)) == (50_000, 10_000)
    assert torch.equal(val.test_y, again.test_y) and torch.equal(val.test_x, again.test_x)
    per_class = torch.bincount(val.test_y, minlength=10)
    expected = torch.bincount(mnist.train_y, minlength=10) / 6
    assert torch.all((per_class - expected).abs() <= 1), per_class
    # held out means gone from training: the two parts add up to the whole, class by class
    assert torch.equal(torch.bincount(val.train_y, minlength=10) + per_class, torch.bincount(mnist.train_y, minlength=10))
    assert torch.allclose(val.train_x.sum(0) + val.test_x.sum(0), mnist.train_x.sum(0), rtol=1e-4, atol=1e-2)


def test_a_val_study_reports_validation_and_records_the_test_set_once(tmp_path):
    path = tmp_path / "heldout.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    done = cli_zygote.run(["run", "--study", str(path), "--trials", "3", "--storage", url, "--device", "cpu", "--quiet"],
                          cwd=tmp_path, env={**os.environ, "HPO_OFFLINE": "1"}, changed=None, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    print(done.stdout)
    assert "val. acc." in done.stdout and "test acc." in done.stdout
    study = optuna.load_study(study_name="heldout", storage=url)
    assert study.metric_names == ["validation accuracy"]
    complete = [t for t in study.get_trials(deepcopy=False) if records.kind(t) == "complete"]
    assert len(complete) == 3
    # the dashboard's note gives the held-out count the trials scored on (it said 10,000 whatever it was)
    import optuna_dashboard  # noqa: PLC0415

    assert ("Epochs are reported on 300 of 10,000 training images held out of training"
            in optuna_dashboard.get_note(study))
    for t in complete:
        test = t.user_attrs[records.TEST_ACCURACY]
        assert 0.5 < test <= 1 and t.value == t.intermediate_values[2]
        # the value comes from 300 held-out images (test_subset applies to them), the test accuracy from
        # all 10,000 test images: 1/10,000 steps, which 300 images cannot give
        assert abs(t.value * 300 - round(t.value * 300)) < 1e-6
    assert any(round(t.user_attrs[records.TEST_ACCURACY] * 300, 6) % 1 for t in complete)
    # the export says which set each figure is from
    exported = cli_zygote.run(["export", "--study", "heldout", "--storage", url], cwd=tmp_path, env=dict(os.environ),
                              changed=None, timeout=120)
    first = yaml.safe_load(exported.stdout)["trials"][0]
    best = max(complete, key=lambda t: t.value)
    assert first["value"] == best.value and first["test_accuracy"] == best.user_attrs[records.TEST_ACCURACY]
    assert len(first["validation_accuracy_per_epoch"]) == 2 and "test_accuracy_per_epoch" not in first
    # hpo verify of it says what hpo train says: its seeds' test accuracy is not the trial's value
    (tmp_path / "best.yaml").write_text(exported.stdout)
    verified = cli_zygote.run(["verify", "--config", "best.yaml", "--seeds", "1", "--device", "cpu"], cwd=tmp_path,
                              env={**os.environ, "HPO_OFFLINE": "1"}, changed=None, timeout=300)
    assert verified.returncode == 0, verified.stderr
    assert (f"hpo verify: note: trial {best.number}'s value is its validation accuracy (eval: val: trained without "
            "10,000 held-out training images); this run trains on what the config says and scores the test set: "
            f"compare with the trial's test_accuracy, {100 * first['test_accuracy']:.2f}%, scored on all 10,000 test "
            "images, where this run tests on 300 of them") in verified.stderr, verified.stderr


def test_eval_takes_test_or_val_only():
    spec = parse_study({**STUDY, "eval": "test"}, "x.yaml", "x")
    assert spec.metric == "test accuracy"
    try:
        parse_study({**STUDY, "eval": "train"}, "x.yaml", "x")
    except Exception as error:  # noqa: BLE001
        assert "key 'eval'" in str(error) and "got 'train'" in str(error)
    else:
        raise AssertionError("eval: train was accepted")


def test_the_study_note_describes_your_own_data_and_model(tmp_path):
    """The dashboard's note of an eval: val study on 8x8 images in 3 classes: its base model as
    built for them, and the images its epochs are scored on (it described an MNIST model and
    10,000 held-out images)."""
    import numpy as np  # noqa: PLC0415

    from hpo.runner import study_note  # noqa: PLC0415

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "own.npz", x_train=rng.integers(0, 255, (600, 8, 8), dtype=np.uint8),
             y_train=np.arange(600) % 3, x_test=rng.integers(0, 255, (90, 8, 8), dtype=np.uint8),
             y_test=np.arange(90) % 3)
    base = {**STUDY["base"], "model": {"family": "mlp", "hidden": [16]},
            "data": {"dataset": "npz", "path": str(tmp_path / "own.npz")}}
    note = study_note(parse_study({**STUDY, "base": base}, "own.yaml", "own"), tmp_path)
    assert "mlp 64-16-3" in note and "784" not in note, note
    assert "Epochs are reported on 100 training images held out of training" in note, note


def test_the_live_panel_and_the_studies_list_say_validation_where_it_is():
    """The run's panel headed its running trials' column "last test acc." and `hpo studies` showed
    an eval: val study's best beside test accuracies, unmarked."""
    import io  # noqa: PLC0415

    from rich.console import Console  # noqa: PLC0415

    from hpo import display  # noqa: PLC0415

    def text_of(renderable) -> str:
        out = Console(file=io.StringIO(), width=200, highlight=False)
        out.print(renderable)
        return out.file.getvalue()

    running = optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING,
                                        user_attrs={records.EPOCH_ACCURACY: [0.41], records.CONFIG: {"epochs": 2}})
    done = optuna.trial.create_trial(value=0.95)
    for number, t in enumerate((running, done)):
        t.number = number
    for eval_on, header in (("val", "last val. acc."), ("test", "last test acc.")):
        spec = parse_study({**STUDY, "eval": eval_on}, "x.yaml", "x")
        panel = text_of(display.RunDisplay(spec, 4, "sqlite:///x.db", 1, live=False).panel([running, done]))
        assert header in panel and ("test acc." in panel) == (eval_on == "test"), panel
    listed = text_of(display.studies_table({"held": [done], "tested": [done]}, frozenset({"held"})))
    assert re.search(r"held .* 95\.00% val ", listed) and re.search(r"tested .* 95\.00% ", listed), listed
    assert "val: validation accuracy, on training images held out (eval: val)" in listed
    assert "val" not in text_of(display.studies_table({"tested": [done]}))
    # hpo studies NAME's headline likewise (its table below said "val. acc." under "best 95.00%")
    assert display.trials_line([done], held_out=True) == "1 trial (1 complete), best 95.00% val (trial 1)"
    assert display.trials_line([done]) == "1 trial (1 complete), best 95.00% (trial 1)"


def test_a_trial_line_is_one_line_and_says_what_it_does_not_know():
    """A failure reason of many lines (torch's size-mismatch error) broke `hpo studies NAME`'s one
    line per failure; a hand-made trial without epoch seconds showed s/epoch 0.00, its best epoch None."""
    from hpo import display  # noqa: PLC0415

    failed = optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs={
        records.FAIL_REASON: "RuntimeError: Error(s) in loading state_dict:\n\tsize mismatch for 0.weight"})
    failed.number = 3
    assert display.trial_line(failed) == "trial    3 failed    RuntimeError: Error(s) in loading state_dict: [...]"
    bare = optuna.trial.create_trial(value=0.5, user_attrs={records.BEST_EPOCH: None})
    bare.number = 0
    assert display.top_table([bare], 1, title="top 1 of x").rows == [("0", "50.00%", "-", "-", "-", "")]
    import io  # noqa: PLC0415

    from rich.console import Console  # noqa: PLC0415

    out = Console(file=io.StringIO(), width=100)  # a study name is no markup (one plain Optuna made)
    out.print(display.top_table([bare], 1, title="top 1 of evil-[red]markup[/red]"))
    assert "top 1 of evil-[red]markup[/red]" in out.file.getvalue()


def test_an_exported_val_trial_without_its_test_accuracy_is_still_labelled_validation(tmp_path):
    """The export chose its key trial by trial: in an `eval: val` study, a complete trial without a
    recorded test accuracy (hand-made, or recorded before hpo kept one) had its validation curve
    exported as `test_accuracy_per_epoch`."""
    from conftest import hpo_study  # noqa: PLC0415

    from hpo.export import export  # noqa: PLC0415

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    study = hpo_study(study_name="heldout", storage=url, direction="maximize")
    study.set_user_attr(records.SPEC, STUDY)
    for value, test in ((0.9, 0.88), (0.95, None)):
        trial = study.ask()
        trial.report(value, 1)
        trial.set_user_attr(records.CONFIG, {"model": {"preset": "linear"}})
        if test is not None:
            trial.set_user_attr(records.TEST_ACCURACY, test)
        study.tell(trial, value)
    exported = yaml.safe_load(export(study._storage, "heldout", top=2).text)
    assert [t["value"] for t in exported["trials"]] == [0.95, 0.9]
    assert all("test_accuracy_per_epoch" not in t and t["validation_accuracy_per_epoch"] for t in exported["trials"])
    assert [t["test_accuracy"] for t in exported["trials"]] == [None, 0.88]
