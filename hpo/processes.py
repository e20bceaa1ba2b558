"""How `hpo run` starts its worker processes: forked from a fork server that imported, once per
run, what every worker needs, where spawned workers each imported it again.

Measured (BENCHMARKS.md, "Service overhead"): a spawned worker spent about 3 CPU seconds on
imports (torch, Optuna, SQLAlchemy, hpo), 2.4 on `torch._dynamo` (which `torch.optim` imports on
a worker's first step) and 1 on the storage's drivers and Alembic; 8 workers on 2 cores spent
41% of a short run's worker time there. This module imports no torch: the server starts before
its caller's heavy imports are done, so the two overlap."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import threading
from contextlib import contextmanager
from multiprocessing import forkserver, resource_tracker
from typing import Iterator

PRELOAD = ["hpo.preload"]  # its import is the preload: what a worker needs, Ctrl-C ignored meanwhile
PARENT_SIGINT = "HPO_PARENT_SIGINT"  # the caller's Ctrl-C, for the fork server's workers: ignore or interrupt


def worker_context():
    """The start method for worker processes: a fork server preloaded with PRELOAD where the
    platform has one (Linux, macOS), started now (its imports run beside the caller's); spawn
    elsewhere. Never a plain fork of the calling process: one that has touched CUDA cannot fork a
    child that uses it, and the fork server, a fresh interpreter that only imports, never does.
    A worker forked from it starts with the environment of the moment the server started, so the
    caller hands its own to the worker (hpo.worker.Job.env)."""
    if os.environ.get("HPO_WORKER_START") == "spawn" or "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")  # HPO_WORKER_START=spawn: each worker a fresh interpreter, as before
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    # multiprocessing starts its resource tracker first, inside forkserver.ensure_running, and
    # unblocks SIGINT after that start: the server then started with Ctrl-C live, and one that came
    # while it imported printed a KeyboardInterrupt traceback. Started before the block, it is left be.
    resource_tracker.ensure_running()
    with server_start_without_ctrl_c():
        forkserver.ensure_running()
    return ctx


@contextmanager
def server_start_without_ctrl_c() -> Iterator[None]:
    """The fork server's interpreter starts with Ctrl-C blocked: a blocked signal stays blocked
    across exec, and waits. Ctrl-C at a terminal reaches the whole process group, and one that came
    while the server was still starting up (importing `site`, before any code of hpo's could run)
    ended it with "Fatal Python error" and a traceback beside the command's one line. hpo.preload
    drops such a one, sets what SIGINT does in the caller (PARENT_SIGINT) and unblocks it, so a
    worker forked from the server handles Ctrl-C as the caller does (ignored under `hpo run &`)."""
    if threading.current_thread() is not threading.main_thread():  # signal.signal works in the main thread only
        yield
        return
    # Blocked in this thread, which forks the server: the server inherits the mask across fork and
    # exec, so a Ctrl-C waits there until hpo.preload has set what it does and unblocks it. The
    # caller's own handler stays: ignored here as well, a Ctrl-C in this moment was lost (another
    # thread of the caller's, one of torch's, took it and ignored it), and `hpo verify` ran on.
    current = signal.getsignal(signal.SIGINT)
    os.environ[PARENT_SIGINT] = "ignore" if current is signal.SIG_IGN else "interrupt"
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        os.environ.pop(PARENT_SIGINT, None)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def stop_fork_server() -> None:
    """End the fork server once the run's workers are gone. Left alone it would end by itself
    when its last worker does, but only after its interpreter's teardown, seconds for a process
    that imported torch, holding the run's stdout and stderr open all the while (a `| tee` waits
    for it). SIGKILL loses nothing: it holds only its imports, and the next worker_context()
    starts another. (Its pid is multiprocessing's private attribute; without one, nothing.)"""
    pid = getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None)
    if pid:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@contextmanager
def main_without_a_missing_file() -> Iterator[None]:
    """A calling script read from standard input (`python - <<EOF`) names `<stdin>` as its file,
    which every new worker process then tries to import again, and cannot: hidden meanwhile, the
    workers start as from a notebook, which has no file either."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    hide = (path is not None and getattr(main, "__spec__", None) is None
            and not os.path.isfile(os.path.join(mp.process.ORIGINAL_DIR or "", path)))
    if hide:
        del main.__file__
    try:
        yield
    finally:
        if hide:
            main.__file__ = path
