"""The worker's loop through its backend seam, in-process on SQLite: claim K, build, train, tell."""

from __future__ import annotations

import threading

import optuna
import pytest
from optuna.trial import TrialState

from hpo import records
from hpo.backend import Outcome
from hpo.runner import ensure_study
from hpo.storage import RDBStorage, Storage
from hpo.study import parse_study
from hpo.trainer import Diverged, EpochResult
from hpo.worker import Job, Worker

STUDY = {
    "base": {"model": {"family": "convnet", "layers": [4, "M", 8, "GAP", "H"], "batchnorm": False},
             "optimizer": {"name": "sgd", "lr": 0.05}, "epochs": 2, "data": {"train_subset": 100, "test_subset": 50}},
    "search": {"optimizer.lr": {"float": [0.001, 0.5], "log": True}},
    "budget": {"epochs": 2},
    "pruner": "none",
    "sampler": {"name": "random", "seed": 0},
}


class Scripted:
    """A backend that trains `group_size` trials at once, as a packing backend would, and ends
    each as its script says: a value, a pruning signal or an error, after reporting each epoch."""

    def __init__(self, group_size: int, script):
        self.group_size, self.script, self.groups = group_size, list(script), []

    def run(self, jobs, data):
        self.groups.append(len(jobs))
        outcomes = []
        for job in jobs:
            ending = self.script.pop(0)
            if isinstance(ending, type) and issubclass(ending, BaseException) and ending is KeyboardInterrupt:
                raise KeyboardInterrupt
            history = []
            try:
                for epoch in (1, 2):
                    history.append(EpochResult(epoch, 0.5, 0.8 + epoch / 100, 0.01, 0.05))
                    job.on_epoch(history[-1])
                    job.report(epoch, history[-1].test_accuracy)
                    if isinstance(ending, BaseException) and epoch == 1:
                        raise ending
            except Exception as error:
                outcomes.append(Outcome(error=error))
            else:
                outcomes.append(Outcome(history=history))
        return outcomes


@pytest.fixture
def make_worker(tmp_path):
    spec = parse_study(STUDY, "worker.yaml", "worker")
    storage = Storage.resolve(f"sqlite:///{tmp_path / 'db.sqlite'}")
    ensure_study(storage.open(heartbeat=None), spec, storage)

    def make(backend, target: int) -> Worker:
        job = Job(spec, storage, target, None, "cpu", None, 1, heartbeat=1, grace=5,
                  checkpoint_dir=str(tmp_path / "checkpoints"), patience=5)
        return Worker(job, 0, backend)

    return make, storage


def trials(storage: Storage) -> list[optuna.trial.FrozenTrial]:
    rdb = storage.open_existing()
    return rdb.get_all_trials(rdb.get_study_id_from_name("worker"), deepcopy=False)


def test_a_group_backend_gets_k_trials_at_once_and_each_is_told_its_own_end(make_worker):
    make, storage = make_worker
    backend = Scripted(3, [None, optuna.TrialPruned("stop"), Diverged("loss is nan"), None, None])
    beating = threading.active_count()
    assert make(backend, target=4).loop() == 0
    assert backend.groups[0] == 3, "the worker did not claim a whole group"
    got = trials(storage)
    assert [records.kind(t) for t in got[:3]] == ["complete", "pruned", "failed"]
    assert got[0].value == pytest.approx(0.82) and got[0].user_attrs[records.BEST_EPOCH] == 2
    assert got[1].last_step == 1
    assert got[2].user_attrs[records.FAIL_REASON] == "diverged: loss is nan"
    c = records.count(got)
    assert (c.finished, c.running, c.waiting) == (4, 0, 0), "a failed trial counted, or one was left running"
    assert sum(backend.groups) == 5 and backend.groups[1:] == [2], backend.groups  # 4 - 2 finished = room for 2
    assert threading.active_count() == beating, "a heartbeat thread outlived its trial"


