"""Whether a parsed search space can do what its file says: checked once, when the file is read.

Each mistake caught here would otherwise surface late and quietly: a key the training config
does not have, or a value it refuses, fails every trial that samples it; a `when` that can
never hold drops its key without a word; a base outside the space cannot be trial 0.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hpo import schema
from hpo.applies import OPTIMIZER_ONLY
from hpo.config import TrainConfig, parse_config
from hpo.dotted import KEEP, base_value, get_path, has_path
from hpo.errors import ConfigError
from hpo.schema import is_number, require

CONFIG_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig))  # what a searched key may start with


def check_space(space, *, max_epochs: int) -> None:
    """Raise a ConfigError at `search.KEY` for the first mistake in `space` (a SearchSpace)."""
    every_key = {**schema.to_dict(parse_config(space.base)),  # unset optional keys too, as None: each may be searched
                 "model": space.base["model"]}  # as the base spells it: your own model's arguments, not its fields
    for i, p in enumerate(space.params):
        where = f"search.{p.name}"
        earlier = {q.key: q for q in space.params[:i]}
        for q in space.params[:i]:
            if q.key == p.key:
                check_exclusive(p, q, where)
        check_key(p.key, every_key, where)
        later = {q.key: q for q in space.params[i + 1:]}
        for cond_key, allowed in p.when:
            require(cond_key in earlier or has_path(space.base, cond_key), f"{where}.when.{cond_key}",
                    "must be a key searched earlier in the file or set in base")
            # sampled in file order: before its key is drawn, the `when` would see the base's value
            require(cond_key in earlier or cond_key not in later, f"{where}.when.{cond_key}",
                    f"{cond_key} is searched after this key (search.{later.get(cond_key, p).name}), and a `when` "
                    "sees only values drawn before it; move this key below it")
            check_condition(cond_key, allowed, earlier.get(cond_key), space.base, f"{where}.when.{cond_key}")
        check_values(space, p, where)
        if p.key == "epochs":
            most = p.high if p.kind != "categorical" else max(p.choices)
            require(most <= max_epochs, where, f"{most} epochs is more than budget.epochs {max_epochs}")
        # the base is enqueued as trial 0, so its value must be a point of the space
        if p.applies(space.base) and has_path(space.base, p.key):
            value = base_value(space.base, p.key, p.choices or ())
            if p.kind == "categorical":
                require(value in p.choices, where, f"the base value {value!r} is not among the choices")
            else:
                require(is_number(value) and p.low <= value <= p.high, where,
                        f"the base value {value!r} is outside [{p.low}, {p.high}]; widen the range or change base")
                between = p.off_grid(value)
                require(between is None, where,
                        f"the base value {value!r} is off the grid of step {p.step or 1:g} from {p.low:g}: no draw gives "
                        f"it, and trial 0 must be one; make base {between[0]:g} or {between[1]:g}, or change the step"
                        if between else "")
    check_warmup(space)


def extent(space, key: str, pick, among=lambda p: True):
    """The largest (with `pick` max) or smallest value `key` can take: over every parameter that
    sets it (those `among` accepts), and the base's where none of them need apply."""
    ps = [p for p in space.params if p.key == key]
    values = [v for p in ps if among(p) for v in (p.choices if p.kind == "categorical" else (p.low, p.high))]
    if not ps or any(p.when for p in ps):
        values.append(get_path(space.base, key))
    return pick(v for v in values if v is not None)


def check_warmup(space) -> None:
    """A cosine schedule's warm-up must end before the fewest epochs a trial can have: each key
    alone can be valid at both ends while a trial drawing the most warm-up and the fewest epochs
    would warm up for all of its training and fail. Epochs drawn only where the schedule is not
    cosine (a `when` on schedule.name) do not count."""
    searched = {p.key for p in space.params}
    cosine = get_path(space.base, "schedule.name") == "cosine" or any(
        "cosine" in p.choices for p in space.params if p.key == "schedule.name" and p.kind == "categorical")
    if not cosine or not ({"schedule.warmup_epochs", "epochs"} & searched):
        return  # the base alone was checked as a training config

    def with_cosine(p) -> bool:
        allowed = dict(p.when).get("schedule.name")
        return allowed is None or "cosine" in allowed

    warmup = extent(space, "schedule.warmup_epochs", max, with_cosine)
    epochs = extent(space, "epochs", min, with_cosine)
    where = "search.schedule.warmup_epochs" if "schedule.warmup_epochs" in searched else "search.epochs"
    require(warmup < epochs, where,
            f"a trial can draw {warmup:g} epochs of cosine warm-up and only {epochs} epoch(s) of training, leaving "
            "none for the decay; keep warmup_epochs' high end below epochs' low end")


def check_exclusive(p, q, where: str) -> None:
    """Two parameters may set one config key only where their `when`s cannot both hold: the
    same key switched by different values (a learning rate range per optimizer)."""
    theirs = dict(q.when)
    apart = any(key in theirs and not set(map(repr, allowed)) & set(map(repr, theirs[key])) for key, allowed in p.when)
    what = "appears twice" if p.name == q.name else f"sets {p.key}, as search.{q.name} does"
    require(apart, where, f"{what}; give each a `when` on one key with different values "
                          f"(say {{when: {{optimizer.name: sgd}}}} and {{when: {{optimizer.name: adamw}}}}), "
                          "so that at most one of them applies")


