"""What the workers' fork server imports, once per run, before it forks its first worker
(`hpo.processes`). Imported in the fork server alone: importing it is the preload.

Ctrl-C is ignored while it imports. Ctrl-C at a terminal reaches the whole process group, and
the server, a second or more into importing torch, printed a KeyboardInterrupt traceback of its
own beside `hpo run`'s one line (multiprocessing's server protects itself from Ctrl-C only after
its preload). hpo starts the server with SIGINT ignored (`hpo.processes`); once the imports are
done, SIGINT is set to what it is in the server's parent (HPO_PARENT_SIGINT), so a worker forked
from the server handles it as that parent does (ignored under `hpo run &`)."""

from __future__ import annotations

import importlib
import os
import signal

# what a worker imports before its first trial; a module that is not installed (a storage driver
# the run does not use) is skipped
MODULES = [
    "hpo.worker",
    "torch._dynamo",
    "alembic.command", "alembic.config", "alembic.migration", "alembic.script",  # Optuna's RDBStorage
    "sqlalchemy.dialects.sqlite.pysqlite",
    "psycopg", "sqlalchemy.dialects.postgresql.psycopg",
]


def _preload() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # discards a Ctrl-C that came as the server started
    try:
        for name in MODULES:
            try:
                importlib.import_module(name)
            except ImportError:
                pass
    finally:
        parent = os.environ.pop("HPO_PARENT_SIGINT", None)  # hpo.processes.PARENT_SIGINT
        wanted = {"ignore": signal.SIG_IGN, "interrupt": signal.default_int_handler}
        # a Ctrl-C that came while the imports ran waits, blocked, even though ignored (Linux keeps a
        # blocked signal pending whatever its action): ignoring it again drops it, and only then is it
        # unblocked and given its handler. Given the handler first, it was raised here, a traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # started with it blocked (hpo.processes)
        signal.signal(signal.SIGINT, wanted.get(parent, previous))  # unset: a server hpo did not start


_preload()
