"""How `hpo run` starts its workers (hpo.processes): forked from a fork server that imported
torch and the rest once, yet each worker as its run set it up, as a spawned one would be."""

from __future__ import annotations

import json
import multiprocessing as mp
import subprocess
import sys

import optuna
from optuna.trial import TrialState
import pytest
import yaml

import hpo
from hpo import processes

PROBE = '''
import json, multiprocessing, os
from torch import nn

def build(width: int = 4, input_shape=(1, 28, 28), num_classes=10):
    if multiprocessing.current_process().name.startswith("hpo-worker"):
        with open(os.environ["HPO_PROBE"], "a") as out:  # a KeyError fails the trial
            out.write(json.dumps({"pid": os.getpid(), "ppid": os.getppid()}) + "\\n")
    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0] * input_shape[1] * input_shape[2], num_classes))
'''


@pytest.mark.skipif("forkserver" not in mp.get_all_start_methods(), reason="no fork server on this platform")
def test_a_worker_forked_by_a_fork_server_started_earlier_sees_its_runs_environment(tmp_path, monkeypatch):
    ctx = processes.worker_context()  # the server starts now, its environment without HPO_PROBE
    assert ctx.get_start_method() == "forkserver"
    (tmp_path / "probe_model.py").write_text(PROBE)
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = tmp_path / "seen.jsonl"
    monkeypatch.setenv("HPO_PROBE", str(seen))
    study = tmp_path / "probe.yaml"
    study.write_text(yaml.safe_dump({
        "name": "probe",
        "base": {"model": {"module": "probe_model:build"}, "optimizer": {"name": "sgd", "lr": 0.05},
                 "batch_size": 64, "epochs": 1, "data": {"train_subset": 200, "test_subset": 100}},
        "search": {"optimizer.lr": {"float": [0.01, 0.1], "log": True}},
        "sampler": {"name": "random", "seed": 0},
    }))
    url = f"sqlite:///{tmp_path / 'probe.db'}"
    hpo.run(study, trials=2, storage=url, workers=2, device="cpu", checkpoint_dir=tmp_path / "ckpt")
    states = [t.state for t in optuna.load_study(study_name="probe", storage=url).trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 2
    workers = [json.loads(line) for line in seen.read_text().splitlines()]
    assert workers and all(w["pid"] != mp.current_process().pid for w in workers), workers
    assert all(w["ppid"] != mp.current_process().pid for w in workers), "not forked by the fork server"


def test_starting_the_fork_server_imports_no_torch_in_the_caller():
    """`hpo run` starts the server before its own heavy imports, so the two overlap."""
    probe = "import sys, hpo.processes; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_hpo_worker_start_spawn_gives_each_worker_a_fresh_interpreter(monkeypatch):
    monkeypatch.setenv("HPO_WORKER_START", "spawn")
    assert processes.worker_context().get_start_method() == "spawn"


def mlp_study(folder, name: str):
    """A study of one-epoch trials of a tiny MLP on 200 images: a run of seconds."""
    study = folder / f"{name}.yaml"
    study.write_text(yaml.safe_dump({
        "name": name,
        "base": {"model": {"family": "mlp", "hidden": [8]}, "optimizer": {"name": "sgd", "lr": 0.05},
                 "batch_size": 64, "epochs": 1, "data": {"train_subset": 200, "test_subset": 100}},
        "search": {"optimizer.lr": {"float": [0.01, 0.1], "log": True}},
        "sampler": {"name": "random", "seed": 0},
    }))
    return study


@pytest.mark.timeout(300)  # the run takes seconds; an hour's wait fails here
def test_hpo_run_returns_when_its_workers_end_not_at_its_next_look(tmp_path, monkeypatch):
    """`hpo run` refreshes its display between looks at its workers; a worker's end cuts the wait
    short. With an hour between looks the run still returns once its one worker is done (it used
    to sleep its second out after the last trial)."""
    import hpo.runner  # noqa: PLC0415

    monkeypatch.setattr(hpo.runner, "POLL_SECONDS", 3600.0)
    study = mlp_study(tmp_path, "quick")
    url = f"sqlite:///{tmp_path / 'quick.db'}"
    hpo.run(study, trials=2, storage=url, workers=1, device="cpu")
    assert len(optuna.load_study(study_name="quick", storage=url).trials) == 2


@pytest.mark.timeout(300)  # a run of a million trials: only the stop ends it
def test_an_on_trial_that_raises_stops_the_workers_and_leaves_no_empty_folders(tmp_path, monkeypatch):
    """The caller's callback raising ends hpo.run with its error: the workers are stopped with it
    (not left training behind a script that has moved on) and the emptied checkpoint folders go."""
    study = mlp_study(tmp_path, "cb")
    monkeypatch.chdir(tmp_path)

    def on_trial(trial):
        raise ValueError(f"the caller's own bug at trial {trial.number}")

    with pytest.raises(ValueError, match="the caller's own bug at trial 0"):
        # more trials than any machine trains in the test's time: with 50, a fast worker finished them
        # all before a starved parent called on_trial, and the test's "stopped" could not be told apart
        hpo.run(study, trials=1_000_000, storage=f"sqlite:///{tmp_path / 'cb.db'}", workers=1, device="cpu",
                on_trial=on_trial)
    assert not [p for p in mp.active_children() if p.name.startswith("hpo-worker")], "a worker still runs"
    # a trial stopped mid-way keeps its checkpoint for the next run to resume from; no folder is left empty
    folders = [tmp_path / "checkpoints", *(tmp_path / "checkpoints").rglob("*")]
    assert all(any(f.iterdir()) for f in folders if f.is_dir()), [str(f) for f in folders]
    trials = optuna.load_study(study_name="cb", storage=f"sqlite:///{tmp_path / 'cb.db'}").trials
    assert len(trials) < 1_000_000  # stopped, not run on behind the caller's back (else the timeout fails it)
    # the trial a worker held as it was stopped (however far in) is failed and queued again, not left RUNNING
    assert not [t.number for t in trials if t.state == optuna.trial.TrialState.RUNNING]


@pytest.mark.timeout(300)
def test_a_study_deleted_under_a_run_ends_it_in_one_error_with_no_worker_left(tmp_path, monkeypatch, storage_url):
    """Deleted while its workers train (`hpo delete --force` past the grace period, or
    optuna.delete_study): the run ends with StudyDeleted (the CLI's one line, exit 1), where the
    display's next look and each worker raised KeyError tracebacks; the checkpoints of a study that
    is gone go too."""
    from hpo.delete import delete_study  # noqa: PLC0415
    from hpo.errors import StudyDeleted  # noqa: PLC0415
    from hpo.storage import Storage  # noqa: PLC0415

    study = mlp_study(tmp_path, "doomed")
    monkeypatch.chdir(tmp_path)

    def on_trial(trial):
        if trial.number == 0:  # the other worker is training meanwhile
            delete_study(Storage.resolve(storage_url).open_existing(), "doomed")

    with pytest.raises(StudyDeleted, match=r"^study 'doomed' was deleted from .* while this run worked on it; its "
                                           "workers are stopped"):
        hpo.run(study, trials=50, storage=storage_url, workers=2, device="cpu", on_trial=on_trial)
    assert not [p for p in mp.active_children() if p.name.startswith("hpo-worker")], "a worker still runs"
    assert not (tmp_path / "checkpoints").exists()
    assert "doomed" not in [s.study_name for s in optuna.get_all_study_summaries(storage_url)]


@pytest.mark.timeout(300)
def test_a_database_file_deleted_under_a_run_ends_it_in_one_error(tmp_path, monkeypatch):
    """`rm studies.db` while a run trains: the workers wrote on into the deleted file through their
    open handles, every trial was shown complete, and the run ended with exit 0 and an export
    hint for a database that was no longer there."""
    from hpo.errors import DatabaseGone  # noqa: PLC0415

    study = mlp_study(tmp_path, "lost")
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "lost.db"

    def on_trial(trial):
        if trial.number == 0:
            path.unlink()

    with pytest.raises(DatabaseGone, match=rf"^the database file {path} was deleted or replaced while this run "
                                           "worked on it: its workers wrote on into the old file"):
        hpo.run(study, trials=1_000_000, storage=f"sqlite:///{path}", workers=1, device="cpu", on_trial=on_trial)
    assert not [p for p in mp.active_children() if p.name.startswith("hpo-worker")], "a worker still runs"


@pytest.mark.timeout(300)
def test_a_checkpoint_folder_that_cannot_be_written_stops_the_worker_with_its_trial_queued(tmp_path, monkeypatch,
                                                                                          capfd):
    """A full disk or a folder made read-only under a run: each trial failed with the raw error
    ("OSError: [Errno 28]", or torch's "unexpected pos 381568"), five in a row before the worker
    stopped, the base recipe's trial 0 among them, never to run again; a worker's traceback where
    it removed a finished trial's checkpoint; half-written checkpoints left filling the disk. It is
    the machine's fault, not the trials': the worker stops at once, its trial queued again."""
    import shutil  # noqa: PLC0415

    from hpo.api import RunStopped  # noqa: PLC0415

    study = mlp_study(tmp_path, "nowrite")
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'nowrite.db'}"
    folder = tmp_path / "checkpoints" / "nowrite"

    def on_trial(trial):
        while trial.number == 0 and not folder.is_file():  # from now on no checkpoint can be written or removed
            shutil.rmtree(folder, ignore_errors=True)
            folder.parent.mkdir(exist_ok=True)
            try:
                folder.write_text("in the way")
            except IsADirectoryError:  # the worker made it again meanwhile, for its next trial's checkpoint
                pass

    with pytest.raises(RunStopped):
        hpo.run(study, trials=1_000_000, storage=url, workers=1, device="cpu", on_trial=on_trial)
    err = capfd.readouterr().err
    assert "hpo run: worker 0: stopping: cannot write the checkpoint" in err and "Traceback" not in err, err
    assert "(free some space, or make the folder writable, then run the same command)" in err
    trials = optuna.load_study(study_name="nowrite", storage=url).trials
    states = [t.state for t in trials]
    assert TrialState.RUNNING not in states and states.count(TrialState.FAIL) <= 1, states
    for t in trials:  # a trial that could not save its checkpoint is queued again, as after a Ctrl-C
        if t.state == TrialState.FAIL:
            assert t.user_attrs["fail_reason"].startswith("interrupted: cannot write the checkpoint ")
            assert states[-1] == TrialState.WAITING and trials[-1].params == t.params
    assert not list(tmp_path.rglob(".trial-*.tmp"))


