"""The search service through the real CLI, on SQLite and on the real PostgreSQL server.

Each test runs `python -m hpo ...` in a subprocess against a tiny study (a 300-image
subset, 3 epochs, a 2-conv net), so a trial takes a fraction of a second.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path

import optuna
import pytest
from conftest import hpo_study
import yaml
from optuna.trial import TrialState

import cli_zygote
from hpo.errors import UserError
from hpo.records import count

TINY = {
    "name": "tiny",
    "base": {
        "model": {"family": "convnet", "layers": [4, "M", 8, "GAP", "H"], "batchnorm": False},
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "batch_size": 64,
        "epochs": 3,
        "data": {"train_subset": 300, "test_subset": 200},
    },
    "search": {
        "optimizer.lr": {"float": [0.0005, 0.5], "log": True},
        "model.layers.0": {"int": [2, 32]},
        "model.layers.2": {"int": [2, 64]},
    },
    "budget": {"max_params": 3000, "epochs": 3},
    "pruner": {"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
    "sampler": {"name": "random", "seed": 0},
}


def hpo(*args: str, cwd: Path, check: bool = True, timeout: float = 300,
        env: dict | None = None) -> subprocess.CompletedProcess:
    done = cli_zygote.run(list(args), cwd=cwd, env={**cli_env(), **(env or {})}, changed=env, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"hpo {' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def cli_env() -> dict:
    import os  # noqa: PLC0415

    return {**os.environ, "HPO_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def study_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY, sort_keys=False))
    return path


def trials_of(url: str, name: str = "tiny") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def run(study_file: Path, url: str, trials: int, *extra: str, check: bool = True):
    return hpo("run", "--study", str(study_file), "--trials", str(trials), "--storage", url, "--device", "cpu",
               "--quiet", *extra, cwd=study_file.parent, check=check)


# ----------------------------------------------------------------- on each storage


def test_run_prunes_keeps_the_budget_and_counts_exactly(study_file, storage_url):
    run(study_file, storage_url, 8)
    trials = trials_of(storage_url)
    c = count(trials)
    assert c.finished == 8 and c.running == 0 and c.failed == 0
    assert c.pruned >= 1, "the median pruner stopped no trial"
    # the random sampler draws widths up to 64: over 3,000 parameters half the time, yet the
    # budget sampler proposes only models that fit (an over-budget one is tested in test_budget_sampler)
    assert c.rejected == 0
    assert all(t.user_attrs["n_params"] <= 3000 for t in trials)
    assert max(t.user_attrs["n_params"] for t in trials) > 2000, "the proposals were squeezed far below the budget"
    for t in trials:
        if t.state == TrialState.COMPLETE:
            assert sorted(t.intermediate_values) == [1, 2, 3]
            assert t.value == t.intermediate_values[3]
            assert t.user_attrs["n_params"] <= 3000
            assert len(t.user_attrs["epoch_seconds"]) == 3 and t.user_attrs["device"] == "cpu"
            assert t.user_attrs["config"]["epochs"] == 3 and "torch" in t.user_attrs["versions"]
        if t.state == TrialState.PRUNED and t.intermediate_values:  # pruned, not rejected over the budget
            # each epoch's seconds and loss are written as a trial ends, pruned too
            assert len(t.user_attrs["epoch_seconds"]) == len(t.user_attrs["train_loss"]) == len(t.intermediate_values)
            assert max(t.intermediate_values) < 3, "a trial that trained every epoch was pruned"
    base = trials[0]
    assert base.user_attrs.get("base") is True
    assert base.params == {"optimizer.lr": 0.05, "model.layers.0": 4, "model.layers.2": 8}
    # each trial's checkpoint went as it ended, and the emptied folders with them
    assert not (study_file.parent / "checkpoints").exists()


def test_the_last_epoch_is_reported_but_never_pruned():
    """A pruner that stops every trial it may look at stops a 3-epoch trial after epoch 2, never
    after its third: by then it has trained in full, and is complete with its value (it used to
    be counted and listed as pruned)."""
    from hpo.objective import TrialHooks  # noqa: PLC0415
    from hpo.study import parse_study  # noqa: PLC0415

    spec = parse_study(TINY, "tiny.yaml", "tiny")
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    for epochs, stops_at in ((3, 1), (1, None)):
        hooks = TrialHooks(study.ask(), spec, epochs=epochs)
        for epoch in range(1, epochs + 1):
            if epoch == stops_at:
                with pytest.raises(optuna.TrialPruned):
                    hooks.report(epoch, 0.5)
                break
            hooks.report(epoch, 0.5)
        else:
            assert stops_at is None
    longer = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0,
                                                                                            n_warmup_steps=3))
    hooks = TrialHooks(longer.ask(), spec, epochs=3)
    hooks.report(1, 0.5)
    hooks.report(2, 0.5)  # warm-up: no look
    hooks.report(3, 0.5)  # its first look would prune, but it is the last epoch
    assert longer.trials[0].intermediate_values == {1: 0.5, 2: 0.5, 3: 0.5}


def test_rerun_continues_to_n_and_never_past_it(study_file, storage_url):
    run(study_file, storage_url, 4)
    before = len(trials_of(storage_url))
    again = run(study_file, storage_url, 4)
    assert "nothing to run" in again.stdout
    assert len(trials_of(storage_url)) == before
    more = run(study_file, storage_url, 6)
    assert count(trials_of(storage_url)).finished == 6
    printed = [int(n) for n in re.findall(r"^trial +(\d+) ", more.stdout, re.M)]
    assert printed and min(printed) >= before, f"--quiet printed the earlier trials again:\n{more.stdout}"


def test_two_concurrent_runs_stop_at_n(study_file, storage_url):
    run(study_file, storage_url, 1)  # create the study first, as a user's first run would
    results = []
    threads = [threading.Thread(target=lambda: results.append(run(study_file, storage_url, 7, check=False)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    trials = trials_of(storage_url)
    assert count(trials).finished == 7
    assert len({t.number for t in trials}) == len(trials)


def test_a_different_study_file_under_the_same_name_is_refused(study_file, storage_url):
    run(study_file, storage_url, 1)
    changed = dict(TINY, search={**TINY["search"], "optimizer.lr": {"float": [0.001, 0.4], "log": True}})
    study_file.write_text(yaml.safe_dump(changed, sort_keys=False))
    done = run(study_file, storage_url, 3, check=False)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "created from a different study file" in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert count(trials_of(storage_url)).finished == 1


def test_the_same_study_written_another_way_is_the_same_study(study_file, tmp_path):
    """tiny.yaml saying `name: tiny`, as its file name would, then not saying it: the second run was
    refused as "a different study file" (the fingerprint hashes the text as parsed). So was
    ./data/x.npz for data/x.npz. A real change is still refused."""
    from hpo.runner import same_search  # noqa: PLC0415

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    run(study_file, url, 1)
    study_file.write_text(yaml.safe_dump({k: v for k, v in TINY.items() if k != "name"}))  # and other key order
    assert run(study_file, url, 2).returncode == 0
    assert count(trials_of(url)).finished == 2
    own = {"base": {"data": {"dataset": "npz", "path": "data/x.npz"}}}
    assert same_search(own, {"name": "x", "base": {"data": {"dataset": "npz", "path": "./data/x.npz"}}})
    assert not same_search(own, {"base": {"data": {"dataset": "npz", "path": "data/y.npz"}}})
    # 1, 1.0 and true are one in Python, not to a factory of your own that tells them apart
    mine = {"base": {"model": {"module": "net:make", "act": 1}}}
    assert not any(same_search(mine, {"base": {"model": {"module": "net:make", "act": other}}}) for other in (True, 1.0))
    assert not same_search("a string", "a string")  # a study's stored file that is no mapping is never the same
    study_file.write_text(yaml.safe_dump({**TINY, "budget": {**TINY["budget"], "max_params": 2000}}))
    refused = run(study_file, url, 3, check=False)
    assert refused.returncode == 2 and "budget.max_params changed since" in refused.stderr, refused.stderr


# ----------------------------------------------------------------- PostgreSQL only


@pytest.mark.postgres
def test_three_workers_on_postgres_give_exactly_n(study_file, postgres_url):
    run(study_file, postgres_url, 9, "--workers", "3")
    trials = trials_of(postgres_url)
    assert count(trials).finished == 9
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    assert all(t.state != TrialState.RUNNING for t in trials)


def test_password_never_printed(study_file):
    done = hpo("studies", "--storage", "postgresql+psycopg://postgres:s3cret-pw@127.0.0.1:1/nowhere",
               cwd=study_file.parent, check=False)
    assert done.returncode == 2
    assert "s3cret-pw" not in done.stdout + done.stderr
    assert "***" in done.stderr and len(done.stderr.strip().splitlines()) == 1


# ----------------------------------------------------------------- export, train, optuna's own CLI


def test_export_retrains_to_the_same_accuracy(tmp_path):
    url = f"sqlite:///{tmp_path / 'export.db'}"
    study_file = tmp_path / "tiny.yaml"  # no pruner: every trial completes, so there are several to export
    study_file.write_text(yaml.safe_dump({**TINY, "pruner": {"name": "none"}}, sort_keys=False))
    run(study_file, url, 4)
    hpo("export", "--study", "tiny", "--top", "2", "-o", "best.yaml", "--storage", url, cwd=tmp_path)
    exported = yaml.safe_load((tmp_path / "best.yaml").read_text())
    first = exported["trials"][0]
    complete = [t for t in trials_of(url) if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value)
    assert exported["study"] == "tiny" and first["trial"] == best.number and first["value"] == best.value
    assert first["n_params"] == best.user_attrs["n_params"] and len(first["test_accuracy_per_epoch"]) == 3
    assert len(complete) == 4 and len(exported["trials"]) == 2
    # -o into folders not made yet makes them (as hpo report does)
    many = hpo("export", "--study", "tiny", "--top", "1000", "-o", "new/folder/all.yaml", "--storage", url, cwd=tmp_path)
    written = len(yaml.safe_load((tmp_path / "new/folder/all.yaml").read_text())["trials"])
    assert written == len(complete) and f"the {written} best trials' configs" in many.stderr, many.stderr
    assert first["torch_threads"] == best.user_attrs["torch_threads"] and "packed" not in first
    # with the trial's thread count, the same machine gives the trial's own digits
    trained = hpo("train", "--config", "best.yaml", "--device", "cpu", cwd=tmp_path,
                  env={"OMP_NUM_THREADS": str(first["torch_threads"])})
    final = re.search(r"final test accuracy ([\d.]+)%", trained.stdout).group(1)
    assert final == f"{100 * best.value:.2f}" and "note:" not in trained.stderr, (final, best.value, trained.stderr)
    piped = hpo("export", "--study", "tiny", "--top", "2", "-o", "-", "--storage", url, cwd=tmp_path)
    assert yaml.safe_load(piped.stdout)["trials"] == exported["trials"] and not (tmp_path / "-").exists()


def test_export_of_a_study_without_complete_trials_is_a_clear_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    hpo_study(study_name="empty", storage=url)
    done = hpo("export", "--study", "empty", "--storage", url, cwd=tmp_path, check=False)
    assert done.returncode == 2 and "no complete trial" in done.stderr and "Traceback" not in done.stderr
    assert f"to export yet; run it first: hpo run --study empty --trials N --storage {url}" in done.stderr
    study = optuna.load_study(study_name="empty", storage=url)
    study.set_user_attr("hpo_study_file", "studies/my empty.yaml")  # its name need not be its file's
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))
    study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, intermediate_values={1: 0.5}))
    # the hints open the storage this command was given, by a path that works from any folder: pasted
    # without it, they read (or made) ./hpo.db
    ran = hpo("export", "--study", "empty", "--storage", "sqlite:///empty.db", cwd=tmp_path, check=False)
    assert ran.returncode == 2 and (f"no complete trial to export: 1 pruned, 1 failed (hpo studies empty --storage "
                                    f"{url} says why)") in ran.stderr and "yet" not in ran.stderr, ran.stderr
    assert f"run more: hpo run --study 'studies/my empty.yaml' --trials N --storage {url}" in ran.stderr, ran.stderr
    reported = hpo("report", "--study", "empty", "--storage", url, cwd=tmp_path, check=False)
    assert f"(hpo studies empty --storage {url} says why)" in reported.stderr, reported.stderr
    plain = hpo("export", "--study", "empty", cwd=tmp_path, check=False, env={"HPO_STORAGE": url})
    assert "(hpo studies empty says why)" in plain.stderr, plain.stderr  # $HPO_STORAGE opens it for the hints too


def test_a_study_records_its_file_by_a_path_that_works_from_any_folder(study_file, tmp_path):
    """Run from its folder as `--study tiny.yaml`, a study recorded 'tiny.yaml', and the hints that
    name it (run more, from export, report and hpo studies NAME) failed from any other folder."""
    url = f"sqlite:///{tmp_path / 'rel.db'}"
    hpo("run", "--study", "tiny.yaml", "--trials", "1", "--storage", url, "--device", "cpu", "--quiet", cwd=tmp_path)
    assert optuna.load_study(study_name="tiny", storage=url).user_attrs["hpo_study_file"] == str(study_file)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shown = hpo("studies", "tiny", "--storage", url, cwd=elsewhere)
    assert f"study tiny from {study_file} in " in shown.stdout, shown.stdout


def test_export_and_report_replace_only_what_they_wrote(tmp_path):
    """Run from another folder, -o named a copy of the study file or the study's data by a path
    the study never recorded, and export or report wrote over it: any existing file is replaced
    only where it is an export (or a report) hpo wrote."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    study = hpo_study(study_name="s", storage=url, direction="maximize")
    study.set_user_attr("hpo_study_file", "/elsewhere/s.yaml")
    study.set_user_attr("hpo_spec", {"name": "s"})
    study.add_trial(optuna.trial.create_trial(value=0.9, user_attrs={"config": {"model": {"preset": "linear"}},
                                                                     "n_params": 7850}))
    (tmp_path / "copy.yaml").write_text("name: s\nbase: {}\n")
    (tmp_path / "data.npz").write_bytes(b"PK\x03\x04 not really")
    for command, target in (("export", "copy.yaml"), ("report", "data.npz"), ("export", "data.npz")):
        done = hpo(command, "--study", "s", "--storage", url, "-o", target, cwd=tmp_path, check=False)
        assert done.returncode == 2 and f"-o {target} exists and is not a file hpo {command} wrote" in done.stderr, \
            done.stderr
    assert (tmp_path / "copy.yaml").read_text() == "name: s\nbase: {}\n"
    for command, target in (("export", "best.yaml"), ("report", "r.html")):  # its own output: replaced, again
        for _ in range(2):
            assert hpo(command, "--study", "s", "--storage", url, "-o", target, cwd=tmp_path).returncode == 0
    assert hpo("export", "--study", "s", "--storage", url, "-o", "r.html", cwd=tmp_path, check=False).returncode == 2


