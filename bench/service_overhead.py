#!/usr/bin/env python
"""P5: the service's overhead. `hpo run --workers K` with tiny trials: how much of the workers'
time is not spent inside training?

    overhead = 1 - (training seconds, summed over the workers) / (workers x wall)

- wall: from the launch of the `hpo run` command (a fresh Python process, imports and all) to
  the end of the run's last trial (its tell); the command exits a moment later.
- training: the sum of every trial's epochs as the trainer times them (`EpochResult.seconds`,
  stored as the `epoch_seconds` user attribute): each epoch's train pass over its batches plus
  its test pass, from the epoch's first step to its accuracy, which is what a hand-written loop
  would spend too. Everything else is the service's: process start and imports, data load,
  opening the study, claiming (lock, stale check, count, ask), sampling and recording the
  config, each trial's setup inside `train()` (the first one in a process pays torch's lazy
  import of torch._dynamo), the per-epoch report to Optuna (report, two attributes,
  should_prune), the per-epoch checkpoint, the tell, and polling while the last trials run.

The table splits the overhead into start-up (paid once per worker process) and the rest;
"per-trial overhead" is the steady state a long run tends to: what each trial adds, against its
training. "CPU overhead" is the same ratio in CPU seconds: 1 - CPU inside epochs / CPU of every
hpo process (workers and the `hpo run` parent); it is the fairer figure on an oversubscribed or
shared machine, where an epoch's wall time includes time other processes held the cores.

The command runs as `hpo run` does (`hpo.cli.main(["run", ...])` in a new process, so the real
CLI, runner, worker, objective and storage code), on a study written here: a small convnet on a
synthetic 24x24 three-class set (examples/make_npz.py's shapes), TPE and the median pruner, a few
epochs per trial. Each worker process is this file's `__mp_main__` (spawn), which wraps hpo's
functions with timers (a few microseconds a call) to break the overhead down; each worker writes
its timeline to a JSON file as it stops. The machine's busy CPU seconds and the PostgreSQL
server's are read from /proc before and after, to show how much else was running.

    python bench/service_overhead.py                              # 8 workers, fresh PostgreSQL db
    python bench/service_overhead.py --workers 2 --trials 24
    python bench/service_overhead.py --storage sqlite             # a fresh SQLite file instead
    python bench/service_overhead.py --also-sqlite --repeats 2    # PostgreSQL and SQLite, twice each
    python bench/service_overhead.py --profile 0                  # cProfile worker 0, print its top calls

`--storage` takes `postgresql` (default: a new database `hpo_p5_<pid>_<n>` on $HPO_TEST_POSTGRES
or postgresql+psycopg://postgres@127.0.0.1:5432, dropped afterwards), `sqlite` (a new file in a
temporary folder), or a URL (used as given, not dropped).
"""

from __future__ import annotations

import os
import time

_MP_MAIN_AT = time.time()  # in a worker: when the interpreter got to this file (spawn runs it as __mp_main__)
_MP_MAIN_CPU = sum(os.times()[:2])

import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TRACE_ENV = "HPO_P5_TRACE"      # folder each worker writes its timeline to
PROFILE_ENV = "HPO_P5_PROFILE"  # index of the worker to run under cProfile
SERVER = os.environ.get("HPO_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432")


# ============================================================ in the worker processes: timers