@pytest.mark.timeout(300)
def test_a_ctrl_c_after_the_last_trial_does_not_ask_for_another_run(tmp_path, monkeypatch):
    """Ctrl-C once every trial had finished said "interrupted: 2/2 finished; run the same command
    to continue", which would do nothing."""
    from hpo.runner import Silent, run as run_study  # noqa: PLC0415
    from hpo.storage import Storage  # noqa: PLC0415
    from hpo.study import load_spec  # noqa: PLC0415

    monkeypatch.chdir(tmp_path)

    class CtrlCWhenDone(Silent):
        def update(self, trials) -> None:
            if any(t.state.is_finished() for t in trials):
                raise KeyboardInterrupt

    lines = []
    status = run_study(spec=load_spec(str(mlp_study(tmp_path, "done"))), storage=Storage.resolve(
        f"sqlite:///{tmp_path / 'done.db'}"), trials=1, device="cpu", display=lambda *_: CtrlCWhenDone(),
        warn=lines.append)
    assert status == 130 and lines == ["interrupted: 1/1 finished, all it asked for"]


def test_a_ctrl_c_while_the_fork_server_starts_is_not_lost():
    """The fork server started with Ctrl-C ignored in the caller too: one that reached `hpo verify`
    in that moment was taken by another of its threads and ignored, and the verification ran on to
    its end, exit 0. Only the starting thread blocks it now, and the caller's handler stays."""
    import os  # noqa: PLC0415
    import signal  # noqa: PLC0415
    import time  # noqa: PLC0415

    with pytest.raises(KeyboardInterrupt):
        with processes.server_start_without_ctrl_c():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)  # taken by another thread of this process (pytest's), or raised on unblocking
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, set())


