"""`hpo run`: bring a study to N finished trials with K worker processes (hpo.worker), and show it."""

from __future__ import annotations

import json
import os
import shlex
import signal
import tempfile
import threading
import time
import uuid
import warnings
from multiprocessing import connection
from pathlib import Path
from typing import Any, Callable, Optional

import optuna

from hpo import processes, records
from hpo.checkpoints import remove_checkpoints
from hpo.errors import ConfigError, DatabaseGone, StudyDeleted, UserError
from hpo.retry import PATIENCE_SECONDS, Backoff, DatabaseUnavailable, is_outage
from hpo.storage import GRACE_SECONDS, HEARTBEAT_SECONDS, Storage, study_gone
from hpo.study import StudySpec
from hpo.worker import POLL_SECONDS, Job, worker_entry

STOP_SECONDS = 30         # how long interrupted workers get to record how their trials ended


def ensure_study(rdb: optuna.storages.BaseStorage, spec: StudySpec, storage: Storage,
                 data_digest: Optional[str] = None, folder: Optional[Path] = None) -> int:
    """The study's id; the study is created first, with the base recipe enqueued as trial 0, when
    the storage has none by that name. Creation is all or nothing: a study that could not be
    completed is deleted, so the next run does not find it half made. `data_digest` (own data:
    hpo.owndata.digest) must be what the study's trials trained on. `folder`: where `data.ensure`
    found the data, for the held-out count in the study's note (eval: val)."""
    lock = storage.lock(spec.name)
    try:
        with lock.hold():
            try:
                study_id = rdb.get_study_id_from_name(spec.name)
            except KeyError:
                return _create(rdb, spec, data_digest, folder)
            made_from = rdb.get_study_user_attrs(study_id)
            if records.FINGERPRINT in made_from and records.UID not in made_from:  # made before studies had one
                rdb.set_study_user_attr(study_id, records.UID, uuid.uuid4().hex)
                made_from = rdb.get_study_user_attrs(study_id)
    finally:
        lock.close()
    if not records.made_by_hpo(made_from):
        raise UserError(f"study {spec.name!r} in {storage.masked} was not made by hpo run (plain Optuna's, or one whose "
                        f"making was cut short); give this file another name: key, or remove that study with Optuna's "
                        f"own command: optuna delete-study --study-name {shlex.quote(spec.name)} --storage URL")
    delete = f"hpo delete --study {shlex.quote(spec.name)}{storage.hint_option_unless_default()}"  # the way out
    directions = [d.name.lower() for d in rdb.get_study_directions(study_id)]
    if directions != spec.directions:  # Optuna cannot change a study's objectives
        raise UserError(
            f"study {spec.name!r} in {storage.masked} {objectives(directions)}, but {spec.source} "
            f"{objectives(spec.directions, spec.objectives)}; a study's objectives cannot change: give this file "
            "another name: key, or use another --storage"
        )
    if made_from.get(records.FINGERPRINT) != spec.fingerprint and not same_search(made_from.get(records.SPEC), spec.raw):
        source = made_from.get(records.SOURCE, "unknown")
        same = Path(str(source)).resolve() == Path(str(spec.source)).resolve()
        changed = changed_keys(made_from.get(records.SPEC), spec.raw)
        since = f"{', '.join(changed)} changed since" if changed else "it has changed since"
        raise UserError(
            f"study {spec.name!r} in {storage.masked} was created from a different study file "
            + (f"(an earlier version of {source}: {since})" if same else
               f"({source}{': ' + ', '.join(changed) + ' differ' if changed else ''})")
            + f"; give this one another name: key, use another --storage, or delete the old study first "
            f"({delete})"
        )
    if data_digest and made_from.get(records.DATA, data_digest) != data_digest:
        raise UserError(
            f"study {spec.name!r} in {storage.masked} was searched on other data: {spec.data.path} has changed since "
            "its trials trained (its images, labels or classes differ), and trials on other data do not compare; "
            "restore the data, give this study file another name: key, or delete the old study first "
            f"({delete})"
        )
    if data_digest and records.DATA not in made_from:  # made before studies kept it: from now on
        optuna.load_study(study_name=spec.name, storage=rdb).set_user_attr(records.DATA, data_digest)
    kept = made_from.get(records.MODEL_CODE) or {}
    code = model_code(spec)
    for target, now in code.items():
        if target in kept and kept[target].get("digest") != now["digest"]:
            raise UserError(
                f"study {spec.name!r} in {storage.masked} was searched with another model: the code of {target} "
                f"({now['file']}) has changed since its trials trained, and trials of another model do not compare; "
                "restore it, give this study file another name: key, or delete the old study first "
                f"({delete})"
            )
    if set(code) - set(kept):  # made before studies kept it, or a factory no trial has used yet: from now on
        rdb.set_study_user_attr(study_id, records.MODEL_CODE, {**kept, **code})
    return study_id


