"""A study's search space: what it samples, parsed once, and how sampled values become a config.

    search:                       # dotted keys of the training config, sampled in this order
      batch_size: {int: [32, 512], log: true}
      optimizer.name: {choices: [adamw, sgd]}
      optimizer.momentum: {float: [0.5, 0.99], when: {optimizer.name: sgd}}
      model.layers.4: {int: [8, 24]}     # a convnet token's width (16k1 -> 12k1 keeps its kind)

Everything that turns values into a config goes through `SearchSpace.fill`: sampling a trial,
the base recipe as trial 0's parameters, and the budget check of a proposal, so `when`
conditions hold the same way in each.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Optional

import optuna

from hpo import models, schema
from hpo.config import OPTIMIZER_ONLY, Optimizer, TrainConfig, parse_config
from hpo.errors import ConfigError
from hpo.schema import require

CONFIG_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig))  # what a searched key may start with
OPEN_SECTIONS = ("optimizer.", "schedule.", "augment.", "data.")  # keys the base may leave to their defaults
KEEP = object()  # what a `fill` callback returns to leave the base's value (None is a value a choice may take)


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

    def applies(self, cfg: dict) -> bool:
        return all(get_path(cfg, key) in allowed for key, allowed in self.when)

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return trial.suggest_categorical(self.key, list(self.choices))

    def lowest(self) -> Any:
        """The value that builds the smallest model: the low end, or the smallest numeric choice."""
        if self.kind == "int":
            return int(self.low)
        if self.kind == "float":
            return self.low
        numeric = [c for c in self.choices if isinstance(c, (int, float)) and not isinstance(c, bool)]
        return min(numeric) if numeric else KEEP


@dataclass(frozen=True)
class SearchSpace:
    base: dict                 # the base training config, every default filled in, model resolved
    params: tuple[Param, ...]  # in file order: a `when` sees the values sampled before it

    @classmethod
    def parse(cls, raw: Any, base: dict, *, max_epochs: int) -> "SearchSpace":
        raw = raw or {}
        require(isinstance(raw, dict), "search", "expected a mapping of dotted config keys to distributions")
        space = cls(base, tuple(_parse_param(key, value, "search") for key, value in raw.items()))
        space._check(max_epochs)
        return space

    def fill(self, value_of: Callable[[Param, dict], Any]) -> dict:
        """The base config with each applicable key set to `value_of(param, config so far)`;
        KEEP leaves the base's value. Optimizer keys the chosen optimizer does not take go."""
        cfg = copy.deepcopy(self.base)
        for p in self.params:
            if p.applies(cfg):
                value = value_of(p, cfg)
                if value is not KEEP:
                    set_path(cfg, p.key, value)
        return drop_inapplicable(cfg)

    def sample(self, trial: optuna.Trial) -> dict:
        """The config of `trial`, its values drawn by the study's sampler."""
        return self.fill(lambda p, _: p.suggest(trial))

    def apply(self, values: dict) -> dict:
        """The config these sampled values build (keys not among them keep the base's value)."""
        return self.fill(lambda p, _: values.get(p.key, KEEP))

    def base_params(self) -> dict:
        """The base recipe as Optuna parameters, for `enqueue_trial`: trial 0 is the human's choice.
        A key the base leaves to its default is left out: the sampler chooses it."""
        values: dict = {}

        def record(p: Param, cfg: dict):
            value = base_value(cfg, p.key)
            if value is None:
                return KEEP
            values[p.key] = value
            return value

        self.fill(record)
        return values

    def n_params(self, cfg: dict) -> int:
        """Trainable parameters of the model `cfg` builds for its dataset (on the meta device)."""
        return model_size(parse_config(cfg))

    def fits(self, values: dict, max_params: int) -> bool:
        """Whether these sampled values build a model within `max_params`."""
        try:
            return self.n_params(self.apply(values)) <= max_params
        except ConfigError:
            return False

    def smallest_model(self) -> int:
        """Parameters of the model with every searched model value at its low end."""
        return self.n_params(self.fill(lambda p, _: p.lowest() if p.key.startswith("model.") else KEEP))

    def _check(self, max_epochs: int) -> None:
        seen: set[str] = set()
        for p in self.params:
            where = f"search.{p.key}"
            require(p.key not in seen, where, "appears twice")
            require(p.key.split(".")[0] in CONFIG_KEYS, where,
                    f"not a training config key; it must start with one of {', '.join(CONFIG_KEYS)}")
            for cond_key, _ in p.when:
                require(cond_key in seen or has_path(self.base, cond_key), f"{where}.when.{cond_key}",
                        "must be a key searched earlier in the file or set in base")
            seen.add(p.key)
            if not has_path(self.base, p.key) and not p.key.startswith(OPEN_SECTIONS):
                raise ConfigError(where, "no such key in the base config (after expanding its model preset)")
            if p.key == "epochs":
                most = p.high if p.kind != "categorical" else max((c for c in p.choices if isinstance(c, int)),
                                                                   default=0)
                require(most <= max_epochs, where, f"{most} epochs is more than budget.epochs {max_epochs}")
            # the base is enqueued as trial 0, so its value must be a point of the space
            if p.applies(self.base) and has_path(self.base, p.key):
                value = base_value(self.base, p.key)
                if p.kind == "categorical":
                    require(value in p.choices, where, f"the base value {value!r} is not among the choices")
                else:
                    require(p.low <= value <= p.high, where,
                            f"the base value {value!r} is outside [{p.low}, {p.high}]; widen the range or change base")


