"""`python -m hpo ARGS` for the tests, without paying for the interpreter and torch at every call.

`run` hands a call to a zygote: a process started once per test session that has imported the
slow third-party packages (torch, optuna, SQLAlchemy, numpy: about 1.5 s of the 2 s a CLI error
took). For each request (one JSON line on its stdin: args, cwd, env, out and err files) it forks
a child that is `python -m hpo ARGS` from there on: its own process, working directory,
environment, standard streams (files), `__main__` and exit code; hpo's own modules imported
fresh, after the environment is set; an uncaught exception's traceback on stderr and exit 1;
atexit handlers run at the end, but the modules are not torn down (half a second with torch).
It answers the child's pid, then its exit code, one JSON line each. A zygote serves one call at
a time; calls made at once (threads) each get one of their own.

What a forked child cannot have: what happens at interpreter start-up (sitecustomize on a
PYTHONPATH, PYTHON* variables, the locale's stream encodings) and torch's own import-time reading
of the environment. Calls that change those, and every call under HPO_TEST_SUBPROCESS=1, run as a
real subprocess.
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import select
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path


AT_START = ("PYTHON", "LANG", "LC_")  # variables an interpreter reads as it starts (sys.path, stream encodings)


def run(args: list[str], *, cwd: Path, env: dict, changed: dict | None, timeout: float) -> subprocess.CompletedProcess:
    """`python -m hpo ARGS` in `cwd` with environment `env` (of which `changed` is what the caller
    set) to completion, as subprocess.run(capture_output=True, text=True) returns it."""
    if any(key.startswith(AT_START) for key in changed or {}) or os.environ.get("HPO_TEST_SUBPROCESS") == "1":
        return subprocess.run([sys.executable, "-m", "hpo", *args], cwd=cwd, capture_output=True, text=True,
                              timeout=timeout, env=env)
    zygote = Zygote.take()
    try:
        return zygote.run(args, cwd, env, timeout)
    finally:
        Zygote.give_back(zygote)


class Zygote:
    """One running zygote process, and the calls to it."""

    idle: list[Zygote] = []
    lock = threading.Lock()

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        atexit.register(self.close)

    @classmethod
    def take(cls) -> Zygote:
        with cls.lock:
            while cls.idle:
                zygote = cls.idle.pop()
                if zygote.proc.poll() is None:
                    return zygote
        return cls()

    @classmethod
    def give_back(cls, zygote: Zygote) -> None:
        with cls.lock:
            cls.idle.append(zygote)

    def run(self, args: list[str], cwd: Path, env: dict, timeout: float) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory(prefix="hpo-cli-") as folder:
            out, err = Path(folder, "out"), Path(folder, "err")
            self.proc.stdin.write(json.dumps({"args": args, "cwd": str(cwd), "env": env,
                                              "out": str(out), "err": str(err)}) + "\n")
            self.proc.stdin.flush()
            pid = self._answer(60)["pid"]
            try:
                code = self._answer(timeout)["code"]
            except subprocess.TimeoutExpired:
                os.kill(pid, signal.SIGKILL)
                self._answer(60)
                raise subprocess.TimeoutExpired(["hpo", *args], timeout) from None
            return subprocess.CompletedProcess(["hpo", *args], code, out.read_text(), err.read_text())

    def _answer(self, timeout: float) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise subprocess.TimeoutExpired("cli_zygote", timeout)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"tests/cli_zygote.py ended (exit {self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


# ----------------------------------------------------------------- the zygote process


def child(request: dict) -> None:
    """Be `python -m hpo ARGS` run in request's cwd with its env and files, then exit: never returns."""
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY),
                            (1, request["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                            (2, request["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
        opened = os.open(path, flags, 0o644)
        os.dup2(opened, fd)
        os.close(opened)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = [sys.executable, *request["args"]]
    sys.path[0] = request["cwd"]  # what `python -m` puts first: the working directory
    code = 0
    try:
        runpy.run_module("hpo", run_name="__main__", alter_sys=True)  # ends in sys.exit(main())
    except SystemExit as done:  # as the interpreter reads it
        if done.code is None or isinstance(done.code, int):
            code = done.code or 0
        else:
            print(done.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - what the interpreter does with an uncaught exception
        traceback.print_exc()
        code = 1
    # an interpreter's exit, less tearing down its modules (half a second with torch loaded)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def serve() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            child(request)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"code": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    import numpy  # noqa: F401 - the imports this process is for
    import optuna  # noqa: F401
    import sqlalchemy  # noqa: F401
    import torch  # noqa: F401
    import yaml  # noqa: F401

    serve()
