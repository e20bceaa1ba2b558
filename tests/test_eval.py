"""`eval: val`: a study reports and prunes on held-out training images and touches the test set
once per trial, at its end; picking the best of many trials on the test set would flatter it."""

from __future__ import annotations

import os

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


def test_eval_takes_test_or_val_only():
    spec = parse_study({**STUDY, "eval": "test"}, "x.yaml", "x")
    assert spec.metric == "test accuracy"
    try:
        parse_study({**STUDY, "eval": "train"}, "x.yaml", "x")
    except Exception as error:  # noqa: BLE001
        assert "key 'eval'" in str(error) and "got 'train'" in str(error)
    else:
        raise AssertionError("eval: train was accepted")