def model_code(spec: StudySpec) -> dict:
    """{factory: {file, digest}} of your own model factories that `spec` may build (hpo.usermodel)."""
    from hpo import usermodel  # noqa: PLC0415

    digests = {target: usermodel.code_digest(target) for target in spec.model_factories()}
    return {target: d for target, d in digests.items() if d is not None}


def same_search(before, now) -> bool:
    """Whether two study files, as parsed, search the same way though their text differs: one says
    the name its file's name gives (`name: tiny` in tiny.yaml), or writes the data's path another
    way (./data/x.npz for data/x.npz; the data's own digest is checked apart). Both were refused as
    "a different study file"; the fingerprint, a hash of the parsed file, stays what existing studies kept."""
    def searched(raw):
        if not isinstance(raw, dict):
            return raw
        raw = {key: value for key, value in raw.items() if key != "name"}
        data = raw["base"].get("data") if isinstance(raw.get("base"), dict) else None
        if isinstance(data, dict) and isinstance(data.get("path"), str):
            raw["base"] = {**raw["base"], "data": {**data, "path": os.path.normpath(data["path"])}}
        return raw

    # compared as JSON, as the fingerprint hashes it: 1, 1.0 and true are equal in Python, not to a
    # factory of your own that tells them apart
    return isinstance(before, dict) and (json.dumps(searched(before), sort_keys=True, default=str)
                                         == json.dumps(searched(now), sort_keys=True, default=str))


def changed_keys(before, now, prefix: str = "", depth: int = 2, most: int = 4) -> list[str]:
    """The study file's keys whose values differ, two levels deep ('pruner', 'search.optimizer.lr',
    'base.epochs'), at most `most` of them: what to undo, or why the study needs a new name."""
    if not isinstance(before, dict) or not isinstance(now, dict) or depth == 0:
        return [prefix] if before != now and prefix else []
    keys = list(dict.fromkeys([*before, *now]))
    found = [k for key in keys
             for k in changed_keys(before.get(key), now.get(key), f"{prefix}.{key}" if prefix else str(key),
                                   depth - 1, most)]
    return found[:most] + ([f"{len(found) - most} more"] if len(found) > most else [])


def objectives(directions: list[str], names: tuple[str, ...] = ()) -> str:
    """'has one objective (maximize)' / 'asks for two objectives (accuracy: maximize, params: minimize)'."""
    verb = "asks for" if names else "has"
    listed = ", ".join(f"{n}: {d}" for n, d in zip(names, directions)) if names else ", ".join(directions)
    return f"{verb} {'one objective' if len(directions) == 1 else f'{len(directions)} objectives'} ({listed})"


