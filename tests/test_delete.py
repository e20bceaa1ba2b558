"""`hpo delete` and `hpo studies NAME`: a study looked into, and a study removed for good, with the
config files it put in the artifact store, on SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import re
import io
import sys
from pathlib import Path

import optuna
import pytest
from conftest import hpo_study
import yaml
from optuna.trial import TrialState, create_trial

from hpo import cli
from test_service import TINY, hpo, run, trials_of


def store_files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


@pytest.fixture
def two_studies(tmp_path, storage_url):
    """Studies 'tiny' (2 finished trials) and 'other' (1) in one storage, with their config files."""
    for name, trials in (("tiny", 2), ("other", 1)):
        run(write_study(tmp_path, name), storage_url, trials)
    store = tmp_path / ("studies-artifacts" if storage_url.startswith("sqlite") else "hpo-artifacts")
    return storage_url, store


def write_study(folder: Path, name: str, **changes) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**TINY, "name": name, "pruner": {"name": "none"}, **changes}, sort_keys=False))
    return path


def test_delete_asks_then_removes_the_study_and_only_its_files(tmp_path, two_studies):
    url, store = two_studies
    before = store_files(store)
    assert len(before) == 3, before  # each complete trial's config

    elsewhere = hpo("delete", "--study", "tiny", "--storage", url, "--artifacts", str(tmp_path / "other-store"),
                    cwd=tmp_path, check=False)
    assert "note: the study recorded 2 config files, 2 of them not in" in elsewhere.stderr, elsewhere.stderr
    assert "--artifacts DIR" in elsewhere.stderr and "config file" not in elsewhere.stderr.splitlines()[-1]
    asked = hpo("delete", "--study", "tiny", "--storage", url, cwd=tmp_path, check=False)
    assert asked.returncode == 2 and "add --yes" in asked.stderr and "2 trials (2 complete)" in asked.stderr
    assert set(optuna.get_all_study_names(url)) == {"tiny", "other"} and store_files(store) == before

    done = hpo("delete", "--study", "tiny", "--yes", "--storage", url, cwd=tmp_path)
    assert "deleted study 'tiny'" in done.stdout and "2 config files" in done.stdout, done.stdout
    assert optuna.get_all_study_names(url) == ["other"]
    kept = store_files(store)
    assert len(kept) == 1 and kept < before
    other_ids = {meta.artifact_id for t in trials_of(url, "other")
                 for meta in optuna.artifacts.get_all_artifact_meta(t, storage=optuna.storages.get_storage(url))}
    assert kept == other_ids

    again = hpo("delete", "--study", "tiny", "--yes", "--storage", url, cwd=tmp_path, check=False)
    assert again.returncode == 2 and "no study named 'tiny'" in again.stderr and "other" in again.stderr


def test_a_changed_study_file_runs_afresh_after_delete(tmp_path):
    """The refusal of a changed study file names `hpo delete`, and after it the same command runs."""
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    run(write_study(tmp_path, "tiny"), url, 1)
    changed = write_study(tmp_path, "tiny", search={**TINY["search"], "optimizer.lr": {"float": [0.001, 0.4]}})
    refused = run(changed, url, 2, check=False)
    assert refused.returncode == 2 and "hpo delete --study tiny" in refused.stderr, refused.stderr
    assert "(an earlier version of" in refused.stderr and ": search.optimizer.lr changed since)" in refused.stderr
    hpo("delete", "--study", "tiny", "--yes", "--storage", url, cwd=tmp_path)
    run(changed, url, 2)
    assert [t.number for t in trials_of(url)] == [0, 1]


def test_a_running_trial_stops_delete_unless_forced(tmp_path, storage_url):
    study = hpo_study(study_name="busy", storage=storage_url, direction="maximize")
    study.add_trial(create_trial(value=0.5))
    study.ask()  # a trial some worker is training, or was when it was killed
    refused = hpo("delete", "--study", "busy", "--yes", "--storage", storage_url, cwd=tmp_path, check=False)
    assert refused.returncode == 2 and "1 trial running" in refused.stderr and "--force" in refused.stderr
    assert optuna.get_all_study_names(storage_url) == ["busy"]
    forced = hpo("delete", "--study", "busy", "--yes", "--force", "--storage", storage_url, cwd=tmp_path)
    assert "1 running" in forced.stdout and optuna.get_all_study_names(storage_url) == []


def test_force_never_deletes_a_study_whose_worker_still_beats(tmp_path, storage_url):
    """--force is for a trial whose worker is gone: a heartbeat within the grace period means a run
    is training it, and deleting under it crashed that run."""
    import sqlalchemy  # noqa: PLC0415

    rdb = optuna.storages.RDBStorage(storage_url, heartbeat_interval=30, grace_period=120)
    study = hpo_study(study_name="live", storage=rdb, direction="maximize")
    trial = study.ask()
    rdb.record_heartbeat(trial._trial_id)
    refused = hpo("delete", "--study", "live", "--yes", "--force", "--storage", storage_url, cwd=tmp_path, check=False)
    assert refused.returncode == 2 and "is being trained: trial 0's worker sent a heartbeat" in refused.stderr, \
        refused.stderr
    assert optuna.get_all_study_names(storage_url) == ["live"]
    shown = hpo("studies", "live", "--storage", storage_url, cwd=tmp_path).stdout
    assert "trial    0 running" in shown and "no heartbeat" not in shown, shown
    engine = sqlalchemy.create_engine(storage_url)
    with engine.begin() as conn:  # its worker went silent 10 minutes ago: killed, or its machine lost
        past = conn.execute(sqlalchemy.text("SELECT heartbeat FROM trial_heartbeats")).scalar()
        if isinstance(past, str):  # SQLite hands back text
            past = dt.datetime.fromisoformat(past)
        conn.execute(sqlalchemy.text("UPDATE trial_heartbeats SET heartbeat = :t"),
                     {"t": past - dt.timedelta(minutes=10)})
    engine.dispose()
    # hpo studies NAME says so: it listed the dead worker's trial as running, and nothing more
    shown = " ".join(hpo("studies", "live", "--storage", storage_url, cwd=tmp_path).stdout.split())
    assert re.search(r"trial 0 running .*; no heartbeat for 6\d\d s: its worker may be gone", shown), shown
    hpo("delete", "--study", "live", "--yes", "--force", "--storage", storage_url, cwd=tmp_path)
    assert optuna.get_all_study_names(storage_url) == []


@pytest.mark.parametrize("undone", [1, 99])
def test_a_deletion_that_a_run_undoes_is_tried_again_then_reported(tmp_path, monkeypatch, undone):
    """Optuna's delete_study rolls back without a word when a row of the study is written
    meanwhile (PostgreSQL's foreign keys, a live run's report): seen as a `hpo run` that went on
    and finished the study it was told was deleted. Here each of the first `undone` deletions is
    rolled back so."""
    from hpo import delete  # noqa: PLC0415

    url = f"sqlite:///{tmp_path / 'undo.db'}"
    hpo_study(study_name="busy", storage=url).add_trial(create_trial(value=0.5))
    rdb = optuna.storages.RDBStorage(url)
    calls = []
    real = rdb.delete_study

    def rolled_back(study_id):
        calls.append(study_id)
        if len(calls) > undone:
            real(study_id)

    monkeypatch.setattr(rdb, "delete_study", rolled_back)
    monkeypatch.setattr(delete.time, "sleep", lambda s: None)
    if undone < delete.TRIES:
        delete.delete_study(rdb, "busy")
        assert optuna.get_all_study_names(url) == [] and len(calls) == undone + 1
    else:
        with pytest.raises(delete.UserError, match="study 'busy' could not be deleted: a run wrote to it during "
                                                   f"each of {delete.TRIES} tries; stop the runs that use it"):
            delete.delete_study(rdb, "busy")
        assert optuna.get_all_study_names(url) == ["busy"] and len(calls) == delete.TRIES


class Terminal(io.StringIO):
    """Standard input as a terminal that answers `text`."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("answer, deleted", [("y\n", True), ("yes\n", True), ("n\n", False), ("\n", False),
                                             ("", False)])