def test_a_claim_does_not_read_every_trial_again(make_worker, monkeypatch):
    """The count under the study's lock goes through the study's cached storage, which reads a
    finished trial once: a claim's cost does not grow with the study (BENCHMARKS.md, P5)."""
    make, storage = make_worker
    worker = make(Scripted(1, [None] * 6), target=6)
    full_reads = []
    read_all = RDBStorage.get_all_trials
    monkeypatch.setattr(RDBStorage, "get_all_trials",
                        lambda self, *args, **kwargs: full_reads.append(1) or read_all(self, *args, **kwargs))
    assert worker.loop() == 0
    monkeypatch.undo()
    assert full_reads == [], "a claim read every trial of the study again"
    c = records.count(trials(storage))
    assert (c.finished, c.running, c.waiting) == (6, 0, 0)


def test_a_worker_opens_the_storage_its_run_made_without_waiting_for_the_schema_lock(tmp_path):
    """hpo run made and checked the tables before it started its workers, so a worker does not
    take the lock that guards making them: workers starting together no longer wait in turn."""
    storage = Storage.resolve(f"sqlite:///{tmp_path / 'db.sqlite'}")
    storage.open(heartbeat=None)  # what hpo run does first
    opened = []
    lock = storage.lock("(schema)")
    try:
        with lock.hold():  # another process making tables, say
            opening = threading.Thread(target=lambda: opened.append(storage.open(heartbeat=1, schema_ready=True)))
            opening.start()
            opening.join(timeout=60)
            assert opened, "a worker's open waited for the schema lock"
    finally:
        lock.close()
    opening.join()
    assert opened[0].get_all_studies() == []


def test_ctrl_c_fails_the_trial_and_queues_it_again_for_the_next_run(make_worker):
    make, storage = make_worker
    with pytest.raises(KeyboardInterrupt):
        make(Scripted(1, [None, KeyboardInterrupt]), target=5).loop()
    got = trials(storage)
    assert [t.state for t in got] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert got[1].user_attrs[records.FAIL_REASON].startswith("interrupted")
    assert got[2].params == got[1].params, "the retry is not the interrupted trial's config"
    assert got[2].system_attrs["failed_trial"] == 1  # so it resumes from trial 1's checkpoint


def test_ctrl_c_while_a_group_is_prepared_ends_every_claimed_trial_not_just_those_training(make_worker,
                                                                                        monkeypatch):
    """A group of 3 claimed; Ctrl-C in the second one's preparation. None of the 3 may be left
    RUNNING (stale only after the grace period, holding a slot of --trials until then): each is
    failed now, and the one whose values were drawn is queued again."""
    import hpo.worker

    make, storage = make_worker
    prepared = []
    real_prepare = hpo.worker.prepare

    def prepare(trial, *args, **kwargs):
        prepared.append(trial.number)
        if len(prepared) == 2:
            raise KeyboardInterrupt
        return real_prepare(trial, *args, **kwargs)

    monkeypatch.setattr(hpo.worker, "prepare", prepare)
    backend = Scripted(3, [None] * 3)
    with pytest.raises(KeyboardInterrupt):
        make(backend, target=5).loop()
    assert backend.groups == [], "the group trained although Ctrl-C came before it started"
    got = trials(storage)
    assert [t.state for t in got[:3]] == [TrialState.FAIL] * 3, [t.state for t in got]
    assert all(t.user_attrs[records.FAIL_REASON].startswith("interrupted") for t in got[:3])
    queued = [t for t in got if t.state == TrialState.WAITING]
    # trial 0 (the base recipe, its values fixed) again; trials 1 and 2 had no value drawn yet
    assert [t.system_attrs["failed_trial"] for t in queued] == [0]
    assert queued[0].params == got[0].params and queued[0].user_attrs.get(records.BASE)


