"""`hpo check`: study files read and checked as `hpo run` would before it creates anything, and
what each would run printed; it writes nothing, fetches nothing, and says what is wrong in a line."""

from __future__ import annotations

import re

import pytest

from cli_helpers import TINY, write_study
from hpo.cli import main
from hpo.study import load_spec


def check(*args: str, capsys) -> tuple[int, str, str]:
    rc = main(["check", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_one_study_in_full_without_writing_or_fetching_anything(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_study(tmp_path, "tiny", search={**TINY["search"], "optimizer.name": {"choices": ["sgd", "adam"]},
                                                 "optimizer.momentum": {"float": [0.5, 0.95],
                                                                        "when": {"optimizer.name": "sgd"}}})
    empty = tmp_path / "data"  # no MNIST here: hpo run would fetch it, hpo check only says so
    rc, out, err = check(str(path), "--data-dir", str(empty), capsys=capsys)
    assert rc == 0 and err == "", err
    spec = load_spec(path)
    base = spec.space.n_params(spec.base)
    smallest, largest = spec.space.smallest_model(), spec.space.largest_model()
    assert smallest < base < 3000 < largest  # the widths' ends on both sides of the budget
    assert f"{base:,} params, 3 epochs, batch 64, sgd lr 0.05" in out
    assert f"{smallest:,} to {largest:,} params" in out and "budget 3,000" in out and "shrunk onto it" in out
    # the hint looks where this check looked: pasted without --data-dir it fetched into ~/.cache/hpo
    assert (f"mnist: not in {empty / 'mnist'} yet; hpo run fetches it there (or hpo data --dataset mnist "
            f"--data-dir {empty} now)") in out, out
    assert re.search(r"optimizer\.momentum +│ float \[0\.5, 0\.95\] +│ optimizer\.name = sgd", out), out
    assert re.search(r"optimizer\.name +│ sgd \| adam", out) and "searched: 5 parameter(s)" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"]  # no database, lock, data or artifacts


def test_the_data_is_looked_for_and_the_subsets_checked_against_it(tmp_path, monkeypatch, capsys, mnist_dir):
    monkeypatch.chdir(tmp_path)
    fits = write_study(tmp_path, "fits")
    rc, out, _ = check(str(fits), "--data-dir", str(mnist_dir.parent), capsys=capsys)
    assert rc == 0 and "60,000 training images (300 trained on) and 10,000 test images (200 scored on), 10 classes of 1x28x28" in out, out
    rc, out, _ = check(str(write_study(tmp_path, "val", eval="val")), "--data-dir", str(mnist_dir.parent), capsys=capsys)
    assert rc == 0 and "60,000 training images (10,000 held out to score the epochs on, 200 of them used; 300 " \
                       "trained on) and 10,000 test images (scored once, at the end)" in out, out
    # eval: val holds 10,000 of the 60,000 training images out: 55,000 is more than the 50,000 left
    over = write_study(tmp_path, "over", eval="val", base={**TINY["base"], "data": {"train_subset": 55000}})
    rc, out, err = check(str(over), "--data-dir", str(mnist_dir.parent), capsys=capsys)
    assert rc == 2 and out == ""
    assert f"hpo check: error: {over}: key 'base.data.train_subset': 55,000 is more than the 50,000 train" in err, err


def test_several_files_a_row_each_and_every_bad_one_a_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    good = write_study(tmp_path, "good")
    bad = write_study(tmp_path, "bad", budget={"max_params": 3000, "epochs": 2})  # base trains 3 epochs
    config = tmp_path / "config.yaml"
    config.write_text("model: {preset: linear}\n")
    rc, out, err = check(str(good), "quickstart", str(bad), str(config), "nosuch", "--data-dir", str(tmp_path / "d"),
                         capsys=capsys)
    assert rc == 2
    assert re.search(r"│ good +│ +3 │", out) and re.search(r"│ quickstart +│", out) and "bad" not in out, out
    lines = err.splitlines()
    assert lines[0] == f"hpo check: error: {bad}: key 'base.epochs': 3 is more than budget.epochs 2; lower it or raise " \
                       "the budget"
    assert lines[1].startswith(f"hpo check: error: {config}: a training config") and "hpo train --config" in lines[1]
    assert lines[2].startswith("hpo check: error: nosuch: no such study file; give a path, or one of: ")
    assert lines[3:] == ["hpo check: 3 of 5 study file(s) cannot run as written"]


@pytest.mark.parametrize("pruner, epochs, said", [
    ({"name": "median", "n_warmup_steps": 3}, 3, "pruner median: its first look at a trial, after epoch 3 "
                                                 "(n_warmup_steps 3), comes no earlier than the last"),
    ({"name": "successive_halving", "min_resource": 5}, 3, "pruner successive_halving: its first look at a trial, "
                                                           "after epoch 5 (min_resource 5, and its rates)"),
    # the first rung is min_resource x reduction_factor ^ min_early_stopping_rate: epoch 4
    ({"name": "successive_halving", "min_resource": 1, "reduction_factor": 4, "min_early_stopping_rate": 1}, 3,
     "after epoch 4 (min_resource 1, and its rates)"),
    ({"name": "patient", "patience": 1, "wrapped": {"name": "percentile", "percentile": 25, "n_warmup_steps": 4}}, 3,
     "pruner percentile: its first look at a trial, after epoch 4"),
    # the trials' own epochs count, not the budget's cap
    ({"name": "median", "n_warmup_steps": 2}, 2, "after epoch 2 (n_warmup_steps 2), comes no earlier than the last "
                                                 "(trials train at most 2 epochs)"),
    ({"name": "hyperband"}, 1, "pruner hyperband: a trial trains 1 epoch, which leaves no epoch before its last"),
    ({"name": "median", "n_warmup_steps": 2}, 3, None),  # it can stop a trial after epoch 2 of 3
    ({"name": "successive_halving"}, 3, None),           # min_resource auto
    ({"name": "none"}, 1, None),
])
def test_a_pruner_that_can_stop_nothing_early_is_noted(tmp_path, monkeypatch, capsys, pruner, epochs, said):
    monkeypatch.chdir(tmp_path)
    path = write_study(tmp_path, "p", pruner=pruner, base={**TINY["base"], "epochs": epochs})
    rc, out, _ = check(str(path), "--data-dir", str(tmp_path), capsys=capsys)
    notes = [line for line in out.splitlines() if line.startswith("note:")]
    assert rc == 0
    if said:
        assert len(notes) == 1 and notes[0].startswith(f"note: {path}: pruner ") and said in notes[0], out
    else:
        assert notes == [], out
    assert f"at most {epochs} a trial" + (" (budget.epochs 3)" if epochs < 3 else "") in out


def test_a_budget_every_model_fits_is_noted(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc, out, _ = check(str(write_study(tmp_path, "b", budget={"max_params": 100_000, "epochs": 3})),
                       "--data-dir", str(tmp_path), capsys=capsys)
    largest = load_spec(tmp_path / "b.yaml").space.largest_model()
    assert rc == 0 and f"budget.max_params 100,000: every model the search can build fits it (the largest has " \
                       f"{largest:,} parameters): it rejects and shrinks nothing" in out, out


def test_check_shows_the_base_recipe_whole(capsys):
    """The base line stopped at the learning rate: a schedule, augmentation or ema left it unsaid
    what trial 0 trains."""
    assert main(["check", "budget-14k-sgd"]) == 0
    base = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("base"))
    assert "sgd lr 0.28 momentum 0.91 weight_decay 0.00022, cosine schedule, augment rotate 10.7 affine_degrees " \
           "2.7 translate 0.073, label_smoothing 0.009 (trial 0)" in base, base


@pytest.mark.parametrize("argv", [["check"], ["check", "--data-dir"]])
def test_check_needs_a_study(argv, capsys):
    assert main(argv) == 2 and "hpo check: error:" in capsys.readouterr().err


@pytest.mark.parametrize("base_model, search, smallest, largest", [
    # a smaller kernel leaves larger maps for the first linear layer: the low end builds the larger model
    ({"preset": "lenet5"}, {"model.kernel": {"int": [3, 5]}}, 44_426, 60_074),
    ({"preset": "mnistnet2", "batchnorm": False}, {"model.batchnorm": {"choices": [False, True]}}, 7_272, 7_416),
])
def test_the_sizes_a_search_reaches_are_measured_not_assumed(tmp_path, monkeypatch, capsys, base_model, search,
                                                             smallest, largest):
    monkeypatch.chdir(tmp_path)
    path = write_study(tmp_path, "s", base={"model": base_model, "epochs": 3}, search=search,
                       budget={"max_params": (smallest + largest) // 2, "epochs": 3})
    rc, out, err = check(str(path), "--data-dir", str(tmp_path), capsys=capsys)  # the budget fits the smaller
    assert rc == 0 and f"{smallest:,} to {largest:,} params" in out and "note:" not in out, out + err



def test_an_error_about_the_data_names_the_study_too(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.npz").write_text("not a zip")
    path = write_study(tmp_path, "own", base={"model": {"preset": "linear"}, "data": {"dataset": "npz", "path": "bad.npz"}})
    rc, out, err = check(str(path), "quickstart", capsys=capsys)
    assert rc == 2 and err.startswith(f"hpo check: error: {path}: {tmp_path / 'bad.npz'}"), err


def test_a_path_given_without_its_yaml_is_found(tmp_path, monkeypatch, capsys):
    (tmp_path / "mine").mkdir()
    write_study(tmp_path / "mine", "tiny")
    monkeypatch.chdir(tmp_path)
    rc, out, err = check("mine/tiny", capsys=capsys)
    assert rc == 0 and out.startswith("study tiny from mine/tiny.yaml"), err
    assert load_spec("mine/tiny").source == "mine/tiny.yaml"
    rc, _, err = check("mine/other", capsys=capsys)
    assert rc == 2 and err.startswith("hpo check: error: mine/other: no such study file")


def test_on_a_narrow_terminal_the_searched_keys_fold_and_are_never_cut():
    """At 50 columns model.layers.4 and model.layers.5 were both 'model.layers…', and the data's
    checksums lost their digest and their 'ok'."""
    import io  # noqa: PLC0415

    from rich.console import Console  # noqa: PLC0415

    from hpo import display  # noqa: PLC0415

    out = Console(file=io.StringIO(), width=50, highlight=False)
    out.print(display.search_table(load_spec("quickstart").space.params))
    out.print(display.checksum_table({"checksums": {"train-images-idx3-ubyte": ("sha256", "ab" * 32)}}))
    text = out.file.getvalue()
    assert "…" not in text and max(map(len, text.splitlines())) <= 50, text
    cells = "".join(line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│"))
    assert "model.layers.4" in cells and "model.layers.5" in cells, text
    assert "ok" in text and "".join(line.split("│")[3].strip() for line in text.splitlines()
                                    if line.count("│") == 5) == "ab" * 32, text


@pytest.mark.parametrize("width", [40, 60, 80, 120])
def test_several_study_files_on_a_narrow_terminal_lose_no_number(width):
    """hpo check of several files cut its columns to 'search…' and '6,5…' at 80 columns, and to
    nothing at all beside a long study name."""
    import io  # noqa: PLC0415

    from rich.console import Console  # noqa: PLC0415

    from hpo import display  # noqa: PLC0415

    rows = [{"name": "a-very-long-study-name-for-narrow-terminal-tests-0123456789", "searched": 23,
             "base_params": 44_426, "budget": 8000, "max_epochs": 15, "eval_on": "val", "pruner_name": "median",
             "sampler_name": "tpe"}, {"name": "quickstart", "searched": 7, "base_params": 6_544, "budget": None,
                                      "max_epochs": 3, "eval_on": "test", "pruner_name": "none", "sampler_name": "tpe"}]
    out = Console(file=io.StringIO(), width=width, highlight=False)
    out.print(display.studies_check_table(rows))
    text = out.file.getvalue()
    assert "…" not in text and max(map(len, text.splitlines())) <= width, text
    flat = " ".join(line.strip(" │┃") for line in text.splitlines())
    for value in ("44,426", "6,544", "8,000", "median", "quickstart", "23", "15"):
        assert value in flat, (value, text)
