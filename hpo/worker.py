"""A worker process of `hpo run`: claim a trial, build it, train it, tell Optuna how it ended.

Exact counts under concurrency: a worker takes the study's lock, counts finished and running
trials, and asks for a trial only while their sum is short of N; the lock is released as soon
as the new trial exists in storage. A worker that finds N reached stops; one that finds the
remaining slots all running waits, so a failed or dead trial is replaced. Workers on other
machines follow the same protocol through the same database.

Heartbeats: Optuna beats only inside `study.optimize`; a worker that uses ask and tell beats
itself (`Heartbeat`), so a dead worker's trial is failed after the grace period and retried
from its checkpoint by whoever looks next.

Faults: a trial that fails (diverged, out of memory, time limit) is recorded FAIL and the
worker goes on; a database outage is waited out (retry.Backoff) and, past its patience,
ends the worker with one line while the study stays as it was.
"""

from __future__ import annotations

import _thread
import gc
import os
import select
import signal
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import optuna
import torch
from optuna.trial import TrialState

from hpo import artifacts, records
from hpo import data as data_mod
from hpo.backend import OneAtATime, TrainJob, TrialBackend
from hpo.errors import CannotWrite, UserError
from hpo.limits import MAX_SEED
from hpo.objective import TrialHooks, ended_here, finish, prepare
from hpo.packed import Packed, shape_names
from hpo.retry import PATIENCE_SECONDS, Backoff, DatabaseUnavailable, describe, is_outage
from hpo.storage import Storage, study_gone
from hpo.study import StudySpec
from hpo.trainer import pick_device, share_cpu

POLL_SECONDS = 1.0
MAX_CONSECUTIVE_FAILURES = 5    # errors in a row: something is wrong beyond one trial's values
MAX_CONSECUTIVE_DIVERGED = 20   # diverged trials in a row: a search outcome, until it is all the space gives
INTERRUPTED = {"reason": "interrupted: Ctrl-C or SIGTERM"}  # what an interrupted trial's fail_reason says
STOP_PATIENCE = 10.0  # how long an interrupted worker waits out a database blip: well within hpo run's STOP_SECONDS
JOINED = "hpo_workers_joined"  # study system attribute: how many worker processes have joined, ever


@dataclass(frozen=True)
class Job:
    """What every worker process of one `hpo run` is told."""

    spec: StudySpec
    storage: Storage
    target: int
    deadline: Optional[float]
    device: str
    data_dir: Optional[str]
    workers: int
    heartbeat: int
    grace: int
    checkpoint_dir: Optional[str]
    patience: float = PATIENCE_SECONDS  # how long a worker waits out an unreachable database
    artifacts: Optional[str] = None     # the artifact store's folder: each trial's config goes there
    pack: int = 1                        # trials trained at once as one stacked model (hpo.packed); 1: one at a time
    env: Optional[dict] = None           # `hpo run`'s environment, which a worker forked by the fork server takes on
    parent: Optional[int] = None         # `hpo run`'s pid, which each worker watches (watch_parent)


