"""`hpo run`: bring a study to N finished trials with K worker processes, and show it.

Exact counts under concurrency: a worker takes the study's lock, counts finished and
running trials, and starts a trial only while their sum is short of N; the lock is
released once the new trial exists in storage (the objective's first line). A worker that
finds N reached stops; one that finds the remaining slots all running waits, so a failed
or dead trial is replaced. Workers on other machines follow the same protocol through the
same database.

Faults: a trial that fails (diverged, out of memory, time limit) is recorded FAIL and the
worker goes on; a database outage is waited out (retry.Backoff) and, past its patience,
ends the worker with one line while the study stays as it was.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from hpo import storage as storage_mod
from hpo.errors import UserError
from hpo.objective import REJECTED
from hpo.retry import PATIENCE_SECONDS, Backoff, DatabaseUnavailable, is_outage
from hpo.study import StudySpec, load_study

POLL_SECONDS = 1.0
MAX_CONSECUTIVE_FAILURES = 5
FINGERPRINT, SOURCE, SPEC = "hpo_fingerprint", "hpo_study_file", "hpo_spec"


@dataclass(frozen=True)
class Counts:
    finished: int = 0  # COMPLETE + PRUNED, over-budget rejections excluded: what --trials counts
    complete: int = 0
    pruned: int = 0
    rejected: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0


def count(trials: list[optuna.trial.FrozenTrial]) -> Counts:
    c = dict(complete=0, pruned=0, rejected=0, failed=0, running=0, waiting=0)
    for t in trials:
        if t.state == TrialState.COMPLETE:
            c["complete"] += 1
        elif t.state == TrialState.PRUNED:
            c["rejected" if t.user_attrs.get(REJECTED) else "pruned"] += 1
        elif t.state == TrialState.FAIL:
            c["failed"] += 1
        elif t.state == TrialState.RUNNING:
            c["running"] += 1
        elif t.state == TrialState.WAITING:
            c["waiting"] += 1
    return Counts(finished=c["complete"] + c["pruned"], **c)


# ----------------------------------------------------------------- the study record


def ensure_study(storage: optuna.storages.BaseStorage, spec: StudySpec, url: str) -> optuna.Study:
    """Load the study, or create it with the base recipe enqueued as trial 0 (once, under the lock)."""
    from hpo.space import base_params  # noqa: PLC0415

    with storage_mod.exclusive(url, spec.name):
        try:
            study = optuna.load_study(study_name=spec.name, storage=storage)
        except KeyError:
            study = optuna.create_study(study_name=spec.name, storage=storage, direction="maximize")
            study.set_user_attr(FINGERPRINT, spec.fingerprint)
            study.set_user_attr(SOURCE, spec.source)
            study.set_user_attr(SPEC, spec.raw)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # enqueue_trial is "experimental" in some versions
                study.enqueue_trial(base_params(spec), user_attrs={"base": True})
            return study
    if study.user_attrs.get(FINGERPRINT) != spec.fingerprint:
        raise UserError(
            f"study {spec.name!r} in {storage_mod.mask(url)} was created from a different study file "
            f"({study.user_attrs.get(SOURCE, 'unknown')}); give this one another name: key, "
            "or use another --storage"
        )
    return study


# ----------------------------------------------------------------- a worker


@dataclass(frozen=True)
class Job:
    """What every worker process of one `hpo run` is told."""

    spec: StudySpec
    url: str
    target: int
    deadline: float | None
    device: str
    data_dir: str | None
    workers: int
    heartbeat: int
    grace: int
    checkpoint_dir: str | None
    patience: float = PATIENCE_SECONDS  # how long a worker waits out an unreachable database


def worker_main(job: Job, index: int) -> int:
    """One worker process: load the data once, then run trials while the study is short of N."""
    spec, url, target, deadline = job.spec, job.url, job.target, job.deadline
    import torch  # noqa: PLC0415

    from hpo import data as data_mod  # noqa: PLC0415
    from hpo.objective import make_objective  # noqa: PLC0415
    from hpo.train import pick_device  # noqa: PLC0415

    if not os.environ.get("HPO_DEBUG"):
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        warnings.simplefilter("ignore")
    try:
        dev = pick_device(job.device)
        if dev.type == "cuda" and torch.cuda.device_count() > 1:
            dev = torch.device("cuda", index % torch.cuda.device_count())
        if dev.type == "cpu" and not os.environ.get("OMP_NUM_THREADS"):
            # share the cores among this run's workers, unless told otherwise (several runs on one machine)
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // job.workers))
        mnist = data_mod.load(dev, Path(job.data_dir) if job.data_dir else None)
        storage = storage_mod.open_storage(url, heartbeat=job.heartbeat, grace=job.grace)
        checkpoints = Path(job.checkpoint_dir) if job.checkpoint_dir else None
        sampler_seed = dict(spec.sampler.options).get("seed")
        if sampler_seed is not None:
            # workers must not propose identical trials in lockstep: offset by the worker's index
            # here and by the trials already there, so a later run (or machine) draws anew too
            existing = len(storage.get_all_trials(storage.get_study_id_from_name(spec.name), deepcopy=False))
            spec = _with_sampler_seed(spec, sampler_seed + index + 1009 * existing)
        study = optuna.load_study(study_name=spec.name, storage=storage,
                                  sampler=spec.make_sampler(), pruner=spec.make_pruner())
        backoff = Backoff(job.patience)
        failures = 0
        while deadline is None or time.time() < deadline:
            mine: list[optuna.trial.FrozenTrial] = []
            claimed: list[int] = []  # the number of the trial this worker started
            try:
                with storage_mod.exclusive(url, spec.name) as release:
                    optuna.storages.fail_stale_trials(study)
                    counts = count(study.get_trials(deepcopy=False))
                    backoff.ok()
                    if counts.finished >= target:
                        return 0
                    if counts.finished + counts.running >= target:
                        release()
                        time.sleep(POLL_SECONDS)
                        continue

                    def claim(trial: optuna.Trial, release=release) -> None:
                        claimed.append(trial.number)
                        release()

                    objective = make_objective(spec, mnist, on_start=claim, checkpoint_dir=checkpoints,
                                               retry=backoff.call)
                    study.optimize(objective, n_trials=1, catch=(Exception,),
                                   callbacks=[lambda _study, trial: mine.append(trial)])
            except Exception as error:
                if is_outage(error):
                    # a trial cut short here stays RUNNING, goes stale and is retried from its checkpoint
                    backoff.wait(error)
                    continue
                if claimed and study.get_trials(deepcopy=False)[claimed[0]].state == TrialState.FAIL:
                    # Optuna could not record the trial's end: someone else had (a paused process, say)
                    print(f"hpo run: worker {index}: trial {claimed[0]} was silent for longer than --grace and "
                          "was failed and retried by another worker; going on", file=sys.stderr)
                    continue
                raise
            if mine and mine[0].state == TrialState.FAIL:
                gc.collect()  # free its tensors now: they hang on its traceback, which sits in reference cycles
                failures += 1
                if failures >= MAX_CONSECUTIVE_FAILURES:
                    reason = mine[0].user_attrs.get("fail_reason", "see the study's failed trials")
                    print(f"hpo run: worker {index}: {failures} trials failed in a row, stopping; last: {reason}",
                          file=sys.stderr)
                    return 1
            else:
                failures = 0
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        return 0
    except UserError as error:
        print(f"hpo run: worker {index}: error: {error}", file=sys.stderr)
        return 2
    except DatabaseUnavailable as error:
        print(f"hpo run: worker {index}: stopping: the database {storage_mod.mask(url)} was {error}; "
              "the study is intact, run the same command again once the database is back", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _worker_entry(*args) -> None:
    sys.exit(worker_main(*args))


def _with_sampler_seed(spec: StudySpec, seed: int) -> StudySpec:
    from dataclasses import replace  # noqa: PLC0415

    options = tuple((k, seed if k == "seed" else v) for k, v in spec.sampler.options)
    return replace(spec, sampler=replace(spec.sampler, options=options))


# ----------------------------------------------------------------- the command


def run(*, study: str, trials: int, workers: int = 1, timeout: float | None = None, storage: str | None = None,
        device: str = "auto", data_dir: Path | None = None, quiet: bool = False,
        heartbeat: int = storage_mod.HEARTBEAT_SECONDS, grace: int = storage_mod.GRACE_SECONDS,
        checkpoint_dir: Path | None = Path("checkpoints"), patience: float = PATIENCE_SECONDS) -> int:
    from hpo import data as data_mod  # noqa: PLC0415
    from hpo.display import RunDisplay, console, err_console  # noqa: PLC0415
    from hpo.train import pick_device  # noqa: PLC0415

    if not os.environ.get("HPO_DEBUG"):
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    # every check a user can fail comes before the study is created
    spec = load_study(study)
    url = storage_mod.resolve_url(storage)
    storage_mod.parse_url(url)
    pick_device(device)
    data_mod.ensure(data_dir, log=lambda line: err_console.print(line, style="dim"))  # once, before K workers
    if storage_mod.create_database_if_missing(url):
        err_console.print(f"created database for {storage_mod.mask(url)}", style="dim")
    rdb = storage_mod.open_storage(url, heartbeat=heartbeat, grace=grace)
    opened = ensure_study(rdb, spec, url)
    study_id = opened._study_id
    if count(rdb.get_all_trials(study_id, deepcopy=False)).finished >= trials:
        console.print(f"study {spec.name!r} already has {trials} or more finished trials; nothing to run "
                      f"(ask for more with --trials)")
        return 0

    deadline = time.time() + timeout if timeout else None
    job = Job(spec, url, trials, deadline, device, str(data_dir) if data_dir else None, workers, heartbeat, grace,
              str(checkpoint_dir) if checkpoint_dir else None, patience)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker_entry, name=f"hpo-worker-{i}", args=(job, i)) for i in range(workers)]
    display = RunDisplay(spec, trials, storage_mod.mask(url), workers, live=not quiet and console.is_terminal)

    def refresh() -> None:
        try:
            display.update(rdb.get_all_trials(study_id, deepcopy=False))
        except Exception as error:
            if not is_outage(error):
                raise  # during an outage the display skips a beat; the workers wait it out themselves

    for p in procs:
        p.start()
    try:
        with display:
            while any(p.is_alive() for p in procs):
                refresh()
                time.sleep(POLL_SECONDS)
            refresh()
    except KeyboardInterrupt:
        for p in procs:
            p.join(timeout=30)
        counts = count(rdb.get_all_trials(study_id, deepcopy=False))
        err_console.print(f"interrupted: {counts.finished}/{trials} finished; run the same command to continue")
        return 130
    for p in procs:
        p.join()
    try:
        final = Backoff(patience).call(lambda: rdb.get_all_trials(study_id, deepcopy=False))
    except DatabaseUnavailable as error:
        print(f"hpo run: the database {storage_mod.mask(url)} was {error}; run the same command again "
              "once it is back", file=sys.stderr)
        return 1
    display.summary(final)
    counts = count(final)
    bad = [p for p in procs if p.exitcode not in (0, None)]
    if bad:
        err_console.print(f"hpo run: {len(bad)} of {workers} workers stopped with an error (see above); "
                          f"{counts.finished}/{trials} finished; rerun to continue")
        return 1
    if counts.finished < trials:
        reason = "the --timeout passed" if deadline and time.time() >= deadline else "the workers stopped"
        err_console.print(f"{counts.finished}/{trials} finished: {reason}; run the same command to continue")
    return 0
