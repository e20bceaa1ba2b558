"""Trial artifacts: each trial's full config as a YAML file in Optuna's artifact store, which
optuna-dashboard lists on the trial's page and downloads (`hpo dashboard --artifacts DIR`).

The store is a folder beside the database by default (`hpo-artifacts/` beside `hpo.db`), or
`./hpo-artifacts` for a database server; workers on several machines need a folder they all
share (`--artifacts` or `HPO_ARTIFACTS`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import Optional

import optuna
import yaml
from optuna.artifacts import FileSystemArtifactStore

from hpo.storage import Storage

SERVER_FOLDER = Path("hpo-artifacts")


def folder_for(storage: Storage, given: Optional[Path] = None) -> Path:
    """`given`, else $HPO_ARTIFACTS, else beside the SQLite file, else ./hpo-artifacts."""
    if given:
        return Path(given)
    if env := os.environ.get("HPO_ARTIFACTS"):
        return Path(env)
    if storage.file is not None:
        return storage.file.with_name(f"{storage.file.stem}-artifacts")
    return SERVER_FOLDER


class WholeFiles(FileSystemArtifactStore):
    """Optuna's store, less what a failed write leaves: a full disk left a 0-byte or cut-short
    file in the store that no trial names and the dashboard never lists."""

    def write(self, artifact_id: str, content_body) -> None:
        try:
            super().write(artifact_id, content_body)
        except BaseException:
            with contextlib.suppress(Exception):
                self.remove(artifact_id)
            raise


def open_store(folder: Path) -> FileSystemArtifactStore:
    folder.mkdir(parents=True, exist_ok=True)
    return WholeFiles(str(folder))


def upload_config(store: FileSystemArtifactStore, trial: optuna.Trial, config: dict) -> str:
    """Upload `config` as trial-N-config.yaml; returns the artifact's id."""
    with tempfile.TemporaryDirectory(prefix="hpo-artifact-") as tmp:
        path = Path(tmp) / f"trial-{trial.number}-config.yaml"
        path.write_text(f"# trial {trial.number}: re-train with  hpo train --config {path.name}\n"
                        + yaml.safe_dump(config, sort_keys=False))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial,
                                                    mimetype="application/yaml")