class Heartbeat:
    """Records a heartbeat for a running trial now and every `interval` seconds until stopped."""

    def __init__(self, storage: optuna.storages.RDBStorage, trial_id: int, interval: int):
        self._stop = threading.Event()

        def beat():
            while True:
                storage.record_heartbeat(trial_id)
                if self._stop.wait(interval):
                    return

        self._thread = threading.Thread(target=beat, name=f"hpo-heartbeat-{trial_id}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Claimed:
    trial: optuna.Trial
    trial_id: int                      # the storage's id, for heartbeats and reads
    frozen: optuna.trial.FrozenTrial   # as stored when asked: a retry's first attempt, its constraints
    heartbeat: Heartbeat


class Worker:
    def __init__(self, job: Job, index: int, backend: TrialBackend):
        self.job, self.index, self.backend = job, index, backend
        self.device = pick_device(job.device)
        if self.device.type == "cuda" and torch.cuda.device_count() > 1:
            self.device = torch.device("cuda", index % torch.cuda.device_count())
        if self.device.type == "cpu":
            share_cpu(job.workers)  # this run's workers split the cores
        spec = job.spec
        root = Path(job.data_dir) if job.data_dir else None
        self.data = data_mod.load(spec.data, self.device, root)
        # eval: val reports and prunes on held-out training images; the test set waits for the end
        self.fit_data = self.data.validation() if spec.eval == "val" else self.data
        self.rdb = job.storage.open(heartbeat=job.heartbeat, grace=job.grace, schema_ready=True)  # hpo run opened it
        self.study_id = self.rdb.get_study_id_from_name(spec.name)
        self.lock = job.storage.lock(spec.name)
        self.joined = self.join()
        seed = dict(spec.sampler.options).get("seed")
        if seed is not None:
            seed = (seed + self.joined) % (MAX_SEED + 1)  # the 2nd worker of seed 2**32 - 1 takes 0
        self.study = optuna.load_study(study_name=spec.name, storage=self.rdb, sampler=spec.make_sampler(seed=seed),
                                       pruner=spec.make_pruner())
        self.backoff = Backoff(job.patience)
        self.checkpoints = Path(job.checkpoint_dir) if job.checkpoint_dir else None
        # its trials' checkpoints are its own (hpo.checkpoints)
        self.checkpoint_key = job.storage.study_checkpoint_key(self.rdb, self.study_id)
        self.store = artifacts.open_store(Path(job.artifacts)) if job.artifacts else None
        # trials this worker asked for and has not told how they ended: what a Ctrl-C fails and queues
        # again, wherever in the loop it lands (the claim's lock release, between claim and train...)
        self.held: dict[int, optuna.Trial] = {}

    def join(self) -> int:
        """This worker's place among every worker that has ever joined the study, on any machine
        and in any run: the k-th seeds its sampler with `sampler.seed + k`, so no two workers
        propose the same trials in lockstep, however many runs start together."""
        with self.lock.hold():
            joined = self.rdb.get_study_system_attrs(self.study_id).get(JOINED, 0)
            self.rdb.set_study_system_attr(self.study_id, JOINED, joined + 1)
        return joined

    def loop(self) -> int:
        """Claim, build, train, tell, until the study has its N finished trials (0) or this worker
        must stop (1: too many failures in a row). A Ctrl-C fails each trial it holds and queues it
        again, so the next run resumes it from its checkpoint."""
        try:
            return self.claim_and_train()
        except KeyboardInterrupt:
            held, self.held = list(self.held.values()), {}
            self.interrupted(held)
            raise
        except CannotWrite as error:  # every trial would fail so: its trials wait for the next run instead
            held, self.held = list(self.held.values()), {}
            self.interrupted(held, reason=f"interrupted: {error}")
            queued = f"; trial {', '.join(str(t.number) for t in held)} queued again" if held else ""
            say(f"hpo run: worker {self.index}: stopping: {error}{queued} (free some space, or make the folder "
                "writable, then run the same command)")
            return 1

    def claim_and_train(self) -> int:
        failures = diverged = 0
        while self.job.deadline is None or time.time() < self.job.deadline:
            try:
                claimed = self.claim()
                if claimed is None:
                    return 0
                if not claimed:  # the remaining slots are all running: wait, one of them may fail
                    time.sleep(POLL_SECONDS)
                    continue
                ended = self.train(claimed)
            except Exception as error:
                if isinstance(error, DatabaseUnavailable) or not is_outage(error):
                    raise
                # a trial cut short here stays RUNNING, goes stale and is retried from its checkpoint
                self.held.clear()
                self.backoff.wait(error)
                continue
            for state, reason in ended:
                if state != TrialState.FAIL:
                    failures = diverged = 0
                    continue
                gc.collect()  # free its tensors now: they hang on its traceback, which sits in reference cycles
                # a trial whose loss blew up failed on its values (a learning rate too high), not on a fault
                # of the worker's: the search goes on past it, unless the space gives nothing else
                if reason.startswith(records.DIVERGED):
                    diverged += 1
                else:
                    failures += 1
                if failures >= MAX_CONSECUTIVE_FAILURES:
                    say(f"hpo run: worker {self.index}: {failures} trials failed in a row, stopping; "
                        f"last: {reason}")
                    return 1
                if diverged >= MAX_CONSECUTIVE_DIVERGED:
                    say(f"hpo run: worker {self.index}: {diverged} trials in a row diverged, stopping; last: "
                        f"{reason}; the search space reaches too little that trains: narrow its learning rates "
                        "(or what else makes the loss blow up) toward the base's")
                    return 1
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        return 0

    def claim(self) -> Optional[list[Claimed]]:
        """Under the study's lock: fail stale trials, count, and ask for as many trials as the
        backend trains at once and the study still needs. None: the study has its N."""
        with self.lock.hold(), warnings.catch_warnings():
            # ask and tell beat themselves (Heartbeat): Optuna's warning about it does not apply
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with")
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(self.study)
            # through the study's cached storage, which reads again only the trials that were not
            # finished when it last looked and the newer ones (a finished trial does not change), not
            # every trial with all its attributes on each claim, under the lock (BENCHMARKS.md, P5)
            counts = records.count(self.study.get_trials(deepcopy=False))
            self.backoff.ok()
            if counts.finished >= self.job.target:
                return None
            room = min(self.backend.group_size, self.job.target - counts.finished - counts.running)
            claimed: list[Claimed] = []
            asked: list[optuna.Trial] = []
            try:
                shape = None
                for i in range(max(room, 0)):
                    # a group's other trials take its first one's shape, so that they train as one stacked
                    # model; the sampler draws everything else (Optuna's partial enqueue). Not while trials
                    # wait in the queue (retries, after a Ctrl-C): ask() takes the oldest of those first, and
                    # the shape queued for this group would be left behind for nobody
                    if i and not self.waiting():
                        shape = shape if shape is not None else shape_of(claimed[0].trial, self.job.spec)
                        self.study.enqueue_trial(shape, skip_if_exists=False)
                    with interrupts_held():  # the asked trial is held before a Ctrl-C is raised
                        asked.append(self.study.ask())
                        self.held[asked[-1].number] = asked[-1]
                    trial_id = self.rdb.get_trial_id_from_study_id_trial_number(self.study_id, asked[-1].number)
                    claimed.append(Claimed(asked[-1], trial_id, self.rdb.get_trial(trial_id),
                                           Heartbeat(self.rdb, trial_id, self.job.heartbeat)))
            except BaseException as error:
                for c in claimed:
                    c.heartbeat.stop()
                if not isinstance(error, KeyboardInterrupt):  # a Ctrl-C fails (and queues again) what is held
                    # any other error (a database outage): silent from now on, stale after the grace
                    # period, then retried
                    for trial in asked:
                        self.held.pop(trial.number, None)
                raise
            return claimed

    def waiting(self) -> bool:
        """Whether a trial waits in the study's queue for the next ask()."""
        return bool(self.rdb.get_all_trials(self.study_id, deepcopy=False, states=(TrialState.WAITING,)))

    def train(self, claimed: list[Claimed]) -> list[tuple[TrialState, str]]:
        """Build each claimed trial, train those within budget, tell each how it ended."""
        jobs, running, sizes, histories, ended = [], [], [], [], []
        try:
            for c in claimed:
                try:
                    plan = prepare(c.trial, self.job.spec, frozen=c.frozen, device=self.device,
                                   checkpoint_dir=self.checkpoints,
                                   checkpoint_key=self.checkpoint_key)
                except UserError:  # an invalid sampled config: this trial fails, the study goes on
                    self.study.tell(c.trial, state=TrialState.FAIL)
                    self.held.pop(c.trial.number, None)
                    ended.append((TrialState.FAIL, c.trial.user_attrs.get(records.FAIL_REASON, "")))
                    continue
                if plan is None:  # over budget: rejected before any step, not counted
                    self.study.tell(c.trial, state=TrialState.PRUNED)
                    self.held.pop(c.trial.number, None)
                    continue
                if self.store:  # the dashboard offers it for download beside the trial
                    try:
                        artifacts.upload_config(self.store, c.trial, plan.config.to_dict())
                    except OSError as error:
                        raise CannotWrite(f"the trial's config file in the artifact store {self.job.artifacts}",
                                          error, folder=self.job.artifacts) from None
                hooks = TrialHooks(c.trial, self.job.spec, epochs=plan.config.epochs, retry=self.backoff.call)
                final = hooks.test_once(self.data.test_x, self.data.test_y) if self.job.spec.eval == "val" else None
                jobs.append(TrainJob(plan.config, hooks.report, hooks.on_epoch,
                                     hooks.on_step if self.job.spec.budget.trial_seconds else None, plan.checkpoint,
                                     final))
                running.append(c)
                sizes.append(plan.n_params)
                histories.append(hooks.publish_history)
            outcomes = self.backend.run(jobs, self.fit_data)
        finally:
            for c in claimed:
                c.heartbeat.stop()
        outage = unwritable = None
        # trained: a Ctrl-C now waits until each trial is told how it ended (a moment), rather than
        # leaving a finished trial RUNNING until the grace period fails and re-runs it
        with interrupts_held():
            for c, job, n_params, publish_history, outcome in zip(running, jobs, sizes, histories, outcomes):
                if isinstance(outcome.error, CannotWrite):  # held: failed and queued again as the worker stops
                    unwritable = outcome.error
                    continue
                # from here it is told, or was failed and retried by another, or goes stale in an outage
                self.held.pop(c.trial.number, None)
                try:
                    if not ended_here(outcome):
                        raise outcome.error
                    publish_history()
                    state = finish(self.study, c.trial, outcome, objectives=self.job.spec.objectives,
                                   n_params=n_params)
                except optuna.exceptions.UpdateFinishedTrialError:
                    say(f"hpo run: worker {self.index}: trial {c.trial.number} was silent for longer than --grace "
                        "and was failed and retried by another worker; going on")
                    continue
                except Exception as error:
                    if not is_outage(error):
                        raise
                    outage = error  # the trial stays RUNNING, goes stale and is retried from its checkpoint
                    continue
                ended.append((state, c.trial.user_attrs.get(records.FAIL_REASON, "")))
                if job.checkpoint:
                    try:
                        job.checkpoint.unlink(missing_ok=True)
                    except OSError as error:  # a folder made read-only: the next trial's checkpoint fails too
                        unwritable = CannotWrite(f"the checkpoint folder {job.checkpoint.parent} (removing "
                                                 f"{job.checkpoint.name} of a trial that ended)", error)
        if unwritable is not None:
            raise unwritable
        if outage is not None:
            raise outage  # the loop waits the outage out, or stops the worker past its patience
        return ended

    def study_gone(self) -> bool:
        return study_gone(self.rdb, self.job.spec.name, self.study_id)

    def interrupted(self, trials: list[optuna.Trial], reason: Optional[str] = None) -> None:
        """Ctrl-C: each trial claimed and not yet ended is failed and queued again at once, as a
        dead worker's would be after the grace period, so the next run resumes it from its
        checkpoint. One asked but not yet sampled (Ctrl-C during the claim) is failed alone: its
        retry would be an empty proposal, which the sampler makes afresh anyway.

        Failed first, then queued: a trial whose end could not be recorded stays RUNNING with no
        retry beside it, so it is failed and queued once, by whoever finds it stale. A database
        blip is waited out for STOP_PATIENCE seconds; what could not be recorded gets one line."""
        retry = self.rdb.get_heartbeat_stale_trial_callback()
        backoff = Backoff(STOP_PATIENCE)
        for trial in trials:
            done = "failed"
            try:
                # read before the reason is set: the retry must not inherit it
                frozen = backoff.call(lambda: self.rdb.get_trial(
                    self.rdb.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)))
                if frozen.state.is_finished():  # told just before the Ctrl-C landed: nothing to undo
                    continue
                backoff.call(lambda: trial.set_user_attr(records.FAIL_REASON, reason or INTERRUPTED["reason"]))
                backoff.call(lambda: self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True))
                done = "queued again"
                if retry and (frozen.params or frozen.system_attrs.get("fixed_params")):
                    backoff.call(lambda: retry(self.study, frozen))
            except Exception as error:
                if self.study_gone():  # deleted under the run: nothing to fail or queue, and `hpo run` says so
                    return
                if isinstance(error, DatabaseUnavailable):
                    backoff.patience = 0  # the database is gone: try the others once each, without waiting
                then = ("it stays RUNNING until --grace passes, then is failed and queued again" if done == "failed"
                        else "it is failed, and the next run samples a new trial in its place")
                say(f"hpo run: worker {self.index}: interrupted trial {trial.number} could not be {done} "
                    f"({describe(error)}); {then}")


