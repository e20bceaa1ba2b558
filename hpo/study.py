"""Study files (`studies/NAME.yaml`), parsed once into frozen, validated dataclasses.

    name: lenet-tuning            # optional; the file's stem otherwise
    base: {...}                   # a full training config: the human's recipe, enqueued as trial 0
    search:                       # dotted keys of the config -> distributions, sampled in this order
      batch_size: {int: [32, 512], log: true}
      optimizer.name: {choices: [adamw, sgd]}
      optimizer.momentum: {float: [0.5, 0.99], when: {optimizer.name: sgd}}
    budget: {max_params: 8000, epochs: 15, trial_seconds: 900}
    pruner: {name: median, n_startup_trials: 5}
    sampler: {name: tpe, seed: 0}
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import optuna

from hpo import config as config_mod
from hpo import models, schema
from hpo.errors import ConfigError, UserError
from hpo.schema import require

STUDIES_DIR = Path(__file__).resolve().parent.parent / "studies"


# ----------------------------------------------------------------- distributions


@dataclass(frozen=True)
class Param:
    key: str                       # dotted key into the training config
    kind: str                      # float | int | categorical
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = None
    choices: tuple = ()
    when: tuple[tuple[str, tuple], ...] = ()  # (dotted key, allowed values) that must all hold

    def distribution(self) -> optuna.distributions.BaseDistribution:
        if self.kind == "float":
            return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=self.log,
                                                        step=int(self.step or 1))
        return optuna.distributions.CategoricalDistribution(self.choices)

    def applies(self, cfg: dict) -> bool:
        return all(get_path(cfg, key) in allowed for key, allowed in self.when)


def parse_param(key: str, raw: Any, prefix: str) -> Param:
    where = f"{prefix}.{key}"
    require(isinstance(raw, dict), where, "expected a mapping like {float: [low, high]}, {int: [low, high]} "
                                          "or {choices: [...]}")
    kinds = [k for k in ("float", "int", "choices") if k in raw]
    require(len(kinds) == 1, where, "give exactly one of float: [low, high], int: [low, high], choices: [...]")
    allowed = {"float": {"log", "step"}, "int": {"log", "step"}, "choices": set()}[kinds[0]] | {kinds[0], "when"}
    for extra in raw:
        require(extra in allowed, f"{where}.{extra}", f"unknown key; expected one of: {', '.join(sorted(allowed))}")
    when = parse_when(raw.get("when"), f"{where}.when")
    if kinds[0] == "choices":
        choices = raw["choices"]
        require(isinstance(choices, list) and len(choices) > 0, f"{where}.choices", "must be a non-empty list")
        for i, c in enumerate(choices):
            require(c is None or isinstance(c, (bool, int, float, str)), f"{where}.choices.{i}",
                    f"choices must be plain numbers, strings or booleans, got {schema.describe(c)}")
        require(len(set(map(repr, choices))) == len(choices), f"{where}.choices", "has duplicates")
        return Param(key, "categorical", choices=tuple(choices), when=when)
    kind = kinds[0]
    bounds = raw[kind]
    require(isinstance(bounds, list) and len(bounds) == 2, f"{where}.{kind}", "expected [low, high]")
    number = int if kind == "int" else float
    low, high = (schema.coerce(b, number, f"{where}.{kind}.{i}") for i, b in enumerate(bounds))
    require(low <= high, f"{where}.{kind}", f"low {low} is greater than high {high}")
    log = schema.coerce(raw.get("log", False), bool, f"{where}.log")
    step = raw.get("step")
    if step is not None:
        step = schema.coerce(step, number, f"{where}.step")
        require(step > 0, f"{where}.step", f"must be > 0, got {step}")
        require(not log, f"{where}.step", "cannot be combined with log: true")
    if log:
        require(low > 0, f"{where}.{kind}", f"log scale needs low > 0, got {low}")
    return Param(key, kind, low=low, high=high, log=log, step=step, when=when)


def parse_when(raw: Any, where: str) -> tuple:
    if raw is None:
        return ()
    require(isinstance(raw, dict) and raw, where, "expected a mapping of dotted keys to a value or a list of values")
    return tuple((k, tuple(v) if isinstance(v, list) else (v,)) for k, v in raw.items())


# ----------------------------------------------------------------- the study


@dataclass(frozen=True)
class Budget:
    max_params: Optional[int] = None    # trials whose model is larger are rejected before any training step
    epochs: int = 10                    # the most epochs a trial may train
    trial_seconds: Optional[float] = None  # wall-clock limit of one trial

    def __post_init__(self):
        if self.max_params is not None:
            require(self.max_params >= 1, "max_params", f"must be >= 1, got {self.max_params}")
        require(1 <= self.epochs <= 1000, "epochs", f"must be in [1, 1000], got {self.epochs}")
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
}


INTERNAL_OPTIONS = ("wrapped_pruner", "constraints_func")  # hpo sets these itself


@dataclass(frozen=True)
class Component:
    """A pruner or sampler by name with keyword options for its Optuna class."""

    name: str
    options: tuple[tuple[str, Any], ...] = ()
    wrapped: Optional["Component"] = None  # patient: the pruner it wraps

    def kwargs(self) -> dict:
        return dict(self.options)


def parse_component(raw: Any, table: dict, where: str, default: str) -> Component:
    if raw is None:
        raw = {"name": default}
    if isinstance(raw, str):
        raw = {"name": raw}
    require(isinstance(raw, dict), where, f"expected a name or a mapping with 'name', got {schema.describe(raw)}")
    raw = dict(raw)
    name = raw.pop("name", default)
    require(name in table, f"{where}.name", f"unknown {where} {name!r}; choose from {', '.join(table)}")
    wrapped = None
    if name == "patient":
        require("wrapped" in raw, f"{where}.wrapped", "patient needs the pruner it wraps, e.g. wrapped: median")
        wrapped = parse_component(raw.pop("wrapped"), {k: v for k, v in table.items() if k != "patient"},
                                  f"{where}.wrapped", "median")
    accepted = inspect.signature(table[name]).parameters
    for key in raw:
        options = [k for k in accepted if k not in INTERNAL_OPTIONS]
        require(key in options, f"{where}.{key}", f"not an option of {name}; its options: {', '.join(options) or 'none'}")
    return Component(name, tuple(raw.items()), wrapped)


@dataclass(frozen=True)
class StudySpec:
    name: str
    base: dict                      # the base training config, model resolved to a family dict
    search: tuple[Param, ...]
    budget: Budget
    pruner: Component
    sampler: Component
    source: str = ""
    raw: dict = field(default_factory=dict, compare=False)

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
        return PRUNERS[component.name](**kwargs)

    def make_sampler(self) -> optuna.samplers.BaseSampler:
        from hpo.sampler import BudgetSampler  # noqa: PLC0415

        sampler = SAMPLERS[self.sampler.name](**self.sampler.kwargs())
        return BudgetSampler(sampler, self.fits_budget) if self.budget.max_params else sampler

    def fits_budget(self, params: dict) -> bool:
        """Whether the base model with these sampled values stays within budget.max_params."""
        cfg = copy.deepcopy(self.base)
        for key, value in params.items():
            if key.startswith("model."):
                set_path(cfg, key, value)
        try:
            return models.spec_params(models.parse_model(cfg["model"])) <= self.budget.max_params
        except ConfigError:
            return False


STUDY_KEYS = ("name", "base", "search", "budget", "pruner", "sampler")


def parse_study(raw: Any, source: str, default_name: str) -> StudySpec:
    try:
        require(isinstance(raw, dict), "", f"expected a mapping with keys {', '.join(STUDY_KEYS)}")
        for key in raw:
            require(key in STUDY_KEYS, key, f"unknown key; expected one of: {', '.join(STUDY_KEYS)}")
        require("base" in raw, "base", "missing; give the full training config the search starts from")
        name = raw.get("name", default_name)
        require(isinstance(name, str) and name.strip(), "name", "must be a non-empty string")
        try:
            base = config_mod.parse_config(raw["base"])  # validates the base as a training config
        except ConfigError as error:
            raise ConfigError(f"base.{error.key}" if error.key else "base", error.reason) from None
        base_dict = base.to_dict()  # every default filled in, so each key can be searched
        budget = schema.parse(Budget, raw.get("budget"), "budget")
        require(base.epochs <= budget.epochs, "base.epochs",
                f"{base.epochs} is more than budget.epochs {budget.epochs}; lower it or raise the budget")
        search_raw = raw.get("search") or {}
        require(isinstance(search_raw, dict), "search", "expected a mapping of dotted config keys to distributions")
        params = tuple(parse_param(key, value, "search") for key, value in search_raw.items())
        check_search(params, base_dict, budget)
        spec = StudySpec(
            name=name, base=base_dict, search=params, budget=budget,
            pruner=parse_component(raw.get("pruner"), PRUNERS, "pruner", "median"),
            sampler=parse_component(raw.get("sampler"), SAMPLERS, "sampler", "tpe"),
            source=source, raw=copy.deepcopy(raw),
        )
        check_budget(spec)
        return spec
    except ConfigError as error:
        raise error.located(source) from None


def check_search(params: tuple[Param, ...], base: dict, budget: Budget) -> None:
    seen: set[str] = set()
    for p in params:
        where = f"search.{p.key}"
        require(p.key not in seen, where, "appears twice")
        require(p.key.split(".")[0] in STUDY_CONFIG_KEYS, where,
                f"not a training config key; it must start with one of {', '.join(STUDY_CONFIG_KEYS)}")
        for cond_key, _ in p.when:
            require(cond_key in seen or has_path(base, cond_key), f"{where}.when.{cond_key}",
                    "must be a key searched earlier in the file or set in base")
        seen.add(p.key)
        if not has_path(base, p.key) and not p.key.startswith(("optimizer.", "schedule.", "augment.", "data.")):
            raise ConfigError(where, "no such key in the base config (after expanding its model preset)")
        if p.key == "epochs":
            most = p.high if p.kind != "categorical" else max((c for c in p.choices if isinstance(c, int)), default=0)
            require(most <= budget.epochs, where, f"{most} epochs is more than budget.epochs {budget.epochs}")
        # the base is enqueued as trial 0, so its value must be a point of the space
        if p.applies(base) and has_path(base, p.key):
            value = base_value(base, p.key)
            if p.kind == "categorical":
                require(value in p.choices, where, f"the base value {value!r} is not among the choices")
            else:
                require(p.low <= value <= p.high, where,
                        f"the base value {value!r} is outside [{p.low}, {p.high}]; widen the range or change base")


STUDY_CONFIG_KEYS = ("model", "optimizer", "schedule", "batch_size", "epochs", "label_smoothing", "augment", "data", "seed")


def check_budget(spec: StudySpec) -> None:
    """An impossible budget fails here, not after a night of rejected trials."""
    if not spec.budget.max_params:
        return
    base_params = models.spec_params(models.parse_model(spec.base["model"]))
    smallest = smallest_model(spec)
    if smallest > spec.budget.max_params:
        raise ConfigError("budget.max_params", f"{spec.budget.max_params:,} is below the smallest model the search "
                                               f"can build ({smallest:,} parameters); raise it or shrink the ranges")
    if base_params > spec.budget.max_params:
        raise ConfigError("budget.max_params", f"the base model has {base_params:,} parameters, over the budget of "
                                               f"{spec.budget.max_params:,}")


def smallest_model(spec: StudySpec) -> int:
    """Parameters of the base model with every searched model value at its low end."""
    cfg = copy.deepcopy(spec.base)
    for p in spec.search:
        if p.key.startswith("model.") and p.kind in ("int", "float"):
            set_path(cfg, p.key, int(p.low) if p.kind == "int" else p.low)
        elif p.key.startswith("model.") and p.kind == "categorical":
            numeric = [c for c in p.choices if isinstance(c, (int, float)) and not isinstance(c, bool)]
            if numeric:
                set_path(cfg, p.key, min(numeric))
    return models.spec_params(models.parse_model(cfg["model"]))


# ----------------------------------------------------------------- dotted keys


def _walk(cfg: Any, key: str):
    parts = key.split(".")
    node = cfg
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    return node, parts[-1]


def has_path(cfg: dict, key: str) -> bool:
    node: Any = cfg
    for part in key.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return False
    return True


def get_path(cfg: dict, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict):
            node = node.get(part)
        else:
            return None
    return node


def base_value(cfg: dict, key: str) -> Any:
    """The value at `key`, with a convnet token read as its width (16k1 -> 16)."""
    value = get_path(cfg, key)
    if isinstance(value, str) and key.startswith("model.layers."):
        _, width, _, _ = models.parse_token(value, 3, key)
        return width
    return value


def set_path(cfg: dict, key: str, value: Any) -> None:
    """Set `key` in `cfg`; a convnet layer token keeps its kind and takes the new width."""
    node, last = _walk(cfg, key)
    if isinstance(node, list):
        index = int(last)
        node[index] = models.with_width(node[index], value) if isinstance(node[index], str) else value
    else:
        node[last] = value


# ----------------------------------------------------------------- finding files


def find_study_file(name_or_path: str) -> Path:
    """A path as given, else studies/NAME.yaml here, else in hpo's own studies folder."""
    candidates = [Path(name_or_path)]
    if not name_or_path.endswith((".yaml", ".yml")):
        candidates += [Path("studies") / f"{name_or_path}.yaml", STUDIES_DIR / f"{name_or_path}.yaml"]
    for path in candidates:
        if path.is_file():
            return path
    known = sorted(p.stem for p in STUDIES_DIR.glob("*.yaml")) if STUDIES_DIR.is_dir() else []
    raise UserError(f"--study {name_or_path}: no such study file; give a path, or one of: {', '.join(known) or '(none found)'}")


def load_study(name_or_path: str) -> StudySpec:
    path = find_study_file(name_or_path)
    return parse_study(schema.load_yaml(path), str(path), path.stem)
