"""A training config: what `hpo train --config` reads, what a trial trains, what export writes."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Optional

from hpo import datasets, models, schema
from hpo.applies import DEFAULT_OPTIMIZER, DEFAULT_SCHEDULE, OPTIMIZER_ONLY, SCHEDULE_ONLY
from hpo.augment import Augment
from hpo.errors import ConfigError, UserError
from hpo.limits import MAX_EPOCHS, MAX_SEED
from hpo.schema import require

OPTIMIZERS = ("sgd", "adam", "adamw", "nadam", "rmsprop", "adabelief")
SCHEDULES = ("none", "step", "onecycle", "cosine")


def optimizer_default(key: str, name: str) -> Any:
    """What optimizer `name` trains with where a config leaves `key` (momentum, nesterov, beta1,
    beta2) out; None for a key it does not take."""
    if name not in OPTIMIZER_ONLY.get(key, ()):
        return None
    return {"momentum": 0.9 if name == "sgd" else 0.0, "nesterov": False, "beta1": 0.9, "beta2": 0.999}[key]


@dataclass(frozen=True)
class Optimizer:
    name: str = DEFAULT_OPTIMIZER
    lr: float = 0.01
    weight_decay: float = 0.0  # L2 for sgd/adam/nadam/rmsprop; decoupled for adamw/adabelief
    momentum: Optional[float] = None  # sgd, rmsprop (default 0.9 for sgd, 0 for rmsprop)
    nesterov: Optional[bool] = None   # sgd
    beta1: Optional[float] = None     # adam-like (default 0.9)
    beta2: Optional[float] = None     # adam-like (default 0.999)

    def __post_init__(self):
        require(self.name in OPTIMIZERS, "name", f"unknown optimizer {self.name!r}; choose from {', '.join(OPTIMIZERS)}")
        require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        require(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        for key, names in OPTIMIZER_ONLY.items():
            if getattr(self, key) is not None:
                require(self.name in names, key, f"applies to {'/'.join(names)} only, not {self.name}")
        if self.momentum is not None:
            require(0 <= self.momentum < 1, "momentum", f"must be in [0, 1), got {self.momentum}")
        if self.nesterov:
            require((self.momentum if self.momentum is not None else 0.9) > 0, "nesterov", "needs momentum > 0")
        for key in ("beta1", "beta2"):
            if getattr(self, key) is not None:
                require(0 <= getattr(self, key) < 1, key, f"must be in [0, 1), got {getattr(self, key)}")


@dataclass(frozen=True)
class Schedule:
    name: str = DEFAULT_SCHEDULE
    step_size: int = 1         # step: epochs between decays
    gamma: float = 0.1         # step: factor at each decay
    pct_start: float = 0.25    # onecycle: fraction of training spent warming up to lr
    warmup_epochs: float = 0.0  # cosine: linear warm-up before the decay

    def __post_init__(self):
        require(self.name in SCHEDULES, "name", f"unknown schedule {self.name!r}; choose from {', '.join(SCHEDULES)}")
        require(self.step_size >= 1, "step_size", f"must be >= 1, got {self.step_size}")
        require(0 < self.gamma <= 1, "gamma", f"must be in (0, 1], got {self.gamma}")
        require(0 < self.pct_start < 1, "pct_start", f"must be in (0, 1), got {self.pct_start}")
        require(self.warmup_epochs >= 0, "warmup_epochs", f"must be >= 0, got {self.warmup_epochs}")
        for key, names in SCHEDULE_ONLY.items():  # a value that would do nothing is a mistake, not a setting
            if getattr(self, key) != getattr(Schedule, key):
                require(self.name in names, key, f"applies to the {'/'.join(names)} schedule only, not {self.name}: "
                                                 f"remove it, or give schedule.name: {names[0]}")


@dataclass(frozen=True)
class AugmentConfig(Augment):
    def __post_init__(self):
        for key in ("rotate", "affine_degrees", "shear"):
            require(0 <= getattr(self, key) <= 180, key, f"degrees in [0, 180], got {getattr(self, key)}")
        require(0 <= self.translate < 1, "translate", f"a fraction in [0, 1), got {self.translate}")
        require(0 <= self.scale < 1, "scale", f"a fraction in [0, 1), got {self.scale}")


@dataclass(frozen=True)
class Data:
    dataset: str = "mnist"              # a name in hpo.datasets.DATASETS, or npz / folder: your own, at `path`
    train_subset: Optional[int] = None  # a fixed, class-stratified subset of the training split (None: all)
    test_subset: Optional[int] = None   # the same for the test split
    path: Optional[str] = None          # npz / folder only: the file or folder, relative to the working directory
    normalize: Optional[bool] = None    # false: the model sees [0, 1] pixels, not pixels standardized by the
                                        # dataset's mean and std (unset or true); seeds 000 and 001 trained so
    # the trainer checks the subsets against the split sizes, which only the files know; whether
    # `path` exists and holds good data is checked when it is described (hpo.datasets.describe)

    def __post_init__(self):
        require(self.dataset in datasets.DATASETS or self.dataset in datasets.SOURCES, "dataset",
                f"unknown dataset {self.dataset!r}; choose from {', '.join(datasets.DATASETS)}, "
                f"or your own data: {' or '.join(datasets.SOURCES)} with a path")
        if self.dataset in datasets.SOURCES:
            require(bool(self.path), "path", f"dataset {self.dataset} needs a path: {datasets.OWN_LAYOUT[self.dataset]}")
        else:
            require(self.path is None, "path", f"applies to dataset {' or '.join(datasets.SOURCES)} only; "
                                               f"{self.dataset!r} is registered and lives in the data folder "
                                               "(--data-dir): remove data.path")
        if self.train_subset is not None:
            require(self.train_subset >= 10, "train_subset", f"must be 10 or more, got {self.train_subset}")
        if self.test_subset is not None:
            require(self.test_subset >= 10, "test_subset", f"must be 10 or more, got {self.test_subset}")


@dataclass(frozen=True)
class TrainConfig:
    model: Any  # a models.ModelSpec; parsed by models.parse_model
    optimizer: Optimizer = field(default_factory=Optimizer)
    schedule: Schedule = field(default_factory=Schedule)
    batch_size: int = 128
    epochs: int = 10
    label_smoothing: float = 0.0
    ema: Optional[float] = None  # evaluate and keep an exponential moving average of the weights
                                 # (and BatchNorm statistics), this decay per optimizer step (hpo.average)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    data: Data = field(default_factory=Data)
    seed: int = 0

    def __post_init__(self):
        require(1 <= self.batch_size <= 60_000, "batch_size", f"must be in [1, 60000], got {self.batch_size}")
        require(1 <= self.epochs <= MAX_EPOCHS, "epochs", f"must be in [1, {MAX_EPOCHS}], got {self.epochs}")
        require(0 <= self.label_smoothing < 1, "label_smoothing", f"must be in [0, 1), got {self.label_smoothing}")
        if self.ema is not None:
            require(0 < self.ema < 1, "ema", f"a decay per optimizer step in (0, 1), such as 0.999, got {self.ema}; "
                                             "leave it out to keep the last step's weights")
        require(0 <= self.seed <= MAX_SEED, "seed", f"must be a whole number from 0 to {MAX_SEED:,}, got {self.seed}")
        if self.schedule.name == "cosine":
            warmup = self.schedule.warmup_epochs
            require(warmup < self.epochs, "schedule.warmup_epochs",
                    f"{warmup:g} epochs of warm-up leave none of the {self.epochs} epoch(s) for the cosine decay; "
                    "make it less than epochs")

    def to_dict(self) -> dict:
        """Plain data, without optional keys left unset: what export writes and train re-reads."""
        data = schema.to_dict(self)
        if hasattr(self.model, "as_config"):  # the user's own model (hpo.usermodel): its module and arguments
            data["model"] = self.model.as_config()
        return _drop_none(data)

    def with_overrides(self, **changes) -> "TrainConfig":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def _drop_none(value):
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


def parse_config(data: Any, source: str | None = None) -> TrainConfig:
    """A TrainConfig from plain data; every error names `source` and the dotted key."""
    try:
        if not isinstance(data, dict):
            raise ConfigError("", f"expected a mapping with at least a 'model' key, got {schema.describe(data)}")
        if "model" not in data:
            known = [f.name for f in fields(TrainConfig)]
            unknown = [k for k in data if k not in known]
            if unknown:  # a misspelt model key says so, rather than that the model is missing
                raise schema.unknown_key("", unknown[0], known)
            raise ConfigError("model", "missing; give a preset (model: {preset: lenet5}) or a family")
        rest = {k: v for k, v in data.items() if k != "model"}
        model = models.parse_model(data["model"])
        cfg = replace(schema.parse(TrainConfig, {**rest, "model": None}), model=model)
        dataset = datasets.describe(cfg.data)
        models.check_shape(model, dataset.shape, classes=dataset.classes)
        return cfg
    except ConfigError as error:
        raise error.located(source) if source else error from None


def load_config(path: str | Path, trial: Optional[int] = None) -> TrainConfig:
    """Read a training config file; an export file with several trials gives its first, or the
    one of Optuna trial number `trial`."""
    return load_export(path, trial)[0]


def load_export(path: str | Path, trial: Optional[int] = None) -> tuple[TrainConfig, Optional[dict]]:
    """`load_config`, and the export's record of the trial it trains (its value, device, torch
    threads, packing: what `hpo train` compares its run with); None for a plain training config."""
    data = schema.load_yaml(path)
    schema.require_document(data, path)
    if isinstance(data, dict) and "base" in data and "model" not in data:
        raise ConfigError("", "a study file, not a training config: run its search with "
                              f"`hpo run --study {shlex.quote(str(path))} --trials N`, or train its base recipe by giving "
                              "`hpo train` a file that holds what is under `base:`", source=str(path))
    if isinstance(data, dict) and "trials" in data and "model" not in data:
        trials = data["trials"]
        if not isinstance(trials, list):
            raise ConfigError("trials", f"expected the list `hpo export` writes, got {schema.describe(trials)}",
                              source=str(path))
        if not trials:
            raise ConfigError("trials", "the export holds no trials", source=str(path))
        at = 0
        numbers = [t.get("trial") if isinstance(t, dict) else None for t in trials]
        twice = next((n for n in numbers if n is not None and numbers.count(n) > 1), None)
        if twice is not None:  # a hand edit: which of them is the trial is anyone's guess, with --trial or not
            raise ConfigError("trials", f"trial {twice} is there {numbers.count(twice)} times; keep one (or "
                                        "export again: hpo export --top N)", source=str(path))
        if trial is not None:
            if trial not in numbers:
                raise UserError(f"--trial {trial}: {path} holds trial(s) {', '.join(map(str, numbers))}; "
                                "pick one of them, or export that trial (hpo export --top N)")
            at = numbers.index(trial)
        entry = trials[at]
        if isinstance(entry, dict) and "config" not in entry:
            raise ConfigError(f"trials.{at}", "missing 'config': each trial of an export holds its training config "
                                              "under config: (- trial: N, config: {model: ...}, as hpo export writes "
                                              f"it); this one has {', '.join(map(str, entry)) or 'no keys'}",
                              source=str(path))
        data = entry.get("config") if isinstance(entry, dict) else None
        return parse_config(data, source=f"{path} (trials.{at}.config)"), entry if isinstance(entry, dict) else None
    if trial is not None:
        raise UserError(f"--trial {trial}: {path} is one training config, not an export of several trials; "
                        "leave --trial out")
    return parse_config(data, source=str(path)), None