def shape_of(trial: optuna.Trial, spec: StudySpec) -> dict:
    """The values of `trial`'s searched parameters that decide its stacked model's shape (its
    layers, batch size, epochs: hpo.packed.pack_key), drawn now if they were not yet."""
    spec.space.sample(trial)
    return {name: trial.params[name] for name in shape_names(spec) if name in trial.params}


def worker_main(job: Job, index: int) -> int:
    """One worker process: load the data once, then run trials while the study is short of N."""
    if not os.environ.get("HPO_DEBUG"):
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        warnings.simplefilter("ignore")
    worker = None
    try:
        worker = Worker(job, index, Packed(job.pack) if job.pack > 1 else OneAtATime())
        return worker.loop()
    except UserError as error:
        say(f"hpo run: worker {index}: error: {error}")
        return 2
    except DatabaseUnavailable as error:
        say(f"hpo run: worker {index}: stopping: the database {job.storage.masked} was {error}; "
            "run the same command again once the database is back: it goes on from what the database holds")
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        if worker is not None and worker.study_gone():
            return 1  # deleted under the run (hpo delete): `hpo run` says so, once for all its workers
        if worker is None and isinstance(error, KeyError) and study_missing(job):
            return 1  # deleted as the worker started (its KeyError came from the study's lookup)
        raise
    finally:
        if worker is not None:
            worker.lock.close()


