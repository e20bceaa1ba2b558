"""The database goes away mid-run: the workers wait it out, or stop with one clear line; either
way the study stays intact and (a rerun of) the same command finishes it with exactly N.

The workers reach PostgreSQL through a TCP proxy that the test cuts: every open connection
drops and new ones are closed at once, as when the database host restarts. Only this test's
connections are affected, not those of other tests sharing the server.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from cli_helpers import TINY, Proxy, hpo, run_args, start_hpo, study_when_started, trials_of, write_study
from hpo.records import count

N = 6


@pytest.fixture
def proxied(postgres_url):
    """(the test database's URL through a cuttable proxy, the proxy, the direct URL)."""
    direct = make_url(postgres_url)
    proxy = Proxy(direct.host or "127.0.0.1", direct.port or 5432)
    yield direct.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False), proxy, postgres_url
    proxy.close()


def study(tmp_path):
    # 2,000 images for 4 epochs: a trial spans several seconds of reports
    return write_study(tmp_path, "blip", base={**TINY["base"], "epochs": 4,
                                               "data": {"train_subset": 2000, "test_subset": 300}},
                       search={"optimizer.lr": {"float": [0.01, 0.1], "log": True}},
                       budget={"epochs": 4}, pruner={"name": "none"})


def wait_mid_trial(url: str, log, proc, deadline: float) -> None:
    """Until a trial has reported its first epoch and has more to go."""
    study = study_when_started(url, "blip", log, proc, deadline)
    while proc.poll() is None and time.monotonic() < deadline:
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if any(1 <= max(t.intermediate_values, default=0) < 4 for t in running):
            return
        time.sleep(0.2)
    raise AssertionError(f"no trial got past its first epoch:\n{log.read_text()}")


def finish(proc, seconds: float) -> int:
    try:
        return proc.wait(timeout=seconds)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.postgres
def test_a_ten_second_outage_is_waited_out_and_the_count_is_exact(tmp_path, proxied):
    url, proxy, direct = proxied
    log = tmp_path / "run.log"
    # the grace outlasts the outage: a trial that merely waited must not be taken for dead
    proc = start_hpo(*run_args(study(tmp_path), url, N, "--workers", "2", "--heartbeat", "1", "--grace", "30"),
                     cwd=tmp_path, log=log)
    wait_mid_trial(direct, log, proc, time.monotonic() + 300)
    cut = time.time()
    proxy.cut()
    time.sleep(10)
    proxy.restore()
    back = time.time()
    assert finish(proc, 300) == 0, log.read_text()
    output = log.read_text()
    print(output)
    assert "Traceback" not in output, output

    trials = trials_of(direct, "blip")
    c = count(trials)
    spanning = [t for t in trials if t.datetime_start.timestamp() < cut and t.datetime_complete.timestamp() > back]
    print(f"outage of {back - cut:.0f} s, {proxy.dropped} connections cut or refused; {c.finished} finished, "
          f"{c.failed} failed; trials that trained through it: {[t.number for t in spanning]}")
    assert proxy.dropped >= 1, "the outage hit no connection"
    assert c.finished == N and c.failed == 0 and c.running == 0 and c.waiting == 0
    assert len({t.number for t in trials}) == len(trials)
    assert spanning and all(t.state == TrialState.COMPLETE for t in spanning), "no trial carried on through it"


@pytest.mark.postgres
def test_an_outage_past_the_patience_stops_with_one_line_and_a_rerun_finishes(tmp_path, proxied):
    url, proxy, direct = proxied
    log = tmp_path / "run.log"
    args = run_args(study(tmp_path), url, N, "--workers", "2", "--heartbeat", "1", "--grace", "3",
                    "--db-patience", "3", "--checkpoint-dir", str(tmp_path / "checkpoints"))
    proc = start_hpo(*args, cwd=tmp_path, log=log)
    wait_mid_trial(direct, log, proc, time.monotonic() + 300)
    proxy.cut()
    try:
        code = finish(proc, 120)  # the database stays away until every process has given up
    finally:
        proxy.restore()
    output = log.read_text()
    stops = [line for line in output.splitlines() if "stopping: the database" in line]
    print(f"{output}exit {code}")
    assert code == 1, output
    assert "Traceback" not in output, output
    assert stops and all("unreachable for" in s and "run the same command again" in s for s in stops), output
    assert "postgres:" not in output.replace("postgres@", "")  # no password-looking URL part leaked

    before = count(trials_of(direct, "blip"))
    assert before.finished < N
    again = hpo(*args, cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    trials = trials_of(direct, "blip")
    c = count(trials)
    resumed = {t.number: t.user_attrs.get("resumed_at_epoch") for t in trials if "failed_trial" in t.system_attrs}
    print(f"before the rerun: {before.finished} finished, {before.running} left running; after: {c.finished} "
          f"finished, {c.failed} failed (the abandoned ones); retries and the epoch each resumed at: {resumed}")
    assert c.finished == N and c.running == 0 and c.waiting == 0
    assert len({t.number for t in trials}) == len(trials)