def process_start_time(pid: str = "self") -> float:
    """When the process started, in epoch seconds (/proc; 10 ms resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[19])  # starttime, field 22
    btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                 if line.startswith("btime"))
    return btime + ticks / os.sysconf("SC_CLK_TCK")


class Trace:
    """Spans (name, start, end, thread CPU seconds) of one process, written out as JSON."""

    def __init__(self, folder: str):
        self.folder = Path(folder)
        self.spans: list[tuple[str, float, float, float]] = []
        self.values: dict[str, list] = {"epochs": [], "heartbeats": []}  # epochs: (end, wall s, cpu s)
        self.meta: dict = {"pid": os.getpid(), "proc_start": process_start_time(), "mp_main": _MP_MAIN_AT,
                           "mp_main_cpu": _MP_MAIN_CPU}

    def wrap(self, owner, name: str, label: str, *, main_thread_only: bool = False):
        import threading

        original = getattr(owner, name)
        spans = self.spans

        def timed(*args, **kwargs):
            if main_thread_only and threading.current_thread() is not threading.main_thread():
                return original(*args, **kwargs)
            start, cpu = time.time(), time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                spans.append((label, start, time.time(), time.thread_time() - cpu))

        timed.__wrapped__ = original
        setattr(owner, name, timed)

    def wrap_context(self, owner, name: str, acquire: str, held: str) -> None:
        """A context manager method: the time to enter (a lock's wait) and the time inside."""
        from contextlib import contextmanager

        original = getattr(owner, name)
        spans = self.spans

        @contextmanager
        def timed(*args, **kwargs):
            start, cpu = time.time(), time.thread_time()
            manager = original(*args, **kwargs)
            value = manager.__enter__()
            entered, cpu_entered = time.time(), time.thread_time()
            spans.append((acquire, start, entered, cpu_entered - cpu))
            try:
                yield value
            except BaseException:
                if not manager.__exit__(*sys.exc_info()):
                    raise
            else:
                manager.__exit__(None, None, None)
            finally:
                spans.append((held, entered, time.time(), time.thread_time() - cpu_entered))

        setattr(owner, name, timed)

    def dump(self, index: int, status) -> None:
        import torch

        self.meta.update(index=index, status=status, end=time.time(), cpu=sum(os.times()[:2]),
                         main_thread_cpu=time.thread_time(), torch_threads=torch.get_num_threads())
        path = self.folder / f"worker-{index}.json"
        path.write_text(json.dumps({"meta": self.meta, "spans": self.spans, "values": self.values}))


def install_worker_trace(folder: str) -> None:
    """Wrap the worker's steps with timers; each wrapped function is called exactly as before."""
    import threading

    import optuna

    import hpo.artifacts
    import hpo.backend
    import hpo.data
    import hpo.objective
    import hpo.storage
    import hpo.trainer
    import hpo.worker

    trace = Trace(folder)
    w = hpo.worker
    trace.wrap(w.Worker, "__init__", "init")
    trace.wrap(hpo.data, "load", "init.data_load")
    trace.wrap(hpo.storage.Storage, "open", "init.storage_open")
    trace.wrap(w.Worker, "join", "init.join")
    trace.wrap(optuna, "load_study", "init.load_study")
    trace.wrap(w.Worker, "claim", "claim")
    trace.wrap_context(hpo.storage.StudyLock, "hold", "lock.wait", "lock.held")
    trace.wrap(optuna.storages, "fail_stale_trials", "claim.fail_stale")
    trace.wrap(hpo.storage.RDBStorage, "get_all_trials", "rdb.get_all_trials", main_thread_only=True)
    trace.wrap(optuna.Study, "ask", "claim.ask")
    trace.wrap(w.Heartbeat, "__init__", "claim.heartbeat_start")
    trace.wrap(w.Heartbeat, "stop", "trial.heartbeat_stop")
    trace.wrap(w.Worker, "train", "trial")
    trace.wrap(w, "prepare", "trial.prepare")
    trace.wrap(hpo.artifacts, "upload_config", "trial.artifact")
    trace.wrap(hpo.backend, "train", "trial.train")
    trace.wrap(hpo.objective.TrialHooks, "report", "train.report")
    trace.wrap(hpo.trainer, "save", "train.checkpoint_save")
    trace.wrap(w, "finish", "trial.tell")
    trace.wrap(hpo.objective.TrialHooks, "publish_history", "trial.history")

    # an epoch's CPU: from its batches() (the first thing of its loop) to on_epoch, less the checkpoint save between
    import hpo.steps  # noqa: PLC0415  (the CPU's eager step draws each epoch's batches there)

    batches, on_epoch, mark = hpo.steps.batches, hpo.objective.TrialHooks.on_epoch, [0.0, 0.0]

    def marked_batches(*args, **kwargs):
        mark[:] = [time.thread_time(), saved_cpu()]
        return batches(*args, **kwargs)

    def saved_cpu():
        return sum(s[3] for s in trace.spans if s[0] == "train.checkpoint_save")

    def record_epoch(self, result):
        if not result.restored:
            cpu = time.thread_time() - mark[0] - (saved_cpu() - mark[1])
            trace.values["epochs"].append((time.time(), result.seconds, cpu))
        return on_epoch(self, result)

    hpo.steps.batches = marked_batches
    hpo.objective.TrialHooks.on_epoch = record_epoch

    beat = hpo.storage.RDBStorage.record_heartbeat

    def record_heartbeat(self, trial_id):
        start = time.time()
        try:
            return beat(self, trial_id)
        finally:
            trace.values["heartbeats"].append((start, time.time()))

    hpo.storage.RDBStorage.record_heartbeat = record_heartbeat

    class Clock:  # hpo.worker's `time`, with its sleeps (the poll while all slots run) timed
        def __getattr__(self, name):
            return getattr(time, name)

        @staticmethod
        def sleep(seconds):
            start = time.time()
            time.sleep(seconds)
            if threading.current_thread() is threading.main_thread():  # not the parent watch's
                trace.spans.append(("poll_sleep", start, time.time(), 0.0))

    w.time = Clock()

    worker_main = w.worker_main

    def traced_main(job, index):
        trace.meta.update(worker_main=time.time(), worker_main_cpu=sum(os.times()[:2]))
        status = None
        profile_index = os.environ.get(PROFILE_ENV)
        try:
            if profile_index is not None and int(profile_index) == index:
                import cProfile

                profiler = cProfile.Profile()
                try:
                    status = profiler.runcall(worker_main, job, index)
                finally:
                    profiler.dump_stats(str(Path(folder) / f"worker-{index}.prof"))
            else:
                status = worker_main(job, index)
            return status
        finally:
            trace.dump(index, status)

    w.worker_main = traced_main


def forkserver_cpu() -> float:
    """CPU seconds of this process's multiprocessing fork server so far (hpo.processes: it
    imports what the workers need, once), 0 where none was started."""
    from multiprocessing import forkserver

    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    if not pid:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14, 15


def install_parent_trace(folder: str) -> None:
    """In the `hpo run` process: when it spawned each worker, and its CPU seconds at the end."""
    import atexit
    import multiprocessing.context

    meta = {"pid": os.getpid(), "proc_start": process_start_time(), "main": time.time(), "spawned": []}
    for kind in (multiprocessing.context.SpawnProcess, multiprocessing.context.ForkServerProcess):
        def traced_start(self, start=kind.start):
            meta["spawned"].append(time.time())
            return start(self)

        kind.start = traced_start

    import hpo.processes  # hpo run ends the fork server once its workers are done: read its CPU first

    stop = hpo.processes.stop_fork_server

    def traced_stop():
        meta["forkserver_cpu"] = max(meta.get("forkserver_cpu", 0.0), forkserver_cpu())  # called again by the CLI
        stop()

    hpo.processes.stop_fork_server = traced_stop

    def dump():
        meta.update(end=time.time(), cpu=sum(os.times()[:2]))
        (Path(folder) / "parent.json").write_text(json.dumps(meta))

    atexit.register(dump)


if __name__ == "__mp_main__" and os.environ.get(TRACE_ENV):
    install_worker_trace(os.environ[TRACE_ENV])


# ============================================================ the benchmark (the driving process)

STUDY = """\
# P5: tiny trials for the service-overhead benchmark (bench/service_overhead.py)
name: p5
base:
  model: {{family: convnet, layers: [8, M, 16, GAP, H], batchnorm: true}}
  optimizer: {{name: sgd, lr: 0.05, momentum: 0.9}}
  schedule: {{name: none}}
  batch_size: 64
  epochs: {epochs}
  data: {{dataset: npz, path: {npz}}}
  seed: 0
search:
  optimizer.name: {{choices: [sgd, adamw]}}
  optimizer.lr: {{float: [0.001, 0.2], log: true}}
  batch_size: {{choices: [32, 64, 128]}}
  model.layers.0: {{int: [4, 12], step: 4}}
  model.layers.2: {{int: [8, 24], step: 4}}
budget: {{max_params: 20000, epochs: {epochs}}}
pruner: {{name: median, n_startup_trials: 4, n_warmup_steps: 1}}
sampler: {{name: tpe, seed: 0}}
"""


def make_npz(path: Path, train: int, test: int) -> None:
    import importlib.util

    import numpy as np

    spec = importlib.util.spec_from_file_location("make_npz", ROOT / "examples" / "make_npz.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rng = np.random.default_rng(0)
    x_train, y_train = module.split(train, rng)
    x_test, y_test = module.split(test, rng)
    np.savez_compressed(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def cpu_model() -> str:
    import subprocess

    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    name = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "?")
    return f"{name}, {os.cpu_count()} cores"


def machine_cpu() -> float:
    """Busy CPU seconds of the whole machine so far (user+nice+system+irq+softirq+steal)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def postgres_cpu() -> float:
    """CPU seconds of the PostgreSQL server: the postmaster with its ended backends (cutime) and
    its live ones. 0 when no server runs here."""
    tick = os.sysconf("SC_CLK_TCK")
    procs = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        procs[entry.name] = (comm, fields[1], fields)
    total = 0.0
    for pid, (comm, ppid, fields) in procs.items():
        if not comm.startswith("postgres"):
            continue
        parent_is_postgres = procs.get(ppid, ("",))[0].startswith("postgres")
        own = int(fields[11]) + int(fields[12])
        children = int(fields[13]) + int(fields[14]) if not parent_is_postgres else 0
        total += (own + children) / tick
    return total


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def fresh_storage(kind: str, folder: Path, n: int) -> tuple[str, Callable[[], None]]:
    """(URL, cleanup) for `postgresql`, `sqlite` or a URL."""
    if kind == "sqlite":
        return f"sqlite:///{folder / 'p5.db'}", lambda: None
    if kind != "postgresql":
        return kind, lambda: None
    import sqlalchemy

    name = f"hpo_p5_{os.getpid()}_{n}"
    admin = sqlalchemy.create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))

    def drop():
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return f"{SERVER}/{name}", drop


def measure(args, kind: str, n: int) -> dict:
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="hpo-p5-") as tmp:
        tmp = Path(tmp)
        npz = tmp / "shapes.npz"
        make_npz(npz, args.train_images, args.test_images)
        (tmp / "p5.yaml").write_text(STUDY.format(epochs=args.epochs, npz=npz))
        traces = tmp / "trace"
        traces.mkdir()
        url, cleanup = fresh_storage(kind, tmp, n)
        try:
            env = {**os.environ, TRACE_ENV: str(traces), "HPO_OFFLINE": "1"}
            if args.profile is not None:
                env[PROFILE_ENV] = str(args.profile)
            command = [sys.executable, str(Path(__file__).resolve()), "_hpo_run", "run", "--study", "p5.yaml",
                       "--trials", str(args.trials), "--workers", str(args.workers), "--storage", url,
                       "--device", "cpu", "--quiet"]
            load_before = load_average()
            machine0, pg0 = machine_cpu(), postgres_cpu()
            launched = time.time()
            done = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True)
            exited = time.time()
            machine1, pg1 = machine_cpu(), postgres_cpu()
            if done.returncode != 0:
                sys.exit(f"hpo run failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
            result = analyse(kind, url, traces, launched, exited)
            result.update(machine_cpu=machine1 - machine0, postgres_cpu=pg1 - pg0, load_before=load_before)
            result["other_cpu"] = result["machine_cpu"] - result["hpo_cpu"] - result["postgres_cpu"]
            if args.profile is not None:
                show_profile(traces / f"worker-{args.profile}.prof")
            return result
        finally:
            cleanup()


# rows of the breakdown paid once per worker process, and those of the run's end
STARTUP = ("hpo run before", "interpreter start", "imports", "init:", "train: setup, first trial")
TAIL = ("poll sleep", "after the worker stopped")


def analyse(kind: str, url: str, traces: Path, launched: float, exited: float) -> dict:
    from hpo import records
    from hpo.storage import Storage

    rdb = Storage.resolve(url).open_existing()
    trials = rdb.get_all_trials(rdb.get_study_id_from_name("p5"), deepcopy=False)
    counts = records.count(trials)
    trained = [t for t in trials if records.epoch_seconds(t)]
    db_training = sum(sum(records.epoch_seconds(t)) for t in trained)
    rdb.engine.dispose()

    parent = json.loads((traces / "parent.json").read_text())
    workers = [json.loads(p.read_text()) for p in sorted(traces.glob("worker-*.json"))]
    last = max(s[2] for w in workers for s in w["spans"] if s[0] == "trial")
    wall = last - launched
    k = len(workers)
    training = sum(e[1] for w in workers for e in w["values"]["epochs"])
    training_cpu = sum(e[2] for w in workers for e in w["values"]["epochs"])
    rows: dict[str, list[float]] = {}  # what -> [worker-seconds of wall, CPU seconds], over every worker

    def add(key, wall_s, cpu_s=0.0):
        row = rows.setdefault(key, [0.0, 0.0])
        row[0] += wall_s
        row[1] += cpu_s

    def clip(a, b):
        return max(0.0, min(b, last) - max(a, launched))

    for w in workers:
        m, spans = w["meta"], w["spans"]

        def total(name, outer=None):
            """(wall within the window, CPU) of the spans called `name`, only those inside an `outer` span."""
            found = [s for s in spans if s[0] == name]
            if outer:
                outers = [s for s in spans if s[0] == outer]
                found = [s for s in found if any(o[1] <= s[1] and s[2] <= o[2] for o in outers)]
            return (sum(clip(s[1], s[2]) for s in found),
                    sum(s[3] * (clip(s[1], s[2]) / (s[2] - s[1]) if s[2] > s[1] else 1.0) for s in found))

        def minus(a, *others):
            return a[0] - sum(o[0] for o in others), a[1] - sum(o[1] for o in others)

        add("hpo run before this worker started (imports, fork server's preload, data check, study)",
            clip(launched, m["proc_start"]))
        add("process start (fork from the fork server, or spawn)", clip(m["proc_start"], m["mp_main"]), m["mp_main_cpu"])
        add("imports (torch, optuna, sqlalchemy, hpo)", clip(m["mp_main"], m["worker_main"]),
            m["worker_main_cpu"] - m["mp_main_cpu"])
        init, data_load = total("init"), total("init.data_load", "init")
        opened, schema_wait = total("init.storage_open", "init"), total("lock.wait", "init.storage_open")
        join, load_study = total("init.join", "init"), total("init.load_study", "init")
        add("init: data load (npz, checks, to tensors)", *data_load)
        add("init: open storage: waiting for the schema lock", *schema_wait)
        add("init: open storage, join, load_study",
            *minus((opened[0] + join[0] + load_study[0], opened[1] + join[1] + load_study[1]), schema_wait))
        add("init: rest (threads, artifact store)", *minus(init, data_load, opened, join, load_study))
        claim = total("claim")
        parts = {"claim: waiting for the study lock": total("lock.wait", "claim"),
                 "claim: fail_stale_trials": total("claim.fail_stale", "claim"),
                 "claim: count (get_all_trials)": total("rdb.get_all_trials", "claim"),
                 "claim: ask": total("claim.ask", "claim")}
        for name, part in parts.items():
            add(name, *part)
        add("claim: rest (heartbeat start, get_trial, unlock)", *minus(claim, *parts.values()))
        trial = total("trial")
        prep, art, tell = total("trial.prepare"), total("trial.artifact"), total("trial.tell")
        history = total("trial.history")
        train = total("trial.train")
        report, save = total("train.report"), total("train.checkpoint_save")
        epochs = (sum(e[1] for e in w["values"]["epochs"]), sum(e[2] for e in w["values"]["epochs"]))
        setup = minus(train, epochs, report, save)
        trains = sorted(s for s in spans if s[0] == "trial.train")
        first = (0.0, 0.0)
        if trains:
            f = trains[0]
            inner = [s for s in spans if s[0] in ("train.report", "train.checkpoint_save") and f[1] <= s[1] <= f[2]]
            ep = [e for e in w["values"]["epochs"] if f[1] <= e[0] <= f[2]]
            first = (clip(f[1], f[2]) - sum(e[1] for e in ep) - sum(s[2] - s[1] for s in inner),
                     f[3] - sum(e[2] for e in ep) - sum(s[3] for s in inner))
        add("trial: prepare (sample with TPE, record config)", *prep)
        add("trial: artifact (config YAML into the store)", *art)
        add("train: epochs (train + test pass) = TRAINING", *epochs)
        add("train: setup, first trial of a worker (torch lazy imports: torch._dynamo)", *first)
        add("train: setup, later trials (subset, model, optimizer)", *minus(setup, first))
        add("train: report per epoch (report, should_prune)", *report)
        add("train: checkpoint save per epoch", *save)
        add("trial: epoch history (2 attrs, once a trial)", *history)
        add("trial: tell (2 attrs, tell)", *tell)
        add("trial: rest (heartbeat stop, checkpoint unlink)", *minus(trial, prep, art, train, history, tell))
        add("poll sleep (the remaining slots all running)", *total("poll_sleep"))
        add("after the worker stopped, until the run's last trial ended", clip(m["end"], last))
        add("other threads (heartbeats, parent watch), beside the main one", 0.0, m["cpu"] - m["main_thread_cpu"])
    covered = sum(r[0] for r in rows.values())
    rows["unaccounted (loop, gc, clock)"] = [k * wall - covered, 0.0]

    startup = sum(v[0] for name, v in rows.items() if name.startswith(STARTUP))
    tail = sum(v[0] for name, v in rows.items() if name.startswith(TAIL))
    per_trial = k * wall - startup - tail - training  # claim, prepare, report, tell...: what each trial adds
    trained = [t for t in trials if records.epoch_seconds(t)]
    beats = [b for w in workers for b in w["values"]["heartbeats"]]
    return {
        "storage": kind if kind in ("postgresql", "sqlite") else url.split(":", 1)[0],
        "workers": k, "trials": len(trials), "finished": counts.finished, "trained": len(trained),
        "trial_seconds_mean": db_training / max(1, len(trained)),
        "wall": wall, "command_wall": exited - launched,
        "workers_returned": max(w["meta"]["end"] for w in workers) - last,  # from worker_main, after the last trial
        "parent_atexit": parent["end"] - last, "training": training, "db_training": db_training,
        "overhead": 1 - training / (k * wall), "rows": rows, "startup": startup, "tail": tail,
        "per_trial_overhead": per_trial / (per_trial + training),
        "heartbeats": len(beats), "heartbeat_seconds": sum(b - a for a, b in beats),
        "worker_cpu": sum(w["meta"]["cpu"] for w in workers), "training_cpu": training_cpu,
        "parent_cpu": parent["cpu"], "forkserver_cpu": parent.get("forkserver_cpu", 0.0),
        "hpo_cpu": sum(w["meta"]["cpu"] for w in workers) + parent["cpu"] + parent.get("forkserver_cpu", 0.0),
        "cpu_overhead": 1 - training_cpu / (sum(w["meta"]["cpu"] for w in workers) + parent["cpu"]
                                            + parent.get("forkserver_cpu", 0.0)),
        "torch_threads": sorted({w["meta"]["torch_threads"] for w in workers}),
    }


def show_profile(path: Path) -> None:
    import pstats

    if path.exists():
        print(f"\ncProfile of one worker ({path.name}), top 25 by cumulative time:")
        pstats.Stats(str(path)).sort_stats("cumulative").print_stats(25)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--trials", type=int, default=None, help="default: 6 per worker")
    parser.add_argument("--storage", default="postgresql", help="postgresql (a fresh database), sqlite (a fresh "
                                                                "file) or a URL")
    parser.add_argument("--also-sqlite", action="store_true", help="after each run, the same on a fresh SQLite file")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-images", type=int, default=1500)
    parser.add_argument("--test-images", type=int, default=300)
    parser.add_argument("--profile", type=int, default=None, metavar="INDEX", help="cProfile this worker")
    parser.add_argument("--breakdown", action="store_true", help="print each run's overhead breakdown")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.trials = args.trials or 6 * args.workers

    import optuna
    import torch

    kinds = [args.storage] + (["sqlite"] if args.also_sqlite and args.storage != "sqlite" else [])
    results = []
    for repeat in range(args.repeats):
        for kind in kinds:
            result = measure(args, kind, len(results))
            results.append(result)
            print(f"  run {len(results)}: {result['storage']}, {result['workers']} workers: overhead "
                  f"{100 * result['overhead']:.1f}% (wall {result['wall']:.1f} s, load average before "
                  f"{result['load_before']:.1f})", file=sys.stderr, flush=True)

    threads = "/".join(str(n) for n in sorted({n for r in results for n in r["torch_threads"]}))
    print(f"\nP5 service overhead, {time.strftime('%Y-%m-%d %H:%M %Z')}. CPU: {cpu_model()}. torch "
          f"{torch.__version__}, optuna {optuna.__version__}, Python {sys.version.split()[0]}. {threads} torch "
          f"thread(s) per worker (hpo's choice: cores // workers, at least 1). Trials: {args.epochs} epochs of a small "
          f"convnet on {args.train_images:,}/{args.test_images:,} synthetic 24x24 images, TPE, median pruner.")
    print("| workers | storage | trials | trial s (mean) | wall s | training s | overhead % | of which start-up % | "
          "per-trial overhead % | CPU overhead % | hpo CPU s | training CPU s | PostgreSQL CPU s | "
          "other processes' CPU s | load before |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        kw = r["workers"] * r["wall"]
        print(f"| {r['workers']} | {r['storage']} | {r['trials']} | {r['trial_seconds_mean']:.2f} | {r['wall']:.1f} | "
              f"{r['training']:.1f} | {100 * r['overhead']:.1f} | {100 * r['startup'] / kw:.1f} | "
              f"{100 * r['per_trial_overhead']:.1f} | {100 * r['cpu_overhead']:.1f} | {r['hpo_cpu']:.1f} | "
              f"{r['training_cpu']:.1f} | {r['postgres_cpu']:.1f} | {r['other_cpu']:.1f} | {r['load_before']:.1f} |")
    busy = sum(r["other_cpu"] for r in results) / sum(r["command_wall"] for r in results)
    print(f"Other processes kept {busy:.1f} of the {os.cpu_count()} cores busy on average while these ran"
          + (": the machine was not quiet, so every wall figure above is slowed by them." if busy > 0.2 else "."))
    for i, r in enumerate(results, 1):
        if not args.breakdown and i > 1:
            break
        k, wall = r["workers"], r["wall"]
        print(f"\nWhere the time went, run {i} ({r['storage']}): {k} workers x {wall:.1f} s = {k * wall:.1f} "
              f"worker-seconds of wall; {r['hpo_cpu']:.1f} CPU seconds in hpo's processes (the hpo run parent's "
              f"{r['parent_cpu']:.1f} s and its fork server's {r.get('forkserver_cpu', 0.0):.1f} s not in the rows); "
              f"after the last trial, the last worker_main returned "
              f"{r['workers_returned']:.1f} s later, the hpo run process reached its exit {r['parent_atexit']:.1f} s "
              f"later and ended {r['command_wall'] - wall:.1f} s later; {r['heartbeats']} heartbeats took {r['heartbeat_seconds']:.2f} s in threads")
        print("| what | worker-s (wall) | % of workers x wall | CPU s | % of hpo CPU | ms wall per trial |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for name, (seconds, cpu) in r["rows"].items():
            print(f"| {name} | {seconds:.2f} | {100 * seconds / (k * wall):.2f} | {cpu:.2f} | "
                  f"{100 * cpu / r['hpo_cpu']:.2f} | {1000 * seconds / max(1, r['trials']):.0f} |")
        if abs(r["db_training"] - r["training"]) > 0.01 * r["training"] + 0.05:
            print(f"(note: the database's epoch_seconds sum to {r['db_training']:.1f} s, the trace's to "
                  f"{r['training']:.1f} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"results": results, "cpu": cpu_model()}, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_hpo_run":  # the `hpo run` command, in its own process
        if os.environ.get(TRACE_ENV):
            install_parent_trace(os.environ[TRACE_ENV])
        from hpo.cli import main as hpo_main

        sys.exit(hpo_main(sys.argv[2:]))
    main()