def test_the_terminal_prompt(tmp_path, monkeypatch, capsys, answer, deleted):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    hpo_study(study_name="s", storage=url).add_trial(create_trial(value=0.5))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdin", Terminal(answer))
    code = cli.main(["delete", "--study", "s", "--storage", url])
    out = capsys.readouterr()
    assert "delete study 's' in sqlite:///" in out.out and "[y/N]" in out.out
    assert (code, optuna.get_all_study_names(url)) == ((0, []) if deleted else (1, ["s"]))
    assert deleted or "nothing deleted" in out.err


def test_delete_and_studies_create_no_database(tmp_path):
    for args in (["delete", "--study", "x", "--yes"], ["studies", "x"]):
        done = hpo(*args, "--storage", f"sqlite:///{tmp_path / 'none.db'}", cwd=tmp_path, check=False)
        assert done.returncode == 2 and "no database at" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_studies_name_shows_the_best_the_running_and_why_trials_failed(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = hpo_study(study_name="s", storage=url, direction="maximize")
    study.set_user_attr("hpo_study_file", "studies/s.yaml")
    for number, value in enumerate((0.91, 0.95, 0.93)):
        study.add_trial(create_trial(value=value, params={"lr": 0.1 * (number + 1)},
                                     distributions={"lr": optuna.distributions.FloatDistribution(0.01, 1)},
                                     user_attrs={"n_params": 1000 + number, "epoch_seconds": [1.0, 3.0]}))
    for reason in ("diverged: the loss is nan at epoch 2", "out_of_memory: 2.0 GiB asked"):
        study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": reason}))
    running = study.ask()
    study._storage.set_trial_user_attr(running._trial_id, "config", {"epochs": 5})
    study._storage.set_trial_user_attr(running._trial_id, "worker", "host:123")
    running.report(0.8, 1)
    running.report(0.85, 2)

    shown = hpo("studies", "s", "--top", "2", "--storage", url, cwd=tmp_path).stdout
    assert "study s from studies/s.yaml in sqlite:///" in shown
    assert "6 trials (3 complete, 2 failed, 1 running), best 95.00% (trial 1)" in shown
    assert "top 2 of s" in shown
    rows = [line for line in shown.splitlines() if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in rows] == ["1", "2"]  # the two best, best first
    assert "hpo export --study s --top 2 -o best.yaml --storage sqlite:///" in shown  # as many as shown
    assert "trial    5 running   after epoch 2/5 (85.00%), worker host:123" in shown
    assert "trial    3 failed    diverged: the loss is nan at epoch 2" in shown
    assert "trial    4 failed    out_of_memory" in shown


def test_a_run_without_a_complete_trial_ends_in_a_line_not_an_empty_table(capsys):
    from hpo import display  # noqa: PLC0415

    trials = [create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": "diverged: nan"}),
              create_trial(state=TrialState.PRUNED, intermediate_values={1: 0.2})]
    display.print_best("s", trials, top=5, held_out=False, multi=False)
    out = capsys.readouterr().out
    assert out.strip() == "no trial of s completed: 2 trials (1 pruned, 1 failed)" and "export" not in out


def test_a_study_optuna_made_itself_is_named_not_read_as_hpos(tmp_path):
    """Plain Optuna's study in the same database: its values are no accuracies (here minimized), its
    trials carry no config. It was listed with a 'best' that ignored its direction, and export said
    it had 'no complete trial ... 3 complete'."""
    url = f"sqlite:///{tmp_path / 'mixed.db'}"
    hpo_study(study_name="ours", storage=url, direction="maximize").add_trial(
        create_trial(value=0.9, user_attrs={"n_params": 100}))
    plain = optuna.create_study(study_name="plain-min", storage=url)  # minimize, as Optuna's default
    for x in (0.68, 0.39):
        plain.add_trial(create_trial(value=x, params={"x": x},
                                     distributions={"x": optuna.distributions.FloatDistribution(0, 1)}))
    listed = hpo("studies", "--storage", url, cwd=tmp_path)
    assert "ours" in listed.stdout and listed.stdout.strip().splitlines()[-1] == \
        "also here, not made by hpo run (hpo dashboard shows them): plain-min"
    line = ("error: study 'plain-min' was not made by hpo run (it records no study file): hpo reads and deletes only "
            "its own studies; hpo dashboard shows any Optuna study, and Optuna's own command removes one: optuna "
            "delete-study --study-name plain-min --storage URL")
    for args in (["studies", "plain-min"], ["export", "--study", "plain-min"], ["report", "--study", "plain-min"],
                 ["delete", "--study", "plain-min", "--yes"]):
        done = hpo(*args, "--storage", url, cwd=tmp_path, check=False)
        assert done.returncode == 2 and done.stderr.strip() == f"hpo {args[0]}: {line}", done.stderr
    assert sorted(optuna.get_all_study_names(url)) == ["ours", "plain-min"]
    (tmp_path / "plain-min.yaml").write_text(yaml.safe_dump({**TINY, "name": "plain-min"}))  # a name clash in hpo run
    clash = hpo("run", "--study", str(tmp_path / "plain-min.yaml"), "--trials", "1", "--storage", url, cwd=tmp_path,
                check=False)
    assert clash.returncode == 2 and "study 'plain-min' in" in clash.stderr and "was not made by hpo run (plain " \
        "Optuna's" in clash.stderr and "optuna delete-study --study-name plain-min" in clash.stderr, clash.stderr
    (tmp_path / "plain-min.yaml").unlink()
    assert not list(tmp_path.glob("*.yaml")) and not list(tmp_path.glob("*.html"))


def test_top_without_a_study_name_is_refused_not_ignored(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    hpo_study(study_name="ours", storage=url, direction="maximize")
    done = hpo("studies", "--top", "3", "--storage", url, cwd=tmp_path, check=False)
    assert done.returncode == 2 and done.stderr.strip() == (
        "hpo studies: error: --top 3 shows the best trials of one study: give its name, hpo studies NAME --top 3")


def test_a_database_damaged_past_its_header_is_one_line_naming_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'hurt.db'}"
    study = hpo_study(study_name="s", storage=url, direction="maximize")
    for i in range(200):  # pages enough that one past the header can be spoiled
        study.add_trial(create_trial(value=i / 200, user_attrs={"n_params": 100, "config": {"note": "x" * 200}}))
    with open(tmp_path / "hurt.db", "r+b") as handle:
        handle.seek(4096 * 3)
        handle.write(b"\xff" * 4096)
    done = hpo("studies", "--storage", url, cwd=tmp_path, check=False)
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        f"hpo studies: error: the database {url} is damaged (database disk image is malformed); restore it from a "
        "backup, or point --storage at another one"], done.stderr