def test_ctrl_c_during_the_claim_leaves_no_trial_running(make_worker, monkeypatch):
    import hpo.worker

    make, storage = make_worker
    beats = []
    real_heartbeat = hpo.worker.Heartbeat

    def heartbeat(*args):
        beats.append(1)
        if len(beats) == 2:  # the second trial of the group is asked; Ctrl-C before the claim ends
            raise KeyboardInterrupt
        return real_heartbeat(*args)

    monkeypatch.setattr(hpo.worker, "Heartbeat", heartbeat)
    with pytest.raises(KeyboardInterrupt):
        make(Scripted(3, [None] * 3), target=5).loop()
    got = trials(storage)
    assert [t.state for t in got[:2]] == [TrialState.FAIL] * 2, [t.state for t in got]
    assert records.count(got).running == 0


def test_a_study_is_created_whole_or_not_at_all(tmp_path, monkeypatch):
    import optuna_dashboard

    spec = parse_study(STUDY, "worker.yaml", "worker")
    storage = Storage.resolve(f"sqlite:///{tmp_path / 'db.sqlite'}")
    rdb = storage.open(heartbeat=None)

    def fails(*args):
        raise OSError("disk full")  # anything between creating the study and marking it complete

    monkeypatch.setattr(optuna_dashboard, "save_note", fails)
    with pytest.raises(OSError):
        ensure_study(rdb, spec, storage)
    assert optuna.get_all_study_names(rdb) == [], "a half-made study was left behind"
    monkeypatch.undo()
    study_id = ensure_study(rdb, spec, storage)  # the same file, again: created now, not refused
    assert rdb.get_study_user_attrs(study_id)["hpo_fingerprint"] == spec.fingerprint
    assert [t.state for t in rdb.get_all_trials(study_id)] == [TrialState.WAITING]  # trial 0, the base recipe


@pytest.fixture
def worker_signals():
    """The worker's own SIGINT and SIGTERM handler (hpo.worker.interrupted_once), put back after."""
    import signal

    import hpo.worker

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in saved:
        signal.signal(sig, hpo.worker.interrupted_once)
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)
    hpo.worker.Held.depth, hpo.worker.Held.pending = 0, False


