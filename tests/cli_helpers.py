"""Helpers for the reliability tests (test_faults, test_crash_resume, test_concurrency,
test_bad_input, test_security): the real CLI in a subprocess, study files, a cuttable proxy."""

from __future__ import annotations

import copy
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import yaml

import cli_zygote
from test_service import TINY, cli_env

HPO = [sys.executable, "-m", "hpo"]


def env_with(extra: dict | None = None) -> dict:
    return {**cli_env(), **(extra or {})}


def hpo(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m hpo ARGS` to completion; never raises on a non-zero exit. Forked from a process
    that has imported torch once (tests/cli_zygote.py), unless `env` changes how an interpreter
    starts (PYTHONPATH: tests/inject's fault hooks)."""
    return cli_zygote.run(list(args), cwd=cwd, env=env_with(env), changed=env, timeout=timeout)


def start_hpo(*args: str, cwd: Path, env: dict | None = None, log: Path | None = None,
              ignore_sigint: bool = False) -> subprocess.Popen:
    """`python -m hpo ARGS` in the background, in its own process group; output to `log`.
    `ignore_sigint`: started as a script's background job is (`hpo run &`), SIGINT ignored."""
    out = open(log, "w") if log else subprocess.DEVNULL
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None
    return subprocess.Popen([*HPO, *args], cwd=cwd, stdout=out, stderr=subprocess.STDOUT, text=True,
                            env=env_with(env), start_new_session=True, preexec_fn=ignore)


def write_study(folder: Path, name: str, **changes) -> Path:
    """TINY, renamed, with top-level keys replaced by `changes`."""
    spec = copy.deepcopy(TINY)
    spec["name"] = name
    spec.update(copy.deepcopy(changes))
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_args(path: Path, url: str, trials: int, *extra: str) -> list[str]:
    return ["run", "--study", str(path), "--trials", str(trials), "--storage", url, "--device", "cpu", "--quiet",
            *extra]


def trials_of(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


class Proxy:
    """A TCP proxy in front of the PostgreSQL server that a test can cut: while cut, every open
    connection is dropped and new ones are closed at once, which is what a worker sees when the
    database host restarts or the network goes away."""

    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.dropped = 0   # connections cut or refused while down
        self.sockets: set[socket.socket] = set()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                if not self.up:
                    self.dropped += 1
                    client.close()
                    continue
                try:
                    upstream = socket.create_connection(self.target)
                except OSError:
                    client.close()
                    continue
                self.sockets |= {client, upstream}
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                self._close(s)

    def _close(self, s: socket.socket) -> None:
        with self.lock:
            self.sockets.discard(s)
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()

    def cut(self) -> None:
        with self.lock:
            self.up = False
            open_now = list(self.sockets)
            self.dropped += len(open_now) // 2
        for s in open_now:
            self._close(s)

    def restore(self) -> None:
        with self.lock:
            self.up = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


def worker_pid(trial: optuna.trial.FrozenTrial) -> int:
    """The pid of the worker process that ran `trial` (the objective records host:pid)."""
    return int(trial.user_attrs["worker"].rsplit(":", 1)[1])


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, ended but not yet reaped, does not), from /proc."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until_gone(pids: set[int], deadline: float, why: str) -> None:
    """Wait for every process of `pids` to end; past `deadline` (a generous one), fail with `why`."""
    while any(alive(pid) for pid in pids):
        assert time.monotonic() < deadline, why
        time.sleep(0.2)


def children(pid: int) -> set[int]:
    """Every process under `pid`, from /proc (Linux): `hpo run`'s workers are the children of its
    fork server (hpo.processes), which is its child, as is multiprocessing's resource tracker."""
    found = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            direct = {int(c) for c in (task / "children").read_text().split()}
        except OSError:
            continue
        found |= direct
        for child in direct:
            found |= children(child)
    return found


def study_when_started(url: str, name: str, log: Path, proc: subprocess.Popen, deadline: float) -> optuna.Study:
    """The study, once `proc` (an `hpo run` writing `log`) has created it and started its workers."""
    while " finished trial" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, f"hpo run did not start:\n{log.read_text()}"
        time.sleep(0.2)
    return optuna.load_study(study_name=name, storage=url)