def say(line: str) -> None:
    """One line on standard error, in one write: two workers' lines printed at once ran together
    ("...; stoppinghpo run: worker 1: ..."), print writing the text and its newline apart."""
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # nobody reads it any more (2>&1 | head, a killed hpo run)
        pass


def study_missing(job: Job) -> bool:
    """Whether the run's study is not in its storage (an error while looking is no sign of it)."""
    try:
        job.storage.open(heartbeat=None, schema_ready=True).get_study_id_from_name(job.spec.name)
    except KeyError:
        return True
    except Exception:
        return False
    return False


def watch_parent(ppid: int, parent: int, index: int) -> None:
    """Stop this worker as Ctrl-C would once its `hpo run` (pid `parent`) is gone (killed with
    SIGKILL, or its machine's OOM killer): the trial is failed, queued again and resumed from its
    checkpoint by the next run, instead of a worker nobody watches training on and taking new
    trials. A forked worker's own parent (`ppid`) is the fork server, which lives on while any of
    its workers does, so the watch is on `hpo run` itself."""
    wait_for_exit(parent, ppid)
    INTERRUPTED["reason"] = f"interrupted: its hpo run (pid {parent}) was killed"
    say(f"hpo run: worker {index}: hpo run (pid {parent}) is gone; stopping")
    _thread.interrupt_main(signal.SIGTERM)  # handled as Ctrl-C (worker_entry), even where SIGINT is ignored