def test_sigterm_while_a_trial_is_asked_fails_it_instead_of_leaving_it_running(make_worker, monkeypatch,
                                                                             worker_signals):
    """study.ask() stores the trial before it returns it; a signal between the two would leave a
    RUNNING trial no worker knows of, holding a slot of --trials until the grace period passes."""
    import os
    import signal

    make, storage = make_worker
    real_ask = optuna.Study.ask

    def ask(self, *args, **kwargs):
        trial = real_ask(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # handled at the next bytecode, before ask returns
        return trial

    monkeypatch.setattr(optuna.Study, "ask", ask)
    backend = Scripted(1, [None] * 5)
    with pytest.raises(KeyboardInterrupt):
        make(backend, target=5).loop()
    got = trials(storage)
    assert backend.groups == []
    assert [t.state for t in got] == [TrialState.FAIL, TrialState.WAITING], "the asked trial was left RUNNING"
    assert got[0].user_attrs[records.FAIL_REASON].startswith("interrupted")


def test_a_database_blip_while_an_interrupted_trial_is_recorded_is_waited_out(make_worker, monkeypatch):
    """The blip that a worker rides out in training (retry.Backoff) does not leave the trial it
    was stopping RUNNING: failed once, queued once."""
    import sqlalchemy

    make, storage = make_worker
    real_tell = optuna.Study.tell
    blips = []

    def tell(self, trial, *args, **kwargs):
        if kwargs.get("state") == TrialState.FAIL and not blips:
            blips.append(trial.number)
            raise sqlalchemy.exc.OperationalError("UPDATE trials", {}, Exception("database is locked"))
        return real_tell(self, trial, *args, **kwargs)

    monkeypatch.setattr(optuna.Study, "tell", tell)
    with pytest.raises(KeyboardInterrupt):
        make(Scripted(1, [KeyboardInterrupt]), target=5).loop()
    got = trials(storage)
    assert blips == [0]
    assert [t.state for t in got] == [TrialState.FAIL, TrialState.WAITING]
    assert got[1].system_attrs["failed_trial"] == 0


def test_an_interrupted_trial_that_cannot_be_failed_is_named_and_not_queued_twice(make_worker, monkeypatch,
                                                                                capsys):
    """Failed first, then queued: where the failing cannot be recorded, no retry is queued beside
    the RUNNING trial (the stale-trial check queues it once, after the grace period), and stderr
    says so in one line instead of nothing."""
    make, storage = make_worker
    real_tell = optuna.Study.tell

    def tell(self, trial, *args, **kwargs):
        if kwargs.get("state") == TrialState.FAIL:
            raise RuntimeError("disk I/O error")
        return real_tell(self, trial, *args, **kwargs)

    monkeypatch.setattr(optuna.Study, "tell", tell)
    with pytest.raises(KeyboardInterrupt):
        make(Scripted(1, [KeyboardInterrupt]), target=5).loop()
    got = trials(storage)
    assert [t.state for t in got] == [TrialState.RUNNING], "a retry was queued beside a trial still RUNNING"
    lines = [line for line in capsys.readouterr().err.splitlines() if "interrupted trial" in line]
    assert lines == ["hpo run: worker 0: interrupted trial 0 could not be failed (disk I/O error); it stays "
                     "RUNNING until --grace passes, then is failed and queued again"]


def test_workers_past_the_largest_sampler_seed_wrap_around_and_do_not_propose_in_lockstep(tmp_path):
    """The k-th worker to join seeds its sampler with `sampler.seed + k`: past 2**32 - 1, which
    NumPy's generators refuse, it wraps to 0 (every worker but the first failed at its start)."""
    spec = parse_study({**STUDY, "sampler": {"name": "random", "seed": 2**32 - 1}}, "worker.yaml", "worker")
    storage = Storage.resolve(f"sqlite:///{tmp_path / 'db.sqlite'}")
    ensure_study(storage.open(heartbeat=None), spec, storage)
    job = Job(spec, storage, 2, None, "cpu", None, 1, heartbeat=None, grace=5,
              checkpoint_dir=str(tmp_path / "checkpoints"), patience=5)
    first, second = (Worker(job, index, Scripted(1, [])) for index in range(2))
    assert (first.joined, second.joined) == (0, 1)
    proposals = [worker.study.ask().suggest_float("optimizer.lr", 0.001, 0.5, log=True) for worker in (first, second)]
    assert proposals[0] != proposals[1]


def test_a_worker_that_starts_after_its_study_was_deleted_ends_without_a_word(tmp_path, capfd):
    """`hpo delete` as a run's workers start: a worker found no study at its first lookup, and
    printed a KeyError traceback beside `hpo run`'s one line saying the study was deleted."""
    from hpo.worker import worker_main  # noqa: PLC0415

    spec = parse_study(STUDY, "worker.yaml", "worker")
    storage = Storage.resolve(f"sqlite:///{tmp_path / 'db.sqlite'}")
    ensure_study(storage.open(heartbeat=None), spec, storage)
    optuna.delete_study(study_name="worker", storage=storage.url)
    job = Job(spec, storage, 2, None, "cpu", None, 1, heartbeat=None, grace=5,
              checkpoint_dir=str(tmp_path / "checkpoints"), patience=5)
    assert worker_main(job, 0) == 1
    assert capfd.readouterr().err == ""


def test_a_database_past_its_patience_is_called_unusable_where_its_disk_is_the_trouble():
    """A full disk under an SQLite file was reported as the database being "unreachable"."""
    import sqlalchemy  # noqa: PLC0415

    from hpo.retry import Backoff, DatabaseUnavailable  # noqa: PLC0415

    full = sqlalchemy.exc.OperationalError("INSERT", {}, Exception("database or disk is full"))
    down = sqlalchemy.exc.OperationalError("SELECT", {}, Exception("connection refused"))
    for error, word in ((full, "unusable"), (down, "unreachable")):
        with pytest.raises(DatabaseUnavailable, match=rf"^{word} for 0 s \({error.orig}\)$"):
            Backoff(0).wait(error)
