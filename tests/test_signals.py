"""A signal to `hpo run` alone (SIGTERM from `docker stop`, SIGINT from `kill -INT`) stops it as
Ctrl-C does: every worker records how its trial ended, none outlives the command, and the next
run resumes the interrupted trials."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from cli_helpers import (TINY, alive, children, hpo, run_args, start_hpo, study_when_started,
                         wait_until_gone, write_study)
from hpo import records

EPOCHS, N = 4, 3


def start_run(tmp_path: Path, name: str, epochs: int, *, ignore_sigint: bool = False, device: str = "cpu"):
    """`hpo run` of a 2-worker study in the background: (its process, its argv, the url, its log)."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    path = write_study(tmp_path, name, base={**TINY["base"], "epochs": epochs,
                                             "data": {"train_subset": 10000, "test_subset": 500}},
                       search={"optimizer.lr": {"float": [0.01, 0.1], "log": True}},
                       budget={"epochs": epochs}, pruner={"name": "none"})
    argv = run_args(path, url, N, "--workers", "2", "--device", device, "--checkpoint-dir", str(tmp_path / "checkpoints"))
    log = tmp_path / "run.log"
    return (start_hpo(*argv, cwd=tmp_path, env={"OMP_NUM_THREADS": "1"}, log=log, ignore_sigint=ignore_sigint),
            argv, url, log)


def workers_once_training(proc, url: str, name: str, log: Path, deadline: float):
    """The study and the worker pids, once a trial has reported an epoch."""
    study = study_when_started(url, name, log, proc, deadline)
    while not any(t.intermediate_values for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))):
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    workers = children(proc.pid)
    assert len(workers) >= 2, workers
    return study, workers


