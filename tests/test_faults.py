"""Faults inside a trial, through the real CLI: each becomes a FAIL trial with its reason, and
the worker goes on with the next trial until the study has its N finished trials.

Divergence and the time limit come from real configs (a huge learning rate, the full
60,000 images); the CUDA out-of-memory error is injected on the CPU by tests/inject/
sitecustomize.py, loaded into every `hpo` process through PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from optuna.trial import TrialState

from cli_helpers import TINY, hpo, run_args, trials_of, write_study
from hpo.records import count

INJECT = Path(__file__).parent / "inject"


def study(tmp_path: Path, name: str, **changes) -> Path:
    """TINY without pruning or parameter budget (every trial trains), with `changes` on top."""
    plain = {"pruner": {"name": "none"}, "budget": {"epochs": 3},
             "search": {"optimizer.lr": {"float": [0.01, 0.1], "log": True}}}
    return write_study(tmp_path, name, **{**plain, **changes})


def run(path: Path, url: str, trials: int, env: dict | None = None):
    return hpo(*run_args(path, url, trials), cwd=path.parent, env=env)


def failed(trials):
    return [t for t in trials if t.state == TrialState.FAIL]


def test_nan_loss_fails_the_trial_as_diverged_and_the_worker_goes_on(tmp_path):
    # a learning rate of 1e6 takes an MLP's loss to NaN within two epochs (a linear model survives it)
    base = {"model": {"family": "mlp", "hidden": [16]}, "optimizer": {"name": "sgd", "lr": 1e6, "momentum": 0.9},
            "batch_size": 64, "epochs": 2, "data": {"train_subset": 300, "test_subset": 200}}
    path = study(tmp_path, "diverge", base=base, budget={"epochs": 2},
                 search={"optimizer.lr": {"choices": [1e6, 0.05]}})
    url = f"sqlite:///{tmp_path / 'faults.db'}"
    done = run(path, url, 2)
    assert done.returncode == 0, done.stderr
    trials = trials_of(url, "diverge")
    bad = failed(trials)
    assert bad and trials[0] in bad, "the base trial (lr 1e6) did not fail"
    for t in bad:
        assert t.user_attrs["fail_reason"].startswith("diverged: training loss is nan"), t.user_attrs
        assert t.params["optimizer.lr"] == 1e6
    assert count(trials).finished == 2
    after = [t for t in trials if t.state == TrialState.COMPLETE and t.number > bad[0].number]
    assert after and after[0].user_attrs["worker"] == bad[0].user_attrs["worker"], "the same worker did not go on"


def test_diverged_trials_are_search_outcomes_until_the_space_gives_nothing_else(tmp_path):
    """Five errors in a row stop a worker; diverged trials do not count toward them (a learning rate
    too high is what a search finds out), only toward a longer streak, whose message says what to narrow."""
    from hpo.worker import MAX_CONSECUTIVE_DIVERGED, MAX_CONSECUTIVE_FAILURES  # noqa: PLC0415

    base = {"model": {"family": "mlp", "hidden": [16]}, "optimizer": {"name": "sgd", "lr": 1e8, "momentum": 0.9},
            "batch_size": 64, "epochs": 2, "data": {"train_subset": 300, "test_subset": 100}}
    path = study(tmp_path, "blowup", base=base, budget={"epochs": 2}, sampler={"name": "random", "seed": 0},
                 search={"optimizer.lr": {"float": [1e7, 1e9], "log": True}})
    url = f"sqlite:///{tmp_path / 'faults.db'}"
    done = run(path, url, 2)
    assert done.returncode == 1
    trials = trials_of(url, "blowup")
    assert MAX_CONSECUTIVE_DIVERGED > MAX_CONSECUTIVE_FAILURES
    assert len(failed(trials)) == len(trials) == MAX_CONSECUTIVE_DIVERGED, [t.user_attrs for t in trials]
    assert all(t.user_attrs["fail_reason"].startswith("diverged: ") for t in trials)
    assert f"{MAX_CONSECUTIVE_DIVERGED} trials in a row diverged, stopping" in done.stderr, done.stderr
    assert "narrow its learning rates" in done.stderr and "Traceback" not in done.stderr


def test_cuda_out_of_memory_fails_the_trial_frees_its_memory_and_the_worker_goes_on(tmp_path):
    path = study(tmp_path, "oom")
    url = f"sqlite:///{tmp_path / 'faults.db'}"
    log = tmp_path / "oom.log"
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(INJECT), os.environ.get("PYTHONPATH")])),
           "HPO_TEST_OOM_AT_RUN": "2", "HPO_TEST_OOM_LOG": str(log)}
    done = run(path, url, 3, env=env)
    assert done.returncode == 0, done.stderr
    trials = trials_of(url, "oom")
    bad = failed(trials)
    assert [t.number for t in bad] == [1], [(t.number, t.state) for t in trials]
    assert bad[0].user_attrs["fail_reason"].startswith("out_of_memory: CUDA out of memory"), bad[0].user_attrs
    assert count(trials).finished == 3
    assert all(t.state == TrialState.COMPLETE for t in trials if t.number > 1)
    runs = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["run"] for r in runs] == [1, 2, 3, 4] and len({r["pid"] for r in runs}) == 1, runs
    assert runs[2]["oom_memory_freed"] is True, "the failed trial's memory was still held when the next began"


def test_out_of_memory_in_hpo_train_is_one_line_that_says_what_to_lower(tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text("model: {preset: linear}\nepochs: 1\ndata: {train_subset: 600, test_subset: 200}\n")
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(INJECT), os.environ.get("PYTHONPATH")])),
           "HPO_TEST_OOM_AT_RUN": "1"}
    done = hpo("train", "--config", str(config), "--device", "cpu", cwd=tmp_path, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hpo train: out of memory on cpu: CUDA out of memory"), lines
    assert "lower batch_size or the model's widths in" in lines[0] and "cfg.yaml" in lines[0]


def test_trial_seconds_from_the_study_file_stops_a_trial_with_its_reason(tmp_path):
    # each trial's clock advances 1 s at every look (tests/inject), whatever the machine's speed:
    # every trial passes its 3 s limit at its third step, and the worker goes on until five have
    # failed in a row
    path = study(tmp_path, "slow", budget={"epochs": 2, "trial_seconds": 3},
                 base={**TINY["base"], "epochs": 2, "data": {"train_subset": 2000, "test_subset": 200}})
    url = f"sqlite:///{tmp_path / 'faults.db'}"
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(INJECT), os.environ.get("PYTHONPATH")])),
           "HPO_TEST_CLOCK_STEP": "1"}
    done = run(path, url, 1, env=env)
    assert done.returncode == 1, done.stderr
    assert ("5 trials failed in a row, stopping; last: time_limit: ran past budget.trial_seconds=3"
            in done.stderr), done.stderr
    trials = trials_of(url, "slow")
    bad = failed(trials)
    assert len(bad) == 5, "the worker did not go on after the first trial hit its limit"
    for t in bad:
        assert t.user_attrs["fail_reason"] == "time_limit: ran past budget.trial_seconds=3", t.user_attrs
        assert not t.intermediate_values, "a trial over its time limit trained a whole epoch"
    assert count(trials).complete == 0


def test_a_read_only_database_is_one_line_not_an_outage(tmp_path):
    path = study(tmp_path, "readonly")
    url = f"sqlite:///{tmp_path / 'faults.db'}"
    assert run(path, url, 1).returncode == 0
    db = tmp_path / "faults.db"
    # root writes through file modes, so the file is made immutable instead
    if subprocess.run(["chattr", "+i", str(db)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported here")
    try:
        done = hpo(*run_args(path, url, 2, "--db-patience", "600"), cwd=tmp_path, timeout=120)
    finally:
        subprocess.run(["chattr", "-i", str(db)], check=True)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "is read-only" in lines[0] and "Traceback" not in done.stderr
    assert count(trials_of(url, "readonly")).finished == 1


def test_a_cpu_allocation_failure_is_recorded_as_out_of_memory():
    import torch  # noqa: PLC0415

    from hpo.objective import fail_reason  # noqa: PLC0415

    with pytest.raises(RuntimeError) as caught:  # the real allocator's error: far more than any machine has
        torch.empty(2**62, dtype=torch.uint8)
    assert fail_reason(caught.value).startswith("out_of_memory: "), fail_reason(caught.value)
    assert fail_reason(RuntimeError("mat1 and mat2 shapes cannot be multiplied")).startswith("RuntimeError: ")


def test_what_hpo_run_prints_keeps_brackets_and_names_the_runs_storage(monkeypatch):
    """A failure's reason ("[enforce fail at ...]" from torch's allocator), a path or a URL with
    [brackets] print as written, not as rich markup; the export hint opens the run's --storage."""
    import io  # noqa: PLC0415

    import optuna  # noqa: PLC0415
    from rich.console import Console  # noqa: PLC0415

    from hpo import display, records  # noqa: PLC0415
    from hpo.study import load_spec  # noqa: PLC0415

    shown = Console(file=io.StringIO(), width=300, highlight=False)
    monkeypatch.setattr(display, "console", shown)
    reason = "RuntimeError: [enforce fail at alloc_cpu.cpp:127] err == 0. [bold]DefaultCPUAllocator[/]"
    failed = optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={records.FAIL_REASON: reason})
    done = optuna.trial.create_trial(value=0.9, user_attrs={records.N_PARAMS: 100, records.CONFIG: {}})
    failed.number, done.number = 0, 1
    url = "sqlite:////tmp/[runs]/hpo.db"
    view = display.RunDisplay(load_spec("quickstart"), 2, url, 1, live=False, storage_option=f" --storage '{url}'")
    with view:
        view.update([failed])
    view.summary([failed, done])
    out = shown.file.getvalue()
    assert f"in {url}: 2 finished trials" in out, out
    assert f"trial    0 failed    {reason}" in out, out
    assert f"export the best config with: hpo export --study quickstart -o best.yaml --storage '{url}'" in out, out
    another = optuna.trial.create_trial(value=0.8, user_attrs={records.N_PARAMS: 90, records.CONFIG: {}})
    another.number = 2
    view.summary([failed, done, another])  # --top as many as the table shows: here the 2 complete
    assert "export the best configs with: hpo export --study quickstart --top 2 -o best.yaml" in shown.file.getvalue()


def test_the_runs_export_hint_exports_what_its_table_shows(monkeypatch):
    """The table showed the top 5 and the hint under it exported 3."""
    import io  # noqa: PLC0415

    import optuna  # noqa: PLC0415
    from rich.console import Console  # noqa: PLC0415

    from hpo import display, records  # noqa: PLC0415
    from hpo.study import load_spec  # noqa: PLC0415

    trials = []
    for number in range(7):
        t = optuna.trial.create_trial(value=0.5 + number / 100, user_attrs={records.N_PARAMS: 90, records.CONFIG: {}})
        t.number = number
        trials.append(t)
    shown = Console(file=io.StringIO(), width=200)
    monkeypatch.setattr(display, "console", shown)
    display.RunDisplay(load_spec("quickstart"), 7, "sqlite:///hpo.db", 1, live=False).summary(trials)
    out = shown.file.getvalue()
    assert "top 5 of quickstart" in out and "hpo export --study quickstart --top 5 -o best.yaml" in out, out