def _create(rdb: optuna.storages.BaseStorage, spec: StudySpec, data_digest: Optional[str] = None,
            folder: Optional[Path] = None) -> int:
    import optuna_dashboard  # noqa: PLC0415 - heavy; needed once, for the study's note

    study = optuna.create_study(study_name=spec.name, storage=rdb, directions=spec.directions)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # both are, in some versions
            study.set_metric_names(spec.metric_names)
            study.enqueue_trial(spec.space.base_params(), user_attrs={records.BASE: True})
        optuna_dashboard.save_note(study, study_note(spec, folder))
        study.set_user_attr(records.SOURCE, os.path.abspath(spec.source))  # its hints work from any folder
        study.set_user_attr(records.SPEC, spec.raw)
        study.set_user_attr(records.UID, uuid.uuid4().hex)  # its checkpoints' key: Storage.checkpoint_key
        if data_digest:
            study.set_user_attr(records.DATA, data_digest)
        code = model_code(spec)
        if code:
            study.set_user_attr(records.MODEL_CODE, code)
        study.set_user_attr(records.FINGERPRINT, spec.fingerprint)  # last: the mark of a complete study
    except BaseException:
        optuna.delete_study(study_name=spec.name, storage=rdb)
        raise
    return rdb.get_study_id_from_name(spec.name)


def searched_name(p) -> str:
    return f"`{p.name}`" if p.name == p.key else f"`{p.name}` (sets `{p.key}`)"


def study_note(spec: StudySpec, folder: Optional[Path] = None) -> str:
    """The note optuna-dashboard shows on the study's page: where the search starts, its budget,
    and the hand-tuned number it is out to beat. `folder`: the data's, for how many held-out
    images an eval: val study scores its epochs on (without it, the note says how they are chosen)."""
    from hpo import data, datasets, models  # noqa: PLC0415
    from hpo.config import parse_config  # noqa: PLC0415
    from hpo.seeds import SEED_RESULTS  # noqa: PLC0415

    base = parse_config(spec.base)
    dataset = datasets.describe(base.data)
    budget = spec.budget
    limits = [f"at most {budget.max_params:,} parameters" if budget.max_params else "no parameter limit",
              f"at most {budget.epochs} epochs"]
    if budget.trial_seconds:
        limits.append(f"{budget.trial_seconds:g} s a trial")
    held_out = ""
    if spec.eval == "val":
        if folder is not None:
            held = data.validation_size(data.split_sizes(base.data, folder)["train"])
            scored = f"{base.data.test_subset:,} of {held:,}" if base.data.test_subset else f"{held:,}"
        else:
            scored = f"a sixth (at most {data.VALIDATION_IMAGES:,}) of the"
        held_out = (f" Epochs are reported on {scored} training images held out of training; the test set is "
                    "measured once, at the end, as the user attribute `test_accuracy`.")
    opt = base.optimizer
    value = (f"Each trial has two values: its **{spec.metric}** after its last epoch (up) and its "
             "**parameters** (down); the study's best trials are its Pareto front, and nothing is pruned"
             if spec.multi_objective else f"Each trial's value is its **{spec.metric}** after its last epoch")
    lines = [f"# {spec.name}", f"From `{os.path.abspath(spec.source)}`. {value}; "
             f"each trial's full config is attached as an artifact (`hpo train --config` re-trains it).{held_out}", "",
             f"**Base recipe (trial 0):** {models.describe(base.model, shape=dataset.shape, classes=dataset.classes)}, "
             f"{opt.name} lr {opt.lr:g}, batch {base.batch_size}, {base.epochs} epochs on {dataset.title}.", "",
             f"**Budget:** {', '.join(limits)}.", "",
             f"**Searched:** {', '.join(searched_name(p) for p in spec.space.params) or 'nothing'}."]
    preset = (spec.raw.get("base", {}).get("model") or {}).get("preset")
    seed = next((s for s in SEED_RESULTS if s.preset == preset), None)
    if seed:
        lines += ["", f"**To beat:** {seed.label} (seed {seed.seed}), {100 * seed.accuracy:.2f}% "
                      f"{'(about) ' if seed.approximate else ''}with {seed.n_params:,} parameters: its best "
                      "epoch on the test set, picked after the fact."]
    return "\n".join(lines)


