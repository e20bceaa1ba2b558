"""Study files (`studies/NAME.yaml`), parsed once into frozen, validated dataclasses.

    name: lenet-tuning            # optional; the file's stem otherwise
    base: {...}                   # a full training config: the human's recipe, enqueued as trial 0
    search:                       # dotted keys of the config -> distributions, sampled in this order
      batch_size: {int: [32, 512], log: true}
      optimizer.name: {choices: [adamw, sgd]}
      optimizer.momentum: {float: [0.5, 0.99], when: {optimizer.name: sgd}}
    budget: {max_params: 8000, epochs: 15, trial_seconds: 900}
    pruner: {name: median, n_startup_trials: 5}   # within: [schedule.name]: judged among its own kind
    sampler: {name: tpe, seed: 0}
    objectives: [accuracy, params]  # optional: also minimize the parameters (a Pareto front; no pruner)
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import inspect
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import optuna

from hpo import config as config_mod
from hpo import records, schema
from hpo.errors import ConfigError, UserError
from hpo.grouped import GROUPABLE, WithinGroups
from hpo.limits import MAX_EPOCHS, MAX_SEED
from hpo.schema import did_you_mean, require
from hpo.space import SearchSpace
from hpo.space_check import extent

STUDIES_DIR = Path(__file__).resolve().parent.parent / "studies"


# ----------------------------------------------------------------- the study


@dataclass(frozen=True)
class Budget:
    max_params: Optional[int] = None    # trials whose model is larger are rejected before any training step
    epochs: int = 10                    # the most epochs a trial may train (not given: the most the file asks for)
    trial_seconds: Optional[float] = None  # wall-clock limit of one trial

    def __post_init__(self):
        if self.max_params is not None:
            require(self.max_params >= 1, "max_params", f"must be >= 1, got {self.max_params}")
        require(1 <= self.epochs <= MAX_EPOCHS, "epochs", f"must be in [1, {MAX_EPOCHS}], got {self.epochs}")
        if self.trial_seconds is not None:
            require(self.trial_seconds > 0, "trial_seconds", f"must be > 0, got {self.trial_seconds}")


PRUNERS = {
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "wilcoxon": optuna.pruners.WilcoxonPruner,
    "threshold": optuna.pruners.ThresholdPruner,
    "patient": optuna.pruners.PatientPruner,
    "none": optuna.pruners.NopPruner,
}
SAMPLERS = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "gp": optuna.samplers.GPSampler,
    "qmc": optuna.samplers.QMCSampler,
    "nsgaii": optuna.samplers.NSGAIISampler,
}
SINGLE_OBJECTIVE_SAMPLERS = ("cmaes",)  # Optuna's CMA-ES refuses a study with two directions


# where a pruner first looks at a trial: (its option, Optuna's default); an int at or past the
# last epoch stops nothing early
FIRST_LOOK = {"median": ("n_warmup_steps", 0), "percentile": ("n_warmup_steps", 0), "threshold": ("n_warmup_steps", 0),
              "wilcoxon": ("n_startup_steps", 2), "successive_halving": ("min_resource", "auto"),
              "hyperband": ("min_resource", 1)}


INTERNAL_OPTIONS = ("wrapped_pruner", "constraints_func")  # hpo sets these itself


@dataclass(frozen=True)
class Component:
    """A pruner or sampler by name with keyword options for its Optuna class."""

    name: str
    options: tuple[tuple[str, Any], ...] = ()
    wrapped: Optional["Component"] = None  # patient: the pruner it wraps
    within: tuple[str, ...] = ()           # a pruner's groups: searched categorical keys (hpo.grouped)

    def kwargs(self) -> dict:
        return dict(self.options)

    def describe(self) -> str:
        """`median (n_startup_trials: 8)`, `patient (patience: 2) wrapping median`, `... within schedule.name`."""
        text = self.name + (f" ({', '.join(f'{k}: {schema.plain(v)}' for k, v in self.options)})"
                            if self.options else "")
        if self.wrapped:
            text += f" wrapping {self.wrapped.describe()}"
        return text + (f", within {', '.join(self.within)}" if self.within else "")


def parse_component(raw: Any, table: dict, where: str, default: str) -> Component:
    if raw is None:
        raw = {"name": default}
    if isinstance(raw, str):
        raw = {"name": raw}
    require(isinstance(raw, dict), where, f"expected a name or a mapping with 'name', got {schema.describe(raw)}")
    raw = dict(raw)
    name = raw.pop("name", default)
    require(name in table, f"{where}.name", f"unknown {where} {name!r}; choose from {', '.join(table)}")
    wrapped, within = None, ()
    if where == "pruner" and "within" in raw:
        within = raw.pop("within")
        require(isinstance(within, list) and within and all(isinstance(k, str) for k in within), f"{where}.within",
                f"expected a list of searched keys with choices, e.g. [schedule.name, optimizer.name], "
                f"got {schema.describe(within)}")
        require(name in GROUPABLE, f"{where}.within",
                f"{name} cannot prune within groups; use {', '.join(GROUPABLE)}, or leave `within` out")
        within = tuple(within)
    if name == "patient":
        require("wrapped" in raw, f"{where}.wrapped", "patient needs the pruner it wraps, e.g. wrapped: median")
        wrapped = parse_component(raw.pop("wrapped"), {k: v for k, v in table.items() if k != "patient"},
                                  f"{where}.wrapped", "median")
    accepted = inspect.signature(table[name]).parameters
    for key in raw:
        options = [k for k in accepted if k not in INTERNAL_OPTIONS]
        require(key in options, f"{where}.{key}", f"not an option of {name}; its options: {', '.join(options) or 'none'}")
    return Component(name, tuple(raw.items()), wrapped, within)


@dataclass(frozen=True)
class StudySpec:
    name: str
    space: SearchSpace              # the base config (trial 0) and what is sampled around it
    budget: Budget
    pruner: Component
    sampler: Component
    source: str = ""
    raw: dict = field(default_factory=dict, compare=False)
    eval: str = "test"              # what each epoch is reported on: the test set, or held-out training images
    objectives: tuple[str, ...] = (records.ACCURACY,)  # or (accuracy, params): a Pareto front

    @property
    def metric(self) -> str:
        """What a trial's (first) value is, as the dashboard names it."""
        return "validation accuracy" if self.eval == "val" else "test accuracy"

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def directions(self) -> list[str]:
        return [records.OBJECTIVES[name] for name in self.objectives]

    @property
    def metric_names(self) -> list[str]:
        """Each value's name, as the dashboard shows it."""
        names = {records.ACCURACY: self.metric, records.PARAMS: "parameters"}
        return [names[name] for name in self.objectives]

    @property
    def base(self) -> dict:
        return self.space.base

    @property
    def most_epochs(self) -> int:
        """The most epochs a trial can train: the base's or the searched high end, within the budget."""
        return min(self.budget.epochs, extent(self.space, "epochs", max))

    def model_factories(self) -> tuple[str, ...]:
        """The factories of your own ('package.module:factory') that this study's trials may build:
        the base's, and those a search draws (model.module choices, or model mappings that name one)."""
        found = [self.base.get("model", {}).get("module")]
        for p in self.space.params:
            if p.key == "model.module":
                found += list(p.choices)
            elif p.key == "model":
                found += [c.get("module") for c in p.choices if isinstance(c, dict)]
        return tuple(dict.fromkeys(t for t in found if isinstance(t, str)))

    def notes(self) -> list[str]:
        """What the file allows but likely did not mean (`hpo check` prints them): a pruner whose
        first look comes at or after a trial's last epoch stops no trial early; a budget every
        model fits constrains nothing."""
        said = []
        pruner = self.pruner.wrapped if self.pruner.name == "patient" else self.pruner  # patient waits on it
        most = self.most_epochs
        options = pruner.kwargs()
        option, default = FIRST_LOOK.get(pruner.name, (None, None))
        first = options.get(option, default) if option else None
        if pruner.name == "successive_halving" and schema.is_whole(first):  # its first rung: r * eta^s
            first *= options.get("reduction_factor", 4) ** options.get("min_early_stopping_rate", 0)
        if most == 1 and pruner.name != "none":
            said.append(f"pruner {pruner.name}: a trial trains 1 epoch, which leaves no epoch before its last to stop "
                        "it at; say pruner: none, or train more epochs")
        elif schema.is_whole(first) and first >= most:
            said.append(f"pruner {pruner.name}: its first look at a trial, after epoch {first} ({option} "
                        f"{options.get(option, default)}{', and its rates' if pruner.name == 'successive_halving' else ''}"
                        f"), comes no earlier than the last (trials train at most {most} epochs), so it stops no trial "
                        f"early; make it earlier than epoch {most}, or say pruner: none")
        if not self.space.params:
            said.append("search: nothing is searched, so every trial trains the base again; to train it with several "
                        "seeds, hpo verify --config FILE --seeds 5 (with the base's keys in FILE)")
        for p in self.space.left_to_the_sampler():
            said.append(f"search.{p.name}: the base leaves {p.key} to its default, which this search cannot draw, so "
                        f"trial 0 takes a drawn {p.key} and is not quite the base; give base.{p.key} a value the search "
                        "can draw to start from the base's own recipe")
        limit = self.budget.max_params
        if limit and self.space.largest_model() <= limit:
            said.append(f"budget.max_params {limit:,}: every model the search can build fits it (the largest has "
                        f"{self.space.largest_model():,} parameters): it rejects and shrinks nothing")
        return said

    @property
    def data(self) -> "config_mod.Data":
        """The data every trial trains on (the search cannot change it)."""
        return schema.parse(config_mod.Data, self.base["data"], "base.data")

    @property
    def fingerprint(self) -> str:
        """Identifies what the study searches: a different file under the same name differs."""
        text = json.dumps(self.raw, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def make_pruner(self, component: Optional[Component] = None) -> optuna.pruners.BasePruner:
        component = component or self.pruner
        kwargs = component.kwargs()
        if component.name == "hyperband":
            kwargs.setdefault("max_resource", self.budget.epochs)
        if component.name == "patient":
            kwargs["wrapped_pruner"] = self.make_pruner(component.wrapped)
        pruner = PRUNERS[component.name](**kwargs)
        return WithinGroups(pruner, component.within) if component.within else pruner

    def make_sampler(self, *, seed: Optional[int] = None) -> optuna.samplers.BaseSampler:
        """The study file's sampler (`seed` replaces its seed), kept under the parameter budget."""
        from hpo.sampler import BudgetSampler  # noqa: PLC0415

        kwargs = self.sampler.kwargs()
        if seed is not None:
            kwargs["seed"] = seed
        sampler = SAMPLERS[self.sampler.name](**kwargs)
        if not self.budget.max_params:
            return sampler
        return BudgetSampler(sampler, self.space, self.budget.max_params)


STUDY_KEYS = ("name", "base", "search", "budget", "pruner", "sampler", "eval", "objectives")
EVALS = ("test", "val")
# a study's name is a folder under --checkpoint-dir: one plain path component, never '..' or '/'
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def parse_study(raw: Any, source: str, default_name: str) -> StudySpec:
    try:
        require(isinstance(raw, dict), "", f"expected a mapping with keys {', '.join(STUDY_KEYS)}")
        for key in raw:
            if key not in STUDY_KEYS:
                raise schema.unknown_key("", key, STUDY_KEYS)
        require("base" in raw, "base", "missing; give the full training config the search starts from")
        name = raw.get("name", default_name)
        require(isinstance(name, str), "name", f"expected a string, got {type(name).__name__}")
        require(NAME.fullmatch(name) is not None, "name",
                f"{name[:40]!r}{'...' if len(name) > 40 else ''} cannot name a study"
                f"{'' if 'name' in raw else ' (taken from the file name)'}: use 1 to 100 letters, digits, "
                "'.', '_' or '-', starting with a letter or digit")
        try:
            base = config_mod.parse_config(raw["base"])  # validates the base as a training config
        except ConfigError as error:
            raise ConfigError(f"base.{error.key}" if error.key else "base", error.reason) from None
        evaluated_on = raw.get("eval", "test")
        require(evaluated_on in EVALS, "eval", f"expected test (each epoch on the test set) or val (on 10,000 "
                                               f"held-out training images, the test set once at the end), "
                                               f"got {evaluated_on!r}")
        budget = schema.parse(Budget, raw.get("budget"), "budget")
        if isinstance(raw.get("budget"), dict) and "epochs" in raw["budget"]:
            require(base.epochs <= budget.epochs, "base.epochs",
                    f"{base.epochs} is more than budget.epochs {budget.epochs}; lower it or raise the budget")
            # every default filled in, so each key can be searched
            space = SearchSpace.parse(raw.get("search"), base.to_dict(), max_epochs=budget.epochs)
        else:  # no epoch budget given: the most epochs the file itself asks for, its base's or a searched count's
            space = SearchSpace.parse(raw.get("search"), base.to_dict(), max_epochs=MAX_EPOCHS)
            most = max([base.epochs] + [p.high if p.kind != "categorical" else max(p.choices)
                                        for p in space.params if p.key == "epochs"])
            budget = dataclasses.replace(budget, epochs=most)
        objectives = parse_objectives(raw.get("objectives", [records.ACCURACY]))
        spec = StudySpec(
            name=name, space=space, budget=budget,
            # Optuna prunes no multi-objective study: there, no pruner is the default
            pruner=parse_component(raw.get("pruner"), PRUNERS, "pruner", "none" if len(objectives) > 1 else "median"),
            sampler=parse_component(raw.get("sampler"), SAMPLERS, "sampler", "tpe"),
            source=source, raw=copy.deepcopy(raw), eval=evaluated_on, objectives=objectives,
        )
        check_budget(spec)
        check_within(spec)
        check_objectives(spec)
        check_components(spec)
        return spec
    except ConfigError as error:
        raise error.located(source) from None


OBJECTIVES_EXAMPLE = f"objectives: [{records.ACCURACY}, {records.PARAMS}]"


def parse_objectives(raw: Any) -> tuple[str, ...]:
    """`[accuracy]` (the default) or `[accuracy, params]`: accuracy always, first."""
    require(isinstance(raw, list), "objectives",
            f"expected a list, e.g. {OBJECTIVES_EXAMPLE}, got {schema.describe(raw)}")
    for i, name in enumerate(raw):
        require(isinstance(name, str) and name in records.OBJECTIVES, f"objectives.{i}",
                f"unknown objective {name!r}; choose from {', '.join(records.OBJECTIVES)} "
                f"({records.ACCURACY}: final-epoch accuracy, up; {records.PARAMS}: parameters, down)")
        require(name not in raw[:i], f"objectives.{i}", f"{name!r} is listed twice; list each objective once")
    require(raw[:1] == [records.ACCURACY], "objectives",
            f"{records.ACCURACY} comes first (every study maximizes it); write {OBJECTIVES_EXAMPLE}"
            f"{'' if raw else ', or leave the key out for accuracy alone'}")
    return tuple(raw)


def check_objectives(spec: StudySpec) -> None:
    """What Optuna cannot do with two objectives fails here, not in every worker's first trial."""
    if not spec.multi_objective:
        return
    if spec.pruner.name != "none":
        raise ConfigError("pruner", f"Optuna does not prune multi-objective studies ({OBJECTIVES_EXAMPLE}): remove "
                                    f"the pruner (or set pruner: {{name: none}}), or keep one objective")
    if spec.sampler.name in SINGLE_OBJECTIVE_SAMPLERS:
        usable = ", ".join(n for n in SAMPLERS if n not in SINGLE_OBJECTIVE_SAMPLERS)
        raise ConfigError("sampler.name", f"{spec.sampler.name} handles one objective only, not "
                                          f"{OBJECTIVES_EXAMPLE}; choose from {usable}")


def check_within(spec: StudySpec) -> None:
    """`pruner.within` names searched keys with choices, each once: the groups a trial is judged in."""
    categorical = [p.name for p in spec.space.params if p.kind == "categorical"]
    for i, key in enumerate(spec.pruner.within):
        require(key in categorical, f"pruner.within.{i}",
                f"{key!r} is not a searched key with choices; choose from {', '.join(categorical) or '(none)'}")
        require(key not in spec.pruner.within[:i], f"pruner.within.{i}", f"{key!r} is listed twice")


def check_budget(spec: StudySpec) -> None:
    """An impossible budget fails here, not after a night of rejected trials."""
    if not spec.budget.max_params:
        return
    smallest = spec.space.smallest_model()
    if smallest > spec.budget.max_params:
        raise ConfigError("budget.max_params", f"{spec.budget.max_params:,} is below the smallest model the search "
                                               f"can build ({smallest:,} parameters); raise it or shrink the ranges")
    base_params = spec.space.n_params(spec.base)
    if base_params > spec.budget.max_params:
        raise ConfigError("budget.max_params", f"the base model has {base_params:,} parameters, over the budget of "
                                               f"{spec.budget.max_params:,}")


def check_components(spec: StudySpec) -> None:
    """Build the pruner and the sampler once, here: a bad option value (a percentile of 150, a
    string seed) is the file's mistake, not a traceback in every worker after the study exists."""
    for key, component in (("pruner", spec.pruner), ("pruner.wrapped", spec.pruner.wrapped), ("sampler", spec.sampler)):
        if component is not None:
            table = SAMPLERS if key == "sampler" else PRUNERS
            needed = [name for name, p in inspect.signature(table[component.name]).parameters.items()
                      if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                      and name not in ("self", "wrapped_pruner")]  # hpo builds the wrapped pruner from `wrapped`
            missing = [name for name in needed if name not in component.kwargs()]
            require(not missing, f"{key}.{missing[0] if missing else ''}",
                    f"{component.name} needs it: give {key}: {{name: {component.name}, "
                    + ", ".join(f"{name}: ..." for name in missing) + "}")
        for option, value in component.options if component else ():
            if option == "seed":  # each worker adds its place to it, wrapping at MAX_SEED (hpo.worker)
                require(schema.is_whole(value, 0, MAX_SEED), f"{key}.{option}",
                        f"expected a whole number from 0 to {MAX_SEED:,}, got {schema.describe(value)}")
            elif option.startswith("n_"):  # counts: whole numbers, none negative
                require(schema.is_whole(value, 0), f"{key}.{option}",
                        f"expected a whole number >= 0, got {schema.describe(value)}")
    threshold = spec.pruner.wrapped if spec.pruner.name == "patient" else spec.pruner
    where = "pruner.wrapped" if threshold is spec.pruner.wrapped else "pruner"
    if threshold.name == "threshold":  # it compares each epoch's accuracy, a fraction, with its bounds
        for bound, value in threshold.options:
            if bound in ("lower", "upper") and schema.is_number(value) and not 0 <= value <= 1:
                hint = f"; for {value:g}% write {value / 100:g}" if 1 < value <= 100 else ""
                raise ConfigError(f"{where}.{bound}", f"{value!r} is outside [0, 1]: trials report accuracy as a fraction "
                                                      f"(0.5 for 50%), so it would stop every trial or none{hint}")
    for key, make in (("pruner", spec.make_pruner), ("sampler", spec.make_sampler)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # experimental samplers warn on construction
                make()
        except (ValueError, TypeError, OverflowError) as error:
            raise ConfigError(key, f"{getattr(spec, key).name}: {error}") from None


# ----------------------------------------------------------------- finding files


def find_study_file(name_or_path: str, given_as: str = "study ") -> Path:
    """A path as given, else studies/NAME.yaml here, else in hpo's own studies folder. `given_as`:
    how an error names what the user gave (the flag `hpo run` takes it by)."""
    candidates = [Path(name_or_path).expanduser()]  # a quoted ~ too, as the shell would
    if not name_or_path.endswith((".yaml", ".yml")):
        if os.sep in name_or_path:  # a path without its .yaml: ../s/tiny for ../s/tiny.yaml
            candidates.append(candidates[0].with_name(candidates[0].name + ".yaml"))
        candidates += [Path("studies") / f"{name_or_path}.yaml", STUDIES_DIR / f"{name_or_path}.yaml"]
    for path in candidates:
        if path.is_file():
            return path
    if candidates[0].exists() and not candidates[0].is_dir():  # a pipe, a device: reading could hang or never end
        raise UserError(f"{given_as}{name_or_path}: not a regular file; give a study YAML file")
    if candidates[0].is_dir():
        inside = sorted(p.name for p in candidates[0].glob("*.yaml"))
        raise UserError(f"{given_as}{name_or_path}: a folder, not a file; give a study YAML file"
                        + (f" in it ({', '.join(inside[:5])}{', ...' if len(inside) > 5 else ''})" if inside else ""))
    here = [p for p in (Path(f"{name_or_path}.yaml"), Path(f"{name_or_path}.yml")) if p.is_file()]
    if here and not name_or_path.endswith((".yaml", ".yml")):  # a bare name is looked up in studies/ only
        raise UserError(f"{given_as}{name_or_path}: no such study under studies/; for the file here, give its name "
                        f"with .yaml: {given_as}{here[0]}")
    known = sorted({p.stem for folder in (Path("studies"), STUDIES_DIR) if folder.is_dir()
                    for p in folder.glob("*.yaml")})
    if name_or_path.endswith((".yaml", ".yml")) or os.sep in name_or_path:  # a path: the files beside it
        folder = candidates[0].parent
        beside = [str(folder / p.name) if str(folder) != "." else p.name
                  for p in (folder.glob("*.y*ml") if folder.is_dir() else []) if p.suffix in (".yaml", ".yml")]
        close = did_you_mean(name_or_path, beside)
    else:
        close = did_you_mean(name_or_path, known)
    raise UserError(f"{given_as}{name_or_path}: no such study file" + (f" (did you mean {close!r}?)" if close else "")
                    + f"; give a path, or one of: {', '.join(known) or '(none found)'}")


def load_spec(name_or_path: str | os.PathLike, *, given_as: str = "study ") -> StudySpec:
    """The study file named (under studies/) or at this path, parsed and checked."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise UserError(f"a study is a name under studies/ or a file's path, got {type(name_or_path).__name__}")
    path = find_study_file(os.fspath(name_or_path), given_as)
    raw = schema.load_yaml(path)
    schema.require_document(raw, path)
    if isinstance(raw, dict) and "base" not in raw and ("model" in raw or "trials" in raw):
        raise ConfigError("", "a training config (or an export of one), not a study file: train it with "
                              f"`hpo train --config {path}`, or search around it with a study file whose `base:` "
                              "holds it (studies/quickstart.yaml shows the shape)", source=str(path))
    return parse_study(raw, str(path), path.stem)
