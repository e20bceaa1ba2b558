"""A study's search space: what it samples, parsed once, and how sampled values become a config.

    search:                       # dotted keys of the training config, sampled in this order
      batch_size: {int: [32, 512], log: true}
      optimizer.name: {choices: [adamw, sgd]}
      optimizer.momentum: {float: [0.5, 0.99], when: {optimizer.name: sgd}}
      model.layers.4: {int: [8, 24]}     # a convnet token's width (16k1 -> 12k1 keeps its kind)
      adamw_lr: {key: optimizer.lr, float: [0.0005, 0.01], log: true, when: {optimizer.name: adamw}}

A parameter is named by its mapping key; `key:` sets another config key than its name, so one
config key can be searched over different ranges under different `when`s (a learning rate per
optimizer), under names of their own.

Everything that turns values into a config goes through `SearchSpace.fill`: sampling a trial,
the base recipe as trial 0's parameters, and the budget check of a proposal, so `when`
conditions hold the same way in each.
"""

from __future__ import annotations

import copy
import functools
import math
from decimal import Decimal
from dataclasses import dataclass
from typing import Any, Callable, Optional

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from hpo import models, schema
from hpo.applies import drop_inapplicable, inapplicable
from hpo.config import Optimizer, TrainConfig, optimizer_default, parse_config
from hpo.dotted import KEEP, base_value, get_path, set_path
from hpo.errors import ConfigError
from hpo.schema import is_number, require
from hpo.space_check import check_space, ends