class Silent:
    """A display that shows nothing: what `hpo.run` from Python uses."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def update(self, trials) -> None:
        pass

    def summary(self, trials) -> None:
        pass


def quiet(line: str) -> None:
    pass


def graph_note(spec: StudySpec, device) -> Optional[str]:
    """On CUDA, one line naming the study's optimizers whose trials train without the CUDA graph
    (hpo.steps), since their epochs take about ten times as long."""
    if device.type != "cuda" or os.environ.get("HPO_CUDA_GRAPH") == "0":
        return None
    from hpo.steps import eager_choices  # noqa: PLC0415 - torch-heavy

    eager = eager_choices(spec.space)
    return (f"on CUDA, trials with {' or '.join(eager)} train without the CUDA graph, each epoch about 10x slower "
            "(H200, BENCHMARKS.md); the study's other trials run their step as one graph") if eager else None


def check_writable_folder(folder: Path, what: str) -> None:
    """A folder the workers will write into (made when missing): one line now, before the study is
    created, rather than a trial failing in every worker. A probe folder made and removed in the
    nearest folder that exists is the one test that holds for root, read-only mounts and the like."""
    there = next((p for p in (folder, *folder.parents) if p.exists() or p.is_symlink()), Path("."))
    if not there.is_dir():
        where = "is a file" if there == folder else f"is under {there}, a file"
        raise UserError(f"the {what} {folder} {where}, not a folder; give a folder (it is made if missing)")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".hpo-probe-", dir=there))
    except OSError as error:
        where = "" if there == folder else f" ({there}, where it would be made)"
        raise UserError(f"the {what} {folder}{where} cannot be written: {error.strerror}; give a folder this user "
                        "can write (it is made if missing)") from None


def run(*, spec: StudySpec, storage: Storage, trials: int, workers: int | str = 1, timeout: Optional[float] = None,
        device: str = "auto", data_dir: Optional[Path] = None,
        heartbeat: int = HEARTBEAT_SECONDS, grace: int = GRACE_SECONDS,
        checkpoint_dir: Optional[Path] = Path("checkpoints"), patience: float = PATIENCE_SECONDS,
        artifacts: Optional[Path] = None, display: Callable[[int, list], Any] = lambda workers, before: Silent(),
        info: Callable[[str], None] = quiet, warn: Callable[[str], None] = quiet, pack: int = 1) -> int:
    """Run `spec` until it has `trials` finished trials; every user mistake is caught before the
    study is created. `display(workers, trials before)` makes what draws the run from the
    database (`hpo.display.RunDisplay` for the CLI); `info` and `warn` take its other lines.
    `workers` "auto": one single-thread worker per CPU core, or 8 per GPU (16 under CUDA MPS):
    trainer.auto_workers.
    `pack` > 1: each worker claims that many trials at a time and trains those of one shape as one
    stacked model (hpo.packed).
    Returns the exit status: 0 done (or stopped by `timeout`), 1 a worker failed, 130 interrupted."""
    from hpo import data as data_mod  # noqa: PLC0415 - torch-heavy
    from hpo.packed import never_packs  # noqa: PLC0415
    from hpo.trainer import auto_workers, mps_hint, pick_device  # noqa: PLC0415

    if not os.environ.get("HPO_DEBUG"):
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    for folder, what in ((checkpoint_dir, "checkpoint folder (--checkpoint-dir)"),
                         (artifacts, "artifact store (--artifacts)")):
        if folder:
            check_writable_folder(Path(folder), what)
    ctx = processes.worker_context()  # its fork server imports what a worker needs while this process sets up
    where = pick_device(device)
    unpacked = never_packs(spec) if pack > 1 else None
    if unpacked:
        warn(f"hpo run: --pack {pack}: {unpacked}; each trial trains alone (as --pack 1)")
        pack = 1
    if pack > 1 and where.type == "cpu":
        warn(f"hpo run: --pack {pack} on a CPU: packed trials trained at 0.4-0.6x the rate of one at a time on "
             "the 2-core machines measured (the arithmetic is the bottleneck there, BENCHMARKS.md); packing is "
             "for GPUs, whose small-net steps are launches")
    for note in (graph_note(spec, where), mps_hint(where) if workers == "auto" else None):
        if note:
            info(note)
    if workers == "auto":
        workers = auto_workers(where)
    folder = data_mod.ensure(spec.data, data_dir, log=warn)  # once, before K workers
    try:
        data_mod.check_subsets_on_disk(spec.data, folder, held_out=spec.eval == "val", prefix="base.data")
    except ConfigError as error:
        raise error.located(spec.source) from None
    if storage.create_database_if_missing():
        warn(f"created database for {storage.masked}")
    folder_made = storage.make_folder()
    if folder_made:
        warn(f"made the folder {folder_made} for the new database {storage.masked}")
    rdb = storage.open(heartbeat=heartbeat, grace=grace)
    study_id = ensure_study(rdb, spec, storage, data_mod.resolve(spec.data).digest, folder)
    checkpoint_key = storage.study_checkpoint_key(rdb, study_id)
    before = rdb.get_all_trials(study_id, deepcopy=False)
    # the display's poll goes through Optuna's cached storage: each second it reads again only the
    # trials that were unfinished at its last look and the new ones, not every trial's attributes
    watched = optuna.load_study(study_name=spec.name, storage=rdb)
    finished = records.count(before).finished
    if finished >= trials:
        info(f"study {spec.name!r} already has {finished} finished trials, --trials {trials} asks for no more; "
             f"nothing to run (ask for more with --trials {finished + 1} or higher)")
        return 0
    workers = min(workers, trials - finished)  # a worker more than the trials left would only wait
    for t in before:  # another run's, alive or not: say what the wait for its slot will be, not wait silently
        if t.state == optuna.trial.TrialState.RUNNING:
            worker = t.user_attrs.get(records.WORKER)
            info(f"trial {t.number} is running in another run" + (f" (worker {worker})" if worker else "")
                 + f"; if that worker is gone, its trial is failed and re-run from its checkpoint once its heartbeat "
                 f"is {grace} s old (--grace)")

    deadline = time.time() + timeout if timeout else None
    job = Job(spec, storage, trials, deadline, device, str(data_dir) if data_dir else None, workers, heartbeat, grace,
              str(checkpoint_dir) if checkpoint_dir else None, patience, str(artifacts) if artifacts else None, pack,
              dict(os.environ), os.getpid())
    procs = [ctx.Process(target=worker_entry, name=f"hpo-worker-{i}", args=(job, i)) for i in range(workers)]
    view = display(workers, before)

    def deleted() -> StudyDeleted:
        return StudyDeleted(f"study {spec.name!r} was deleted from {storage.masked} while this run worked on it; "
                            "its workers are stopped, and nothing is left to continue")

    identity = file_identity(storage.file)

    def refresh() -> None:
        if identity is not None and file_identity(storage.file) != identity:
            raise DatabaseGone(
                f"the database file {storage.file} was deleted or replaced while this run worked on it: its workers "
                "wrote on into the old file, and what they wrote is lost with it; they are stopped (restore the "
                "file from a backup to continue the study, or run again to start it afresh)")
        try:
            view.update(watched.get_trials(deepcopy=False))
        except Exception as error:
            if study_gone(rdb, spec.name, study_id):
                raise deleted() from None
            if not is_outage(error):
                raise  # during an outage the display skips a beat; the workers wait it out themselves

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:  # `docker stop` sends SIGTERM: stop as Ctrl-C does
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        for p in procs:
            p.start()
        with view:
            while any(p.is_alive() for p in procs):
                refresh()
                # a second between looks, cut short when a worker ends: the run's end shows at once
                connection.wait([p.sentinel for p in procs if p.is_alive()], timeout=POLL_SECONDS)
            refresh()
    except BaseException as error:  # Ctrl-C, SIGTERM, or the caller's display (hpo.run's on_trial) raising
        stop_workers(procs, warn)
        processes.stop_fork_server()
        # no trial of a deleted study will ever be retried (one whose file a backup restores may be)
        if isinstance(error, StudyDeleted) and not isinstance(error, DatabaseGone) and checkpoint_dir:
            remove_checkpoints(Path(checkpoint_dir), spec.name, checkpoint_key)
        tidy_checkpoints(checkpoint_dir, spec.name)
        if not isinstance(error, KeyboardInterrupt):
            raise
        counts = records.count(rdb.get_all_trials(study_id, deepcopy=False))
        warn(f"interrupted: {counts.finished}/{trials} finished{what_is_left(counts.finished, trials)}")
        return 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    for p in procs:
        p.join()
    processes.stop_fork_server()
    tidy_checkpoints(checkpoint_dir, spec.name)
    try:
        final = Backoff(patience).call(lambda: rdb.get_all_trials(study_id, deepcopy=False))
    except DatabaseUnavailable as error:
        warn(f"hpo run: the database {storage.masked} was {error}; run the same command again once it is back")
        return 1
    except KeyError:
        if study_gone(rdb, spec.name, study_id):
            raise deleted() from None
        raise
    view.summary(final)
    counts = records.count(final)
    bad = [p for p in procs if p.exitcode not in (0, None)]
    for index, p in enumerate(procs):
        if p.exitcode is not None and p.exitcode < 0:  # killed by a signal: it could say nothing itself
            warn(f"hpo run: worker {index} (pid {p.pid}) was killed by {signal_name(-p.exitcode)}; a trial it held "
                 f"stays RUNNING until its heartbeat is {grace} s old (--grace), then a run retries it from its "
                 "checkpoint")
    if bad:
        warn(f"hpo run: {len(bad)} of {workers} workers stopped with an error (see above); "
             f"{counts.finished}/{trials} finished{what_is_left(counts.finished, trials)}")
        return 1
    if counts.finished < trials:
        reason = "the --timeout passed" if deadline and time.time() >= deadline else "the workers stopped"
        warn(f"{counts.finished}/{trials} finished: {reason}; run the same command to continue")
    return 0


def what_is_left(finished: int, trials: int) -> str:
    """How a run's last line ends: what to do for the trials it did not finish, or that it has none
    left (it said "run the same command to continue" of a study that had all its trials)."""
    return "; run the same command to continue" if finished < trials else ", all it asked for"


def file_identity(path: Optional[Path]) -> Optional[tuple[int, int]]:
    """An SQLite file's (device, inode): another once the file is deleted, or replaced by another
    of its name. None for a server's database; (-1, -1) for a file that is not there."""
    try:
        found = os.stat(path) if path is not None else None
    except OSError:
        return (-1, -1)  # gone: never the identity of a file that was there
    return (found.st_dev, found.st_ino) if found else None


