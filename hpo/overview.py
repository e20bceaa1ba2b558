"""What a study file would run, as `hpo check` prints it: its base, the sizes its searched model
keys reach against the budget, where its data is (looked for, never fetched), its pruner and sampler.
Reads only: no database, no data folder, no fetch."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Callable, Optional

from hpo import data, models
from hpo.config import Data, parse_config
from hpo.datasets import Dataset
from hpo.errors import ConfigError
from hpo.schema import plural
from hpo.study import StudySpec


def study_facts(spec: StudySpec, data_dir: Optional[Path], *, local: Callable = data.local) -> dict:
    """What `spec` would run, as `hpo check` prints it; raises a UserError for what `hpo run`
    would refuse before it starts (here: the data's subsets against the files, when they are there).
    `local`: `data.local`, or a memo of it when several studies share a dataset (each call reads
    and checksums its files)."""
    base = parse_config(spec.base)
    dataset = data.resolve(base.data)
    n_params = spec.space.n_params(spec.base)
    limit = spec.budget.max_params
    budget = f"; budget {limit:,}" if limit else "; no budget"
    if spec.space.sizing:
        smallest, largest = spec.space.smallest_model(), spec.space.largest_model()
        sizes = f"{smallest:,} to {largest:,} params with the searched model keys at their ends{budget}"
        if limit and largest > limit:
            sizes += " (a proposal over it is shrunk onto it, or drawn again, before any training)"
    else:
        sizes = f"{n_params:,} params in every trial (no searched key changes the model's size){budget}"
    held_out = spec.eval == "val"
    most = spec.most_epochs
    epochs = (f"at most {most} a trial" + (f" (budget.epochs {spec.budget.epochs})" if most < spec.budget.epochs else "")
              + (f", {spec.budget.trial_seconds:g} s at most" if spec.budget.trial_seconds else ""))
    return {
        "name": spec.name, "file": spec.source, "searched": len(spec.space.params), "base_params": n_params,
        "budget": limit, "max_epochs": most, "eval_on": spec.eval,
        "pruner_name": spec.pruner.name, "sampler_name": spec.sampler.name,
        "base": f"{models.describe(base.model, shape=dataset.shape, classes=dataset.classes)}, {n_params:,} params, "
                f"{plural(base.epochs, 'epoch')}, batch {base.batch_size}, {recipe(base)} (trial 0)",
        "models": sizes,
        "epochs": epochs,
        "data": data_presence(base.data, dataset, data_dir, held_out=held_out, source=spec.source, local=local),
        "eval": ("val: each epoch on held-out training images, the test set once at the end" if held_out
                 else "test: each epoch on the test set"),
        "objectives": " and ".join(spec.objectives),
        "pruner": spec.pruner.describe(), "sampler": spec.sampler.describe(),
    }


def recipe(cfg) -> str:
    """The base's training recipe in a few words: the optimizer with what it sets, the schedule,
    augmentation, smoothing and weight averaging where there are any."""
    opt = cfg.optimizer
    parts = [f"{opt.name} lr {opt.lr:g}" + "".join(f" {key} {value:g}" for key, value in (
        ("momentum", opt.momentum), ("weight_decay", opt.weight_decay or None), ("beta1", opt.beta1),
        ("beta2", opt.beta2)) if value is not None) + (" nesterov" if opt.nesterov else "")]
    if cfg.schedule.name != "none":
        parts.append(f"{cfg.schedule.name} schedule")
    aug = cfg.augment
    if aug.enabled:
        parts.append("augment " + " ".join(f"{key} {getattr(aug, key):g}" for key in
                                           ("rotate", "affine_degrees", "translate", "scale", "shear") if getattr(aug, key)))
    if cfg.label_smoothing:
        parts.append(f"label_smoothing {cfg.label_smoothing:g}")
    if cfg.ema:
        parts.append(f"ema {cfg.ema:g}")
    return ", ".join(parts)


def data_presence(cfg: Data, dataset: Dataset, data_dir: Optional[Path], *, held_out: bool, source: str,
                  local: Callable = data.local) -> str:
    """Where the study's data is, or that `hpo run` will fetch it; the subsets checked against
    the files when they are there. Reads, never fetches or writes."""
    if dataset.path is not None:
        folder, where = Path(dataset.path), f"your own data at {dataset.path}"
    else:
        folder, missing = local(dataset, data_dir)
        if missing:
            root = f" --data-dir {shlex.quote(str(Path(data_dir).resolve()))}" if data_dir else ""  # where it looked
            return (f"{dataset.name}: not in {folder} yet; hpo run fetches it there (or hpo data --dataset "
                    f"{dataset.name}{root} now)")
        where = f"{dataset.name} in {folder}"
    try:
        data.check_subsets_on_disk(cfg, folder, held_out=held_out, prefix="base.data")
    except ConfigError as error:
        raise error.located(source) from None
    sizes = data.split_sizes(cfg, folder)
    channels, height, width = dataset.shape
    if held_out:  # eval: val: epochs are scored on training images held out; the test set once at the end
        held = data.validation_size(sizes["train"])
        train = (f"{sizes['train']:,} training images ({held:,} held out to score the epochs on"
                 + (f", {cfg.test_subset:,} of them used" if cfg.test_subset else "")
                 + f"; {cfg.train_subset or sizes['train'] - held:,} trained on)")
        test = f"{sizes['test']:,} test images (scored once, at the end)"
    else:
        train = f"{sizes['train']:,} training images" + (f" ({cfg.train_subset:,} trained on)" if cfg.train_subset else "")
        test = f"{sizes['test']:,} test images" + (f" ({cfg.test_subset:,} scored on)" if cfg.test_subset else "")
    return f"{where}: {train} and {test}, {dataset.classes} classes of {channels}x{height}x{width}"