def test_a_hint_gives_the_storage_as_a_path_from_anywhere_and_says_where_a_password_was_masked(tmp_path,
                                                                                              monkeypatch):
    from hpo.errors import password_note  # noqa: PLC0415
    from hpo.storage import Storage  # noqa: PLC0415

    monkeypatch.chdir(tmp_path)
    assert Storage.resolve("sqlite:///sub/x.db").hint_option() == f" --storage sqlite:///{tmp_path / 'sub/x.db'}"
    assert Storage.resolve("sqlite:////abs/x.db").hint_option() == " --storage sqlite:////abs/x.db"
    option = Storage.resolve("postgresql+psycopg://me:s3cret@db.example/hpo").hint_option()
    assert option == " --storage 'postgresql+psycopg://me:***@db.example/hpo'" and "s3cret" not in option
    assert password_note(option) == " (put your password in place of ***)"
    assert password_note(Storage.resolve("postgresql+psycopg://me@db.example/hpo").hint_option()) == ""


def test_studies_and_the_optuna_cli_read_our_storage(study_file, tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    run(study_file, url, 3)
    listed = hpo("studies", "--storage", url, cwd=tmp_path)
    assert re.search(r"tiny\s*│\s*3\s*│", listed.stdout), listed.stdout
    optuna_cli = Path(sys.executable).with_name("optuna")
    done = subprocess.run([str(optuna_cli), "studies", "--storage", url], capture_output=True, text=True, check=True)
    assert "tiny" in done.stdout
    best = subprocess.run([str(optuna_cli), "best-trial", "--study-name", "tiny", "--storage", url, "-f", "yaml"],
                          capture_output=True, text=True, check=True)
    assert "n_params" in best.stdout


def test_studies_shows_the_trials_queued_for_the_next_run():
    """A Ctrl-C or a crash re-queues a trial with its drawn values (WAITING): `hpo studies` says so,
    rather than showing a study with nothing running and fewer trials than were started."""
    import io  # noqa: PLC0415

    from rich.console import Console  # noqa: PLC0415

    from hpo import display  # noqa: PLC0415

    study = optuna.create_study(study_name="s", direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.9))
    study.enqueue_trial({"x": 1})
    study.enqueue_trial({"x": 2})
    out = Console(file=io.StringIO(), width=200, highlight=False)
    out.print(display.studies_table({"s": study.trials}))
    header, row = [line for line in out.file.getvalue().splitlines() if "study" in line or line.startswith("│ s ")]
    cells = dict(zip([c.strip() for c in header.split("┃")[1:-1]], [c.strip() for c in row.split("│")[1:-1]]))
    assert (cells["finished"], cells["trials by state"], cells["best"]) == ("1", "1 complete, 2 queued", "90.00%")