def test_delete_removes_its_checkpoints_and_not_those_of_its_namesake_elsewhere(tmp_path):
    """Two databases with a study 's' each, run from one folder: their trials' checkpoints are apart
    (one resumed the other's, or started afresh over its progress), and deleting one removes its
    own, which no retry will resume, and leaves the other's."""
    from hpo.checkpoints import checkpoint_path  # noqa: PLC0415
    from hpo.storage import Storage  # noqa: PLC0415

    paths = {}
    for db in ("a", "b"):
        url = f"sqlite:///{tmp_path / db}.db"
        hpo_study(study_name="s", storage=url, direction="maximize")
        storage = Storage.resolve(url)
        rdb = storage.open_existing()
        study_id = rdb.get_study_id_from_name("s")
        key = storage.checkpoint_key(study_id, rdb.get_study_user_attrs(study_id).get("hpo_uid", ""))
        paths[db] = checkpoint_path(tmp_path / "checkpoints", "s", 0, key)
        paths[db].parent.mkdir(parents=True, exist_ok=True)
        paths[db].write_bytes(b"an unfinished trial's epochs")
    assert paths["a"] != paths["b"]
    done = hpo("delete", "--study", "s", "--yes", "--storage", f"sqlite:///{tmp_path / 'a.db'}", cwd=tmp_path)
    assert "and 1 checkpoint from checkpoints" in done.stdout, done.stdout
    assert not paths["a"].exists() and paths["b"].exists()


