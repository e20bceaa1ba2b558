"""Kill -9 a worker in the middle of a trial, on PostgreSQL, with real processes.

Two `hpo run --workers 1` commands share a study; once both are training, the worker process
(the child that `hpo run` spawns) running a trial past its first epoch is sent SIGKILL. A
third `hpo run` joins. The dead trial must turn FAIL once its heartbeat is older than the
grace period, its retry must resume from the checkpoint of its last finished epoch and report
on from there without repeating a step, and the study must end with exactly N finished trials.

The log goes to standard output (`pytest -s`) and to artifacts/kill-resume.log.

A worker paused (SIGSTOP) past the grace period loses its trial the same way; when it wakes
up it must give the trial up with one line and go on, not crash.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from cli_helpers import TINY, children, run_args, start_hpo, study_when_started, worker_pid, write_study
from hpo.records import count

EPOCHS, N, HEARTBEAT, GRACE = 6, 4, 1, 5
ARTIFACT = Path(__file__).resolve().parents[1] / "artifacts" / "kill-resume.log"


ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # three runs on one small machine: no oversubscribed cores


def wait(proc, deadline: float) -> int:
    try:
        return proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except Exception:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


def run_command(tmp_path: Path, url: str, grace: int) -> list[str]:
    # 10,000 images: about half a second an epoch on an idle core, long enough to stop a trial mid-way
    path = write_study(tmp_path, "killme", base={**TINY["base"], "epochs": EPOCHS,
                                                 "data": {"train_subset": 10000, "test_subset": 500}},
                       search={"optimizer.lr": {"float": [0.01, 0.1], "log": True}},
                       budget={"epochs": EPOCHS}, pruner={"name": "none"})
    return run_args(path, url, N, "--heartbeat", str(HEARTBEAT), "--grace", str(grace),
                    "--checkpoint-dir", str(tmp_path / "checkpoints"))


def trial_mid_way(study, runs: dict, tmp_path: Path, deadline: float):
    """A RUNNING trial past its first epoch and short of its last, once every run's worker is up."""
    while True:
        assert time.monotonic() < deadline, "never saw a trial mid-way"
        for name, proc in runs.items():
            assert proc.poll() is None, f"run {name} ended first:\n{(tmp_path / f'{name}.log').read_text()}"
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        mid = [t for t in running if "worker" in t.user_attrs and 1 <= max(t.intermediate_values, default=0)
               <= EPOCHS - 2]
        if mid and all(children(proc.pid) for proc in runs.values()):
            return mid[0]
        time.sleep(0.1)