def test_a_run_beside_another_runs_running_trial_says_what_it_waits_for(study_file, tmp_path):
    """A trial another run holds (its worker alive, or gone) takes a slot until it ends or goes stale:
    the run says so as it starts, rather than waiting in silence. --timeout ends it on any machine."""
    url = f"sqlite:///{tmp_path / 'beside.db'}"
    run(study_file, url, 1)
    study = optuna.load_study(study_name="tiny", storage=url)
    held = study.ask()  # no heartbeat: it never goes stale, so the run's one slot stays taken
    study._storage.set_trial_user_attr(held._trial_id, "worker", "elsewhere:42")
    done = run(study_file, url, 2, "--timeout", "2")
    assert (f"trial {held.number} is running in another run (worker elsewhere:42); if that worker is gone, its "
            "trial is failed and re-run from its checkpoint once its heartbeat is 120 s old (--grace)") in done.stdout, \
        done.stdout
    assert count(trials_of(url)).finished == 1


def test_studies_fits_an_80_column_terminal_without_cutting_a_number_or_a_name():
    import io  # noqa: PLC0415

    from rich.console import Console  # noqa: PLC0415

    from hpo import display  # noqa: PLC0415

    trials = [optuna.trial.create_trial(value=0.9933, user_attrs={"n_params": 13_974})] * 3 + [
        optuna.trial.create_trial(state=TrialState.PRUNED), optuna.trial.create_trial(state=TrialState.FAIL)]
    out = Console(file=io.StringIO(), width=80, highlight=False)
    out.print(display.studies_table({"budget-14k-separable-deep": trials}))
    text = out.file.getvalue()
    assert max(map(len, text.splitlines())) <= 80 and "…" not in text, text
    assert "budget-14k-separable-deep" in text and "99.33%" in text and "13,974" in text, text