def model_size(cfg: TrainConfig) -> int:
    from hpo import datasets  # noqa: PLC0415 - the dataset's description only: nothing is loaded

    dataset = datasets.get(cfg.data.dataset)
    return models.spec_params(cfg.model, shape=dataset.shape, classes=dataset.classes)


def drop_inapplicable(cfg: dict) -> dict:
    """`cfg` without optimizer keys that the chosen optimizer does not take (a search that
    switches from SGD to Adam leaves the base's momentum behind)."""
    optimizer = cfg.get("optimizer")
    if isinstance(optimizer, dict):
        name = optimizer.get("name", Optimizer.name)
        cfg["optimizer"] = {k: v for k, v in optimizer.items() if name in OPTIMIZER_ONLY.get(k, (name,))}
    return cfg


# ----------------------------------------------------------------- parsing one key


def _parse_param(key: str, raw: Any, prefix: str) -> Param:
    where = f"{prefix}.{key}"
    require(isinstance(raw, dict), where, "expected a mapping like {float: [low, high]}, {int: [low, high]} "
                                          "or {choices: [...]}")
    kinds = [k for k in ("float", "int", "choices") if k in raw]
    require(len(kinds) == 1, where, "give exactly one of float: [low, high], int: [low, high], choices: [...]")
    allowed = {"float": {"log", "step"}, "int": {"log", "step"}, "choices": set()}[kinds[0]] | {kinds[0], "when"}
    for extra in raw:
        require(extra in allowed, f"{where}.{extra}", f"unknown key; expected one of: {', '.join(sorted(allowed))}")
    when = _parse_when(raw.get("when"), f"{where}.when")
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


def _parse_when(raw: Any, where: str) -> tuple:
    if raw is None:
        return ()
    require(isinstance(raw, dict) and raw, where, "expected a mapping of dotted keys to a value or a list of values")
    return tuple((k, tuple(v) if isinstance(v, list) else (v,)) for k, v in raw.items())


# ----------------------------------------------------------------- dotted keys


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
    *parents, last = key.split(".")
    node: Any = cfg
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if isinstance(node, list):
        index = int(last)
        node[index] = models.with_width(node[index], value) if isinstance(node[index], str) else value
    else:
        node[last] = value