PLAIN = (bool, int, float, str, type(None))  # what a choice or a `when` value may be: what Optuna can store
SHRINK_STEPS = 12  # halvings of the shrink fraction: within 1/4096 of the largest model that fits
MAX_POINTS = 10**9  # steps in one range: more than a search visits, fewer than Optuna's decimal arithmetic allows


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
    name: str = ""                 # the Optuna parameter's name: the search mapping's key (default: `key`)

    def __post_init__(self):
        if not self.name:
            object.__setattr__(self, "name", self.key)

    def applies(self, cfg: dict) -> bool:
        return all(get_path(cfg, key) in allowed for key, allowed in self.when)

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return trial.suggest_categorical(self.name, list(self.choices))

    def distribution(self) -> BaseDistribution:
        """What `suggest` draws from, as Optuna stores it (the budget sampler proposes from it)."""
        if self.kind == "float":
            return FloatDistribution(self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return CategoricalDistribution(list(self.choices))

    def off_grid(self, value: Any) -> Optional[tuple]:
        """For a number in range that no draw can give (between two points of its step): the
        points either side of it; else None."""
        step = self.step or (1 if self.kind == "int" else None)
        if self.kind == "categorical" or step is None or not is_number(value) or not self.low <= value <= self.high:
            return None
        index = (value - self.low) / step
        if abs(index - round(index)) <= 1e-9 * max(1.0, abs(index)):
            return None
        below = self.low + math.floor(index) * step
        return (below, below + step) if self.kind == "float" else (int(below), int(below + step))

    def contains(self, value: Any) -> bool:
        """Whether a draw can give `value`: what trial 0, the base, must be."""
        if self.kind == "categorical":
            return value in self.choices
        if isinstance(value, bool) or not is_number(value) or not self.low <= value <= self.high:
            return False
        return self.off_grid(value) is None

    def toward(self, value: Any, end: Any, fraction: float) -> Any:
        """`value` moved toward `end` (its low or its high end), keeping `fraction` of the way
        from it (on the grid, rounded toward `end`; on a log range, the geometric way). Choices
        stay as they are."""
        if self.kind == "categorical":
            return value
        moved = end * (value / end) ** fraction if self.log else end + (value - end) * fraction
        if self.kind == "float" and self.step is None:
            return min(max(moved, min(end, value)), max(end, value))
        step = self.step or 1
        index = (moved - self.low) / step
        index = math.floor(index + 1e-9) if end <= value else math.ceil(index - 1e-9)
        moved = self.low + index * step
        return int(moved) if self.kind == "int" else moved

    def describe(self) -> str:
        """What it draws, as a person reads it: `[0.01, 0.2] log`, `[4, 16] step 4`, `sgd | adamw`."""
        if self.kind == "categorical":
            return " | ".join(map(schema.plain, self.choices))
        extra = " log" if self.log else f" step {self.step:g}" if self.step else ""
        return f"{self.kind} [{self.low:g}, {self.high:g}]{extra}"


@dataclass(frozen=True)
class SearchSpace:
    base: dict                 # the base training config, every default filled in, model resolved
    params: tuple[Param, ...]  # in file order: a `when` sees the values sampled before it

    @classmethod
    def parse(cls, raw: Any, base: dict, *, max_epochs: int) -> "SearchSpace":
        raw = {} if raw is None else raw
        require(isinstance(raw, dict), "search", "expected a mapping of dotted config keys to distributions")
        space = cls(base, tuple(_parse_param(key, value, "search") for key, value in raw.items()))
        check_space(space, max_epochs=max_epochs)
        return space

    def fill(self, value_of: Callable[[Param, dict], Any]) -> dict:
        """The base config with each applicable key set to `value_of(param, config so far)`;
        KEEP leaves the base's value. Optimizer keys the chosen optimizer does not take go."""
        cfg = copy.deepcopy(self.base)
        for p in self.params:
            if p.applies(cfg) and not inapplicable(p.key, cfg):
                value = value_of(p, cfg)
                if value is not KEEP:
                    set_path(cfg, p.key, value)
        return drop_inapplicable(cfg)

    def sample(self, trial: optuna.Trial) -> dict:
        """The config of `trial`, its values drawn by the study's sampler."""
        return self.fill(lambda p, _: p.suggest(trial))

    def apply(self, values: dict) -> dict:
        """The config these sampled values build (keys not among them keep the base's value)."""
        return self.fill(lambda p, _: values.get(p.name, KEEP))

    def base_params(self) -> dict:
        """The base recipe as Optuna parameters, for `enqueue_trial`: trial 0 is the human's choice.
        A key the base leaves to its default (an optimizer's momentum) is that default, where a
        draw can give it; where none can (no `ema`, and `ema` searched over a range), the sampler
        chooses it, and `left_to_the_sampler` names it."""
        values: dict = {}

        def record(p: Param, cfg: dict):
            value = self.base_or_default(p, cfg)
            if value is None or not p.contains(value):
                return KEEP
            values[p.name] = value
            return value

        self.fill(record)
        return values

    def base_or_default(self, p: Param, cfg: dict) -> Any:
        """The base's value of `p`'s key, or what training uses where the base leaves it out."""
        value = base_value(cfg, p.key, p.choices or ())
        if value is None and p.key.startswith("optimizer.") and p.key.count(".") == 1:
            value = optimizer_default(p.key.split(".")[1], get_path(cfg, "optimizer.name") or Optimizer.name)
        return value

    def left_to_the_sampler(self) -> list[Param]:
        """The searched keys that trial 0 does not take from the base: the base leaves them to a
        default that no draw can give (no `ema`: off, against `ema: {float: [0.98, 0.998]}`)."""
        taken = self.base_params()
        left = []
        self.fill(lambda p, cfg: left.append(p) or KEEP if p.name not in taken else KEEP)
        return left

    def n_params(self, cfg: dict) -> int:
        """Trainable parameters of the model `cfg` builds for its dataset (on the meta device)."""
        return model_size(parse_config(cfg))

    def fits(self, values: dict, max_params: int) -> bool:
        """Whether these sampled values build a model within `max_params`."""
        try:
            return self.n_params(self.apply(values)) <= max_params
        except ConfigError:
            return False

    def _size_at(self, p: Param, value) -> Optional[int]:
        """The model's parameters with `p` at `value` and every other key at the base's; None where
        that is no valid config."""
        try:
            return self.n_params(self.fill(lambda q, _: value if q is p else KEEP))
        except ConfigError:
            return None

    @functools.cached_property
    def _model_sizes(self) -> dict:
        """Each model key's ends (each choice), with the model's size there, the rest at the base."""
        return {p.name: [(v, n) for v in ends(p) if (n := self._size_at(p, v)) is not None]
                for p in self.params if p.key.startswith("model.")}

    @functools.cached_property
    def sizing(self) -> tuple[Param, ...]:
        """The parameters that change the model's size: model keys whose ends (whose choices)
        build models of different sizes, the others at the base's values (dropout does not)."""
        return tuple(p for p in self.params if len({n for _, n in self._model_sizes.get(p.name, [])}) > 1)

    def shrink(self, values: dict, max_params: int, *, keep=()) -> dict:
        """`values` (Optuna parameters) with every numeric model value moved toward the end that
        builds the smaller model (the low end of a width, the high end of a convpool kernel) by
        one shared fraction, the largest that fits `max_params`: a proposal over the budget
        projected onto it, its proportions kept. Values named in `keep` stay; where nothing
        fits, `values` come back unchanged (the objective then rejects the trial)."""
        movable = [p for p in self.sizing if p.kind != "categorical" and p.name in values and p.name not in keep]
        smaller = {p.name: self._end(p, min) for p in movable}

        def scaled(fraction: float) -> dict:
            return {**values, **{p.name: p.toward(values[p.name], smaller[p.name], fraction) for p in movable}}

        if not movable or not self.fits(scaled(0.0), max_params):
            return values
        fits, over = 0.0, 1.0
        for _ in range(SHRINK_STEPS):
            middle = (fits + over) / 2
            if self.fits(scaled(middle), max_params):
                fits = middle
            else:
                over = middle
        return scaled(fits)

    def _end(self, p: Param, pick) -> Any:
        """The end (the choice) of `p` that builds the smaller model (`pick` min) or the larger
        (max), the other keys at the base's values."""
        return pick(self._model_sizes[p.name], key=lambda vn: vn[1])[0]

    def smallest_model(self) -> int:
        """Parameters of the model with each searched model key at the end (the choice) that builds
        the smaller model, each judged with the others at the base's values: the low end for a
        width, the high end for a convpool kernel, false for batchnorm."""
        return self._extreme_model(min)

    def largest_model(self) -> int:
        """The same, each key at the end that builds the larger model."""
        return self._extreme_model(max)

    def _extreme_model(self, pick) -> int:
        chosen = {p.name: self._end(p, pick) for p in self.sizing}
        return self.n_params(self.fill(lambda p, _: chosen.get(p.name, KEEP)))


def model_size(cfg: TrainConfig) -> int:
    from hpo import datasets  # noqa: PLC0415 - the dataset's description only: nothing is loaded

    dataset = datasets.describe(cfg.data)  # a registered set, or your own data at data.path
    return models.spec_params(cfg.model, shape=dataset.shape, classes=dataset.classes)


# ----------------------------------------------------------------- parsing one key


def _parse_param(name: Any, raw: Any, prefix: str) -> Param:
    where = f"{prefix}.{name}"
    require(isinstance(name, str) and name != "", where, "expected a dotted training config key, like optimizer.lr")
    require(isinstance(raw, dict), where, "expected a mapping like {float: [low, high]}, {int: [low, high]} "
                                          "or {choices: [...]}")
    key = raw.get("key", name)
    require(isinstance(key, str) and key != "", f"{where}.key",
            f"expected the dotted training config key this parameter sets, like optimizer.lr; got {schema.describe(key)}")
    kinds = [k for k in ("float", "int", "choices") if k in raw]
    require(len(kinds) == 1, where, "give exactly one of float: [low, high], int: [low, high], choices: [...]")
    allowed = {"float": {"log", "step"}, "int": {"log", "step"}, "choices": set()}[kinds[0]] | {kinds[0], "when", "key"}
    for extra in raw:
        if extra not in allowed:
            raise schema.unknown_key(where, extra, sorted(allowed))
    when = _parse_when(raw.get("when"), f"{where}.when")
    if kinds[0] == "choices":
        choices = raw["choices"]
        require(isinstance(choices, list) and len(choices) > 0, f"{where}.choices", "must be a non-empty list")
        for i, c in enumerate(choices):
            require(is_plain(c), f"{where}.choices.{i}",
                    f"choices must be plain finite numbers, strings or booleans, got {schema.describe(c)}")
        require(len(set(map(repr, choices))) == len(choices), f"{where}.choices", "has duplicates")
        return Param(key, "categorical", choices=tuple(choices), when=when, name=name)
    kind = kinds[0]
    bounds = raw[kind]
    require(isinstance(bounds, list) and len(bounds) == 2, f"{where}.{kind}", "expected [low, high]")
    number = int if kind == "int" else float
    low, high = (finite(schema.coerce(b, number, f"{where}.{kind}.{i}"), f"{where}.{kind}.{i}")
                 for i, b in enumerate(bounds))
    require(low <= high, f"{where}.{kind}", f"low {low} is greater than high {high}")
    log = schema.coerce(raw.get("log", False), bool, f"{where}.log")
    step = raw.get("step")
    if step is not None:
        step = finite(schema.coerce(step, number, f"{where}.step"), f"{where}.step")
        require(step > 0, f"{where}.step", f"must be > 0, got {step}")
        require(not log, f"{where}.step", "cannot be combined with log: true")
        require(step <= high - low or low == high, f"{where}.step",
                f"{step} is wider than [{low}, {high}]: only {low} would ever be drawn")
        require((high - low) / step <= MAX_POINTS, f"{where}.step",
                f"{step} leaves more than {MAX_POINTS:,} points in [{low}, {high}]; "
                "leave it out for a continuous range")
        below, above = step_ends(low, high, step)
        require(below == high, f"{where}.step",
                f"[{low}, {high}] is no whole number of steps of {step}: nothing above {below} would ever be "
                f"drawn; make high {below} or {above}")
    if log:
        require(low > 0, f"{where}.{kind}", f"log scale needs low > 0, got {low}")
    param = Param(key, kind, low=low, high=high, log=log, step=step, when=when, name=name)
    try:  # what Optuna would refuse at every trial, it refuses here, once
        param.suggest(optuna.trial.FixedTrial({name: low}))
    except (ValueError, ArithmeticError) as error:
        raise ConfigError(where, f"Optuna cannot draw from this range: {error}") from None
    return param


def step_ends(low: float, high: float, step: float) -> tuple[float, float]:
    """The highest of low, low + step, ... not above high (where Optuna would quietly move a range's
    high end, warning at every trial) and the next one up, reckoned in decimals as Optuna's
    distributions do, so that 0.4 + 0.2 reads 0.6."""
    if isinstance(low, int) and isinstance(high, int) and isinstance(step, int):
        below = high - (high - low) % step
        return below, below + step
    d_low, d_step = Decimal(str(low)), Decimal(str(step))
    below = (Decimal(str(high)) - d_low) // d_step * d_step + d_low
    return float(below), float(below + d_step)


def _parse_when(raw: Any, where: str) -> tuple:
    if raw is None:
        return ()
    require(isinstance(raw, dict) and raw, where, "expected a mapping of dotted keys to a value or a list of values")
    when = []
    for key, value in raw.items():
        require(isinstance(key, str) and key != "", f"{where}.{key}", "expected a dotted training config key")
        allowed = tuple(value) if isinstance(value, list) else (value,)
        require(allowed != (), f"{where}.{key}",
                "an empty list matches nothing; give the values that switch this key on")
        for v in allowed:
            require(is_plain(v), f"{where}.{key}",
                    f"expected plain finite numbers, strings or booleans, got {schema.describe(v)}")
        when.append((key, allowed))
    return tuple(when)


def is_plain(value: Any) -> bool:
    return isinstance(value, PLAIN) and not (isinstance(value, float) and not math.isfinite(value))


def finite(number: float, where: str) -> float:
    """`number`, if a sampler can draw around it: finite, and an integer it can hold exactly."""
    if isinstance(number, int):
        require(abs(number) <= 2**53, where, "must be at most 2**53 in size: samplers draw integers as floats")
    else:
        require(math.isfinite(number), where, f"must be a finite number, got {number}")
    return number
