"""Where studies live: Optuna's RDB storage on an SQLAlchemy URL, with heartbeats and a lock.

The URL is resolved once, at the edge (`--storage`, else `HPO_STORAGE`, else `sqlite:///hpo.db`
in the working directory), into a `Storage`: the URL, its masked form for everything hpo
prints, the database kind, and the study lock. Commands pass that value down.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import sqlite3
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import optuna
import sqlalchemy
from sqlalchemy.engine import URL, make_url

from hpo.errors import UserError, password_note
from hpo.retry import is_outage

DEFAULT_URL = "sqlite:///hpo.db"
HEARTBEAT_SECONDS = 30   # a running trial writes a heartbeat this often...
GRACE_SECONDS = 120      # ...and is failed (then retried) when none came for this long
MAX_RETRY = 3            # how many times a trial whose worker died is run again
BACKENDS = ("sqlite", "postgresql", "mysql")


def mask(url: str) -> str:
    """The URL as given, with any password replaced by ***: everything from the user name's ':'
    to the last '@', so an unencoded '@' or '/' in a password, a URL missing a slash, or one that
    does not parse at all leaks nothing either."""
    return re.sub(r"^([^:@]*:/*[^/:@]*):.*@", r"\1:***@", url)


def _check_sqlite(url: str, parsed: URL) -> None:
    """An SQLite URL names one file: every worker process must open the same one."""
    if parsed.host or parsed.port:
        raise UserError(f"storage {url}: an SQLite URL has three slashes before the file, sqlite:///{parsed.host}"
                        f"{parsed.database and '/' + parsed.database or ''} (four for an absolute path)")
    if parsed.database in (None, "", ":memory:"):
        raise UserError(f"storage {url}: an in-memory SQLite database lives and dies with one process, and "
                        "hpo's workers are processes; name a file: sqlite:///hpo.db")
    if parsed.query or "?" in url:
        raise UserError(f"storage {url}: an SQLite URL takes no '?' options here (the file would be "
                        f"{parsed.database!r}); name the file alone, e.g. sqlite:///hpo.db")


OPTUNA_TABLES = {"studies", "trials", "version_info"}  # what makes a database one Optuna wrote


@dataclass(frozen=True)
class Storage:
    """A resolved storage URL: what every command that touches the database is given."""

    url: str
    parsed: URL = field(repr=False, compare=False)

    @classmethod
    def resolve(cls, url: Optional[str] = None) -> "Storage":
        """`url`, else $HPO_STORAGE, else the default; a URL that is no database URL is a UserError
        (naming $HPO_STORAGE when the URL came from there). An SQLite path's leading `~` is the home
        folder, as in a data path (SQLAlchemy would make a folder named `~`)."""
        source = "" if url else " (from $HPO_STORAGE)" if os.environ.get("HPO_STORAGE") else ""
        url = url or os.environ.get("HPO_STORAGE") or DEFAULT_URL
        try:
            parsed = make_url(url)
        except Exception:  # sqlalchemy raises ArgumentError with the whole URL in the message
            raise UserError(f"storage URL {mask(url)!r}{source} is not a database URL; use e.g. sqlite:///hpo.db or "
                            "postgresql+psycopg://USER@HOST/DB") from None
        if parsed.get_backend_name() not in BACKENDS:
            raise UserError(f"storage {mask(url)}{source}: unsupported database {parsed.get_backend_name()!r}; "
                            "use sqlite:///FILE or postgresql+psycopg://USER@HOST/DB")
        try:
            parsed.get_dialect()
        except sqlalchemy.exc.NoSuchModuleError:
            raise UserError(f"storage {mask(url)}{source}: unknown driver {parsed.drivername!r}; use sqlite:///FILE "
                            "or postgresql+psycopg://USER@HOST/DB") from None
        if parsed.get_backend_name() == "sqlite":
            _check_sqlite(url + source, parsed)
            if parsed.database.startswith("~"):
                parsed = parsed.set(database=os.path.expanduser(parsed.database))
                url = parsed.render_as_string(hide_password=False)
        return cls(url, parsed)

    @property
    def masked(self) -> str:
        return mask(self.url)

    def hint_option(self) -> str:
        """' --storage URL' for a command a hint prints, to paste as is from any folder: an SQLite
        file by its absolute path, a password as *** (`hpo.errors.password_note` says so)."""
        import shlex  # noqa: PLC0415

        url = self.url
        if self.file is not None and not self.file.is_absolute():
            url = self.parsed.set(database=os.path.abspath(self.file)).render_as_string(hide_password=False)
        return f" --storage {shlex.quote(mask(url))}"

    @property
    def backend(self) -> str:
        """sqlite, postgresql or mysql."""
        return self.parsed.get_backend_name()

    @property
    def file(self) -> Optional[Path]:
        """The SQLite database file; None for a server or an in-memory database."""
        if self.backend == "sqlite" and self.parsed.database not in (None, "", ":memory:"):
            return Path(self.parsed.database)
        return None

    def lock(self, name: str) -> "StudyLock":
        return StudyLock(self, name)

    def study_checkpoint_key(self, rdb: optuna.storages.BaseStorage, study_id: int) -> str:
        """checkpoint_key of study `study_id`, with the random id it was made with (records.UID)."""
        from hpo.records import UID  # noqa: PLC0415

        return self.checkpoint_key(study_id, rdb.get_study_user_attrs(study_id).get(UID, ""))

    def checkpoint_key(self, study_id: int, uid: str = "") -> str:
        """Eight hex digits that tell this storage's study `study_id` (made with the random `uid`,
        records.UID) from a study of the same name in another storage, or one made again after a
        delete (SQLite gives it the same id), in its trials' checkpoint names: such studies run
        from one folder resumed each other's trials, or started them afresh over the other's
        progress. The random id alone tells every study from every other, so the key is the same
        however the database's URL is spelled (127.0.0.1 or localhost, a relative path): keyed by
        the URL, a run through another spelling neither resumed nor `hpo delete` removed them. A
        study without one (never run since studies had one) is keyed by the database and its id."""
        if uid:
            return hashlib.blake2b(f"study#{uid}".encode(), digest_size=4).hexdigest()
        where = (str(self.file.resolve()) if self.file is not None else
                 f"{self.backend}://{self.parsed.host or ''}:{self.parsed.port or ''}/{self.parsed.database or ''}")
        return hashlib.blake2b(f"{where}#{study_id}#{uid}".encode(), digest_size=4).hexdigest()

    # ------------------------------------------------------------- opening

    def check_folder(self) -> None:
        """For an SQLite file: a folder on its path that is a file is a mistake in the URL, said of
        the URL (not of the artifact store beside it, which is checked next)."""
        if self.file is None:
            return
        for folder in self.file.parent.absolute().parents[::-1] + (self.file.parent.absolute(),):
            if folder.exists() and not folder.is_dir():
                raise UserError(f"storage {self.masked}: {folder} is a file, not a folder; give the database a path "
                                "in a folder, e.g. sqlite:///hpo.db")

    def make_folder(self) -> Optional[Path]:
        """For an SQLite file in a folder not there yet: make the folder, and return it (what `hpo
        run` says it made: a typo in the path starts a new study there, and says so)."""
        if self.file is None or self.file.parent.exists():
            return None
        try:
            self.file.parent.mkdir(parents=True)
        except FileExistsError:  # another run's, a moment ago
            return None
        except OSError as error:
            raise UserError(f"cannot open storage {self.masked}: cannot make its folder {self.file.parent} "
                            f"({error.strerror or error}); check the path and its permissions") from None
        return self.file.parent.resolve()

    def create_database_if_missing(self) -> bool:
        """For PostgreSQL: create the URL's database when the server has none by that name."""
        if self.backend != "postgresql" or not self.parsed.database:
            return False
        try:
            admin = sqlalchemy.create_engine(self.parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
        except ImportError:
            raise self._driver_error() from None
        try:
            with admin.connect() as conn:
                exists = conn.execute(sqlalchemy.text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                      {"n": self.parsed.database}).scalar()
                if exists:
                    return False
                quoted = conn.dialect.identifier_preparer.quote(self.parsed.database)
                try:
                    conn.execute(sqlalchemy.text(f"CREATE DATABASE {quoted}"))
                except (sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.IntegrityError):  # another worker was first
                    return False
                return True
        except sqlalchemy.exc.OperationalError as error:
            raise self._connect_error(error) from None
        finally:
            admin.dispose()

    def open(self, *, heartbeat: Optional[int] = HEARTBEAT_SECONDS, grace: Optional[int] = GRACE_SECONDS,
             max_retry: int = MAX_RETRY, write: bool = True, schema_ready: bool = False) -> "RDBStorage":
        """Optuna's RDB storage; with `heartbeat`, trials of dead workers fail and are retried.
        An SQLite file that cannot be written is refused here (`write`), not waited on as an outage.
        `schema_ready`: this storage was opened already by the caller's `hpo run` (its tables made and
        checked against this Optuna), so a worker neither makes nor checks them, nor waits for the
        lock that guards doing so: workers starting together waited on it in turn (BENCHMARKS.md, P5)."""
        if not schema_ready and (self.file is None or self.file.is_file()):
            with self._opening():  # before the lock file, and before SQLite's journal mode is set
                self._refuse_foreign_tables()
        if self.file is not None:
            self._prepare_sqlite(write)
        lock = self.lock("(schema)")
        try:
            # Optuna creates its tables on first use; two processes doing so at once collide
            with self._opening(), warnings.catch_warnings(), nullcontext() if schema_ready else lock.hold():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                kwargs = {}
                if heartbeat:
                    # a dead worker's trial is re-run, keeping the epochs it reported: it resumes from its checkpoint
                    kwargs = {"heartbeat_interval": heartbeat, "grace_period": grace or 4 * heartbeat,
                              "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(
                                  max_retry=max_retry, inherit_intermediate_values=True)}
                return RDBStorage(self.url, engine_kwargs=self._engine_kwargs(), skip_table_creation=schema_ready,
                                  skip_compatibility_check=schema_ready, **kwargs)
        finally:
            lock.close()

    def open_existing(self) -> "RDBStorage":
        """The storage for commands that only read. They write nothing, anywhere: an SQLite file
        that does not exist, an empty one, or a database without Optuna's tables (another
        program's, or a new PostgreSQL database) is an error, not a place to make a study's
        tables; no lock file is made, no journal mode set."""
        if self.file is not None:
            if not self.file.exists():
                raise UserError(f"no database at {self.file}: run a study first ({self._run_hint()}) "
                                "or point --storage / HPO_STORAGE at one")
            self._prepare_sqlite(write=False)
        with self._opening():
            self._check_tables()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(self.url, engine_kwargs=self._engine_kwargs(), skip_table_creation=True)

    def hint_option_unless_default(self) -> str:
        """' --storage URL' (and the password note) for a hint naming this database, but the default's."""
        option = "" if self.url == DEFAULT_URL else self.hint_option()
        return f"{option}{password_note(option)}"

    def _run_hint(self) -> str:
        """The `hpo run` that makes a study here."""
        return f"hpo run --study NAME --trials N{self.hint_option_unless_default()}"

    def _everything(self) -> set[str]:
        """Every table and view, in every schema but the server's own (`app.customers` outside
        the default one): what another program may keep here."""
        engine = sqlalchemy.create_engine(self.url, **self._engine_kwargs())
        try:
            with engine.connect() as conn:
                inspector = sqlalchemy.inspect(conn)
                default = inspector.default_schema_name
                found = set()
                for schema in inspector.get_schema_names():
                    if schema in ("information_schema", "pg_catalog", "pg_toast") or schema.startswith("pg_"):
                        continue
                    prefix = "" if schema == default else f"{schema}."
                    names = inspector.get_table_names(schema=schema) + inspector.get_view_names(schema=schema)
                    found |= {prefix + name for name in names}
                return found
        finally:
            engine.dispose()

    def _refuse_foreign_tables(self) -> None:
        """A database that holds another program's tables and none of Optuna's is not where a run
        adds its 13 (the commands that only read refuse it too: _check_tables)."""
        tables = self._everything()
        if tables and not tables & OPTUNA_TABLES:
            shown = ", ".join(sorted(tables)[:3]) + (", ..." if len(tables) > 3 else "")
            raise UserError(f"storage {self.masked} holds another program's tables ({shown}) and none of Optuna's; "
                            "hpo run would add its own beside them: point --storage at a database of its own "
                            "(a new SQLite file, or a new PostgreSQL database, which hpo run creates)")

    def _check_tables(self) -> None:
        tables = self._everything()
        if OPTUNA_TABLES <= tables:
            return
        if not tables:
            raise UserError(f"storage {self.masked} is an empty database: no study has run there; run one first "
                            f"({self._run_hint()}) or point --storage / HPO_STORAGE at the database hpo run wrote")
        raise UserError(f"storage {self.masked} is not a database hpo wrote: it has {len(tables)} table(s), none of "
                        "them Optuna's studies and trials; point --storage / HPO_STORAGE at the database hpo run "
                        "wrote")

    @contextmanager
    def _opening(self) -> Iterator[None]:
        """What opening the database can raise, as one line each."""
        try:
            yield
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as error:
            raise self._connect_error(error) from None
        except sqlalchemy.exc.DatabaseError as error:
            if self.file is None:
                raise
            # a file that is no SQLite database at all (a study file given by mistake): what
            # _prepare_sqlite says of it, before hpo run's first look at its tables
            raise self._not_sqlite(error.orig) from None
        except OSError as error:  # the SQLite lock file beside the database
            raise UserError(f"cannot open storage {self.masked}: {error}; check the path and its permissions") from None
        except ImportError:  # Optuna's own message names no driver
            raise self._driver_error() from None

    def _driver_error(self) -> UserError:
        return UserError(f"cannot open storage {self.masked}: its database driver is not installed "
                         f"({self.parsed.drivername}); use sqlite:///FILE or postgresql+psycopg://USER@HOST/DB")

    def _prepare_sqlite(self, write: bool) -> None:
        if self.file.is_dir():
            raise UserError(f"storage {self.masked} is a folder, not a database file; give a file in it, e.g. "
                            f"sqlite:///{self.file / 'hpo.db'}")
        try:
            if write:
                self.file.parent.mkdir(parents=True, exist_ok=True)
            elif self.file.is_file() and self.file.stat().st_size == 0:
                raise UserError(f"storage {self.masked} is an empty file, not a database hpo wrote; point --storage / "
                                "HPO_STORAGE at the database hpo run wrote")
            with sqlite3.connect(self.file, timeout=60) as conn:
                if write:  # write-ahead logging lets readers (the dashboard, `hpo studies`) run beside writers
                    conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA schema_version").fetchone()  # reads the header: a damaged file says so here...
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # ...or here, its schema's page
                if write:  # a read-only file (or folder) fails its first write, as the workers' would
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute("CREATE TABLE hpo_write_probe (x)")
                    conn.rollback()
        except sqlite3.OperationalError as error:
            if "readonly" in str(error) or "read-only" in str(error):
                raise UserError(f"storage {self.masked} is read-only ({error}); hpo run writes trials to it: "
                                "make the file and its folder writable, or use another --storage") from None
            raise UserError(f"cannot open storage {self.masked}: {error}; check the path and its permissions") \
                from None
        except sqlite3.DatabaseError as error:
            raise self._not_sqlite(error) from None
        except OSError as error:
            raise UserError(f"cannot open storage {self.masked}: {error}; check the path and its permissions") \
                from None

    def _not_sqlite(self, error: BaseException) -> UserError:
        return UserError(f"storage {self.masked} is not a readable SQLite database ({error}); point --storage at "
                         "the database hpo run wrote, or restore it from a backup")

    def _engine_kwargs(self) -> dict:
        if self.backend == "sqlite":
            return {"connect_args": {"timeout": 60}}  # wait for the write lock instead of failing at once
        return {"pool_pre_ping": True, "pool_size": 2, "max_overflow": 2}

    def _connect_error(self, error: Exception) -> UserError:
        text = str(getattr(error, "orig", None) or error).strip().splitlines()
        reason = text[0] if text else type(error).__name__
        for line in text:  # psycopg puts the useful part on a later line
            if "FATAL" in line or "failed" in line.lower():
                reason = line.strip()
                break
        if re.search(r'database ".*" does not exist', reason):  # a read: hpo run creates it, the readers do not
            return UserError(f"storage {self.masked}: the server has no database {self.parsed.database!r}, so no "
                             "study has run there; run one "
                             f"first ({self._run_hint()}, which creates it) or point --storage / HPO_STORAGE at the "
                             "database hpo run wrote")
        return UserError(f"cannot open storage {self.masked}: {reason}; check the URL, the server and the credentials")