def check_key(key: str, every_key: dict, where: str) -> None:
    require(key.split(".")[0] in CONFIG_KEYS, where,
            f"not a training config key; it must start with one of {', '.join(CONFIG_KEYS)}")
    if has_path(every_key, key):
        return
    parent = key.rpartition(".")[0]
    siblings = get_path(every_key, parent) if parent else None
    hint = (f"; {parent} has: {', '.join(siblings)}" if isinstance(siblings, dict) else
            f"; {parent} has {len(siblings)} entries, 0 to {len(siblings) - 1}" if isinstance(siblings, list) else "")
    target = (every_key.get("model") or {}).get("module") if isinstance(every_key.get("model"), dict) else None
    if target and key.startswith("model."):  # your own model: its factory's arguments are the keys
        argument = key.split(".")[1]
        from hpo.usermodel import FROM_DATA  # noqa: PLC0415 - torch: only for a model of your own

        if argument in FROM_DATA:
            raise ConfigError(where, f"{target} is given {argument} by hpo, from the dataset: it cannot be searched")
        default = factory_default(target, argument)
        if default is not None:
            raise ConfigError(where, f"model.{argument} is not in the base: {target}'s default for it, {default!r}, "
                                     f"is no plain value, so it fills no key; set model.{argument} in base (a list "
                                     f"for a tuple) to search {'its entries' if '.' in key[6:] else 'it'}")
        raise ConfigError(where, f"no such key in the base's model (your own: {target}, with its factory's plain "
                                 f"defaults){hint}")
    raise ConfigError(where, f"no such key in the training config (after expanding the base's model preset){hint}")


def factory_default(target: str, argument: str):
    """The default of `argument` in the factory `target` names, where it has one; else None."""
    import inspect  # noqa: PLC0415

    from hpo import usermodel  # noqa: PLC0415

    try:
        p = inspect.signature(usermodel.factory_of(target, "model.module")).parameters.get(argument)
    except (TypeError, ValueError, ConfigError):
        return None
    return None if p is None or p.default is p.empty else p.default


def check_condition(cond_key: str, allowed: tuple, searched, base: dict, where: str) -> None:
    """Each value a `when` allows must be one `cond_key` can take when this key is sampled:
    a value that never holds would leave this key unsearched, silently."""
    base_has = get_path(base, cond_key)
    for value in allowed:
        if searched is None:
            possible = value == base_has
            takes = f"is not searched before this key, so it keeps the base's {base_has!r}"
        elif searched.kind == "categorical":
            possible = value in searched.choices
            takes = f"is searched among {', '.join(map(repr, searched.choices))}"
        else:
            possible = is_number(value) and searched.low <= value <= searched.high and (
                searched.kind == "float" or (value - searched.low) % (searched.step or 1) == 0)
            takes = f"is searched over [{searched.low}, {searched.high}]" + (
                f" in steps of {searched.step or 1}" if searched.kind == "int" else "")
        if searched is not None and searched.when:  # where it is not searched itself, it keeps the base's value
            possible = possible or value == base_has
            takes += f", or keeps the base's {base_has!r}"
        require(possible, where, f"{value!r} can never hold, so this key would never be searched: {cond_key} {takes}")


def check_values(space, p, where: str) -> None:
    """Each end of `p`'s range (each choice) must make a valid training config, with the values
    of its `when` keys set so that `p` applies (momentum is only valid once the optimizer is SGD)."""
    conditions = with_optimizer_taking(p, when_values(space.params, p), space, where)
    context = f" (with {', '.join(f'{k}: {v}' for k, v in conditions.items())})" if conditions else ""
    for value in ends(p):
        applied = []

        def value_of(q, _cfg: dict) -> Any:
            applied.append(q.name)
            return value if q is p else conditions.get(q.key, KEEP)

        try:
            cfg = space.fill(value_of)
            if p.name in applied:
                parse_config(cfg)
        except ConfigError as error:
            detail = error.reason if error.key in ("", p.key) else f"{error.key}: {error.reason}"
            raise ConfigError(where, f"{value!r} is not a valid value here{context}: {detail}") from None
        require(p.name in applied, f"{where}.when", f"cannot all hold at once{context}, so this key would never "
                                                   "be searched")


def when_values(params: tuple, p) -> dict:
    """A value for each `when` key of `p`, and of theirs in turn, under which `p` is sampled."""
    by_key = {q.key: q for q in params}
    values: dict = {}
    pending = [p]
    while pending:
        for cond_key, allowed in pending.pop().when:
            if cond_key not in values:
                values[cond_key] = allowed[0]
                if cond_key in by_key:
                    pending.append(by_key[cond_key])
    return values


def with_optimizer_taking(p, conditions: dict, space, where: str) -> dict:
    """`conditions`, with an optimizer that takes `p` if it is an optimizer's own key (momentum,
    betas): under any other optimizer the key is dropped from the config, so never checked."""
    takers = OPTIMIZER_ONLY.get(p.key.removeprefix("optimizer."), ()) if p.key.startswith("optimizer.") else ()
    name = conditions.get("optimizer.name", get_path(space.base, "optimizer.name"))
    if not takers or name in takers:
        return conditions
    searched = next((q for q in space.params if q.key == "optimizer.name"), None)
    options = [c for c in searched.choices if c in takers] if searched and "optimizer.name" not in conditions else []
    require(options, where, f"never takes effect: it applies to {'/'.join(takers)} only, and the optimizer here is "
                            f"{name!r}; search optimizer.name over one of those, or drop this key")
    return {**conditions, "optimizer.name": options[0]}


def ends(p) -> tuple:
    """The values at the edges of what `p` samples: its ends, or every choice."""
    if p.kind == "categorical":
        return p.choices
    if p.kind == "int":
        step = int(p.step or 1)
        high = p.low + (p.high - p.low) // step * step  # Optuna's last point of the grid
        return (p.low, high) if high != p.low else (p.low,)
    return (p.low, p.high) if p.high != p.low else (p.low,)
