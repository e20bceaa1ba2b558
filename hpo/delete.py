"""`hpo delete`: a study gone for good, its trials and the config files it put in the artifact store.

What is found comes first (`find`), so that the command can say what it is about to remove and
refuse while a run is still training the study; `remove` then deletes the study, in one
transaction of Optuna's, before the files, so a failure midway never leaves a study whose trials
point at removed files (only files no study points at, which a second `hpo delete` cannot find;
they are named in the error).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna

from hpo import records
from hpo.errors import UserError
from hpo.export import study_trials
from hpo.storage import study_gone


@dataclass(frozen=True)
class Found:
    name: str
    trials: list                 # the study's trials, frozen
    artifacts: tuple[str, ...]   # the artifact ids its trials and the study itself uploaded

    @property
    def running(self) -> int:
        return records.count(self.trials).running


def find(rdb: optuna.storages.BaseStorage, name: str) -> Found:
    """The study `name` and what deleting it removes; an unknown name lists the studies there are."""
    trials = study_trials(rdb, name)
    study = optuna.load_study(study_name=name, storage=rdb)
    ids = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for owner in (study, *trials):
            ids += [meta.artifact_id for meta in
                    optuna.artifacts.get_all_artifact_meta(owner, storage=None if owner is study else rdb)]
    # a trial queued again (Ctrl-C, a lost worker) carries its first attempt's artifact along: one file
    return Found(name=name, trials=trials, artifacts=tuple(dict.fromkeys(ids)))


def beating(storage, name: str, within: float) -> dict[int, float]:
    """The study's RUNNING trials whose worker sent a heartbeat in the last `within` seconds, by
    number: how long ago, as the database's clock tells (the one Optuna's heartbeats are written by).
    Read from Optuna's heartbeat table, as its stale-trial check reads it; a trial without one is
    not counted (its run used no heartbeat)."""
    import sqlalchemy  # noqa: PLC0415

    query = sqlalchemy.text(
        "SELECT t.number, h.heartbeat, CURRENT_TIMESTAMP AS now FROM trials t "
        "JOIN trial_heartbeats h ON h.trial_id = t.trial_id JOIN studies s ON s.study_id = t.study_id "
        "WHERE s.study_name = :name AND t.state = 'RUNNING'"
    ).columns(number=sqlalchemy.Integer, heartbeat=sqlalchemy.DateTime, now=sqlalchemy.DateTime)
    engine = sqlalchemy.create_engine(storage.url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(query, {"name": name}).all()
    finally:
        engine.dispose()
    ages = {number: (now.replace(tzinfo=None) - beat.replace(tzinfo=None)).total_seconds()
            for number, beat, now in rows}
    return {number: age for number, age in ages.items() if age < within}


TRIES = 10  # deletions a run's writes may undo before the command gives up (about 9 s of them)


def delete_study(rdb: optuna.storages.BaseStorage, name: str, tries: int = TRIES) -> None:
    """Delete study `name`, and make sure it is gone: Optuna's deletion rolls back, and says
    nothing, when a row of the study is written meanwhile (a trial's report or heartbeat from a
    run still at work: PostgreSQL's foreign keys refuse the half-deleted study)."""
    study_id = rdb.get_study_id_from_name(name)
    for attempt in range(tries):
        if attempt:
            time.sleep(0.2 * attempt)
        try:
            rdb.delete_study(study_id)
        except KeyError:  # deleted by the try before, or by someone else meanwhile
            return
        if study_gone(rdb, name, study_id):
            return
    raise UserError(f"study {name!r} could not be deleted: a run wrote to it during each of {tries} tries; "
                    "stop the runs that use it, then delete it again")


def remove(rdb: optuna.storages.BaseStorage, found: Found, store: Path) -> int:
    """Delete the study, then its artifact files from `store`; returns how many files went. A file
    already gone is not an error (a store cleaned by hand, or on another machine's disk)."""
    delete_study(rdb, found.name)
    if not found.artifacts or not store.is_dir():
        return 0
    artifact_store = optuna.artifacts.FileSystemArtifactStore(str(store))
    removed, failed = 0, []
    for artifact_id in found.artifacts:
        try:
            artifact_store.remove(artifact_id)
            removed += 1
        except optuna.artifacts.exceptions.ArtifactNotFound:
            pass
        except (OSError, ValueError) as error:
            failed.append(f"{artifact_id} ({getattr(error, 'strerror', None) or error})")
    if failed:
        raise UserError(f"study {found.name!r} is deleted, but {len(failed)} of its artifact files in {store} could "
                        f"not be removed: {', '.join(failed[:3])}{' ...' if len(failed) > 3 else ''}; remove them "
                        "by hand")
    return removed