def wait_for_exit(pid: int, ppid: int) -> None:
    """Block until process `pid` has ended: a pidfd (Linux), which becomes readable when it exits
    and cannot mistake a new process that took the number over; elsewhere a poll that also ends
    when this process's parent changes (`ppid`: a spawned worker is reparented when `hpo run` dies)."""
    if hasattr(os, "pidfd_open"):
        try:
            fd = os.pidfd_open(pid)
        except OSError:  # gone already
            return
        select.select([fd], [], [])
        return
    while os.getppid() == ppid:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            pass
        time.sleep(POLL_SECONDS)


class Held:
    """Whether a Ctrl-C is being held back (interrupts_held), and whether one came meanwhile."""

    depth = 0
    pending = False


@contextmanager
def interrupts_held():
    """A Ctrl-C or SIGTERM that comes inside the block is raised as the block ends. `study.ask()`
    stores its trial before it returns it: a KeyboardInterrupt between the two would leave a
    RUNNING trial nobody knows of, which holds a slot of --trials until the grace period passes."""
    Held.depth += 1
    try:
        yield
    finally:
        Held.depth -= 1
        if not Held.depth and Held.pending:
            Held.pending = False
            raise KeyboardInterrupt


def interrupted_once(signum, frame) -> None:
    """The first Ctrl-C or SIGTERM stops the worker as Ctrl-C does; any later one is let pass, so
    that it cannot cut short the recording of how the worker's trials ended (Ctrl-C at a terminal
    reaches the worker and `hpo run`, which then sends SIGTERM as well)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, let_pass)
    if Held.depth:
        Held.pending = True
        return
    raise KeyboardInterrupt


def let_pass(signum, frame) -> None:
    """A second interrupt while the first is being handled: nothing to do."""


def worker_entry(job: Job, index: int) -> None:
    # `hpo run` sends its workers SIGTERM whenever it is stopped (Ctrl-C, `kill -INT` to it alone,
    # `docker stop`'s SIGTERM), and the parent watch interrupts with it: a worker stops as on Ctrl-C,
    # failing and re-queueing its trial, even where SIGINT is ignored (`hpo run &` in a script)
    # or did not reach it, which would leave its trial RUNNING
    signal.signal(signal.SIGTERM, interrupted_once)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, interrupted_once)
    if job.env is not None and job.env != os.environ:  # forked from a fork server started earlier
        os.environ.clear()
        os.environ.update(job.env)
    watch = (os.getppid(), job.parent or os.getppid(), index)
    threading.Thread(target=watch_parent, args=watch, name="hpo-parent-watch", daemon=True).start()
    status = worker_main(job, index)
    # everything is recorded and closed by now: skip the interpreter's teardown, which takes a
    # process that imported torch a second or two of CPU (8 workers on 2 cores: 25 s; P5)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
