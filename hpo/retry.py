"""Riding out a database outage: which errors are one, and a backoff that gives up in one line.

A worker that loses its database keeps its place: it pauses (0.5 s, doubling up to 8 s) and
carries on when the database answers again. Once an outage has lasted `patience` seconds it
raises DatabaseUnavailable; nothing is lost by giving up, since a trial left RUNNING goes
stale and is retried from its checkpoint, so a rerun finishes the study.
"""

from __future__ import annotations

import time
from typing import Callable, TypeVar

import sqlalchemy

PATIENCE_SECONDS = 60.0
FIRST_PAUSE, MAX_PAUSE = 0.5, 8.0
T = TypeVar("T")


class DatabaseUnavailable(Exception):
    """The database stayed unreachable for longer than the patience."""


def _chain(error: BaseException | None):
    """`error` and the errors that led to it: Optuna wraps SQLAlchemy's errors in
    StorageInternalError, and a failure while handling one chains it as its context."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def is_outage(error: BaseException | None) -> bool:
    """Whether `error`, or an error that led to it, is the database being unreachable."""
    for e in _chain(error):
        if isinstance(e, sqlalchemy.exc.OperationalError) and "readonly database" in str(e):
            return False  # SQLite's "attempt to write a readonly database": waiting will not fix it
        if isinstance(e, (DatabaseUnavailable, sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
            return True
        if isinstance(e, sqlalchemy.exc.DBAPIError) and e.connection_invalidated:
            return True
    return False


def describe(error: BaseException) -> str:
    """The first line of the driver's message: what a person needs, without the SQL."""
    root = next((e.orig for e in _chain(error) if getattr(e, "orig", None) is not None), error)
    lines = str(root).strip().splitlines()
    return lines[0] if lines else type(root).__name__


class Backoff:
    """Pauses between attempts during one outage; `ok()` marks the database reachable again."""

    def __init__(self, patience: float = PATIENCE_SECONDS):
        self.patience = patience
        self.since: float | None = None  # when the current outage began
        self.pause = FIRST_PAUSE

    def ok(self) -> None:
        self.since, self.pause = None, FIRST_PAUSE

    def wait(self, error: BaseException) -> None:
        """Sleep before the next attempt, or raise DatabaseUnavailable once patience is spent."""
        now = time.monotonic()
        if self.since is None:
            self.since = now
        waited = now - self.since
        if waited >= self.patience:
            why = describe(error)
            # a full or failing disk under an SQLite file is not the network: say what it was
            state = "unusable" if any(word in why for word in ("disk", "full", "readonly")) else "unreachable"
            raise DatabaseUnavailable(f"{state} for {waited:.0f} s ({why})")
        time.sleep(min(self.pause, self.patience - waited))
        self.pause = min(2 * self.pause, MAX_PAUSE)

    def call(self, fn: Callable[[], T]) -> T:
        """`fn()`, tried again through an outage; any other error propagates at once."""
        while True:
            try:
                result = fn()
            except Exception as error:
                if isinstance(error, DatabaseUnavailable) or not is_outage(error):
                    raise
                self.wait(error)
            else:
                self.ok()
                return result
