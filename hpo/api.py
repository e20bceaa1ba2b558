"""`hpo` from Python: for notebooks and scripts. Each function returns values and prints nothing;
the command line (hpo.cli) is built on the same pieces.

    import hpo
    spec = hpo.load_spec("studies/quickstart.yaml")
    study = hpo.run(spec, trials=20, storage="sqlite:///hpo.db")      # an optuna.Study
    history = hpo.train(study.best_trial.user_attrs["config"], epochs=3)  # one EpochResult per epoch

A study file with `objectives: [accuracy, params]` makes a multi-objective study: there is no
single best trial (Optuna's `study.best_trial` raises); `study.best_trials` is the Pareto front,
each trial's `values` its final-epoch accuracy and its parameter count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Union

import optuna

from hpo.errors import UserError
from hpo.limits import MAX_EPOCHS, MAX_PACK, MAX_SEED, MAX_WORKERS
from hpo.processes import main_without_a_missing_file
from hpo.schema import is_number, is_whole
from hpo.study import StudySpec, load_spec

__all__ = ["load_spec", "run", "train", "verify"]


class RunStopped(RuntimeError):
    """The run ended short of its trials: a worker failed, or it was interrupted."""


def run(study: Union[str, Path, StudySpec], *, trials: int, storage: Optional[str] = None, workers: Union[int, str] = 1,
        timeout: Optional[float] = None, device: str = "auto", data_dir: Optional[Path] = None,
        checkpoint_dir: Optional[Path] = Path("checkpoints"), artifacts: Optional[Path] = None,
        on_trial: Optional[Callable[[optuna.trial.FrozenTrial], None]] = None, pack: int = 1) -> optuna.Study:
    """Bring `study` (a StudySpec, a study file's path, or a name under studies/) to `trials`
    finished trials, as `hpo run` does, and return the Optuna study (multi-objective: its
    `best_trials` are the Pareto front; `hpo.records.pareto_front(study.trials)` is the same front,
    most accurate first). `on_trial(trial)` is called for each trial that ends while it runs.
    Raises RunStopped if a worker failed or it was interrupted.

    Workers are new processes that import the calling script again: in a script (not a
    notebook), call this under `if __name__ == "__main__":`."""
    from hpo import artifacts as artifacts_mod  # noqa: PLC0415
    from hpo import records  # noqa: PLC0415
    from hpo.runner import Silent, run as run_study  # noqa: PLC0415
    from hpo.storage import Storage  # noqa: PLC0415

    import multiprocessing  # noqa: PLC0415

    trials, pack, workers = whole(trials), whole(pack), whole(workers)
    _check(trials=(trials, is_whole(trials, 1)), pack=(pack, is_whole(pack, 1, MAX_PACK)),
           device=(device, device in DEVICES),
           workers=(workers, workers == "auto" or is_whole(workers, 1, MAX_WORKERS)),
           timeout=(timeout, timeout is None or (is_number(timeout) and timeout > 0)),
           on_trial=(on_trial, on_trial is None or callable(on_trial)),
           study=(study, isinstance(study, StudySpec) or given_path(study)),
           storage=(storage, storage is None or (isinstance(storage, str) and storage.strip() != "")),
           data_dir=(data_dir, data_dir is None or given_path(data_dir)),
           checkpoint_dir=(checkpoint_dir, checkpoint_dir is None or given_path(checkpoint_dir)),
           artifacts=(artifacts, artifacts is None or given_path(artifacts)))
    if multiprocessing.current_process().name.startswith("hpo-worker"):
        raise RuntimeError("hpo.run was called again inside one of its own worker processes, which import the "
                           "calling script anew: in a script, call hpo.run under  if __name__ == '__main__':")
    spec = study if isinstance(study, StudySpec) else load_spec(str(study))
    where = Storage.resolve(storage)
    lines: list[str] = []

    class Calls(Silent):
        def __init__(self, before):
            self.newly_ended = records.NewlyEnded(before)

        def update(self, trials_now) -> None:
            for t in self.newly_ended(trials_now):
                on_trial(t)

    with main_without_a_missing_file():
        status = run_study(spec=spec, storage=where, trials=trials, workers=workers, timeout=timeout, device=device,
                           data_dir=data_dir, checkpoint_dir=checkpoint_dir,
                           artifacts=artifacts_mod.folder_for(where, artifacts),
                           display=(lambda _, before: Calls(before)) if on_trial else (lambda *_: Silent()),
                           warn=lines.append, pack=pack)
    if status == 130:
        raise KeyboardInterrupt
    if status != 0:
        raise RunStopped(lines[-1] if lines else f"hpo run ended with status {status}")
    return optuna.load_study(study_name=spec.name, storage=where.open_existing())


def train(config, *, epochs: Optional[int] = None, seed: Optional[int] = None, device: str = "auto",
          data_dir: Optional[Path] = None, on_epoch=None) -> list:
    """Train one config, as `hpo train` does: a path to a config or export file, a config
    mapping (e.g. a trial's `config` attribute), or a TrainConfig. Returns the epochs' results
    (`hpo.trainer.EpochResult`: epoch, train_loss, test_accuracy, seconds, lr)."""
    from hpo import data  # noqa: PLC0415
    from hpo.trainer import pick_device, train as train_loop  # noqa: PLC0415

    epochs, seed = whole(epochs), whole(seed)
    _check(epochs=(epochs, epochs is None or is_whole(epochs, 1, MAX_EPOCHS)),
           seed=(seed, seed is None or is_whole(seed, 0, MAX_SEED)), device=(device, device in DEVICES),
           on_epoch=(on_epoch, on_epoch is None or callable(on_epoch)),
           data_dir=(data_dir, data_dir is None or given_path(data_dir)))
    cfg = _config(config).with_overrides(epochs=epochs, seed=seed)
    dev = pick_device(device)
    return train_loop(cfg, data.load(cfg.data, dev, data_dir), on_epoch=on_epoch)


def verify(config, *, seeds: int = 5, epochs: Optional[int] = None, device: str = "auto",
           data_dir: Optional[Path] = None, workers: int = 1):
    """Re-train one config (as `train` takes it) with `seeds` seeds, as `hpo verify` does; returns
    a `hpo.verification.Verification` (its `.mean` and `.std` of the final-epoch accuracies, `.std`
    None for one seed, each run, and `.diverged`: the seeds whose loss blew up, left out of the mean).
    `workers` > 1 trains that many seeds at once in processes of their own (as `hpo.run`'s
    workers, they import the calling script again: call it under `if __name__ == "__main__":`)."""
    from hpo.space import model_size  # noqa: PLC0415
    from hpo.verification import verify as verify_config  # noqa: PLC0415

    seeds, epochs, workers = whole(seeds), whole(epochs), whole(workers)
    _check(seeds=(seeds, is_whole(seeds, 1)), epochs=(epochs, epochs is None or is_whole(epochs, 1, MAX_EPOCHS)),
           device=(device, device in DEVICES), seed_workers=(workers, is_whole(workers, 1, MAX_WORKERS)),
           data_dir=(data_dir, data_dir is None or given_path(data_dir)))
    cfg = _config(config).with_overrides(epochs=epochs)
    with main_without_a_missing_file():
        return verify_config(cfg, seeds=seeds, n_params=model_size(cfg), device=device, data_dir=data_dir,
                             workers=workers)


DEVICES = ("auto", "cpu", "cuda")
EXPECTED = {"trials": "a whole number, 1 or more", "seeds": "a whole number, 1 or more",
            "pack": f"a whole number from 1 to {MAX_PACK}", "epochs": f"None or a whole number from 1 to {MAX_EPOCHS}",
            "seed": f"None or a whole number from 0 to {MAX_SEED:,}", "device": " or ".join(map(repr, DEVICES)),
            "workers": f"a whole number from 1 to {MAX_WORKERS}, or 'auto'", "timeout": "None or seconds > 0",
            "on_trial": "None or a function of one trial", "study": "a study name, a path or a StudySpec",
            "seed_workers": f"a whole number from 1 to {MAX_WORKERS}", "on_epoch": "None or a function of one epoch",
            "storage": "None or a storage URL, not empty (sqlite:///hpo.db, postgresql+psycopg://USER@HOST/DB)",
            "data_dir": "None or a folder's path", "checkpoint_dir": "None or a folder's path",
            "artifacts": "None or a folder's path", "config": "a config file's path, a config mapping or a TrainConfig"}


def whole(value):
    """A whole number of another type (numpy's int64, from a loop over np.arange) as a plain int;
    anything else as it is, for _check to judge."""
    import numbers  # noqa: PLC0415

    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and not isinstance(value, int):
        return int(value)
    return value


def given_path(value) -> bool:
    """A path given as a str or Path, not empty ('' would be the working folder)."""
    return isinstance(value, (str, Path)) and str(value).strip() != ""


def _check(**given: tuple) -> None:
    """What the command line's flags refuse, refused here too: one UserError, before any work
    (each keyword: the argument's value, and whether it is fine)."""
    for name, (value, fine) in given.items():
        if not fine:
            shown = repr(value) if len(repr(value)) <= 40 else type(value).__name__
            shown_name = "workers" if name == "seed_workers" else name  # verify's workers take no 'auto'
            raise UserError(f"{shown_name}={shown}: expected {EXPECTED[name]}")


def _config(config):
    from hpo.config import TrainConfig, load_config, parse_config  # noqa: PLC0415

    if isinstance(config, (str, Path)):
        _check(config=(config, given_path(config)))
        return load_config(config)
    if isinstance(config, dict):
        return parse_config(config)
    if isinstance(config, TrainConfig):
        return config
    raise UserError(f"expected a file path, a config mapping or a TrainConfig, got {type(config).__name__}")