def test_the_checkpoint_key_is_the_databases_and_the_studys():
    from hpo.storage import Storage  # noqa: PLC0415

    key = Storage.resolve("sqlite:///runs/hpo.db").checkpoint_key
    assert key(1) == Storage.resolve(f"sqlite:///{Path('runs/hpo.db').resolve()}").checkpoint_key(1)
    assert len({key(1), key(2), Storage.resolve("sqlite:///other.db").checkpoint_key(1)}) == 3
    pg = "postgresql+psycopg://hpo:{}@db:5432/hpo"
    assert Storage.resolve(pg.format("secret")).checkpoint_key(1) == Storage.resolve(pg.format("other")).checkpoint_key(1)
    # a study's random id: the same key whatever the URL's spelling (a run through localhost neither
    # resumed nor `hpo delete` removed the checkpoints a run through 127.0.0.1 left), and its own
    uid = "0123456789abcdef" * 2
    spellings = ("postgresql+psycopg://postgres@127.0.0.1:5432/hpo", "postgresql+psycopg://postgres@localhost/hpo")
    assert len({Storage.resolve(url).checkpoint_key(1, uid) for url in spellings}) == 1
    assert Storage.resolve(spellings[0]).checkpoint_key(1, uid) != Storage.resolve(spellings[0]).checkpoint_key(1, "f" * 32)