SPAWNS = """
import json, signal
from multiprocessing import util
from hpo import processes

spawns = []
spawn = util.spawnv_passfds

def recording(path, args, passfds):  # what multiprocessing starts its helper processes with
    blocked = signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, set())
    spawns.append({"forkserver": "forkserver" in " ".join(map(str, args)), "ctrl_c_blocked": blocked})
    return spawn(path, args, passfds)

util.spawnv_passfds = recording
processes.worker_context()
processes.stop_fork_server()
print(json.dumps(spawns))
"""


@pytest.mark.skipif("forkserver" not in mp.get_all_start_methods(), reason="no fork server on this platform")
def test_the_fork_server_starts_with_ctrl_c_blocked_in_a_process_that_started_no_helper_yet():
    """multiprocessing starts its resource tracker before the fork server, and unblocks SIGINT
    after that start: the server then started with Ctrl-C live, and one that came while it imported
    `multiprocessing.connection` printed a KeyboardInterrupt traceback beside `hpo verify`'s one line
    (a clean-clone CI run). A fresh interpreter, as `hpo verify` is: no tracker runs there yet."""
    out = subprocess.run([sys.executable, "-c", SPAWNS], capture_output=True, text=True, check=True).stdout
    spawns = json.loads(out)
    assert [s["forkserver"] for s in spawns].count(True) == 1, spawns
    assert all(s["ctrl_c_blocked"] for s in spawns), spawns