def study_gone(rdb: optuna.storages.BaseStorage, name: str, study_id: int) -> bool:
    """Whether study `name`, opened as `study_id`, has been deleted since (or deleted and made
    again). An error while looking (an outage) is no sign of it: False."""
    try:
        return rdb.get_study_id_from_name(name) != study_id
    except KeyError:
        return True
    except Exception:
        return False


class RDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage, with a heartbeat that outlives a database blip."""

    def record_heartbeat(self, trial_id: int) -> None:
        # A missed beat is simply sent next time: a trial still training must not look dead
        # because the database hiccuped once.
        try:
            super().record_heartbeat(trial_id)
        except Exception as error:
            if not is_outage(error):
                raise


class StudyLock:
    """A lock shared by every worker of one study, on every machine that uses the storage.

    PostgreSQL: a session advisory lock, taken on one connection that this lock keeps for the
    worker's life (not a new engine per trial). SQLite: an flock on a file beside the database
    (SQLite is one machine's storage anyway). MySQL and in-memory SQLite: one process only,
    nothing to coordinate.
    """

    def __init__(self, storage: Storage, name: str):
        self.storage = storage
        self.key = int.from_bytes(hashlib.sha256(f"hpo:{name}".encode()).digest()[:8], "big", signed=True)
        self._engine: Optional[sqlalchemy.engine.Engine] = None

    @contextmanager
    def hold(self) -> Iterator:
        """Hold the lock; yields a `release()` that may be called early (once the trial exists)."""
        if self.storage.backend == "postgresql":
            with self._postgres() as release:
                yield release
        elif self.storage.file is not None:
            with self._flock() as release:
                yield release
        else:
            yield lambda: None

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    @contextmanager
    def _postgres(self):
        if self._engine is None:
            self._engine = sqlalchemy.create_engine(self.storage.parsed, pool_size=1, max_overflow=0,
                                                    pool_pre_ping=True)
        with self._engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
            conn.commit()
            held = [True]

            def release():
                if held[0]:
                    held[0] = False
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
                    conn.commit()
            try:
                yield release
            finally:
                try:
                    release()
                except sqlalchemy.exc.DBAPIError:  # the connection is gone, and the server dropped the lock with it
                    conn.invalidate()

    @contextmanager
    def _flock(self):
        with open(f"{self.storage.file}.lock", "a+") as handle:
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