def test_a_study_made_again_after_a_delete_has_checkpoints_of_its_own(tmp_path):
    """SQLite gives a study made again after a delete the id the deleted one had: keyed by the
    database and the id alone, its trial 0 resumed the deleted study's trial 0 from its checkpoint
    (25 epochs in, on data perhaps since changed). Each study is made with a random id as well."""
    from hpo.runner import ensure_study  # noqa: PLC0415
    from hpo.storage import Storage  # noqa: PLC0415
    from hpo.study import load_spec  # noqa: PLC0415

    storage = Storage.resolve(f"sqlite:///{tmp_path / 'again.db'}")
    spec = load_spec(str(write_study(tmp_path, "again")))
    keys, ids = [], []
    for _ in range(2):
        rdb = storage.open(heartbeat=None)
        study_id = ensure_study(rdb, spec, storage)
        ids.append(study_id)
        keys.append(storage.checkpoint_key(study_id, rdb.get_study_user_attrs(study_id)["hpo_uid"]))
        optuna.delete_study(study_name="again", storage=rdb)
    assert ids[0] == ids[1] and keys[0] != keys[1]


def test_a_study_made_before_studies_had_an_id_gets_one_on_its_next_run(tmp_path):
    from hpo.runner import ensure_study  # noqa: PLC0415
    from hpo.storage import Storage  # noqa: PLC0415
    from hpo.study import load_spec  # noqa: PLC0415

    storage = Storage.resolve(f"sqlite:///{tmp_path / 'old.db'}")
    spec = load_spec(str(write_study(tmp_path, "old")))
    rdb = storage.open(heartbeat=None)
    study_id = ensure_study(rdb, spec, storage)
    import sqlalchemy  # noqa: PLC0415

    engine = sqlalchemy.create_engine(storage.url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("DELETE FROM study_user_attributes WHERE key = 'hpo_uid'"))  # an earlier hpo's
    engine.dispose()
    assert "hpo_uid" not in rdb.get_study_user_attrs(study_id)
    ensure_study(rdb, spec, storage)
    first = rdb.get_study_user_attrs(study_id)["hpo_uid"]
    ensure_study(rdb, spec, storage)
    assert isinstance(first, str) and len(first) == 32 and rdb.get_study_user_attrs(study_id)["hpo_uid"] == first