def signal_name(number: int) -> str:
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
    return name + (" (as the out-of-memory killer does)" if name == "SIGKILL" else "")


def remove_if_empty(*folders: Path) -> None:
    """Remove each folder in turn while it is empty (a trial's checkpoint left for a retry, or
    another run's, keeps it and those after it)."""
    for folder in folders:
        try:
            folder.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            return


def tidy_checkpoints(checkpoint_dir: Optional[Path], name: str) -> None:
    """Each trial's checkpoint goes when it ends; the study's folder and the checkpoint folder go too
    once empty (one an interrupted trial still needs stays, with its folders)."""
    if checkpoint_dir:
        remove_if_empty(Path(checkpoint_dir) / name, Path(checkpoint_dir))


def stop_workers(procs: list, warn: Callable[[str], None] = quiet) -> None:
    """Let each worker record how its trials ended, then make sure none outlives the command.
    Each is sent SIGTERM, which a worker takes as Ctrl-C even where SIGINT is ignored: Ctrl-C at
    a terminal reaches the workers too (they let the second signal pass), but a SIGINT or SIGTERM
    sent to this process alone (`kill -INT`, a supervisor, `docker stop`) does not. Not on
    Windows, where SIGTERM is TerminateProcess (no handler runs) and Ctrl-C reaches the console."""
    started = [p for p in procs if p.pid is not None]
    for p in started:
        if p.is_alive() and os.name != "nt":
            os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS  # one wait for all: they were all told at once
    for p in started:
        p.join(timeout=max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()
            warn(f"hpo run: a worker (pid {p.pid}) had not stopped {STOP_SECONDS} s after it was told to and "
                 "was killed; a trial it held stays RUNNING until --grace passes, then is failed and queued again")
