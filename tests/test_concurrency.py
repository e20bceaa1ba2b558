"""Many workers on one study: exactly N finished trials, none lost, none doubled.

PostgreSQL: 8 worker processes, counted with SQL in the database itself. SQLite: `hpo` keeps
it for one machine and makes it safe there (write-ahead log, a 60 s busy timeout, an flock
around the count-and-start step), so several workers run without a "database is locked".
"""

from __future__ import annotations

import subprocess
import sys

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from cli_helpers import env_with, hpo, run_args, trials_of, worker_pid, write_study
from hpo.records import count

FINISHED_SQL = """
SELECT count(*) FROM trials t JOIN studies s ON s.study_id = t.study_id
WHERE s.study_name = :name AND t.state IN ('COMPLETE', 'PRUNED')
  AND NOT EXISTS (SELECT 1 FROM trial_user_attributes a WHERE a.trial_id = t.trial_id AND a.key = 'rejected')
"""
NUMBERS_SQL = """
SELECT count(*), count(DISTINCT t.number), count(*) FILTER (WHERE t.state IN ('RUNNING', 'WAITING'))
FROM trials t JOIN studies s ON s.study_id = t.study_id WHERE s.study_name = :name
"""


@pytest.mark.postgres
def test_processes_opening_a_fresh_database_at_once_all_succeed(postgres_url):
    # each worker, and each `hpo run` of a fleet started together, opens the storage; the first
    # use creates Optuna's tables, and two creating them at once used to collide (duplicate type)
    code = f"from hpo.storage import Storage; Storage.resolve({postgres_url!r}).open()"
    procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True) for _ in range(6)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, "\n".join(errors)


@pytest.mark.postgres
def test_eight_workers_on_postgres_finish_exactly_n(tmp_path, postgres_url):
    path = write_study(tmp_path, "eight")
    done = hpo(*run_args(path, postgres_url, 16, "--workers", "8"), cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr

    engine = sqlalchemy.create_engine(postgres_url)
    with engine.connect() as conn:
        finished = conn.execute(sqlalchemy.text(FINISHED_SQL), {"name": "eight"}).scalar()
        rows, distinct, unfinished = conn.execute(sqlalchemy.text(NUMBERS_SQL), {"name": "eight"}).one()
    engine.dispose()
    trials = trials_of(postgres_url, "eight")
    c = count(trials)
    workers = {worker_pid(t) for t in trials if "worker" in t.user_attrs}
    print(f"8 workers, --trials 16: SQL says {finished} finished, {rows} trials with {distinct} distinct numbers, "
          f"{unfinished} running/waiting; optuna says complete {c.complete}, pruned {c.pruned}, "
          f"rejected {c.rejected}, failed {c.failed}; {len(workers)} worker processes trained")
    assert finished == c.finished == 16
    assert rows == distinct == len(trials) and unfinished == 0
    assert c.failed == 0
    assert len(workers) >= 2, "the trials did not spread over the workers"


def test_sqlite_with_four_workers_never_reports_database_is_locked(tmp_path):
    path = write_study(tmp_path, "four")
    url = f"sqlite:///{tmp_path / 'four.db'}"
    # HPO_DEBUG keeps Optuna's log on, so an error inside any trial would reach stderr
    done = hpo(*run_args(path, url, 12, "--workers", "4"), cwd=tmp_path, env={"HPO_DEBUG": "1"}, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "database is locked" not in output
    trials = trials_of(url, "four")
    c = count(trials)
    assert c.finished == 12 and c.failed == 0 and c.running == 0
    assert len({t.number for t in trials}) == len(trials)
    assert all(t.state != TrialState.FAIL for t in trials)


@pytest.mark.postgres
def test_three_runs_started_together_finish_exactly_and_never_repeat_a_config(tmp_path, postgres_url):
    # the README's "same command on every machine": three `hpo run --workers 2` at once on one
    # database; each worker process seeds its sampler by its place among all that joined
    path = write_study(tmp_path, "three")
    argv = run_args(path, postgres_url, 12, "--workers", "2")
    procs = [subprocess.Popen([sys.executable, "-m", "hpo", *argv], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=env_with({"OMP_NUM_THREADS": "1"}))
             for _ in range(3)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(outputs)
    trials = trials_of(postgres_url, "three")
    c = count(trials)
    configs = [tuple(sorted(t.params.items())) for t in trials]
    print(f"3 runs x 2 workers, --trials 12: {c.finished} finished ({c.complete} complete, {c.pruned} pruned), "
          f"{c.rejected} rejected, {len(trials)} trials with {len(set(configs))} distinct configs")
    assert c.finished == 12 and c.running == 0 and c.waiting == 0 and c.failed == 0
    assert len(set(configs)) == len(configs), "two trials were given the same config"
    storage = optuna.storages.RDBStorage(postgres_url)
    joined = storage.get_study_system_attrs(storage.get_study_id_from_name("three"))["hpo_workers_joined"]
    assert joined == 6