@pytest.mark.parametrize("width", [70, 80, 200])
def test_a_100_character_study_name_folds_and_the_numbers_stay(width):
    """A name as long as hpo allows pushed every number column off a 60-column terminal, and the
    trials by state off a piped one."""
    import io  # noqa: PLC0415

    from rich.console import Console  # noqa: PLC0415

    from hpo import display  # noqa: PLC0415

    name = "L" * 99 + "Z"
    trials = [optuna.trial.create_trial(value=0.9933, user_attrs={"n_params": 13_974})] * 3
    out = Console(file=io.StringIO(), width=width, highlight=False)
    out.print(display.studies_table({"short": trials, name: trials}))
    lines = out.file.getvalue().splitlines()
    assert max(map(len, lines)) <= width and all(line.rstrip().endswith(("┓", "┃", "┩", "│", "┘")) for line in
                                                 lines[1:]), "\n".join(lines)
    assert sum(line.count("99.33%") for line in lines) == 2 and sum("3 complete" in line for line in lines) == 2
    folded = "".join(line.split("│")[1].strip() for line in lines if line.startswith("│ L"))
    assert folded == name, lines


@pytest.mark.parametrize("width", [40, 50, 60, 70, 80])
def test_on_a_narrow_terminal_no_number_is_cut_and_what_does_not_fit_goes_under_the_table(width):
    """At 50 columns `hpo studies NAME` cut the accuracy to "91.6…" and the trial to "(bas…", and
    `hpo studies` lost its trials by state and right border off the terminal's edge."""
    import io  # noqa: PLC0415

    from rich.console import Console  # noqa: PLC0415

    from hpo import display, records  # noqa: PLC0415

    lr = optuna.distributions.FloatDistribution(1e-4, 2.0, log=True)
    trials = [optuna.trial.create_trial(value=0.916 - k / 100, params={"optimizer.lr": 0.05 + k, "model.layers.4": 12},
                                        distributions={"optimizer.lr": lr,
                                                       "model.layers.4": optuna.distributions.IntDistribution(4, 32)},
                                        user_attrs={records.N_PARAMS: 6544, records.BEST_EPOCH: 3,
                                                    records.BASE: k == 0, records.EPOCH_SECONDS: [0.5]})
              for k in range(2)] + [optuna.trial.create_trial(state=TrialState.FAIL)]
    for number, t in enumerate(trials):
        t.number = number
    out = Console(file=io.StringIO(), width=width, highlight=False)
    out.print(display.top_table(trials, 5, title="top 2 of quickstart"))
    out.print(display.studies_table({"quickstart": trials}))
    text = out.file.getvalue()
    assert max(map(len, text.splitlines())) <= width and "…" not in text, text
    assert "0 (base)" in text and "91.60%" in text and "90.60%" in text and "6,544" in text, text
    flat = " ".join(" ".join(line.strip(" │┃").split()) for line in text.splitlines())
    assert "2 complete, 1 failed" in flat and "optimizer.lr=0.05," in flat and "model.layers.4=12" in flat, text
    if width == 50:  # the configs and the states under the tables, a line each
        assert "trial 0 (base): optimizer.lr=0.05, model.layers.4=12 trial 1:" in flat, text
        assert "quickstart: 2 complete, 1 failed" in text, text
    if width == 40:  # no room for the numbers' columns: a line a trial, a line a study
        assert ("trial 0 (base): 91.60% test acc., best epoch 3, 6,544 params, 0.50 s/epoch; optimizer.lr=0.05, "
                "model.layers.4=12") in flat, text
        assert "quickstart: 2 finished, best 91.60% (trial 0, 6,544 params); 2 complete, 1 failed" in flat, text


