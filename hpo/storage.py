"""Where studies live: Optuna's RDB storage on an SQLAlchemy URL, with heartbeats and a lock.

The URL comes from `--storage`, else `HPO_STORAGE`, else `sqlite:///hpo.db` in the working
directory. Passwords are masked in everything hpo prints.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import sqlite3
import warnings
from contextlib import contextmanager
from pathlib import Path

import optuna
import sqlalchemy
from sqlalchemy.engine import URL, make_url

from hpo.errors import UserError
from hpo.retry import is_outage

DEFAULT_URL = "sqlite:///hpo.db"
HEARTBEAT_SECONDS = 30   # a running trial writes a heartbeat this often...
GRACE_SECONDS = 120      # ...and is failed (then retried) when none came for this long
MAX_RETRY = 3            # how many times a trial whose worker died is run again


def resolve_url(url: str | None) -> str:
    return url or os.environ.get("HPO_STORAGE") or DEFAULT_URL


def parse_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except Exception:  # sqlalchemy raises ArgumentError with the whole URL in the message
        raise UserError(f"storage URL {mask(url)!r} is not a database URL; use e.g. sqlite:///hpo.db or "
                        "postgresql+psycopg://USER@HOST/DB") from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql", "mysql"):
        raise UserError(f"storage {mask(url)}: unsupported database {parsed.get_backend_name()!r}; "
                        "use sqlite:///FILE or postgresql+psycopg://USER@HOST/DB")
    return parsed


def mask(url: str) -> str:
    """The URL as given, with any password replaced by ***: everything from the user name's ':'
    to the last '@', so an unencoded '@' or '/' in a password, or a URL that does not parse,
    leaks nothing either."""
    return re.sub(r"(//[^/:@]*):.*@", r"\1:***@", url)


def _engine_kwargs(parsed: URL) -> dict:
    if parsed.get_backend_name() == "sqlite":
        # wait for the write lock instead of failing with "database is locked"
        return {"connect_args": {"timeout": 60}}
    return {"pool_pre_ping": True, "pool_size": 2, "max_overflow": 2}


def _prepare_sqlite(parsed: URL) -> None:
    """Write-ahead logging lets readers (the dashboard, `hpo studies`) run beside writers."""
    path = parsed.database
    if not path or path == ":memory:":
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path, timeout=60) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


def _connect_error(url: str, error: Exception) -> UserError:
    text = str(getattr(error, "orig", None) or error).strip().splitlines()
    reason = text[0] if text else type(error).__name__
    for line in text:  # psycopg puts the useful part on a later line
        if "FATAL" in line or "failed" in line.lower():
            reason = line.strip()
            break
    return UserError(f"cannot open storage {mask(url)}: {reason}; check the URL, the server and the credentials")


def create_database_if_missing(url: str) -> bool:
    """For PostgreSQL: create the URL's database when the server has none by that name."""
    parsed = parse_url(url)
    if parsed.get_backend_name() != "postgresql" or not parsed.database:
        return False
    admin = sqlalchemy.create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(sqlalchemy.text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                  {"n": parsed.database}).scalar()
            if exists:
                return False
            quoted = conn.dialect.identifier_preparer.quote(parsed.database)
            try:
                conn.execute(sqlalchemy.text(f"CREATE DATABASE {quoted}"))
            except (sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.IntegrityError):  # another worker created it first
                return False
            return True
    except sqlalchemy.exc.OperationalError as error:
        raise _connect_error(url, error) from None
    finally:
        admin.dispose()


def open_storage(url: str | None = None, *, heartbeat: int | None = HEARTBEAT_SECONDS,
                 grace: int | None = GRACE_SECONDS, max_retry: int = MAX_RETRY) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage for `url`; with `heartbeat`, trials of dead workers fail and retry."""
    url = resolve_url(url)
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        try:
            _prepare_sqlite(parsed)
        except (sqlite3.Error, OSError) as error:
            raise UserError(f"cannot open storage {mask(url)}: {error}; check the path and its permissions") from None
    try:
        # Optuna creates its tables on first use; two processes doing so at once collide
        with warnings.catch_warnings(), exclusive(url, "(schema)"):
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            kwargs = {}
            if heartbeat:
                kwargs = {"heartbeat_interval": heartbeat, "grace_period": grace or 4 * heartbeat,
                          "heartbeat_stale_trial_callback": _retry_callback(max_retry)}
            return RDBStorage(url, engine_kwargs=_engine_kwargs(parsed), **kwargs)
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as error:
        raise _connect_error(url, error) from None
    except OSError as error:  # the SQLite lock file beside the database
        raise UserError(f"cannot open storage {mask(url)}: {error}; check the path and its permissions") from None
    except ImportError:  # Optuna's own message names no driver
        raise UserError(f"cannot open storage {mask(url)}: its database driver is not installed; use "
                        "sqlite:///FILE or postgresql+psycopg://USER@HOST/DB") from None


class RDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage, with a heartbeat that outlives a database blip."""

    def record_heartbeat(self, trial_id: int) -> None:
        # Optuna's heartbeat thread dies at its first error, and a trial still training would
        # then look dead once the grace period passed; a missed beat is simply sent next time.
        try:
            super().record_heartbeat(trial_id)
        except Exception as error:
            if not is_outage(error):
                raise


def _retry_callback(max_retry: int):
    """Optuna's re-enqueue of a stale trial; the retry keeps the epochs already reported, since
    it resumes from the trial's checkpoint rather than from scratch."""
    return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry, inherit_intermediate_values=True)


@contextmanager
def exclusive(url: str, name: str):
    """A lock shared by every worker of study `name`, on every machine that uses `url`.

    PostgreSQL: a session advisory lock. SQLite: an flock on a file beside the database
    (SQLite is one machine's storage anyway). Yields a `release()` that may be called early.
    """
    parsed = parse_url(url)
    key = int.from_bytes(hashlib.sha256(f"hpo:{name}".encode()).digest()[:8], "big", signed=True)
    if parsed.get_backend_name() == "postgresql":
        engine = sqlalchemy.create_engine(parsed, poolclass=sqlalchemy.pool.NullPool)
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            conn.commit()
            held = [True]

            def release():
                if held[0]:
                    held[0] = False
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()
            try:
                yield release
            finally:
                try:
                    release()
                except sqlalchemy.exc.DBAPIError:  # the connection is gone, and the server dropped the lock with it
                    pass
    elif parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        lock_path = Path(f"{parsed.database}.lock")
        with open(lock_path, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            held = [True]

            def release():
                if held[0]:
                    held[0] = False
                    fcntl.flock(handle, fcntl.LOCK_UN)
            try:
                yield release
            finally:
                release()
    else:  # MySQL and in-memory SQLite: one process only, nothing to coordinate
        yield lambda: None