def test_export_and_report_refuse_to_write_over_the_studys_own_file_or_data(tmp_path):
    url = f"sqlite:///{tmp_path / 'own.db'}"
    study = hpo_study(study_name="own", storage=url, direction="maximize")
    (tmp_path / "own.yaml").write_text("name: own\n")
    (tmp_path / "data.npz").write_bytes(b"the only copy of someone's images")
    study.set_user_attr("hpo_study_file", str(tmp_path / "own.yaml"))
    study.set_user_attr("hpo_spec", {"base": {"data": {"dataset": "npz", "path": "data.npz"}}})
    study.add_trial(create_trial(value=0.9, user_attrs={"n_params": 100, "config": {"model": {"preset": "linear"}}}))
    for command, target, what in (("export", "own.yaml", "the study file"), ("report", "data.npz", "the data file")):
        done = hpo(command, "--study", "own", "--storage", url, "-o", target, cwd=tmp_path, check=False)
        assert done.returncode == 2 and f"-o {target} is {what} study 'own' was made from; writing there would " \
                                          "destroy it" in done.stderr, done.stderr
    assert (tmp_path / "own.yaml").read_text() == "name: own\n"
    assert (tmp_path / "data.npz").read_bytes() == b"the only copy of someone's images"


@pytest.mark.postgres
def test_hpo_run_refuses_a_postgresql_database_whose_tables_are_in_another_schema(tmp_path, postgres_url):
    """A program that keeps its tables in a schema of its own (app.customers) was taken for an
    empty database, and Optuna's 13 tables were added beside them."""
    import sqlalchemy  # noqa: PLC0415

    engine = sqlalchemy.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("CREATE SCHEMA app; CREATE TABLE app.customers (id int)"))
    done = hpo("run", "--study", str(write_study(tmp_path, "s")), "--trials", "1", "--storage", postgres_url,
               "--device", "cpu", cwd=tmp_path, check=False)
    assert done.returncode == 2 and "holds another program's tables (app.customers) and none of Optuna's" in \
        done.stderr, done.stderr
    with engine.connect() as conn:
        assert sqlalchemy.inspect(conn).get_table_names() == []
    engine.dispose()


def test_a_retried_trials_copy_of_its_config_file_is_counted_once(tmp_path):
    """A trial queued again carries its first attempt's artifact: the prompt said 5 config files and
    the deletion removed 3."""
    import warnings  # noqa: PLC0415

    from hpo import delete  # noqa: PLC0415

    url = f"sqlite:///{tmp_path / 'retry.db'}"
    store = optuna.artifacts.FileSystemArtifactStore(str(tmp_path))
    study = hpo_study(study_name="s", storage=url, direction="maximize")
    (tmp_path / "cfg.yaml").write_text("model: {preset: linear}\n")
    trial = study.ask()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(tmp_path / "cfg.yaml"),
                                         study_or_trial=trial)
    study.tell(trial, state=TrialState.FAIL)
    first = study.trials[0]
    study.add_trial(create_trial(state=TrialState.WAITING, system_attrs=dict(first.system_attrs)))  # its retry
    found = delete.find(optuna.storages.get_storage(url), "s")
    assert len(found.artifacts) == 1


def test_an_exported_trial_recorded_with_a_key_its_schedule_ignores_trains(tmp_path):
    """A cosine trial that inherited a step schedule's gamma (recorded so before such keys were
    dropped) exported as it trained, not as a config `hpo train` refuses."""
    from hpo.config import load_config  # noqa: PLC0415

    url = f"sqlite:///{tmp_path / 'old.db'}"
    config = {"model": {"preset": "linear"}, "schedule": {"name": "cosine", "gamma": 0.65, "step_size": 2},
              "optimizer": {"name": "adam", "lr": 0.01, "momentum": 0.9}}
    hpo_study(study_name="old", storage=url, direction="maximize").add_trial(
        create_trial(value=0.9, user_attrs={"n_params": 100, "config": config}))
    hpo("export", "--study", "old", "--storage", url, "-o", "best.yaml", cwd=tmp_path)
    exported = yaml.safe_load((tmp_path / "best.yaml").read_text())["trials"][0]["config"]
    assert exported["schedule"] == {"name": "cosine"} and exported["optimizer"] == {"name": "adam", "lr": 0.01}
    assert load_config(tmp_path / "best.yaml").schedule.name == "cosine"