def test_workers_auto_gives_each_core_a_worker_of_one_thread(study_file, tmp_path):
    from hpo.trainer import auto_workers  # noqa: PLC0415
    import torch  # noqa: PLC0415

    url = f"sqlite:///{tmp_path}/auto.db"
    expected = min(auto_workers(torch.device("cpu")), 4)  # never more workers than trials left
    out = run(study_file, url, 4, "--workers", "auto").stdout
    assert f"4 finished trials, {expected} worker{'s' if expected > 1 else ''}" in out
    trials = [t for t in trials_of(url) if "n_params" in t.user_attrs and not t.user_attrs.get("rejected")]
    cores = len(__import__("os").sched_getaffinity(0))
    assert trials and {t.user_attrs["torch_threads"] for t in trials} == {max(1, cores // expected)}


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
def test_output_to_a_full_disk_is_one_line_not_a_traceback(study_file, tmp_path):
    url = f"sqlite:///{tmp_path / 'full.db'}"
    run(study_file, url, 1)
    for args in (["studies"], ["export", "--study", "tiny"]):
        with open("/dev/full", "w") as full:
            done = subprocess.run([sys.executable, "-m", "hpo", *args, "--storage", url], stdout=full,
                                  stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=cli_env(), timeout=120)
        assert done.returncode == 1 and done.stderr.strip().splitlines() == [
            f"hpo {args[0]}: error: cannot write: No space left on device; free some space, or write elsewhere"], \
            done.stderr


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
@pytest.mark.parametrize("unbuffered", ["1", ""])
def test_help_and_version_to_a_full_disk_fail(tmp_path, unbuffered):
    # argparse drops a failed write of its own: these exited 0 with nothing written
    env = {**cli_env(), "PYTHONUNBUFFERED": unbuffered}
    for args in (["--version"], ["--help"], ["run", "--help"]):
        with open("/dev/full", "w") as full:
            done = subprocess.run([sys.executable, "-c", "import sys; from hpo.cli import main; sys.exit(main())",
                                   *args], stdout=full, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env,
                                  timeout=120)
        assert done.returncode == 1 and done.stderr.strip().splitlines() == [
            "hpo: error: cannot write the output: No space left on device"], (args, done.stderr)


def test_a_command_whose_reader_is_gone_stops_without_a_word(tmp_path):
    """`hpo export | head -1`, `hpo studies | less` then q: a command that prints stops as Unix
    tools do, the shell's 141 for a tool stopped by SIGPIPE, nothing on stderr. Written through
    rich, it exited 1 (rich's own choice); written plainly (export, report, --help), a BrokenPipeError
    traceback. Here the pipe's reading end is closed before the command starts."""
    import os  # noqa: PLC0415

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    study = hpo_study(study_name="tiny", storage=url, direction="maximize")
    study.add_trial(optuna.create_trial(value=0.9, user_attrs={"config": {"epochs": 1}}))
    for args in (["--help"], ["studies", "--storage", url], ["studies", "tiny", "--storage", url],
                 ["export", "--study", "tiny", "--storage", url]):
        read, write = os.pipe()
        os.close(read)
        try:
            done = subprocess.run([sys.executable, "-c", "import sys; from hpo.cli import main; sys.exit(main())",
                                   *args], stdout=write, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                                  env=cli_env(), timeout=120)
        finally:
            os.close(write)
        assert (done.returncode, done.stderr) == (141, ""), (args, done.stderr)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("stderr", ["apart", "into the pipe"])
def test_a_run_whose_reader_goes_away_trains_on(study_file, tmp_path, stderr):
    """`hpo run | head -1`, or a pager that quit: the broken pipe stopped the run as a Ctrl-C
    would, every trial it held failed as 'interrupted: Ctrl-C or SIGTERM', exit 1 and no word.
    With `2>&1 | head -1` the line that says so failed in its turn, and the run stopped so."""
    url = f"sqlite:///{tmp_path / 'pipe.db'}"
    proc = subprocess.Popen([sys.executable, "-m", "hpo", "run", "--study", str(study_file), "--trials", "3",
                             "--storage", url, "--device", "cpu"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE if stderr == "apart" else subprocess.STDOUT, cwd=tmp_path,
                            env=cli_env())
    first = proc.stdout.readline()
    proc.stdout.close()  # as `head -1` does
    _, err = proc.communicate(timeout=240)
    assert first.startswith(b"tiny from ") and proc.returncode == 0, err
    if stderr == "apart":
        assert err.decode().strip().splitlines() == [
            "hpo run: standard output was closed (| head, or a pager that quit); the run goes on without printing "
            "(Ctrl-C stops it; hpo studies shows it)"]
    c = count(trials_of(url))
    assert c.finished == 3 and c.failed == 0 and c.running == 0


def test_a_report_to_a_reader_that_goes_away_midway_is_not_a_success(tmp_path):
    """`hpo report -o - | head -c 1000000`: the report's one write of 5 MB came back short when
    the reader went, without an error, and a cut-off report ended with exit 0."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    study = hpo_study(study_name="tiny", storage=url, direction="maximize")
    study.add_trial(optuna.create_trial(value=0.9, user_attrs={"config": {"epochs": 1}}))
    proc = subprocess.Popen([sys.executable, "-m", "hpo", "report", "--study", "tiny", "--storage", url, "-o", "-"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, env=cli_env())
    assert len(proc.stdout.read(200_000)) == 200_000  # more than a pipe holds: the rest is still to come
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141 and err == b"", err


def test_a_command_started_with_standard_output_closed_runs_to_its_end(tmp_path):
    """`hpo studies >&-` (some cron jobs and supervisors): Python set sys.stdout to None, and each
    command that printed ended in a traceback; an export to a file was written, then the same."""
    import os  # noqa: PLC0415

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    study = hpo_study(study_name="tiny", storage=url, direction="maximize")
    study.add_trial(optuna.create_trial(value=0.9, user_attrs={"config": {"epochs": 1}}))
    for args in (["studies", "--storage", url], ["export", "--study", "tiny", "--storage", url, "-o", "best.yaml"]):
        done = subprocess.run([sys.executable, "-c", "import sys; from hpo.cli import main; sys.exit(main())", *args],
                              stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=cli_env(), timeout=120,
                              preexec_fn=lambda: os.close(1))
        assert done.returncode == 0 and "Traceback" not in done.stderr, (args, done.stderr)
    assert yaml.safe_load((tmp_path / "best.yaml").read_text())["trials"][0]["value"] == 0.9
    # and the processes it starts (hpo run's workers, the fork server) find them open too: /dev/null
    # opened by os.open is not inherited, and they started with them closed again
    probe = ("import os, subprocess, sys; from hpo.cli import standard_streams_open; standard_streams_open(); "
             "sys.exit(subprocess.run([sys.executable, '-c', 'import os; os.fstat(1); os.fstat(2)']).returncode)")
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=cli_env(), timeout=120,
                          preexec_fn=lambda: (os.close(1), os.close(2)))
    assert done.returncode == 0


def test_hpo_run_says_when_it_makes_the_databases_folder(tmp_path, monkeypatch):
    """A typo in the folder of an SQLite path started a new study in a new folder tree without a
    word; hpo run makes the folder (a new study may go anywhere) and says so."""
    from hpo.storage import Storage  # noqa: PLC0415

    monkeypatch.chdir(tmp_path)
    storage = Storage.resolve("sqlite:///runs/typo/hpo.db")
    assert storage.make_folder() == tmp_path / "runs" / "typo" and (tmp_path / "runs" / "typo").is_dir()
    assert storage.make_folder() is None  # there now: nothing to say
    assert Storage.resolve("postgresql+psycopg://u@h/db").make_folder() is None
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match=r"cannot make its folder .*file/sub"):
        Storage.resolve("sqlite:///file/sub/hpo.db").make_folder()


def test_a_ctrl_c_once_a_command_has_ended_changes_nothing(tmp_path):
    """A Ctrl-C in the second a run takes to exit after its summary broke into torch's exit
    handlers with a traceback, or turned the finished run's exit status into death by SIGINT.
    Once the command has said how it ended, SIGINT and SIGTERM are ignored (only for the `hpo`
    command itself: main() called with arguments, as a script or a test does, changes no handler)."""
    probe = ("import signal, sys; from hpo.cli import main\n"
             "def ignored(): return [signal.getsignal(s) is signal.SIG_IGN for s in (signal.SIGINT, signal.SIGTERM)]\n"
             "main(sys.argv[1:]); print(*ignored()); code = main(); print(*ignored(), code)")
    done = subprocess.run([sys.executable, "-c", probe, "studies", "--storage", f"sqlite:///{tmp_path / 'none.db'}"],
                          capture_output=True, text=True, cwd=tmp_path, env=cli_env(), timeout=120)
    assert done.stdout.split() == ["False", "False", "True", "True", "2"], done.stderr


def test_piped_hpo_studies_keeps_each_long_name_on_one_line(tmp_path):
    """Off a terminal `hpo studies` drew at 120 columns, and a name of 78 characters folded mid-word:
    `hpo studies | grep NAME` found nothing."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    name = "tiny-mlp-study-with-a-rather-long-name-for-testing-narrow-terminals-" + "x" * 30
    hpo_study(study_name=name, storage=url, direction="maximize").add_trial(
        optuna.create_trial(value=0.9, user_attrs={"config": {}, "n_params": 1234}))
    out = hpo("studies", "--storage", url, cwd=tmp_path).stdout
    line = next(line for line in out.splitlines() if name in line)
    assert "90.00%" in line and "1,234" in line and "1 complete" in line, out


def test_export_ranks_among_the_trials_that_carry_a_config(tmp_path):
    """A best trial without a config (added by hand, or by plain Optuna) was ranked first, then
    skipped: "no complete trial to export" for a study with one to export; one whose config was no
    mapping ended in a traceback."""
    from hpo.export import export  # noqa: PLC0415

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    study = hpo_study(study_name="mixed", storage=url, direction="maximize")
    study.add_trial(optuna.create_trial(value=0.99))
    study.add_trial(optuna.create_trial(value=0.98, user_attrs={"config": "not a mapping"}))
    study.add_trial(optuna.create_trial(value=0.9, user_attrs={"config": {"epochs": 1}}))
    exported = yaml.safe_load(export(optuna.storages.RDBStorage(url), "mixed", top=2).text)
    assert [t["trial"] for t in exported["trials"]] == [2]


def test_export_over_a_file_reads_a_recorded_study_file_that_is_no_mapping(tmp_path):
    """A study whose recorded study file is no mapping (a string, or base: 3) ended `hpo export -o`
    and `hpo report -o` in an AttributeError traceback, where `hpo studies` read it fine."""
    from conftest import hpo_study  # noqa: PLC0415

    from hpo import records  # noqa: PLC0415
    from hpo.cli import check_not_the_studys_own  # noqa: PLC0415
    from hpo.errors import UserError  # noqa: PLC0415

    study = hpo_study(study_name="ns", storage=f"sqlite:///{tmp_path / 'db.sqlite'}")
    out = tmp_path / "out.yaml"
    out.write_text("mine: 1\n")
    for spec in ("a string", {"base": 3}, {"base": {"data": "x"}}):
        study.set_user_attr(records.SPEC, spec)
        with pytest.raises(UserError, match="exists and is not a file hpo export wrote"):
            check_not_the_studys_own(out, study._storage, "ns", "best.yaml")