def test_a_ctrl_c_that_came_while_the_fork_server_imported_is_dropped_not_raised():
    """The server starts with Ctrl-C blocked; one that comes while it imports waits, pending (Linux
    keeps a blocked signal pending even while it is ignored). hpo.preload gave SIGINT its handler,
    then unblocked it: the pending Ctrl-C was raised there, a traceback beside the command's line."""
    probe = ("import os, signal\n"
             "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})\n"
             "os.environ['HPO_PARENT_SIGINT'] = 'interrupt'\n"
             "import importlib\n"
             "load = importlib.import_module\n"
             "def loading(name, *rest, **named):  # a terminal's Ctrl-C as the server imports its first module\n"
             "    if name == 'hpo.worker': os.kill(os.getpid(), signal.SIGINT)\n"
             "    return load(name, *rest, **named)\n"
             "importlib.import_module = loading\n"
             "import hpo.preload\n"
             "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler, "
             "signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, set()))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout.split(), done.stderr) == (0, ["True", "False"], "")


def test_a_config_artifact_cut_short_by_a_full_disk_leaves_no_file(tmp_path, monkeypatch):
    """The disk filling as a trial's config was uploaded left a 0-byte or cut-short file in the
    artifact store, named by no trial, listed by no dashboard, there for good."""
    import errno  # noqa: PLC0415
    import shutil  # noqa: PLC0415

    from hpo import artifacts  # noqa: PLC0415

    store = artifacts.open_store(tmp_path / "store")
    trial = optuna.create_study().ask()

    def full_disk(source, target, *args):
        target.write(source.read(5))
        target.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", full_disk)
    with pytest.raises(OSError, match="No space left"):
        artifacts.upload_config(store, trial, {"batch_size": 64})
    assert list((tmp_path / "store").iterdir()) == []
    monkeypatch.undo()
    artifacts.upload_config(store, trial, {"batch_size": 64})  # the store works once there is room
    (written,) = (tmp_path / "store").iterdir()
    assert "batch_size: 64" in written.read_text()