@pytest.mark.postgres
def test_kill_9_mid_trial_then_the_retry_resumes_and_the_count_is_exact(tmp_path, postgres_url):
    args = run_command(tmp_path, postgres_url, GRACE)
    checkpoints = tmp_path / "checkpoints"
    lines: list[str] = []
    began = time.monotonic()

    def log(line: str) -> None:
        line = f"{time.monotonic() - began:6.1f}s  {line}"
        print(line, flush=True)
        lines.append(line)

    deadline = time.monotonic() + 400
    runs = {"A": start_hpo(*args, cwd=tmp_path, env=ONE_THREAD, log=tmp_path / "A.log"),
            "B": start_hpo(*args, cwd=tmp_path, env=ONE_THREAD, log=tmp_path / "B.log")}
    try:
        study = study_when_started(postgres_url, "killme", tmp_path / "A.log", runs["A"], deadline)
        log(f"two `hpo run --workers 1` started: A (pid {runs['A'].pid}), B (pid {runs['B'].pid}); "
            f"N={N}, {EPOCHS} epochs a trial, --heartbeat {HEARTBEAT} --grace {GRACE}")

        victim = trial_mid_way(study, runs, tmp_path, deadline)
        pid = worker_pid(victim)
        owner = next(name for name, proc in runs.items() if pid in children(proc.pid))
        epoch = max(victim.intermediate_values)
        killed_at = dt.datetime.now()
        os.kill(pid, signal.SIGKILL)
        log(f"kill -9 worker pid {pid} (child of run {owner}) while trial {victim.number} was running, "
            f"epoch {epoch}/{EPOCHS} reported")

        assert wait(runs[owner], deadline) != 0, f"run {owner} did not notice its worker died"
        said = (tmp_path / f"{owner}.log").read_text()  # what "(see above)" points to: it said nothing else
        assert (f"hpo run: worker 0 (pid {pid}) was killed by SIGKILL (as the out-of-memory killer does); a trial it "
                f"held stays RUNNING until its heartbeat is {GRACE} s old (--grace)") in said, said
        log(f"run {owner} exited {runs[owner].returncode}: its worker stopped with an error")
        runs["C"] = start_hpo(*args, cwd=tmp_path, env=ONE_THREAD, log=tmp_path / "C.log")
        log(f"third `hpo run --workers 1` started: C (pid {runs['C'].pid})")
        for name, proc in runs.items():
            if name != owner:
                assert wait(proc, deadline) == 0, (tmp_path / f"{name}.log").read_text()
    finally:
        for proc in runs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)

    # --- the dead trial failed after the grace period; its retry resumed; nothing doubled
    trials = study.get_trials(deepcopy=False)
    dead = next(t for t in trials if t.number == victim.number)
    assert dead.state == TrialState.FAIL
    silent = (dead.datetime_complete - killed_at).total_seconds()
    log(f"trial {dead.number}: FAIL {silent:.1f} s after the kill (stale {GRACE} s after its last heartbeat; "
        f"failed by the next worker to look)")
    assert silent >= GRACE - HEARTBEAT - 0.5, "failed before its heartbeat could have gone stale"

    retries = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retries) == 1, [(t.number, t.system_attrs) for t in retries]
    retry = retries[0]
    resumed = retry.user_attrs.get("resumed_at_epoch")
    log(f"trial {retry.number} retried trial {dead.number} on worker pid {worker_pid(retry)}: "
        f"resumed at epoch {resumed}, {retry.state.name}, reported epochs {sorted(retry.intermediate_values)}")
    assert retry.state == TrialState.COMPLETE
    assert resumed is not None and resumed > 1 and resumed >= epoch + 1, retry.user_attrs
    assert sorted(retry.intermediate_values) == list(range(1, EPOCHS + 1)), "a step was lost or repeated"
    assert len(retry.user_attrs["epoch_seconds"]) == EPOCHS
    for step, value in dead.intermediate_values.items():
        assert retry.intermediate_values[step] == value, f"epoch {step} was re-reported differently"

    c = count(trials)
    numbers = [t.number for t in trials]
    log(f"final: {c.finished} finished (complete {c.complete}, pruned {c.pruned}), failed {c.failed}, "
        f"running {c.running}, waiting {c.waiting}; {len(numbers)} trials, {len(set(numbers))} distinct numbers")
    assert c.finished == N and c.running == 0 and c.waiting == 0
    assert c.failed == 1 and len(set(numbers)) == len(numbers)
    left = sorted(p.name for p in checkpoints.rglob("*.pt"))
    log(f"checkpoints left: {left or 'none'}")
    assert not left
    # a run that saw the dead trial fail says why (what a run started beside it prints: test_service)
    logs = "".join((tmp_path / f"{name}.log").read_text() for name in runs if name != owner)
    assert re.search(rf"trial +{dead.number} failed +worker lost: no heartbeat for --grace seconds", logs), logs

    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text("\n".join(lines) + "\n")


@pytest.mark.postgres
def test_a_worker_paused_past_the_grace_gives_its_trial_up_and_goes_on(tmp_path, postgres_url):
    args = run_command(tmp_path, postgres_url, grace=3)
    deadline = time.monotonic() + 400
    runs = {"A": start_hpo(*args, cwd=tmp_path, env=ONE_THREAD, log=tmp_path / "A.log"),
            "B": start_hpo(*args, cwd=tmp_path, env=ONE_THREAD, log=tmp_path / "B.log")}
    try:
        study = study_when_started(postgres_url, "killme", tmp_path / "A.log", runs["A"], deadline)
        victim = trial_mid_way(study, runs, tmp_path, deadline)
        pid = worker_pid(victim)
        owner = next(name for name, proc in runs.items() if pid in children(proc.pid))
        os.kill(pid, signal.SIGSTOP)
        try:  # until the other worker has failed the silent trial and queued its retry
            while not any(t.system_attrs.get("failed_trial") == victim.number for t in study.get_trials()):
                assert time.monotonic() < deadline, "the paused worker's trial was never retried"
                time.sleep(0.2)
        finally:
            os.kill(pid, signal.SIGCONT)
        for name, proc in runs.items():
            assert wait(proc, deadline) == 0, (tmp_path / f"{name}.log").read_text()
    finally:
        for proc in runs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)

    output = (tmp_path / f"{owner}.log").read_text()
    print(output)
    assert f"trial {victim.number} was silent for longer than --grace" in output and "Traceback" not in output
    trials = study.get_trials(deepcopy=False)
    c = count(trials)
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == victim.number)
    assert trials[victim.number].state == TrialState.FAIL and retry.state == TrialState.COMPLETE
    assert sorted(retry.intermediate_values) == list(range(1, EPOCHS + 1))
    assert c.finished == N and c.running == 0 and c.waiting == 0
    assert len({t.number for t in trials}) == len(trials)