def test_sigterm_stops_every_worker_and_the_next_run_resumes(tmp_path, device="cpu", epochs=EPOCHS):
    """(tests/test_gpu.py runs it on CUDA too, with longer trials.)"""
    proc, argv, url, log = start_run(tmp_path, "term", epochs, device=device)
    deadline = time.monotonic() + 240
    try:
        study, workers = workers_once_training(proc, url, "term", log, deadline)
        proc.send_signal(signal.SIGTERM)  # to the command alone, as docker does to PID 1
        assert proc.wait(timeout=90) == 130, log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    print(text)
    assert "interrupted:" in text and "Traceback" not in text
    time.sleep(1)
    assert not [pid for pid in workers if alive(pid)], "a worker outlived hpo run"

    trials = study.get_trials(deepcopy=False)
    c = records.count(trials)
    assert c.running == 0, "a trial was left RUNNING"
    interrupted = [t for t in trials if t.state == TrialState.FAIL]
    assert all(t.user_attrs[records.FAIL_REASON].startswith("interrupted") for t in interrupted)
    assert interrupted and c.waiting == len(interrupted), "an interrupted trial was not queued again"

    again = hpo(*argv, cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    trials = study.get_trials(deepcopy=False)
    assert records.count(trials).finished == N and records.count(trials).running == 0
    retried = [t for t in trials if t.system_attrs.get("failed_trial") in {i.number for i in interrupted}]
    assert retried and all(t.state == TrialState.COMPLETE for t in retried)
    assert not any(records.FAIL_REASON in t.user_attrs for t in retried)
    assert any(t.user_attrs.get(records.RESUMED_AT_EPOCH) for t in retried), "no retry resumed from its checkpoint"


@pytest.mark.parametrize(("sig", "ignore_sigint"), [
    # `hpo run &` in a script starts with SIGINT ignored, and so do its workers: the SIGTERM it
    # forwards still stops each as Ctrl-C would
    (signal.SIGTERM, True),
    # `kill -INT PID` (or a supervisor's SIGINT) reaches `hpo run` alone, not its workers as
    # Ctrl-C at a terminal does: it passes the stop on
    (signal.SIGINT, False),
], ids=["sigterm-with-sigint-ignored", "sigint-to-the-command-alone"])
def test_a_signal_to_the_command_alone_stops_its_workers_as_ctrl_c_would(tmp_path, sig, ignore_sigint):
    """Each worker fails its trial with a reason and queues it again, instead of training on
    until it is killed and leaving the trial RUNNING for the grace period."""
    proc, _, url, log = start_run(tmp_path, "alone", 50, ignore_sigint=ignore_sigint)
    deadline = time.monotonic() + 240
    try:
        study, _ = workers_once_training(proc, url, "alone", log, deadline)
        proc.send_signal(sig)
        assert proc.wait(timeout=120) == 130, log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert "interrupted:" in text and "Traceback" not in text, text
    trials = study.get_trials(deepcopy=False)
    c = records.count(trials)
    interrupted = [t for t in trials if t.state == TrialState.FAIL]
    assert c.running == 0, f"a trial was left RUNNING\n{text}"
    assert interrupted and all(t.user_attrs[records.FAIL_REASON].startswith("interrupted") for t in interrupted)
    assert c.waiting == len(interrupted), "an interrupted trial was not queued again"


def test_workers_of_a_killed_run_stop_and_leave_their_trials_to_the_next(tmp_path):
    """SIGKILL gives `hpo run` no chance to stop its workers: each notices it is gone, fails its
    trial with a reason, queues it again, and exits, instead of training on unwatched."""
    proc, _, url, log = start_run(tmp_path, "orphan", 50)
    deadline = time.monotonic() + 240
    workers: set[int] = set()
    try:
        study, workers = workers_once_training(proc, url, "orphan", log, deadline)
        proc.kill()  # SIGKILL to `hpo run` alone: its workers live on, orphaned
        proc.wait(timeout=30)
        wait_until_gone(workers, deadline, f"a worker trained on after its hpo run was killed\n{log.read_text()}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    text = log.read_text()
    print(text)
    assert "is gone; stopping" in text and "Traceback" not in text
    trials = study.get_trials(deepcopy=False)
    c = records.count(trials)
    assert c.running == 0 and c.finished == 0, "a trial was left RUNNING, or a worker took on a new one"
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed and all("was killed" in t.user_attrs[records.FAIL_REASON] for t in failed)
    assert c.waiting == len(failed), "an interrupted trial was not queued again"


def test_a_worker_that_does_not_stop_in_time_is_killed_with_a_line_saying_so(monkeypatch):
    """`hpo run` waits STOP_SECONDS for each worker to record its trials; one still alive then
    (stuck on a lock, say) is killed, and the trial it held is accounted for in one line instead
    of left RUNNING without a word."""
    import hpo.runner

    class Stuck:  # a multiprocessing.Process that ignores SIGTERM until it is killed
        def __init__(self, pid):
            self.pid, self.alive = pid, True

        def is_alive(self):
            return self.alive

        def join(self, timeout=None):
            pass

        def kill(self):
            self.alive = False

    class Stopping(Stuck):
        def join(self, timeout=None):
            self.alive = False

    class Slow(Stuck):  # takes the whole wait it is given, and stops only when killed
        def join(self, timeout=None):
            if timeout is not None:
                clock[0] += timeout
                waits.append(timeout)

    sent, waits, clock = [], [], [1000.0]
    monkeypatch.setattr(hpo.runner.os, "kill", lambda pid, sig: sent.append((pid, sig)))
    monkeypatch.setattr(hpo.runner.time, "monotonic", lambda: clock[0])
    lines = []
    procs = [Stopping(101), Slow(102), Slow(103)]
    hpo.runner.stop_workers(procs, lines.append)
    assert sent == [(101, signal.SIGTERM), (102, signal.SIGTERM), (103, signal.SIGTERM)]
    # one STOP_SECONDS for all of them, not one each: eight stuck workers do not hold Ctrl-C for 4 minutes
    assert waits == [hpo.runner.STOP_SECONDS, 0.0] and clock[0] == 1000.0 + hpo.runner.STOP_SECONDS
    assert not any(p.alive for p in procs)
    assert lines == [f"hpo run: a worker (pid {pid}) had not stopped {hpo.runner.STOP_SECONDS} s after it was told to "
                     "and was killed; a trial it held stays RUNNING until --grace passes, then is failed and queued again"
                     for pid in (102, 103)]
